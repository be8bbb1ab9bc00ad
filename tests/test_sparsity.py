"""Known-answer tests: each operator equals its proximal map computed by brute force.

For a regulariser R, prox(u) = argmin_z ½‖u − z‖² + R(z). On a fixed support S the inner
minimiser has a closed form, so the global minimiser is found by enumerating all supports.
"""

import itertools
import math

import pytest
import torch

from abstopk import sparsity as sp


def _brute_prox(u: torch.Tensor, max_support: int | None, nonneg: bool, lam0: float = 0.0,
                lam1: float = 0.0):
    """argmin_z ½‖u − z‖² + lam0·‖z‖₀ + lam1·‖z‖₁ (+ ι{z≥0} if nonneg), ‖z‖₀ ≤ max_support.

    Returns (z*, f(z*)). ``u`` is flat (any length ≤ ~10).
    """
    n = u.numel()
    best, best_z = math.inf, None
    m = n if max_support is None else max_support
    for size in range(0, m + 1):
        for S in itertools.combinations(range(n), size):
            z = torch.zeros_like(u, dtype=torch.float64)
            for i in S:
                v = float(u[i])
                # per-coordinate minimiser of ½(v − z)² + lam1·|z| on z ≠ 0 (sign-feasible)
                if nonneg:
                    zi = max(v - lam1, 0.0)
                else:
                    zi = math.copysign(max(abs(v) - lam1, 0.0), v)
                z[i] = zi
            f = 0.5 * float(((u.double() - z) ** 2).sum()) + lam0 * size + lam1 * float(z.abs().sum())
            if f < best - 1e-12:
                best, best_z = f, z
    return best_z, best


def _obj(u, z, lam0=0.0, lam1=0.0):
    u, z = u.double(), z.double()
    return 0.5 * float(((u - z) ** 2).sum()) + lam0 * int((z != 0).sum()) + lam1 * float(z.abs().sum())


@pytest.fixture
def vectors():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(7, generator=g) * 2 for _ in range(12)]


def test_relu_is_prox_of_nonneg_l1(vectors):
    lam = 0.3
    for u in vectors:
        z_star, f_star = _brute_prox(u, None, nonneg=True, lam1=lam)
        z = sp.relu(u, lam)
        assert torch.allclose(z.double(), z_star, atol=1e-6)
        assert _obj(u, z, lam1=lam) == pytest.approx(f_star, abs=1e-6)


def test_jumprelu_is_prox_of_nonneg_l0(vectors):
    lam = 0.8
    theta = torch.full((7,), math.sqrt(2 * lam))
    for u in vectors:
        z_star, f_star = _brute_prox(u, None, nonneg=True, lam0=lam)
        z = sp.jumprelu(u, theta)
        assert torch.allclose(z.double(), z_star, atol=1e-6)
        assert _obj(u, z, lam0=lam) == pytest.approx(f_star, abs=1e-6)


