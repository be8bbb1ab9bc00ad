"""The JumpReLU family's sparse training path (kernels.jumprelu) against the dense path.

Hand-sized float64 problems whose pre-activations are exact (dyadic numbers), so entries can
be planted exactly at θ, on the band edges θ ± ε/2 (excluded: the kernel is strict) and one
step (1/512) inside or outside them; then a short training run, AuxK and the path rule.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from abstopk import kernels as K
from abstopk import sparsity as sp
from abstopk.kernels import encoder_gemm
from abstopk.kernels import jumprelu as jr
from abstopk.sae import SAE, SAEConfig
from abstopk.train.config import TrainConfig
from abstopk.train.state import TrainState
from abstopk.train.step import make_optimizer, train_step

EPS = 0.25
STEP = 1 / 512   # inside the pre-filter's ε/64 margin
# row 0's key minus θ per latent, and whether the entry is selected (fires or K ≠ 0)
OFFSETS = [0.0, -EPS / 2, -EPS / 2 + STEP, -EPS / 2 - STEP, EPS / 2, EPS / 2 - STEP, STEP,
           -STEP, -1.0, 1.0]
SELECTED_ROW0 = {0, 2, 4, 5, 6, 7, 9}   # at θ; inside the lower band; firing; in the band
FIRING_ROW0 = {4, 5, 6, 9}


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b| (the reference's scale)."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _planted(signed: bool) -> dict[str, torch.Tensor]:
    """B 5, D 6, F 10, float64. x_c rows: e_0 (row 0: the planted keys θ + OFFSETS), e_1 (row
    1: every latent fires), 0 (row 2: u = b_enc = 0 < θ − ε/2, nothing selected), two random
    dyadic rows. θ_f = 1/2 + f/8; W_enc's other rows are multiples of 1/8."""
    g = torch.Generator().manual_seed(3)
    F, D = len(OFFSETS), 6
    theta = 0.5 + torch.arange(F, dtype=torch.float64) / 8
    sign = (-1.0) ** torch.arange(F, dtype=torch.float64) if signed else torch.ones(F,
                                                                               dtype=torch.float64)
    W = torch.randint(-8, 9, (D, F), generator=g).double() / 8
    W[0] = sign * (theta + torch.tensor(OFFSETS, dtype=torch.float64))
    W[1] = -sign * (theta + 1) if signed else theta + 1
    x_c = torch.zeros(5, D, dtype=torch.float64)
    x_c[0, 0] = x_c[1, 1] = 1.0
    x_c[3:] = torch.randint(-8, 9, (2, D), generator=g).double() / 4
    return {"x_c": x_c, "W_enc": W, "theta": theta,
            "b_dec": torch.randint(-4, 5, (D,), generator=g).double() / 4,
            "W_dec": torch.randn(F, D, generator=g, dtype=torch.float64),
            "target": torch.randn(5, D, generator=g, dtype=torch.float64)}


def _sae(p, arch: str, b_dec_in: bool, sparse: bool) -> SAE:
    F, D = p["W_dec"].shape
    cfg = SAEConfig(d_in=D, d_sae=F, architecture=arch, jumprelu_bandwidth=EPS,
                    apply_b_dec_to_input=b_dec_in, use_sparse_kernels=sparse,
                    normalize_activations="none")
    sae = SAE(cfg, dtype=torch.float64)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(p[name])
        sae.b_enc.zero_()
        sae.threshold.copy_(p["theta"])
    return sae.train()


def _forward_backward(sae: SAE, p, b_dec_in: bool):
    x = p["x_c"] + p["b_dec"] if b_dec_in else p["x_c"].clone()   # exact: dyadic
    out = sae(x, dense_code=True)
    loss = (out.x_hat - p["target"]).pow(2).sum() + 0.3 * out.l0
    loss.backward()
    grads = {n: q.grad.clone() for n, q in sae.named_parameters()}
    return out, grads


