"""Steering comparison: scorers, statistics and costs on hand-computed inputs; one tiny
end-to-end ``abstopk steer`` run (twice: bit-identical) and the refusal mechanics."""

from __future__ import annotations

import json
import math

import pytest
import torch

from abstopk.steer.axes import gender_texts, split
from abstopk.steer.generate import distinct_n, repetition_rate
from abstopk.steer.refusal import is_refusal, refusal_logodds
from abstopk.steer.scorers import LexiconScorer, TextClassifierScorer, VaderScorer
from abstopk.steer.stats import (
    bootstrap_ci,
    capability01,
    concept01,
    fluency01,
    harmonic_mean,
    spearman,
)


# ------------------------------------------------------------------ scorers
def test_lexicon_scorer_counts_words():
    s = LexiconScorer(["she", "her", "mother"], ["he", "him"])
    # she, her, mother → 3 A words; him → 1 B word: (3 − 1) / 4
    assert s(["She and her mother met him.", "", "The table is red.", "He, him."]) == [
        0.5, 0.0, 0.0, -1.0]
    with pytest.raises(ValueError, match="both lexicons"):
        LexiconScorer(["her"], ["her"])


def test_vader_scorer_signs():
    pos, neg, neutral = VaderScorer()(["I love this wonderful, happy day!",
                                       "This is a horrible, awful disaster.",
                                       "The table is in the room."])
    assert pos > 0.5 and neg < -0.5 and neutral == 0.0


def test_text_classifier_scorer_separates_held_out_texts():
    lit = [f"{n} felt her heart full of tender affection for her dear sister {m}."
           for n in ("Emma", "Anne", "Jane") for m in ("Harriet", "Mary", "Lydia")]
    tec = [f"The {d} driver registers a {b} buffer before the kernel module loads."
           for d in ("usb", "pci", "net") for b in ("dma", "ring", "page")]
    clf = TextClassifierScorer(seed=0).fit(lit[:6], tec[:6], lit[6:], tec[6:])
    assert clf.accuracy == 1.0
    a, b = clf(["Her sister felt tender affection.", "The driver loads the kernel buffer."])
    assert a > 0 > b and -1 <= b and a <= 1


# ------------------------------------------------------------------ statistics
def test_spearman_hand_computed():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # y ranks with a tie: [1.5, 1.5, 3, 4]; centred x·y = 4.5, Σx² = 5, Σy² = 4.5
    assert spearman([1, 2, 3, 4], [1, 1, 2, 3]) == pytest.approx(4.5 / math.sqrt(5 * 4.5))
    assert spearman([1, 2, 3], [7, 7, 7]) is None


def test_bootstrap_ci_on_tiny_tables():
    # two prompts, one seed, values 0 and 1: replicate means are 0, ½, 1 with P ¼, ½, ¼
    m, lo, hi = bootstrap_ci([[0.0], [1.0]], n_boot=4000, level=0.9, seed=1)
    assert (m, lo, hi) == (0.5, 0.0, 1.0)
    m, lo, hi = bootstrap_ci([[0.0], [1.0]], n_boot=4000, level=0.4, seed=1)
    assert lo == hi == 0.5  # the middle 40 % of the replicates are all ½
    assert bootstrap_ci([[0.3, 0.3], [0.3, 0.3]], n_boot=50) == pytest.approx((0.3, 0.3, 0.3))
    # seeds are resampled too: one prompt, seeds 0 and 1
    assert bootstrap_ci([[0.0, 1.0]], n_boot=4000, level=0.9, seed=2) == (0.5, 0.0, 1.0)


def test_score_mappings_and_harmonic_mean():
    assert concept01(0.5, 1) == 0.75 and concept01(0.5, -1) == 0.25
    assert fluency01(20.0, 10.0) == 0.5 and fluency01(5.0, 10.0) == 1.0
    assert fluency01(math.inf, 10.0) == 0.0
    assert capability01(3.0, 2.5) == pytest.approx(math.exp(-0.5))
    assert harmonic_mean([1.0, 0.5]) == pytest.approx(2 / 3)
    assert harmonic_mean([1.0, 0.0, 1.0]) == 0.0


def test_distinct_and_repetition():
    assert distinct_n([1, 2, 1, 2], 2) == pytest.approx(2 / 3)   # (1,2) (2,1) (1,2)
    assert repetition_rate([1, 2, 3, 1, 2, 3], 3) == pytest.approx(0.25)  # 123 231 312 123
    assert distinct_n([1], 2) == 1.0


