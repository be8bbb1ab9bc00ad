"""Data-parallel training under torchrun: the glue between ``torch.distributed`` and the one
training loop (:class:`~abstopk.train.trainer.Trainer` driving a
:class:`~abstopk.train.state.TrainState`).

Engine: PyTorch's :class:`~torch.nn.parallel.DistributedDataParallel` (gloo on CPU, NCCL on
CUDA) averages the gradients during the backward; everything else a step needs to stay
identical on every rank is one packed ``all_reduce`` per step (:meth:`DataParallel.step_result`).

**Batches.** Every rank iterates the *same* global batch stream (same source, same seed) and
keeps the contiguous rows ``[r·B//N, (r+1)·B//N)`` of each global batch of B rows
(:class:`RankSlice`; B need not divide by N, every rank gets ⌊B/N⌋ or ⌈B/N⌉ rows). So the
ranks always take the same number of steps (no rank runs out first: nothing can hang on an
uneven split), every row of an epoch is used once overall, and the concatenation of the
ranks' rows is exactly the batch a single process would train on.

**Exact equality with one process.** With b_r rows on rank r (Σ b_r = B) the step's loss on
rank r is ``(N·b_r/B)·(mse_r + c·P_r) + N·c_aux·‖ê_r − e_r‖² / D``, where mse_r and P_r are
means over the rank's rows and ``D = Σ_rows ‖e − ē‖²`` over the *global* batch (two small
all-reduces inside the step when AuxK runs). DDP averages the gradients over the N ranks, so
every rank applies the gradient of the single-process loss on the global batch. The
decoder-norm projection and renormalisation then act on identical gradients and weights.
After the step one all-reduce of ``[latent hit counts (d_sae), b·mse, b·P, b·L0, AuxK
numerator]`` gives every rank the global ``fired`` mask (dead-latent counters), the global L0
(target-L0 controller) and the logged metrics. The input-scale and ``b_dec`` initialisation
reduce their sums (:meth:`DataParallel.initialize`; the geometric median reduces each
Weiszfeld iteration). Batch-level operators (batchtopk, batchabstopk) select over each rank's
rows, not over the global batch, and keep an inference threshold per rank: they are refused
(:meth:`DistContext.attach`).

Why DDP and not a hand-written gradient all-reduce: it is PyTorch's supported path (bucketed
all-reduce overlapped with the backward, NCCL on GPUs, static-graph checks), and the only
per-step collectives added here are those DDP cannot know about (AuxK's global denominator,
the fired mask and the L0 the counters and the controller read).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist
from torch import Tensor

from ..errors import DistributedError, UserError
from ..fields import doc_field
from .state import geometric_median_step
from .step import StepResult

__all__ = ["BACKENDS", "PRESERVED", "DataParallel", "DistConfig", "DistContext", "RankSlice",
           "rank_range", "resume_statement", "under_torchrun"]

BACKENDS = ("auto", "gloo", "nccl")


@dataclass
class DistConfig:
    """How a training run is spread over processes (none of it changes the trained weights)."""

    nproc: int = doc_field("Processes on this machine: 1 trains in this process; N > 1 launches "
                           "torchrun with N data-parallel processes (each trains on its part of "
                           "every batch).", 1)
    dist_timeout_s: float = doc_field("Seconds a collective (gradient all-reduce, barrier) waits "
                                      "for the other processes before the run stops with an "
                                      "error (a dead or hung process).", 600.0)
    dist_backend: str = doc_field("torch.distributed backend: auto (nccl on CUDA, gloo on CPU), "
                                  "gloo, nccl.", "auto")

    def __post_init__(self) -> None:
        if isinstance(self.nproc, bool) or not isinstance(self.nproc, int) or self.nproc < 1:
            raise ValueError(f"nproc must be a positive integer, got {self.nproc!r}")
        if not self.dist_timeout_s > 0:
            raise ValueError(f"dist_timeout_s must be positive, got {self.dist_timeout_s!r}")
        if self.dist_backend not in BACKENDS:
            raise ValueError(f"dist_backend must be one of {BACKENDS}, got {self.dist_backend!r}")


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (its ``WORLD_SIZE``/``RANK`` are set)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def rank_range(rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of a global batch of ``rows`` rows kept by ``rank``:
    ``lo = rank·rows // N``, ``hi = (rank+1)·rows // N`` (sizes differ by at most one)."""
    return rank * rows // world_size, (rank + 1) * rows // world_size