def test_absjumprelu_is_prox_of_l0(vectors):
    lam = 0.8
    theta = torch.full((7,), math.sqrt(2 * lam))
    for u in vectors:
        z_star, f_star = _brute_prox(u, None, nonneg=False, lam0=lam)
        z = sp.absjumprelu(u, theta)
        assert torch.allclose(z.double(), z_star, atol=1e-6)
        assert (z[z != 0] == u[z != 0]).all()
        assert (z < 0).any() or (u[z != 0] > 0).all()


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_topk_is_prox_of_nonneg_cardinality(vectors, k):
    for u in vectors:
        z_star, f_star = _brute_prox(u, k, nonneg=True)
        z = sp.topk(u, k)
        assert int((z != 0).sum()) <= k
        assert (z >= 0).all()
        assert _obj(u, z) == pytest.approx(f_star, abs=1e-6)
        assert torch.allclose(z.double(), z_star, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_abstopk_is_prox_of_cardinality(vectors, k):
    for u in vectors:
        z_star, f_star = _brute_prox(u, k, nonneg=False)
        z = sp.abstopk(u, k)
        assert int((z != 0).sum()) == k
        assert _obj(u, z) == pytest.approx(f_star, abs=1e-6)
        assert torch.allclose(z.double(), z_star, atol=1e-6)


def test_abstopk_hand_computed_keeps_sign():
    u = torch.tensor([[0.5, -3.0, 1.0, 2.0, -0.1]])
    assert torch.equal(sp.abstopk(u, 2), torch.tensor([[0.0, -3.0, 0.0, 2.0, 0.0]]))
    assert torch.equal(sp.topk(u, 2), torch.tensor([[0.0, 0.0, 1.0, 2.0, 0.0]]))
    # TopK clips: with k larger than the positives, negatives become 0, not kept
    assert torch.equal(sp.topk(u, 4), torch.tensor([[0.5, 0.0, 1.0, 2.0, 0.0]]))


@pytest.mark.parametrize("signed", [False, True])
def test_batch_variants_are_prox_over_the_batch(signed):
    g = torch.Generator().manual_seed(1)
    k, B, F = 1, 2, 4
    for _ in range(6):
        U = torch.randn(B, F, generator=g)
        z_star, f_star = _brute_prox(U.reshape(-1), k * B, nonneg=not signed)
        Z = (sp.batchabstopk if signed else sp.batchtopk)(U, k)
        assert _obj(U.reshape(-1), Z.reshape(-1)) == pytest.approx(f_star, abs=1e-6)
        assert torch.allclose(Z.reshape(-1).double(), z_star, atol=1e-6)


def test_batch_variants_keep_exactly_kB():
    g = torch.Generator().manual_seed(2)
    U = torch.randn(16, 50, generator=g) + 3.0  # all positive → ReLU removes nothing kept
    for fn in (sp.batchtopk, sp.batchabstopk):
        Z = fn(U, 4)
        assert int((Z != 0).sum()) == 4 * 16
    U = torch.randn(16, 50, generator=g)
    Z = sp.batchabstopk(U, 4)
    assert int((Z != 0).sum()) == 4 * 16
    assert (Z < 0).any() and (Z > 0).any()
    # per-token counts vary but the average is exactly k
    counts = (Z != 0).sum(1)
    assert counts.float().mean() == 4.0


def test_jumprelu_pseudo_gradient_hand_computed():
    u = torch.tensor([[0.50, 0.52, 0.70, -0.51]])
    theta = torch.tensor([0.51, 0.51, 0.51, 0.51], requires_grad=True)
    eps = 0.04
    z = sp.jumprelu(u, theta, eps)
    assert torch.equal(z.detach(), torch.tensor([[0.0, 0.52, 0.70, 0.0]]))
    z.sum().backward()
    # ∂z/∂θ = −(θ/ε)·1[|u − θ| < ε/2]: entries 0 and 1 are within 0.02 of θ
    expect = torch.tensor([-0.51 / eps, -0.51 / eps, 0.0, 0.0])
    assert torch.allclose(theta.grad, expect)


def test_absjumprelu_pseudo_gradient_hand_computed():
    u = torch.tensor([[0.50, -0.52, 0.70]])
    theta = torch.tensor([0.51, 0.51, 0.51], requires_grad=True)
    z = sp.absjumprelu(u, theta, 0.04)
    assert torch.equal(z.detach(), torch.tensor([[0.0, -0.52, 0.70]]))
    z.sum().backward()
    assert torch.allclose(theta.grad, torch.tensor([-0.51 / 0.04, 0.51 / 0.04, 0.0]))


def test_step_counts_and_gradient():
    u = torch.tensor([[0.50, -0.52, 0.70]])
    theta = torch.tensor([0.51, 0.51, 0.51], requires_grad=True)
    assert torch.equal(sp.step(u, theta, 0.04), torch.tensor([[0.0, 0.0, 1.0]]))
    c = sp.abs_step(u, theta, 0.04)
    assert torch.equal(c.detach(), torch.tensor([[0.0, 1.0, 1.0]]))
    c.sum().backward()
    assert torch.allclose(theta.grad, torch.tensor([-1 / 0.04, -1 / 0.04, 0.0]))


def test_registry():
    assert set(sp.OPERATORS) == {
        "relu", "jumprelu", "absjumprelu", "topk", "abstopk", "batchtopk", "batchabstopk"
    }
    assert sp.get_operator("abstopk").signed and not sp.get_operator("topk").signed
    with pytest.raises(ValueError, match="unknown architecture 'nope'.*abstopk"):
        sp.get_operator("nope")
    for op in sp.OPERATORS.values():
        assert op.regularizer and op.fn.__doc__ and "prox" in op.fn.__doc__.lower()
