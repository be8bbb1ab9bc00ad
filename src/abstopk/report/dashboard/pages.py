"""The dashboard's per-item pages: one HTML page per latent and per direction.

A latent page (``latents/{index:06d}.html``) shows, top to bottom: the label and explanation,
the summary numbers (firing frequency per sign, max z per sign, bidirectionality score), the
signed histogram, then **both signs side by side** — negative (blue) on the left, positive
(red) on the right, each with the tokens that sign promotes through the unembedding and its
strongest contexts — then the quantile samples over the whole signed range and the
minimal-pair flips. Sections carry stable ids (``top-pos``, ``top-neg``, ``logits-pos``,
``logits-neg``, ``quantiles``, ``minimal-pairs``, ``histogram``) for tests and links.

For a non-negative SAE the negative side shows pre-activations (``negative_side ==
"pre_activation"``), and its headings say so.

A direction page (``directions/{slug}.html``) shows the same two columns for a DiM / steering
direction ``{name, layer, top_pos, top_neg, logits_pos, logits_neg}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..html import esc, fmt_num, fmt_signed, page
from .parts import context_list, example_vmax, histogram_svg, logit_table, sign_class

__all__ = ["direction_page", "latent_page", "side_by_side"]


def _side_names(negative_side: str | None) -> tuple[str, str]:
    if negative_side == "pre_activation":
        return "z > 0", "pre-activation u < 0 (z = 0 there: this SAE's codes are non-negative)"
    return "z > 0", "z < 0"


def side_by_side(item: Mapping[str, Any], *, negative_side: str | None = None,
                 what: str = "latent") -> str:
    """The two columns: negative (left, blue) and positive (right, red), each with its
    ± logit table and top contexts."""
    pos_name, neg_name = _side_names(negative_side)
    top_pos, top_neg = item.get("top_pos") or [], item.get("top_neg") or []
    vmax = example_vmax(top_pos, top_neg)
    neg = _side("neg", "Negative", neg_name, f"−{esc(what)}", "bottom of W_U·d",
                item.get("logits_neg"), top_neg, vmax)
    pos = _side("pos", "Positive", pos_name, f"+{esc(what)}", "top of W_U·d",
                item.get("logits_pos"), top_pos, vmax)
    return f'<div class="sides">{neg}{pos}</div>'


def _side(sign: str, title: str, name: str, by: str, where: str, logits: Any,
          top: list, vmax: float) -> str:
    """One side's section (``sign`` "pos" or "neg"): the logits it promotes, its strongest
    contexts."""
    word = title.lower()
    return (f'<section class="side {sign}" id="side-{sign}"><h2>{title} side: {esc(name)}</h2>'
            f'<h3>Tokens promoted by {by} ({where})</h3><div id="logits-{sign}">'
            + logit_table(logits, sign=sign, empty="no logit data") + "</div>"
            f'<h3>Strongest {word} contexts</h3><div id="top-{sign}">'
            + context_list(top, vmax, empty=f"no {word} activations recorded")
            + "</div></section>")


def _quantiles(lat: Mapping[str, Any]) -> str:
    bins = lat.get("quantiles") or []
    if not bins:
        return '<p class="empty">no quantile samples</p>'
    vmax = example_vmax(*[b.get("examples") or [] for b in bins])
    out = []
    for b in sorted(bins, key=lambda b: float(b.get("lo", 0.0))):
        lo, hi = b.get("lo"), b.get("hi")
        centre = (float(lo or 0) + float(hi or 0)) / 2
        out.append(f'<div class="qbin {sign_class(centre)}"><h4>[{fmt_signed(lo)}, '
                   f"{fmt_signed(hi)}]</h4>"
                   + context_list(b.get("examples"), vmax, empty="no samples in this bin")
                   + "</div>")
    return "".join(out)


def _minimal_pairs(lat: Mapping[str, Any]) -> str:
    pairs = lat.get("minimal_pairs") or []
    if not pairs:
        return '<p class="empty">no minimal pairs recorded for this latent</p>'
    rows, n_flips = [], 0
    for p in pairs:
        za, zb = p.get("z_a"), p.get("z_b")
        try:
            flips = float(za) * float(zb) < 0
        except (TypeError, ValueError):
            flips = False
        kind = {"a_only": "on for a only", "b_only": "on for b only"}.get(
            str(p.get("kind")), "sign flip" if flips else "no flip")
        n_flips += flips
        where = str(p.get("template") or p.get("category") or "")
        rows.append(
            f"<tr><td>{esc(p.get('a'))}</td><td class=\"num {sign_class(za)}\">{fmt_signed(za)}"
            f"</td><td>{esc(p.get('b'))}</td><td class=\"num {sign_class(zb)}\">"
            f"{fmt_signed(zb)}</td><td>{esc(kind)}</td>"
            f'<td class="tmpl">{esc(where)}</td></tr>')
    plural = "s" if len(pairs) != 1 else ""
    return (f'<p>{len(pairs)} pair{plural}, {n_flips} of them by a sign flip (z averaged over the pair\'s '
            "templates)</p>"
            '<table class="tbl"><thead><tr><th>a</th><th>z(a)</th><th>b</th><th>z(b)</th>'
            "<th>how</th><th>category</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table>")


def _label_badge(label: Any) -> str:
    lab = str(label) if label else "unlabelled"
    return f'<span class="badge lab-{esc(lab)}">{esc(lab)}</span>'


def _stat(name: str, value: str, cls: str = "") -> str:
    return (f'<div class="stat {cls}"><div class="k">{esc(name)}</div>'
            f'<div class="v">{value}</div></div>')


def _pct(v: Any) -> str:
    try:
        return f"{100 * float(v):.3g} %"
    except (TypeError, ValueError):
        return "—"


def latent_page(lat: Mapping[str, Any], *, title_prefix: str = "", prev_index: int | None = None,
                next_index: int | None = None, negative_side: str | None = None) -> str:
    """The HTML page of one latent (statistics dict of the contract). Links are relative to
    ``latents/``: the index is ``../index.html``."""
    i = int(lat["index"])
    neg_side = lat.get("negative_side") or negative_side
    nav = ['<a href="../index.html">← index</a>']
    if prev_index is not None:
        nav.append(f'<a href="{prev_index:06d}.html" id="prev">latent {prev_index}</a>')
    if next_index is not None:
        nav.append(f'<a href="{next_index:06d}.html" id="next">latent {next_index}</a>')
    expl = lat.get("explanation")
    judge = lat.get("judge") or {}
    judge_html = ""
    if judge:
        if judge.get("opposite_test") == "completion":
            what, score = "opposite score (PMI)", judge.get("opposite_score")
        else:
            what, score = "log-odds that the two poles are opposites", \
                judge.get("opposite_logodds")
        judge_html = (f'<p id="judge">judge: {_label_badge(judge.get("label"))} · '
                      f"{what} {fmt_signed(score)}</p>")
    stats = "".join([
        _stat("fires z > 0", _pct(lat.get("freq_pos")), "pos"),
        _stat("fires z < 0" if neg_side != "pre_activation" else "u < 0",
              _pct(lat.get("freq_neg")), "neg"),
        _stat("max z", fmt_signed(lat.get("max_pos")), "pos"),
        _stat("min z" if neg_side != "pre_activation" else "min u",
              fmt_signed(lat.get("max_neg")), "neg"),
        _stat("bidirectionality score", fmt_num(lat.get("bidir_score"))),
    ])
    body = (
        f'<nav>{" · ".join(nav)}</nav>'
        f'<header><h1>{esc(title_prefix)}Latent {i} {_label_badge(lat.get("label"))}</h1>'
        f'<p class="expl" id="explanation">{esc(expl) if expl else "no explanation yet"}</p>'
        f'{judge_html}</header><div class="stats">{stats}</div>'
        '<section id="histogram"><h2>Signed histogram of non-zero values</h2>'
        + histogram_svg(lat.get("histogram")) + "</section>"
        + side_by_side(lat, negative_side=neg_side)
        + '<section id="quantiles"><h2>Samples across the signed range (quantile bins)</h2>'
        + _quantiles(lat) + "</section>"
        + '<section id="minimal-pairs"><h2>Minimal pairs</h2>' + _minimal_pairs(lat)
        + "</section>"
    )
    return page(f"Latent {i}", f'<main class="latent" data-index="{i}">{body}</main>',
                css=["../assets/style.css"])


def direction_page(d: Mapping[str, Any]) -> str:
    """The HTML page of a DiM / steering direction ``{name, layer, top_pos, top_neg,
    logits_pos, logits_neg}`` (links relative to ``directions/``)."""
    name = str(d.get("name") or "direction")
    layer = d.get("layer")
    extra = "".join(f"<p>{esc(k)}: {esc(v)}</p>" for k, v in d.items()
                    if k in ("description", "source", "magnitude", "auc"))
    body = ('<nav><a href="../index.html">← index</a></nav>'
            f'<header><h1>Direction {esc(name)}</h1><p>layer {esc(layer)}</p>{extra}</header>'
            + side_by_side(d, what="direction"))
    return page(f"Direction {name}", f'<main class="direction">{body}</main>',
                css=["../assets/style.css"])
