"""Text sources: an iterator of documents (strings) for a named source and split.

``source`` may be

- ``"embedded"`` — the default corpus (:mod:`abstopk.data.corpus`), built on first use;
- a local file: ``.txt`` (documents separated by one or more blank lines), ``.jsonl``
  (one JSON object per line, field ``text``), ``.parquet`` (column ``text``, read with
  pyarrow in record batches); or a folder of ``.txt`` files (one document per file);
- a Hugging Face dataset: ``hf:NAME[:CONFIG]`` or a bare ``owner/name`` that is not a local
  path (e.g. ``monology/pile-uncopyrighted``), read with ``datasets.load_dataset(...,
  streaming=True)``.

Splits: ``"train"`` and ``"heldout"`` never share a document. The embedded corpus stores them
separately. For a local file, document ``i`` (0-based, in file order) is held out when
:func:`abstopk.data.corpus.is_heldout` says so for the id ``"<i>"`` (5 % of documents). For a
hub dataset, ``heldout`` reads its ``validation`` (else ``test``) split and ``train`` its
``train`` split; a dataset with only ``train`` is divided by the same row-index rule.
``"all"`` reads every document of a local file or of the embedded corpus.

Order: with ``seed`` (an int, default 0) the documents of a finite, indexable source (the
embedded corpus, .txt, .jsonl, .parquet, a folder) come in a seeded, shuffled, document-level
order (:mod:`abstopk.data.doc_order`; the split is decided on the file order first, so the
shuffle never moves a document between splits). ``seed=None`` reads them in file order. A
Hugging Face dataset is streamed and not indexable: it is read in its stream order whatever
the seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError
from .corpus import DEFAULT_HELDOUT_FRACTION, is_heldout

__all__ = ["describe_source", "iter_documents", "iter_hf_texts", "iter_texts", "resolve_source"]

SPLITS = ("train", "heldout", "all")
_HF_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")
LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")


def resolve_source(source: str | os.PathLike) -> tuple[str, str, str | None]:
    """``(kind, ref, config)`` with kind in {embedded, txt, txtdir, jsonl, parquet, hf}."""
    s = str(source)
    if s == "embedded":
        return "embedded", s, None
    if s.startswith("hf:"):
        name, _, config = s[3:].partition(":")
        if not name:
            raise UserError(f"text source {s!r}: expected hf:NAME[:CONFIG]")
        return "hf", name, config or None
    p = Path(s).expanduser()
    if p.is_dir():
        return "txtdir", str(p), None
    if p.suffix in LOCAL_SUFFIXES:
        if not p.exists():
            raise UserError(f"text source {s!r}: file not found")
        return p.suffix[1:], str(p), None
    if p.exists():
        raise UserError(f"text source {s!r}: unsupported file type (use .txt, .jsonl or "
                        ".parquet, or a folder of .txt files)")
    if _HF_NAME.match(s):
        return "hf", s, None
    raise UserError(f"text source {s!r} is neither 'embedded', an existing .txt/.jsonl/.parquet "
                    "file or folder, nor a Hugging Face dataset name (owner/name or hf:NAME)")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _keep(i: int, split: str) -> bool:
    return split == "all" or (is_heldout(str(i)) == (split == "heldout"))


def _iter_embedded(split: str) -> Iterator[tuple[str, str]]:
    from .corpus import ensure_corpus, split_path

    ensure_corpus()
    for sp in (("train", "heldout") if split == "all" else (split,)):
        with open(split_path(sp), encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    obj = json.loads(line)
                    yield obj["text"], str(obj.get("source", "embedded"))


def _iter_txt(path: str) -> Iterator[str]:
    """Documents of a text file: blocks separated by blank lines, whitespace-stripped."""
    buf: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                buf.append(line.rstrip("\n"))
            elif buf:
                yield "\n".join(buf).strip()
                buf = []
    if buf:
        yield "\n".join(buf).strip()


def _iter_txtdir(path: str) -> Iterator[str]:
    for p in sorted(Path(path).rglob("*.txt")):
        text = p.read_text(encoding="utf-8", errors="replace").strip()
        if text:
            yield text


def _iter_jsonl(path: str, field: str) -> Iterator[str]:
    from .doc_order import jsonl_field

    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield jsonl_field(line, field, f"{path}:{n}")


def _iter_parquet(path: str, field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if field not in pf.schema_arrow.names:
        raise UserError(f"{path}: no column {field!r} (columns: {pf.schema_arrow.names})")
    for batch in pf.iter_batches(batch_size=1024, columns=[field]):
        for t in batch.column(0).to_pylist():
            if t is not None:
                yield str(t)


def iter_hf_texts(path: str, config: str | None = None, split: str = "train", *,
                  data_files=None, text_field: str = "text") -> Iterator[str]:
    """Stream documents of a ``datasets`` dataset (hub name, or a builder such as "parquet"
    / "json" with ``data_files``), honouring the train/heldout rule of this module."""
    _check_split(split)
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise UserError("Hugging Face datasets need the 'datasets' package") from None
    try:
        dd = datasets.load_dataset(path, config, data_files=data_files, streaming=True)
    except Exception as e:  # network, unknown name, bad config: one clear line
        raise UserError(f"could not open Hugging Face dataset {path!r}"
                        f"{'' if config is None else ' config ' + repr(config)}: "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                        ) from None
    names = list(dd.keys())
    held = next((n for n in ("validation", "test") if n in names), None)
    train = "train" if "train" in names else names[0]
    if split == "all":
        plan = [(n, None) for n in names]
    elif held is not None:
        plan = [(train if split == "train" else held, None)]
    else:  # only one split: divide it by row index
        plan = [(train, split)]
    for name, rule in plan:
        ds = dd[name]
        for i, row in enumerate(ds):
            if rule is not None and not _keep(i, rule):
                continue
            if text_field not in row:
                raise UserError(f"dataset {path!r} has no field {text_field!r} "
                                f"(fields: {sorted(row)})")
            t = row[text_field]
            if t:
                yield str(t)


def iter_documents(source: str | os.PathLike = "embedded", split: str = "train", *,
                   text_field: str = "text", seed: int | None = 0
                   ) -> Iterator[tuple[str, str]]:
    """``(text, label)`` of the documents of ``source`` for ``split`` ("train", "heldout" or
    "all"): seeded shuffled order (``seed`` an int) or file order (``seed=None``); see the
    module docstring. ``label`` names the part of the corpus a document comes from: the
    embedded corpus's source (``linux-doc``, ``python-doc``, ``austen``), else the file,
    folder or dataset name."""
    _check_split(split)
    kind, ref, config = resolve_source(source)
    if kind == "hf":
        for t in iter_hf_texts(ref, config, split, text_field=text_field):
            yield t, ref
        return
    if seed is not None:
        from .doc_order import iter_shuffled_documents

        yield from iter_shuffled_documents(kind, ref, split, int(seed), text_field=text_field)
        return
    if kind == "embedded":
        yield from _iter_embedded(split)
        return
    label = Path(ref).name
    it = {"txt": lambda: _iter_txt(ref), "txtdir": lambda: _iter_txtdir(ref),
          "jsonl": lambda: _iter_jsonl(ref, text_field),
          "parquet": lambda: _iter_parquet(ref, text_field)}[kind]()
    for i, doc in enumerate(it):
        if _keep(i, split):
            yield doc, label


def iter_texts(source: str | os.PathLike = "embedded", split: str = "train", *,
               text_field: str = "text", seed: int | None = 0) -> Iterator[str]:
    """Documents of ``source`` for ``split`` ("train", "heldout" or "all"), in the seeded
    shuffled order (``seed=None``: file order); see :func:`iter_documents`."""
    for text, _ in iter_documents(source, split, text_field=text_field, seed=seed):
        yield text


def _file_fingerprint(path: Path) -> dict:
    """Size, mtime and sha256 (whole file up to 256 MiB, else of the first and last 16 MiB)."""
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if st.st_size <= 256 << 20:
            for blk in iter(lambda: f.read(1 << 20), b""):
                h.update(blk)
            what = "sha256"
        else:
            h.update(f.read(16 << 20))
            f.seek(-(16 << 20), 2)
            h.update(f.read())
            what = "sha256_head_tail_16MiB"
    return {"bytes": st.st_size, what: h.hexdigest()}


def describe_source(source: str | os.PathLike = "embedded", split: str = "train", *,
                    text_field: str = "text") -> dict:
    """A JSON-able description of a text source for manifests (identity, split, statistics)."""
    _check_split(split)
    kind, ref, config = resolve_source(source)
    desc: dict = {"source": str(source), "kind": kind, "split": split}
    if kind == "embedded":
        from .corpus import corpus_dir, ensure_corpus

        man = ensure_corpus()
        splits = ("train", "heldout") if split == "all" else (split,)
        desc.update({
            "name": "embedded",
            "path": str(corpus_dir()),
            "sources": {k: {kk: v[kk] for kk in ("package", "version")}
                        for k, v in man["sources"].items()},
            "processing_version": man["processing_version"],
            "heldout_fraction": man["heldout_fraction"],
            "split_rule": man["split_rule"],
            "n_docs": sum(man["splits"][s]["n_docs"] for s in splits),
            "n_chars": sum(man["splits"][s]["n_chars"] for s in splits),
            "sha256": {s: man["splits"][s]["sha256"] for s in splits},
        })
    elif kind == "hf":
        desc.update({"name": ref, "config": config, "text_field": text_field,
                     "split_rule": "train: 'train' split; heldout: 'validation' else 'test'; "
                                   "a single split is divided by row index with "
                                   f"abstopk.data.corpus.is_heldout(str(i), "
                                   f"{DEFAULT_HELDOUT_FRACTION})"})
    else:
        p = Path(ref).resolve()
        desc.update({"name": p.name, "path": str(p), "text_field": text_field,
                     "split_rule": "document i (0-based, file order) is held out iff "
                                   f"abstopk.data.corpus.is_heldout(str(i), "
                                   f"{DEFAULT_HELDOUT_FRACTION})"})
        if p.is_file():
            desc.update(_file_fingerprint(p))
        else:
            files = sorted(p.rglob("*.txt"))
            desc.update({"files": len(files), "bytes": sum(f.stat().st_size for f in files)})
    return desc
