"""``SAEConfig``: an SAE's architecture and metadata, validated on construction.

The metadata fields (model, hook, context size, dataset) follow SAELens's ``cfg.json`` names
so a saved folder reads in either library. The SAE itself is :mod:`abstopk.sae.model`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..fields import doc_field
from ..sparsity import Operator, get_operator

__all__ = ["CFG_FILE", "NORMALIZATIONS", "SAEConfig", "WEIGHTS_FILE"]

NORMALIZATIONS = ("none", "scalar", "layer_norm")
WEIGHTS_FILE = "sae_weights.safetensors"
CFG_FILE = "cfg.json"


@dataclass
class SAEConfig:
    """Architecture and metadata of an SAE. Validated on construction (``ValueError``)."""

    d_in: int = doc_field("Width of the input activations (the LM's residual width).")
    d_sae: int = doc_field("Number of latents (dictionary size).")
    architecture: str = doc_field("Sparsity operator: relu, jumprelu, absjumprelu, topk, abstopk, batchtopk, batchabstopk.", "abstopk")
    k: int | None = doc_field("Latents kept per token (TopK family; mean per token for batch variants).", None)
    n_steps: int = doc_field("Unrolled proximal-gradient steps in the encoder (1 = the paper's SAE).", 1)
    step_size: float = doc_field("Step size μ of the extra encoder steps (n_steps > 1).", 1.0)
    apply_b_dec_to_input: bool = doc_field("Subtract b_dec from the input before encoding.", True)
    normalize_activations: str = doc_field("Input normalisation: none, scalar (E‖x‖² = d_in, folded into weights on save), layer_norm.", "none")
    jumprelu_init_threshold: float = doc_field("Initial JumpReLU threshold θ (stored directly).", 0.05)
    jumprelu_bandwidth: float = doc_field("Rectangle-kernel width ε of the JumpReLU pseudo-gradient.", 0.05)
    batch_threshold_momentum: float = doc_field("EMA rate of the inference threshold of batch-level TopK/AbsTopK.", 0.01)
    use_sparse_kernels: bool = doc_field("Use the sparse encode/decode kernels (TopK family; JumpReLU family in training on CPU).", True)
    model_name: str | None = doc_field("Model the activations come from.", None)
    model_revision: str | None = doc_field("Model revision or file hash.", None)
    model_weight_format: str | None = doc_field("How the model's weights were stored, e.g. 'GGUF Q4_1 (dequantised to float32)' or 'safetensors BF16' (from the activation cache's manifest).", None)
    model_dtype: str | None = doc_field("Dtype the model's forward ran in when the activations were harvested.", None)
    hook_layer: int | None = doc_field("Layer (block index) of the hook.", None)
    hook_site: str | None = doc_field("Hook site: resid_post, resid_pre, mlp_out, attn_out.", None)
    hook_name: str | None = doc_field("Full hook name, e.g. blocks.9.hook_resid_post.", None)
    context_size: int | None = doc_field("Context length used when harvesting.", None)
    dataset: str | None = doc_field("Corpus / activation cache identity the SAE was trained on.", None)
    keep_bos: bool | None = doc_field("Whether BOS positions were in the training activations.", None)

    def __post_init__(self) -> None:
        for name in ("d_in", "d_sae", "n_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        op = get_operator(self.architecture)  # raises on unknown architecture
        if op.needs_k:
            if self.k is None:
                raise ValueError(f"architecture {self.architecture!r} needs k")
            if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
                raise ValueError(f"k must be an integer ≥ 1, got {self.k!r}")
            if self.k > self.d_sae:
                raise ValueError(f"k = {self.k} exceeds d_sae = {self.d_sae}")
        if self.normalize_activations not in NORMALIZATIONS:
            raise ValueError(
                f"normalize_activations must be one of {NORMALIZATIONS}, "
                f"got {self.normalize_activations!r}"
            )
        if not (self.step_size > 0 and math.isfinite(self.step_size)):
            raise ValueError(f"step_size must be positive and finite, got {self.step_size!r}")
        if not self.jumprelu_bandwidth > 0:
            raise ValueError("jumprelu_bandwidth must be > 0")
        if not self.jumprelu_init_threshold >= 0:
            raise ValueError("jumprelu_init_threshold must be ≥ 0")
        if not 0 < self.batch_threshold_momentum <= 1:
            raise ValueError("batch_threshold_momentum must be in (0, 1]")

    @property
    def operator(self) -> Operator:
        return get_operator(self.architecture)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAEConfig:
        """Build from a dict (e.g. cfg.json), ignoring unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
