"""The demo's report.html, rendered from a fake demo-out folder (fixture files in the formats
the demo's stages write), checked as HTML and in headless Chromium."""

from __future__ import annotations

import json
import random
import re
import time

import pytest
from browser import browser, screenshot  # noqa: F401  (fixture)

from abstopk.experiments.demo_report import collect_parts, write_report
from abstopk.report.html_report import render_demo_report, summary_lines


def _summary(arch: str, rng: random.Random, sparsity: float, k_eval) -> dict:
    s = {"architecture": arch, "mode": "trained", "sparsity": sparsity, "k_eval": k_eval,
         "n_seeds": 1}
    for m in ("l0", "mse", "nmse", "explained_variance", "dead_fraction", "loss_recovered",
              "kl"):
        s[f"{m}_mean"], s[f"{m}_std"] = rng.uniform(0.05, 0.95), 0.0
    s["l0_mean"] = sparsity
    return s


@pytest.fixture()
def demo_out(tmp_path):
    from abstopk.report.plots import plot_sweep

    rng = random.Random(3)
    out = tmp_path / "demo-out"
    (out / "pipeline" / "sweep").mkdir(parents=True)
    results = [{"architecture": a, "d_sae": 256, "nmse": rng.random(), "fvu": rng.random(), "l0": 4.0,
                "dead_frac": 0.01, "recovery": 0.99, "recovery_bi": 0.99, "recovery_uni": 0.99,
                "bi_one_latent": rng.random(), "bi_pair": rng.random(), "bi_one_side": 0.0,
                "bi_missed": 0.0, "uni_captured": 1.0, "latents_per_bi": 1.5,
                "train_seconds": 1.0} for a in ("topk", "abstopk")]
    syn = {"data": {"d": 64, "n_features": 128}, "bench": {"k": 4, "steps": 800, "seed": 0},
           "data_summary": {"n_bidirectional": 64}, "results": results, "seconds": 9.0}
    (out / "synthetic.json").write_text(json.dumps(syn))
    summary = [_summary(a, rng, k, k if a != "jumprelu" else None)
               for k in (16.0, 32.0) for a in ("topk", "abstopk", "jumprelu")]
    pipe = {"settings": {"model": "smollm2-135m", "layer": 9, "d_sae": 512, "steps": 60,
                         "batch_size": 256, "seeds": [0], "eval_contexts": 2},
            "cache_rows": 16384, "sweep": {"summary": summary, "eval_tokens": 2048},
            "probing": {"k": 32, "seed": 0, "n_examples": 64, "results": {
                "abstopk": {"sae_abs_top_1_test_accuracy": 0.61, "llm_test_accuracy": 0.75}}},
            "stage_seconds": {"harvest": 50.0}, "seconds": 100.0}
    (out / "pipeline" / "pipeline.json").write_text(json.dumps(pipe))
    rows = [{"architecture": s["architecture"], "mode": "trained", "sparsity": s["sparsity"],
             "k_eval": s["k_eval"], "l0": s["l0_mean"], "nmse": s["nmse_mean"],
             "loss_recovered": s["loss_recovered_mean"]} for s in summary]
    plot_sweep(rows, out / "pipeline" / "sweep" / "sweep.png")
    (out / "minimal_pairs.json").write_text(json.dumps({
        "title": "Minimal pairs <man/woman>", "reading": "1 AbsTopK latent covers 3 pairs",
        "rows": [{"pair": "man/woman", "latent": 7, "z_a": 1.5, "z_b": -1.2}],
        "latents": [7], "site": "dashboard"}))
    return out, syn, pipe


