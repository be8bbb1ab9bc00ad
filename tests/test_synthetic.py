"""Synthetic ground-truth benchmark: generator properties, capture classification, end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from abstopk.analysis.synthetic import (
    BenchConfig,
    SyntheticConfig,
    capture_analysis,
    generate,
    run_benchmark,
)
from abstopk.commands.bench import torch_threads

SMALL = dict(d=24, n_features=40, mean_active=2.5, n_train=8192, n_test=4096)


# ------------------------------------------------------------------------ generator
@pytest.fixture(scope="module")
def data():
    return generate(SyntheticConfig(**SMALL, frac_bidirectional=0.5, seed=3))


def test_dictionary_is_unit_norm(data):
    norms = data.dictionary.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)
    assert data.dictionary.shape == (40, 24)


@pytest.mark.parametrize("frac,expected", [(0.0, 0), (0.25, 10), (0.5, 20), (1.0, 40)])
def test_requested_fraction_of_bidirectional_features(frac, expected):
    d = generate(SyntheticConfig(**{**SMALL, "n_train": 16, "n_test": 16},
                                 frac_bidirectional=frac))
    assert int(d.bidirectional.sum()) == expected


def test_signs_follow_the_feature_kind(data):
    c, bi = data.c_test, data.bidirectional
    pos = (c > 0).sum(0)
    neg = (c < 0).sum(0)
    # every bidirectional feature appears with both signs, about half each
    assert bool((pos[bi] > 0).all() and (neg[bi] > 0).all())
    frac_neg = neg[bi].sum() / (pos[bi].sum() + neg[bi].sum())
    assert abs(float(frac_neg) - 0.5) < 0.05
    # unidirectional features never appear with a negative coefficient
    assert int(neg[~bi].sum()) == 0 and bool((pos[~bi] > 0).all())
    # magnitudes are at least magnitude_min
    nz = c[c != 0].abs()
    assert float(nz.min()) >= data.cfg.magnitude_min - 1e-6


def test_samples_follow_the_data_model(data):
    cfg = data.cfg
    resid = data.x_test - data.c_test @ data.dictionary - data.bias
    assert abs(float(resid.std()) - cfg.noise) < 0.1 * cfg.noise
    assert abs(float(data.bias.norm()) - cfg.bias_norm) < 1e-5
    active = (data.c_test != 0).sum(1).float().mean()
    assert abs(float(active) - cfg.mean_active) < 0.1
    assert math.isclose(float(data.p_active.sum()), cfg.mean_active, rel_tol=1e-5)


def test_reproducible_from_the_seed():
    cfg = SyntheticConfig(**{**SMALL, "n_train": 256, "n_test": 128}, seed=11)
    a, b = generate(cfg), generate(cfg)
    for name in ("dictionary", "bidirectional", "p_active", "bias", "x_train", "x_test", "c_test"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    c = generate(SyntheticConfig(**{**SMALL, "n_train": 256, "n_test": 128}, seed=12))
    assert not torch.equal(a.dictionary, c.dictionary)
    assert not torch.equal(a.x_train, c.x_train)


@pytest.mark.parametrize("kw", [dict(frac_bidirectional=1.5), dict(d=0), dict(noise=-1.0),
                                dict(mean_active=0.0), dict(n_train=2.5)])
def test_config_validation(kw):
    with pytest.raises(ValueError):
        SyntheticConfig(**kw)


def test_bench_config_validation():
    with pytest.raises(ValueError, match="unknown architecture"):
        BenchConfig(architectures="topk,nope")
    with pytest.raises(ValueError):
        BenchConfig(tau=1.5)
    assert BenchConfig(architectures="topk, abstopk").architectures == ("topk", "abstopk")


# ----------------------------------------------------------------- classification
def _toy():
    """One bidirectional feature f0 = e0 with coefficients +2, −3, +1, −1 (and f1 = e1 off)."""
    F = torch.eye(2)
    c0 = torch.tensor([2.0, -3.0, 1.0, -1.0])
    coeffs = torch.stack([c0, torch.zeros(4)], 1)
    return F, c0, coeffs


def _cls(res):
    return {k: bool(res[k][0]) for k in ("one_latent", "pair", "one_side", "missed")}


def test_capture_one_signed_latent():
    F, c0, coeffs = _toy()
    # a latent along −f0 firing with the opposite sign also reproduces both signs of f0
    dec = torch.tensor([[-1.0, 0.0], [0.0, 1.0]])
    res = capture_analysis(torch.stack([-c0, torch.zeros(4)], 1), dec, F, coeffs, 0.9, 0.5)
    assert _cls(res) == dict(one_latent=True, pair=False, one_side=False, missed=False)
    assert int(res["n_latents"][0]) == 1
    assert math.isclose(float(res["recovery"][0]), 1.0)


def test_capture_pair_and_one_side_and_missed():
    F, c0, coeffs = _toy()
    dec = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    z = torch.stack([c0.clamp(min=0), (-c0).clamp(min=0), torch.zeros(4)], 1)
    res = capture_analysis(z, dec, F, coeffs, 0.9, 0.5)
    assert _cls(res) == dict(one_latent=False, pair=True, one_side=False, missed=False)
    assert int(res["n_latents"][0]) == 2
    # drop the negative-side latent's activity: only one side is covered
    z1 = z.clone()
    z1[:, 1] = 0
    assert _cls(capture_analysis(z1, dec, F, coeffs, 0.9, 0.5))["one_side"]
    # firing on only 1 of the 2 negative samples with fire_frac 0.75: that side is not covered
    z2 = z.clone()
    z2[3, 1] = 0
    assert _cls(capture_analysis(z2, dec, F, coeffs, 0.9, 0.75))["one_side"]
    assert _cls(capture_analysis(z2, dec, F, coeffs, 0.9, 0.5))["pair"]
    # a direction at 60° from f0 is below τ = 0.9: missed, recovery = cos 60°
    dec3 = torch.tensor([[0.5, math.sqrt(3) / 2]])
    res3 = capture_analysis(c0[:, None], dec3, F, coeffs, 0.9, 0.5)
    assert _cls(res3)["missed"]
    assert math.isclose(float(res3["recovery"][0]), 0.5, rel_tol=1e-5)


def test_capture_wrong_sign_does_not_count():
    F, c0, coeffs = _toy()
    dec = torch.tensor([[1.0, 0.0]])
    # the latent fires on every sample but always positively: covers + only
    res = capture_analysis(c0.abs()[:, None], dec, F, coeffs, 0.9, 0.5)
    assert bool(res["cover_pos"][0, 0]) and not bool(res["cover_neg"][0, 0])
    assert _cls(res)["one_side"]


# --------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def bench():
    dcfg = SyntheticConfig(**SMALL, frac_bidirectional=0.5, seed=0)
    bcfg = BenchConfig(architectures=("topk", "abstopk"), k=3, expansion=2.0, steps=700,
                       batch_size=128, lr=4e-3, seed=0, k_aux=8)
    with torch_threads(1):
        return run_benchmark(dcfg, bcfg)


def test_abstopk_captures_bidirectional_features_with_one_latent(bench):
    r = bench.by_arch()
    topk, abst = r["topk"], r["abstopk"]
    # both reach the same exact sparsity and reconstruct well
    assert topk.l0 <= 3.0 + 1e-6 and abst.l0 <= 3.0 + 1e-6
    assert topk.fvu < 0.3 and abst.fvu < 0.3
    assert topk.nmse < 0.3 and abst.nmse < 0.3
    # AbsTopK: one signed latent per bidirectional feature
    assert abst.bi_one_latent >= 0.8
    assert abst.recovery_bi >= 0.95
    assert abst.latents_per_bi < 1.2
    # TopK recovers the bidirectional directions too, but never with one signed latent: its
    # recovery relies on ± pairs (about two latents per bidirectional feature)
    assert topk.recovery_bi >= 0.95
    assert topk.bi_one_latent == 0.0
    assert topk.bi_pair >= 0.6
    assert topk.latents_per_bi >= 1.6
    assert abst.bi_one_latent - topk.bi_one_latent >= 0.6
    # unidirectional features are recovered by both
    assert topk.uni_captured >= 0.85 and abst.uni_captured >= 0.85


def test_result_serialises(bench, tmp_path):
    d = bench.to_dict()
    json.dumps(d)
    assert [r["architecture"] for r in d["results"]] == ["topk", "abstopk"]
    from abstopk.report.synthetic_table import markdown_table

    md = markdown_table([r.to_dict() for r in bench.results])
    assert md.count("\n") == 4 and "`abstopk`" in md


# --------------------------------------------------------------------------- CLI
def test_cli_bench_synthetic_writes_json_and_markdown(tmp_path, capsys):
    from abstopk.cli import main

    out_j, out_m = tmp_path / "r.json", tmp_path / "r.md"
    with pytest.raises(SystemExit) as e:
        main(["bench", "synthetic", "--steps", "30", "--d", "12", "--n-features", "16",
              "--architectures", "topk,abstopk", "--k", "2", "--no-progress",
              "--json", str(out_j), "--markdown", str(out_m)])
    assert e.value.code == 0
    res = json.loads(out_j.read_text())
    assert [r["architecture"] for r in res["results"]] == ["topk", "abstopk"]
    assert res["bench"]["steps"] == 30 and res["data"]["n_features"] == 16
    assert "`topk`" in out_m.read_text()
    out = capsys.readouterr().out
    assert "bi:1 signed" in out and "abstopk" in out


def test_cli_bench_synthetic_bad_input_is_a_user_error(capsys):
    from abstopk.cli import main

    with pytest.raises(SystemExit) as e:
        main(["bench", "synthetic", "--architectures", "topk,bogus"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "bogus" in err


def test_demo_runs_stages_in_order(tmp_path):
    from rich.console import Console

    from abstopk.commands.demo import STAGES, Stage, run_demo

    assert STAGES[0].name == "synthetic"
    seen = []

    def first(ctx):
        seen.append("a")
        (ctx.out / "a.txt").write_text("a")
        return 1

    def second(ctx):
        seen.append("b")
        return ctx.results["a"] + 1

    console = Console(record=True, width=100)
    ctx = run_demo(tmp_path / "demo", console=console,
                   stages=[Stage("a", "First", first), Stage("b", "Second", second)])
    assert seen == ["a", "b"] and ctx.results == {"a": 1, "b": 2}
    text = console.export_text()
    assert text.index("Stage 1/2: First") < text.index("Stage 2/2: Second")
    assert (tmp_path / "demo" / "a.txt").read_text() == "a"
