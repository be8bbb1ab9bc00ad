"""Latent-sharded AbsTopK/TopK (gloo, 2 processes): forward and gradients equal the unsharded
SAE with the same weights; ties at the k-th |u| go to the lower latent index on every split."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from abstopk.kernels.sharded_select import merge_candidates, topk_lowest_index
from abstopk.sae import SAE, SAEConfig
from abstopk.sae.sharded import LatentShardedSAE, latent_bounds

D, F, K, B = 16, 51, 7, 32   # 51 latents: ranks hold 26 and 25


def _sae(arch: str, ties: bool) -> SAE:
    sae = SAE(SAEConfig(d_in=D, d_sae=F, architecture=arch, k=K), seed=1)
    with torch.no_grad():
        g = torch.Generator().manual_seed(2)
        sae.W_enc.copy_(torch.randn(D, F, generator=g) / 4)
        sae.b_enc.copy_(torch.randn(F, generator=g) / 10)
        sae.b_dec.copy_(torch.randn(D, generator=g) / 10)
        if ties:   # latents j, j+17, j+34 share one |u| (j+34 with the opposite sign)
            for j in range(17):
                sae.W_enc[:, j + 17] = sae.W_enc[:, j]
                sae.b_enc[j + 17] = sae.b_enc[j]
                sae.W_enc[:, j + 34] = -sae.W_enc[:, j]
                sae.b_enc[j + 34] = -sae.b_enc[j]
    return sae


def _x() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)


def _loss(x_hat, x, r):
    return ((x_hat - x) ** 2).sum() + (x_hat * r).sum()


CASES = [("abstopk", False), ("topk", False), ("abstopk", True), ("topk", True)]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from abstopk.kernels import encoder_gemm

    torch.set_num_threads(1)
    encoder_gemm.CPU_CHUNK_ROWS = 5   # row blocks of 5 (the last one short): B = 32
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    res = {}
    for arch, ties in CASES:
        sh = LatentShardedSAE.from_sae(_sae(arch, ties), rank, world)
        x, r = _x()
        x.requires_grad_(True)
        o = sh(x)
        _loss(o.x_hat, x, r).backward()
        tag = f"{arch}_{int(ties)}"
        res.update({f"{tag}_x_hat": o.x_hat.detach(), f"{tag}_idx": o.indices,
                    f"{tag}_gx": x.grad, f"{tag}_counts": o.counts,
                    **{f"{tag}_g{n}": p.grad for n, p in sh.named_parameters()}})
    torch.save(res, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def _reference(arch: str, ties: bool):
    """The unsharded answer by brute force: dense u, latents ordered by a stable sort of
    −key (key = |u| or u), the first K kept; plain autograd."""
    sae = _sae(arch, ties)
    x, r = _x()
    x.requires_grad_(True)
    u = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    key = u.abs() if arch == "abstopk" else u
    idx = torch.sort(-key.detach(), dim=1, stable=True).indices[:, :K]
    vals = u.gather(1, idx)
    if arch == "topk":
        vals = torch.relu(vals)
    z = torch.zeros_like(u).scatter(1, idx, vals)
    x_hat = z @ sae.W_dec + sae.b_dec
    _loss(x_hat, x, r).backward()
    return sae, x, x_hat.detach(), idx


def _close(a, b, tol=1e-6):
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("arch,ties", CASES)
def test_sharded_equals_unsharded(ranks, arch, ties):
    tag = f"{arch}_{int(ties)}"
    sae, x, x_hat, idx = _reference(arch, ties)
    for res in ranks:   # every rank holds the full reconstruction and the same selection
        _close(res[f"{tag}_x_hat"], x_hat)
        assert torch.equal(res[f"{tag}_idx"].sort(1).values, idx.sort(1).values)
        _close(res[f"{tag}_gx"], x.grad)
        _close(res[f"{tag}_gb_dec"], sae.b_dec.grad)
    for r, res in enumerate(ranks):
        lo, hi = latent_bounds(F, 2, r)
        _close(res[f"{tag}_gW_enc"], sae.W_enc.grad[:, lo:hi])
        _close(res[f"{tag}_gb_enc"], sae.b_enc.grad[lo:hi])
        _close(res[f"{tag}_gW_dec"], sae.W_dec.grad[lo:hi])
    assert torch.equal(ranks[0][f"{tag}_counts"] + ranks[1][f"{tag}_counts"],
                       torch.full((B,), K))
    if ties:   # the rule mattered: rows whose k-th and (k+1)-th keys are equal
        u = (x.detach() - sae.b_dec.detach()) @ sae.W_enc.detach() + sae.b_enc.detach()
        key = (u.abs() if arch == "abstopk" else u).sort(1, descending=True).values
        tied = key[:, K - 1] == key[:, K]
        assert bool(tied.all()) if arch == "abstopk" else int(tied.sum()) >= B // 4


@pytest.mark.parametrize("arch", ["abstopk", "topk"])
def test_without_ties_equals_the_sae_module(ranks, arch):
    """Generic weights (no ties): the sharded SAE equals the project's SAE (fused kernels)."""
    sae = _sae(arch, False)
    x, r = _x()
    x.requires_grad_(True)
    out = sae(x)
    _loss(out.x_hat, x, r).backward()
    tag = f"{arch}_0"
    _close(ranks[0][f"{tag}_x_hat"], out.x_hat.detach())
    assert torch.equal(ranks[1][f"{tag}_idx"].sort(1).values, out.indices.sort(1).values)
    _close(ranks[1][f"{tag}_gx"], x.grad)
    lo, hi = latent_bounds(F, 2, 1)
    _close(ranks[1][f"{tag}_gW_enc"], sae.W_enc.grad[:, lo:hi])
    _close(ranks[1][f"{tag}_gW_dec"], sae.W_dec.grad[lo:hi])


def test_one_process_is_the_whole_sae():
    sae = _sae("abstopk", False)
    x, _ = _x()
    sh = LatentShardedSAE.from_sae(sae, 0, 1)
    _close(sh(x).x_hat.detach(), sae(x).x_hat.detach())


def test_tie_rule_known_answer():
    key = torch.tensor([[1.0, 3.0, 2.0, 3.0, 2.0, 2.0]])
    # k = 4: both 3s, then the first two 2s by index (2 and 4), not 5
    assert topk_lowest_index(key, 4).tolist() == [[1, 2, 3, 4]]
    keys = torch.tensor([[2.0, 5.0, 2.0, 2.0]])
    index = torch.tensor([[9, 4, 3, 7]])
    # 5 (index 4) first, then the 2s by index: 3, 7, 9
    assert merge_candidates(keys, index, 3).tolist() == [[1, 2, 3]]


def test_bounds_cover_every_latent_once():
    for f, w in [(51, 2), (7, 3), (8, 8)]:
        b = [latent_bounds(f, w, r) for r in range(w)]
        assert b[0][0] == 0 and b[-1][1] == f
        assert all(b[i][1] == b[i + 1][0] for i in range(w - 1))
        assert max(h - lo for lo, h in b) - min(h - lo for lo, h in b) <= 1
