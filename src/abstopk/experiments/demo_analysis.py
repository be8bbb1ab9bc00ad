"""The demo's bidirectionality stage: latent statistics, the proxy's bidirectional fraction,
minimal pairs and a dashboard of the demo's SAEs.

:func:`run_analysis` reads ``OUT/pipeline/pipeline.json`` (the cache and the SAEs the pipeline
trained) and, for the seed-0 (first seed) TopK, AbsTopK and JumpReLU SAEs at the matched L0:

1. **statistics** — for the SAEs with a dashboard (AbsTopK by default)
   :func:`abstopk.analysis.latent_stats.compute_and_write` over the first ``rows`` rows of the
   demo's cache (default 16,384 of 65,536; quick 4,096) into ``OUT/analysis/stats/<arch>/``:
   per latent the top-N rows of each sign, frequencies per sign, the histogram, ± logits, and
   the judge-free proxy's label (``docs/latent-stats.md``). For the others only the streaming
   pass and the labels (:func:`~abstopk.analysis.latent_stats.collect`,
   :func:`~abstopk.analysis.latent_stats.labels.label_all`): no per-latent files, which are
   most of the cost;
2. **bidirectional fraction** — the proxy's count of ``bidirectional`` latents among live ones
   with the 95 % Wilson interval (from each stats folder's ``index.json``) →
   ``OUT/bidirectional.json``;
3. **minimal pairs** — the shipped word pairs run once through the LM up to the SAEs' hook
   site; per SAE :func:`abstopk.analysis.minimal_pairs.coverage` → ``OUT/minimal_pairs.json``.
   Each pair is read in its category's first ``templates`` templates (default 1: the LM
   forward is the stage's largest cost). The pairs of the latents the report names are
   written into their statistics (the dashboard pages show them);
4. **dashboard** — :func:`abstopk.report.dashboard.build_site` of AbsTopK into
   ``OUT/dashboard/`` (with ``dashboards=("abstopk", "topk")`` also TopK into
   ``OUT/dashboard-topk/``). To bound the time, pages are
   rendered for the ``pages`` most frequent latents plus every latent the report names (a
   statistics folder of hard links, ``OUT/analysis/site-stats/<arch>/``); the index lists all
   latents.

Both JSON files are report sections (``{"title", "reading", "rows", "columns", "latents",
"site"}``, see :mod:`abstopk.experiments.demo_report`); every latent linked from them has a
page. CPU time (user + sys of this process, ``time.process_time``) of each step is recorded
in ``OUT/analysis/analysis.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["ARCHITECTURES", "DASHBOARDS", "demo_saes", "run_analysis"]

#: the demo's SAEs, in report order
ARCHITECTURES = ("abstopk", "topk", "jumprelu")
#: architecture → dashboard folder (relative to the demo folder) when it gets one
DASHBOARDS = {"abstopk": "dashboard", "topk": "dashboard-topk"}
#: notable latents named per section and SAE
N_NOTABLE = 5

_NAMES = {"topk": "TopK", "abstopk": "AbsTopK", "jumprelu": "JumpReLU"}


def _settings(quick: bool) -> dict[str, int]:
    if quick:
        return {"rows": 4096, "top_n": 10, "pages": 50, "per_bin": 2, "templates": 1}
    return {"rows": 16_384, "top_n": 20, "pages": 200, "per_bin": 2, "templates": 1}


def demo_saes(pipe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``arch → sweep row`` of the first seed's trained SAEs at the matched L0 (the k closest
    to 32) in the pipeline's result ``pipe``."""
    from .demo import MATCHED_K

    s = pipe.get("settings") or {}
    seed = (s.get("seeds") or [0])[0]
    k_ref = min(s.get("k_values") or [MATCHED_K], key=lambda k: (abs(k - MATCHED_K), k))
    out = {}
    for r in (pipe.get("sweep") or {}).get("rows") or []:
        if (r.get("mode") == "trained" and r.get("seed") == seed
                and float(r.get("sparsity", -1)) == float(k_ref)
                and r.get("architecture") in ARCHITECTURES and r.get("sae_dir")):
            out[r["architecture"]] = r
    return {a: out[a] for a in ARCHITECTURES if a in out}


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _top_side_token(lat: dict[str, Any], key: str) -> str:
    ex = lat.get(key) or []
    if not ex:
        return "–"
    toks, f = ex[0].get("tokens") or [], ex[0].get("focus")
    tok = toks[f] if isinstance(f, int) and 0 <= f < len(toks) else "?"
    return repr(str(tok))


def _read_latent(stats: Path, i: int) -> dict[str, Any] | None:
    p = stats / "latents" / f"{i:06d}.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


