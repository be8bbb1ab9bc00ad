"""Sparsity operators as proximal maps.

Every SAE encoder here is one unrolled proximal-gradient step::

    u = (x - b_dec) @ W_enc + b_enc          # [..., d_sae] pre-activations
    z = prox_{λR}(u)                         # [..., d_sae] sparse code

and the choice of regulariser ``R`` *is* the choice of activation:

=================  =================================  ==============================================
name               regulariser R(z)                   prox (the activation)
=================  =================================  ==============================================
``relu``           ‖z‖₁ + ι{z ≥ 0}                    max(u − λ, 0)   (λ folded into ``b_enc``)
``jumprelu``       ‖z‖₀ + ι{z ≥ 0}                    u·1[u > θ],  θ = √(2λ) learned per latent
``absjumprelu``    ‖z‖₀                               u·1[|u| > θ]  (two-sided JumpReLU)
``topk``           ι{‖z‖₀ ≤ k, z ≥ 0}                 keep the k largest u, clip negatives
``abstopk``        ι{‖z‖₀ ≤ k}                        keep the k largest |u| with their sign
``batchtopk``      ι{‖Z‖₀ ≤ kB, Z ≥ 0} over a batch   keep the kB largest entries of relu(U)
``batchabstopk``   ι{‖Z‖₀ ≤ kB} over a batch          keep the kB largest |U| with their sign
=================  =================================  ==============================================

The functions in this module are pure (no state). Learned thresholds live in the SAE
module and are passed in. Sparsity is always counted as ``z != 0`` and magnitudes are
ranked by ``|z|`` so that signed operators are first-class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "OPERATORS",
    "Operator",
    "abstopk",
    "absjumprelu",
    "batchabstopk",
    "batchtopk",
    "get_operator",
    "jumprelu",
    "relu",
    "step",
    "abs_step",
    "topk",
    "topk_select",
]


# --------------------------------------------------------------------------- ReLU
def relu(u: Tensor, lam: float = 0.0) -> Tensor:
    """Prox of ``λ‖z‖₁ + ι{z≥0}``: non-negative soft thresholding ``max(u − λ, 0)``.

    In an SAE λ is folded into ``b_enc`` (so ``lam=0``) and the ℓ1 penalty moves to the
    loss. ``u``: any shape.
    """
    if lam:
        return torch.relu(u - lam)
    return torch.relu(u)


# ----------------------------------------------------------------------- JumpReLU
def _rect(x: Tensor) -> Tensor:
    """Rectangle kernel K(x) = 1[-1/2 < x < 1/2]."""
    return ((x > -0.5) & (x < 0.5)).to(x.dtype)


class _JumpReLU(torch.autograd.Function):
    """z = u·1[u > θ] with the rectangle-kernel pseudo-gradient for θ (Rajamanoharan+ 2024).

    ∂z/∂u = 1[u > θ];  ∂z/∂θ ≈ −(θ/ε)·K((u − θ)/ε).
    """

    @staticmethod
    def forward(ctx, u: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(u, theta)
        ctx.bandwidth = bandwidth
        return u * (u > theta).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        u, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_u = grad_out * (u > theta).to(u.dtype) if ctx.needs_input_grad[0] else None
        grad_theta = None
        if ctx.needs_input_grad[1]:
            g = -(theta / eps) * _rect((u - theta) / eps) * grad_out
            grad_theta = _sum_to(g, theta.shape)
        return grad_u, grad_theta, None


class _AbsJumpReLU(torch.autograd.Function):
    """z = u·1[|u| > θ] (two-sided JumpReLU), rectangle-kernel pseudo-gradient for θ.

    ∂z/∂u = 1[|u| > θ];  ∂z/∂θ ≈ −sign(u)·(θ/ε)·K((|u| − θ)/ε).
    """

    @staticmethod
    def forward(ctx, u: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(u, theta)
        ctx.bandwidth = bandwidth
        return u * (u.abs() > theta).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        u, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        a = u.abs()
        grad_u = grad_out * (a > theta).to(u.dtype) if ctx.needs_input_grad[0] else None
        grad_theta = None
        if ctx.needs_input_grad[1]:
            g = -torch.sign(u) * (theta / eps) * _rect((a - theta) / eps) * grad_out
            grad_theta = _sum_to(g, theta.shape)
        return grad_u, grad_theta, None


class _Step(torch.autograd.Function):
    """H(v − θ) with pseudo-gradient ∂/∂θ ≈ −(1/ε)·K((v − θ)/ε); no gradient to v.

    With ``v = u`` this counts one-sided firings (JumpReLU's ℓ0); with ``v = |u|`` two-sided.
    """

    @staticmethod
    def forward(ctx, v: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(v, theta)
        ctx.bandwidth = bandwidth
        return (v > theta).to(v.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        v, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_theta = None
        if ctx.needs_input_grad[1]:
            g = -(1.0 / eps) * _rect((v - theta) / eps) * grad_out
            grad_theta = _sum_to(g, theta.shape)
        return None, grad_theta, None


def _sum_to(g: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast gradient back to ``shape`` (trailing-dims broadcasting)."""
    if g.shape == shape:
        return g
    lead = g.dim() - len(shape)
    g = g.sum(dim=tuple(range(lead))) if lead > 0 else g
    dims = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    return g.sum(dim=dims, keepdim=True) if dims else g


def jumprelu(u: Tensor, threshold: Tensor, bandwidth: float = 1e-3) -> Tensor:
    """Prox of ``λ‖z‖₀ + ι{z≥0}``: hard thresholding ``u·1[u > θ]`` with θ = √(2λ).

    ``u``: [..., d_sae]; ``threshold``: [d_sae] (or broadcastable), stored directly (not in
    log space). Gradient to θ through the rectangle-kernel pseudo-derivative of width
    ``bandwidth``.
    """
    return _JumpReLU.apply(u, threshold, bandwidth)


def absjumprelu(u: Tensor, threshold: Tensor, bandwidth: float = 1e-3) -> Tensor:
    """Prox of ``λ‖z‖₀`` (no sign constraint): ``u·1[|u| > θ]``, θ = √(2λ) per latent."""
    return _AbsJumpReLU.apply(u, threshold, bandwidth)


def step(u: Tensor, threshold: Tensor, bandwidth: float = 1e-3) -> Tensor:
    """Differentiable-in-θ count of one-sided firings ``1[u > θ]`` (JumpReLU's ℓ0 term)."""
    return _Step.apply(u, threshold, bandwidth)


def abs_step(u: Tensor, threshold: Tensor, bandwidth: float = 1e-3) -> Tensor:
    """Differentiable-in-θ count of two-sided firings ``1[|u| > θ]``."""
    return _Step.apply(u.abs(), threshold, bandwidth)


# -------------------------------------------------------------------------- TopK
def topk_select(u: Tensor, k: int, signed: bool) -> tuple[Tensor, Tensor]:
    """Indices and kept values of the per-row top-k selection.

    ``u``: [..., d_sae]. Returns ``(values, indices)``, both [..., k]. ``signed=False``:
    the k largest ``u`` with negatives clipped to 0 (TopK). ``signed=True``: the k largest
    ``|u|`` with their sign (AbsTopK / hard thresholding).
    """
    if signed:
        idx = u.abs().topk(k, dim=-1, sorted=False).indices
        return u.gather(-1, idx), idx
    vals, idx = u.topk(k, dim=-1, sorted=False)
    return torch.relu(vals), idx


def topk(u: Tensor, k: int) -> Tensor:
    """Prox of ``ι{‖z‖₀ ≤ k, z ≥ 0}``: keep the k largest entries of u, clip negatives.

    ``u``: [..., d_sae] → z of the same shape with at most k non-zeros per row, all ≥ 0.
    """
    vals, idx = topk_select(u, k, signed=False)
    return torch.zeros_like(u).scatter(-1, idx, vals)


def abstopk(u: Tensor, k: int) -> Tensor:
    """Prox of ``ι{‖z‖₀ ≤ k}`` (hard thresholding): keep the k largest |u_i| with their sign.

    ``u``: [..., d_sae] → z of the same shape with at most k non-zeros per row, signed.
    Ties at the k-th largest |u| (t): every |u_i| > t is kept, then latents with |u_i| = t
    until k are kept; which of those is ``torch.topk``'s choice on the row (the fused kernel
    makes the same call; ``docs/evaluation.md``, "Ties at the k-th |u|").
    """
    vals, idx = topk_select(u, k, signed=True)
    return torch.zeros_like(u).scatter(-1, idx, vals)


def _batch_select(u: Tensor, k: int, signed: bool) -> Tensor:
    flat = u.reshape(-1)
    n_keep = min(k * (u.numel() // u.shape[-1]), flat.numel())
    if signed:
        idx = flat.abs().topk(n_keep, sorted=False).indices
        vals = flat.gather(0, idx)
    else:
        vals, idx = flat.topk(n_keep, sorted=False)
        vals = torch.relu(vals)
    return torch.zeros_like(flat).scatter(0, idx, vals).reshape(u.shape)


def batchtopk(u: Tensor, k: int) -> Tensor:
    """Prox of ``ι{‖Z‖₀ ≤ k·B, Z ≥ 0}`` over a batch ``U`` [B, d_sae].

    Keeps the k·B largest entries of the whole batch (negatives clipped); a token may keep
    more or fewer than k. At inference a global threshold θ (EMA of the smallest kept value)
    replaces the batch rule: ``z = u·1[u > θ]``.
    """
    return _batch_select(u, k, signed=False)


def batchabstopk(u: Tensor, k: int) -> Tensor:
    """Prox of ``ι{‖Z‖₀ ≤ k·B}`` over a batch: keep the k·B largest |U| with their sign.

    At inference: ``z = u·1[|u| > θ]`` with θ the EMA of the smallest kept |u|.
    """
    return _batch_select(u, k, signed=True)


# ---------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Operator:
    """What the SAE needs to know about a sparsity operator.

    Attributes:
        name: registry key, stored in cfg.json as ``architecture``.
        fn: the operator itself.
        regularizer: the R(z) it is the prox of (documentation).
        signed: whether codes may be negative (rank by |u|, count ``!= 0``).
        needs_k: takes an integer ``k``.
        needs_threshold: has a learned per-latent threshold parameter.
        batch_level: selection is over the whole batch; inference uses a threshold.
        penalty: the loss penalty it adds during training: ``"l1"``, ``"l0"`` or ``None``.
    """

    name: str
    fn: Callable[..., Tensor]
    regularizer: str
    signed: bool
    needs_k: bool
    needs_threshold: bool
    batch_level: bool
    penalty: str | None

    @property
    def k_sparse(self) -> bool:
        """True for the fixed-k family that the sparse kernels serve."""
        return self.needs_k


OPERATORS: dict[str, Operator] = {}


def register(op: Operator) -> Operator:
    """Add an operator to the registry (name must be new)."""
    if op.name in OPERATORS:
        raise ValueError(f"operator {op.name!r} already registered")
    OPERATORS[op.name] = op
    return op


register(Operator("relu", relu, "‖z‖₁ + ι{z≥0}", False, False, False, False, "l1"))
register(Operator("jumprelu", jumprelu, "‖z‖₀ + ι{z≥0}", False, False, True, False, "l0"))
register(Operator("absjumprelu", absjumprelu, "‖z‖₀", True, False, True, False, "l0"))
register(Operator("topk", topk, "ι{‖z‖₀≤k, z≥0}", False, True, False, False, None))
register(Operator("abstopk", abstopk, "ι{‖z‖₀≤k}", True, True, False, False, None))
register(Operator("batchtopk", batchtopk, "ι{‖Z‖₀≤kB, Z≥0}", False, True, False, True, None))
register(Operator("batchabstopk", batchabstopk, "ι{‖Z‖₀≤kB}", True, True, False, True, None))


def get_operator(name: str) -> Operator:
    """Look up an operator by name; ``ValueError`` naming the known ones otherwise."""
    try:
        return OPERATORS[name]
    except KeyError:
        known = ", ".join(sorted(OPERATORS))
        raise ValueError(f"unknown architecture {name!r}; known: {known}") from None
