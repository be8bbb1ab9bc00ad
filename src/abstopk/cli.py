"""The ``abstopk`` command line (typer).

Each sub-command lives in its own module under :mod:`abstopk.commands` and registers
itself on :data:`app`; this file only wires them together. Errors the user can fix are
reported as one line on stderr with exit code 2 (see :class:`abstopk.errors.UserError`).
"""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="abstopk",
    help="Sparse autoencoders (ReLU, JumpReLU, TopK, AbsTopK) on language-model activations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# modules that add commands to `app`; a missing one (work in progress) is skipped
COMMAND_MODULES = (
    "train", "data", "harvest", "cache", "evaluate", "export", "sweep", "bench", "demo",
    "dashboard", "analyze", "steer", "experiment",
)


_registered = False


def _register() -> None:
    """Import every command module once and let it add its commands to :data:`app`."""
    global _registered
    if _registered:
        return
    _registered = True
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"abstopk.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"abstopk.commands.{name}":
                continue
            raise
        mod.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``abstopk`` console script."""
    from .errors import UserError

    _register()
    try:
        app(args=argv, standalone_mode=True)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
