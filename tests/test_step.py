"""The training step: it learns, keeps decoder rows unit norm, matches the dense path, AuxK."""

from __future__ import annotations

import pytest
import torch

from abstopk import kernels as K
from abstopk.sae import SAE, SAEConfig, remove_parallel_grad
from abstopk.train.step import make_optimizer, train_step


def _sparse_data(n, d, n_feat, k, seed):
    """x = Σ (signed) coefficients · unit dictionary atoms, k atoms per row, small noise."""
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_feat, d, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    idx = torch.rand(n, n_feat, generator=g).argsort(1)[:, :k]
    coef = torch.randn(n, k, generator=g).sign() * (1 + torch.rand(n, k, generator=g))
    z = torch.zeros(n, n_feat).scatter(1, idx, coef)
    return z @ D + 0.01 * torch.randn(n, d, generator=g)


@pytest.mark.parametrize("arch", ["topk", "abstopk"])
def test_loss_decreases_and_decoder_rows_stay_unit_norm(arch):
    torch.manual_seed(0)
    X = _sparse_data(2048, 16, 24, 3, seed=1)
    sae = SAE(SAEConfig(d_in=16, d_sae=48, architecture=arch, k=4), seed=2)
    assert sae._use_kernels()
    opt = make_optimizer(sae, lr=3e-3)
    dead = torch.zeros(48, dtype=torch.bool)
    dead[::3] = True
    losses = []
    for step in range(150):
        x = X[(step % 16) * 128:(step % 16 + 1) * 128]
        r = train_step(sae, opt, x, dead_mask=dead, k_aux=8)
        losses.append(float(r.mse))
        norms = sae.W_dec.detach().norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    assert float(r.aux_loss) > 0
    assert float(r.l0) == pytest.approx(4.0, abs=0.5)


@pytest.mark.parametrize("arch", ["topk", "abstopk", "batchtopk", "batchabstopk"])
def test_kernel_step_equals_dense_step(arch):
    """Three AuxK steps on the sparse kernels equal the dense path: weights, losses, stats."""
    X = _sparse_data(96, 12, 20, 3, seed=5)
    X[7] *= 8  # a token keeping many latents under the batch rule
    saes = [SAE(SAEConfig(d_in=12, d_sae=40, architecture=arch, k=5, use_sparse_kernels=u),
                seed=3) for u in (True, False)]
    opts = [make_optimizer(s, lr=1e-3) for s in saes]
    dead = torch.zeros(40, dtype=torch.bool)
    dead[5:30] = True
    results = []
    for s, o in zip(saes, opts, strict=True):
        rs = [train_step(s, o, X[i * 32:(i + 1) * 32], dead_mask=dead, k_aux=6) for i in range(3)]
        results.append(rs)
    assert saes[0]._use_kernels() and not saes[1]._use_kernels()
    for (nk, pk), (nd, pd) in zip(saes[0].named_parameters(), saes[1].named_parameters(),
                                  strict=True):
        assert nk == nd
        err = (pk - pd).detach().abs().max()
        assert err < 1e-5 * max(1.0, float(pd.detach().abs().max())), (nk, float(err))
    for rk, rd in zip(results[0], results[1], strict=True):
        assert torch.allclose(rk.loss, rd.loss, rtol=1e-5)
        assert torch.allclose(rk.aux_loss, rd.aux_loss, rtol=1e-5)
        assert torch.equal(rk.fired, rd.fired)
        assert torch.equal(rk.l0, rd.l0)
    if saes[0].op.batch_level:  # the EMA inference threshold, then eval mode's threshold rule
        assert not torch.isnan(saes[0].threshold).any()
        assert torch.allclose(saes[0].threshold, saes[1].threshold, rtol=1e-5)
        assert not saes[0].eval()._use_kernels()
        assert torch.allclose(saes[0].eval()(X).x_hat, saes[1].eval()(X).x_hat, rtol=1e-5,
                              atol=1e-5)


@pytest.mark.parametrize("arch", ["topk", "abstopk"])
def test_auxk_moves_dead_latents(arch):
    x = torch.randn(64, 10, generator=torch.Generator().manual_seed(0))
    moved = {}
    for k_aux in (0, 4):
        sae = SAE(SAEConfig(d_in=10, d_sae=30, architecture=arch, k=3), seed=1)
        with torch.no_grad():
            sae.W_enc[:, :6] *= 1e-3   # latents 0..5 never win the top-k (u ≈ ±1e-3 …)
            sae.b_enc[6:] = 4.0          # … against u ≈ 4 for the others
        before = sae.W_enc.detach().clone()
        opt = make_optimizer(sae, lr=1e-2)
        dead = torch.zeros(30, dtype=torch.bool)
        dead[:6] = True
        r = train_step(sae, opt, x, dead_mask=dead, k_aux=k_aux)
        assert not r.fired[:6].any()
        moved[k_aux] = (sae.W_enc.detach() - before)[:, :6].abs().sum().item()
    assert moved[0] == 0.0  # no AuxK: dead latents get exactly no gradient
    assert moved[4] > 1e-3  # AuxK: they do


