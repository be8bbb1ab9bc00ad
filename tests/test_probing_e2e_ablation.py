"""SCR and TPP end to end on the real embedded model with a small random AbsTopK SAE (layer 3)
and real VADER sentences (sentiment × source)."""

from __future__ import annotations

import json
import math

import pytest

from abstopk.eval.probing import TASKS
from abstopk.sae import SAE, SAEConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup():
    from abstopk.lm import load_model

    model, tok, _ = load_model("smollm2-135m")
    sae = SAE(SAEConfig(d_in=model.config.hidden_size, d_sae=256, architecture="abstopk", k=16,
                        hook_layer=3, hook_site="resid_post"), seed=0)
    return sae, model, tok


def test_scr_real(setup):
    sae, model, tok = setup
    r = TASKS["scr"](sae, model, tok, n_examples=96, seed=0, n_values=(2, 5), max_length=48,
                     progress=False)
    json.dumps(r)  # JSON-serialisable
    p = r["pairs"]["movie/tweets"]
    assert p["n_train"] == 72 and p["n_test"] == 24 and p["n_biased_train"] == 36
    # movie snippets vs tweets is an easy distinction for the residual stream
    assert p["oracle_acc_B"] >= 0.75
    for n in (2, 5):
        assert math.isfinite(r[f"scr_metric_top_{n}"])
        assert len(p[f"latents_B_top_{n}"]) == n
        assert r[f"scr_metric_top_{n}"] in (p[f"scr_dir1_top_{n}"], p[f"scr_dir2_top_{n}"])
    assert r["summary"] == r["scr_metric_top_5"]


def test_tpp_real(setup):
    sae, model, tok = setup
    r = TASKS["tpp"](sae, model, tok, n_examples=96, seed=0, n_values=(2, 5), max_length=48,
                     progress=False)
    json.dumps(r)
    assert r["classes"] == ["amazon", "movie", "nyt", "tweets"]
    clean = list(r["clean_accuracy"].values())
    assert all(0.0 <= a <= 1.0 for a in clean) and sum(clean) / 4 >= 0.7  # sources are easy
    for n in (2, 5):
        tot = r[f"tpp_top_{n}_total_metric"]
        assert math.isfinite(tot) and -1.0 <= tot <= 1.0
        assert tot == pytest.approx(r[f"tpp_top_{n}_intended_diff_only"]
                                    - r[f"tpp_top_{n}_unintended_diff_only"])
    assert r["summary"] == r["tpp_top_5_total_metric"]
