"""Pieces of the dashboard's pages: context lines, ± logit tables, the signed histogram.

Colours are diverging and sign-aware: **red for z > 0, blue for z < 0**; a context's focus
token is highlighted with opacity ``a = |z| / vmax`` (``vmax`` = the largest |z| of the
latent over both signs, so the two sides are on one scale). Every piece of data text is
escaped (:func:`abstopk.report.html.esc`).

An *example* is a dict ``{"value": z, "tokens": [str, ...], "focus": i, "row": r}``
(the stats contract, docs/dashboard.md): ``tokens[focus]`` is the token whose activation is
``value``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..html import esc, fmt_num, fmt_signed, render_token

__all__ = ["context_list", "example_vmax", "histogram_svg", "logit_table", "sign_class"]


def sign_class(v: Any) -> str:
    """``"pos"`` for v > 0, ``"neg"`` for v < 0, ``"zero"`` otherwise (CSS classes)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "zero"
    return "pos" if f > 0 else "neg" if f < 0 else "zero"


def example_vmax(*groups: Sequence[Mapping[str, Any]], floor: float = 1e-12) -> float:
    """The largest |value| over all examples of ``groups`` (at least ``floor``)."""
    m = floor
    for g in groups:
        for ex in g or ():
            try:
                m = max(m, abs(float(ex.get("value", 0.0))))
            except (TypeError, ValueError):
                continue
    return m


def _alpha(v: float, vmax: float) -> float:
    """Highlight opacity ∝ |z| / vmax, clipped to [0.08, 1] so a fired token stays visible."""
    if not math.isfinite(v) or vmax <= 0:
        return 0.0
    return max(0.08, min(1.0, abs(v) / vmax))


def context_line(ex: Mapping[str, Any], vmax: float) -> str:
    """One example as ``<div class="ctx pos|neg">``: the value, then the tokens with the focus
    token in ``<mark>`` (opacity ∝ |z|)."""
    try:
        v = float(ex.get("value", 0.0))
    except (TypeError, ValueError):
        v = float("nan")
    toks = list(ex.get("tokens") or [])
    focus = ex.get("focus")
    focus = int(focus) if isinstance(focus, int | float) else -1
    parts = []
    for i, t in enumerate(toks):
        if i == focus:
            parts.append(f'<mark style="--a:{_alpha(v, vmax):.3f}">{render_token(t)}</mark>')
        else:
            parts.append(render_token(t))
    row = ex.get("row")
    title = f' title="cache row {esc(row)}"' if row is not None else ""
    return (f'<div class="ctx {sign_class(v)}"{title}><span class="val">{fmt_signed(v)}</span>'
            f'<span class="toks">{"".join(parts)}</span></div>')


def context_list(examples: Sequence[Mapping[str, Any]] | None, vmax: float, *,
                 empty: str) -> str:
    """The examples as context lines, or ``<p class="empty">empty</p>`` when there are none."""
    if not examples:
        return f'<p class="empty">{esc(empty)}</p>'
    return '<div class="ctxs">' + "".join(context_line(ex, vmax) for ex in examples) + "</div>"


def logit_table(items: Sequence[Mapping[str, Any]] | None, *, sign: str, empty: str) -> str:
    """``[{"token", "value"}]`` as a two-column table coloured by ``sign`` (pos / neg)."""
    if not items:
        return f'<p class="empty">{esc(empty)}</p>'
    rows = "".join(f'<tr><td class="tok">{render_token(it.get("token"))}</td>'
                   f'<td class="num">{fmt_signed(it.get("value"))}</td></tr>' for it in items)
    return f'<table class="logits {sign}"><tbody>{rows}</tbody></table>'


def histogram_svg(hist: Mapping[str, Any] | None, *, width: int = 560, height: int = 150) -> str:
    """The signed histogram ``{"edges": [B+1], "counts": [B]}`` as an inline SVG bar chart:
    bars left of 0 blue, right of 0 red (a bar straddling 0 takes the sign of its centre),
    linear counts, the axis labelled with the outer edges and 0."""
    if not hist or not hist.get("counts") or not hist.get("edges"):
        return '<p class="empty">no histogram (the latent never fired)</p>'
    counts = [float(c) for c in hist["counts"]]
    edges = [float(e) for e in hist["edges"]]
    if len(edges) != len(counts) + 1:
        return '<p class="empty">histogram malformed (edges must be one more than counts)</p>'
    lo, hi = edges[0], edges[-1]
    span = (hi - lo) or 1.0
    top = max(counts) or 1.0
    pad_b, pad_t = 18, 4
    h = height - pad_b - pad_t

    def x(e: float) -> float:
        return (e - lo) / span * width

    bars = []
    for i, c in enumerate(counts):
        x0, x1 = x(edges[i]), x(edges[i + 1])
        bh = c / top * h
        centre = (edges[i] + edges[i + 1]) / 2
        bars.append(f'<rect class="{sign_class(centre)}" x="{x0:.1f}" y="{pad_t + h - bh:.1f}" '
                    f'width="{max(x1 - x0 - 0.5, 0.5):.1f}" height="{bh:.1f}">'
                    f"<title>[{fmt_num(edges[i])}, {fmt_num(edges[i + 1])}): {int(c)}</title>"
                    "</rect>")
    axis = [f'<line x1="0" y1="{pad_t + h}" x2="{width}" y2="{pad_t + h}" class="axis"/>',
            f'<text x="0" y="{height - 4}" class="lbl">{esc(fmt_num(lo))}</text>',
            f'<text x="{width}" y="{height - 4}" class="lbl" text-anchor="end">'
            f"{esc(fmt_num(hi))}</text>"]
    if lo < 0 < hi:
        x0 = x(0.0)
        axis.append(f'<line x1="{x0:.1f}" y1="{pad_t}" x2="{x0:.1f}" y2="{pad_t + h}" '
                    'class="zero"/>')
        axis.append(f'<text x="{x0:.1f}" y="{height - 4}" class="lbl" text-anchor="middle">0'
                    "</text>")
    return (f'<svg class="hist" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="signed histogram of non-zero values">'
            + "".join(bars) + "".join(axis) + "</svg>")
