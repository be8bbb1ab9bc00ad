"""Ranks of the data-parallel tests.

:func:`launch` forks ``world`` processes (``torch.multiprocessing``, start method fork: the
children inherit the imported torch, so a 2-rank run starts in about a second on a loaded
machine, against ~30 s for torchrun's fresh interpreters) joined through ``env://`` as
torchrun would; each runs :func:`run_rank`: a :class:`Trainer` as one rank, then saves its
final in-memory state (weights, dead-latent counters) to ``OUT/ranks/rank<r>.safetensors``.
Faults: ``kill=(rank, step)`` SIGKILLs that rank when it is about to take that step,
``hang=(rank, step)`` makes it sleep there; ``eval_hook`` logs a toy number at each
checkpoint, ``eval_cfg`` (:class:`CheckpointEvalConfig` fields) the real evaluation; a :class:`UserError` is written to
``OUT/error_rank<r>.txt``.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rank(rank: int, world: int, port: int, data: str, out: str, config: dict[str, Any],
             timeout: float = 60.0, kill: tuple[int, int] | None = None,
             hang: tuple[int, int] | None = None, eval_hook: bool = False,
             eval_cfg: dict[str, Any] | None = None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    from safetensors.torch import save_file

    from abstopk.errors import UserError
    from abstopk.train.config import TrainConfig
    from abstopk.train.distributed import DistConfig, DistContext
    from abstopk.train.trainer import Trainer

    ctx = DistContext.from_env(DistConfig(dist_timeout_s=timeout))
    cfg = TrainConfig(**config, out=out, progress=False)
    hook = (lambda sae, step: {"w_dec_norm_sum": float(sae.W_dec.norm(dim=1).sum())}) \
        if eval_hook else None
    if eval_cfg is not None and rank == 0:
        from abstopk.experiments.checkpoint_eval import CheckpointEvalConfig, checkpoint_evaluator

        hook = checkpoint_evaluator(CheckpointEvalConfig(**eval_cfg))
    try:
        tr = Trainer(cfg, data, dist=ctx, on_checkpoint=hook)
    except UserError as e:
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, f"error_rank{rank}.txt").write_text(str(e))
        sys.exit(2)
    take_step = tr.state.step

    def step(x):
        at = (rank, tr.state.steps_done)
        if kill is not None and at == tuple(kill):
            os.kill(os.getpid(), signal.SIGKILL)
        if hang is not None and at == tuple(hang):
            time.sleep(3600)
        return take_step(x)

    tr.state.step = step
    try:
        with ctx.errors():
            tr.prepare()
            tr.fit()
    except UserError as e:
        Path(out, f"error_rank{rank}.txt").write_text(str(e))
        sys.exit(2)
    ranks = Path(out) / "ranks"
    ranks.mkdir(exist_ok=True)
    tensors = {f"model.{k}": v.detach().clone() for k, v in tr.sae.state_dict().items()}
    tensors["dead.tokens_since_fired"] = tr.state.tokens_since_fired.clone()
    save_file(tensors, str(ranks / f"rank{rank}.safetensors"))
    if tr.resumed_from is not None:
        Path(out, f"resumed_rank{rank}.txt").write_text(
            f"{tr.resumed_from} {tr.resumed_world_size}")
    ctx.close()


def launch(world: int, data: str, out: str, config: dict[str, Any], **kw: Any) -> None:
    """Run ``world`` ranks of :func:`run_rank` in forked processes; raises
    ``torch.multiprocessing.ProcessExitedException`` / ``ProcessRaisedException`` when a
    rank fails (the others are terminated)."""
    import torch.multiprocessing as mp

    port = free_port()
    mp.start_processes(_entry, args=(world, port, data, out, config, kw), nprocs=world,
                       join=True, start_method="fork")


def _entry(rank: int, world: int, port: int, data: str, out: str, config: dict[str, Any],
           kw: dict[str, Any]) -> None:
    run_rank(rank, world, port, data, out, config, **kw)
