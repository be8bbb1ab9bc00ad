"""Build the dashboard: a static site that opens from disk (``file://``) or through
``abstopk serve``.

Layout of ``SITE/``::

    index.html                 search / sort / filter over all latents; links to directions
    data/index.js              window.ABSTOPK_INDEX = {"sae": ..., "latents": [row, ...]}
    latents/{index:06d}.html   one page per latent that has statistics
    directions/{slug}.html     one page per DiM / steering direction (when given)
    assets/style.css, assets/site.js

Browsers block ``fetch()`` of local files, so the index's data is a script assignment and the
pages are rendered here, in Python (no data is loaded at view time). An index row is
``{i, l (label), e (explanation), fp, fn (firing frequency per sign), mp, mn (max z per
sign), b (bidirectionality score), tp, tn (focus token of the strongest ± context), lp, ln
(first promoted tokens per sign), page (has a latent page), np (minimal pairs the latent
separates), jl (the judge's label, when judged)}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...files import atomic_write_bytes
from ..html import esc, js_data, page
from .assets import SITE_CSS, SITE_JS
from .load import iter_latents, read_index, read_judge, read_pairs
from .pages import direction_page, latent_page

__all__ = ["SiteSummary", "build_site", "direction_slug"]

_LATENT_PAGE = re.compile(r"^\d{6}\.html$")


class SiteSummary(dict):
    """What :func:`build_site` wrote: ``out``, ``index`` (path), ``latents`` (rows in the
    index), ``pages`` (latent pages), ``directions`` (direction pages, by name → path)."""


def _focus_token(examples: Sequence[Mapping[str, Any]] | None) -> str:
    if not examples:
        return ""
    ex = examples[0]
    toks, f = ex.get("tokens") or [], ex.get("focus")
    return str(toks[f]) if isinstance(f, int) and 0 <= f < len(toks) else ""


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f and abs(f) != float("inf") else None


def _index_row(row: Mapping[str, Any], lat: Mapping[str, Any] | None) -> dict[str, Any]:
    src = {**row, **(lat or {})}
    return {
        "i": int(row["index"]), "l": src.get("label"), "e": src.get("explanation"),
        "fp": _finite(src.get("freq_pos")), "fn": _finite(src.get("freq_neg")),
        "mp": _finite(src.get("max_pos")), "mn": _finite(src.get("max_neg")),
        "b": _finite(src.get("bidir_score")),
        "tp": _focus_token((lat or {}).get("top_pos")),
        "tn": _focus_token((lat or {}).get("top_neg")),
        "lp": [str(x.get("token")) for x in ((lat or {}).get("logits_pos") or [])[:3]],
        "ln": [str(x.get("token")) for x in ((lat or {}).get("logits_neg") or [])[:3]],
        "page": lat is not None,
        "np": len(src.get("minimal_pairs") or []),
        "jl": src.get("judge_label"),
    }


def direction_slug(name: str, taken: set[str]) -> str:
    """A file-name-safe, unique slug for a direction name (``[a-z0-9_-]``, ``-2`` suffixes)."""
    base = re.sub(r"[^a-z0-9_-]+", "-", str(name).lower()).strip("-") or "direction"
    slug, n = base[:60], 2
    while slug in taken:
        slug, n = f"{base[:56]}-{n}", n + 1
    taken.add(slug)
    return slug


def _sae_line(idx: Mapping[str, Any]) -> str:
    sae, cache = idx.get("sae") or {}, idx.get("cache") or {}
    bits = [f"{k} {sae[k]}" for k in ("architecture", "d_sae", "d_in", "k", "hook_name",
                                       "model_name") if sae.get(k) is not None]
    if cache.get("rows_read") is not None:
        bits.append(f"{cache['rows_read']:,} cache rows read")
    neg = idx.get("negative_side")
    if neg == "pre_activation":
        bits.append("negative side = negative pre-activations (non-negative SAE)")
    return " · ".join(esc(b) for b in bits)


def _index_page(idx: Mapping[str, Any], dirs: Sequence[tuple[str, str, Any]]) -> str:
    dir_html = ""
    if dirs:
        items = "".join(f'<li><a href="directions/{esc(slug)}.html">{esc(name)}</a>'
                        f" (layer {esc(layer)})</li>" for name, slug, layer in dirs)
        dir_html = f'<section id="directions"><h2>Directions</h2><ul>{items}</ul></section>'
    sae_path = (idx.get("sae") or {}).get("path")
    header = ["index", "label", "judge", "fires z>0", "fires z<0", "max z", "min z",
              "bidir. score", "pairs", "top − token", "top + token", "explanation"]
    body = (
        f"<header><h1>SAE latents{' — ' + esc(Path(str(sae_path)).name) if sae_path else ''}"
        f'</h1><p class="expl">{_sae_line(idx)}</p></header>{dir_html}'
        '<section id="latent-index"><h2>Latents</h2><div class="controls">'
        '<input id="search" type="search" placeholder="search: latent number, label, token, '
        'explanation" aria-label="search">'
        '<label>sort <select id="sort"><option value="index">index</option>'
        '<option value="freq">firing frequency (both signs)</option>'
        '<option value="freq_pos">frequency z&gt;0</option>'
        '<option value="freq_neg">frequency z&lt;0</option>'
        '<option value="bidir">bidirectionality score</option>'
        '<option value="max_pos">max z</option><option value="max_neg">min z</option>'
        '<option value="pairs">minimal pairs</option>'
        '</select></label><label>label <select id="label"><option value="all">all</option>'
        '</select></label><label><input id="pairs-only" type="checkbox"> with minimal-pair '
        'flips only</label><span id="count"></span></div>'
        '<noscript><p>The latent table needs JavaScript; latent pages are in latents/.</p>'
        '</noscript><table class="tbl" id="latents"><thead><tr>'
        + "".join(f"<th>{esc(h)}</th>" for h in header)
        + "</tr></thead><tbody></tbody></table></section>")
    return page("SAE dashboard", body, css=["assets/style.css"],
                scripts=["data/index.js", "assets/site.js"])


def _write_text(path: Path, text: str, *, fsync: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def _extras(i: int, pairs: Mapping[int, list], judge: Mapping[int, Mapping[str, Any]],
            lat: Mapping[str, Any] | None) -> dict[str, Any]:
    """Minimal pairs and the judge's verdict of latent ``i`` (from their own files)."""
    out: dict[str, Any] = {}
    if i in pairs:
        out["minimal_pairs"] = pairs[i]
    j = judge.get(i)
    if j is not None:
        out["judge_label"] = j.get("label")
        out["judge"] = j
        if not (lat or {}).get("explanation"):
            out["explanation"] = j.get("explanation")
    return out


