"""The claim-1 ablation table (``report.claim1_ablation``) on hand-made rows with known
means and paired gaps, 1M and 10M tokens apart (no model; the steps themselves run in
tests/test_claim1.py)."""

from __future__ import annotations

import pytest

from abstopk.experiments.claim1 import ABLATIONS, plan_runs
from abstopk.report.claim1_ablation import ablation_gaps, ablation_groups, write_ablation_report


def _r(variant, arch, seed, pos1, dead=0.0, lr=None, tokens=None):
    r = {"variant": variant, "architecture": arch, "seed": seed, "nmse": pos1 + 0.001,
         "nmse_pos1": pos1, "fvu_pos1": pos1 * 0.8, "l0": 32.0, "dead_fraction": dead}
    if lr is not None:
        r |= {"loss_recovered_pos1": lr, "loss_recovered_mean_ablation_pos1": lr - 0.1}
    return r if tokens is None else {**r, "tokens": tokens}   # no tokens: a 1M row


ROWS = [_r("plain", "topk", 0, 0.10, 0.4, 0.90), _r("plain", "topk", 1, 0.12, 0.2, 0.92),
        _r("plain", "abstopk", 0, 0.11, lr=0.95), _r("plain", "abstopk", 1, 0.15, lr=0.93),
        _r("aux", "topk", 0, 0.08), _r("aux", "abstopk", 0, 0.06),
        _r("nosink", "abstopk", 0, 0.05, lr=0.97, tokens="10M"),
        _r("nosink", "topk", 0, 0.04, lr=0.98, tokens="10M"),
        _r("plain", "topk", 0, 0.09, tokens="10M")]


def test_groups_and_paired_gaps_have_the_hand_computed_values(tmp_path):
    g = {(x["tokens"], x["variant"], x["architecture"]): x for x in ablation_groups(ROWS)}
    assert [k for k in g] == [("1M", "plain", "topk"), ("1M", "plain", "abstopk"),
                              ("1M", "aux", "topk"), ("1M", "aux", "abstopk"),
                              ("10M", "plain", "topk"), ("10M", "nosink", "topk"),
                              ("10M", "nosink", "abstopk")]
    assert g[("1M", "plain", "topk")]["nmse_pos1"] == pytest.approx(0.11)
    assert g[("1M", "plain", "topk")]["dead_fraction"] == pytest.approx(0.3)
    assert g[("1M", "plain", "topk")]["loss_recovered_pos1"] == pytest.approx(0.91)
    assert g[("1M", "aux", "topk")]["loss_recovered_pos1"] != \
        g[("1M", "aux", "topk")]["loss_recovered_pos1"]                      # none: nan
    by = {(x["tokens"], x["variant"]): x for x in ablation_gaps(ROWS)}
    assert sorted(by) == [("10M", "nosink"), ("1M", "aux"), ("1M", "plain")]  # 10M plain: no pair
    # 10M nosink, one seed: Δ nmse +0.01 (25 % of 0.04), Δ loss recovered −0.01, no spread
    ns = by[("10M", "nosink")]
    assert (ns["gap"], ns["rel_gap"], ns["lr_gap"]) == pytest.approx((0.01, 25.0, -0.01))
    assert ns["se"] == 0.0 and ns["lr_se"] == 0.0
    # plain 1M: Δ loss recovered +0.05 and +0.01 → mean 0.03, se 0.02
    assert (by[("1M", "plain")]["lr_gap"], by[("1M", "plain")]["lr_se"]) == \
        pytest.approx((0.03, 0.02))
    gaps = {v: x for (t, v), x in by.items() if t == "1M"}
    # plain: seed 0 +0.01 (10 %), seed 1 +0.03 (25 %): mean 0.02, se = |0.03−0.01|/2 = 0.01;
    # relative mean 17.5 %, se 7.5 %
    assert gaps["plain"]["gap"] == pytest.approx(0.02) and gaps["plain"]["se"] == \
        pytest.approx(0.01)
    assert gaps["plain"]["rel_gap"] == pytest.approx(17.5)
    assert gaps["plain"]["rel_se"] == pytest.approx(7.5)
    assert gaps["aux"]["gap"] == pytest.approx(-0.02) and gaps["aux"]["se"] == 0.0
    assert gaps["aux"]["rel_gap"] == pytest.approx(-25.0)
    assert gaps["aux"]["lr_gap"] != gaps["aux"]["lr_gap"]      # aux rows have none: nan
    assert "nosink" not in gaps
    write_ablation_report(tmp_path, ROWS, layer=15)
    md = (tmp_path / "ablation.md").read_text()
    assert md.startswith("# Claim 1, layer 15")
    assert "| 1M | plain | topk | 0,1 | 0.1110 | 0.1100 | 0.0880 | 32.0 | 0.300 | 0.9100 | " \
           "0.8100 |" in md
    assert "| 1M | aux | topk | 0 | 0.0810 | 0.0800 | 0.0640 | 32.0 | 0.000 |  |  |" in md
    assert "| 1M | plain | 0,1 | 0.0200 ± 0.0100 | 17.5 ± 7.5 | 0.0300 ± 0.0200 |" in md
    assert "| 1M | aux | 0 | -0.0200 ± 0.0000 | -25.0 ± 0.0 |  |" in md
    assert "| 10M | nosink | 0 | 0.0100 ± 0.0000 | 25.0 ± 0.0 | -0.0100 ± 0.0000 |" in md


def test_the_plan_has_both_variants_on_every_layer_with_distinct_names():
    for layer in (6, 15):
        abl = [r for r in plan_runs(layer) if r.step == "ablation"]
        assert sorted({r.variant for r in abl}) == sorted(ABLATIONS)
        assert len(abl) == 8 and all(r.tokens == "1M" and r.k == 32 for r in abl)
        ten = [r.name for r in plan_runs(layer) if r.step == "nosink-10M"]
        assert ten == ["topk_k32_10M_s0_nosink", "abstopk_k32_10M_s0_nosink",
                       "topk_k32_10M_s1_nosink", "abstopk_k32_10M_s1_nosink"]
        names = [r.name for r in plan_runs(layer)]
        assert len(names) == len(set(names))
    assert "topk_k32_1M_s1_aux" in [r.name for r in plan_runs(6)]
