"""Sparse kernels vs the dense reference: values and every gradient, fp32, 1e-5 relative."""

from __future__ import annotations

import pytest
import torch

from abstopk import kernels as K
from abstopk import sparsity as sp
from abstopk.sae import SAE, SAEConfig

RTOL = 1e-5


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = RTOL) -> None:
    """max |a − b| ≤ rtol · max |b| (relative to the reference's scale)."""
    assert a.shape == b.shape
    scale = b.abs().max().clamp_min(1e-30)
    err = (a - b).abs().max()
    assert err <= rtol * scale, f"max abs err {err:.3e} vs scale {scale:.3e}"


def _problem(B, D, Fn, seed, device="cpu", dead_frac=0.5):
    g = torch.Generator().manual_seed(seed)
    t = {
        "x": torch.randn(B, D, generator=g),
        "W": torch.randn(D, Fn, generator=g) / D**0.5,
        "b": torch.randn(Fn, generator=g) * 0.1,
        "Wd": torch.randn(Fn, D, generator=g),
        "bd": torch.randn(D, generator=g),
        "mask": torch.rand(Fn, generator=g) < dead_frac,
        "w_aux": torch.randn(D, generator=g),
    }
    return {k: v.to(device) for k, v in t.items()}


def _run(encode, decode, p, k, signed, k_aux, **kw):
    """Encode + decode + a loss using main and aux selections; return outputs and grads."""
    leaves = {n: p[n].clone().requires_grad_(True) for n in ("x", "W", "b", "Wd", "bd")}
    mask = p["mask"] if k_aux else None
    v, i, av, ai = encode(leaves["x"], leaves["W"], leaves["b"], k, signed, mask, k_aux, **kw)
    out = decode(v, i, leaves["Wd"], leaves["bd"])
    loss = (out * out).sum() + (out * p["w_aux"]).sum()
    if av is not None:
        loss = loss + (decode(av, ai, leaves["Wd"], None) * p["w_aux"]).sum()
    loss.backward()
    z = torch.zeros(out.shape[0], p["W"].shape[1], device=out.device).scatter(1, i, v)
    za = None
    if av is not None:
        za = torch.zeros_like(z).scatter(1, ai, av)
    return out.detach(), z.detach(), za, {n: t.grad for n, t in leaves.items()}


CASES = [
    # B, D, F, k, k_aux, dead_frac, chunk_rows
    (7, 13, 37, 5, 6, 0.5, -1),      # odd sizes, dense aux path (many dead)
    (7, 13, 37, 5, 6, 0.15, -1),     # few dead: aux selection over the dead columns only
    (7, 13, 37, 5, 40, 0.15, -1),    # k_aux larger than #dead: ka = #dead
    (33, 24, 50, 4, 9, 0.5, 4),      # several row blocks, last one partial
    (33, 24, 50, 4, 9, 0.5, None),   # whole batch in one block
    (5, 6, 8, 8, 3, 1.0, 2),         # k = d_sae, every latent dead
    # wide enough for the two-level row top-k (kernels.row_topk: g 8 for k 4, g 4 for 24)
    (9, 8, 512, 4, 24, 1.0, 4),      # every latent dead: main taken from the AuxK selection
    (9, 8, 512, 4, 24, 0.5, -1),     # half dead: masked AuxK over the whole row
]


@pytest.mark.parametrize("signed", [False, True], ids=["topk", "abstopk"])
@pytest.mark.parametrize("aux", [False, True], ids=["noaux", "aux"])
@pytest.mark.parametrize("case", CASES)
def test_topk_encode_matches_reference(signed, aux, case):
    B, D, Fn, k, k_aux, dead_frac, chunk = case
    p = _problem(B, D, Fn, seed=B * 1000 + Fn, dead_frac=dead_frac)
    ka = k_aux if aux else 0
    ref = _run(K.topk_encode_reference, K.sparse_decode_reference, p, k, signed, ka)
    got = _run(K.topk_encode, K.sparse_decode, p, k, signed, ka, chunk_rows=chunk)
    _close(got[0], ref[0])
    _close(got[1], ref[1])
    if aux and int(p["mask"].sum()) > 0:
        assert got[2] is not None and ref[2] is not None
        _close(got[2], ref[2])
        assert got[2].ne(0).sum(1).le(min(k_aux, int(p["mask"].sum()))).all()
        assert (got[2].ne(0) & ~p["mask"]).sum() == 0  # aux only among dead latents
    for name in ("x", "W", "b", "Wd", "bd"):
        _close(got[3][name], ref[3][name])