def test_gender_texts_are_paired_and_splits_seeded():
    fem, mal, g = gender_texts()
    assert len(fem) == len(mal) == len(g["templates"]) * len(g["female_names"])
    lex = LexiconScorer(g["lexicon_female"], g["lexicon_male"])
    assert all(x == 1.0 for x in lex(fem)) and all(x == -1.0 for x in lex(mal))
    assert split(range(10), 0.3, 5) == split(range(10), 0.3, 5)
    a, b = split(range(10), 0.3, 5)
    assert len(a) == 3 and sorted(a + b) == list(range(10))


def test_refusal_phrases_and_logodds():
    assert is_refusal("I'm sorry, but I can't help with that.")
    assert is_refusal("I cannot provide instructions")
    assert not is_refusal("Sure! Here is a recipe for bread.")
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    assert refusal_logodds(logp, [0]).item() == pytest.approx(0.0, abs=1e-6)
    assert refusal_logodds(logp, [0, 1]).item() == pytest.approx(math.log(3), abs=1e-5)


# ------------------------------------------------------------------ on the embedded model
def _tiny_saes(folder):
    from abstopk.sae import SAE, SAEConfig

    torch.manual_seed(0)
    for arch in ("abstopk", "topk"):
        SAE(SAEConfig(d_in=576, d_sae=64, architecture=arch, k=4, hook_layer=6,
                      hook_site="resid_post")).save(folder / arch)


def _main(argv) -> int:
    from abstopk.cli import main

    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.mark.slow
def test_steer_command_end_to_end_is_reproducible(tmp_path):
    _tiny_saes(tmp_path / "saes")
    args = ["steer", "--axes", "gender", "--methods", "none,dim,abstopk,topk",
            "--strengths", "-4,4", "--n-prompts", "2", "--seeds", "2",
            "--max-new-tokens", "4", "--n-train", "8", "--capability-contexts", "1",
            "--capability-context-size", "16", "--magnitude-tokens", "256", "--n-boot", "50",
            "--sae-dir", str(tmp_path / "saes")]
    assert _main(args + ["--out", str(tmp_path / "a")]) == 0
    assert _main(args + ["--out", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "steer.json").read_text())
    b = json.loads((tmp_path / "b" / "steer.json").read_text())
    # none 1 + (dim, abstopk, topk) × 2 strengths = 7 conditions × (2 dev + 2 test) × 2 seeds
    assert len(a["records"]) == 7 * 4 * 2
    keys = {(r["method"], r["strength"], r["split"], r["prompt_id"], r["seed"])
            for r in a["records"]}
    assert {r["seed"] for r in a["records"]} == {0, 1}
    assert len(keys) == len(a["records"])
    assert all(set(r) >= {"method", "latent", "strength", "seed", "prompt_id", "continuation"}
               for r in a["records"])
    assert a["records"] == b["records"]
    lat = a["axes"][0]["latents"]
    assert lat["abstopk"]["n_latents"] == 1 and lat["topk"]["pos"] != lat["topk"]["neg"]
    assert {r["latent"] for r in a["records"] if r["method"] == "abstopk"} == {
        lat["abstopk"]["pos"]}
    steered = {r["continuation"] for r in a["records"] if r["method"] == "dim"}
    assert steered != {r["continuation"] for r in a["records"] if r["method"] == "none"}
    assert (tmp_path / "a" / "dose_response.png").stat().st_size > 1000
    assert "Sign symmetry" in (tmp_path / "a" / "steer.md").read_text()
    assert _main(args + ["--out", str(tmp_path / "a")]) == 2  # a finished result is kept
    # steer-merge: two runs of the same settings merge into the first one's rows
    assert _main(["steer-merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                  str(tmp_path / "m")]) == 0
    m = json.loads((tmp_path / "m" / "steer.json").read_text())
    assert m["records"] == a["records"] and m["summary"]["points"] == a["summary"]["points"]


@pytest.mark.slow
def test_refusal_mode_runs_end_to_end(lm):
    from abstopk.steer.refusal import RefusalConfig, run_refusal

    model, tok, _ = lm
    res = run_refusal(model, tok, RefusalConfig(layers=[6], n_train=4, n_eval=2,
                                                max_new_tokens=4), {})
    assert res["chosen_layer"] == 6 and res["nan_check"]
    names = [r["method"] for r in res["rows"]]
    assert names[0] == "none" and "dim ablate" in names
    none = res["rows"][0]
    assert none["harmless_kl"] == pytest.approx(0.0, abs=1e-6)
    abl = next(r for r in res["rows"] if r["method"] == "dim ablate")
    assert abl["harmless_kl"] > 0
