"""AuxK as GEMMs over the dead columns (kernels.aux_dense) against the sparse products."""

from __future__ import annotations

import pytest
import torch

from abstopk import kernels as K
from abstopk.kernels import aux_dense


def _close(a, b, rtol=1e-5):
    scale = b.abs().max().clamp_min(1e-30)
    assert (a - b).abs().max() <= rtol * scale, float((a - b).abs().max())


def test_dead_column_decode_hand_case():
    W_dec = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [2.0, -3.0]], requires_grad=True)
    dead = torch.tensor([1, 3])
    values = torch.tensor([[2.0, -1.0], [0.5, 0.0]], requires_grad=True)
    indices = torch.tensor([[3, 1], [1, 3]])
    e_hat = aux_dense.dead_column_decode(values, indices, dead, W_dec)
    # row 0: 2·(2, −3) − (0, 1) = (4, −7); row 1: 0.5·(0, 1) = (0, 0.5)
    assert e_hat.tolist() == [[4.0, -7.0], [0.0, 0.5]]
    g = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    e_hat.backward(g)
    # ∂values[b, j] = ⟨g_b, W_dec[idx]⟩: row 0 ⟨(1,2),(2,−3)⟩ = −4, ⟨(1,2),(0,1)⟩ = 2
    assert values.grad.tolist() == [[-4.0, 2.0], [-1.0, 9.0]]
    # ∂W_dec[f] = Σ_b z[b, f]·g_b: latent 3: 2·(1, 2) + 0·(3, −1); latent 1: −1·(1, 2) + 0.5·(3, −1)
    assert W_dec.grad.tolist() == [[0.0, 0.0], [0.5, -2.5], [0.0, 0.0], [2.0, 4.0]]


def test_dead_column_decode_random_equals_sparse_decode():
    g = torch.Generator().manual_seed(5)
    B, D, n, ka = 23, 7, 60, 6
    dead = torch.randperm(n, generator=g)[:11].sort().values
    loc = torch.rand(B, 11, generator=g).argsort(1)[:, :ka]
    idx = dead[loc]
    vals = torch.randn(B, ka, generator=g)
    W = torch.randn(n, D, generator=g)
    gout = torch.randn(B, D, generator=g)
    res = []
    for fn in (lambda v, w: aux_dense.dead_column_decode(v, K.Selection(idx, n), dead, w),
               lambda v, w: K.sparse_decode_reference(v, idx, w, None)):
        v, w = vals.clone().requires_grad_(True), W.clone().requires_grad_(True)
        out = fn(v, w)
        out.backward(gout)
        res.append((out.detach(), v.grad, w.grad))
    for a, b in zip(*res, strict=True):
        _close(a, b)


@pytest.mark.parametrize("signed", [False, True], ids=["topk", "abstopk"])
@pytest.mark.parametrize("batch", [False, True], ids=["rows", "batch"])
def test_encoder_aux_backward_dense_equals_sparse_and_reference(signed, batch):
    """∂W_enc, ∂b_enc and ∂shift of the AuxK part as GEMMs = sparse products = reference."""
    g = torch.Generator().manual_seed(17)
    B, D, n, k, k_aux = 29, 9, 80, 3, 7
    x = torch.randn(B, D, generator=g)
    W0, b0 = torch.randn(D, n, generator=g) / 3, torch.randn(n, generator=g) * 0.1
    s0 = torch.randn(D, generator=g) * 0.2
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=g)[:15]] = True        # 15 dead < n/4, ka 7
    w_aux = torch.arange(n).float().sin()                  # a loss weight per latent
    w_main = torch.randn(D, generator=g)
    res = {}
    for how in ("dense", "sparse") + (() if batch else ("ref",)):  # reference: per row only
        W, b, s = (t.clone().requires_grad_(True) for t in (W0, b0, s0))
        if how == "ref":
            v, i, av, ai = K.topk_encode_reference(x - s, W, b, k, signed, mask, k_aux)
        else:
            out = K.fused_topk_encode(x, W, b, k, signed, mask, k_aux, batch=batch, shift=s,
                                      chunk_rows=8, aux_dense=how == "dense")
            v, i = out.values, out.selection.indices
            av, ai = out.aux_values, out.aux_selection.indices
        za = torch.zeros(B, n).scatter(1, ai, av)
        loss = (za * w_aux).sum() + (K.sparse_decode_reference(v, i, torch.eye(n, D), None)
                                     * w_main).sum()
        loss.backward()
        res[how] = (za.detach(), W.grad, b.grad, s.grad)
    for a, r in zip(res["dense"], res["sparse"], strict=True):
        _close(a, r)
    if "ref" in res:
        for a, r in zip(res["dense"], res["ref"], strict=True):
            _close(a, r)
    assert res["dense"][1][:, mask].abs().sum() > 0         # dead columns got the AuxK gradient


def test_rule():
    cpu = torch.device("cpu")
    assert aux_dense.dense_aux_columns(922, 288, 9216, cpu)        # 10 % dead on W1
    assert not aux_dense.dense_aux_columns(9216, 288, 9216, cpu)   # all dead: gathers
    assert not aux_dense.dense_aux_columns(2000, 288, 9216, cpu)   # > 5·ka
    assert not aux_dense.dense_aux_columns(922, 288, 9216, torch.device("meta"))
