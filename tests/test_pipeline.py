"""The demo's real-model pipeline end to end on the embedded SmolLM2-135M (tiny sizes), and the
shared-run loss recovered of several SAEs against one SAE at a time."""

from __future__ import annotations

import json
import math

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lm():
    from abstopk.lm import load_model

    return load_model("smollm2-135m")


def test_several_saes_loss_recovered_matches_one_at_a_time(lm):
    """Clean / zero-ablated runs shared across SAEs (a dict of SAEs) give the same numbers
    as evaluating each SAE alone (same contexts, same BOS rule)."""
    from abstopk.data.tokens import bos_token_id, iter_contexts
    from abstopk.eval.loss_recovered import evaluate_loss_recovered
    from abstopk.sae import SAE, SAEConfig

    model, tok, info = lm
    saes = {a: SAE(SAEConfig(d_in=info.d_model, d_sae=64, architecture=a, k=8), seed=1).eval()
            for a in ("topk", "abstopk")}
    skip = {bos_token_id(tok)}

    def ctx():
        return iter_contexts(tok, source="embedded", split="heldout", context_size=32)

    multi = evaluate_loss_recovered(saes, model, ctx(), layer=9, n_contexts=2, batch_size=2,
                                    skip_token_ids=skip, mean_ablation=False)
    for name, sae in saes.items():
        ref = evaluate_loss_recovered(sae, model, ctx(), layer=9, n_contexts=2, batch_size=2,
                                      skip_token_ids=skip, mean_ablation=False)
        for key in ("ce_clean", "ce_spliced", "ce_zero_ablated", "loss_recovered", "kl"):
            assert multi[name][key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6), key
        assert multi[name]["lr_predicted_tokens"] == ref["lr_predicted_tokens"] == 2 * 31
    # random SAEs destroy the layer: spliced CE is far above clean
    assert multi["abstopk"]["ce_spliced"] > multi["abstopk"]["ce_clean"] + 0.5


def test_pipeline_end_to_end_tiny(tmp_path, lm):
    """Corpus → harvest 2k tokens → 6 SAEs (TopK/AbsTopK k ∈ {8, 16}, JumpReLU target L0
    8/16) in one pass → held-out evaluation, loss recovered, inference-time k, sentiment
    probing → Markdown + JSON + PNG."""
    from rich.console import Console

    from abstopk.experiments.demo import run_pipeline

    out = tmp_path / "pipe"
    console = Console(width=140, record=True)
    res = run_pipeline(out, tokens=2048, d_sae=64, steps=20, seeds=(0,), k_values=(8, 16),
                       batch_size=256, eval_tokens=256, eval_contexts=1, probe_examples=24,
                       console=console, progress=False, loaded=lm)
    print(res["stage_seconds"])
    files = res["files"]
    md = (out / "pipeline.md").read_text()
    assert "## Matched L0 = 16" in md and "| abstopk |" in md and "| jumprelu |" in md
    assert "sweep/sweep.png" in md
    # every Markdown table row has the same number of cells as its header
    for block in md.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.startswith("|")]
        if lines:
            assert len({ln.count("|") for ln in lines}) == 1, block
    js = json.loads((out / "pipeline.json").read_text())
    assert js["cache_rows"] == 2048
    assert (out / "sweep" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert files["csv"].endswith("sweep.csv")

    rows = res["sweep"]["rows"]
    trained = [r for r in rows if r["mode"] == "trained"]
    assert sorted((r["architecture"], r["sparsity"]) for r in trained) == sorted(
        (a, float(k)) for a in ("topk", "abstopk", "jumprelu") for k in (8, 16))
    for r in trained:
        if r["architecture"] != "jumprelu":
            assert r["l0"] == pytest.approx(r["sparsity"], abs=0.5)   # k-sparse by construction
        # 200 tiny steps reach nmse ≈ 0.38–0.41, fvu ≈ 0.82–0.91: below 0.6 and below the
        # fvu of predicting the mean (1.0), which an SAE that only learned b_dec would score
        assert 0 < r["nmse"] < 0.6 and r["fvu"] < 1.0 and r["l0"] > 0
        assert math.isfinite(r["loss_recovered"]) and r["ce_zero_ablated"] > r["ce_clean"]
        assert r["kl"] >= 0
    # AbsTopK fires with both signs, TopK and JumpReLU never negatively
    for r in trained:
        neg = r["negative_firing_fraction"]
        assert (neg > 0.05) if r["architecture"] == "abstopk" else (neg == 0)
    inf = [r for r in rows if r["mode"] == "inference_k"]
    assert sorted((r["architecture"], r["k_eval"]) for r in inf) == [("abstopk", 8),
                                                                     ("topk", 8)]
    # sentiment probing ran (VADER data is set up offline on this machine kind)
    probe = res["probing"]
    assert not probe.get("skipped"), probe.get("skipped")
    assert set(probe["results"]) == {"topk", "abstopk", "jumprelu"}
    from abstopk.eval.probing.probes import wilson_interval

    for r in probe["results"].values():
        # 24 sentences → 18 train, 6 test (3 per class): too few for accuracy levels, but
        # every accuracy must be a share of the 6 test sentences with its Wilson interval
        assert r["n_test"] == 6 and r["chance"] == 0.5
        for key in ("sae_abs_top_1_test_accuracy", "sae_abs_top_5_test_accuracy",
                    "sae_signed_top_1_test_accuracy", "sae_signed_top_5_test_accuracy",
                    "llm_test_accuracy", "sae_test_accuracy"):
            assert r[key] * 6 == pytest.approx(round(r[key] * 6)), key
            assert r[f"{key}_ci"] == pytest.approx(list(wilson_interval(r[key], 6))), key
    text = console.export_text()
    for header in ("Pipeline 1/4", "Pipeline 2/4", "Pipeline 3/4", "Pipeline 4/4"):
        assert header in text
    # a second run reuses the complete cache instead of harvesting again
    res2 = run_pipeline(out, tokens=2048, d_sae=64, steps=2, seeds=(1,), k_values=(8,),
                        batch_size=256, eval_tokens=256, eval_contexts=0, probe_examples=0,
                        console=Console(width=140, record=True), progress=False, loaded=lm)
    assert res2["cache"] == res["cache"] and res2["stage_seconds"]["harvest"] < 10