def build_site(stats_dir: str | Path, out_dir: str | Path, *,
               directions: Sequence[Mapping[str, Any]] | None = None,
               pairs_file: str | Path | None = None,
               judge_file: str | Path | None = None) -> SiteSummary:
    """Render the statistics folder ``stats_dir`` (and optional ``directions``) into the static
    site ``out_dir`` (layout above). Minimal pairs come from ``pairs_file`` or
    ``STATS/pairs.json``, the judge's labels from ``judge_file`` or ``STATS/judge.json`` when
    present. Latent
    pages of an earlier build that the statistics no longer have are removed. Returns a
    :class:`SiteSummary`; raises :class:`~abstopk.errors.StatsFormatError` for an unreadable
    statistics folder."""
    idx = read_index(stats_dir)
    pairs = read_pairs(stats_dir, pairs_file)
    judge = read_judge(stats_dir, judge_file)
    out = Path(out_dir)
    (out / "latents").mkdir(parents=True, exist_ok=True)
    neg_side = idx.get("negative_side")
    rows = idx["latents"]
    with_page = [r["index"] for r in rows if (Path(stats_dir) / "latents" /
                                               f"{r['index']:06d}.json").exists()]
    nbr = {i: (with_page[j - 1] if j > 0 else None,
               with_page[j + 1] if j + 1 < len(with_page) else None)
           for j, i in enumerate(with_page)}
    index_rows, written = [], set()
    for row, lat in iter_latents(stats_dir, idx):
        i = int(row["index"])
        extra = _extras(i, pairs, judge, lat)
        index_rows.append(_index_row({**row, **extra}, None if lat is None else {**lat, **extra}))
        if lat is None:
            continue
        prev_i, next_i = nbr.get(i, (None, None))
        merged = {**row, **lat, **extra}
        name = f"{i:06d}.html"
        _write_text(out / "latents" / name, latent_page(merged, prev_index=prev_i,
                                                        next_index=next_i,
                                                        negative_side=neg_side),
                    fsync=False)   # thousands of derived pages; index.html (last) is synced
        written.add(name)
    for stale in (out / "latents").iterdir():
        if _LATENT_PAGE.match(stale.name) and stale.name not in written:
            stale.unlink()
    dir_pages: dict[str, str] = {}
    dirs_meta: list[tuple[str, str, Any]] = []
    taken: set[str] = set()
    for d in directions or ():
        name = str(d.get("name") or "direction")
        slug = direction_slug(name, taken)
        p = _write_text(out / "directions" / f"{slug}.html", direction_page(d))
        dir_pages[name] = str(p)
        dirs_meta.append((name, slug, d.get("layer")))
    _write_text(out / "assets" / "style.css", SITE_CSS)
    _write_text(out / "assets" / "site.js", SITE_JS)
    _write_text(out / "data" / "index.js",
                js_data("ABSTOPK_INDEX", {"sae": idx.get("sae"), "cache": idx.get("cache"),
                                          "negative_side": neg_side, "latents": index_rows}))
    index_path = _write_text(out / "index.html", _index_page(idx, dirs_meta))
    return SiteSummary(out=str(out), index=str(index_path), latents=len(index_rows),
                       pages=len(written), directions=dir_pages)