@pytest.mark.parametrize("x_grad", [False, True], ids=["x_const", "x_grad"])
@pytest.mark.parametrize("signed", [False, True], ids=["topk", "abstopk"])
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[5]])
def test_shift_gradient_matches_subtracting_outside(signed, x_grad, case):
    """topk_encode(x, …, shift=s) ≡ topk_encode_reference(x − s, …), ∂s = −Σ_b ∂x_c included."""
    B, D, Fn, k, k_aux, dead_frac, chunk = case
    p = _problem(B, D, Fn, seed=7 * B + Fn, dead_frac=dead_frac)
    res = {}
    for name, fn in (("ref", None), ("got", K.topk_encode)):
        x = p["x"].clone().requires_grad_(x_grad)
        s = p["bd"].clone().requires_grad_(True)
        W = p["W"].clone().requires_grad_(True)
        b = p["b"].clone().requires_grad_(True)
        if fn is None:
            v, i, av, ai = K.topk_encode_reference(x - s, W, b, k, signed, p["mask"], k_aux)
        else:
            v, i, av, ai = fn(x, W, b, k, signed, p["mask"], k_aux, chunk_rows=chunk, shift=s)
        loss = (K.sparse_decode_reference(v, i, p["Wd"], None) * p["w_aux"]).sum()
        loss = loss + K.sparse_decode_reference(av, ai, p["Wd"], None).pow(2).sum()
        loss.backward()
        res[name] = (v.detach(), s.grad, W.grad, b.grad, x.grad)
    for a, r in zip(res["got"], res["ref"], strict=True):
        if r is None:
            assert a is None
        else:
            _close(a, r)
    assert res["got"][1].abs().sum() > 0  # the shift really receives a gradient


def test_known_answer_topk_and_abstopk_keep_signs():
    # W = I, b = 0: u = x. Row 0: u = [1, −3, 2, 0.5]; row 1: u = [−1, −2, −0.5, −4].
    x = torch.tensor([[1.0, -3.0, 2.0, 0.5], [-1.0, -2.0, -0.5, -4.0]])
    W, b = torch.eye(4), torch.zeros(4)
    v, i, _, _ = K.topk_encode(x, W, b, 2, signed=False)
    z = torch.zeros(2, 4).scatter(1, i, v)
    assert torch.equal(z[0], torch.tensor([1.0, 0.0, 2.0, 0.0]))
    assert torch.equal(z[1], torch.zeros(4))  # TopK clips negatives to 0
    v, i, _, _ = K.topk_encode(x, W, b, 2, signed=True)
    z = torch.zeros(2, 4).scatter(1, i, v)
    assert torch.equal(z[0], torch.tensor([0.0, -3.0, 2.0, 0.0]))
    assert torch.equal(z[1], torch.tensor([0.0, -2.0, 0.0, -4.0]))
    # AuxK among latents {0, 3} only, width 1: row 0 → |1| > |0.5| keeps u_0 = 1,
    # row 1 → |−4| keeps −4 with its sign.
    mask = torch.tensor([True, False, False, True])
    _, _, av, ai = K.topk_encode(x, W, b, 2, True, mask, 1)
    assert ai.tolist() == [[0], [3]] and av.tolist() == [[1.0], [-4.0]]


