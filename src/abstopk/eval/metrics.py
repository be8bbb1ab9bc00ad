"""Streaming reconstruction and sparsity metrics of an SAE on activations ``x`` [N, d_in].

Everything is accumulated batch by batch (float64 sums), so memory does not grow with N.
With ``x̂`` the SAE's reconstruction and ``z`` its code (``[N, d_sae]``)::

    mse                 = Σ_n ‖x_n − x̂_n‖² / (N · d_in)                (mean over elements)
    nmse                = (1/N') Σ_n ‖x_n − x̂_n‖² / ‖x_n‖²            (tokens with ‖x_n‖ > 0)
    fvu                 = Σ_n ‖x_n − x̂_n‖² / Σ_n ‖x_n − x̄‖²            (x̄ = mean over the eval set)
    explained_variance  = 1 − fvu
    cosine              = (1/N) Σ_n ⟨x_n, x̂_n⟩ / (‖x_n‖ ‖x̂_n‖)        (0 where a norm is 0)
    l0                  = (1/N) Σ_n #{i : z_ni ≠ 0}
    fire_count_i        = #{n : z_ni ≠ 0},   neg_count_i = #{n : z_ni < 0}
    dead_fraction       = #{i : fire_count_i = 0} / d_sae
    dense_fraction      = #{i : fire_count_i / N > dense_threshold} / d_sae
    negative_fraction_i = neg_count_i / fire_count_i                 (per alive latent)
    n_bidirectional     = #{i : neg_count_i > 0 and fire_count_i − neg_count_i > 0}

Σ‖x − x̄‖² is computed as Σ‖x‖² − N‖x̄‖² from float64 sums.

Sources of activations (:func:`iter_activation_batches`): a tensor ``[N, d_in]``, an
activation-cache folder (``CACHE_FORMAT.md``), a ``.safetensors`` file holding an
``activations`` matrix, a ``.npy`` matrix, or any iterable of ``[b, d_in]`` tensors. From a
cache with per-row positions, ``min_position`` p > 0 leaves out the rows at context positions
below p (1: each context's first token, the attention sink); N then counts the rows kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "MetricAccumulator",
    "ReconstructionMetrics",
    "evaluate_reconstruction",
    "iter_activation_batches",
    "sae_reconstruct",
]


@dataclass
class ReconstructionMetrics:
    """Result of :func:`evaluate_reconstruction`.

    ``summary``: the scalar metrics (JSON-ready floats/ints, see the module docstring).
    ``fire_count`` / ``neg_count``: [d_sae] int64 per-latent counts of ``z != 0`` / ``z < 0``.
    """

    summary: dict[str, Any]
    fire_count: Tensor
    neg_count: Tensor

    @property
    def negative_fraction(self) -> Tensor:
        """[d_sae] fraction of each latent's firings that are negative (NaN for dead latents)."""
        fc = self.fire_count.to(torch.float64)
        return torch.where(fc > 0, self.neg_count.to(torch.float64) / fc.clamp_min(1),
                           torch.full_like(fc, float("nan")))


