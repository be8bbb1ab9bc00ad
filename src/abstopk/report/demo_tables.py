"""Tables of the demo's real-model pipeline: the sparse-probing table and the document
``pipeline.md`` (setup line, matched-L0 and sweep tables, inference-time k, probing, plot).

``probe`` dicts are those of the demo's probing stage: ``k``, ``seed``, ``results``
{architecture: {``sae_signed_top_1_test_accuracy``, ... accuracies in [0, 1] or None, each
with an optional ``..._ci`` [lo, hi] and the task's ``chance``}}, or ``skipped`` (the reason)
when probing did not run. A cell reads ``0.652 [0.61, 0.69]`` (accuracy [95 % interval]).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .sweep_tables import markdown_table as sweep_markdown_table
from .tables import markdown_table, rich_table

__all__ = ["PROBE_COLUMNS", "pipeline_markdown", "print_probe", "probe_cell", "probe_markdown"]

#: (result key, Markdown header, rich header) of the probing table, in order
PROBE_COLUMNS = (
    ("sae_signed_top_1_test_accuracy", "top-1 (signed z)", "top-1 signed"),
    ("sae_signed_top_5_test_accuracy", "top-5 (signed z)", "top-5 signed"),
    ("sae_abs_top_1_test_accuracy", "top-1 (abs z)", "top-1 |z|"),
    ("sae_abs_top_5_test_accuracy", "top-5 (abs z)", "top-5 |z|"),
    ("sae_test_accuracy", "all latents", "all latents"),
    ("llm_test_accuracy", "raw residual", "raw residual"),
)


def probe_cell(r: Mapping[str, Any], key: str) -> str:
    """``0.652 [0.61, 0.69]`` (accuracy [interval]); ``0.652`` without one; ``—`` if None."""
    v = r.get(key)
    if v is None:
        return "—"
    ci = r.get(f"{key}_ci")
    if ci and len(ci) == 2 and None not in ci:
        return f"{v:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"
    return f"{v:.3f}"


def _probe_rows(probe: Mapping[str, Any]) -> list[list[str]]:
    return [[arch, *[probe_cell(r, k) for k, _, _ in PROBE_COLUMNS],
             "—" if r.get("chance") is None else f"{r['chance']:.2f}"]
            for arch, r in probe["results"].items()]


def probe_markdown(probe: Mapping[str, Any]) -> str:
    """The probing accuracies as a Markdown table (or the line saying why it was skipped)."""
    if probe.get("skipped"):
        return f"Probing skipped: {probe['skipped']}\n"
    return markdown_table(["architecture", *[c[1] for c in PROBE_COLUMNS], "chance"],
                          _probe_rows(probe))


def print_probe(probe: Mapping[str, Any], console: Any) -> None:
    """Print the probing accuracies as a rich table (or why probing was skipped)."""
    if probe.get("skipped"):
        console.print(f"probing: {probe['skipped']}")
        return
    console.print(rich_table(
        ["architecture", *[c[2] for c in PROBE_COLUMNS], "chance"], _probe_rows(probe),
        title=f"Sparse probing, sentiment (VADER), test accuracy [95 % Wilson interval], "
              f"L0 = {probe['k']}, seed {probe['seed']}"))


def pipeline_markdown(settings: Mapping[str, Any], *, cache_rows: int, eval_tokens: int,
                      k_ref: int, matched: Sequence[dict[str, Any]],
                      summary: Sequence[dict[str, Any]], probe: Mapping[str, Any]) -> str:
    """The document ``pipeline.md``.

    ``settings``: the pipeline's settings (``model, layer, d_sae, steps, batch_size, lr, seeds,
    eval_contexts``); ``matched``: the sweep summaries at sparsity ``k_ref``; ``summary``: all
    of them; ``probe``: the probing stage's result.
    """
    s = settings
    md = [
        "# abstopk pipeline results\n",
        f"Model `{s['model']}`, layer {s['layer']} resid_post, {cache_rows:,} harvested "
        f"training tokens (train split), d_sae {s['d_sae']}, {s['steps']} steps × "
        f"{s['batch_size']} tokens, lr {s['lr']:g}, seeds {s['seeds']}. Evaluation on "
        f"{eval_tokens:,} held-out tokens; loss recovered on {s['eval_contexts']} "
        "held-out contexts of 128 tokens. Values are mean ± std over seeds.\n",
        f"## Matched L0 = {k_ref}\n", sweep_markdown_table(matched, "trained"),
        "\n## Sparsity sweep\n", sweep_markdown_table(summary, "trained"),
    ]
    if any(x["mode"] == "inference_k" for x in summary):
        md += ["\n## Inference-time k (SAEs trained at k = "
               f"{k_ref}, k changed at inference)\n", sweep_markdown_table(summary, "inference_k")]
    md += ["\n## Sparse probing (sentiment)\n", probe_markdown(probe),
           "\n## Plot\n", "![NMSE and loss recovered versus L0](sweep/sweep.png)\n"]
    return "\n".join(md)