def _bidir_section(idx: dict[str, dict[str, Any]], stats: dict[str, Path],
                   notable: dict[str, list[int]], dash: dict[str, str]) -> dict[str, Any]:
    rows, latents, parts = [], [], []
    for arch, ix in idx.items():
        b = ix["bidirectionality"]
        c, lo, hi = b["counts"], b["ci95"][0], b["ci95"][1]
        rows.append({"SAE": _NAMES.get(arch, arch), "negative side": ix["negative_side"],
                     "rows read": ix["cache"]["rows_read"], "live": b["live"],
                     "bidirectional": c["bidirectional"],
                     "fraction": _pct(b["bidirectional_fraction"]),
                     "95 % CI": f"{100 * lo:.1f}–{100 * hi:.1f} %",
                     "unidirectional": c["unidirectional"], "unclear": c["unclear"],
                     "dead": c["dead"]})
        parts.append(f"{_NAMES.get(arch, arch)} {_pct(b['bidirectional_fraction'])} "
                     f"({100 * lo:.1f}–{100 * hi:.1f})")
        for i in notable.get(arch, []):
            lat = _read_latent(stats[arch], i) or {}
            latents.append({"index": i, "site": dash.get(arch),
                            "label": f"{_NAMES.get(arch, arch)} {i}: + "
                                     f"{_top_side_token(lat, 'top_pos')} / − "
                                     f"{_top_side_token(lat, 'top_neg')}"})
    reading = ("Share of live latents whose two signs both fire on coherent, different tokens "
               "(judge-free proxy): " + ", ".join(parts) + ". An upper bound of the paper's "
               "judged 'bidirectionally meaningful' (29.7 % AbsTopK vs 5.3 % TopK): two "
               "unrelated token detectors on one axis also pass; a non-negative SAE is 0 % by "
               "construction.")
    return {"title": "Bidirectional fraction (proxy, upper bound)", "reading": reading,
            "rows": rows, "columns": list(rows[0]) if rows else [], "latents": latents}


def _pairs_section(cov: dict[str, dict[str, Any]], dash: dict[str, str]) -> dict[str, Any]:
    rows, parts, latents = [], [], []
    for arch, c in cov.items():
        signed = c["signed"]
        rows.append({"SAE": _NAMES.get(arch, arch), "pairs": c["pairs"],
                     "covered by a sign flip": c["covered"] if signed else "–",
                     "split on/off": c["split_covered"],
                     "max pairs by one latent": c["max_pairs_one_latent"],
                     "best latent": c["best_latent"] if c["max_pairs_one_latent"] else "–",
                     "latents needed": c["latents_needed"],
                     "antipodal (cos < −0.9)": c.get("antipodal_covered", "–")})
        name = _NAMES.get(arch, arch)
        if signed:
            parts.append(f"{name}: {c['covered']} of {c['pairs']} pairs flip sign on one "
                         f"latent (best latent covers {c['max_pairs_one_latent']}; "
                         f"{c['split_covered']} split on/off over "
                         f"{c['split_latents_needed']} latents)")
        else:
            parts.append(f"{name}: {c['covered']} pairs split on/off over "
                         f"{c['latents_needed']} latents (antipodal "
                         f"{c.get('antipodal_covered', 0)})")
        if c["max_pairs_one_latent"] > 0:      # linked when it has a page, else named
            ex = ", ".join(c["best_latent_pairs"][:4])
            latents.append({"index": c["best_latent"],
                            "site": dash.get(arch) if c.get("linked") else None,
                            "label": f"{name} {c['best_latent']} ({ex})"})
    reading = ("; ".join(parts) + ". One signed latent that flips between the two words "
               "carries both ends of a concept; a one-sided code must split the pair over two "
               "latents.")
    return {"title": "Minimal pairs (word pairs in identical templates)", "reading": reading,
            "rows": rows, "columns": list(rows[0]) if rows else [], "latents": latents}


def _pairs_for_latent(pairs, za, zb, i: int, signed: bool) -> list[dict[str, Any]]:
    out = []
    for p, pr in enumerate(pairs):
        a, b = float(za[p, i]), float(zb[p, i])
        hit = (a * b < 0) if signed else ((a != 0) != (b != 0))
        if hit:
            out.append({"a": pr.a, "b": pr.b, "z_a": a, "z_b": b,
                        "template": pr.templates[0], "category": pr.category})
    return out


