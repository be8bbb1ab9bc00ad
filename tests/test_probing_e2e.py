"""End to end on the real embedded model (SmolLM2-135M) at layer 3: sparse probing of an SAE
with a planted latent on real Italian/English linux-doc sentences, and first-letter
absorption with a small random AbsTopK SAE."""

from __future__ import annotations

import math

import pytest
import torch

from abstopk.eval.probing import TASKS
from abstopk.sae import SAE, SAEConfig

pytestmark = pytest.mark.slow

PLANTED = 7


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


def _planted(lm, sae, data) -> SAE:
    """A copy of ``sae`` whose latent PLANTED reads the Italian − English direction: with
    w = mean x̄(it) − mean x̄(en) and m the midpoint of the two means (from 32 train sentences
    per class), u = 50·(x − m)·w/‖w‖² — positive on Italian, *negative* on English, far
    above the random latents' |u| (≈ 3), so AbsTopK keeps it at almost every token."""
    from abstopk.eval.probing.activations import pooled_activations

    model, tok = lm
    y = data.train_y
    texts = ([t for t, c in zip(data.train_texts, y, strict=True) if c == 0][:32]
             + [t for t, c in zip(data.train_texts, y, strict=True) if c == 1][:32])
    x = torch.as_tensor(pooled_activations(sae, model, tok, texts, layer=3, site="resid_post",
                                           max_length=40, progress=False).x).double()
    w = x[32:].mean(0) - x[:32].mean(0)
    m = (x[32:].mean(0) + x[:32].mean(0)) / 2
    out = SAE(sae.cfg, seed=0).eval()
    out.load_state_dict(sae.state_dict())
    with torch.no_grad():
        out.W_enc[:, PLANTED] = (50 * w / w.norm() ** 2).float()
        out.b_enc[PLANTED] = float(-50 * (m - out.b_dec.double()) @ w / w.norm() ** 2)
    return out


def test_sparse_probing_finds_a_planted_signed_latent(lm, sae):
    from abstopk.eval.probing.probes import wilson_interval
    from abstopk.eval.probing.tasks import load_task_data

    model, tok = lm
    kw = dict(n_examples=96, seed=0, tasks=["language_it"], test_fraction=0.5, max_length=40,
              progress=False)
    data = load_task_data("language_it", 96, 0, test_fraction=0.5, log=lambda s: None)
    assert data.classes == ["en", "it_IT"]
    r = TASKS["sparse_probing"](_planted(lm, sae, data), model, tok, **kw)
    t = r["tasks"]["language_it"]
    assert (t["n_train"], t["n_test"], t["n_test_per_class"]) == (48, 48, 24)
    assert t["chance"] == 0.5 and t["n_duplicates_removed"] == 8   # linux-doc it/en: 8 removed
    assert r["short_tasks"] == ["language_it"]                      # 24 < 250 per class
    # the signed selection ranks the planted latent first and it alone classifies the
    # held-out sentences (the raw residual probe: 1.0)
    assert t["sae_signed_top_1_latents"] == [PLANTED]
    assert t["sae_signed_top_1_test_accuracy"] >= 0.9
    assert t["llm_test_accuracy"] >= 0.95
    # the unsigned rule (mean |z|) sees |z| ≈ the same on both sides: it does worse with one
    # latent, whichever it picks
    assert t["sae_abs_top_1_test_accuracy"] <= t["sae_signed_top_1_test_accuracy"] - 0.05
    # top-k selections are nested (the ranking does not depend on k)
    assert t["sae_signed_top_5_latents"][:2] == t["sae_signed_top_2_latents"]
    for key in ("sae_signed_top_1_test_accuracy", "sae_abs_top_1_test_accuracy",
                "llm_test_accuracy", "sae_test_accuracy"):
        acc = t[key]
        assert acc * 48 == pytest.approx(round(acc * 48))          # a share of 48 sentences
        assert t[f"{key}_ci"] == pytest.approx(list(wilson_interval(acc, 48)))
    assert r["summary"] == t["sae_signed_top_1_test_accuracy"]
    assert math.isfinite(r["summary_ci"][0]) and r["summary_ci"][0] < r["summary"]
    print({k: v for k, v in t.items() if k.endswith("accuracy")})


def test_absorption_real_vocabulary(lm, sae):
    model, tok = lm
    r = TASKS["absorption"](sae, model, tok, n_examples=312, seed=0, progress=False)
    assert r["n_vocab_words"] > 20000            # SmolLM2: 30,570 " word" tokens
    assert r["n_letters"] >= 15
    # the first-letter probe is far above chance (1/26 ≈ 0.04) even at layer 3
    assert r["probe_test_accuracy"] > 0.15
    # the headline is the unweighted mean over letters of each letter's mean over its words
    per = r["per_letter_absorption_fraction"]
    assert len(per) == r["n_letters"] and r["n_eval_words"] >= r["n_letters"]
    assert r["mean_absorption_fraction"] == pytest.approx(sum(per.values()) / len(per))
    for key in ("mean_full_absorption_rate", "main_latent_miss_rate"):
        assert math.isfinite(r[key])
    assert r["summary"] == r["mean_absorption_fraction"]
    assert r["signed_ranking"] is True                 # AbsTopK: main latents by |cos|
    assert len(r["main_latents"]) >= r["n_letters"]    # one main latent per probed letter
