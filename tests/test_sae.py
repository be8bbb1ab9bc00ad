"""SAE module: config validation, encode/decode, n_steps, save/load contract."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from abstopk.sae import SAE, SAEConfig
from abstopk.sparsity import OPERATORS


def test_config_validation():
    with pytest.raises(ValueError, match="exceeds d_sae"):
        SAEConfig(d_in=4, d_sae=8, architecture="topk", k=9)
    with pytest.raises(ValueError, match="k must be"):
        SAEConfig(d_in=4, d_sae=8, architecture="abstopk", k=0)
    with pytest.raises(ValueError, match="needs k"):
        SAEConfig(d_in=4, d_sae=8, architecture="abstopk")
    with pytest.raises(ValueError, match="unknown architecture"):
        SAEConfig(d_in=4, d_sae=8, architecture="gated", k=2)
    with pytest.raises(ValueError, match="d_in"):
        SAEConfig(d_in=0, d_sae=8, architecture="relu")
    with pytest.raises(ValueError, match="normalize_activations"):
        SAEConfig(d_in=4, d_sae=8, architecture="relu", normalize_activations="zscore")
    with pytest.raises(ValueError, match="n_steps"):
        SAEConfig(d_in=4, d_sae=8, architecture="relu", n_steps=0)
    SAEConfig(d_in=4, d_sae=8, architecture="relu")  # k not needed


def test_forward_hand_computed():
    cfg = SAEConfig(d_in=2, d_sae=3, architecture="abstopk", k=1, use_sparse_kernels=False)
    sae = SAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]]))
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, -0.5]]))
        sae.b_enc.zero_()
        sae.b_dec.copy_(torch.tensor([1.0, 1.0]))
    x = torch.tensor([[1.0, 4.0]])  # x − b_dec = [0, 3]; u = [0, 3, −3] → tie by |u|
    x2 = torch.tensor([[3.0, -2.0]])  # x − b = [2, −3]; u = [2, −3, 5] → keep latent 2 (5)
    out = sae(x2)
    assert torch.equal(out.z, torch.tensor([[0.0, 0.0, 5.0]]))
    assert torch.allclose(out.x_hat, torch.tensor([[1 + 2.5, 1 - 2.5]]))
    assert torch.equal(out.pre_acts, torch.tensor([[2.0, -3.0, 5.0]]))
    z = sae.encode(x)
    assert int((z != 0).sum()) == 1 and z.abs().max() == 3.0


@pytest.mark.parametrize("arch", sorted(OPERATORS))
def test_every_architecture_runs_and_counts_nonzero(arch):
    cfg = SAEConfig(d_in=8, d_sae=32, architecture=arch, k=4)
    sae = SAE(cfg, seed=0)
    x = torch.randn(16, 8)
    sae.train()
    out = sae(x)
    assert out.x_hat.shape == (16, 8) and out.z.shape == (16, 32)
    op = OPERATORS[arch]
    if op.needs_k:
        # reference: the k largest u per row (the k·B largest of the batch for batch
        # variants) — by |u| for signed operators, all kept; by u for unsigned ones, where
        # only the positive ones stay non-zero. Shifting b_enc down by 3 makes some selected
        # u negative, so the unsigned count drops below k·B and the signed one does not.
        for shift in (0.0, -3.0):
            with torch.no_grad():
                sae.b_enc.add_(shift)
                u = sae.pre_acts(sae.normalize(x)[0])
                z = sae(x).z
            flat = u if not op.batch_level else u.reshape(1, -1)
            n_sel = 4 if not op.batch_level else 4 * 16
            key = flat.abs() if op.signed else flat
            kept = flat.gather(-1, key.topk(n_sel, dim=-1).indices)
            expected = kept.numel() if op.signed else int((kept > 0).sum())
            assert int((z != 0).sum()) == expected, shift
            if not op.batch_level:
                assert int((z != 0).sum(-1).max()) <= 4
            if shift < 0:
                assert (expected == 4 * 16) == op.signed
    if OPERATORS[arch].signed and arch != "absjumprelu":
        assert (out.z < 0).any()
    if not OPERATORS[arch].signed:
        assert (out.z >= 0).all()


def test_kernel_path_equals_dense_path():
    cfg = SAEConfig(d_in=13, d_sae=37, architecture="abstopk", k=5)
    sae = SAE(cfg, seed=3)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    x = torch.randn(7, 13)
    a = sae(x)
    sae.cfg.use_sparse_kernels = False
    b = sae(x)
    assert torch.allclose(a.z, b.z, atol=1e-6)
    assert torch.allclose(a.x_hat, b.x_hat, atol=1e-5)


def test_batch_level_needs_threshold_then_uses_it():
    sae = SAE(SAEConfig(d_in=8, d_sae=32, architecture="batchabstopk", k=4), seed=0)
    x = torch.randn(64, 8)
    sae.eval()
    with pytest.raises(RuntimeError, match="no inference threshold"):
        sae(x)
    sae.train()
    z_train = sae(x).z
    theta = float(sae.threshold[0].detach())
    assert theta == pytest.approx(float(z_train[z_train != 0].abs().min().detach()))
    sae.eval()
    z_eval = sae(x).z
    # the threshold rule keeps exactly the entries with |u| > θ
    assert ((z_eval != 0) == (sae.pre_acts(x).abs() > theta)).all()


def test_multistep_encoder_lowers_reconstruction_error():
    """IHT refinement with a known dictionary: n_steps > 1 beats the one-step code."""
    g = torch.Generator().manual_seed(0)
    d_in, d_sae, k, n = 64, 128, 4, 256
    D = torch.randn(d_sae, d_in, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    idx = torch.stack([torch.randperm(d_sae, generator=g)[:k] for _ in range(n)])
    vals = (torch.rand(n, k, generator=g) + 0.5) * torch.sign(torch.randn(n, k, generator=g))
    z_true = torch.zeros(n, d_sae).scatter(1, idx, vals)
    x = z_true @ D
    mu = 1.0 / float(torch.linalg.matrix_norm(D, ord=2)) ** 2

    def err(n_steps):
        cfg = SAEConfig(d_in=d_in, d_sae=d_sae, architecture="abstopk", k=k, n_steps=n_steps,
                        step_size=mu)
        sae = SAE(cfg)
        with torch.no_grad():
            sae.W_dec.copy_(D)
            sae.W_enc.copy_(D.t())
        with torch.no_grad():
            return float(((sae(x).x_hat - x) ** 2).sum() / (x**2).sum())

    e1, e5, e30 = err(1), err(5), err(30)
    assert e5 < e1 * 0.8
    assert e30 < e5
    assert e1 > 0.05  # the one-step code is genuinely approximate here


def _trained_like(arch, normalize="none", seed=0):
    cfg = SAEConfig(d_in=6, d_sae=20, architecture=arch, k=3, normalize_activations=normalize,
                    model_name="m", hook_layer=2, hook_site="resid_post", context_size=128)
    sae = SAE(cfg, seed=seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return sae


@pytest.mark.parametrize("arch", ["abstopk", "topk", "jumprelu", "relu", "batchabstopk"])
def test_save_load_roundtrip_exact(tmp_path, arch):
    sae = _trained_like(arch)
    x = torch.randn(10, 6) * 3
    sae.train()
    sae(x)  # sets the batch threshold for batch variants
    sae.eval()
    ref = sae(x).x_hat
    sae.save(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert cfg["architecture"] == arch and cfg["hook_layer"] == 2 and "abstopk_version" in cfg
    names = set(load_file(str(tmp_path / "s" / "sae_weights.safetensors")))
    assert {"W_enc", "b_enc", "W_dec", "b_dec"} <= names
    loaded = SAE.load(tmp_path / "s").eval()
    for name, p in sae.state_dict().items():
        if name != "input_scale":
            assert torch.equal(p, loaded.state_dict()[name]), name
    assert torch.equal(loaded(x).x_hat, ref)


def test_input_scale_folded_on_save(tmp_path):
    sae = _trained_like("abstopk", normalize="scalar")
    sae.input_scale.fill_(0.125)
    x = torch.randn(10, 6) * 8
    ref = sae(x)
    sae.save(tmp_path / "s")
    loaded = SAE.load(tmp_path / "s")
    assert loaded.cfg.normalize_activations == "none"
    out = loaded(x)
    assert torch.allclose(out.x_hat, ref.x_hat, atol=1e-5)
    assert torch.allclose(out.z, ref.z, atol=1e-5)


def test_load_refuses_mismatched_folder(tmp_path):
    sae = _trained_like("abstopk")
    sae.save(tmp_path / "s")
    w = load_file(str(tmp_path / "s" / "sae_weights.safetensors"))
    w["W_enc"] = w["W_enc"][:, :10].contiguous()
    save_file(w, str(tmp_path / "s" / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match=r"W_enc has shape \(6, 10\)"):
        SAE.load(tmp_path / "s")
    w.pop("W_enc")
    save_file(w, str(tmp_path / "s" / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match=r"missing \['W_enc'\]"):
        SAE.load(tmp_path / "s")
    with pytest.raises(FileNotFoundError):
        SAE.load(tmp_path / "nowhere")
    # a JumpReLU cfg over TopK tensors (no threshold) is refused
    sae.save(tmp_path / "t")
    cfg = json.loads((tmp_path / "t" / "cfg.json").read_text())
    cfg["architecture"] = "jumprelu"
    (tmp_path / "t" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="threshold"):
        SAE.load(tmp_path / "t")
