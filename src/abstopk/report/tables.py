"""Generic table rendering: GitHub Markdown, rich tables and CSV files.

Rows are sequences of already formatted cells (strings); the table-family modules
(:mod:`.sweep_tables`, :mod:`.eval_table`, :mod:`.synthetic_table`, :mod:`.demo_tables`)
turn result dicts into such rows.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["markdown_table", "rich_table", "table_console", "write_csv"]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (``| a | b |`` lines, ``|---|---|`` rule), ending in
    a newline."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def rich_table(header: Sequence[str], rows: Iterable[Sequence[str]], *, left_columns: int = 1,
               bold_columns: Sequence[str] = (), no_wrap: bool = False, **options: Any):
    """A rich ``Table``: the first ``left_columns`` columns left-justified, the rest right;
    ``bold_columns`` (by header) in bold; ``options`` go to ``Table`` (title, caption, box)."""
    from rich.table import Table

    table = Table(**options)
    for i, col in enumerate(header):
        table.add_column(col, justify="left" if i < left_columns else "right", no_wrap=no_wrap,
                         style="bold" if col in bold_columns else None)
    for r in rows:
        table.add_row(*r)
    return table


def table_console(piped_width: int = 160):
    """A rich Console for wide tables: the terminal's width, or ``piped_width`` columns when
    stdout is not a terminal (a pipe would get 80 columns by default)."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else piped_width)


def write_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], path: str | Path) -> Path:
    """Write ``rows`` (dicts) with ``columns`` in order (None and missing values empty, other
    keys ignored), atomically; returns the path."""
    from ..files import atomic_write_bytes

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue().encode())
    return path
