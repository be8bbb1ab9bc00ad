"""Training: the per-step hot path (:mod:`.step`), the state of one SAE in training and its
step (:mod:`.state`), and the drivers around it: :mod:`.trainer` (one run with out folder,
checkpoints and resume) and :mod:`.multi` (several SAEs in lock-step on one batch stream).

Public names (imported lazily so ``import abstopk.train`` stays light): :class:`TrainConfig`
(:mod:`.config`), :class:`Trainer` and :func:`train` (:mod:`.trainer`), :class:`TrainState`
(:mod:`.state`), :class:`MultiTrainer` (:mod:`.multi`), the LR schedules and penalty
controllers (:mod:`.schedule`); for convenience also the data layer's :class:`BatchSource`
protocol, sources and :func:`open_source` (:mod:`abstopk.data.sources`,
:mod:`abstopk.data.matrix`, :mod:`abstopk.data.open`).
"""

_EXPORTS = {
    "TrainConfig": "abstopk.train.config",
    "Trainer": "abstopk.train.trainer",
    "train": "abstopk.train.trainer",
    "RunMismatchError": "abstopk.errors",
    "BatchSource": "abstopk.data.sources",
    "MatrixSource": "abstopk.data.matrix",
    "IterableSource": "abstopk.data.sources",
    "open_source": "abstopk.data.open",
    "TrainState": "abstopk.train.state",
    "StepReport": "abstopk.train.state",
    "MultiTrainer": "abstopk.train.multi",
    "L0Controller": "abstopk.train.schedule",
    "MultiplicativeL0Controller": "abstopk.train.schedule",
    "PenaltyController": "abstopk.train.schedule",
    "LRSchedule": "abstopk.train.schedule",
    "WarmupDecayLR": "abstopk.train.schedule",
    "ConstantThenLinearDecayLR": "abstopk.train.schedule",
    "lr_at": "abstopk.train.schedule",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'abstopk.train' has no attribute {name!r}")