class DistContext:
    """This process's place in the process group (rank, world size) and the collectives the
    drivers use. Build it with :meth:`from_env` under torchrun."""

    def __init__(self, rank: int, world_size: int, local_rank: int, timeout_s: float) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.timeout_s = float(timeout_s)

    @classmethod
    def from_env(cls, cfg: DistConfig | None = None, device: str = "cpu") -> DistContext:
        """Join the process group torchrun described in the environment (``env://``).

        Backend: NCCL for a CUDA ``device`` (and ``torch.cuda.set_device(LOCAL_RANK)``),
        gloo otherwise, unless ``cfg.dist_backend`` names one."""
        cfg = cfg or DistConfig()
        if not under_torchrun():
            raise UserError("not started by torchrun: WORLD_SIZE and RANK are not set")
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
        cuda = torch.device(device).type == "cuda"
        backend = cfg.dist_backend if cfg.dist_backend != "auto" else ("nccl" if cuda else "gloo")
        if cuda:
            torch.cuda.set_device(local)
        if not tdist.is_initialized():
            tdist.init_process_group(backend, timeout=datetime.timedelta(
                seconds=cfg.dist_timeout_s))
        return cls(rank, world, local, cfg.dist_timeout_s)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            tdist.barrier()

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """Σ over ranks of ``t`` (a new tensor; ``t`` is left as it was)."""
        t = t.clone()
        if self.world_size > 1:
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t

    def close(self) -> None:
        if tdist.is_initialized():
            tdist.destroy_process_group()

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Turn a failed collective (a rank died, or none answered within the timeout) into
        a one-line :class:`~abstopk.errors.DistributedError` naming this rank."""
        try:
            yield
        except RuntimeError as e:
            if not _is_collective_failure(e):
                raise
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: a collective failed or waited more "
                f"than {self.timeout_s:g} s for the other processes (one died or hangs; "
                f"resume from the last checkpoint): {first}") from None

    def attach(self, trainer: Any) -> None:
        """Make ``trainer`` (a :class:`~abstopk.train.trainer.Trainer`) train data-parallel:
        its source keeps this rank's rows of every global batch, its state steps through
        :class:`DataParallel`."""
        B = trainer.cfg.batch_size
        if B < self.world_size:
            raise UserError(f"a batch of {B} rows cannot be split over {self.world_size} "
                            "processes (each needs at least one row)")
        op = trainer.state.sae.op
        if op.batch_level and self.world_size > 1:
            raise UserError(f"{op.name} selects its latents over the whole batch; data-parallel "
                            "training would select over each process's rows (and keep one "
                            "inference threshold per process), so it is not supported: "
                            "train it in one process")
        trainer.source = RankSlice(trainer.source, self, B)
        trainer.state.dp = DataParallel(self, trainer.state.sae, B)

    def local_rows(self, x: Tensor) -> Tensor:
        """This rank's rows of the global batch ``x`` [B, d]."""
        lo, hi = rank_range(x.shape[0], self.rank, self.world_size)
        return x[lo:hi]


def _is_collective_failure(e: BaseException) -> bool:
    dist_errors = tuple(getattr(tdist, n) for n in ("DistError", "DistBackendError",
                                                   "DistNetworkError") if hasattr(tdist, n))
    if dist_errors and isinstance(e, dist_errors):
        return True
    msg = str(e).lower()
    return any(s in msg for s in ("gloo", "nccl", "timed out", "timeout", "connection closed",
                                  "connection reset", "broken pipe", "peer"))


class RankSlice:
    """A :class:`~abstopk.data.sources.BatchSource` yielding this rank's rows of each global
    batch of ``source`` (see :func:`rank_range`). The position is the global source's, the
    same on every rank, so a checkpoint written by one rank restores all of them, under any
    world size.

    A :class:`~abstopk.data.matrix.MatrixSource` (directly or behind a prefetcher) is told to
    read only this rank's rows (``row_slice``), so the ranks read disjoint rows of a matrix
    file; other sources are read whole and sliced.
    """

    def __init__(self, source: Any, ctx: DistContext, batch_size: int) -> None:
        self.source, self.ctx, self.batch_size = source, ctx, int(batch_size)
        self.d_in = source.d_in
        self.lo, self.hi = rank_range(self.batch_size, ctx.rank, ctx.world_size)
        inner = getattr(source, "source", source)
        self._reads_slice = hasattr(inner, "row_slice")
        if self._reads_slice:
            inner.row_slice = (self.lo, self.hi)

    def __iter__(self) -> Iterator[Tensor]:
        want = self.hi - self.lo if self._reads_slice else self.batch_size
        for x in self.source:
            if x.shape[0] != want:
                raise UserError(f"the data source yielded a batch of {x.shape[0]} rows where "
                                f"{want} were expected; data-parallel training needs "
                                "fixed-size batches (a matrix file or an activation cache)")
            yield x if self._reads_slice else x[self.lo:self.hi]

    def state_dict(self) -> dict[str, Any]:
        return self.source.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state)


