"""Inference-time k: run a TopK-family SAE with another number of latents per token.

No retraining: only ``sae.cfg.k`` changes, so the encoder keeps the ``k`` largest (AbsTopK:
largest |·|) pre-activations instead of the trained number.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

__all__ = ["inference_k"]


@contextlib.contextmanager
def inference_k(sae: Any, k: int) -> Iterator[Any]:
    """Temporarily run a TopK-family ``sae`` with ``k`` latents per token (no retraining).

    Replaces ``sae.cfg`` by a copy with ``k`` (validated: 1 ≤ k ≤ d_sae) and restores it.
    """
    if not sae.op.needs_k:
        raise ValueError(f"inference-time k needs a TopK-family SAE, not {sae.cfg.architecture}")
    old = sae.cfg
    sae.cfg = dataclasses.replace(old, k=int(k))
    try:
        yield sae
    finally:
        sae.cfg = old
