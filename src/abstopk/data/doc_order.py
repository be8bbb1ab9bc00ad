"""Documents of a finite, indexable text source in a seeded, shuffled, document-level order.

One indexing pass records, per document in file order, a small *handle* (no text is kept):

==============  ===============================================================  ============
source          handle                                                           label
==============  ===============================================================  ============
embedded        (split file, byte offset, ``source``, bytes of the JSON line)      its ``source``
``.jsonl``      (byte offset, line number) of each non-blank line                file name
``.txt``        byte range of each block of non-blank lines                      file name
folder of .txt  path of each non-empty file                                      folder name
``.parquet``    (row group, row) of each non-null text                           file name
==============  ===============================================================  ============

The split rule (:func:`abstopk.data.corpus.is_heldout` on the document index ``"<i>"``, the
same rule as the file-order readers of :mod:`abstopk.data.text`) selects the split's handles;
the order is then ``numpy.random.default_rng([seed, 0x5EED]).permutation(n)`` over them, and
each document is read back by its handle (seek + read). Memory is O(number of documents)
(16-odd bytes each), never the corpus text.

The embedded corpus's documents are *interleaved by part* (its ``source``: linux-doc,
python-doc, austen, postgresql-doc, ...): each part's documents are permuted on their own
(``default_rng([seed, 0x5EED, j])`` for the part's index ``j`` in order of first appearance
in the file), each document gets the key (bytes of the part's documents before it in that
order) / (the part's bytes), and all documents are read by increasing key (ties: part
index). Every part starts at the front of the stream and the parts follow one another in
proportion to their size, so the first few thousand tokens hold text of every part; a plain
permutation of ~5,700 documents left the smaller parts out of the first windows.

A parquet file is shuffled in *blocks*: its row groups in a permuted order, the rows of each
row group in a permuted order, so one row group at a time is held in memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .corpus import is_heldout

__all__ = ["ORDER_RULE", "document_order", "interleaved_order", "iter_shuffled_documents"]

_SALT = 0x5EED

ORDER_RULE = ("documents of the split in the order numpy.random.default_rng([seed, 0x5EED])"
              ".permutation(n_docs) over their file order (parquet: row groups permuted, then "
              "rows within each row group; embedded corpus: each part permuted with "
              "default_rng([seed, 0x5EED, part index]), documents read by increasing "
              "(bytes of the part before the document) / (bytes of the part), ties by part "
              "index)")


def interleaved_order(parts: list[str], sizes: list[int], seed: int) -> list[int]:
    """Positions ``0..n-1`` interleaved by part (module docstring): each part permuted with
    ``default_rng([seed, 0x5EED, j])``, then all read by increasing start fraction within
    their part. ``sizes`` weigh the documents (bytes); a part of size 0 counts one per doc."""
    index: dict[str, list[int]] = {}
    for i, p in enumerate(parts):
        index.setdefault(p, []).append(i)
    keyed: list[tuple[float, int, int]] = []
    for j, members in enumerate(index.values()):
        perm = np.random.default_rng([int(seed), _SALT, j]).permutation(len(members))
        w = [max(int(sizes[members[int(k)]]), 1) for k in perm]
        total, before = float(sum(w)), 0
        for k, wk in zip(perm, w, strict=True):
            keyed.append((before / total, j, members[int(k)]))
            before += wk
    keyed.sort()
    return [i for _, _, i in keyed]


def document_order(n: int, seed: int, blocks: list[int] | None = None) -> list[int]:
    """Positions ``0..n-1`` in the seeded order. With ``blocks`` (block id per position,
    positions of one block consecutive) the blocks are permuted, then the positions within
    each block, so that one block is read at a time."""
    rng = np.random.default_rng([int(seed), _SALT])
    if blocks is None:
        return [int(i) for i in rng.permutation(n)]
    starts: dict[int, list[int]] = {}
    for i, b in enumerate(blocks):
        starts.setdefault(b, []).append(i)
    groups = list(starts.values())
    out: list[int] = []
    for g in rng.permutation(len(groups)):
        members = groups[int(g)]
        out.extend(members[int(j)] for j in rng.permutation(len(members)))
    return out


_SOURCE_FIELD = re.compile(rb'"source":\s*"([^"]*)"')


def _line_index(path: Path, with_source: bool = False) -> list[tuple]:
    """(byte offset, 1-based line number) of every non-blank line; ``with_source`` adds the
    line's ``"source"`` field (read from its first 4 kB) and its length in bytes."""
    out, off = [], 0
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if line.decode("utf-8", "replace").strip():
                if with_source:
                    m = _SOURCE_FIELD.search(line[:4096])
                    out.append((off, n, m.group(1).decode() if m else "embedded", len(line)))
                else:
                    out.append((off, n))
            off += len(line)
    return out