@pytest.mark.parametrize("b_dec_in", [True, False], ids=["b_dec_in", "no_b_dec_in"])
@pytest.mark.parametrize("arch", ["jumprelu", "absjumprelu"])
@pytest.mark.parametrize("form", ["sparse", "dense"])
def test_planted_entries_match_the_dense_path(arch, b_dec_in, form, monkeypatch):
    """x̂, z, l0 and every gradient (W_enc, b_enc, W_dec, b_dec, θ) equal the dense path's
    (float64, ≤ 1e-12 relative), in the sparse and the dense product form, by row blocks of
    2; the selection is exactly the firing + band entries."""
    monkeypatch.setattr(jr, "SPARSE_MAX_FRACTION", 1.0 if form == "sparse" else -1.0)
    monkeypatch.setattr(encoder_gemm, "CPU_CHUNK_ROWS", 2)
    p = _planted(arch == "absjumprelu")
    ref_sae, new_sae = _sae(p, arch, b_dec_in, False), _sae(p, arch, b_dec_in, True)
    assert new_sae._use_threshold_kernels() and not ref_sae._use_threshold_kernels()
    ref, g_ref = _forward_backward(ref_sae, p, b_dec_in)
    out, g = _forward_backward(new_sae, p, b_dec_in)
    assert out.pre_acts is None and ref.pre_acts is not None   # the new path ran
    assert _rel_err(out.x_hat, ref.x_hat) <= 1e-12
    assert torch.equal(out.z, ref.z) and torch.equal(out.l0, ref.l0)
    for name, r in g_ref.items():
        assert r.abs().max() > 0, name
        assert _rel_err(g[name], r) <= 1e-12, name
    if form == "sparse":
        counts = out.counts.tolist()
        F = len(OFFSETS)
        assert counts[:3] == [len(SELECTED_ROW0), F, 0] and out.values.shape[1] == F
        assert set(out.indices[0, :counts[0]].tolist()) == SELECTED_ROW0
        fired = {int(i) for i, v in zip(out.indices[0], out.values[0], strict=True) if v != 0}
        assert fired == FIRING_ROW0
    else:
        assert out.selection is None and out.values is None


