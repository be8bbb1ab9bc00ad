"""``DashboardConfig``: what ``abstopk dashboard`` builds from (its field docs are the CLI help).

Either a statistics folder that already exists (``stats``), or an SAE and an activation cache
(``sae`` + ``cache``) from which the statistics are computed first (into ``SITE/stats``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...fields import doc_field

__all__ = ["DashboardConfig"]


@dataclass
class DashboardConfig:
    """Inputs of one dashboard build; validated on construction (ValueError)."""

    stats: str | None = doc_field(
        "Latent-statistics folder to render (format abstopk-latent-stats, with index.json).",
        None)
    sae: str | None = doc_field(
        "Saved SAE folder; its statistics are computed over the cache first (with the cache).",
        None)
    cache: str | None = doc_field("Activation cache to compute the SAE's statistics over.", None)
    model: str | None = doc_field(
        "Model for the unembedding and tokenizer (default: the SAE's / cache's model).", None)
    top_n: int = doc_field("Strongest contexts kept per sign and latent.", 20)
    max_rows: int | None = doc_field("Read at most this many cache rows (default: all).", None)
    pairs: str | None = doc_field(
        "Minimal-pairs file per latent (format abstopk-minimal-pairs; default: the statistics "
        "folder's pairs.json when it has one).", None)
    judge: str | None = doc_field(
        "Judge results file (format abstopk-judge, e.g. judge-completion.json; default: the "
        "statistics folder's judge.json when it has one).", None)
    directions: str | None = doc_field(
        "Directions to give a page each: a .safetensors file of named vectors (DiM, probe or "
        "steering directions; projected over the cache: the statistics' cache by default), "
        "or a JSON list of ready direction records {name, layer, top_pos, top_neg, "
        "logits_pos, logits_neg}.", None)

    def __post_init__(self) -> None:
        if self.stats and (self.sae or self.cache):
            raise ValueError("give either a statistics folder, or an SAE and a cache, not both")
        if not self.stats and not (self.sae and self.cache):
            raise ValueError("a dashboard needs a statistics folder, or an SAE together with "
                             "an activation cache")
        if self.top_n < 1:
            raise ValueError(f"top_n must be ≥ 1, got {self.top_n}")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows must be ≥ 1, got {self.max_rows}")
