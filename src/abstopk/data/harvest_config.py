"""What a harvest is asked to do (:class:`HarvestConfig`, the field docs are the CLI help) and
what it did (:class:`HarvestResult`); :func:`parse_layers` reads ``"3,9"``. The harvest itself
is :func:`abstopk.data.harvest.harvest`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fields import doc_field

__all__ = ["HarvestConfig", "HarvestResult", "config_dict", "parse_layers"]


@dataclass
class HarvestConfig:
    """Settings of ``abstopk harvest`` (the field docs are the CLI help)."""

    model: str = doc_field("Model: 'smollm2-135m' (embedded default), a hub id "
                    "(from your HF cache), a local folder or a .gguf file.", "smollm2-135m")
    layers: list[int] = doc_field("Decoder block(s) L whose activations are harvested; several "
                           "(e.g. 3,9) harvest in one pass into OUT/layer_L.", [9])
    site: str = doc_field("Hook site: resid_post (output of block L, the paper's), "
                   "resid_pre, attn_out or mlp_out.", "resid_post")
    tokens: int = doc_field("Rows (token positions) to harvest per layer; the cache holds "
                     "exactly this many.", 1_000_000)
    context_size: int = doc_field("Tokens per packed context (the paper uses 128).", 128)
    batch_size: int = doc_field("Contexts per forward pass.", 16)
    dtype: str = doc_field("Storage dtype of the activations: float32, float16 or bfloat16.", "float32")
    out: str = doc_field("Cache folder to write (created; resumed when it holds a partial cache).", "")
    corpus: str = doc_field("Text: 'embedded' (default corpus), a .txt/.jsonl/.parquet "
                     "file, a folder of .txt files, or a Hugging Face dataset (owner/name).", "embedded")
    split: str = doc_field("Corpus split: train or heldout (they never share a document); all "
                           "(every document of a local file, not the embedded corpus).", "train")
    keep_bos: bool = doc_field("Keep the BOS positions (excluded by default, like pad).", False)
    seed: int = doc_field("Seed of the corpus order: documents shuffled, contexts mixed in "
                          "windows of 1024 (Hugging Face datasets: stream order).", 0)
    device: str = doc_field("Device of the model forward: cpu, cuda, cuda:1, ...", "cpu")
    model_dtype: str = doc_field("Dtype the model's forward runs in: float32, bfloat16, "
                                 "float16, or auto (bfloat16 where the device has bf16 units: "
                                 "CPU AMX / AVX512-BF16, CUDA with bf16; else float32). The "
                                 "manifest records the resolved dtype.", "float32")
    shard_rows: int = doc_field("Approximate rows per shard (shards hold whole contexts).", 65536)
    resume: bool = doc_field("Continue a partial cache in OUT (--no-resume starts over, "
                      "deleting its shards).", True)
    progress: bool = doc_field("Show a progress bar with tokens/s.", True)

    def __post_init__(self) -> None:
        from ..lm.hooks import SITES

        if isinstance(self.layers, int):
            self.layers = [self.layers]
        self.layers = [int(x) for x in self.layers]
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers must be distinct, got {self.layers}")
        if self.site not in SITES:
            raise ValueError(f"site must be one of {', '.join(SITES)}, got {self.site!r}")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {self.dtype!r}")
        if self.model_dtype not in ("float32", "float16", "bfloat16", "auto"):
            raise ValueError(f"model dtype must be float32, float16, bfloat16 or auto, "
                             f"got {self.model_dtype!r}")
        for name in ("tokens", "context_size", "batch_size", "shard_rows"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.split not in ("train", "heldout", "all"):
            raise ValueError(f"split must be train or heldout, got {self.split!r}")
        if self.split == "all" and self.corpus == "embedded":
            raise ValueError("split 'all' would mix the embedded corpus's train and held-out "
                             "documents; harvest train or heldout")
        if not self.out:
            raise ValueError("out (the cache folder) is required")


@dataclass
class HarvestResult:
    """Outcome of :func:`harvest`: the cache folders (one per layer), rows per layer, rows
    harvested by this call, seconds and tokens/s of this call (rows of one layer / s)."""

    paths: list[Path]
    total_rows: int
    new_rows: int
    seconds: float
    tokens_per_s: float
    resumed: bool


def parse_layers(text: str | int | list[int]) -> list[int]:
    """``"3,9"`` -> ``[3, 9]``; also accepts an int or a list."""
    if isinstance(text, int):
        return [text]
    if isinstance(text, list):
        return [int(x) for x in text]
    try:
        return [int(x) for x in str(text).replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise UserError(f"layers: expected integers separated by commas, got {text!r}") from None


def config_dict(cfg: HarvestConfig) -> dict[str, Any]:
    return asdict(cfg)
