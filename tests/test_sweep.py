"""Sparsity sweeps: one-pass multi-SAE training, inference-time k, CSV/plot/summary, the CLI.

Everything here runs on small synthetic activations (no language model): the end-to-end run on
the real embedded model is in tests/test_pipeline.py.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from abstopk.data.cache import CacheWriter
from abstopk.data.matrix import MatrixSource
from abstopk.eval.heldout import evaluate_saes
from abstopk.eval.inference_k import inference_k
from abstopk.experiments.sweep_config import SweepConfig, sweep_specs
from abstopk.experiments.sweep_summary import summarize
from abstopk.report.plots import plot_sweep
from abstopk.report.sweep_tables import CSV_COLUMNS, write_csv
from abstopk.sae import SAE, SAEConfig
from abstopk.train.config import TrainConfig
from abstopk.train.multi import MultiTrainer
from abstopk.train.trainer import Trainer

D_IN = 16


def _data(n: int = 4096, seed: int = 0) -> torch.Tensor:
    """Sparse signed combinations of 48 random unit directions plus noise: [n, D_IN]."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(48, D_IN, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    codes = torch.randn(n, 48, generator=g) * (torch.rand(n, 48, generator=g) < 0.08)
    return codes @ dirs + 0.01 * torch.randn(n, D_IN, generator=g) + 0.5


def _cfgs(seed: int = 3) -> list[TrainConfig]:
    common = dict(d_sae=32, steps=24, batch_size=128, lr=3e-3, seed=seed, progress=False,
                  log_every=6, init_batches=2, dead_tokens=640, aux_k=4,
                  checkpoint_every=0)
    return [
        TrainConfig(architecture="topk", k=4, **common),
        TrainConfig(architecture="abstopk", k=4, **common),
        TrainConfig(architecture="abstopk", k=8, **common),
        TrainConfig(architecture="jumprelu", target_l0=4.0, **common),
        TrainConfig(architecture="relu", target_l0=6.0, **common),
        # its inference threshold calibrated on the 2 batches after the last step
        TrainConfig(architecture="batchabstopk", k=4, threshold_calibration_tokens=256,
                    **common),
    ]


def test_one_pass_equals_separate_training():
    """Every SAE stepped in lock-step on one batch stream ends with the same weights, Adam
    state and controller coefficient as the same SAE trained alone by Trainer.fit."""
    x = _data()
    cfgs = _cfgs()
    mt = MultiTrainer(cfgs, MatrixSource(x, 128, seed=3))
    saes = mt.fit(progress=False)
    assert mt.step == 24
    for cfg, sae, tr in zip(cfgs, saes, mt.states, strict=True):
        alone = Trainer(cfg, x)          # its own MatrixSource(seed=3) + prefetch thread
        ref = alone.fit()
        assert alone.step == tr.steps_done == 24 and alone.tokens == tr.tokens == 24 * 128
        a, b = ref.folded_state(), sae.folded_state()
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6,
                                       msg=f"{cfg.architecture}: {name} differs")
        assert float(ref.input_scale) == float(sae.input_scale)
        torch.testing.assert_close(tr.tokens_since_fired, alone.tokens_since_fired)
        if cfg.target_l0 is not None:
            assert float(tr.controller.coeff) == pytest.approx(float(alone.controller.coeff),
                                                               rel=1e-6)
        assert tr.last_metrics["step"] == alone.last_metrics["step"] == 24
        assert tr.last_metrics["l0"] == pytest.approx(alone.last_metrics["l0"], abs=1e-6)
    # the SAEs really trained (not a vacuous equality of untouched initial weights)
    fresh = SAE(cfgs[1].sae_config(D_IN), seed=3)
    assert not torch.allclose(fresh.W_dec, saes[1].W_dec)
    # and the AuxK path ran: after dead_tokens = 640 tokens some latents were marked dead
    assert any(t.tokens > t.cfg.dead_tokens for t in mt.states)


