"""The claim-1 ablation table (``report.claim1_ablation``) on hand-made rows with known
means and paired gaps (no model; the step itself runs in tests/test_claim1.py)."""

from __future__ import annotations

import pytest

from abstopk.experiments.claim1 import ABLATIONS, plan_runs
from abstopk.report.claim1_ablation import ablation_gaps, ablation_groups, write_ablation_report


def _r(variant, arch, seed, pos1, dead=0.0):
    return {"variant": variant, "architecture": arch, "seed": seed, "nmse": pos1 + 0.001,
            "nmse_pos1": pos1, "fvu_pos1": pos1 * 0.8, "l0": 32.0, "dead_fraction": dead}


ROWS = [_r("plain", "topk", 0, 0.10, 0.4), _r("plain", "topk", 1, 0.12, 0.2),
        _r("plain", "abstopk", 0, 0.11), _r("plain", "abstopk", 1, 0.15),
        _r("aux", "topk", 0, 0.08), _r("aux", "abstopk", 0, 0.06)]


def test_groups_and_paired_gaps_have_the_hand_computed_values(tmp_path):
    g = {(x["variant"], x["architecture"]): x for x in ablation_groups(ROWS)}
    assert [k for k in g] == [("plain", "topk"), ("plain", "abstopk"), ("aux", "topk"),
                              ("aux", "abstopk")]
    assert g[("plain", "topk")]["nmse_pos1"] == pytest.approx(0.11)
    assert g[("plain", "topk")]["dead_fraction"] == pytest.approx(0.3)
    gaps = {x["variant"]: x for x in ablation_gaps(ROWS)}
    # plain: seed 0 +0.01 (10 %), seed 1 +0.03 (25 %): mean 0.02, se = |0.03−0.01|/2 = 0.01;
    # relative mean 17.5 %, se 7.5 %
    assert gaps["plain"]["gap"] == pytest.approx(0.02) and gaps["plain"]["se"] == \
        pytest.approx(0.01)
    assert gaps["plain"]["rel_gap"] == pytest.approx(17.5)
    assert gaps["plain"]["rel_se"] == pytest.approx(7.5)
    assert gaps["aux"]["gap"] == pytest.approx(-0.02) and gaps["aux"]["se"] == 0.0
    assert gaps["aux"]["rel_gap"] == pytest.approx(-25.0)
    assert "nosink" not in gaps
    write_ablation_report(tmp_path, ROWS, layer=15)
    md = (tmp_path / "ablation.md").read_text()
    assert md.startswith("# Claim 1, layer 15")
    assert "| plain | topk | 0,1 | 0.1110 | 0.1100 | 0.0880 | 32.0 | 0.300 |" in md
    assert "| plain | 0,1 | 0.0200 ± 0.0100 | 17.5 ± 7.5 |" in md
    assert "| aux | 0 | -0.0200 ± 0.0000 | -25.0 ± 0.0 |" in md


def test_the_plan_has_both_variants_on_every_layer_with_distinct_names():
    for layer in (6, 15):
        abl = [r for r in plan_runs(layer) if r.step == "ablation"]
        assert sorted({r.variant for r in abl}) == sorted(ABLATIONS)
        assert len(abl) == 8 and all(r.tokens == "1M" and r.k == 32 for r in abl)
        names = [r.name for r in plan_runs(layer)]
        assert len(names) == len(set(names))
    assert "topk_k32_1M_s1_aux" in [r.name for r in plan_runs(6)]
