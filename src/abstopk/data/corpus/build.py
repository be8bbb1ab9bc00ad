"""Build the corpus: read every document, split, deduplicate, write the splits and the manifest.

``fetch(cache)`` runs the whole pipeline (see :mod:`abstopk.data.corpus`);
``load_manifest(cache)`` is the validity check that makes a second ``fetch`` a no-op.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ...files import atomic_write, atomic_write_json, cache_root, sha256_file
from .asciidoc import ASCIIDOC_CLEANING_RULES, clean_asciidoc
from .austen import austen_chapters, austen_novels
from .debian import PACKAGES, SOURCE_OF, SOURCES, install_sources, package_version
from .html import HTML_CLEANING_RULES, clean_html
from .pod import POD_CLEANING_RULES, clean_pod
from .rst import CLEANING_RULES, clean_rst
from .split import DEFAULT_HELDOUT_FRACTION, SPLIT_RULE, SPLITS, corpus_dir, is_heldout
from .token_count import count_tokens

__all__ = ["CORPUS_FORMAT", "PROCESSING_VERSION", "ensure_corpus", "fetch", "load_manifest"]

CORPUS_FORMAT = "abstopk-corpus"
#: 1: linux-doc, python-doc, austen. 2: + postgresql-doc, django-doc, perl-doc, git-doc,
#: and the Python library manuals of sqlalchemy, flask, werkzeug, setuptools and sphinx as
#: one part, pylib-doc (the
#: first three parts' documents, ids and cleaning are unchanged; they are processed first, so
#: deduplication keeps their text as in version 1)
PROCESSING_VERSION = 2

#: HTML pages that are indexes or search forms, not text
_HTML_SKIP = frozenset({"index.html", "bookindex.html", "genindex.html", "search.html",
                        "py-modindex.html", "contents.html"})

#: one split's documents before deduplication: (doc_id, part, paragraphs)
Documents = list[tuple[str, str, list[str]]]


#: part -> (folder relative to the found path, file suffix, cleaner); the found path of
#: perl-doc and git-doc is a marker file, so their folder is its parent
_FILE_PARTS: dict[str, tuple[str, str, Callable[[str], list[str]]]] = {
    "linux-doc": (".", ".rst.txt", clean_rst),
    "python-doc": (".", ".rst.txt", clean_rst),
    "postgresql-doc": (".", ".html", clean_html),
    "django-doc": (".", ".html", clean_html),
    "perl-doc": ("..", ".pod", clean_pod),
    "git-doc": ("..", ".txt", clean_asciidoc),
    **{p: (".", ".html", clean_html) for p in ("sqlalchemy-doc", "flask-doc", "werkzeug-doc",
                                                "setuptools-doc", "sphinx-doc")},
}


def _part_files(part: str, found: Path) -> Iterator[tuple[str, Path]]:
    """``(doc_id, file)`` of one file-based part, sorted by path."""
    sub, suffix, _ = _FILE_PARTS[part]
    root = (found / sub).resolve() if sub != "." else found
    for p in sorted(glob.glob(str(root / "**" / f"*{suffix}"), recursive=True)):
        rel = os.path.relpath(p, root)
        top = rel.split(os.sep)[0]
        if top == "translations" or "/translations/" in p or top.startswith("_") \
                or (suffix == ".html" and os.path.basename(p) in _HTML_SKIP):
            continue
        yield f"{part}/{rel[:-len(suffix)]}", Path(p)


def _documents(found: dict[str, Path]) -> Iterator[tuple[str, str, list[str]]]:
    """``(doc_id, part, paragraphs)`` for every document, in a deterministic order: the
    version-1 parts first (linux-doc, python-doc, austen), then the others."""
    for part in ("linux-doc", "python-doc"):
        for doc_id, p in _part_files(part, found[part]):
            text = p.read_text(encoding="utf-8", errors="replace")
            yield doc_id, part, _FILE_PARTS[part][2](text)
    for doc_id, paras in austen_chapters(austen_novels(found["austen"])):
        yield doc_id, "austen", paras
    for part in _FILE_PARTS:
        if part in ("linux-doc", "python-doc"):
            continue
        for doc_id, p in _part_files(part, found[part]):
            text = p.read_text(encoding="utf-8", errors="replace")
            yield doc_id, SOURCE_OF[part], _FILE_PARTS[part][2](text)


def load_manifest(cache: str | os.PathLike | None = None, *, check: bool = True) -> dict | None:
    """The corpus manifest if present and valid (files match sizes and sha256), else None."""
    d = corpus_dir(cache)
    try:
        man = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if man.get("format") != CORPUS_FORMAT or man.get("processing_version") != PROCESSING_VERSION:
        return None
    for split in SPLITS:
        info = man.get("splits", {}).get(split)
        p = d / f"{split}.jsonl"
        if info is None or not p.exists() or p.stat().st_size != info.get("bytes"):
            return None
        if check and sha256_file(p) != info.get("sha256"):
            return None
    return man


def _write_splits(docs: dict[str, Documents], d: Path) -> tuple[dict, dict]:
    """Deduplicate and write ``d/{train,heldout}.jsonl``; returns ``(splits_info, dedup stats)``.

    Exact duplicate documents and paragraphs (sha1 of the cleaned text) are dropped, first
    occurrence kept; train is processed first, so held-out text never repeats a train
    paragraph. Documents left without paragraphs are dropped.
    """
    seen_par: set[bytes] = set()
    seen_doc: set[bytes] = set()
    stats = {"duplicate_docs": 0, "duplicate_paragraphs": 0, "empty_docs": 0}
    splits_info = {}
    for split in SPLITS:  # train first: held-out never repeats a train paragraph
        kept_lines: list[str] = []
        n_chars = 0
        per_part = {p: 0 for p in SOURCES}
        for doc_id, part, paras in docs[split]:
            dkey = hashlib.sha1("\n\n".join(paras).encode()).digest()
            if dkey in seen_doc:
                stats["duplicate_docs"] += 1
                continue
            seen_doc.add(dkey)
            kept = []
            for p in paras:
                k = hashlib.sha1(p.encode()).digest()
                if k in seen_par:
                    stats["duplicate_paragraphs"] += 1
                    continue
                seen_par.add(k)
                kept.append(p)
            if not kept:
                stats["empty_docs"] += 1
                continue
            text = "\n\n".join(kept)
            n_chars += len(text)
            per_part[part] += 1
            kept_lines.append(json.dumps({"id": doc_id, "source": part, "text": text},
                                         ensure_ascii=False))
        data = ("\n".join(kept_lines) + "\n").encode("utf-8")
        path = d / f"{split}.jsonl"
        atomic_write(path, lambda tmp, data=data: Path(tmp).write_bytes(data))
        splits_info[split] = {"file": path.name, "n_docs": len(kept_lines), "n_chars": n_chars,
                              "approx_tokens": n_chars // 4, "docs_per_source": per_part,
                              "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return splits_info, stats


def fetch(cache: str | os.PathLike | None = None, *, force: bool = False,
          heldout_fraction: float = DEFAULT_HELDOUT_FRACTION, count: bool = True,
          log: Callable[[str], None] | None = None) -> dict:
    """Install (if needed), clean, deduplicate, split and write the corpus; returns its manifest.

    With ``count`` the manifest's ``tokens`` holds the tokens per split and part counted with
    the embedded model's tokenizer (:func:`.token_count.count_tokens`; None without it).
    Idempotent: with a valid manifest for the same ``heldout_fraction`` nothing is done.
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    cache_p = Path(cache) if cache is not None else cache_root()
    man = None if force else load_manifest(cache_p)
    if man is not None and man.get("heldout_fraction") == heldout_fraction:
        log(f"corpus ready in {corpus_dir(cache_p)} (train {man['splits']['train']['n_docs']} "
            f"docs, heldout {man['splits']['heldout']['n_docs']} docs); nothing to do")
        return man
    t0 = time.perf_counter()
    found = install_sources(cache_p, log)
    t_install = time.perf_counter() - t0
    log("cleaning and splitting: " + ", ".join(f"{k}={v}" for k, v in found.items()))

    from tqdm import tqdm

    docs: dict[str, Documents] = {s: [] for s in SPLITS}
    n_files = {p: 0 for p in PACKAGES}
    raw_docs = 0
    for doc_id, part, paras in tqdm(_documents(found), desc="corpus", unit="doc",
                                    disable=None, mininterval=1.0):
        raw_docs += 1
        n_files[doc_id.split("/", 1)[0]] += 1
        split = "heldout" if is_heldout(doc_id, heldout_fraction) else "train"
        docs[split].append((doc_id, part, paras))

    d = corpus_dir(cache_p)
    splits_info, stats = _write_splits(docs, d)
    sources = {}
    for part, root in found.items():
        sources[part] = {**package_version(part, root, cache_p), "files": n_files[part]}
    man = {
        "format": CORPUS_FORMAT,
        "processing_version": PROCESSING_VERSION,
        "name": "embedded",
        "sources": sources,
        "raw_docs": raw_docs,
        "heldout_fraction": heldout_fraction,
        "split_rule": SPLIT_RULE,
        "document_ids": "linux-doc/<path under _sources>, python-doc/<path>, "
                        "austen/<novel>/<chapter index>, postgresql-doc/<page>, "
                        "django-doc/<path under html>, perl-doc/<pod name>, git-doc/<path>, "
                        "<package part>/<path under html> for the pylib-doc packages",
        "parts": SOURCE_OF,
        "cleaning_rules": CLEANING_RULES + HTML_CLEANING_RULES + POD_CLEANING_RULES
                          + ASCIIDOC_CLEANING_RULES,
        "dedup_rule": "exact duplicate documents and paragraphs (sha1 of the cleaned text) "
                      "dropped, first occurrence kept, train processed before heldout",
        "dedup": stats,
        "splits": splits_info,
        "seconds_install": round(t_install, 1),
        "seconds": round(time.perf_counter() - t0 - t_install, 1),
    }
    if count:
        t1 = time.perf_counter()
        log("counting tokens per part with the embedded model's tokenizer")
        man["tokens"] = count_tokens(d, log=log)
        man["seconds_tokens"] = round(time.perf_counter() - t1, 1)
    atomic_write_json(d / "manifest.json", man)
    log(f"wrote {d}: " + "; ".join(
        f"{s} {i['n_docs']} docs, {i['n_chars'] / 1e6:.1f} M chars" for s, i in splits_info.items())
        + f" (processing {man['seconds']} s, install {man['seconds_install']} s)")
    return man


def ensure_corpus(cache: str | os.PathLike | None = None,
                  log: Callable[[str], None] | None = None) -> dict:
    """The valid manifest, building the corpus first when it is missing (see :func:`fetch`)."""
    man = load_manifest(cache, check=False)
    if man is not None:
        return man
    return fetch(cache, log=log)
