"""The training run: one :class:`~abstopk.train.state.TrainState` driven over a data source.

One :class:`Trainer` runs one :class:`~abstopk.train.config.TrainConfig` on one
:class:`~abstopk.data.sources.BatchSource`; the state does the optimisation, the trainer owns
the out folder, the metrics file, checkpoints, resume and the progress bar:

* **initialisation** (fresh runs): the first ``init_batches`` batches give the scalar input
  scale ``s = sqrt(d_in / mean‖x‖²)`` (so E‖s·x‖² = d_in; folded into the weights by
  :meth:`SAE.save`) and ``b_dec`` = mean or geometric median (Weiszfeld) of the normalised
  rows; those batches are then trained on like any other;
* **each step**: :meth:`TrainState.step`: LR from :func:`~abstopk.train.schedule.lr_at`, one
  ``train_step`` (Adam, unit-norm decoder rows), dead-latent counters (tokens since each
  latent last fired, ``z != 0``; dead = ≥ ``dead_tokens``) feeding AuxK, and the target-L0
  controller;
* **every ``log_every`` steps**: one line of metrics to ``OUT/metrics.jsonl`` and the progress
  bar (the only place device tensors are read, so the hot loop never synchronises);
* **every ``checkpoint_every`` steps and at the end**: a checkpoint in
  ``OUT/checkpoint/step_XXXXXXXXX/`` (``state.safetensors`` for tensors — model, Adam moments,
  torch RNG, dead-latent counters, controller, pending batches — and ``state.json`` for the
  rest — step, tokens, data position, numpy/python RNG, optimizer hyper-parameters), written
  atomically by :mod:`abstopk.train.checkpoint`. No pickle anywhere.
* **resume** (``cfg.resume``): continue from ``latest.json`` (or start fresh when there is
  none). Everything the future depends on is restored exactly, so the final weights are
  bit-identical to an uninterrupted run on the same machine and thread count.
* **end**: the SAE is saved with :meth:`SAE.save` into ``OUT`` (``cfg.json`` +
  ``sae_weights.safetensors``), next to ``train_config.json``.
* **data parallel** (``dist``, under torchrun): the same loop on every rank, each on its rows
  of every global batch (:mod:`abstopk.train.distributed`); rank 0 alone writes (the others
  wait at a barrier). A checkpoint holds the global state: it resumes under any world size.
* **checkpoint evaluation** (``on_checkpoint``): its dict is logged as ``{"step", "event":
  "eval", ...}``.

Length note: the one driver of a training state; each part (out-folder checks, the loop,
metrics, checkpoints, the batch-threshold calibration and the barriers that order rank 0's
writes in a data-parallel run) is a short method over the same fields, and splitting them
would scatter the resume logic they share.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.matrix import MatrixSource
from ..data.open import open_source
from ..data.prefetch import PrefetchSource
from ..data.sources import BatchSource
from ..errors import RunMismatchError
from ..files import atomic_write_bytes, atomic_write_json
from ..sae import SAE
from .checkpoint import (
    CHECKPOINT_DIR,
    LATEST,
    latest_checkpoint,
    read_checkpoint,
    restore_rng_state,
    rng_state,
    write_checkpoint,
)
from .config import TrainConfig
from .schedule import PenaltyController
from .state import TrainState, geometric_median

__all__ = ["RunMismatchError", "Trainer", "geometric_median", "train"]

TRAIN_CONFIG = "train_config.json"
METRICS = "metrics.jsonl"
_RUN_FILES = ("cfg.json", "sae_weights.safetensors", CHECKPOINT_DIR, METRICS)
_ANOTHER_FOLDER = "choose another output folder"


class Trainer:
    """Train an SAE as described by ``cfg`` on ``data``.

    Args:
        cfg: the run.
        data: a :class:`BatchSource`, or anything :func:`~abstopk.data.open.open_source`
            accepts (path, tensor, array, iterable of batches).
        sae_metadata: extra :class:`~abstopk.sae.SAEConfig` fields (model name, hook, …).
        dist: a :class:`~abstopk.train.distributed.DistContext` to train data-parallel as one
            of its ranks (None: this process alone).
        on_checkpoint: ``(sae, step) -> dict | None`` run on rank 0 after each checkpoint;
            its dict is logged to ``metrics.jsonl`` (evaluation during training).

    Attributes after construction: ``state`` (the :class:`TrainState`), ``source``, and, read
    from the state, ``sae``, ``optimizer``, ``step`` (steps done), ``tokens`` (rows trained
    on), ``tokens_since_fired`` [d_sae] int64, ``controller`` (:class:`L0Controller` or None),
    ``last_metrics``.
    """

    def __init__(self, cfg: TrainConfig, data: Any, *,
                 sae_metadata: dict[str, Any] | None = None, dist: Any = None,
                 on_checkpoint: Callable[[SAE, int], dict[str, Any] | None] | None = None
                 ) -> None:
        self.cfg = cfg
        self.source: BatchSource = (
            data if _is_source(data)
            else open_source(data, cfg.batch_size, cfg.seed, skip_nonfinite=cfg.skip_nonfinite,
                             progress=cfg.progress, device=None if dist else cfg.device,
                             min_position=cfg.min_position)
        )
        if getattr(self.source, "min_position", 0) != cfg.min_position:
            raise ValueError(
                f"the data source skips context positions below "
                f"{getattr(self.source, 'min_position', 0)} but the run's min_position is "
                f"{cfg.min_position}" + ("" if hasattr(self.source, "min_position") else
                                         " (only an activation cache records positions)"))
        self.state = TrainState.from_config(cfg, int(self.source.d_in),
                                            sae_metadata=sae_metadata)
        self.device = self.state.device
        if cfg.prefetch and isinstance(self.source, MatrixSource):
            self.source = PrefetchSource(self.source, cfg.prefetch,
                                         pin_memory=self.device.type == "cuda")
        self.dist, self.on_checkpoint = dist, on_checkpoint
        if dist is not None:
            dist.attach(self)  # rank's rows of each batch; the state steps through DDP
        self.sae_cfg = self.sae.cfg
        self._pending: list[Tensor] = []  # the initialisation batches not yet trained on
        self.out = Path(cfg.out) if cfg.out else None
        self.resumed_from: int | None = None
        self.resumed_world_size: int | None = None
        self._prepared = False
        #: the batch-level threshold calibration of :meth:`fit` (None: none ran)
        self.calibration: dict[str, Any] | None = None

    # ------------------------------------------------------------------ the state's fields
    @property
    def sae(self) -> SAE:
        return self.state.sae

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.state.optimizer

    @property
    def step(self) -> int:
        return self.state.steps_done

    @property
    def tokens(self) -> int:
        return self.state.tokens

    @property
    def tokens_since_fired(self) -> Tensor:
        return self.state.tokens_since_fired

    @property
    def controller(self) -> PenaltyController | None:
        return self.state.controller

    @property
    def initialized(self) -> bool:
        return self.state.initialized

    @property
    def last_metrics(self) -> dict[str, Any] | None:
        return self.state.last_metrics

    @property
    def is_main(self) -> bool:
        """Whether this process writes the out folder (rank 0, or no data parallelism)."""
        return self.dist is None or self.dist.is_main

    def _barrier(self) -> None:
        if self.dist is not None:
            self.dist.barrier()

    # ------------------------------------------------------------------ out folder
    def prepare(self) -> None:
        """Check the out folder (raise :class:`RunMismatchError` for a different run), write
        ``train_config.json`` and, with ``resume``, load the last checkpoint. Idempotent."""
        if self._prepared:
            return
        self._prepared = True
        if self.out is None:
            if self.cfg.resume:
                raise ValueError("resume needs an out folder")
            return
        out = self.out
        if out.exists() and not out.is_dir():
            raise RunMismatchError(f"{out} exists and is not a folder")
        tc = out / TRAIN_CONFIG
        if tc.is_file():
            try:
                prev = TrainConfig.from_dict(json.loads(tc.read_text()))
            except (ValueError, TypeError) as e:
                raise RunMismatchError(f"{tc} is not a valid train config ({e}); "
                                       f"{_ANOTHER_FOLDER}") from None
            diff = self.cfg.differences(prev)
            if diff:
                shown = ", ".join(f"{k}: {getattr(prev, k)!r} → {getattr(self.cfg, k)!r}"
                                  for k in diff[:4])
                raise RunMismatchError(
                    f"{out} already holds a different run ({shown}); {_ANOTHER_FOLDER}")
            if not self.cfg.resume:
                raise RunMismatchError(
                    f"{out} already holds this run; resume it or {_ANOTHER_FOLDER}")
        else:
            found = [f for f in _RUN_FILES if (out / f).exists()]
            if found:
                raise RunMismatchError(
                    f"{out} holds {', '.join(found)} of another run but no {TRAIN_CONFIG}; "
                    f"{_ANOTHER_FOLDER}")
        resume_ck = self.cfg.resume and (out / CHECKPOINT_DIR / LATEST).is_file()
        self._barrier()  # every rank has checked the folder before rank 0 writes into it
        if self.is_main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(tc, self.train_config_record())
        if resume_ck:
            self.load_checkpoint()
        if self.cfg.resume and self.is_main:
            self._truncate_metrics(self.step)  # lines a crashed run logged after its checkpoint

    # ------------------------------------------------------------------ initialisation
    def _initialize(self, it: Iterator[Tensor]) -> None:
        """Take the first ``init_batches`` batches, initialise the state from them and keep
        them as the first batches to train on."""
        batches = []
        for _ in range(self.cfg.init_batches):
            b = next(it, None)
            if b is None:
                break
            batches.append(b)
        self.state.initialize(batches)
        self._pending = batches

    # ------------------------------------------------------------------ the loop
    def fit(self, until: int | None = None) -> SAE:
        """Train up to ``cfg.steps`` (or stop, without the final save, after global step
        ``until``: an interruption, as if the process had been killed there). Returns the SAE.
        """
        cfg, state = self.cfg, self.state
        self.prepare()
        if not state.initialized:
            _seed_everything(cfg.seed)
        it = iter(self.source)
        if not state.initialized:
            self._initialize(it)
        stop = cfg.steps if until is None else min(cfg.steps, until)
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=state.steps_done, unit="step", desc="train",
                   disable=not (cfg.progress and self.is_main), dynamic_ncols=True)
        t_last, tok_last = time.perf_counter(), state.tokens
        exhausted = False
        x = None
        try:
            while state.steps_done < stop:
                x = self._pending.pop(0) if self._pending else next(it, None)
                if x is None:
                    exhausted = True
                    break
                report = state.step(x)
                bar.update(1)
                if state.steps_done % cfg.log_every == 0 or state.steps_done == cfg.steps:
                    now = time.perf_counter()
                    rate = (state.tokens - tok_last) / max(now - t_last, 1e-9)
                    rec = state.metrics(report, rate)
                    self._write_metrics(rec)
                    t_last, tok_last = now, state.tokens
                    bar.set_postfix(loss=f"{rec['loss']:.4g}", fvu=f"{rec['fvu']:.4f}",
                                    l0=f"{rec['l0']:.1f}", dead=f"{100 * rec['dead_frac']:.1f}%",
                                    tok_s=f"{rate:,.0f}", refresh=False)
                if (self.out is not None and cfg.checkpoint_every
                        and state.steps_done % cfg.checkpoint_every == 0
                        and state.steps_done < cfg.steps):
                    self.save_checkpoint()
        finally:
            bar.close()
        if state.steps_done >= cfg.steps or exhausted:
            if exhausted:
                import warnings

                warnings.warn(f"data source exhausted after {state.steps_done} of {cfg.steps} "
                              "steps", stacklevel=2)
            if self.out is not None:
                self.save_checkpoint()
            # batch-level operators: the inference threshold from the rows that follow the
            # last batch (after the checkpoint, so a resumed finished run reads the same rows;
            # a data-parallel run refuses batch-level operators, so this is one process)
            self.calibration = state.calibrate(_calibration_batches(it, report_x=x))
            if self.out is not None:
                if self.is_main:
                    self.save_final()
                self._barrier()
        return self.sae

    # ------------------------------------------------------------------ metrics
    def _write_metrics(self, rec: dict[str, Any]) -> None:
        if self.out is not None and self.is_main:
            with open(self.out / METRICS, "a") as f:
                f.write(json.dumps(rec) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after ``step`` (by a run that crashed after it)."""
        path = self.out / METRICS
        if not path.is_file():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        atomic_write_bytes(path, ("\n".join(keep) + "\n").encode() if keep else b"")

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Everything a resume needs: (tensors for safetensors, JSON-serialisable rest): the
        state's pieces (:meth:`TrainState.state_dict`), the RNGs, the pending initialisation
        batches, the data position and both configs."""
        tensors, st = self.state.state_dict()
        rng_tensors, rng_meta = rng_state()
        tensors.update(rng_tensors)
        for i, b in enumerate(self._pending):
            tensors[f"pending.{i}"] = b
        meta = {
            "step": st["step"],
            "tokens": st["tokens"],
            "initialized": st["initialized"],
            "n_pending": len(self._pending),
            "data": self.source.state_dict(),
            "optimizer": st["optimizer"],
            "controller": st["controller"],
            "rng": rng_meta,
            "sae_config": self.sae_cfg.to_dict(),
            "train_config": self.cfg.to_dict(),
            "world_size": 1 if self.dist is None else self.dist.world_size,
        }
        return tensors, meta

    def save_checkpoint(self) -> Path | None:
        """Write the checkpoint of the current step into ``OUT/checkpoint`` (atomically), then
        run ``on_checkpoint``. Data parallel: rank 0 writes while the others wait at a
        barrier; no checkpoint is written while initialisation batches are still pending
        (the first ``init_batches`` steps: they are held per rank). Returns the step folder
        (None where nothing was written)."""
        if self.out is None:
            raise ValueError("no out folder to checkpoint into")
        if self.dist is not None and self._pending:
            return None
        path = None
        if self.is_main:
            tensors, meta = self.checkpoint_state()
            path = write_checkpoint(self.out / CHECKPOINT_DIR, self.step, tensors, meta)
            if self.on_checkpoint is not None:
                rec = self.on_checkpoint(self.sae, self.step)
                if rec:
                    self._write_metrics({"step": self.step, "event": "eval", **rec})
        self._barrier()
        return path

    def load_checkpoint(self, path: str | Path | None = None) -> int:
        """Restore the state saved by :meth:`save_checkpoint` (default: ``latest.json``).

        Returns the restored step. Raises ``ValueError`` when the checkpoint belongs to an SAE
        of another shape.
        """
        if path is None:
            if self.out is None:
                raise ValueError("no out folder to resume from")
            path = latest_checkpoint(self.out / CHECKPOINT_DIR)
        path = Path(path)
        tensors, meta = read_checkpoint(path)
        saved = meta["sae_config"]
        for key in ("d_in", "d_sae", "architecture", "k"):
            if saved.get(key) != getattr(self.sae_cfg, key):
                raise ValueError(
                    f"checkpoint {path} has {key} = {saved.get(key)!r} but this run has "
                    f"{getattr(self.sae_cfg, key)!r}"
                )
        if self.controller is not None and meta["controller"] is None:
            raise ValueError(f"checkpoint {path} has no target-L0 controller state")
        self.state.load_state_dict(tensors, meta)
        self._pending = [tensors[f"pending.{i}"] for i in range(meta["n_pending"])]
        if self.dist is not None:  # pending batches are global (one process wrote them)
            self._pending = [self.dist.local_rows(b) for b in self._pending]
        self.resumed_world_size = int(meta.get("world_size", 1))
        self.source.load_state_dict(meta["data"])
        restore_rng_state(tensors, meta["rng"])
        self.resumed_from = self.step
        return self.step

    def train_config_record(self) -> dict[str, Any]:
        """``train_config.json``: the config, plus what it resolved to on this machine and
        what the data rests on — ``compute_dtype`` (``autocast`` resolved), the LM's
        ``model_weight_format`` and ``model_dtype`` (from the cache manifest, via cfg.json's
        metadata). :meth:`TrainConfig.from_dict` ignores the extra keys."""
        rec = {**self.cfg.to_dict(), "compute_dtype": self.state.compute_dtype,
               "model_weight_format": self.sae_cfg.model_weight_format,
               "model_dtype": self.sae_cfg.model_dtype}
        if self.calibration is not None:
            rec["threshold_calibration"] = self.calibration
        return rec

    # ------------------------------------------------------------------ final output
    def save_final(self) -> Path:
        """Save the SAE (``SAE.save``: scale folded) and ``train_config.json`` into OUT."""
        if self.out is None:
            raise ValueError("no out folder to save into")
        self.sae.save(self.out)
        atomic_write_json(self.out / TRAIN_CONFIG, self.train_config_record())
        return self.out


def train(cfg: TrainConfig, data: Any, **kw: Any) -> SAE:
    """Convenience: ``Trainer(cfg, data, **kw).fit()``."""
    return Trainer(cfg, data, **kw).fit()


# ---------------------------------------------------------------------- helpers
def _calibration_batches(it: Iterator[Tensor], report_x: Tensor | None) -> Iterator[Tensor]:
    """The batches after the last trained one; when the source has none left, the last
    trained batch itself (still training rows, the best there is)."""
    got = False
    for b in it:
        got = True
        yield b
    if not got and report_x is not None:
        yield report_x


def _is_source(obj: Any) -> bool:
    return not isinstance(obj, (str, os.PathLike, Tensor, np.ndarray)) and all(
        hasattr(obj, a) for a in ("d_in", "state_dict", "load_state_dict", "__iter__"))


def _seed_everything(seed: int) -> None:
    """Seed torch, numpy and python RNGs at the start of a fresh run."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