def test_report_tables_readings_and_links(demo_out):
    out, syn, pipe = demo_out
    parts = collect_parts(out)
    assert parts["sweep_png"][:8] == b"\x89PNG\r\n\x1a\n"
    doc = render_demo_report(parts)
    # the synthetic table: one row per architecture with its one-latent fraction
    syn_tbl = doc.split('id="syn-table"', 1)[1].split("</table>", 1)[0]
    assert syn_tbl.count("<tr>") == 1 + len(syn["results"])
    abs_r = next(r for r in syn["results"] if r["architecture"] == "abstopk")
    assert f"{100 * abs_r['bi_one_latent']:.0f} %" in syn_tbl
    assert f"AbsTopK {100 * abs_r['bi_one_latent']:.0f} % by one signed latent" in doc
    # the sweep: all trained summaries, the matched-L0 one only k = 32 (closest to 32)
    sweep_tbl = doc.split('id="sweep-table"', 1)[1].split("</table>", 1)[0]
    assert sweep_tbl.count("<tr>") == 1 + len(pipe["sweep"]["summary"])
    matched = doc.split('id="matched-table"', 1)[1].split("</table>", 1)[0]
    assert matched.count("<tr>") == 4 and "k=16" not in matched
    m32 = [s for s in pipe["sweep"]["summary"] if s["sparsity"] == 32.0]
    best = min(m32, key=lambda s: s["nmse_mean"])["architecture"]
    assert re.search(r"Lowest NMSE: (\w+)[.,]", doc).group(1).lower() == best
    # the PNG is embedded, nothing is fetched
    assert 'src="data:image/png;base64,' in doc and "http" not in doc.replace(
        'name="viewport"', "")
    # probing, provenance, the extra section escaped with its dashboard link
    assert "0.610" in doc.split('id="probe-table"', 1)[1].split("</table>", 1)[0]
    assert "Q4_1" in doc and "<dt>machine</dt>" in doc
    assert "Minimal pairs &lt;man/woman&gt;" in doc
    assert 'href="dashboard/latents/000007.html"' in doc
    lines = summary_lines(parts)
    assert len(lines) == 4 and lines[-1].endswith("1 AbsTopK latent covers 3 pairs")


def test_sweep_reading_calls_near_ties():
    from abstopk.report.html_report import sweep_reading

    def row(arch, nmse):
        return {"architecture": arch, "mode": "trained", "sparsity": 32.0, "nmse_mean": nmse,
                "loss_recovered_mean": 0.9}

    tie = sweep_reading({"sweep": {"summary": [row("topk", 0.204), row("abstopk", 0.205)]}})
    assert "Lowest NMSE: TopK, within 2 % of AbsTopK (no clear difference)." in tie
    clear = sweep_reading({"sweep": {"summary": [row("topk", 0.30), row("abstopk", 0.20)]}})
    assert clear.endswith("Lowest NMSE: AbsTopK.")


def test_report_without_results_says_not_run(tmp_path):
    doc = render_demo_report(collect_parts(tmp_path))
    assert doc.count("Not run.") == 2 and "<img" not in doc


def test_write_report_is_fast_and_is_the_last_demo_stage(demo_out):
    from abstopk.commands.demo import DEMO_RESULTS, STAGES

    out, _, _ = demo_out
    t0 = time.perf_counter()
    path = write_report(out)
    assert time.perf_counter() - t0 < 5.0
    assert path == out / "report.html" and path.stat().st_size > 1000
    assert STAGES[-1].name == "report" and "report.html" in DEMO_RESULTS


def test_report_in_chromium(browser, demo_out):  # noqa: F811
    out, _, pipe = demo_out
    path = write_report(out)
    page = browser.new_page(viewport={"width": 1250, "height": 900})
    page.goto(path.as_uri())
    rows = page.locator("#sweep-table tbody tr")
    assert rows.count() == len(pipe["sweep"]["summary"])
    assert rows.first.is_visible()
    img = page.locator("#sweep-png")
    assert img.is_visible()
    w = img.evaluate("i => i.complete ? i.naturalWidth : 0")
    assert w > 100, "the embedded sweep plot did not decode"
    screenshot(page, "demo-report.png")
    page.close()
