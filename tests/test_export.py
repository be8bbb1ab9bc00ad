"""SAELens export: the exported folder reconstructs exactly what the abstopk SAE does."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from abstopk.export import export_saelens, to_saelens
from abstopk.sae import SAE, SAEConfig
from abstopk.sparsity import OPERATORS

D_IN, D_SAE, K = 16, 40, 5


def saelens_reference(cfg: dict, t: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-torch re-implementation of SAELens 6 inference (encode → decode) for the
    architectures ``standard``, ``topk`` and ``jumprelu``. Returns (x̂, feature_acts)."""
    ln = cfg["normalize_activations"] == "layer_norm"
    if ln:
        mu = x.mean(-1, keepdim=True)
        x = x - mu
        std = x.std(-1, keepdim=True)
        x = x / (std + 1e-5)
    sae_in = x - t["b_dec"] * cfg["apply_b_dec_to_input"]
    h = sae_in @ t["W_enc"] + t["b_enc"]
    arch = cfg["architecture"]
    if arch == "topk":
        vals, idx = torch.topk(h, k=cfg["k"], dim=-1, sorted=False)
        z = torch.zeros_like(h).scatter(-1, idx, vals.relu())
    elif arch == "jumprelu":
        z = h.relu() * (h > t["threshold"]).to(h.dtype)
    elif arch == "standard":
        z = h.relu()
    else:
        raise AssertionError(arch)
    out = z @ t["W_dec"] + t["b_dec"]
    if ln:
        out = out * std + mu
    return out, z


def make_sae(arch: str, *, normalize: str = "none", seed: int = 0) -> SAE:
    op = OPERATORS[arch]
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, k=K if op.needs_k else None,
                    normalize_activations=normalize, model_name="smollm2-135m", hook_layer=3,
                    hook_site="resid_post", context_size=64)
    sae = SAE(cfg, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.W_enc.add_(0.3 * torch.randn(D_IN, D_SAE, generator=g))
        sae.b_enc.copy_(0.5 * torch.randn(D_SAE, generator=g))
        sae.b_dec.copy_(0.2 * torch.randn(D_IN, generator=g))
        if sae.threshold is not None:
            sae.threshold.copy_(0.2 + 0.6 * torch.rand(D_SAE, generator=g))
        if normalize == "scalar":
            sae.input_scale.fill_(0.37)
    return sae


def _inputs(n=300, seed=5):
    return 1.5 * torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed)) + 0.3


@pytest.mark.parametrize("arch", sorted(OPERATORS))
def test_export_reconstructs_identically(arch, tmp_path):
    sae = make_sae(arch)
    sae.save(tmp_path / "sae")
    out = export_saelens(tmp_path / "sae", tmp_path / "sl")
    cfg = json.loads((out / "cfg.json").read_text())
    t = load_file(str(out / "sae_weights.safetensors"))
    x = _inputs()
    sae.eval()
    with torch.no_grad():
        ours = sae(x)
    x_hat, z_sl = saelens_reference(cfg, t, x)
    # float32: equal up to summation-order rounding (relative to the scale of x̂)
    assert (x_hat - ours.x_hat).abs().max() <= 1e-6 * ours.x_hat.abs().max()
    # float64 on the same (float32-stored) weights: the two functions are identical
    sae64 = SAE.load(tmp_path / "sae", dtype=torch.float64).eval()
    x64 = x.double()
    with torch.no_grad():
        ours64 = sae64(x64).x_hat
    x_hat64, _ = saelens_reference(cfg, {k: v.double() for k, v in t.items()}, x64)
    assert (x_hat64 - ours64).abs().max().item() < 1e-10
    signed = OPERATORS[arch].signed
    assert cfg["d_sae"] == (2 * D_SAE if signed else D_SAE)
    assert set(t) == ({"W_enc", "b_enc", "W_dec", "b_dec"}
                      | ({"threshold"} if cfg["architecture"] == "jumprelu" else set()))
    # the code itself maps back: z = z'[:d] − z'[d:] for signed SAEs, z = z' otherwise
    z_back = z_sl[:, :D_SAE] - z_sl[:, D_SAE:] if signed else z_sl
    assert torch.allclose(z_back, ours.z, atol=1e-6)
    assert (ours.z != 0).sum() > 0
    if signed:   # the test data exercises both signs
        assert (ours.z < 0).sum() > 0 and (ours.z > 0).sum() > 0


def test_cfg_has_saelens6_keys(tmp_path):
    sae = make_sae("abstopk")
    cfg, t = to_saelens(sae)
    assert cfg["architecture"] == "topk" and cfg["k"] == K
    assert cfg["rescale_acts_by_decoder_norm"] is False
    assert cfg["d_in"] == D_IN and cfg["d_sae"] == 2 * D_SAE
    assert cfg["dtype"] == "float32" and cfg["normalize_activations"] == "none"
    md = cfg["metadata"]
    assert md["sae_lens_version"].split(".")[0] == "6"
    assert md["hook_name"] == "blocks.3.hook_resid_post" and md["hook_layer"] == 3
    assert md["model_name"] == "smollm2-135m" and md["context_size"] == 64
    assert t["W_enc"].shape == (D_IN, 2 * D_SAE) and t["W_dec"].shape == (2 * D_SAE, D_IN)
    assert torch.equal(t["W_enc"][:, D_SAE:], -t["W_enc"][:, :D_SAE])
    cfg2, _ = to_saelens(sae, model_name="gpt2", hook_name="blocks.0.hook_resid_pre")
    assert cfg2["metadata"]["model_name"] == "gpt2"
    assert cfg2["metadata"]["hook_name"] == "blocks.0.hook_resid_pre"


