"""Claim 1 on two layers side by side (``report.claim1_layers``): hand-made claim1.csv files
with known means, standard deviations and paired gaps (no model)."""

from __future__ import annotations

import json
import math

import pytest
from cli_runner import run_cli

from abstopk.errors import DataUnavailable, RunMismatchError
from abstopk.report.claim1_layers import layers_gap_rows, layers_markdown, layers_rows
from abstopk.report.claim1_report import write_claim1_report


def _row(arch, seed, nmse, lr_=0.5, tokens="1M", train_tokens=999424, k=32):
    return {"run": f"{arch}_k{k}_{tokens}_s{seed}", "architecture": arch, "k": k,
            "tokens": tokens, "train_tokens": train_tokens, "seed": seed, "lr": 0.002,
            "nmse": nmse, "fvu": nmse * 0.8, "l0": 32.0, "loss_recovered": lr_,
            "loss_recovered_mean_ablation": lr_ - 0.01 * (seed + 1), "kl": 0.1,
            "lr_contexts": 64}


@pytest.fixture
def runs(tmp_path):
    """Layer 6 (written by the report, with its layer column) and layer 15 (an older csv
    without the column: its layer comes from plan.json)."""
    a, b = tmp_path / "L6", tmp_path / "L15"
    a.mkdir(), b.mkdir()
    write_claim1_report(a, [_row("topk", 0, 0.10, 0.90), _row("topk", 1, 0.12, 0.92),
                            _row("abstopk", 0, 0.11, 0.89), _row("abstopk", 1, 0.14, 0.88)],
                        [], n_planned=25, layer=6)
    write_claim1_report(b, [_row("topk", 0, 0.20, 0.80), _row("abstopk", 0, 0.23, 0.70)], [],
                        n_planned=16, layer=15)
    lines = (b / "claim1.csv").read_text().splitlines()
    assert lines[0].startswith("layer,run,") and lines[1].startswith("15,")
    (b / "claim1.csv").write_text("\n".join(line.split(",", 1)[1] for line in lines) + "\n")
    (b / "plan.json").write_text(json.dumps({"layer": 15}))
    return a, b


def test_groups_per_layer_with_known_means_and_gaps(runs):
    a, b = runs
    rows = layers_rows([a, b / "claim1.csv"])
    assert [(g["layer"], g["architecture"]) for g in rows] == [
        (6, "abstopk"), (15, "abstopk"), (6, "topk"), (15, "topk")]
    t6 = rows[2]
    assert t6["seeds"] == [0, 1] and t6["nmse"] == pytest.approx(0.11)
    assert t6["nmse_sd"] == pytest.approx(math.sqrt(2 * 0.01 ** 2))    # sd of 0.10, 0.12
    assert t6["fvu"] == pytest.approx(0.088) and t6["loss_recovered"] == pytest.approx(0.91)
    # mean ablation read back from the csv as a number: 0.89 and 0.90 → 0.895
    assert t6["loss_recovered_mean_ablation"] == pytest.approx(0.895)
    assert rows[3]["nmse"] == pytest.approx(0.20) and rows[3]["seeds"] == [0]
    gaps = {g["layer"]: g for g in layers_gap_rows([a, b])}
    # layer 6: AbsTopK − TopK per seed 0.01 and 0.02 → mean 0.015, se = sd/√2 = 0.005
    assert gaps[6]["nmse_gap"] == pytest.approx(0.015) and gaps[6]["nmse_se"] == \
        pytest.approx(0.005)
    assert gaps[6]["loss_recovered_gap"] == pytest.approx(-0.025)   # -0.01, -0.04: se 0.015
    assert gaps[15]["nmse_gap"] == pytest.approx(0.03) and gaps[15]["n"] == 1
    md = layers_markdown([a, b])
    assert "| 6 | topk | 32 | 999,424 | 0,1 | 0.1100 ± 0.0141 |" in md
    assert "| 15 | topk | 32 | 999,424 | 0 | 0.2000 | 0.1600 | 32.0 | 0.8000 | 0.7900 | 0.1000 |" \
        in md
    # layer 6 TopK, mean ablation 0.89 and 0.90: mean 0.895, sd 0.00707
    assert "| 0.9100 ± 0.0141 | 0.8950 ± 0.0071 | 0.1000 ± 0.0000 |" in md
    # relative: seed 0 (0.11−0.10)/0.10 = 10 %, seed 1 (0.14−0.12)/0.12 = 16.67 %: mean 13.33,
    # sd 6.67/√2 = 4.71, se = sd/√2 = 3.33; layer 15: 0.03/0.20 = 15 %
    assert gaps[6]["nmse_rel_gap"] == pytest.approx(40 / 3)
    assert gaps[6]["nmse_rel_se"] == pytest.approx(10 / 3)
    assert gaps[15]["nmse_rel_gap"] == pytest.approx(15.0) and gaps[15]["nmse_rel_se"] == 0.0
    assert "| 6 | 999,424 | 0,1 | 0.0150 ± 0.0050 | 13.3 ± 3.3 | -0.0250 ± 0.0150 |" in md
    assert "| 15 | 999,424 | 0 | 0.0300 | 15.0 | -0.1000 |" in md


def test_the_command_prints_the_table_and_bad_input_is_refused(runs, tmp_path, capsys):
    a, b = runs
    code, out, _ = run_cli(["experiment", "claim1-layers", a, b], capsys)
    assert code == 0 and out == layers_markdown([a, b])
    with pytest.raises(RunMismatchError, match="two claim-1 runs of layer 6"):
        layers_rows([a, a])
    with pytest.raises(DataUnavailable, match="no claim1.csv"):
        layers_rows([tmp_path / "nothing"])
    (b / "plan.json").unlink()
    code, _, err = run_cli(["experiment", "claim1-layers", a, b], capsys)
    assert code == 2 and "no layer column and no plan.json" in err


def test_the_plot_has_one_line_per_layer_and_is_not_overwritten(runs, tmp_path, capsys,
                                                                 monkeypatch):
    a, b = runs
    drawn = {}
    import abstopk.report.claim1_layers as cl

    real = cl.plot_gap_scaling

    def spy(series, path, *, title):
        drawn.update(series=series, title=title)
        return real(series, path, title=title)

    monkeypatch.setattr(cl, "plot_gap_scaling", spy)
    png = tmp_path / "scaling_layers.png"
    code, out, _ = run_cli(["experiment", "claim1-layers", a, b, "--plot", png], capsys)
    assert code == 0 and out == layers_markdown([a, b])
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 990      # 9 in × 110 dpi
    assert sorted(drawn["series"]) == [6, 15] and "layers 6, 15" in drawn["title"]
    assert [g["nmse_rel_gap"] for g in drawn["series"][15]] == [pytest.approx(15.0)]
    code, _, err = run_cli(["experiment", "claim1-layers", a, b, "--plot", png], capsys)
    assert code == 2 and "--force" in err and png.read_bytes() == data
    code, _, err = run_cli(["experiment", "claim1-layers", a, b, "--plot", a / "p.png"], capsys)
    assert code == 2 and "inside the input" in err
    only_topk = tmp_path / "L20"
    only_topk.mkdir()
    write_claim1_report(only_topk, [_row("topk", 0, 0.3)], [], n_planned=16, layer=20)
    with pytest.raises(DataUnavailable, match="nothing to plot"):
        cl.layers_plot([only_topk], tmp_path / "x.png")
