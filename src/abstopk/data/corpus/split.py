"""Where the processed corpus lives and which document goes to which split.

A document is held out when the first 8 bytes of ``sha256("abstopk-split:" + doc_id)``,
read as a big-endian integer ``h``, satisfy ``h / 2**64 < heldout_fraction`` (default 5 %).
The rule depends on the id only, so the split is stable across machines and runs. Local
text files reuse it with the document index as the id (:mod:`abstopk.data.text`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ...files import cache_root

__all__ = ["DEFAULT_HELDOUT_FRACTION", "SPLITS", "SPLIT_RULE", "corpus_dir", "is_heldout",
           "split_path"]

DEFAULT_HELDOUT_FRACTION = 0.05
SPLITS = ("train", "heldout")


def corpus_dir(cache: str | os.PathLike | None = None) -> Path:
    """Folder of the processed corpus: ``<cache>/corpus``."""
    return (Path(cache) if cache is not None else cache_root()) / "corpus"


def split_path(split: str, cache: str | os.PathLike | None = None) -> Path:
    """Path of a processed split file (``train.jsonl`` / ``heldout.jsonl``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return corpus_dir(cache) / f"{split}.jsonl"


def is_heldout(doc_id: str, fraction: float = DEFAULT_HELDOUT_FRACTION) -> bool:
    """Deterministic document-level split: ``sha256("abstopk-split:"+id)[:8] / 2**64 < f``."""
    h = hashlib.sha256(("abstopk-split:" + doc_id).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64 < fraction


SPLIT_RULE = ("document d is held out iff int(sha256('abstopk-split:' + d.id)[:8 bytes], "
              "big-endian) / 2**64 < heldout_fraction; the rest is train")

