"""Jane Austen's six novels from ``r-cran-janeaustenr``'s R lazy-load database, by chapter."""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from .rst import is_prose, paragraphs

__all__ = ["AUSTEN_TITLES", "austen_chapters", "austen_novels"]

AUSTEN_TITLES = ("Emma", "Mansfield Park", "Northanger Abbey", "Persuasion",
                 "Pride and Prejudice", "Sense and Sensibility")


def austen_novels(rdb_path: str | os.PathLike) -> list[list[str]]:
    """The 6 novels of janeaustenr's R lazy-load database, each a list of text lines.

    Each object of ``Rdata.rdb`` is a 4-byte length + a zlib stream holding an XDR-serialised
    character vector; its strings are CHARSXPs (low byte of the flags == 9, then a 4-byte
    big-endian length, then the bytes; length -1 is NA). Order: Emma, Mansfield Park,
    Northanger Abbey, Persuasion, Pride and Prejudice, Sense and Sensibility.
    """
    b = Path(rdb_path).read_bytes()
    pos, novels = 0, []
    while pos < len(b):
        d = zlib.decompressobj()
        raw = d.decompress(b[pos + 4:])
        pos = len(b) - len(d.unused_data)
        lines, i, n_raw = [], 0, len(raw)
        while i < n_raw - 8:
            flags, n = struct.unpack_from(">Ii", raw, i)
            if flags & 0xFF == 9:
                if n == -1:
                    i += 8
                    continue
                if 0 <= n < 1 << 20 and i + 8 + n <= n_raw:
                    lines.append(raw[i + 8:i + 8 + n].decode("utf-8", "replace"))
                    i += 8 + n
                    continue
            i += 1
        novels.append(lines)
    return novels


_CHAPTER = re.compile(r"^\s*chapter\s+([ivxlc]+|\d+)\b", re.IGNORECASE)


def austen_chapters(novels: list[list[str]]) -> Iterator[tuple[str, list[str]]]:
    """``(doc_id, paragraphs)`` per chapter; front matter goes with the first chapter."""
    for title, lines in zip(AUSTEN_TITLES, novels, strict=False):
        chapters: list[list[str]] = [[]]
        for line in lines:
            if _CHAPTER.match(line) and chapters[-1] and any(x.strip() for x in chapters[-1]) \
                    and any(_CHAPTER.match(x) for x in chapters[-1]):
                chapters.append([])
            chapters[-1].append(line)
        slug = title.lower().replace(" ", "-")
        for c, ch in enumerate(chapters):
            paras = [p for p in paragraphs([ln.strip() for ln in ch]) if is_prose(p)]
            yield f"austen/{slug}/{c:03d}", paras