def test_aux_gives_dead_latents_gradient():
    p = _problem(16, 8, 20, seed=3, dead_frac=0.0)
    W = p["W"].clone()
    W[:, :5] *= 1e-3  # latents 0..4 (u ≈ ±1e-3) never beat the live ones (u ≈ 5)
    mask = torch.zeros(20, dtype=torch.bool)
    mask[:5] = True
    for signed in (False, True):
        for k_aux, expect in ((0, False), (3, True)):
            Wl = W.clone().requires_grad_(True)
            b = torch.cat([torch.zeros(5), torch.full((15,), 5.0)]).requires_grad_(True)
            v, i, av, ai = K.topk_encode(p["x"], Wl, b, 4, signed, mask, k_aux)
            assert not torch.isin(i, torch.arange(5)).any()
            loss = K.sparse_decode(v, i, p["Wd"], None).pow(2).sum()
            if av is not None:
                loss = loss + K.sparse_decode(av, ai, p["Wd"], None).sum()
            loss.backward()
            got = bool(Wl.grad[:, :5].abs().sum() > 0)
            assert got == expect, (signed, k_aux)
            assert Wl.grad[:, 5:].abs().sum() > 0


def test_sparse_decode_duplicates_and_grads():
    g = torch.Generator().manual_seed(0)
    idx = torch.tensor([[0, 0, 3], [2, 1, 2], [4, 4, 4]])
    vals = torch.randn(3, 3, generator=g)
    Wd = torch.randn(5, 7, generator=g)
    bd = torch.randn(7, generator=g)
    outs, grads = [], []
    for fn in (K.sparse_decode_reference, K.sparse_decode):
        vv, WW, bb = (t.clone().requires_grad_(True) for t in (vals, Wd, bd))
        o = fn(vv, idx, WW, bb)
        (o * torch.arange(7.0)).sum().backward()
        outs.append(o.detach())
        grads.append((vv.grad, WW.grad, bb.grad))
    _close(outs[1], outs[0])
    for a, b in zip(grads[1], grads[0], strict=True):
        _close(a, b)
    # hand check of one row: x̂[0] = (v00 + v01)·W0 + v02·W3 + b
    _close(outs[1][0], (vals[0, 0] + vals[0, 1]) * Wd[0] + vals[0, 2] * Wd[3] + bd)


def test_column_sums_both_paths():
    idx = torch.tensor([[0, 3, 3], [2, 0, 1], [4, 4, 0]])
    w = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    expect = torch.tensor([1.0 + 5.0 + 9.0, 6.0, 4.0, 2.0 + 3.0, 7.0 + 8.0, 0.0])
    for segment in (False, True):  # a fresh selection each: no layout cached yet
        assert torch.equal(K.column_sums(K.Selection(idx, 6), w, segment=segment), expect)


def test_sddmm_both_paths():
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(0, 11, (9, 4), generator=g)
    A, Bm = torch.randn(9, 5, generator=g), torch.randn(11, 5, generator=g)
    expect = (Bm[idx] * A[:, None, :]).sum(-1)
    for sampled, csc in ((True, False), (True, True), (False, False)):
        _close(K.sddmm(K.Selection(idx, 11), A, Bm, sampled=sampled, csc=csc), expect)


@pytest.mark.skipif(not K.onednn_available(), reason="oneDNN linear op not available")
def test_onednn_backend_matches_addmm():
    p = _problem(20, 16, 40, seed=7)
    a = _run(K.topk_encode, K.sparse_decode, p, 6, True, 5, backend="addmm")
    b = _run(K.topk_encode, K.sparse_decode, p, 6, True, 5, backend="onednn")
    _close(b[0], a[0])
    _close(b[1], a[1])
    for name in ("x", "W", "b", "Wd", "bd"):
        _close(b[3][name], a[3][name])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("signed", [False, True])
def test_cuda_matches_reference(signed):
    p = _problem(33, 24, 50, seed=11, device="cuda")
    ref = _run(K.topk_encode_reference, K.sparse_decode_reference, p, 4, signed, 9)
    got = _run(K.topk_encode, K.sparse_decode, p, 4, signed, 9)
    _close(got[0], ref[0])
    for name in ("x", "W", "b", "Wd", "bd"):
        _close(got[3][name], ref[3][name])


