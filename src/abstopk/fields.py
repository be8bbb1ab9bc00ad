"""Documented dataclass fields: a config field's ``help`` metadata is also its CLI help.

Every config of the package (``SAEConfig``, ``TrainConfig``, ``HarvestConfig``,
``SweepConfig``, the synthetic benchmark's configs) declares its fields with
:func:`doc_field`; the CLI reads the text back with :func:`field_help`, so defaults and help
have one source.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["doc_field", "field_help"]


def doc_field(text: str, default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with ``metadata["help"] = text``.

    A list default is copied for each instance (``default_factory``); no default makes the
    field required.
    """
    meta = {"help": text}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_help(cls: type, name: str) -> str:
    """The ``help`` metadata of dataclass field ``name`` of ``cls``."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    raise KeyError(name)