class DataParallel:
    """What :class:`~abstopk.train.state.TrainState` and
    :func:`~abstopk.train.step.train_step` consult when they run on one of N ranks.

    Attributes: ``module`` (the SAE wrapped in DDP: the step's forward goes through it),
    ``world_size``, ``global_rows`` (B, the rows of a global batch).
    """

    def __init__(self, ctx: DistContext, sae: torch.nn.Module, global_rows: int) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.ctx, self.world_size, self.global_rows = ctx, ctx.world_size, int(global_rows)
        dev = next(sae.parameters()).device
        # buffers (the input scale) are made identical by initialize(): no per-step broadcast
        self.module = DDP(sae, device_ids=[dev.index] if dev.type == "cuda" else None,
                          forward_sync_buffers=False)

    # ------------------------------------------------------------------ inside the step
    def loss_weight(self, local_rows: int) -> float:
        """N·b_r/B: the weight of this rank's mean-over-rows loss terms (DDP divides by N)."""
        return self.world_size * local_rows / self.global_rows

    def aux_denominator(self, e: Tensor) -> Tensor:
        """Σ over the global batch of ‖e_i − ē‖² (ē the global mean of the residuals e)."""
        s = self.ctx.all_reduce_sum(e.sum(0))
        return self.ctx.all_reduce_sum((e - s / self.global_rows).pow(2).sum())

    def step_result(self, hits: Tensor, mse: Tensor, penalty: Tensor, l0: Tensor,
                    aux_num: Tensor, aux_den: Tensor | None, *, local_rows: int,
                    penalty_coeff: float | Tensor, has_penalty: bool,
                    aux_coeff: float) -> StepResult:
        """The step's global :class:`StepResult` from this rank's pieces (one all-reduce):
        ``hits`` [d_sae] firing counts, the rank's mean ``mse``, ``penalty``, ``l0`` and the
        AuxK numerator Σ‖ê − e‖² with the global denominator ``aux_den``."""
        b = float(local_rows)
        scal = torch.stack([mse.float() * b, penalty.float() * b, l0.float() * b,
                            aux_num.float()]).to(hits.device)
        v = self.ctx.all_reduce_sum(torch.cat([hits.float(), scal]))
        d = hits.shape[0]
        B = float(self.global_rows)
        g_mse, g_pen, g_l0 = v[d] / B, v[d + 1] / B, v[d + 2] / B
        g_aux = (torch.nan_to_num(v[d + 3] / aux_den.clamp_min(1e-12), nan=0.0)
                 if aux_den is not None else torch.zeros((), device=v.device))
        loss = g_mse + penalty_coeff * g_pen if has_penalty else g_mse
        loss = loss + aux_coeff * g_aux
        return StepResult(loss, g_mse, g_aux, g_pen, g_l0, v[:d] > 0)

    # ------------------------------------------------------------------ around the step
    @torch.no_grad()
    def initialize(self, state: Any, batches: Sequence[Tensor]) -> None:
        """:meth:`TrainState.initialize` over the union of every rank's init rows: the input
        scale s = sqrt(d_in / mean‖x‖²) and b_dec (mean or geometric median) from global sums."""
        if not batches:
            raise ValueError("the data source yielded no batch")
        sae, dev = state.sae, state.device
        x = torch.cat(list(batches)).to(dev, torch.float32)
        n = self.ctx.all_reduce_sum(torch.tensor(float(x.shape[0]), device=dev, dtype=torch.float64))
        if sae.cfg.normalize_activations == "scalar":
            ms = self.ctx.all_reduce_sum(x.double().pow(2).sum()) / n
            sae.input_scale.fill_(float(torch.sqrt(sae.cfg.d_in / ms.clamp_min(1e-30))))
        x_s, _ = sae.normalize(x)
        if state.b_dec_init == "mean":
            sae.b_dec.copy_((self.ctx.all_reduce_sum(x_s.double().sum(0)) / n).to(x_s.dtype))
        elif state.b_dec_init == "geometric_median":
            m = self.ctx.all_reduce_sum(x_s.double().sum(0)) / n
            for _ in range(100):
                m, done = geometric_median_step(x_s.double(), m, reduce=self.ctx.all_reduce_sum)
                if done:
                    break
            sae.b_dec.copy_(m.to(x_s.dtype))
        state.initialized = True

    @torch.no_grad()
    def batch_variance(self, x_s: Tensor) -> float:
        """Mean over the global batch's rows and features of (x_s − x̄_s)² (for ``fvu``)."""
        mean = self.ctx.all_reduce_sum(x_s.double().sum(0)) / self.global_rows
        ss = self.ctx.all_reduce_sum((x_s.double() - mean).pow(2).sum())
        return float(ss) / (self.global_rows * x_s.shape[1])


#: what a checkpoint carries into a resumed run, whatever the world sizes (docs/scaling.md)
PRESERVED = ("weights and input scale", "Adam moments and step counts", "step and token "
             "counters", "LR schedule position", "target-L0 controller state",
             "AuxK dead-latent counters", "data position (the global batch stream)",
             "RNG state")


def resume_statement(step: int, saved_world: int, world: int) -> str:
    """The log line of a resume: from which step, across which change of world size, and
    what is preserved (the checkpoint holds the global state, identical on every rank)."""
    change = (f"written by {saved_world} process(es), resumed by {world}"
              if saved_world != world else f"{world} process(es)")
    exact = ("it continues bit for bit" if saved_world == world else
             "it continues the same run, only the summation order of the gradient reduction "
             "changes (float rounding, about 1e-7 relative per step)")
    return f"resuming from step {step} ({change}): restored {', '.join(PRESERVED)}; {exact}"