class MetricAccumulator:
    """Accumulates the sums behind the metrics over batches of (x, x̂, z).

    Args:
        d_in, d_sae: widths.
        dense_threshold: a latent is "dense" if it fires on more than this fraction of tokens.
    """

    def __init__(self, d_in: int, d_sae: int, dense_threshold: float = 0.1) -> None:
        if not 0 <= dense_threshold <= 1:
            raise ValueError(f"dense_threshold must be in [0, 1], got {dense_threshold}")
        self.d_in, self.d_sae = d_in, d_sae
        self.dense_threshold = dense_threshold
        self.n = 0
        self.n_nonzero_x = 0
        self.sse = 0.0              # Σ‖x − x̂‖²
        self.sum_sq = 0.0           # Σ‖x‖²
        self.sum_x = torch.zeros(d_in, dtype=torch.float64)
        self.sum_nmse = 0.0         # Σ ‖x − x̂‖²/‖x‖² over tokens with ‖x‖ > 0
        self.sum_cos = 0.0
        self.sum_l0 = 0
        self.fire_count = torch.zeros(d_sae, dtype=torch.int64)
        self.neg_count = torch.zeros(d_sae, dtype=torch.int64)

    @torch.no_grad()
    def update(self, x: Tensor, x_hat: Tensor, z: Tensor) -> None:
        """Add a batch: x, x̂ [b, d_in]; z [b, d_sae] (dense code)."""
        if x.shape != x_hat.shape or x.dim() != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} must be [b, {self.d_in}]")
        if z.shape != (x.shape[0], self.d_sae):
            raise ValueError(f"z must be [{x.shape[0]}, {self.d_sae}], got {tuple(z.shape)}")
        x = x.to(torch.float64)
        x_hat = x_hat.to(torch.float64)
        err = (x - x_hat).pow(2).sum(-1)            # [b]
        sq = x.pow(2).sum(-1)                       # [b]
        nz = sq > 0
        self.n += x.shape[0]
        self.n_nonzero_x += int(nz.sum())
        self.sse += float(err.sum())
        self.sum_sq += float(sq.sum())
        self.sum_x += x.sum(0).cpu()
        self.sum_nmse += float((err[nz] / sq[nz]).sum())
        denom = sq.sqrt() * x_hat.pow(2).sum(-1).sqrt()
        cos = torch.where(denom > 0, (x * x_hat).sum(-1) / denom.clamp_min(1e-300),
                          torch.zeros_like(denom))
        self.sum_cos += float(cos.sum())
        fired = z != 0
        self.sum_l0 += int(fired.sum())
        self.fire_count += fired.sum(0).cpu()
        self.neg_count += (z < 0).sum(0).cpu()

    def result(self) -> ReconstructionMetrics:
        """The metrics over everything seen so far (``ValueError`` if nothing was seen)."""
        if self.n == 0:
            raise ValueError("no activations were evaluated")
        n = self.n
        var = self.sum_sq - float(self.sum_x.pow(2).sum()) / n   # Σ‖x − x̄‖²
        fvu = self.sse / var if var > 0 else float("nan")
        fc, ncnt = self.fire_count, self.neg_count
        alive = fc > 0
        pos = fc - ncnt
        bidir = (ncnt > 0) & (pos > 0)
        neg_frac = ncnt[alive].to(torch.float64) / fc[alive].to(torch.float64)
        total_fire = int(fc.sum())
        summary: dict[str, Any] = {
            "n_tokens": n,
            "mse": self.sse / (n * self.d_in),
            "sse_per_token": self.sse / n,
            "nmse": self.sum_nmse / self.n_nonzero_x if self.n_nonzero_x else float("nan"),
            "fvu": fvu,
            "explained_variance": 1.0 - fvu if not math.isnan(fvu) else float("nan"),
            "cosine": self.sum_cos / n,
            "l0": self.sum_l0 / n,
            "dead_fraction": float((~alive).sum()) / self.d_sae,
            "dense_fraction": float((fc.to(torch.float64) / n > self.dense_threshold).sum())
            / self.d_sae,
            "dense_threshold": self.dense_threshold,
            "negative_firing_fraction": float(ncnt.sum()) / total_fire if total_fire else 0.0,
            "mean_latent_negative_fraction": float(neg_frac.mean()) if neg_frac.numel() else 0.0,
            "n_bidirectional": int(bidir.sum()),
            "bidirectional_fraction": float(bidir.sum()) / self.d_sae,
            "n_negative_only": int(((ncnt > 0) & (pos == 0)).sum()),
            "n_alive": int(alive.sum()),
            "d_sae": self.d_sae,
        }
        return ReconstructionMetrics(summary, fc.clone(), ncnt.clone())


# --------------------------------------------------------------------------- sources
def _open_cache(path: Path, min_position: int = 0):
    """Yield (memory-mapped ``activations``, memory-mapped ``positions`` or None when
    ``min_position`` is 0) of each shard of a cache folder, in order."""
    from ..data.cache import ActivationCache
    from ..data.loader import require_positions

    cache = ActivationCache(path)
    require_positions(cache, min_position)
    for i in range(len(cache.shards)):
        shard = cache.open_shard(i)
        yield shard["activations"], shard["positions"] if min_position else None


