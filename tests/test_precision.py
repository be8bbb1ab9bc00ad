"""Precision stated and chosen: the weight format recorded from the files themselves, ``auto``
resolving to bf16 only with bf16 units, and bf16 autocast training that lands where fp32 does.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from abstopk import precision
from abstopk.kernels import fused_topk_encode
from abstopk.lm.weights import gguf_file_type, safetensors_dtypes, weight_format
from abstopk.sae import SAE
from abstopk.train.config import TrainConfig
from abstopk.train.trainer import Trainer

# ----------------------------------------------------------------------------- auto


def test_cpu_flags_and_bf16_units(tmp_path):
    amd = tmp_path / "amd"
    amd.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma\n\n"
                   "processor\t: 1\nflags\t\t: fpu sse2 avx2 fma\n")
    spr = tmp_path / "spr"
    spr.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert precision.cpu_flags(str(amd)) == frozenset({"fpu", "sse2", "avx2", "fma"})
    assert precision.cpu_flags(str(tmp_path / "missing")) == frozenset()
    assert not precision.bf16_units("cpu", flags=precision.cpu_flags(str(amd)))
    assert precision.bf16_units("cpu", flags=precision.cpu_flags(str(spr)))
    assert precision.bf16_units("cpu", flags=frozenset({"avx512_bf16"}))
    assert not precision.bf16_units("mps", flags=frozenset({"amx_bf16"}))
    assert precision.resolve_dtype("auto", "cpu", flags=frozenset({"avx2"})) == "float32"
    assert precision.resolve_dtype("auto", "cpu", flags=frozenset({"amx_bf16"})) == "bfloat16"
    assert precision.resolve_dtype("float16", "cpu") == "float16"
    with pytest.raises(ValueError, match="dtype must be"):
        precision.resolve_dtype("fp8", "cpu")


def test_train_config_autocast(monkeypatch):
    with pytest.raises(ValueError, match="autocast must be one of"):
        TrainConfig(architecture="topk", k=4, autocast="yes")
    assert TrainConfig(architecture="topk", k=4).compute_dtype() == "float32"
    assert TrainConfig(architecture="topk", k=4, autocast="bf16").compute_dtype() == "bfloat16"
    auto = TrainConfig(architecture="topk", k=4, autocast="auto")
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert auto.compute_dtype() == "float32"
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    assert auto.compute_dtype() == "bfloat16"
    # train_config.json of a run from before the field (a bool) still reads
    legacy = TrainConfig(architecture="topk", k=4).to_dict()
    del legacy["autocast"]
    assert TrainConfig.from_dict({**legacy, "autocast_bf16": True}).autocast == "bf16"
    assert TrainConfig.from_dict({**legacy, "autocast_bf16": False}).autocast == "off"


# ----------------------------------------------------------------------------- weight format


def _gguf_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _tiny_gguf(path, file_type: int | None) -> None:
    """A GGUF v3 header by hand: a string, a string array (as tokenizers store them), an
    f32 and then (optionally) general.file_type as uint32; no tensors."""
    kvs = [_gguf_string("general.name") + struct.pack("<I", 8) + _gguf_string("tiny"),
           _gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 3)
           + b"".join(_gguf_string(t) for t in ("a", "bc", "<s>")),
           _gguf_string("x.eps") + struct.pack("<If", 6, 1e-5)]
    if file_type is not None:
        kvs.append(_gguf_string("general.file_type") + struct.pack("<II", 4, file_type))
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))


def test_gguf_file_type_from_the_header(tmp_path):
    _tiny_gguf(tmp_path / "q41.gguf", 3)
    _tiny_gguf(tmp_path / "q8.gguf", 7)
    _tiny_gguf(tmp_path / "none.gguf", None)
    assert gguf_file_type(tmp_path / "q41.gguf") == "Q4_1"
    assert gguf_file_type(tmp_path / "q8.gguf") == "Q8_0"
    assert gguf_file_type(tmp_path / "none.gguf") is None
    assert weight_format("gguf", tmp_path / "q41.gguf") == "GGUF Q4_1 (dequantised to float32)"
    (tmp_path / "not.gguf").write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(ValueError, match="not a GGUF file"):
        gguf_file_type(tmp_path / "not.gguf")
    assert weight_format("gguf", tmp_path / "not.gguf") == "unknown"


def test_safetensors_folder_format(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(4, 8, dtype=torch.bfloat16),
               "norm": torch.zeros(8)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text("{}")
    assert safetensors_dtypes(tmp_path) == {"BF16": 32, "F32": 8}
    assert weight_format("local", tmp_path) == "safetensors BF16+F32"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))
    assert weight_format("local", bin_dir) == "pytorch .bin (torch_dtype float16)"


def test_embedded_model_is_q4_1():
    from abstopk.lm import embedded_gguf_path

    try:
        path = embedded_gguf_path()
    except Exception as e:  # noqa: BLE001 - the package is part of `make install`
        pytest.fail(f"the embedded model is not installed: {e}")
    assert weight_format("embedded", path) == "GGUF Q4_1 (dequantised to float32)"


def test_train_carries_the_weight_format_into_cfg_and_train_config(tmp_path, capsys):
    from abstopk import cli
    from abstopk.data.cache import CacheWriter

    g = torch.Generator().manual_seed(0)
    header = {"model": "smollm2-135m", "model_revision": "abc", "layer": 3,
              "site": "resid_post", "hook_name": "blocks.3.hook_resid_post", "d_in": 16,
              "dtype": "float32", "model_dtype": "float32", "context_size": 32,
              "keep_bos": False, "batch_size": 2, "corpus": {}, "requested_tokens": 512}
    w = CacheWriter(tmp_path / "cache", header)
    w.write_shard(torch.randn(512, 16, generator=g), torch.zeros(512, dtype=torch.long), 16)
    w.set(complete=True, model_weight_format="GGUF Q4_1 (dequantised to float32)")
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
                  "--architecture", "abstopk", "--k", "4", "--d-sae", "32", "--steps", "4",
                  "--batch-size", "64", "--no-progress", "--autocast", "auto"])
    assert e.value.code == 0, capsys.readouterr().err
    cfg = json.loads((tmp_path / "run" / "cfg.json").read_text())
    tc = json.loads((tmp_path / "run" / "train_config.json").read_text())
    for d in (cfg, tc):
        assert d["model_weight_format"] == "GGUF Q4_1 (dequantised to float32)"
        assert d["model_dtype"] == "float32"
    assert tc["autocast"] == "auto"
    assert tc["compute_dtype"] == ("bfloat16" if precision.bf16_units("cpu") else "float32")


# ----------------------------------------------------------------------------- bf16 kernels


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("signed", [False, True])
def test_fused_encoder_bf16_gemm_fp32_values_and_grads(signed, batch):
    """The bf16 path: u = fp32(bf16(x)·bf16(W)) + b, selected and returned in fp32; the
    backward is the fp32 sparse backward of the same selection."""
    g = torch.Generator().manual_seed(1)
    B, D, F, k = 96, 24, 80, 5
    x = torch.randn(B, D, generator=g)
    W = (0.4 * torch.randn(D, F, generator=g)).requires_grad_()
    b = (0.1 * torch.randn(F, generator=g)).requires_grad_()
    out = fused_topk_encode(x, W, b, k, signed, batch=batch, chunk_rows=32,
                            compute_dtype=torch.bfloat16)
    assert out.values.dtype == torch.float32
    u_ref = torch.mm(x.bfloat16(), W.detach().bfloat16()).float() + b.detach()
    idx = out.selection.indices
    kept = torch.gather(u_ref, 1, idx)
    if not signed:
        kept = kept.clamp(min=0)
    real = torch.ones_like(idx, dtype=torch.bool) if out.selection.counts is None else \
        torch.arange(idx.shape[1])[None, :] < out.selection.counts[:, None]
    assert torch.equal(out.values[real], kept[real])
    # the kept entries are the top ones of u_ref by the rule (ties aside: none in random data)
    key = u_ref.abs() if signed else u_ref
    if batch:
        t = key.flatten().topk(k * B).values.min()
        assert int(real.sum()) == k * B and bool((key.gather(1, idx)[real] >= t).all())
    else:
        assert torch.equal(key.topk(k, 1).values.sort(1).values,
                           key.gather(1, idx).sort(1).values)
    # backward: the fp32 sparse products of the same selection
    gv = torch.randn(out.values.shape, generator=g)
    (out.values * gv).sum().backward()
    S = torch.zeros(B, F).scatter_add(1, idx, torch.where(real, gv, 0.0)
                                      * (out.values > 0 if not signed else 1.0))
    assert W.grad.dtype == torch.float32
    assert torch.allclose(W.grad, x.t() @ S, atol=1e-5)
    assert torch.allclose(b.grad, S.sum(0), atol=1e-5)


# ----------------------------------------------------------------------------- bf16 training


def _planted(n: int, d_in: int = 32, n_feat: int = 128, k: int = 4, seed: int = 0):
    """Rows x = Σ of k signed planted directions (|coefficient| in [0.5, 1.5]) + noise."""
    g = torch.Generator().manual_seed(seed)
    Dm = torch.randn(n_feat, d_in, generator=g)
    Dm /= Dm.norm(dim=1, keepdim=True)
    idx = torch.rand(n, n_feat, generator=g).argsort(1)[:, :k]
    vals = (torch.rand(n, k, generator=g) + 0.5) * torch.randn(n, k, generator=g).sign()
    Z = torch.zeros(n, n_feat).scatter(1, idx, vals)
    return Z @ Dm + 0.05 * torch.randn(n, d_in, generator=g)


def _nmse(sae: SAE, x: torch.Tensor) -> float:
    sae.eval()
    with torch.no_grad():
        xh = sae(x).x_hat
    return float(((xh - x).pow(2).sum(1) / x.pow(2).sum(1)).mean())


@pytest.mark.parametrize("arch", ["abstopk", "relu"])
def test_bf16_autocast_training_lands_within_one_percent_of_fp32(arch):
    """Same seed and data, 120 steps: held-out NMSE (per-token ‖x−x̂‖²/‖x‖²) of the bf16
    autocast run within 1 % (relative) of the fp32 run; abstopk goes through the fused
    kernels (bf16 encoder GEMM), relu (fixed ℓ1 coefficient) through the dense path
    (torch.autocast). JumpReLU is left out on purpose: its threshold's rectangle-kernel
    gradient makes a short run's L0 itself move with the rounding (12.4 vs 11.7 here), so its
    NMSE differs by more than 1 % at a different sparsity (docs/benchmarks.md, Precision)."""
    x = _planted(36_000)
    train, test = x[:30_720].numpy(), x[30_720:]
    kw = {"k": 4} if arch == "abstopk" else {"penalty_coeff": 1e-3}
    res = {}
    for ac in ("off", "bf16"):
        cfg = TrainConfig(architecture=arch, d_sae=128, steps=120, batch_size=256, lr=3e-3,
                          seed=0, autocast=ac, progress=False, dead_tokens=5_000, **kw)
        tr = Trainer(cfg, train)
        assert tr.state.compute_dtype == ("bfloat16" if ac == "bf16" else "float32")
        sae = tr.fit()
        assert all(p.dtype == torch.float32 for p in sae.parameters())   # fp32 masters
        res[ac] = _nmse(sae, test)
    assert res["off"] < 0.6                  # it learned something (a random SAE: ≈ 1)
    assert abs(res["bf16"] - res["off"]) <= 0.01 * res["off"], res
    # the runs differ (bf16 was used), just not in how well they reconstruct
    assert res["bf16"] != res["off"]


def test_harvest_dtype_auto_records_the_resolved_dtype(lm, tmp_path, monkeypatch):
    from abstopk.data.cache import ActivationCache
    from abstopk.data.harvest import HarvestConfig, harvest

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    model, tok, info = lm
    cfg = HarvestConfig(out=str(tmp_path / "c"), layers=[2], tokens=40, context_size=16,
                        batch_size=2, model_dtype="auto", progress=False)
    harvest(cfg, model=model, tokenizer=tok, info=info, log=lambda s: None)
    m = ActivationCache(tmp_path / "c").manifest
    assert m["model_dtype"] == "float32" and m["model_dtype_requested"] == "auto"
    assert m["model_weight_format"] == "GGUF Q4_1 (dequantised to float32)"
    assert info.weight_format == m["model_weight_format"]
    assert np.isfinite(m["total_rows"]) and m["total_rows"] == 40


def test_eval_names_the_weight_format_of_older_artefacts():
    """An SAE whose cfg.json predates the field: the format is read from the GGUF file only
    when its sha256 is the revision the SAE records."""
    from abstopk.eval.run import _weight_format
    from abstopk.files import sha256_file
    from abstopk.lm import embedded_gguf_path
    from abstopk.sae import SAEConfig

    sha = sha256_file(embedded_gguf_path(), memo=True)
    sae = SAE(SAEConfig(d_in=4, d_sae=8, architecture="topk", k=2, model_name="smollm2-135m",
                        model_revision=sha))
    assert _weight_format(sae, None, None) == "GGUF Q4_1 (dequantised to float32)"
    sae.cfg.model_revision = "0" * 64                 # another file: not guessed
    assert _weight_format(sae, None, None) is None
    sae.cfg.model_weight_format = "safetensors BF16"  # recorded: taken as recorded
    assert _weight_format(sae, None, None) == "safetensors BF16"
