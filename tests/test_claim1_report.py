"""The claim-1 summary (``report.claim1_report``): the signed − unsigned gaps at every k and
the frontier plot, from hand-made rows with known differences (no model)."""

from __future__ import annotations

import pytest

import abstopk.report.claim1_report as cr


def _row(arch, k, seed, nmse, lr_, tokens=9_998_336, l0=None):
    return {"run": f"{arch}_k{k}_s{seed}_{tokens}", "architecture": arch, "k": k,
            "tokens": "10M" if tokens > 5_000_000 else "1M", "train_tokens": tokens,
            "seed": seed, "lr": 0.002, "nmse": nmse, "fvu": nmse, "l0": l0 or float(k),
            "loss_recovered": lr_, "loss_recovered_mean_ablation": lr_, "kl": 0.1,
            "lr_contexts": 64}


ROWS = [
    _row("topk", 32, 0, 0.050, 0.99), _row("topk", 32, 1, 0.060, 0.98),
    _row("abstopk", 32, 0, 0.060, 0.98), _row("abstopk", 32, 1, 0.063, 0.975),
    _row("topk", 16, 0, 0.080, 0.97), _row("abstopk", 16, 0, 0.070, 0.975),
    _row("topk", 64, 0, 0.040, 0.995),          # k 64 AbsTopK missing: no gap at k 64
    _row("batchtopk", 32, 0, 0.055, 0.985, l0=31.0),
    _row("batchabstopk", 32, 0, 0.044, 0.99, l0=33.0),
    _row("jumprelu", 32, 0, 0.070, 0.97, l0=35.5),
    _row("topk", 32, 0, 0.100, 0.95, tokens=999_424),
    _row("abstopk", 32, 0, 0.090, 0.96, tokens=999_424),
]


def test_every_pair_at_every_k_is_paired_by_seed():
    gaps = cr.all_gap_rows(ROWS)
    keys = [(g["pair"][0], g["k"], g["train_tokens"]) for g in gaps]
    assert keys == [("abstopk", 16, 9_998_336), ("abstopk", 32, 999_424),
                    ("abstopk", 32, 9_998_336), ("batchabstopk", 32, 9_998_336)]
    k16, _, k32, batch = gaps
    assert k16["nmse_gap"] == pytest.approx(-0.01) and k16["nmse_rel_gap"] == pytest.approx(-12.5)
    assert k16["n"] == 1 and k16["nmse_se"] == 0.0
    # k 32 at 10M: seed 0 +0.010 (+20 %), seed 1 +0.003 (+5 %): mean 0.0065 ± 0.0035 (se)
    assert k32["seeds"] == [0, 1] and k32["nmse_gap"] == pytest.approx(0.0065)
    assert k32["nmse_se"] == pytest.approx(0.0035)
    assert k32["nmse_rel_gap"] == pytest.approx(12.5) and k32["nmse_rel_se"] == pytest.approx(7.5)
    assert k32["loss_recovered_gap"] == pytest.approx(-0.0075)
    # batch AbsTopK − BatchTopK: −0.011 = −20 % of 0.055, loss recovered +0.005
    assert batch["nmse_rel_gap"] == pytest.approx(-20.0)
    assert batch["loss_recovered_gap"] == pytest.approx(0.005)
    assert cr.gap_rows(ROWS) == [g for g in gaps if g["pair"] == ("abstopk", "topk")
                                 and g["k"] == 32]


def test_the_summary_lists_the_gaps_and_draws_the_frontier_at_the_largest_count(tmp_path,
                                                                                 monkeypatch):
    drawn = {}
    import abstopk.report.plots as plots

    real = plots.plot_sweep

    def spy(rows, path, *, title=None, dpi=110):
        drawn.update(rows=rows, title=title)
        return real(rows, path, title=title, dpi=dpi)

    monkeypatch.setattr(plots, "plot_sweep", spy)
    cr.write_claim1_report(tmp_path, ROWS, [], n_planned=12, layer=6)
    md = (tmp_path / "claim1.md").read_text()
    assert "| AbsTopK − TopK | 16 | 9,998,336 | 0 | -0.0100 ± 0.0000 | -12.5 ± 0.0 |" in md
    assert "| AbsTopK − TopK | 32 | 9,998,336 | 0,1 | 0.0065 ± 0.0035 | 12.5 ± 7.5 |" in md
    assert "| batch AbsTopK − BatchTopK | 32 | 9,998,336 | 0 | -0.0110 ± 0.0000 |" in md
    assert "| 64 |" not in md.split("Signed − unsigned")[1]
    # only the 10M rows, each as a trained point at its k; every architecture is there
    assert {r["train_tokens"] for r in drawn["rows"]} == {9_998_336}
    assert sorted({r["architecture"] for r in drawn["rows"]}) == [
        "abstopk", "batchabstopk", "batchtopk", "jumprelu", "topk"]
    assert all(r["mode"] == "trained" and r["sparsity"] == r["k"] for r in drawn["rows"])
    assert "layer 6" in drawn["title"] and "9,998,336" in drawn["title"]
    assert (tmp_path / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = plots._curves(drawn["rows"], "nmse", "trained")
    assert curves["topk"] == [(16.0, 0.0, 0.08, 0.0), (32.0, 0.0, pytest.approx(0.055),
                                                       pytest.approx(0.00707, abs=1e-5)),
                              (64.0, 0.0, 0.04, 0.0)]
    assert curves["jumprelu"] == [(35.5, 0.0, 0.07, 0.0)]


def test_no_frontier_with_one_architecture_at_the_largest_count(tmp_path):
    rows = [_row("topk", 32, 0, 0.05, 0.99), _row("abstopk", 32, 0, 0.06, 0.98, tokens=999_424)]
    assert cr.plot_frontier(rows, tmp_path / "f.png", layer=6) is False
    assert not (tmp_path / "f.png").exists()
    assert cr.plot_frontier([], tmp_path / "f.png", layer=6) is False
