"""Several SAEs trained in lock-step on one stream of batches (one read of the data)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from ..data.open import open_source
from .config import TrainConfig
from .state import TrainState

__all__ = ["MultiTrainer"]


class MultiTrainer:
    """Train several SAEs in lock-step on ONE stream of batches.

    Args:
        cfgs: one :class:`~abstopk.train.TrainConfig` per SAE; they must agree on
            ``batch_size``, ``steps`` and ``init_batches`` (the data they share).
        source: a :class:`~abstopk.train.BatchSource` (or anything ``open_source`` accepts),
            read once; every SAE steps on every batch.
        sae_metadata: extra SAEConfig fields (model, layer, hook, cache identity) for all SAEs.

    Each SAE is one :class:`~abstopk.train.state.TrainState` (``states``, in the order of
    ``cfgs``; ``trainers`` is the same list): the first ``init_batches`` batches initialise
    every state, then every batch is one :meth:`TrainState.step` of every state — the step
    :class:`~abstopk.train.Trainer` takes — so each SAE ends as ``Trainer(cfg, same
    batches).fit()`` would leave it. Memory: one batch plus the SAEs and their optimiser states.
    """

    def __init__(self, cfgs: Sequence[TrainConfig], source: Any, *,
                 sae_metadata: dict[str, Any] | None = None) -> None:
        if not cfgs:
            raise ValueError("no SAE to train")
        c0 = cfgs[0]
        for c in cfgs[1:]:
            for key in ("batch_size", "steps", "init_batches", "min_position"):
                if getattr(c, key) != getattr(c0, key):
                    raise ValueError(f"all SAEs of one pass must share {key}")
        if not hasattr(source, "state_dict"):
            source = open_source(source, c0.batch_size, c0.seed, min_position=c0.min_position)
        elif getattr(source, "min_position", 0) != c0.min_position:
            raise ValueError(f"the data source skips context positions below "
                             f"{getattr(source, 'min_position', 0)}, the SAEs' min_position is "
                             f"{c0.min_position}")
        self.source = source
        self.cfgs = list(cfgs)
        d_in = int(source.d_in)
        self.states = [TrainState.from_config(c, d_in, sae_metadata=sae_metadata) for c in cfgs]
        self.step = 0
        #: per SAE, the batch-level threshold calibration of :meth:`fit` (None: none ran)
        self.calibrations: list[dict[str, Any] | None] = [None] * len(cfgs)

    @property
    def trainers(self) -> list[TrainState]:
        """The per-SAE states (``states``; each has ``sae``, ``cfg``, ``last_metrics``)."""
        return self.states

    @property
    def saes(self) -> list[Any]:
        return [s.sae for s in self.states]

    def fit(self, *, progress: bool = True, desc: str = "train",
            on_step: Callable[[int], None] | None = None) -> list[Any]:
        """Run ``steps`` batches; returns the SAEs (in the order of ``cfgs``)."""
        from tqdm.auto import tqdm

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
        for st, cfg in zip(self.states, self.cfgs, strict=True):
            torch.manual_seed(cfg.seed)
            st.initialize(first)  # scale + b_dec from the first batches

        def batches() -> Iterator[Tensor]:
            yield from first
            for b in it:  # noqa: UP028 - `yield from it` would close it with this generator
                yield b

        bar = tqdm(total=c0.steps, unit="step", desc=desc, disable=not progress,
                   dynamic_ncols=True)
        t_last = time.perf_counter()
        x = leftover = None
        try:
            for x in batches():
                if self.step >= c0.steps:
                    leftover = x     # read but not trained on: the first calibration batch
                    break
                B = x.shape[0]
                for st, cfg in zip(self.states, self.cfgs, strict=True):
                    report = st.step(x)
                    if st.steps_done % cfg.log_every == 0 or st.steps_done == cfg.steps:
                        now = time.perf_counter()
                        st.metrics(report, B * cfg.log_every / max(now - t_last, 1e-9))
                self.step += 1
                bar.update(1)
                if self.step % c0.log_every == 0 or self.step == c0.steps:
                    t_last = time.perf_counter()
                    l0s = [s.last_metrics["l0"] for s in self.states if s.last_metrics]
                    if l0s:
                        bar.set_postfix(saes=len(self.states),
                                        l0=f"{min(l0s):.0f}-{max(l0s):.0f}", refresh=False)
                if on_step is not None:
                    on_step(self.step)
        finally:
            bar.close()
        if self.step < c0.steps:
            import warnings

            warnings.warn(f"data source exhausted after {self.step} of {c0.steps} steps",
                          stacklevel=2)
        # batch-level operators: inference thresholds from the rows after the last batch
        # (the same rows for every SAE; read once, only as many as the largest request)
        if any(st.sae.op.batch_level for st in self.states):
            want = max(c.threshold_calibration_tokens for c in self.cfgs)
            calib = [] if leftover is None else [leftover]
            n = sum(b.shape[0] for b in calib)
            for b in it:
                if n >= want:
                    break
                calib.append(b)
                n += b.shape[0]
            if not calib and x is not None:
                calib = [x]
            self.calibrations = [st.calibrate(calib) for st in self.states]
        return self.saes
