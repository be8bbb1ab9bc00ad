"""Sub-commands of the ``abstopk`` CLI, one module each; each exposes ``register(app)``.

Nothing outside this package imports it: the library's errors live in :mod:`abstopk.errors`,
the config-field help in :mod:`abstopk.fields`.
"""

from __future__ import annotations

from typing import Any

from ..errors import UserError
from ..fields import field_help

__all__ = ["UserError", "fail", "field_help"]


def fail(message: Any) -> None:
    """Raise :class:`UserError` with ``message``."""
    raise UserError(str(message))