def _block_index(path: Path) -> list[tuple[int, int]]:
    """Byte ranges [start, end) of the blocks of non-blank lines (blank-line separated)."""
    out: list[tuple[int, int]] = []
    off, start, end = 0, None, 0
    with open(path, "rb") as f:
        for line in f:
            if line.decode("utf-8", "replace").strip():
                if start is None:
                    start = off
                end = off + len(line)
            elif start is not None:
                out.append((start, end))
                start = None
            off += len(line)
    if start is not None:
        out.append((start, end))
    return out


def _embedded() -> tuple[list, Callable[[Any], tuple[str, str]]]:
    from .corpus import ensure_corpus, split_path

    ensure_corpus()
    handles = []
    for sp in ("train", "heldout"):
        handles += [(sp, off, src, nb) for off, _, src, nb in
                    _line_index(split_path(sp), with_source=True)]
    files: dict[str, Any] = {}

    def read(h):
        sp, off = h[:2]
        f = files.get(sp) or files.setdefault(sp, open(split_path(sp), "rb"))  # noqa: SIM115
        f.seek(off)
        obj = json.loads(f.readline())
        return obj["text"], str(obj.get("source", "embedded"))

    read.files = files  # type: ignore[attr-defined]
    return handles, read


def jsonl_field(line: str, field: str, where: str) -> str:
    """``str(obj[field])`` of one JSON line; ``UserError`` naming ``where`` (file:line) if the
    line is not a JSON object with that field."""
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise UserError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(obj, dict) or field not in obj:
        raise UserError(f"{where}: no field {field!r}")
    return str(obj[field])


def _jsonl(path: Path, field: str):
    f = open(path, "rb")  # noqa: SIM115 - closed by iter_shuffled_documents

    def read(h):
        off, n = h
        f.seek(off)
        line = f.readline().decode("utf-8", "replace")
        return jsonl_field(line, field, f"{path}:{n}"), path.name

    read.files = {"f": f}  # type: ignore[attr-defined]
    return _line_index(path), read


def _txt(path: Path):
    f = open(path, "rb")  # noqa: SIM115 - closed by iter_shuffled_documents

    def read(h):
        start, end = h
        f.seek(start)
        text = f.read(end - start).decode("utf-8", "replace").replace("\r\n", "\n")
        return text.strip(), path.name

    read.files = {"f": f}  # type: ignore[attr-defined]
    return _block_index(path), read


def _txtdir(path: Path):
    handles = [p for p in sorted(path.rglob("*.txt"))
               if p.read_text(encoding="utf-8", errors="replace").strip()]

    def read(p):
        return p.read_text(encoding="utf-8", errors="replace").strip(), path.name

    return handles, read


def _parquet(path: Path, field: str):
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if field not in pf.schema_arrow.names:
        raise UserError(f"{path}: no column {field!r} (columns: {pf.schema_arrow.names})")
    handles = []
    for g in range(pf.num_row_groups):
        col = pf.read_row_group(g, columns=[field]).column(0)
        handles += [(g, r) for r, ok in enumerate(col.is_valid().to_pylist()) if ok]
    current: dict[str, Any] = {"g": None, "rows": None}

    def read(h):
        g, r = h
        if current["g"] != g:
            current.update(g=g, rows=pf.read_row_group(g, columns=[field]).column(0).to_pylist())
        return str(current["rows"][r]), path.name

    return handles, read


def iter_shuffled_documents(kind: str, ref: str, split: str, seed: int, *,
                            text_field: str = "text") -> Iterator[tuple[str, str]]:
    """``(text, label)`` of every document of ``split`` ("train", "heldout", "all") of a
    source of ``kind`` (embedded, txt, txtdir, jsonl, parquet; see
    :func:`abstopk.data.text.resolve_source`), in the seeded order of the module docstring."""
    path = Path(ref)
    if kind == "embedded":
        handles, read = _embedded()
        if split != "all":
            handles = [h for h in handles if h[0] == split]
    else:
        handles, read = {"txt": lambda: _txt(path), "txtdir": lambda: _txtdir(path),
                         "jsonl": lambda: _jsonl(path, text_field),
                         "parquet": lambda: _parquet(path, text_field)}[kind]()
        if split != "all":
            handles = [h for i, h in enumerate(handles)
                       if is_heldout(str(i)) == (split == "heldout")]
    if kind == "embedded":
        order = interleaved_order([h[2] for h in handles], [h[3] for h in handles], seed)
    else:
        blocks = [h[0] for h in handles] if kind == "parquet" else None
        order = document_order(len(handles), seed, blocks)
    try:
        for i in order:
            text, label = read(handles[i])
            if text:
                yield text, label
    finally:
        for f in getattr(read, "files", {}).values():
            f.close()
