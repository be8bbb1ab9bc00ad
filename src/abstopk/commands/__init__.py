"""Sub-commands of the ``abstopk`` CLI, one module each; each exposes ``register(app)``."""

from __future__ import annotations

import dataclasses
from typing import Any


class UserError(Exception):
    """An error in the user's input: printed as one line, exit code 2, no traceback."""


def field_help(cls: type, name: str) -> str:
    """The ``help`` metadata of dataclass field ``name`` (configs' docs double as CLI help)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    raise KeyError(name)


def fail(message: Any) -> None:
    """Raise :class:`UserError` with ``message``."""
    raise UserError(str(message))
