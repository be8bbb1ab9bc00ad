"""The streaming pass: every row of a cache through the SAE once, every accumulator fed.

Per batch of rows x [B, d_in]: u = pre-activations, z = the SAE's code (eval mode; firing is
z ≠ 0). The *positive side* of latent i is its rows with z_i > 0, ranked by z_i. The
*negative side* is its rows with v_i < 0, ranked by |v_i|, where v = z for a signed SAE
(AbsTopK, AbsJumpReLU, batch AbsTopK) and v = u, the pre-activation, for a non-negative one
(TopK, ReLU, JumpReLU, BatchTopK): ``negative_side`` is then ``"pre_activation"`` and those
rows did not fire. Collected in one pass (see :mod:`.stream`): firing counts per sign, top-N
of each side, a uniform reservoir of each side (for the quantile samples), the signed
histogram of the non-zero z.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from ...data.cache import ActivationCache
from ...sae import SAE
from .stream import NEG_INF, SignedHistogram, TopN

__all__ = ["LatentStats", "collect", "collect_batches", "negative_side"]


def negative_side(sae: SAE) -> str:
    """``"activation"`` for a signed SAE, ``"pre_activation"`` for a non-negative one."""
    return "activation" if sae.op.signed else "pre_activation"


@dataclass
class LatentStats:
    """What the pass collected. ``count_*`` [F] int64; the buffers are :class:`TopN`."""

    rows_read: int
    negative_side: str
    count_pos: torch.Tensor
    count_neg: torch.Tensor
    top_pos: TopN
    top_neg: TopN
    sample_pos: TopN
    sample_neg: TopN
    hist: SignedHistogram
    seconds: float

    @property
    def freq_pos(self) -> torch.Tensor:
        return self.count_pos.double() / max(self.rows_read, 1)

    @property
    def freq_neg(self) -> torch.Tensor:
        return self.count_neg.double() / max(self.rows_read, 1)


def _batches(cache: ActivationCache, batch_rows: int, max_rows: int | None):
    """``(start_row, x [B, d_in] float32)`` over the cache in order."""
    start, limit = 0, cache.total_rows if max_rows is None else min(max_rows, cache.total_rows)
    for i, s in enumerate(cache.shards):
        if start >= limit:
            return
        acts = cache.open_shard(i)["activations"]
        n = min(int(s["rows"]), limit - start)
        for a in range(0, n, batch_rows):
            b = min(n, a + batch_rows)
            yield start + a, acts.rows(a, b)
        start += n


def collect(sae: SAE, cache: ActivationCache, *, max_rows: int | None = None,
            batch_rows: int = 4096, **kw) -> LatentStats:
    """One pass over ``cache`` (its first ``max_rows`` rows) → :class:`LatentStats`; keyword
    arguments as :func:`collect_batches`."""
    if cache.d_in != sae.cfg.d_in:
        raise ValueError(f"cache rows have d_in={cache.d_in}, the SAE expects {sae.cfg.d_in}")
    total = cache.total_rows if max_rows is None else min(max_rows, cache.total_rows)
    return collect_batches(sae, _batches(cache, batch_rows, max_rows), total, **kw)


@torch.no_grad()
def collect_batches(sae: SAE, batches: Iterable[tuple[int, torch.Tensor]], total: int, *,
                    top_n: int = 20, sample_n: int = 64, half_bins: int = 32, seed: int = 0,
                    progress: Callable[[int, int], None] | None = None) -> LatentStats:
    """Feed ``(start_row, x [B, d_in])`` batches (rows in order) through ``sae``.

    ``sample_n``: reservoir size per latent and side; ``seed`` seeds the reservoir priorities.
    ``progress(rows_done, total)`` is called after each batch.
    """
    sae.eval()
    F = sae.cfg.d_sae
    signed = sae.op.signed
    gen = torch.Generator().manual_seed(seed)
    top_pos, top_neg = TopN(F, top_n), TopN(F, top_n)
    smp_pos, smp_neg = TopN(F, sample_n), TopN(F, sample_n)
    hist = SignedHistogram(F, half_bins)
    cpos = torch.zeros(F, dtype=torch.int64)
    cneg = torch.zeros(F, dtype=torch.int64)
    simple = sae.cfg.n_steps == 1
    t0, done = time.perf_counter(), 0
    for start, x in batches:
        x = x.to(sae.dtype)
        if simple:
            x_s, _ = sae.normalize(x)
            u = sae.pre_acts(x_s)
            z = sae.activation(u).float()
        else:
            out = sae.forward(x)
            u, z = out.pre_acts, out.z.float()
        u = u.float()
        B = x.shape[0]
        rows = torch.arange(start, start + B)
        # the code is sparse: every statistic of z works on its non-zero entries
        b_idx, f_idx = torch.nonzero(z, as_tuple=True)
        val = z[b_idx, f_idx]
        r_e = rows[b_idx]
        pos, neg = val > 0, val < 0
        cpos += torch.bincount(f_idx[pos], minlength=F)
        cneg += torch.bincount(f_idx[neg], minlength=F)
        pr = -torch.rand(B, generator=gen)                       # one priority per row
        top_pos.update_entries(f_idx[pos], val[pos], val[pos], r_e[pos])
        smp_pos.update_entries(f_idx[pos], pr[b_idx[pos]], val[pos], r_e[pos])
        if signed:
            top_neg.update_entries(f_idx[neg], -val[neg], val[neg], r_e[neg])
            smp_neg.update_entries(f_idx[neg], pr[b_idx[neg]], val[neg], r_e[neg])
        else:                                                    # dense: negative pre-activations
            on_neg = u < 0
            top_neg.update(torch.where(on_neg, -u, NEG_INF), u, rows)
            smp_neg.update(torch.where(on_neg, pr[:, None], NEG_INF), u, rows)
        hist.update_entries(f_idx, val)
        done += x.shape[0]
        if progress is not None:
            progress(done, total)
    return LatentStats(done, negative_side(sae), cpos, cneg, top_pos, top_neg, smp_pos, smp_neg,
                       hist, time.perf_counter() - t0)
