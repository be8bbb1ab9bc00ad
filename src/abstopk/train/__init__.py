"""Training: the per-step hot path (:mod:`.step`) and the loop around it (:mod:`.trainer`).

Public names (imported lazily so ``import abstopk.train`` stays light): :class:`TrainConfig`
(:mod:`.config`), :class:`Trainer` and :func:`train` (:mod:`.trainer`), the
:class:`BatchSource` protocol and :func:`open_source` (:mod:`.data`).
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
    "L0Controller": "schedule",
    "lr_at": "schedule",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'abstopk.train' has no attribute {name!r}")
