"""report/: rendered tables pinned for fixed rows (Markdown text and rich text), and the
layering rule that report/ imports only the bottom modules."""

from __future__ import annotations

import ast
import io
import math
from pathlib import Path

from rich.console import Console

from abstopk.experiments.sweep_summary import summarize
from abstopk.report import demo_tables, eval_table, sweep_tables, synthetic_table
from abstopk.report.tables import markdown_table, write_csv


def _sweep_rows() -> list[dict]:
    rows = []
    for arch in ("topk", "jumprelu"):
        for seed in (0, 1):
            uses_k = arch == "topk"
            rows.append({"name": f"{arch}_s{seed}", "architecture": arch, "mode": "trained",
                         "sparsity": 8.0, "k_eval": 8 if uses_k else None, "seed": seed,
                         "l0": 8.0 - 0.25 * seed, "mse": 0.01 * (seed + 1),
                         "nmse": 0.1 + 0.1 * seed,
                         "fvu": 0.125 + 0.25 * seed,
                         "explained_variance": 0.875 - 0.25 * seed, "dead_fraction": 0.0,
                         "loss_recovered": float("nan") if uses_k else 0.9,
                         "loss_recovered_mean_ablation": 0.5 + 0.25 * seed, "kl": 0.125})
    rows.append({"name": "topk_s0@k4", "architecture": "topk", "mode": "inference_k",
                 "sparsity": 8.0, "k_eval": 4, "seed": 0, "l0": 4.0, "mse": 0.02, "nmse": 0.5,
                 "fvu": 0.75, "explained_variance": 0.25, "dead_fraction": 0.25})
    return rows


SWEEP_MD = """\
# Sparsity sweep

| architecture | sparsity | L0 | MSE | NMSE | FVU | dead frac. | loss rec. (zero abl.) | loss rec. (mean abl.) | KL | seeds |
|---|---|---|---|---|---|---|---|---|---|---|
| jumprelu | target L0=8 | 7.88 ± 0.18 | 0.015 ± 0.0071 | 0.15 ± 0.071 | 0.25 ± 0.18 | 0 ± 0 | 0.9 ± 0 | 0.625 ± 0.18 | 0.125 ± 0 | 2 |
| topk | k=8 | 7.88 ± 0.18 | 0.015 ± 0.0071 | 0.15 ± 0.071 | 0.25 ± 0.18 | 0 ± 0 | — | 0.625 ± 0.18 | 0.125 ± 0 | 2 |

## Inference-time k

| architecture | sparsity | L0 | MSE | NMSE | FVU | dead frac. | loss rec. (zero abl.) | loss rec. (mean abl.) | KL | seeds |
|---|---|---|---|---|---|---|---|---|---|---|
| topk | k=4 (trained k=8) | 4 ± 0 | 0.02 ± 0 | 0.5 ± 0 | 0.75 ± 0 | 0.25 ± 0 | — | — | — | 1 |
"""  # noqa: E501


def test_sweep_markdown_pinned():
    assert sweep_tables.sweep_markdown(summarize(_sweep_rows())) == SWEEP_MD


def test_sweep_rich_table_pinned():
    console = Console(width=180, record=True, file=io.StringIO())
    sweep_tables.print_table(summarize(_sweep_rows()), console, title="T")
    lines = [ln.rstrip() for ln in console.export_text().splitlines()]
    assert lines[0].strip() == "T"
    assert ("│ jumprelu     │ target L0=8 │ 7.88 ± 0.18 │ 0.015 ± 0.0071 │ 0.15 ± 0.071 │ "
            "0.25 ± 0.18 │      0 ± 0 │               0.9 ± 0 │          0.625 ± 0.18 │ "
            "0.125 ± 0 │     2 │") in lines
    assert any(ln.strip() == "Inference-time k (no retraining)" for ln in lines)


def test_generic_markdown_and_csv(tmp_path):
    assert markdown_table(["a", "b"], [["1", "2"], ["x", "y"]]) == (
        "| a | b |\n|---|---|\n| 1 | 2 |\n| x | y |\n")
    p = write_csv([{"a": 1, "b": None, "c": 3}, {"b": "z"}], ("a", "b"), tmp_path / "t.csv")
    assert p.read_text() == "a,b\n1,\n,z\n"


SYNTH = [
    {"architecture": "topk", "nmse": 0.1234, "fvu": 0.2345, "l0": 4.0, "dead_frac": 0.05, "recovery_bi": 0.88,
     "recovery_uni": 0.97, "bi_one_latent": 0.0, "bi_pair": 0.8, "bi_one_side": 0.15,
     "bi_missed": 0.05, "latents_per_bi": 2.0},
    {"architecture": "abstopk", "nmse": 0.0987, "fvu": 0.1876, "l0": 3.99, "dead_frac": 0.0, "recovery_bi": 0.94,
     "recovery_uni": 0.96, "bi_one_latent": 0.97, "bi_pair": 0.01, "bi_one_side": 0.02,
     "bi_missed": 0.0, "latents_per_bi": math.nan},
]


