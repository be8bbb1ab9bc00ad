"""Training: the per-step hot path (:mod:`.step`) and the loop around it (:mod:`.trainer`).

Public names (imported lazily so ``import abstopk.train`` stays light): :class:`TrainConfig`
(:mod:`.config`), :class:`Trainer` and :func:`train` (:mod:`.trainer`); for convenience also
the data layer's :class:`BatchSource` protocol, sources and :func:`open_source`
(:mod:`abstopk.data.sources`, :mod:`abstopk.data.matrix`, :mod:`abstopk.data.open`).
"""

_EXPORTS = {
    "TrainConfig": "abstopk.train.config",
    "Trainer": "abstopk.train.trainer",
    "train": "abstopk.train.trainer",
    "RunMismatchError": "abstopk.train.trainer",
    "BatchSource": "abstopk.data.sources",
    "MatrixSource": "abstopk.data.matrix",
    "IterableSource": "abstopk.data.sources",
    "open_source": "abstopk.data.open",
    "L0Controller": "abstopk.train.schedule",
    "lr_at": "abstopk.train.schedule",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'abstopk.train' has no attribute {name!r}")