def _labels_only(sae_dir: str, cache_dir: str, rows: int, top_n: int) -> dict[str, Any]:
    """The proxy's labels of every latent without per-latent files: the parts of ``index.json``
    that the report reads (``negative_side``, ``cache.rows_read``, ``bidirectionality``,
    ``latents``)."""
    from ..analysis.bidirectionality import BidirConfig, fraction_with_ci
    from ..analysis.latent_stats import collect
    from ..analysis.latent_stats.contexts import RowIndex
    from ..analysis.latent_stats.labels import label_all
    from ..data.cache import ActivationCache
    from ..sae import SAE

    sae = SAE.load(sae_dir).eval()
    cache = ActivationCache(cache_dir)
    index = RowIndex(cache, rows)
    st = collect(sae, cache, max_rows=rows, top_n=top_n, sample_n=1)
    scores, labels = label_all(st, index.token_ids, bool(sae.op.signed), BidirConfig())
    n = max(st.rows_read, 1)
    lat = [{"index": i, "label": labels[i], "bidir_score": scores[i],
            "freq_pos": int(st.count_pos[i]) / n, "freq_neg": int(st.count_neg[i]) / n}
           for i in range(len(labels))]
    return {"negative_side": st.negative_side, "cache": {"rows_read": st.rows_read},
            "bidirectionality": fraction_with_ci(labels), "latents": lat}


def _site_stats(stats: Path, dst: Path, keep: set[int]) -> Path:
    """A statistics folder with ``index.json`` and hard links (copies where links fail) to the
    latent files in ``keep``: :func:`build_site` then renders pages for those only."""
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "latents").mkdir(parents=True)
    for i in sorted(keep):
        src = stats / "latents" / f"{i:06d}.json"
        if src.is_file():
            try:
                os.link(src, dst / "latents" / src.name)
            except OSError:
                shutil.copyfile(src, dst / "latents" / src.name)
    shutil.copyfile(stats / "index.json", dst / "index.json")
    return dst