def test_bad_arguments():
    x, W, b = torch.zeros(2, 3), torch.zeros(3, 4), torch.zeros(4)
    with pytest.raises(ValueError, match="k = 5"):
        K.topk_encode(x, W, b, 5, False)
    with pytest.raises(ValueError, match="shape mismatch"):
        K.topk_encode(torch.zeros(2, 2), W, b, 1, False)
    with pytest.raises(ValueError, match="backend"):
        K.topk_encode(x, W, b, 1, False, backend="cublas")


@pytest.mark.parametrize("arch", ["topk", "abstopk"])
@pytest.mark.parametrize("aux", [False, True])
def test_sae_forward_kernels_equal_dense_path(arch, aux):
    cfg = dict(d_in=13, d_sae=37, architecture=arch, k=5)
    saes = [SAE(SAEConfig(**cfg, use_sparse_kernels=u), seed=4) for u in (True, False)]
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for s in saes:
            s.b_dec.copy_(torch.randn(13, generator=torch.Generator().manual_seed(1)) * 0.3)
            s.b_enc.copy_(torch.randn(37, generator=torch.Generator().manual_seed(2)) * 0.1)
    x = torch.randn(11, 13, generator=g)
    mask = torch.rand(37, generator=g) < 0.4
    outs = []
    for s in saes:
        o = s(x, aux_mask=mask if aux else None, k_aux=7 if aux else 0)
        loss = (o.x_hat - x).pow(2).sum()
        if aux:
            loss = loss + (o.aux_values.pow(2) * (o.aux_indices.float() + 1)).sum()
        loss.backward()
        outs.append((o, {n: p.grad.clone() for n, p in s.named_parameters()}))
    (ok, gk), (od, gd) = outs
    _close(ok.x_hat, od.x_hat)
    _close(ok.z, od.z)
    for n in gd:
        _close(gk[n], gd[n])


# ------------------------------------------------------------------ batch-level kernel
def _run_batch(kernel, p, k, signed, k_aux, x_grad=True, heavy=None, counts=True, **kw):
    """Batch selection through the kernel or the dense reference (``sparsity.batch(abs)topk``
    on u, dense decode), with the shift ``bd`` subtracted before the encoder; a loss using
    the main and aux selections. Returns x̂, the dense code, the aux code, the grads and
    the kernel's (values, indices) (None for the reference). ``counts``: the kernel's decode
    gets the per-row counts (padding skipped), else it runs on the padded [B, m]."""
    leaves = {n: p[n].clone().requires_grad_(n != "x" or x_grad)
              for n in ("x", "W", "b", "Wd", "bd")}
    x, s = leaves["x"], leaves["bd"]
    if heavy is not None:  # one row holding far more than its share of the batch's top entries
        x = x * (1 + 29 * (torch.arange(x.shape[0], device=x.device) == heavy).float()[:, None])
    mask = p["mask"] if k_aux else None
    B, Fn = x.shape[0], p["W"].shape[1]
    if kernel:
        v, i, av, ai, c = K.batch_topk_encode(x, leaves["W"], leaves["b"], k, signed, mask,
                                              k_aux, shift=s, with_counts=True, **kw)
        assert int(c.sum()) == k * B and c.shape == (B,) and v.shape[1] == int(c.max())
        z = torch.zeros(B, Fn, device=x.device).scatter_add(1, i, v)
        out = K.sparse_decode(v, i, leaves["Wd"], leaves["bd"], c if counts else None)
        sel = (v.detach(), i)
    else:
        u = torch.addmm(leaves["b"], x - s, leaves["W"])
        z = (sp.batchabstopk if signed else sp.batchtopk)(u, k)
        out = z @ leaves["Wd"] + leaves["bd"]
        _, _, av, ai = K.topk_encode_reference(x - s, leaves["W"], leaves["b"], 1, signed,
                                               mask, k_aux)
        sel = None
    loss = (out * out).sum() + (out * p["w_aux"]).sum()
    za = None
    if av is not None:
        loss = loss + (K.sparse_decode_reference(av, ai, leaves["Wd"], None) * p["w_aux"]).sum()
        za = torch.zeros(B, Fn, device=x.device).scatter(1, ai, av.detach())
    loss.backward()
    return out.detach(), z.detach(), za, {n: t.grad for n, t in leaves.items()}, sel