def test_multitrainer_rejects_mismatched_batch_sizes():
    cfgs = _cfgs()
    cfgs[1] = TrainConfig(architecture="abstopk", k=4, d_sae=32, steps=24, batch_size=64,
                          progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        MultiTrainer(cfgs, MatrixSource(_data(), 128, seed=0))


def _hand_sae(arch: str, k: int) -> SAE:
    """d_in 4, d_sae 6: u = (x, 0, 0) and x̂ = z[:4] (identity dictionary, zero biases)."""
    sae = SAE(SAEConfig(d_in=4, d_sae=6, architecture=arch, k=k), seed=0)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[:, :4] = torch.eye(4)
        sae.W_dec.zero_()
        sae.W_dec[:4] = torch.eye(4)
        sae.W_dec[4:, 0] = 1.0
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


X_HAND = torch.tensor([[3.0, -2.0, 1.0, 0.5],
                       [0.0, -1.0, 0.0, 0.0]])


@pytest.mark.parametrize("arch,k,l0,sse", [
    # abstopk keeps the k largest |u| with sign: row 1 keeps k of 4, row 2 its one non-zero
    ("abstopk", 1, 1.0, (2**2 + 1 + 0.25) / 2),
    ("abstopk", 2, 1.5, (1 + 0.25) / 2),
    ("abstopk", 3, 2.0, 0.25 / 2),
    ("abstopk", 4, 2.5, 0.0),
    # topk keeps the k largest u, negatives clipped: row 2 (only −1) never fires
    ("topk", 1, 0.5, (4 + 1 + 0.25 + 1) / 2),
    ("topk", 2, 1.0, (4 + 0.25 + 1) / 2),
    ("topk", 3, 1.5, (4 + 1) / 2),
    ("topk", 4, 1.5, (4 + 1) / 2),
])
def test_inference_k_hand_checked(arch, k, l0, sse):
    """Evaluating a k=2 SAE at another k at inference gives the hand-computed L0 and error."""
    sae = _hand_sae(arch, 2)
    with inference_k(sae, k):
        assert sae.cfg.k == k
        m = evaluate_saes({"s": sae}, X_HAND)["s"]
    assert sae.cfg.k == 2  # restored
    assert m["l0"] == pytest.approx(l0)
    assert m["sse_per_token"] == pytest.approx(sse)
    assert m["mse"] == pytest.approx(sse / 4)


def test_inference_k_validates():
    with pytest.raises(ValueError):
        with inference_k(_hand_sae("abstopk", 2), 7):  # k > d_sae
            pass
    relu = SAE(SAEConfig(d_in=4, d_sae=6, architecture="jumprelu"))
    with pytest.raises(ValueError, match="TopK"):
        with inference_k(relu, 2):
            pass


def test_summary_csv_and_plot(tmp_path):
    rows = []
    for arch in ("topk", "abstopk"):
        for sp in (4, 8):
            for seed, (nmse, lr) in enumerate([(0.1, 0.7), (0.2, 0.8), (0.3, 0.9)]):
                rows.append({"name": f"{arch}_k{sp}_s{seed}", "architecture": arch,
                             "mode": "trained", "sparsity": float(sp), "k_train": sp,
                             "k_eval": sp, "seed": seed, "l0": float(sp),
                             "nmse": nmse / sp, "mse": 1.0, "loss_recovered": lr,
                             "explained_variance": 1 - nmse, "kl": 0.1 * seed,
                             "dead_fraction": 0.0})
    rows.append({"name": "abstopk_k8_s0@k4", "architecture": "abstopk", "mode": "inference_k",
                 "sparsity": 8.0, "k_eval": 4, "seed": 0, "l0": 4.0, "nmse": 0.5})
    summ = summarize(rows)
    s = next(x for x in summ if x["architecture"] == "topk" and x["sparsity"] == 4.0)
    assert s["n_seeds"] == 3
    assert s["nmse_mean"] == pytest.approx(0.2 / 4)
    assert s["nmse_std"] == pytest.approx(0.1 / 4)          # sample std of .1,.2,.3 is .1
    assert s["loss_recovered_mean"] == pytest.approx(0.8)
    assert s["kl_std"] == pytest.approx(0.1)
    inf = [x for x in summ if x["mode"] == "inference_k"]
    assert len(inf) == 1 and inf[0]["nmse_std"] == 0.0 and math.isnan(inf[0]["kl_mean"])

    p = write_csv(rows, tmp_path / "s.csv")
    with open(p) as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        got = list(reader)
    assert len(got) == len(rows)
    assert float(got[0]["nmse"]) == pytest.approx(0.1 / 4)
    assert got[-1]["mode"] == "inference_k" and got[-1]["loss_recovered"] == ""

    png = plot_sweep(rows, tmp_path / "s.png", title="t")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_sweep_specs_grid():
    cfg = SweepConfig(cache="c", out="o", architectures=["topk", "jumprelu"], k=[32, 8],
                      jumprelu_targets=[10, 40], d_sae=64, seeds=[0, 1])
    names = [s.name for s in sweep_specs(cfg)]
    assert names == ["topk_k8_s0", "topk_k32_s0", "jumprelu_l010_s0", "jumprelu_l040_s0",
                     "topk_k8_s1", "topk_k32_s1", "jumprelu_l010_s1", "jumprelu_l040_s1"]
    assert cfg.reference_k() == 32
    with pytest.raises(ValueError, match="exceeds"):
        SweepConfig(cache="c", out="o", k=[128], d_sae=64)


def _write_cache(path, x: torch.Tensor) -> None:
    w = CacheWriter(path, {"model": "synthetic", "model_revision": "none", "layer": 3,
                           "site": "resid_post", "hook_name": "blocks.3.hook_resid_post",
                           "d_in": x.shape[1], "dtype": "float32", "context_size": 16,
                           "keep_bos": False, "corpus": {"source": "synthetic"},
                           "requested_tokens": x.shape[0]}, resume=False)
    half = x.shape[0] // 2
    w.write_shard(x[:half], torch.zeros(half, dtype=torch.long), half // 16)
    w.write_shard(x[half:], torch.zeros(x.shape[0] - half, dtype=torch.long), half // 16)
    w.set(complete=True)


def test_sweep_cli_end_to_end(tmp_path):
    """`abstopk sweep` on a small cache with a held-out cache (no LM needed: no loss
    recovered): CSV rows for every SAE and inference-k evaluation, JSON, PNG, saved SAEs."""
    from abstopk.cli import main

    _write_cache(tmp_path / "train", _data(4096, seed=0))
    _write_cache(tmp_path / "heldout", _data(5120, seed=0)[4096:])  # same directions
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--cache", str(tmp_path / "train"), "--eval-cache",
              str(tmp_path / "heldout"), "--out", str(out), "--architectures",
              "topk,abstopk,jumprelu", "--k", "2,4,8", "--d-sae", "32", "--steps", "25",
              "--batch-size", "128", "--seeds", "0,1", "--eval-tokens", "512",
              "--eval-contexts", "0", "--dead-tokens", "2000", "--inference-k-from", "4",
              "--no-progress"])
    assert e.value.code in (0, None)
    with open(out / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    trained = [r for r in rows if r["mode"] == "trained"]
    inf = [r for r in rows if r["mode"] == "inference_k"]
    assert len(trained) == 3 * 3 * 2
    assert len(inf) == 2 * 2 * 2          # topk/abstopk × k ∈ {2, 8} × 2 seeds
    for r in trained:
        if r["architecture"] in ("topk", "abstopk"):
            # TopK-family L0 is at most k (exactly k unless some kept values are 0)
            assert float(r["l0"]) <= int(r["k_train"]) + 1e-9
            assert float(r["l0"]) > 0.5 * int(r["k_train"])
        assert 0 <= float(r["nmse"]) < 1.5
        assert (out / "saes" / r["name"] / "cfg.json").is_file()
    for r in inf:
        assert float(r["l0"]) <= int(r["k_eval"]) + 1e-9 and r["k_train"] == "4"
    # inference-time k really changed k: L0 follows k_eval, not the trained k = 4
    for r in inf:
        assert float(r["l0"]) > 0.5 * int(r["k_eval"])
    js = json.loads((out / "sweep.json").read_text())
    assert js["eval_tokens"] == 512 and len(js["rows"]) == len(rows)
    assert {s["architecture"] for s in js["summary"]} == {"topk", "abstopk", "jumprelu"}
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "| abstopk |" in (out / "sweep.md").read_text()
    cfg = json.loads((out / "saes" / "abstopk_k4_s1" / "cfg.json").read_text())
    assert cfg["hook_layer"] == 3 and cfg["k"] == 4 and cfg["dataset"].startswith("synthetic/L3")


def test_sweep_cli_rejects_bad_input(tmp_path, capsys):
    from abstopk.cli import main

    with pytest.raises(SystemExit) as e:
        main(["sweep", "--cache", str(tmp_path), "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    assert "not an activation cache" in capsys.readouterr().err
    _write_cache(tmp_path / "c", _data(512))
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "o"),
              "--k", "4,x"])
    assert e.value.code == 2


def test_sweep_controller_defaults_are_the_short_run_ones():
    """The sweep trains penalised SAEs with k_i 0.02 and no band (its 200-step demo runs land
    closer to the target that way, docs/pipeline.md); either can be set per sweep."""
    from abstopk.experiments.sweep_config import SweepConfig, SweepSpec, train_config_for

    cfg = SweepConfig(cache="c", out="o", architectures=["jumprelu", "relu"], k=[8], d_sae=32)
    for arch in ("jumprelu", "relu"):
        tc = train_config_for(SweepSpec(arch, 8.0, 0), cfg)
        assert tc.resolved_l0_controller_ki() == 0.02
        assert tc.resolved_l0_controller_band() == math.inf
    tc = train_config_for(SweepSpec("jumprelu", 8.0, 0),
                          SweepConfig(cache="c", out="o", architectures=["jumprelu"], k=[8],
                                      d_sae=32, l0_controller_ki=None, l0_controller_band=None))
    assert (tc.resolved_l0_controller_ki(), tc.resolved_l0_controller_band()) == (0.1, 0.5)
    with pytest.raises(ValueError, match="band"):
        SweepConfig(cache="c", out="o", architectures=["jumprelu"], k=[8], d_sae=32,
                    l0_controller_band=0.0)