def test_synthetic_tables_pinned():
    assert synthetic_table.markdown_table(SYNTH) == (
        "| architecture | NMSE | FVU | L0 | dead % | recovery bi | recovery uni | bi: one signed latent "
        "| bi: ± pair | bi: one side | bi: missed | latents / bi feature |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        "| `topk` | 0.123 | 0.234 | 4.00 | 5.0 | 0.880 | 0.970 | 0 % | 80 % | 15 % | 5 % | 2.00 |\n"
        "| `abstopk` | 0.099 | 0.188 | 3.99 | 0.0 | 0.940 | 0.960 | 97 % | 1 % | 2 % | 0 % | – |\n")
    assert synthetic_table.results_table_rows(SYNTH)[1] == [
        "abstopk", "0.099", "0.188", "3.99", "0.0", "0.940", "0.960", "97%", "1%", "2%", "0%", "–"]
    setup = {"d": 64, "n_features": 128, "n_bidirectional": 64, "mean_active_test": 3.02,
             "k": 4, "d_sae": 256, "steps": 10, "seed": 0, "tau": 0.9, "seconds": 12.3}
    assert synthetic_table.caption(setup) == (
        "d=64, 128 features (64 bidirectional), ~3.0 active/sample, k=4, d_sae=256, 10 steps, "
        "seed=0, τ=0.9; 12 s")
    table = synthetic_table.render_table(SYNTH, setup)
    assert [c.header for c in table.columns] == list(synthetic_table.TABLE_COLUMNS)


def test_eval_rows_pinned():
    result = {"mse": 0.0012345, "dead_fraction": 0.125, "n_bidirectional": 12,
              "loss_recovered": math.nan, "kl": None, "n_tokens": 256,
              "loss_recovered_mean_ablation": 0.5, "loss_recovered_mean_ablation_ci": [0.25, 0.75],
              "bootstrap": {"resamples": 1000, "seed": 0, "level": 0.95, "unit": "context"},
              "mean_ablation_source": "evaluation contexts",
              "lr_source_mix": {"austen": 0.2, "linux-doc": 0.8},
              "tasks": {"probe": {"acc": 0.91, "acc_ci": [0.8812, 0.93], "chance": 0.5,
                                  "flag": True, "name": "x"}}}
    assert eval_table.eval_rows(result) == [
        ["MSE (per element)", "0.0012345"], ["dead latents", "12.50%"],
        ["bidirectional latents", "12"], ["loss recovered (zero ablation)", "nan"],
        ["loss recovered (mean ablation)", "0.5000 [0.2500, 0.7500]"],
        ["KL(clean ‖ spliced)", "—"], ["tokens (reconstruction)", "256"],
        ["intervals", "95% bootstrap over contexts, B = 1000, seed 0"],
        ["mean ablation: μ over", "evaluation contexts"],
        ["loss-recovered tokens by source", "austen 20%, linux-doc 80%"],
        ["probe: acc", "0.91 [0.881, 0.93]"], ["probe: chance", "0.5"]]


def test_probe_markdown_pinned():
    probe = {"k": 16, "seed": 0, "results": {"abstopk": {
        "sae_abs_top_1_test_accuracy": 0.65, "sae_abs_top_5_test_accuracy": 0.75,
        "sae_signed_top_1_test_accuracy": 0.8, "sae_signed_top_1_test_accuracy_ci": [0.7512, 0.84],
        "sae_signed_top_5_test_accuracy": None, "sae_test_accuracy": 0.85,
        "llm_test_accuracy": 0.9, "chance": 0.5}}}
    assert demo_tables.probe_markdown(probe) == (
        "| architecture | top-1 (signed z) | top-5 (signed z) | top-1 (abs z) | top-5 (abs z) "
        "| all latents | raw residual | chance |\n|---|---|---|---|---|---|---|---|\n"
        "| abstopk | 0.800 [0.75, 0.84] | — | 0.650 | 0.750 | 0.850 | 0.900 | 0.50 |\n")
    assert demo_tables.probe_markdown({"skipped": "no data"}) == "Probing skipped: no data\n"


def test_report_imports_only_bottom_modules():
    allowed = {"files", "fields", "errors", "report"}
    root = Path(__file__).resolve().parents[1] / "src" / "abstopk" / "report"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                mod = (node.module or "").split(".")[0]
                if node.level == 1:
                    continue          # a sibling in report/
                assert mod in allowed, f"{path.name} imports ..{node.module}"
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("abstopk"):
                parts = node.module.split(".")
                assert len(parts) > 1 and parts[1] in allowed, f"{path.name}: {node.module}"