def test_scalar_scale_is_folded_and_exact(tmp_path):
    sae = make_sae("abstopk", normalize="scalar")
    sae.save(tmp_path / "sae")              # folds the scale into the weights
    out = export_saelens(tmp_path / "sae", tmp_path / "sl")
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["normalize_activations"] == "none"
    x = _inputs()
    with torch.no_grad():
        ref = sae(x).x_hat
    x_hat, _ = saelens_reference(cfg, load_file(str(out / "sae_weights.safetensors")), x)
    assert (x_hat - ref).abs().max().item() < 1e-5 * ref.abs().max().item()


def test_layer_norm_is_close_but_documented_inexact():
    sae = make_sae("abstopk", normalize="layer_norm")
    cfg, t = to_saelens(sae)
    assert cfg["normalize_activations"] == "layer_norm"
    x = _inputs()
    with torch.no_grad():
        ref = sae(x).x_hat
    x_hat, _ = saelens_reference(cfg, t, x)
    # SAELens rescales by std, we by std + 1e-5: relative difference ≈ 1e-5 / std
    assert torch.allclose(x_hat, ref, rtol=1e-4, atol=1e-4)


def test_not_exportable():
    sae = SAE(SAEConfig(d_in=4, d_sae=8, architecture="abstopk", k=2, n_steps=2))
    with pytest.raises(ValueError, match="n_steps"):
        to_saelens(sae)
    untrained = SAE(SAEConfig(d_in=4, d_sae=8, architecture="batchabstopk", k=2))
    with pytest.raises(ValueError, match="threshold"):
        to_saelens(untrained)
    neg = make_sae("jumprelu")
    with torch.no_grad():
        neg.threshold[0] = -0.1
    with pytest.warns(UserWarning, match="negative threshold"):
        to_saelens(neg)


def test_cli_export(tmp_path, capsys):
    from abstopk.cli import main

    make_sae("absjumprelu").save(tmp_path / "sae")
    with pytest.raises(SystemExit) as e:
        main(["export", "--format", "saelens", str(tmp_path / "sae"), str(tmp_path / "out")])
    assert e.value.code == 0
    cfg = json.loads((tmp_path / "out" / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu" and cfg["d_sae"] == 2 * D_SAE
    for argv in (["export", "--format", "onnx", str(tmp_path / "sae"), str(tmp_path / "o2")],
                 ["export", str(tmp_path / "missing"), str(tmp_path / "o3")]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_sae_lens_loads_export(tmp_path):
    try:   # part of the test extra that `make test` installs: a missing one fails, not skips
        import sae_lens
    except ImportError:
        pytest.fail("sae-lens is not installed: `pip install -e '.[test]'` (make test does)")
    for arch in ("abstopk", "topk", "jumprelu", "absjumprelu", "batchabstopk", "relu"):
        sae = make_sae(arch)
        sae.save(tmp_path / arch)
        out = export_saelens(tmp_path / arch, tmp_path / f"{arch}-sl")
        sl = sae_lens.SAE.load_from_disk(str(out), device="cpu")
        x = _inputs()
        sae.eval()
        with torch.no_grad():
            ref = sae(x).x_hat
            got = sl(x)
        assert (got - ref).abs().max() <= 1e-6 * ref.abs().max(), arch
        sl64 = sae_lens.SAE.load_from_disk(str(out), device="cpu", dtype="float64")
        sae64 = SAE.load(tmp_path / arch, dtype=torch.float64).eval()
        with torch.no_grad():
            d64 = (sl64(x.double()) - sae64(x.double()).x_hat).abs().max().item()
        assert d64 < 1e-10, (arch, d64)


def test_metadata_from_training_cache_manifest(tmp_path):
    from abstopk.data.cache import CacheWriter

    header = {"model": "smollm2-135m", "model_revision": "abc", "layer": 9,
              "site": "resid_post", "hook_name": "blocks.9.hook_resid_post", "d_in": D_IN,
              "dtype": "float32", "context_size": 128, "keep_bos": False, "batch_size": 2,
              "corpus": {}, "requested_tokens": 0}
    CacheWriter(tmp_path / "cache", header).set(complete=True)
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture="abstopk", k=K,
                        dataset=str(tmp_path / "cache")))
    md = to_saelens(sae)[0]["metadata"]
    assert (md["model_name"], md["hook_name"], md["hook_layer"], md["context_size"]) == \
        ("smollm2-135m", "blocks.9.hook_resid_post", 9, 128)
    assert md["exclude_special_tokens"] is True and md["abstopk_model_revision"] == "abc"
