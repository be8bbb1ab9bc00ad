"""One labelled sentence, the unit every labelled-data reader returns."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Example", "file_key"]


@dataclass(frozen=True)
class Example:
    """One labelled sentence: ``label`` (class name) and an optional second attribute."""

    text: str
    label: str
    attr2: str | None = None


def file_key(path: str | os.PathLike) -> tuple[str, int, int]:
    """``(real path, size, mtime_ns)``: the key under which a reader caches a parsed file."""
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)
