"""Tokens per corpus part, counted with the embedded model's tokenizer, for the manifest.

``count_tokens(d)`` reads ``d/{train,heldout}.jsonl`` and returns, per split and per part
(the documents' ``source``), the length of the packed token stream the harvest builds from
them: for every document its tokens (no special tokens added) plus one BOS
(:mod:`abstopk.data.tokens`). Whole contexts of that stream are what can be harvested
(BOS positions are not kept by default, so a cache holds a little less: one row per document
fewer).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .split import SPLITS

__all__ = ["count_tokens"]


def count_tokens(d: Path, tokenizer=None, *, batch_docs: int = 64,
                 log: Callable[[str], None] | None = None) -> dict | None:
    """``{"tokenizer": name, "rule": ..., split: {part: tokens}, "total": {split: tokens}}``,
    or None when no tokenizer can be loaded (the embedded model's package is missing)."""
    name = "given"
    if tokenizer is None:
        from ...errors import ModelNotFound
        from ...lm import load_model

        try:
            _, tokenizer, info = load_model()
        except ModelNotFound as e:
            if log:
                log(f"tokens per part not counted: {e}")
            return None
        name = f"{info.ref} ({Path(info.source).name})"
    out: dict = {"tokenizer": name,
                 "rule": "per document: len(tokenizer(text, add_special_tokens=False)) + 1 BOS"}
    for split in SPLITS:
        counts: dict[str, int] = {}
        batch: list[str] = []
        parts: list[str] = []

        def flush(batch=batch, parts=parts, counts=counts) -> None:
            if batch:
                ids = tokenizer(batch, add_special_tokens=False)["input_ids"]
                for part, x in zip(parts, ids, strict=True):
                    counts[part] = counts.get(part, 0) + len(x) + 1
                batch.clear()
                parts.clear()

        with open(d / f"{split}.jsonl", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    obj = json.loads(line)
                    batch.append(obj["text"])
                    parts.append(str(obj.get("source", "embedded")))
                    if len(batch) >= batch_docs:
                        flush()
        flush()
        out[split] = dict(sorted(counts.items()))
    out["total"] = {s: sum(out[s].values()) for s in SPLITS}
    return out