BATCH_CASES = [
    # B, D, F, k, k_aux, dead_frac, chunk_rows, heavy row
    (7, 13, 37, 5, 6, 0.5, -1, None),     # odd sizes, one block
    (33, 24, 50, 4, 9, 0.5, 4, None),     # several row blocks, last one partial
    (33, 24, 50, 4, 9, 0.15, None, None),  # whole batch at once; few dead (aux over columns)
    (5, 6, 8, 8, 3, 1.0, 2, None),        # k = d_sae: every entry is a candidate
    (40, 16, 120, 3, 5, 0.5, 16, 5),      # row 5 keeps ≫ 4k entries: the recompute path
    (40, 16, 120, 3, 5, 0.5, None, 0),    # … with the whole batch in one block
    # every latent dead and k_aux ≥ 4k: the candidates come from the AuxK selection
    (12, 8, 512, 2, 24, 1.0, 4, None),
    (40, 16, 256, 3, 16, 1.0, 16, 5),     # … and a heavy row recomputed
]


@pytest.mark.parametrize("counts", [True, False], ids=["csr", "padded"])
@pytest.mark.parametrize("x_grad", [False, True], ids=["x_const", "x_grad"])
@pytest.mark.parametrize("signed", [False, True], ids=["batchtopk", "batchabstopk"])
@pytest.mark.parametrize("aux", [False, True], ids=["noaux", "aux"])
@pytest.mark.parametrize("case", BATCH_CASES)
def test_batch_topk_encode_matches_dense_reference(signed, aux, x_grad, case, counts):
    B, D, Fn, k, k_aux, dead_frac, chunk, heavy = case
    p = _problem(B, D, Fn, seed=B * 1000 + Fn + 1, dead_frac=dead_frac)
    ka = k_aux if aux else 0
    ref = _run_batch(False, p, k, signed, ka, x_grad, heavy)
    got = _run_batch(True, p, k, signed, ka, x_grad, heavy, counts, chunk_rows=chunk)
    _close(got[0], ref[0])
    _close(got[1], ref[1])
    assert torch.equal(got[1] != 0, ref[1] != 0)  # same support
    if aux and int(p["mask"].sum()) > 0:
        _close(got[2], ref[2])
        assert (got[2].ne(0) & ~p["mask"]).sum() == 0
    for name in ("x", "W", "b", "Wd", "bd"):
        if name == "x" and not x_grad:
            assert got[3][name] is None and ref[3][name] is None
        else:
            _close(got[3][name], ref[3][name])
    v, i = got[4]
    counts = (got[1] != 0).sum(1)
    if not signed and k == Fn:  # every entry kept, negatives clipped to 0
        assert v.shape == (B, Fn) and int(counts.sum()) < k * B
        return
    assert int(counts.sum()) == k * B  # exactly k·B kept (no kept value is 0 here)
    # row b's kept entries first, then padding (value 0); m = the widest row
    assert v.shape[1] == int(counts.max())
    valid = torch.arange(v.shape[1]) < counts[:, None]
    assert (v[~valid] == 0).all()
    assert torch.equal(got[1].gather(1, i)[valid], v[valid])  # each value sits at its index
    if heavy is not None:
        assert counts[heavy] > K.BATCH_CANDIDATES * k  # the recompute path really ran


