"""The one ``--out`` rule of every command that writes (train, harvest, eval, export, sweep,
bench, demo).

1. A command never writes into its own input: the output path may not be an input path or
   lie inside an input folder (``abstopk export --sae A --out A`` would overwrite the SAE).
2. A finished artefact is never replaced unless the user says so: ``--force`` (replace it)
   or, for commands that can continue a run, ``--resume``.
3. Otherwise: :class:`~abstopk.errors.OutputExistsError` (a ``UserError``: one line, exit 2),
   and nothing has been written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..errors import OutputExistsError

__all__ = ["check_output", "check_output_file", "is_within"]


def _real(p: str | os.PathLike) -> Path:
    return Path(p).expanduser().resolve()


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` is ``folder`` or lies below it (symlinks resolved)."""
    p, f = _real(path), _real(folder)
    return p == f or f in p.parents


def _refuse_own_input(out: Path, inputs: Iterable[str | os.PathLike | None]) -> None:
    for src in inputs:
        if src is None or str(src) == "":
            continue
        s = Path(src)
        if _real(out) == _real(s):
            raise OutputExistsError(f"{out} is also the input; write to another --out")
        if s.is_dir() and is_within(out, s):
            raise OutputExistsError(f"{out} lies inside the input {s}; write to another --out")


def _refusal(out: Path, what: str, resumable: bool) -> OutputExistsError:
    how = ("pass --resume to continue it or --force to replace it" if resumable
           else "pass --force to replace it")
    return OutputExistsError(f"{out} already holds {what}; {how} (or choose another --out)")


def check_output(
    out: str | os.PathLike,
    *,
    what: str,
    finished: Sequence[str] | Callable[[Path], bool],
    inputs: Iterable[str | os.PathLike | None] = (),
    force: bool = False,
    resume: bool | None = None,
) -> Path:
    """Check an output FOLDER before a command writes into it; return it as a Path.

    ``what``: the artefact, for the message ("an exported SAE"). ``finished``: file names
    inside ``out`` whose presence marks a finished artefact, or a predicate on ``out``.
    ``inputs``: the command's input paths (files or folders; None entries are skipped).
    ``resume``: None when the command cannot continue a run; else whether ``--resume`` was
    given (a finished artefact may then be continued). Raises
    :class:`~abstopk.errors.OutputExistsError`.
    """
    out = Path(out)
    _refuse_own_input(out, inputs)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder")
    if not out.is_dir() or force or resume:
        return out
    done = finished(out) if callable(finished) else any((out / f).exists() for f in finished)
    if done:
        raise _refusal(out, what, resumable=resume is not None)
    return out


def check_output_file(
    out: str | os.PathLike | None,
    *,
    what: str,
    inputs: Iterable[str | os.PathLike | None] = (),
    force: bool = False,
) -> Path | None:
    """Check an output FILE (``--json``, ``--markdown``) before it is written; None passes.

    Refuses an input path, an existing folder, and an existing file unless ``force``.
    """
    if out is None:
        return None
    out = Path(out)
    _refuse_own_input(out, inputs)
    if out.is_dir():
        raise OutputExistsError(f"{out} is a folder; give a file name")
    if out.exists() and not force:
        raise _refusal(out, what, resumable=False)
    return out
