"""Several SAEs trained in lock-step on one stream of batches (one read of the data)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["MultiTrainer"]


class MultiTrainer:
    """Train several SAEs in lock-step on ONE stream of batches.

    Args:
        cfgs: one :class:`~abstopk.train.TrainConfig` per SAE; they must agree on
            ``batch_size``, ``steps`` and ``init_batches`` (the data they share).
        source: a :class:`~abstopk.train.BatchSource` (or anything ``open_source`` accepts),
            read once; every SAE steps on every batch.
        sae_metadata: extra SAEConfig fields (model, layer, hook, cache identity) for all SAEs.

    Each SAE is driven by its own :class:`~abstopk.train.Trainer` (its SAE, Adam state,
    dead-latent counters, target-L0 controller); per batch, the work done for each SAE is the
    body of ``Trainer.fit``'s loop, so the result equals ``Trainer(cfg, same batches).fit()``.
    Memory: one batch plus the SAEs and their optimiser states.
    """

    def __init__(self, cfgs: Sequence[Any], source: Any, *,
                 sae_metadata: dict[str, Any] | None = None) -> None:
        from ..data.open import open_source
        from .trainer import Trainer

        if not cfgs:
            raise ValueError("no SAE to train")
        c0 = cfgs[0]
        for c in cfgs[1:]:
            for key in ("batch_size", "steps", "init_batches"):
                if getattr(c, key) != getattr(c0, key):
                    raise ValueError(f"all SAEs of one pass must share {key}")
        if not hasattr(source, "state_dict"):
            source = open_source(source, c0.batch_size, c0.seed)
        self.source = source
        self.cfgs = list(cfgs)
        self.trainers = [Trainer(c, source, sae_metadata=sae_metadata) for c in cfgs]
        self.step = 0

    @property
    def saes(self) -> list[Any]:
        return [t.sae for t in self.trainers]

    def fit(self, *, progress: bool = True, desc: str = "train",
            on_step: Callable[[int], None] | None = None) -> list[Any]:
        """Run ``steps`` batches; returns the SAEs (in the order of ``cfgs``)."""
        from tqdm.auto import tqdm

        from .schedule import lr_at
        from .step import set_lr, train_step

        c0 = self.cfgs[0]
        it = iter(self.source)
        first = []
        for _ in range(c0.init_batches):
            b = next(it, None)
            if b is None:
                break
            first.append(b)
        if not first:
            raise ValueError("the data source yielded no batch")
        for t in self.trainers:
            torch.manual_seed(t.cfg.seed)
            t._initialize(iter(list(first)))  # scale + b_dec from the first batches
            t._pending = []

        def batches() -> Iterator[Tensor]:
            yield from first
            yield from it

        bar = tqdm(total=c0.steps, unit="step", desc=desc, disable=not progress,
                   dynamic_ncols=True)
        t_last = time.perf_counter()
        try:
            for x in batches():
                if self.step >= c0.steps:
                    break
                B = x.shape[0]
                for t in self.trainers:
                    cfg = t.cfg
                    xd = x.to(t.device, torch.float32)
                    lr = lr_at(t.step, cfg)
                    set_lr(t.optimizer, lr)
                    coeff: float | Tensor = 0.0
                    if t.sae.op.penalty is not None:
                        coeff = (t.controller.coeff if t.controller is not None
                                 else cfg.initial_penalty_coeff)
                    use_aux = t.k_aux > 0 and t.tokens >= cfg.dead_tokens
                    dead = t.tokens_since_fired >= cfg.dead_tokens if use_aux else None
                    res = train_step(t.sae, t.optimizer, xd, penalty_coeff=coeff,
                                     dead_mask=dead, k_aux=t.k_aux if use_aux else 0,
                                     aux_coeff=cfg.aux_coeff)
                    t.step += 1
                    t.tokens += B
                    t.tokens_since_fired.add_(B).masked_fill_(res.fired, 0)
                    if t.controller is not None:
                        t.controller.update(res.l0)
                    if t.step % cfg.log_every == 0 or t.step == cfg.steps:
                        now = time.perf_counter()
                        t._log(res, xd, lr, coeff, B * cfg.log_every / max(now - t_last, 1e-9))
                self.step += 1
                bar.update(1)
                if self.step % c0.log_every == 0 or self.step == c0.steps:
                    t_last = time.perf_counter()
                    l0s = [t.last_metrics["l0"] for t in self.trainers if t.last_metrics]
                    if l0s:
                        bar.set_postfix(saes=len(self.trainers),
                                        l0=f"{min(l0s):.0f}-{max(l0s):.0f}", refresh=False)
                if on_step is not None:
                    on_step(self.step)
        finally:
            bar.close()
        if self.step < c0.steps:
            import warnings

            warnings.warn(f"data source exhausted after {self.step} of {c0.steps} steps",
                          stacklevel=2)
        return self.saes
