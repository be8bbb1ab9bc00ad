"""The demo's one-page report ``demo-out/report.html`` and its one-screen terminal summary.

:func:`render_demo_report` takes plain dicts (what the demo's stages wrote as JSON) and
returns one self-contained HTML page: inline CSS, the sweep plot embedded as a base64 PNG, no
script, no network. Each section has its table(s) and a one-line reading computed from the
numbers. :func:`summary_lines` gives the same readings as short lines for the terminal.

``parts`` keys (all optional; a missing part is left out, or says it did not run):

* ``synthetic`` — ``synthetic.json`` (``{"data", "bench", "data_summary", "results"}``);
* ``pipeline`` — ``pipeline/pipeline.json`` (``{"settings", "cache_rows", "sweep":
  {"summary", "eval_tokens"}, "probing", "stage_seconds", "seconds"}``);
* ``sweep_png`` — the bytes of ``pipeline/sweep/sweep.png``;
* ``sections`` — later stages' results (bidirectional fraction, minimal pairs, steering),
  each ``{"id", "title", "reading", "rows": [dict], "columns": [key, ...] (default: the
  first row's keys), "latents": [{"index", "site"} | int], "site": dashboard folder}``;
* ``dashboard`` — relative link to a dashboard's ``index.html``;
* ``provenance`` — ``{"model", "machine", "data", "seeds", ...}`` shown at the top.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

from .demo_tables import PROBE_COLUMNS, probe_cell
from .html import esc, html_table, page
from .sweep_tables import TABLE_HEADER, results_table_rows
from .synthetic_table import MARKDOWN_COLUMNS as SYN_COLUMNS
from .synthetic_table import metric_cells

__all__ = ["REPORT_CSS", "render_demo_report", "summary_lines"]

REPORT_CSS = """
body { font: 14px/1.5 system-ui, sans-serif; max-width: 1200px; margin: 0 auto; padding: 16px;
       color: #222; }
h1 { font-size: 24px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; }
.reading { background: #f6f8fa; border-left: 4px solid #888; padding: 6px 10px; margin: 8px 0; }
.prov { color: #555; font-size: 13px; } .prov dt { font-weight: 600; float: left; width: 9em; }
.prov dd { margin-left: 9.5em; }
table { border-collapse: collapse; margin: 6px 0; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 3px 9px; }
th { background: #fafafa; text-align: left; } td.num { text-align: right;
     font-variant-numeric: tabular-nums; }
img.plot { max-width: 100%; border: 1px solid #eee; }
.skipped { color: #888; font-style: italic; }
"""

#: NMSEs closer than this relative gap are read as no clear difference
TIE_REL = 0.02

_ARCH_NAMES = {"topk": "TopK", "abstopk": "AbsTopK", "jumprelu": "JumpReLU",
               "absjumprelu": "AbsJumpReLU", "relu": "ReLU"}


def _name(arch: Any) -> str:
    return _ARCH_NAMES.get(str(arch), str(arch))


def _pct(v: Any) -> str:
    try:
        return f"{100 * float(v):.0f} %"
    except (TypeError, ValueError):
        return "—"


def _f(v: Any, fmt: str = ".3f") -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(x) else format(x, fmt)


# ------------------------------------------------------------------------------ readings
def synthetic_reading(syn: Mapping[str, Any]) -> str:
    """One line: how each architecture covers the bidirectional ground-truth features."""
    res = {r["architecture"]: r for r in syn.get("results") or []}
    n_bi = (syn.get("data_summary") or {}).get("n_bidirectional", "?")
    bits = [f"{_name(a)} {_pct(r.get('bi_one_latent'))} by one signed latent, "
            f"{_pct(r.get('bi_pair'))} by a ± pair" for a, r in res.items()]
    return (f"Of {n_bi} planted bidirectional features: " + "; ".join(bits) + "."
            if bits else "No synthetic results.")


def _matched(pipe: Mapping[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    summary = (pipe.get("sweep") or {}).get("summary") or []
    trained = [s for s in summary if s.get("mode") == "trained"]
    ks = sorted({float(s["sparsity"]) for s in trained})
    if not ks:
        return None, []
    k_ref = min(ks, key=lambda k: (abs(k - 32), k))
    return k_ref, [s for s in trained if float(s["sparsity"]) == k_ref]


def sweep_reading(pipe: Mapping[str, Any]) -> str:
    """One line: NMSE and loss recovered of each architecture at the matched L0."""
    k_ref, rows = _matched(pipe)
    if not rows:
        return "No sweep results."
    ranked = sorted(rows, key=lambda s: float(s.get("nmse_mean", math.inf)))
    best = ranked[0]
    bits = [f"{_name(s['architecture'])} NMSE {_f(s.get('nmse_mean'))}, loss recovered "
            f"{_f(s.get('loss_recovered_mean'))}" for s in rows]
    verdict = f" Lowest NMSE: {_name(best['architecture'])}"
    if len(ranked) > 1:
        b, nxt = float(best["nmse_mean"]), float(ranked[1]["nmse_mean"])
        if nxt - b <= TIE_REL * abs(b):
            verdict += (f", within {100 * TIE_REL:.0f} % of {_name(ranked[1]['architecture'])}"
                        " (no clear difference)")
    return f"At matched L0 = {k_ref:g} (held-out tokens): " + "; ".join(bits) + "." + verdict + "."


def probe_reading(probe: Mapping[str, Any]) -> str:
    """One line: the best single-latent probe per architecture (|z| and signed z)."""
    if probe.get("skipped"):
        return f"Probing skipped: {probe['skipped']}."
    res = probe.get("results") or {}
    if not res:
        return "No probing results."
    bits = [f"{_name(a)} top-1 signed {probe_cell(r, 'sae_signed_top_1_test_accuracy')}, "
            f"|z| {probe_cell(r, 'sae_abs_top_1_test_accuracy')}" for a, r in res.items()]
    n = probe.get("n_examples")
    raw = {_f(r.get("llm_test_accuracy")) for r in res.values()}
    ref = f"; a probe on the raw residual: {', '.join(sorted(raw))}" if raw != {"—"} else ""
    chance = {_f(r.get("chance"), ".2f") for r in res.values()} - {"—"}
    ch = f" (chance {', '.join(sorted(chance))}; [95 % Wilson interval])" if chance else ""
    return (f"Sentiment from one latent ({n} sentences){ch}: " + "; ".join(bits) + ref + ".")


# ------------------------------------------------------------------------------ sections
def _section(sid: str, title: str, reading: str, body: str) -> str:
    return (f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>'
            f'<p class="reading">{esc(reading)}</p>{body}</section>')


def _synthetic_section(syn: Mapping[str, Any]) -> str:
    res = syn.get("results") or []
    rows = [[_name(r["architecture"]), *metric_cells(r)] for r in res]
    d, b = syn.get("data") or {}, syn.get("bench") or {}
    setup = (f"Data: {d.get('n_features', '?')} ground-truth directions in "
             f"R^{d.get('d', '?')}, {(syn.get('data_summary') or {}).get('n_bidirectional', '?')}"
             f" bidirectional; k = {b.get('k', '?')}, {b.get('steps', '?')} steps, seed "
             f"{b.get('seed', '?')}.")
    return _section("synthetic", "Synthetic ground truth: one signed latent or a ± pair?",
                    synthetic_reading(syn),
                    f"<p>{esc(setup)}</p>" + html_table(SYN_COLUMNS, rows, table_id="syn-table"))


def _pipeline_sections(pipe: Mapping[str, Any], png: bytes | None) -> str:
    s = pipe.get("settings") or {}
    sweep = pipe.get("sweep") or {}
    summary = sweep.get("summary") or []
    setup = (f"Model {s.get('model', '?')} (SmolLM2-135M-Instruct, Q4_1 GGUF dequantised to "
             f"float32), layer {s.get('layer', '?')} resid_post; {pipe.get('cache_rows', '?')} "
             f"training tokens (train split of the embedded corpus); d_sae "
             f"{s.get('d_sae', '?')}, {s.get('steps', '?')} steps × "
             f"{s.get('batch_size', '?')} tokens, seeds {s.get('seeds', '?')}; evaluation on "
             f"{sweep.get('eval_tokens', '?')} held-out tokens, loss recovered on "
             f"{s.get('eval_contexts', '?')} held-out contexts. Mean ± std over seeds.")
    k_ref, matched = _matched(pipe)
    body = f"<p>{esc(setup)}</p>"
    if matched:
        body += (f"<h3>Matched L0 = {k_ref:g}</h3>"
                 + html_table(TABLE_HEADER, results_table_rows(matched, "trained"),
                              table_id="matched-table"))
    body += ("<h3>All sparsities</h3>"
             + html_table(TABLE_HEADER, results_table_rows(summary, "trained"),
                          table_id="sweep-table"))
    if any(x.get("mode") == "inference_k" for x in summary):
        body += ("<h3>Inference-time k (no retraining)</h3>"
                 + html_table(TABLE_HEADER, results_table_rows(summary, "inference_k")))
    if png:
        b64 = base64.b64encode(png).decode("ascii")
        body += (f'<p><img class="plot" id="sweep-png" src="data:image/png;base64,{b64}" '
                 'alt="NMSE and loss recovered versus L0"></p>')
    else:
        body += '<p class="skipped">The sweep plot was not found.</p>'
    out = _section("sweep", "Real model: reconstruction at matched L0", sweep_reading(pipe), body)
    probe = pipe.get("probing") or {}
    if probe.get("skipped") or not probe.get("results"):
        pbody = f'<p class="skipped">{esc(probe.get("skipped") or "not run")}</p>'
    else:
        rows = [[_name(a), *[probe_cell(r, k) for k, _, _ in PROBE_COLUMNS],
                 _f(r.get("chance"), ".2f")] for a, r in probe["results"].items()]
        pbody = html_table(["architecture", *[c[1] for c in PROBE_COLUMNS], "chance"], rows,
                           table_id="probe-table")
    title = (f"Sparse probing: sentiment (VADER), L0 = {probe.get('k', '?')}, "
             f"seed {probe.get('seed', '?')}")
    return out + _section("probing", title, probe_reading(probe), pbody)


def _latent_link(item: Any, site: str | None) -> str:
    if isinstance(item, Mapping):
        idx, site = item.get("index"), item.get("site") or site
        label = item.get("label") or f"latent {idx}"
    else:
        idx, label = item, f"latent {item}"
    if site is None or not isinstance(idx, int):
        return esc(label)
    href = f"{str(site).rstrip('/')}/latents/{idx:06d}.html"
    return f'<a href="{esc(href)}">{esc(label)}</a>'


def _extra_section(sec: Mapping[str, Any]) -> str:
    rows = list(sec.get("rows") or [])
    cols = list(sec.get("columns") or (list(rows[0].keys()) if rows else []))
    body = html_table(cols, [[_cell(r.get(c)) for c in cols] for r in rows]) if rows else ""
    lats = sec.get("latents") or []
    if lats:
        body += ("<p>Latents (linked when the dashboard has their page): "
                 + ", ".join(_latent_link(x, sec.get("site")) for x in lats) + "</p>")
    if not body:
        body = '<p class="skipped">No results.</p>'
    sid = str(sec.get("id") or "section")
    return _section(sid, str(sec.get("title") or sid), str(sec.get("reading") or ""), body)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return _f(v, ".4g")
    if isinstance(v, list | tuple):
        return ", ".join(str(x) for x in v)
    return "" if v is None else str(v)


def _provenance(prov: Mapping[str, Any]) -> str:
    if not prov:
        return ""
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in prov.items())
    return f'<dl class="prov" id="provenance">{items}</dl>'


def render_demo_report(parts: Mapping[str, Any]) -> str:
    """The complete HTML of ``report.html`` from ``parts`` (module docstring)."""
    body = [f"<h1>{esc(parts.get('title') or 'abstopk demo report')}</h1>",
            _provenance(parts.get("provenance") or {})]
    if parts.get("dashboard"):
        body.append(f'<p><a href="{esc(parts["dashboard"])}" id="dashboard-link">Open the '
                    "feature dashboard</a></p>")
    if parts.get("synthetic"):
        body.append(_synthetic_section(parts["synthetic"]))
    else:
        body.append(_section("synthetic", "Synthetic ground truth", "Not run.", ""))
    if parts.get("pipeline"):
        body.append(_pipeline_sections(parts["pipeline"], parts.get("sweep_png")))
    else:
        body.append(_section("sweep", "Real model", "Not run.", ""))
    body += [_extra_section(s) for s in parts.get("sections") or ()]
    return page(str(parts.get("title") or "abstopk demo report"), "".join(body),
                inline_css=REPORT_CSS)


def summary_lines(parts: Mapping[str, Any]) -> list[str]:
    """The readings as short terminal lines (one screen: one line per section)."""
    lines = []
    if parts.get("synthetic"):
        lines.append("Synthetic: " + synthetic_reading(parts["synthetic"]))
    if parts.get("pipeline"):
        lines.append("Reconstruction: " + sweep_reading(parts["pipeline"]))
        lines.append("Probing: " + probe_reading(parts["pipeline"].get("probing") or {}))
    for s in parts.get("sections") or ():
        if s.get("reading"):
            lines.append(f"{s.get('title') or s.get('id')}: {s['reading']}")
    return lines