def iter_activation_batches(
    source: Any, batch_size: int = 4096, max_rows: int | None = None, *,
    min_position: int = 0,
) -> Iterator[Tensor]:
    """Yield float32 batches [b, d_in] (b ≤ batch_size) from ``source``, at most ``max_rows``.

    ``source``: a Tensor [N, d_in]; a path to a cache folder (with ``manifest.json``), a
    ``.safetensors`` file with an ``activations`` tensor, or a ``.npy`` matrix; or an
    iterable of tensors [b, d_in] (yielded as given, the last one trimmed
    to ``max_rows``). Files are read by memory map, a batch at a time.

    ``min_position`` > 0: leave out a cache's rows at context positions below it (``max_rows``
    counts the rows kept); only a cache with positions has them
    (:class:`~abstopk.errors.CacheError` for an older cache, ``ValueError`` for any other
    source).
    """
    from ..data.loader import check_min_position

    if batch_size < 1:
        raise ValueError("batch_size must be ≥ 1")
    min_position = check_min_position(min_position)
    if min_position and not (isinstance(source, (str, Path)) and Path(source).is_dir()):
        what = source if isinstance(source, (str, Path)) else f"a {type(source).__name__}"
        raise ValueError(f"{what}: rows carry no context positions (only an activation cache "
                         f"records them), so positions below {min_position} cannot be left out")
    left = math.inf if max_rows is None else int(max_rows)
    if left <= 0:
        return
    if isinstance(source, Tensor):
        if source.dim() != 2:
            raise ValueError(f"activations must be [N, d_in], got {tuple(source.shape)}")
        n = min(source.shape[0], left)
        for a in range(0, int(n), batch_size):
            yield source[a:min(a + batch_size, int(n))].float()
        return
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            mapped_iter = _open_cache(path, min_position)
        elif path.suffix == ".safetensors":
            from ..files import mmap_safetensors

            m = mmap_safetensors(path)
            if "activations" not in m:
                if len(m) != 1:
                    raise ValueError(f"{path}: expected a tensor named 'activations'")
                mapped_iter = iter([(t, None) for t in m.values()])
            else:
                mapped_iter = iter([(m["activations"], None)])
        elif path.suffix == ".npy":
            import numpy as np

            arr = np.load(path, mmap_mode="r")
            if arr.ndim != 2:
                raise ValueError(f"{path}: expected a 2-D matrix, got shape {arr.shape}")
            n = int(min(arr.shape[0], left))
            for a in range(0, n, batch_size):
                yield torch.from_numpy(np.array(arr[a:min(a + batch_size, n)], dtype=np.float32))
            return
        else:
            raise FileNotFoundError(f"{path}: not a cache folder, .safetensors or .npy file")
        for mt, pos in mapped_iter:
            rows = len(mt)
            for a in range(0, rows, batch_size):
                if left <= 0:
                    return
                if pos is None:
                    b = int(min(a + batch_size, rows, a + left))
                    t = mt.rows(a, b)
                else:  # read a whole batch, keep the rows at positions ≥ min_position
                    b = min(a + batch_size, rows)
                    t = mt.rows(a, b)[pos.rows(a, b) >= min_position][: int(min(left, b - a))]
                    if t.shape[0] == 0:
                        continue
                left -= t.shape[0]
                yield t
        return
    if isinstance(source, Iterable):
        for t in source:
            if left <= 0:
                return
            t = torch.as_tensor(t)
            if t.dim() != 2:
                raise ValueError(f"batches must be [b, d_in], got {tuple(t.shape)}")
            if t.shape[0] > left:
                t = t[: int(left)]
            left -= t.shape[0]
            yield t.float()
        return
    raise TypeError(f"cannot read activations from {type(source).__name__}")


@torch.no_grad()
def sae_reconstruct(sae, x: Tensor) -> tuple[Tensor, Tensor]:
    """(x̂ [b, d_in], z [b, d_sae]) of an SAE on raw activations x [b, d_in], inference rule.

    Batch-level architectures use their learned threshold (the SAE is put in eval mode
    for the call and restored afterwards).
    """
    was_training = sae.training
    sae.eval()
    try:
        out = sae(x.to(device=sae.device, dtype=sae.dtype))
    finally:
        sae.train(was_training)
    return out.x_hat, out.z


@torch.no_grad()
def evaluate_reconstruction(
    sae,
    source: Any,
    *,
    batch_size: int = 4096,
    max_rows: int | None = None,
    dense_threshold: float = 0.1,
    progress: bool = False,
    min_position: int = 0,
) -> ReconstructionMetrics:
    """Reconstruction / sparsity / sign metrics of ``sae`` over ``source`` (see module doc).

    ``source``: anything :func:`iter_activation_batches` reads. Streams in batches of
    ``batch_size`` rows; at most ``max_rows`` rows. ``min_position``: leave out a cache's rows
    at context positions below it (``max_rows`` counts the rows kept). Raises ``ValueError``
    on a width mismatch.
    """
    acc = MetricAccumulator(sae.cfg.d_in, sae.cfg.d_sae, dense_threshold)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_rows, desc="reconstruction", unit="tok", leave=False)
    try:
        for x in iter_activation_batches(source, batch_size, max_rows,
                                         min_position=min_position):
            if x.shape[1] != sae.cfg.d_in:
                raise ValueError(f"activations have width {x.shape[1]} but the SAE expects "
                                 f"d_in = {sae.cfg.d_in}")
            x = x.to(sae.device)
            x_hat, z = sae_reconstruct(sae, x)
            acc.update(x, x_hat, z)
            if bar is not None:
                bar.update(x.shape[0])
    finally:
        if bar is not None:
            bar.close()
    return acc.result()