def run_analysis(out: str | Path, *, quick: bool = False, console: Any = None,
                 rows: int | None = None, top_n: int | None = None, pages: int | None = None,
                 templates: int | None = None, dashboards: Sequence[str] = ("abstopk",),
                 loaded: tuple | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the stage (module docstring) on the demo folder ``out``; return its summary (also
    written to ``out/analysis/analysis.json``).

    Args:
        rows: cache rows read for the statistics (default 16,384; quick 4,096).
        top_n: strongest rows kept per latent and sign (default 20; quick 10).
        pages: dashboard pages for the most frequent latents (default 200; quick 100), plus the
            latents the report names; ``0`` renders every live latent.
        templates: templates per minimal pair (default 1; at most the category's).
        dashboards: the architectures that get statistics folders and a dashboard
            (:data:`DASHBOARDS`); the others get labels only.
        loaded: an already loaded ``(model, tokenizer, info)`` of the pipeline's model.
    """
    import torch

    from ..analysis.latent_stats import compute_and_write
    from ..analysis.minimal_pairs import (
        coverage,
        load_pairs,
        pair_codes,
        sentences,
        word_activations,
    )
    from ..errors import UserError
    from ..files import atomic_write_json
    from ..lm import load_model
    from ..lm.hooks import parse_hook_name
    from ..report.dashboard import build_site
    from ..sae import SAE
    from .demo import read_pipeline_results

    out = Path(out)
    say = console.print if console is not None else (lambda *a, **k: None)
    pipe = read_pipeline_results(
        out, "the bidirectionality stage reads the pipeline's SAEs and cache")
    saes = demo_saes(pipe)
    if not saes:
        raise UserError(f"{out / 'pipeline' / 'pipeline.json'} names no trained SAEs of the first seed at the matched L0")
    d = _settings(quick)
    n_rows = min(int(rows or d["rows"]), int(pipe.get("cache_rows") or 1 << 62))
    top_n, n_pages = int(top_n or d["top_n"]), int(d["pages"] if pages is None else pages)
    n_templates = int(templates or d["templates"])
    dash = {a: DASHBOARDS[a] for a in dashboards if a in DASHBOARDS and a in saes}
    cpu: dict[str, float] = {}

    def timed(name: str, t0: float) -> None:
        cpu[name] = round(time.process_time() - t0, 2)

    # 1. statistics ------------------------------------------------------------------------
    stats: dict[str, Path] = {}
    idx: dict[str, dict[str, Any]] = {}
    for arch, r in saes.items():
        t0 = time.process_time()
        if arch in dash:
            stats[arch] = compute_and_write(r["sae_dir"], pipe["cache"],
                                            out / "analysis" / "stats" / arch, max_rows=n_rows,
                                            top_n=top_n, examples_per_bin=d["per_bin"],
                                            force=True, progress=progress)
            idx[arch] = json.loads((stats[arch] / "index.json").read_text(encoding="utf-8"))
        else:
            idx[arch] = _labels_only(r["sae_dir"], pipe["cache"], n_rows, top_n)
        timed(f"stats_{arch}", t0)
        b = idx[arch]["bidirectionality"]
        say(f"statistics of {_NAMES[arch]} over {n_rows:,} rows: {b['live']} live latents, "
            f"{b['counts']['bidirectional']} bidirectional (proxy) "
            f"[dim]({cpu[f'stats_{arch}']:.1f} s CPU)[/dim]")

    # 2. minimal pairs (the LM once, all SAEs share the hook site) --------------------------
    t0 = time.process_time()
    model, tok, _ = loaded if loaded is not None else load_model(pipe["settings"]["model"])
    pairs = [dataclasses.replace(p, templates=p.templates[:n_templates]) for p in load_pairs()]
    acts_by_site: dict[tuple[int, str], Any] = {}
    cov: dict[str, dict[str, Any]] = {}
    codes: dict[str, tuple] = {}
    for arch, r in saes.items():
        sae = SAE.load(r["sae_dir"]).eval()
        c = sae.cfg
        if c.hook_layer is not None:
            site = (int(c.hook_layer), c.hook_site or "resid_post")
        else:
            site = parse_hook_name(c.hook_name)
        if site not in acts_by_site:
            with torch.no_grad():
                acts_by_site[site] = word_activations(model, tok, site[0], site[1],
                                                      sentences(pairs))
        za, zb = pair_codes(sae, pairs, acts_by_site[site])
        codes[arch] = (za, zb, bool(sae.op.signed))
        cov[arch] = coverage(za, zb, bool(sae.op.signed), sae.W_dec.detach(), pairs)
    timed("minimal_pairs", t0)
    say(f"minimal pairs ({len(pairs)}): " + "; ".join(
        f"{_NAMES[a]} covered {c['covered']}" for a, c in cov.items())
        + f" [dim]({cpu['minimal_pairs']:.1f} s CPU)[/dim]")

    # 3. notable latents, their pairs into the statistics, the dashboards --------------------
    t0 = time.process_time()
    notable: dict[str, list[int]] = {}
    for arch in stats:
        live = [r for r in idx[arch]["latents"] if r.get("label") not in (None, "dead")]
        if arch in dash:
            bi = sorted((r for r in live if r.get("label") == "bidirectional"),
                        key=lambda r: (-float(r.get("bidir_score") or 0), r["index"]))
            if not bi:      # a non-negative SAE: the highest scores against −pre-activations
                bi = sorted(live, key=lambda r: (-float(r.get("bidir_score") or 0), r["index"]))
            notable[arch] = [int(r["index"]) for r in bi[:N_NOTABLE]]
    sites: dict[str, dict[str, Any]] = {}
    for arch, folder in dash.items():
        live = [r for r in idx[arch]["latents"] if r.get("label") not in (None, "dead")]
        keep = set(notable.get(arch, []))
        best = cov[arch]["best_latent"]
        if cov[arch]["max_pairs_one_latent"] > 0 and _read_latent(stats[arch], best):
            keep.add(best)
            cov[arch]["linked"] = True
        for i in keep:          # the minimal pairs of the named latents, for their pages
            lat = _read_latent(stats[arch], i)
            if lat is not None:
                za, zb, signed = codes[arch]
                lat["minimal_pairs"] = _pairs_for_latent(pairs, za, zb, i, signed)
                atomic_write_json(stats[arch] / "latents" / f"{i:06d}.json", lat, fsync=False)
        by_freq = sorted(live, key=lambda r: (-(float(r.get("freq_pos") or 0)
                                                + float(r.get("freq_neg") or 0)), r["index"]))
        keep |= {int(r["index"]) for r in (by_freq if n_pages <= 0 else by_freq[:n_pages])}
        src = _site_stats(stats[arch], out / "analysis" / "site-stats" / arch, keep)
        sites[arch] = dict(build_site(src, out / folder))
        say(f"dashboard of {_NAMES[arch]}: {sites[arch]['pages']} latent pages of "
            f"{sites[arch]['latents']} latents → {out / folder / 'index.html'}")
    timed("dashboards", t0)

    # 4. the report's sections ---------------------------------------------------------------
    bsec = _bidir_section(idx, stats, notable, dash)
    psec = _pairs_section(cov, dash)
    atomic_write_json(out / "bidirectional.json", bsec)
    atomic_write_json(out / "minimal_pairs.json", psec)
    say(bsec["reading"])
    say(psec["reading"])
    result = {"rows": n_rows, "top_n": top_n, "pages": n_pages, "templates": n_templates,
              "saes": {a: r["sae_dir"] for a, r in saes.items()},
              "stats": {a: str(p) for a, p in stats.items()},
              "bidirectionality": {a: ix["bidirectionality"] for a, ix in idx.items()},
              "minimal_pairs": {a: {k: v for k, v in c.items() if k != "per_pair"}
                                for a, c in cov.items()},
              "sites": sites, "cpu_seconds": cpu,
              "cpu_seconds_total": round(sum(cpu.values()), 2)}
    atomic_write_json(out / "analysis" / "analysis.json", result)
    say("CPU time (user + sys): " + ", ".join(f"{k} {v:.1f} s" for k, v in cpu.items())
        + f"; total {result['cpu_seconds_total']:.1f} s")
    return result