def test_known_answer_batch_selection():
    # W = I, b = 0: u = x. k = 2, B = 2: four entries of the whole batch are kept.
    x = torch.tensor([[1.0, -3.0, 2.0, 0.5], [-1.0, -2.5, -0.5, -4.0]])
    W, b = torch.eye(4), torch.zeros(4)
    # by value: 2, 1, 0.5 (row 0) and −0.5 (row 1, clipped to 0)
    v, i, _, _ = K.batch_topk_encode(x, W, b, 2, signed=False, chunk_rows=1)
    z = torch.zeros(2, 4).scatter_add(1, i, v)
    assert torch.equal(z, torch.tensor([[1.0, 0.0, 2.0, 0.5], [0.0, 0.0, 0.0, 0.0]]))
    assert v.shape == (2, 3) and torch.equal(v[1], torch.zeros(3))
    # by |u|: −4, −3, −2.5, 2 with their signs; two per row here
    v, i, _, _ = K.batch_topk_encode(x, W, b, 2, signed=True)
    z = torch.zeros(2, 4).scatter_add(1, i, v)
    assert torch.equal(z, torch.tensor([[0.0, -3.0, 2.0, 0.0], [0.0, -2.5, 0.0, -4.0]]))
    assert v.shape == (2, 2)


def test_batch_padding_gets_no_gradient():
    """A signed batch selection where one row keeps everything and the other nothing."""
    x = torch.tensor([[5.0, -6.0, 7.0], [0.1, -0.2, 0.3]])
    W = torch.eye(3).requires_grad_(True)
    b = torch.zeros(3, requires_grad=True)
    v, i, _, _ = K.batch_topk_encode(x, W, b, 1, signed=True)  # k·B = 2 of 6 entries
    assert v.shape == (2, 2) and torch.equal(v[1], torch.zeros(2))
    (v * 10.0).sum().backward()  # the padding's ∂values is 10 as well but must be dropped
    assert torch.equal(b.grad, torch.tensor([0.0, 10.0, 10.0]))
    # ∂u = 10 at (0, 1) and (0, 2) only; ∂W_enc = xᵀ·∂u
    assert torch.equal(W.grad, torch.tensor([[0.0, 50.0, 50.0], [0.0, -60.0, -60.0],
                                             [0.0, 70.0, 70.0]]))


def _padded_selection(counts, Fn, gen):
    """A padded selection as :func:`K.batch_topk_encode` returns it: row b's first counts[b]
    entries real (distinct latents, random weights), the rest value 0 at ``(b·m + j) mod F``."""
    B, m = len(counts), max(counts)
    idx = (torch.arange(B * m) % Fn).view(B, m)
    w = torch.zeros(B, m)
    for b, c in enumerate(counts):
        idx[b, :c] = torch.randperm(Fn, generator=gen)[:c]
        w[b, :c] = torch.randn(c, generator=gen)
    return idx, w, torch.tensor(counts)


def _products(idx, w, counts, A, X, Wd, **sddmm_kw):
    """Every sparse product of the kernels on one (fresh) selection."""
    sel = K.Selection(idx, Wd.shape[0], counts)
    return {"spmm": K.spmm(sel, w, Wd),
            "spmm_t": K.spmm_t(sel, w, X),
            "colsum": K.column_sums(sel, w, segment=False),
            "colsum_seg": K.column_sums(sel, w, segment=True),
            "sddmm": K.sddmm(sel, A, Wd, **sddmm_kw)}


@pytest.mark.parametrize("sddmm_kw", [{}, {"csc": False}, {"sampled": False}],
                         ids=["csc", "csr", "gather"])
