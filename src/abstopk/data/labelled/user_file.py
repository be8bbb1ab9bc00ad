"""A user's own labelled file: ``.jsonl`` or ``.csv`` with ``text``, ``label`` [, ``attr2``]."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from ...errors import DataUnavailable
from .example import Example

__all__ = ["read_user_file"]


def read_user_file(path: str | os.PathLike) -> list[Example]:
    """A user's labelled file: ``.jsonl`` (``{"text", "label"[, "attr2"]}`` per line) or
    ``.csv`` (header naming ``text``, ``label`` [, ``attr2``]). Labels are read as strings."""
    p = Path(path)
    if not p.is_file():
        raise DataUnavailable(f"labelled file {p} not found")
    rows: list[dict] = []
    if p.suffix == ".jsonl":
        with open(p, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise DataUnavailable(f"{p}:{i}: not JSON ({e.msg})") from e
    elif p.suffix == ".csv":
        with open(p, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        raise DataUnavailable(f"{p}: labelled files must be .jsonl or .csv")
    out = []
    for i, r in enumerate(rows, 1):
        if not isinstance(r, dict) or "text" not in r or "label" not in r:
            raise DataUnavailable(f"{p}: row {i} lacks a 'text' or 'label' field")
        a2 = r.get("attr2")
        out.append(Example(str(r["text"]), str(r["label"]), None if a2 in (None, "") else str(a2)))
    if not out:
        raise DataUnavailable(f"{p}: no rows")
    return out

