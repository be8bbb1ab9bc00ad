"""Training: the per-step hot path (:mod:`.step`), the state of one SAE in training and its
step (:mod:`.state`), and the drivers around it: :mod:`.trainer` (one run with out folder,
checkpoints and resume) and :mod:`.multi` (several SAEs in lock-step on one batch stream).

Public names (imported lazily so ``import abstopk.train`` stays light): :class:`TrainConfig`
(:mod:`.config`), :class:`Trainer` and :func:`train` (:mod:`.trainer`), :class:`TrainState`
(:mod:`.state`), :class:`MultiTrainer` (:mod:`.multi`), the LR schedules and penalty
controllers (:mod:`.schedule`), the :class:`BatchSource` protocol and :func:`open_source`
(:mod:`.data`).
"""

_EXPORTS = {
    "TrainConfig": "config",
    "Trainer": "trainer",
    "train": "trainer",
    "RunMismatchError": "trainer",
    "BatchSource": "data",
    "MatrixSource": "data",
    "IterableSource": "data",
    "open_source": "data",
    "TrainState": "state",
    "StepReport": "state",
    "MultiTrainer": "multi",
    "L0Controller": "schedule",
    "MultiplicativeL0Controller": "schedule",
    "PenaltyController": "schedule",
    "LRSchedule": "schedule",
    "WarmupDecayLR": "schedule",
    "ConstantThenLinearDecayLR": "schedule",
    "lr_at": "schedule",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'abstopk.train' has no attribute {name!r}")
