"""End to end on the real embedded model (SmolLM2-135M) with a small random AbsTopK SAE at
layer 3: sparse probing on real VADER sentences and first-letter absorption."""

from __future__ import annotations

import math

import pytest

from abstopk.eval.probing import TASKS
from abstopk.sae import SAE, SAEConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lm():
    from abstopk.lm import load_model

    model, tok, _ = load_model("smollm2-135m")
    return model, tok


@pytest.fixture(scope="module")
def sae(lm):
    d_in = lm[0].config.hidden_size
    return SAE(SAEConfig(d_in=d_in, d_sae=256, architecture="abstopk", k=16, hook_layer=3,
                         hook_site="resid_post"), seed=0)


def test_sparse_probing_real_sentiment(lm, sae):
    model, tok = lm
    r = TASKS["sparse_probing"](sae, model, tok, n_examples=144, seed=0, tasks=["sentiment"],
                                test_fraction=0.5, max_length=48, progress=False)
    t = r["tasks"]["sentiment"]
    assert t["n_train"] == 72 and t["n_test"] == 72
    # the residual stream at layer 3 carries sentiment: clearly above chance (0.5) on 72
    # held-out human-rated sentences (P(≥ 0.65 | chance) < 0.01)
    assert t["llm_test_accuracy"] >= 0.65
    for v in ("abs", "signed"):
        for k in (1, 2, 5):
            acc = t[f"sae_{v}_top_{k}_test_accuracy"]
            assert 0.0 <= acc <= 1.0
            lat = t[f"sae_{v}_top_{k}_latents"]
            assert len(lat) == k and len(set(lat)) == k and all(0 <= i < 256 for i in lat)
    # top-k selections are nested (the ranking does not depend on k)
    assert t["sae_abs_top_5_latents"][:2] == t["sae_abs_top_2_latents"]
    assert math.isfinite(r["summary"]) and r["summary"] == t["sae_abs_top_1_test_accuracy"]
    assert 0.0 <= r["sae_test_accuracy"] <= 1.0


def test_absorption_real_vocabulary(lm, sae):
    model, tok = lm
    r = TASKS["absorption"](sae, model, tok, n_examples=312, seed=0, progress=False)
    assert r["n_vocab_words"] > 20000            # SmolLM2: 30,570 " word" tokens
    assert r["n_letters"] >= 15
    # the first-letter probe is far above chance (1/26 ≈ 0.04) even at layer 3
    assert r["probe_test_accuracy"] > 0.15
    for key in ("mean_absorption_fraction", "mean_full_absorption_rate",
                "main_latent_miss_rate"):
        assert 0.0 <= r[key] <= 1.0
    assert r["summary"] == r["mean_absorption_fraction"]
    assert r["signed_ranking"] is True                 # AbsTopK: main latents by |cos|
    assert len(r["main_latents"]) >= r["n_letters"]    # one main latent per probed letter