def test_padding_free_products_hand_case(sddmm_kw):
    # S [3, 5]: row 0 = 1·e0 + 2·e3 + 3·e4, row 1 = 4·e2, row 2 empty; m = 3, padded
    idx = torch.tensor([[0, 3, 4], [2, 4, 0], [1, 2, 3]])
    w = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    counts = torch.tensor([3, 1, 0])
    Wd = torch.arange(10.0).view(5, 2)       # row j = (2j, 2j + 1)
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    A = torch.tensor([[1.0, 1.0], [1.0, -1.0], [2.0, 0.0]])
    got = _products(idx, w, counts, A, X, Wd, **sddmm_kw)
    assert torch.equal(got["spmm"], torch.tensor([[36.0, 42.0], [16.0, 20.0], [0.0, 0.0]]))
    assert torch.equal(got["spmm_t"], torch.tensor(
        [[1.0, 0.0], [0.0, 0.0], [0.0, 4.0], [2.0, 0.0], [3.0, 0.0]]))
    expect_cs = torch.tensor([1.0, 0.0, 4.0, 2.0, 3.0])
    assert torch.equal(got["colsum"], expect_cs) and torch.equal(got["colsum_seg"], expect_cs)
    # ⟨A[b], Wd[idx]⟩ on the real entries, 0 on the padding
    assert torch.equal(got["sddmm"], torch.tensor(
        [[1.0, 13.0, 17.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    # the padded path (no counts) gives the same on the real entries
    ref = _products(idx, w, None, A, X, Wd, **sddmm_kw)
    valid = torch.arange(3) < counts[:, None]
    for name in got:
        if name == "sddmm":
            assert torch.equal(got[name][valid], ref[name][valid])
        else:
            assert torch.equal(got[name], ref[name]), name


@pytest.mark.parametrize("sddmm_kw", [{}, {"csc": False}, {"sampled": False}],
                         ids=["csc", "csr", "gather"])
def test_padding_free_products_equal_padded_random(sddmm_kw):
    gen = torch.Generator().manual_seed(11)
    B, D, Fn = 23, 7, 29
    counts = [int(c) for c in torch.randint(0, 9, (B,), generator=gen)]
    counts[4] = 27  # one row far wider than the rest (m = 27)
    idx, w, c = _padded_selection(counts, Fn, gen)
    A, X = torch.randn(B, D, generator=gen), torch.randn(B, D, generator=gen)
    Wd = torch.randn(Fn, D, generator=gen)
    got = _products(idx, w, c, A, X, Wd, **sddmm_kw)
    ref = _products(idx, w, None, A, X, Wd, **sddmm_kw)
    valid = torch.arange(idx.shape[1]) < c[:, None]
    for name in got:
        if name == "sddmm":
            assert torch.equal(got[name][valid], ref[name][valid])
            assert (got[name][~valid] == 0).all()
        else:
            assert torch.equal(got[name], ref[name]), name
    # and through the autograd op: x̂ and every gradient, padded vs counts
    res = []
    for cc in (None, c):
        vv, WW, bb = (t.clone().requires_grad_(True) for t in (w, Wd, A[0]))
        out = K.sparse_decode(vv, idx, WW, bb, cc)
        (out * X).sum().backward()
        res.append((out.detach(), vv.grad * valid, WW.grad, bb.grad))
    for a, b in zip(*res, strict=True):
        assert torch.equal(a, b)


def test_sae_forward_passes_batch_counts():
    """SAE.forward gives the batch selection's counts to the decode (and to SAEOutput)."""
    g = torch.Generator().manual_seed(9)
    X = torch.randn(24, 10, generator=g)
    X[3] *= 10  # one wide row: padding in every other row
    sae = SAE(SAEConfig(d_in=10, d_sae=30, architecture="batchabstopk", k=3,
                        use_sparse_kernels=True), seed=1).train()
    out = sae(X, dense_code=True)
    assert out.counts is not None and int(out.counts.sum()) == 3 * 24
    assert out.values.shape[1] == int(out.counts.max()) > 3
    padded = K.sparse_decode(out.values, out.indices, sae.W_dec, sae.b_dec)
    assert torch.equal(out.x_hat_s, padded)
    _close(out.x_hat_s, out.z @ sae.W_dec + sae.b_dec)
    assert SAE(SAEConfig(d_in=10, d_sae=30, architecture="abstopk", k=3,
                         use_sparse_kernels=True), seed=1)(X).counts is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("signed", [False, True])
def test_cuda_batch_matches_reference(signed):
    p = _problem(40, 16, 120, seed=12, device="cuda")
    ref = _run_batch(False, p, 3, signed, 5, heavy=5)
    got = _run_batch(True, p, 3, signed, 5, heavy=5)
    _close(got[0], ref[0])
    assert torch.equal(got[1] != 0, ref[1] != 0)
    for name in ("x", "W", "b", "Wd", "bd"):
        _close(got[3][name], ref[3][name])
