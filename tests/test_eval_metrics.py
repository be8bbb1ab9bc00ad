"""Reconstruction / sparsity / sign metrics against hand-computed values and a plain reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from abstopk.eval.metrics import (
    MetricAccumulator,
    evaluate_reconstruction,
    iter_activation_batches,
)
from abstopk.sae import SAE, SAEConfig


def _sae(arch, W_enc, W_dec, b_enc=None, k=1):
    d_in, d_sae = W_enc.shape
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, architecture=arch, k=k))
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_enc.copy_(torch.zeros(d_sae) if b_enc is None else b_enc)
        sae.b_dec.zero_()
    return sae


# 2-latent AbsTopK (k=1) with W_enc = W_dec = I: keeps the larger-|.| coordinate with its sign.
X_ABS = torch.tensor([[3.0, 1.0], [0.0, -2.0], [-1.0, 2.0], [-4.0, 1.0]])


def test_abstopk_two_latents_hand_computed():
    sae = _sae("abstopk", torch.eye(2), torch.eye(2))
    m = evaluate_reconstruction(sae, X_ABS, batch_size=3)
    s = m.summary
    # x̂ = [3,0], [0,-2], [0,2], [-4,0]; squared errors 1, 0, 1, 1; ‖x‖² = 10, 4, 5, 17
    assert s["n_tokens"] == 4
    assert s["mse"] == pytest.approx(3 / 8)
    assert s["sse_per_token"] == pytest.approx(3 / 4)
    assert s["nmse"] == pytest.approx((1 / 10 + 0 + 1 / 5 + 1 / 17) / 4)
    # x̄ = [-0.5, 0.5]; Σ‖x − x̄‖² = 36 − 4·0.5 = 34
    assert s["fvu"] == pytest.approx(3 / 34)
    assert s["explained_variance"] == pytest.approx(31 / 34)
    cos = (3 / math.sqrt(10) + 1 + 2 / math.sqrt(5) + 4 / math.sqrt(17)) / 4
    assert s["cosine"] == pytest.approx(cos)
    assert s["l0"] == 1.0
    # latent 0 fires +3 and −4, latent 1 fires −2 and +2: both bidirectional
    assert m.fire_count.tolist() == [2, 2]
    assert m.neg_count.tolist() == [1, 1]
    assert m.negative_fraction.tolist() == [0.5, 0.5]
    assert s["n_bidirectional"] == 2
    assert s["bidirectional_fraction"] == 1.0
    assert s["negative_firing_fraction"] == 0.5
    assert s["dead_fraction"] == 0.0
    assert s["dense_fraction"] == 1.0          # each fires on 50 % > 10 %


def test_dense_threshold_is_strict_and_configurable():
    sae = _sae("abstopk", torch.eye(2), torch.eye(2))
    assert evaluate_reconstruction(sae, X_ABS, dense_threshold=0.5).summary["dense_fraction"] == 0.0
    assert evaluate_reconstruction(sae, X_ABS, dense_threshold=0.49).summary["dense_fraction"] == 1.0
    with pytest.raises(ValueError):
        MetricAccumulator(2, 2, dense_threshold=1.5)


def test_topk_dead_latent_and_zero_reconstruction():
    # latent 2 has a zero encoder column and bias −1: never selected with a positive value
    W_enc = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    W_dec = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    sae = _sae("topk", W_enc, W_dec, b_enc=torch.tensor([0.0, 0.0, -1.0]))
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [-1.0, -1.0]])
    m = evaluate_reconstruction(sae, x, batch_size=2)
    s = m.summary
    # x̂ = [0,2], [3,0], [0,0] (all pre-activations negative → clipped)
    assert s["l0"] == pytest.approx(2 / 3)
    assert s["mse"] == pytest.approx((1 + 1 + 2) / 6)
    assert s["nmse"] == pytest.approx((1 / 5 + 1 / 10 + 2 / 2) / 3)
    assert s["cosine"] == pytest.approx((2 / math.sqrt(5) + 3 / math.sqrt(10) + 0.0) / 3)
    assert m.fire_count.tolist() == [1, 1, 0]
    assert s["dead_fraction"] == pytest.approx(1 / 3)
    assert s["n_bidirectional"] == 0
    assert s["negative_firing_fraction"] == 0.0
    assert math.isnan(float(m.negative_fraction[2]))
    # x̄ = [1, 0]; Σ‖x‖² = 5 + 10 + 2 = 17; Σ‖x − x̄‖² = 17 − 3·1 = 14
    assert s["explained_variance"] == pytest.approx(1 - 4 / 14)


def _reference(sae, x, dense_threshold=0.1):
    """Plain whole-tensor formulas (float64) for comparison with the streaming version."""
    with torch.no_grad():
        out = sae(x)
    xh, z = out.x_hat.double(), out.z
    x = x.double()
    err = (x - xh).pow(2).sum(1)
    fired = z != 0
    fc = fired.sum(0)
    nc = (z < 0).sum(0)
    return {
        "mse": float(((x - xh) ** 2).mean()),
        "nmse": float((err / x.pow(2).sum(1)).mean()),
        "fvu": float(err.sum() / (x - x.mean(0)).pow(2).sum()),
        "cosine": float(torch.nn.functional.cosine_similarity(x, xh, dim=1).mean()),
        "l0": float(fired.sum(1).double().mean()),
        "dead_fraction": float((fc == 0).double().mean()),
        "dense_fraction": float((fc.double() / x.shape[0] > dense_threshold).double().mean()),
        "n_bidirectional": int(((nc > 0) & (fc - nc > 0)).sum()),
        "fire_count": fc,
    }


@pytest.mark.parametrize("arch", ["abstopk", "topk", "relu"])
def test_streaming_matches_whole_tensor_reference(arch):
    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=8, d_sae=24, architecture=arch, k=3 if arch != "relu" else None),
              seed=1)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3)
        sae.b_dec.normal_(0, 0.1)
    x = torch.randn(301, 8) * 2 + 0.5
    ref = _reference(sae, x)
    m = evaluate_reconstruction(sae, x, batch_size=37)
    for key in ("mse", "nmse", "fvu", "cosine", "l0", "dead_fraction", "dense_fraction"):
        assert m.summary[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-7), key
    assert m.summary["n_bidirectional"] == ref["n_bidirectional"]
    assert torch.equal(m.fire_count, ref["fire_count"])
    if arch == "abstopk":
        assert m.summary["n_bidirectional"] > 0
    else:
        assert m.summary["n_bidirectional"] == 0 and int(m.neg_count.sum()) == 0


def test_sources_agree_tensor_files_iterable_and_max_rows(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    sae = SAE(SAEConfig(d_in=6, d_sae=12, architecture="abstopk", k=2), seed=0)
    x = torch.randn(50, 6)
    save_file({"activations": x, "token_ids": torch.arange(50)}, str(tmp_path / "a.safetensors"))
    np.save(tmp_path / "a.npy", x.numpy())
    base = evaluate_reconstruction(sae, x, batch_size=50).summary
    for src in (tmp_path / "a.safetensors", str(tmp_path / "a.npy"), list(x.split(7))):
        s = evaluate_reconstruction(sae, src, batch_size=9).summary
        assert s["n_tokens"] == 50
        for key in ("mse", "nmse", "fvu", "cosine", "l0", "n_bidirectional"):
            assert s[key] == pytest.approx(base[key], rel=1e-6), (src, key)
    part = evaluate_reconstruction(sae, tmp_path / "a.safetensors", batch_size=8, max_rows=20)
    assert part.summary["n_tokens"] == 20
    assert part.summary["mse"] == pytest.approx(
        evaluate_reconstruction(sae, x[:20]).summary["mse"], rel=1e-6)
    assert sum(b.shape[0] for b in iter_activation_batches(list(x.split(7)), max_rows=10)) == 10


def test_bad_inputs():
    sae = SAE(SAEConfig(d_in=4, d_sae=8, architecture="abstopk", k=2), seed=0)
    with pytest.raises(ValueError, match="width 5"):
        evaluate_reconstruction(sae, torch.randn(3, 5))
    with pytest.raises(ValueError, match="no activations"):
        evaluate_reconstruction(sae, torch.randn(0, 4))
    with pytest.raises(FileNotFoundError):
        evaluate_reconstruction(sae, "/nonexistent/file.bin")


def test_activation_cache_source(tmp_path):
    from abstopk.data.cache import CacheWriter

    torch.manual_seed(4)
    x = torch.randn(70, 6)
    header = {"model": "toy", "model_revision": "0", "layer": 1, "site": "resid_post",
              "hook_name": "blocks.1.hook_resid_post", "d_in": 6, "dtype": "float32",
              "context_size": 8, "keep_bos": False, "batch_size": 2, "corpus": {},
              "requested_tokens": 70}
    w = CacheWriter(tmp_path / "cache", header)
    w.write_shard(x[:40], torch.arange(40), contexts=5)
    w.write_shard(x[40:], torch.arange(30), contexts=9)
    w.set(complete=True)
    sae = SAE(SAEConfig(d_in=6, d_sae=12, architecture="abstopk", k=2), seed=0)
    base = evaluate_reconstruction(sae, x).summary
    got = evaluate_reconstruction(sae, tmp_path / "cache", batch_size=16).summary
    assert got["n_tokens"] == 70
    for key in ("mse", "nmse", "fvu", "cosine", "l0", "n_bidirectional", "dead_fraction"):
        assert got[key] == pytest.approx(base[key], rel=1e-6), key
    assert evaluate_reconstruction(sae, tmp_path / "cache", max_rows=45).summary["n_tokens"] == 45


def test_json_safe():
    import json

    from abstopk.eval.run import json_safe

    obj = {"a": float("nan"), "b": torch.tensor([1.5, float("inf")]), "c": np.float32(0.25),
           "d": (1, np.int64(2)), "e": torch.tensor(3)}
    out = json_safe(obj)
    assert out == {"a": None, "b": [1.5, None], "c": 0.25, "d": [1, 2], "e": 3}
    json.dumps(out, allow_nan=False)


def test_target_defaults_from_cfg_then_training_cache(tmp_path):
    from abstopk.data.cache import CacheWriter
    from abstopk.eval.run import resolve_target

    header = {"model": "smollm2-135m", "model_revision": "0", "layer": 7, "site": "mlp_out",
              "hook_name": "blocks.7.hook_mlp_out", "d_in": 4, "dtype": "float32",
              "context_size": 64, "keep_bos": True, "batch_size": 2, "corpus": {},
              "requested_tokens": 0}
    CacheWriter(tmp_path / "cache", header).set(complete=True)
    sae = SAE(SAEConfig(d_in=4, d_sae=8, architecture="abstopk", k=2,
                        dataset=str(tmp_path / "cache")))
    t = resolve_target(sae)
    assert t == {"model": "smollm2-135m", "layer": 7, "site": "mlp_out", "context_size": 64,
                 "keep_bos": True}
    sae.cfg.hook_layer, sae.cfg.hook_site = 2, "resid_post"          # cfg.json wins
    assert resolve_target(sae)["layer"] == 2 and resolve_target(sae)["site"] == "resid_post"
    assert resolve_target(sae, layer=5, site="attn_out")["layer"] == 5   # explicit wins
    bare = SAE(SAEConfig(d_in=4, d_sae=8, architecture="abstopk", k=2))
    with pytest.raises(ValueError, match="hook_layer"):
        resolve_target(bare)
    assert resolve_target(bare, cache=tmp_path / "cache")["layer"] == 7
    assert resolve_target(bare, layer=1) == {"model": "smollm2-135m", "layer": 1,
                                             "site": "resid_post", "context_size": 128,
                                             "keep_bos": False}
