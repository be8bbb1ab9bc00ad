"""``StatsConfig``: the knobs of the per-latent statistics (also the CLI's options)."""

from __future__ import annotations

from dataclasses import dataclass

from ...fields import doc_field

__all__ = ["StatsConfig"]


@dataclass
class StatsConfig:
    """Validated on construction (``ValueError``)."""

    top_n: int = doc_field("Strongest rows kept per latent and sign.", 20)
    context_window: int = doc_field("Tokens shown on each side of a row's own token.", 8)
    n_quantile_bins: int = doc_field("Equal-width bins of the signed range to sample examples from.", 8)
    examples_per_bin: int = doc_field("Examples shown per quantile bin.", 5)
    n_logits: int = doc_field("Tokens listed as promoted by +z and by −z.", 10)
    max_rows: int | None = doc_field("Read only the first rows of the cache (default: all).", None)
    batch_rows: int = doc_field("Cache rows encoded per batch.", 4096)
    seed: int = doc_field("Seed of the reservoir samples behind the quantile examples.", 0)

    def __post_init__(self) -> None:
        for name in ("top_n", "n_quantile_bins", "examples_per_bin", "n_logits", "batch_rows"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.context_window, bool) or not isinstance(self.context_window, int) \
                or self.context_window < 0:
            raise ValueError(f"context_window must be an integer ≥ 0, got {self.context_window!r}")
        if self.max_rows is not None and (not isinstance(self.max_rows, int) or self.max_rows < 1):
            raise ValueError(f"max_rows must be a positive integer, got {self.max_rows!r}")
