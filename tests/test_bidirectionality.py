"""The bidirectionality proxy: known answers, and planted features classified correctly."""

from __future__ import annotations

import pytest

from abstopk.analysis.bidirectionality import (
    BidirConfig,
    balance,
    classify,
    coherence,
    distinctness,
    fraction_with_ci,
    wilson_interval,
)
from abstopk.analysis.planted import PlantedConfig, planted_validation


def test_known_answers():
    assert coherence(["a"] * 5) == 1.0
    assert coherence(list("abcde")) == 0.0
    assert coherence(list("aabbc")) == pytest.approx(1 - 2 / 4)
    assert coherence(["a"], min_examples=2) == 0.0
    assert distinctness("ab", "bc") == pytest.approx(1 - 1 / 3)
    assert distinctness("ab", "cd") == 1.0
    assert balance([2.0, 4.0], [-1.5, -1.5]) == pytest.approx(0.5)
    man, woman = ["man", "he", "his"] * 4, ["woman", "she", "her"] * 4
    s, lab = classify(man, woman, 100, 80, True)
    assert lab == "bidirectional" and s == pytest.approx(1 - 2 / 11)
    assert classify(man, woman, 100, 80, False)[1] == "unidirectional"   # non-negative SAE
    assert classify(man, man, 100, 80, True)[1] == "unidirectional"      # same tokens both sides
    noise = [f"t{i}" for i in range(12)]
    assert classify(man, noise, 100, 80, True)[1] == "unidirectional"
    assert classify(noise, noise[::-1], 100, 80, True)[1] == "unclear"
    assert classify([], [], 0, 0, True) == (0.0, "dead")
    # a weak opposite side (interference) is not a pole
    assert classify(man, woman, 100, 80, True, pos_values=[4.0] * 12,
                    neg_values=[-1.0] * 12)[1] == "unidirectional"
    with pytest.raises(ValueError):
        BidirConfig(min_coherence=1.5)


def test_wilson_and_fraction():
    lo, hi = wilson_interval(3, 10)
    assert lo == pytest.approx(0.1078, abs=1e-4) and hi == pytest.approx(0.6032, abs=1e-4)
    f = fraction_with_ci(["bidirectional", "dead", "unidirectional", "bidirectional"])
    assert f["live"] == 3 and f["bidirectional_fraction"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", [5, 6])
def test_planted_features_are_classified(seed):
    """Planted signed features → bidirectional, one-sided ones → unidirectional."""
    r = planted_validation(PlantedConfig(n_bidirectional=20, n_unidirectional=20, n_random=5,
                                         n_rows=20000, seed=seed))
    assert r["accuracy_bidirectional"] == 1.0
    assert r["accuracy_unidirectional"] >= 0.95
    assert r["score_auc"] > 0.95


def test_planted_topk_never_bidirectional_but_scores_the_discarded_pole():
    r = planted_validation(PlantedConfig(n_bidirectional=20, n_unidirectional=20, n_random=0,
                                         n_rows=20000, architecture="topk", seed=7))
    assert r["counts"]["bidirectional"] == 0
    assert r["accuracy_unidirectional"] == 1.0
    assert r["score_auc"] > 0.95       # the negative pre-activation side still carries the pole