@pytest.mark.parametrize("form", [1.0, -1.0], ids=["sparse", "dense"])
def test_theta_gradient_by_hand(form, monkeypatch):
    """A 2×3 example, ε = 1/4, θ = (1/2, 1/2, 3/4), u = x_c·W_enc = W_enc (x_c = I):

        u = [[0.5625, 0.25, 0.75],      (key − θ)/ε = [[ 0.25, −1, 0], K = [[1, 0, 1],
             [0.4375, 0.625, 1.0]]                      [−0.25, 0.5, 1]]     [1, 0, 0]]

    (0.5 and 1 are outside the strict kernel). fires = u > θ: [[1, 0, 0], [0, 1, 1]], so
    z = [[0.5625, 0, 0], [0, 0.625, 1]] and l0 = 3/2. With L = Σ C∘z + λ·l0, C = [[1, 2, 3],
    [4, 5, 6]], λ = 1/2:  ∂L/∂θ_f = Σ_b C_bf·(−θ_f/ε)·K_bf + λ·Σ_b (−1/ε)·K_bf / B, where
    θ/ε = (2, 2, 3), λ/(ε·B) = 1:
        θ_0: −2·(1 + 4) − (1 + 1) = −12;  θ_1: 0 (no K);  θ_2: −3·3 − 1 = −10.
    """
    u = torch.tensor([[0.5625, 0.25, 0.75], [0.4375, 0.625, 1.0]], dtype=torch.float64)
    C = torch.tensor([[1.0, 2, 3], [4, 5, 6]], dtype=torch.float64)
    want = torch.tensor([-12.0, 0.0, -10.0], dtype=torch.float64)
    monkeypatch.setattr(jr, "SPARSE_MAX_FRACTION", form)
    theta = torch.tensor([0.5, 0.5, 0.75], dtype=torch.float64, requires_grad=True)
    eye, zero = torch.eye(2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    out = K.threshold_encode(eye, u, zero, theta, EPS, signed=False)
    z = out.values
    if out.selection is not None:
        z = torch.zeros_like(u).scatter_add(1, out.selection.indices, out.values)
    assert torch.equal(z, torch.tensor([[0.5625, 0, 0], [0, 0.625, 1.0]], dtype=z.dtype))
    assert float(out.l0.detach()) == 1.5
    ((C * z).sum() + 0.5 * out.l0).backward()
    assert torch.equal(theta.grad, want)
    # and the dense operators agree
    theta = torch.tensor([0.5, 0.5, 0.75], dtype=torch.float64, requires_grad=True)
    ((C * sp.jumprelu(u, theta, EPS)).sum()
     + 0.5 * sp.step(u, theta, EPS).sum(-1).mean()).backward()
    assert torch.equal(theta.grad, want)


def test_path_rule_and_where_the_dense_path_stays():
    """The product form is chosen by N ≤ SPARSE_MAX_FRACTION·B·F; use_sparse_kernels=False,
    eval mode and several unrolled steps keep the dense path."""
    f = jr.SPARSE_MAX_FRACTION
    assert jr.use_sparse_products(int(f * 4096 * 4608), 4096, 4608)
    assert not jr.use_sparse_products(int(f * 4096 * 4608) + 1, 4096, 4608)
    cfg = dict(d_in=4, d_sae=8, architecture="jumprelu")
    assert SAE(SAEConfig(**cfg)).train()._use_threshold_kernels()
    assert not SAE(SAEConfig(**cfg)).train()._use_threshold_kernels(aux=True)
    assert not SAE(SAEConfig(**cfg)).eval()._use_threshold_kernels()
    assert not SAE(SAEConfig(**cfg, use_sparse_kernels=False)).train()._use_threshold_kernels()
    assert not SAE(SAEConfig(**cfg, n_steps=2)).train()._use_threshold_kernels()
    sae = SAE(SAEConfig(**cfg), seed=0).eval()
    assert sae(torch.randn(3, 4)).pre_acts is not None


def _toy(n=4096, d=16, m=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(m, d, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    z = torch.zeros(n, m).scatter_(1, torch.randint(0, m, (n, 3), generator=g),
                                   torch.randn(n, 3, generator=g) * 2)
    return z @ D + 0.05 * torch.randn(n, d, generator=g)


@pytest.mark.parametrize("arch", ["jumprelu", "absjumprelu"])
def test_auxk_steps_match_the_dense_path(arch):
    """Three steps with dead latents and AuxK (recomputed over the dead columns on the sparse
    path, the dense selection on the dense one): weights, losses, fired and L0 agree."""
    X = _toy(96, 12, 20)
    dead = torch.zeros(40, dtype=torch.bool)
    dead[5:30] = True
    runs = []
    for sparse in (True, False):
        sae = SAE(SAEConfig(d_in=12, d_sae=40, architecture=arch, use_sparse_kernels=sparse,
                            jumprelu_init_threshold=0.3), seed=3)
        opt = make_optimizer(sae, lr=1e-3, threshold_lr_factor=30.0)
        runs.append((sae, [train_step(sae, opt, X[i * 32:(i + 1) * 32], penalty_coeff=1e-2,
                                      dead_mask=dead, k_aux=6) for i in range(3)]))
    (a, ra), (b, rb) = runs
    for x, y in zip(ra, rb, strict=True):
        assert float(y.aux_loss) > 0
        for name in ("loss", "aux_loss", "mse", "penalty"):
            assert torch.allclose(getattr(x, name), getattr(y, name), rtol=1e-5), name
        assert torch.equal(x.fired, y.fired) and torch.equal(x.l0, y.l0)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert _rel_err(p.detach(), q.detach()) <= 1e-5, n


def _hundred_steps(arch: str, sparse: bool, steps: int = 100):
    """100 steps of 128 rows, d_in 16, d_sae 64, target L0 4 (the PI controller), seed 0."""
    cfg = TrainConfig(architecture=arch, k=None, target_l0=4.0, d_sae=64, steps=steps,
                      batch_size=128, lr=3e-3, seed=0, progress=False)
    state = TrainState.from_config(cfg, 16)
    if not sparse:
        state.sae.cfg = dataclasses.replace(state.sae.cfg, use_sparse_kernels=False)
    X = _toy()
    state.initialize([X[:1024]])
    l0 = [float(state.step(X[(i % 32) * 128:(i % 32 + 1) * 128]).result.l0)
          for i in range(steps)]
    assert state.sae._use_threshold_kernels() == sparse
    return state.sae, l0


@pytest.mark.parametrize("arch", ["jumprelu", "absjumprelu"])
@pytest.mark.parametrize("fraction", [1.0, None], ids=["sparse", "rule"])
def test_training_run_matches_the_dense_path(arch, fraction, monkeypatch):
    """The same L0 trajectory (L0 falls from 30 / 61 towards the target; measured identical
    at every step) and final weights within 1e-5 relative (measured ≤ 4.2e-7), on the
    sparse products throughout and under the default rule (dense products while the
    selection is wider than 18 % of d_sae)."""
    if fraction is not None:
        monkeypatch.setattr(jr, "SPARSE_MAX_FRACTION", fraction)
    a, la = _hundred_steps(arch, True)
    b, lb = _hundred_steps(arch, False)
    assert la[0] > 16 and la[-1] < 8   # it moved through both product forms
    assert max(abs(x - y) for x, y in zip(la, lb, strict=True)) <= 1 / 128  # ≤ one entry
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert _rel_err(p, q) <= 1e-5, n