def test_remove_parallel_grad():
    g = torch.Generator().manual_seed(0)
    W = torch.nn.Parameter(torch.randn(7, 5, generator=g) * 3)
    G = torch.randn(7, 5, generator=g)
    W.grad = G.clone()
    remove_parallel_grad(W)
    Wd = W.detach()
    expect = G - ((G * Wd).sum(1, keepdim=True) / (Wd * Wd).sum(1, keepdim=True)) * Wd
    assert torch.allclose(W.grad, expect, atol=1e-6)
    assert (W.grad * Wd).sum(1).abs().max() < 1e-5


def test_step_result_fired_and_l0():
    sae = SAE(SAEConfig(d_in=6, d_sae=9, architecture="topk", k=2), seed=0)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = sae(x)
    fired_expect = out.z.ne(0).any(0)
    l0_expect = out.z.ne(0).sum(1).float().mean()
    r = train_step(sae, make_optimizer(sae, lr=1e-3), x)
    assert torch.equal(r.fired, fired_expect)
    assert float(r.l0) == pytest.approx(float(l0_expect))


def test_threshold_has_its_own_learning_rate():
    """θ's Adam group runs at threshold_lr_factor·lr, and set_lr keeps the ratio."""
    from abstopk.train.step import set_lr

    sae = SAE(SAEConfig(d_in=4, d_sae=6, architecture="jumprelu"), seed=0)
    opt = make_optimizer(sae, lr=1e-3, threshold_lr_factor=30.0)
    (theta_group,) = [g for g in opt.param_groups if any(p is sae.threshold for p in g["params"])]
    assert theta_group["lr"] == pytest.approx(3e-2)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(sae.parameters()))
    set_lr(opt, 2e-4)
    assert theta_group["lr"] == pytest.approx(6e-3)
    assert [g["lr"] for g in opt.param_groups if g is not theta_group] == [pytest.approx(2e-4)]
    # one Adam step moves θ by ≈ its group's lr (Adam's first step is lr·sign(g))
    before = sae.threshold.detach().clone()
    sae.threshold.grad = torch.ones_like(sae.threshold)
    opt.step()
    assert torch.allclose(before - sae.threshold.detach(), torch.full((6,), 6e-3), rtol=1e-3)


@pytest.mark.parametrize("arch", ["topk", "abstopk", "batchabstopk", "jumprelu"])
@pytest.mark.parametrize("dense_path", ["recompute", "columns"])
def test_dense_aux_over_few_dead_equals_fused_aux(arch, dense_path, monkeypatch):
    """AuxK computed densely over the dead columns (recomputed, or GEMMs over the main pass's
    columns) = AuxK from the fused encoder/decoder's sparse products."""
    from abstopk.train import step as step_mod

    X = _sparse_data(96, 12, 20, 3, seed=8)
    dead = torch.zeros(40, dtype=torch.bool)
    dead[[1, 4, 9, 17, 22, 23, 31, 38]] = True  # 8 dead, k_aux 5: ka = 5
    k = None if arch == "jumprelu" else 5
    runs = []
    for path, aux_dense in (("fused", False), (dense_path, None)):
        monkeypatch.setattr(step_mod, "AUX_PATH", path)
        # the fused run keeps the encoder's AuxK backward sparse too
        monkeypatch.setattr(K.aux_dense, "CPU_DEAD_PER_KA", 100.0 if aux_dense is None else 0.0)
        sae = SAE(SAEConfig(d_in=12, d_sae=40, architecture=arch, k=k), seed=4)
        opt = make_optimizer(sae, lr=1e-3)
        res = [train_step(sae, opt, X[i * 32:(i + 1) * 32], penalty_coeff=1e-3,
                          dead_mask=dead, k_aux=5) for i in range(3)]
        runs.append((sae, res))
    (fused, rf), (dense, rd) = runs
    for a, b in zip(rf, rd, strict=True):
        assert float(a.aux_loss) > 0
        assert torch.allclose(a.aux_loss, b.aux_loss, rtol=1e-5)
        assert torch.allclose(a.loss, b.loss, rtol=1e-5)
    for (n, p), (_, q) in zip(fused.named_parameters(), dense.named_parameters(), strict=True):
        err = (p - q).detach().abs().max()
        assert err <= 1e-5 * max(1.0, float(q.detach().abs().max())), (n, float(err))
    # the dead latents' encoder columns and decoder rows did get the aux gradient
    plain = SAE(SAEConfig(d_in=12, d_sae=40, architecture=arch, k=k), seed=4)
    opt = make_optimizer(plain, lr=1e-3)
    for i in range(3):
        train_step(plain, opt, X[i * 32:(i + 1) * 32], penalty_coeff=1e-3)
    assert not torch.allclose(plain.W_dec[dead], dense.W_dec[dead])
