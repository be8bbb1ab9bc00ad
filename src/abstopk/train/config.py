"""Training configuration: one validated dataclass whose field docs double as CLI help.

A run is identified by its :class:`TrainConfig` minus the fields in :data:`RUN_CONTROL_FIELDS`
(where to log, how often, on which device, whether to resume): two configs that agree on the
rest describe the same run, so ``--resume`` may continue one with the other.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..fields import doc_field
from ..sae import NORMALIZATIONS, SAEConfig
from ..sparsity import get_operator

__all__ = ["AUTOCASTS", "TrainConfig", "RUN_CONTROL_FIELDS", "B_DEC_INITS", "LR_DECAYS"]

B_DEC_INITS = ("mean", "geometric_median", "zeros")
AUTOCASTS = ("off", "bf16", "auto")
LR_DECAYS = ("linear", "cosine", "none")
#: ``l0_controller_band`` of a controlled run saved before the band existed (the error is
#: clamped to ±2, so a band of 2 never gates the integral)
LEGACY_L0_BAND = 2.0
#: the architectures whose target-L0 controller uses the band and the larger integral gain
JUMP_FAMILY = ("jumprelu", "absjumprelu")

#: fields that do not change the trained weights (or are paths), ignored when deciding
#: whether an out folder holds "the same run"
RUN_CONTROL_FIELDS = frozenset(
    {"out", "resume", "progress", "log_every", "checkpoint_every", "device", "activations",
     "prefetch"}
)


@dataclass
class TrainConfig:
    """Everything that defines a training run. Validated on construction (``ValueError``)."""

    # ------------------------------------------------------------------ the SAE
    architecture: str = doc_field("Sparsity operator: relu, jumprelu, absjumprelu, topk, abstopk, batchtopk, "
        "batchabstopk.", "abstopk")
    d_sae: int = doc_field("Number of latents (dictionary size).", 4096)
    k: int | None = doc_field("Latents kept per token (TopK family; mean per token for the batch variants).", None)
    d_in: int | None = doc_field("Expected input width; checked against the data (None: take it from the data).", None)
    n_steps: int = doc_field("Unrolled proximal-gradient steps in the encoder (1 = the paper's SAE).", 1)
    normalize_activations: str = doc_field("Input normalisation: scalar (one scale so that E‖x‖² = d_in, estimated on the first "
        "batches and folded into the weights on save), layer_norm (per token), none.", "scalar")
    jumprelu_init_threshold: float = doc_field("Initial JumpReLU / two-sided JumpReLU threshold θ (in normalised units).", 0.05)
    jumprelu_bandwidth: float = doc_field("Rectangle-kernel width ε of the JumpReLU pseudo-gradient.", 0.05)
    b_dec_init: str = doc_field("Initial decoder bias: mean or geometric_median of the first batches, or zeros.", "mean")
    init_batches: int = doc_field("Batches used to estimate the input scale and the b_dec initialisation (they are "
        "then trained on as usual).", 8)
    # ------------------------------------------------------------------ optimisation
    steps: int = doc_field("Optimisation steps (batches).", 10_000)
    batch_size: int = doc_field("Tokens (rows) per batch.", 4096)
    lr: float = doc_field("Peak Adam learning rate.", 4e-4)
    adam_beta1: float = doc_field("Adam β1.", 0.9)
    adam_beta2: float = doc_field("Adam β2.", 0.999)
    adam_eps: float = doc_field("Adam ε.", 1e-8)
    lr_warmup_frac: float = doc_field("Fraction of the steps spent in a linear LR warm-up (from lr/W to lr over W steps).", 0.02)
    lr_decay_frac: float = doc_field("Fraction of the steps, at the end, over which the LR decays to lr·lr_min_factor.", 0.2)
    lr_decay: str = doc_field("Shape of the final LR decay: linear, cosine, none.", "linear")
    lr_min_factor: float = doc_field("LR at the end of the decay, as a fraction of lr.", 0.0)
    seed: int = doc_field("Seed of the weight initialisation and of the data shuffle.", 0)
    # ------------------------------------------------------------------ sparsity penalty
    penalty_coeff: float | None = doc_field("Coefficient of the architecture's own penalty (ℓ1 on z·‖d‖ for relu, ℓ0 for the "
        "JumpReLU family); None: 1e-3 (the start value when --target-l0 is set).", None)
    target_l0: float | None = doc_field("Target mean L0 for relu / jumprelu / absjumprelu: a PI controller adapts the penalty "
        "coefficient so that the trained SAE lands at this many active latents per token.", None)
    threshold_lr_factor: float = doc_field("Learning rate of the JumpReLU threshold θ as a multiple of lr. θ lives on the scale "
        "of the pre-activations while Adam moves a parameter by at most ≈ lr per step, so "
        "with the weights' lr θ can hardly follow the target-L0 controller in a short run "
        "(docs/results.md).", 30.0)
    l0_controller_ki: float | None = doc_field("Integral gain of the target-L0 controller (per step, in log space). None: 0.1 "
        "for jumprelu / absjumprelu, 0.01 for relu.", None)
    l0_controller_kp: float = doc_field("Proportional gain of the target-L0 controller (in log space).", 1.0)
    l0_ema_beta: float = doc_field("EMA factor of the measured L0 the controller reads.", 0.9)
    l0_controller_band: float | None = doc_field("Outside this log ratio of the target L0 (0.5: below 0.61 or above 1.65 times it) "
        "the controller's integral waits while the measured L0 is already moving toward the "
        "target, so JumpReLU's fast initial fall of L0 does not wind it up. None: 0.5 for "
        "jumprelu / absjumprelu, off for relu; 2 or more: off (as before 2026-11-28).", None)
    penalty_coeff_min: float = doc_field("Lower clamp of the adapted penalty coefficient.", 1e-8)
    penalty_coeff_max: float = doc_field("Upper clamp of the adapted penalty coefficient.", 1e3)
    # ------------------------------------------------------------------ dead latents / AuxK
    dead_tokens: int = doc_field("A latent is dead when it has not fired (z != 0) for this many tokens.", 10_000_000)
    aux_k: int | None = doc_field("AuxK width k_aux (None: d_in / 2; 0 disables AuxK).", None)
    aux_coeff: float = doc_field("AuxK loss coefficient.", 1.0 / 32)
    threshold_calibration_tokens: int = doc_field("batchtopk / batchabstopk: training rows, read after the last step, over "
        "which the inference threshold is set so that the mean L0 there is k with the final weights (0: keep the "
        "EMA of the batches' smallest kept values, which under-fires).", 65536)
    # ------------------------------------------------------------------ data
    skip_nonfinite: bool = doc_field("Drop input rows holding NaN/Inf (counted and reported) instead of failing.", False)
    min_position: int = doc_field("Skip cached rows at context positions below this (1 drops each context's first "
        "token, the attention sink of mid layers); needs a cache with positions.", 0)
    prefetch: int = doc_field("Batches of a matrix file read ahead in a background thread (0: none).", 2)
    activations: str | None = doc_field("Activation matrix (.npy / .safetensors [N, d_in]) the run reads (recorded only).", None)
    # ------------------------------------------------------------------ run control
    out: str | None = doc_field("Output folder: final SAE (cfg.json + sae_weights.safetensors), train_config.json, "
        "metrics.jsonl, checkpoint/.", None)
    resume: bool = doc_field("Continue from the last checkpoint in --out (start fresh when there is none).", False)
    log_every: int = doc_field("Write metrics to metrics.jsonl every this many steps.", 50)
    checkpoint_every: int = doc_field("Checkpoint every this many steps (0: only at the end).", 1000)
    device: str = doc_field("Torch device: cpu, cuda, cuda:1, ...", "cpu")
    autocast: str = doc_field("Precision of the SAE's encoder/decoder products: off (float32), bf16, or auto (bf16 "
        "only where the device has bf16 units: CPU AMX / AVX512-BF16, CUDA with bf16). Master weights, Adam and "
        "the gradient accumulation stay float32; with the fused top-k kernels only the dense encoder GEMM runs "
        "in bf16 (the sparse products are gathers).", "off")
    progress: bool = doc_field("Show a progress bar.", True)

    def __post_init__(self) -> None:
        op = get_operator(self.architecture)  # ValueError naming the known ones
        for name in ("d_sae", "n_steps", "steps", "batch_size", "init_batches", "log_every",
                     "dead_tokens"):
            _check_pos_int(name, getattr(self, name))
        if self.checkpoint_every < 0:
            raise ValueError("checkpoint_every must be ≥ 0")
        if self.threshold_calibration_tokens < 0:
            raise ValueError("threshold_calibration_tokens must be ≥ 0")
        if self.prefetch < 0:
            raise ValueError("prefetch must be ≥ 0")
        if isinstance(self.min_position, bool) or not isinstance(self.min_position, int) \
                or self.min_position < 0:
            raise ValueError(f"min_position must be an integer ≥ 0, got {self.min_position!r}")
        if self.d_in is not None:
            _check_pos_int("d_in", self.d_in)
        if op.needs_k:
            if self.k is None:
                raise ValueError(f"architecture {self.architecture!r} needs k")
            _check_pos_int("k", self.k)
            if self.k > self.d_sae:
                raise ValueError(f"k = {self.k} exceeds d_sae = {self.d_sae}")
        if self.target_l0 is not None:
            if op.penalty is None:
                raise ValueError(
                    f"target_l0 applies to relu, jumprelu and absjumprelu; {self.architecture} "
                    "has its L0 set by k"
                )
            if not (self.target_l0 > 0 and math.isfinite(self.target_l0)):
                raise ValueError(f"target_l0 must be positive, got {self.target_l0!r}")
            if self.target_l0 > self.d_sae:
                raise ValueError(f"target_l0 = {self.target_l0} exceeds d_sae = {self.d_sae}")
        if self.autocast not in AUTOCASTS:
            raise ValueError(f"autocast must be one of {', '.join(AUTOCASTS)}, got {self.autocast!r}")
        if self.normalize_activations not in NORMALIZATIONS:
            raise ValueError(
                f"normalize_activations must be one of {NORMALIZATIONS}, "
                f"got {self.normalize_activations!r}"
            )
        if self.b_dec_init not in B_DEC_INITS:
            raise ValueError(f"b_dec_init must be one of {B_DEC_INITS}, got {self.b_dec_init!r}")
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay must be one of {LR_DECAYS}, got {self.lr_decay!r}")
        for name in ("lr", "adam_eps"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be positive and finite, got {v!r}")
        for name in ("adam_beta1", "adam_beta2", "l0_ema_beta"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise ValueError(f"{name} must be in [0, 1), got {v!r}")
        for name in ("lr_warmup_frac", "lr_decay_frac", "lr_min_factor"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        if self.lr_warmup_frac + self.lr_decay_frac > 1:
            raise ValueError("lr_warmup_frac + lr_decay_frac must be ≤ 1")
        if self.penalty_coeff is not None and not self.penalty_coeff >= 0:
            raise ValueError(f"penalty_coeff must be ≥ 0, got {self.penalty_coeff!r}")
        if not 0 < self.penalty_coeff_min < self.penalty_coeff_max:
            raise ValueError("need 0 < penalty_coeff_min < penalty_coeff_max")
        if not (self.threshold_lr_factor > 0 and math.isfinite(self.threshold_lr_factor)):
            raise ValueError(
                f"threshold_lr_factor must be positive, got {self.threshold_lr_factor!r}")
        if (self.l0_controller_ki is not None and self.l0_controller_ki < 0) \
                or self.l0_controller_kp < 0:
            raise ValueError("controller gains must be ≥ 0")
        if self.l0_controller_band is not None and not self.l0_controller_band > 0:
            raise ValueError(
                f"l0_controller_band must be positive, got {self.l0_controller_band!r}")
        if self.aux_k is not None and (isinstance(self.aux_k, bool) or self.aux_k < 0):
            raise ValueError(f"aux_k must be ≥ 0, got {self.aux_k!r}")
        if not self.aux_coeff >= 0:
            raise ValueError(f"aux_coeff must be ≥ 0, got {self.aux_coeff!r}")

    # ------------------------------------------------------------------ derived values
    @property
    def initial_penalty_coeff(self) -> float:
        """The penalty coefficient at step 0 (``penalty_coeff`` or 1e-3)."""
        return 1e-3 if self.penalty_coeff is None else float(self.penalty_coeff)

    def compute_dtype(self, device: str | None = None) -> str:
        """The dtype of the SAE's products: ``float32`` (autocast off), ``bfloat16`` (bf16),
        or for ``auto`` bfloat16 only where ``device`` (default: the config's) has bf16
        units (:func:`abstopk.precision.bf16_units`)."""
        from ..precision import bf16_units

        if self.autocast == "auto":
            return "bfloat16" if bf16_units(device or self.device) else "float32"
        return "bfloat16" if self.autocast == "bf16" else "float32"

    def resolved_l0_controller_ki(self) -> float:
        """The controller's integral gain: ``l0_controller_ki``, or for None 0.1 for the
        JumpReLU family and 0.01 for relu (``docs/pipeline.md``, "The target-L0 controller")."""
        if self.l0_controller_ki is not None:
            return float(self.l0_controller_ki)
        return 0.1 if self.architecture in JUMP_FAMILY else 0.01

    def resolved_l0_controller_band(self) -> float:
        """The controller's band: ``l0_controller_band``, or for None 0.5 for the JumpReLU
        family and ``math.inf`` (off) for the others; values ≥ 2 (the error's clamp) are off."""
        band = self.l0_controller_band
        if band is None:
            band = 0.5 if self.architecture in JUMP_FAMILY else math.inf
        return math.inf if band >= LEGACY_L0_BAND else float(band)

    def resolved_aux_k(self, d_in: int) -> int:
        """k_aux: ``aux_k`` or d_in // 2 (OpenAI's default), capped at d_sae."""
        ka = d_in // 2 if self.aux_k is None else self.aux_k
        return min(ka, self.d_sae)

    def sae_config(self, d_in: int, **metadata: Any) -> SAEConfig:
        """The :class:`SAEConfig` of the SAE this run trains on data of width ``d_in``."""
        if self.d_in is not None and self.d_in != d_in:
            raise ValueError(f"data has d_in = {d_in} but the config expects d_in = {self.d_in}")
        return SAEConfig(
            d_in=d_in,
            d_sae=self.d_sae,
            architecture=self.architecture,
            k=self.k if get_operator(self.architecture).needs_k else None,
            n_steps=self.n_steps,
            normalize_activations=self.normalize_activations,
            jumprelu_init_threshold=self.jumprelu_init_threshold,
            jumprelu_bandwidth=self.jumprelu_bandwidth,
            **metadata,
        )

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict (e.g. train_config.json), ignoring unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        d = dict(d)
        legacy = d.pop("autocast_bf16", None)   # before the autocast field: a bool
        if legacy is not None and "autocast" not in d:
            d["autocast"] = "bf16" if legacy else "off"
        if "l0_controller_band" not in d:   # saved before the band and the per-family gains
            if d.get("target_l0") is not None and d.get("architecture") in JUMP_FAMILY:
                d["l0_controller_band"] = LEGACY_L0_BAND
            elif d.get("l0_controller_ki") == 0.01:   # the old default, what None gives here
                d["l0_controller_ki"] = None
        return cls(**{k: v for k, v in d.items() if k in names})

    def run_identity(self) -> dict[str, Any]:
        """The fields that define the trained weights (all but :data:`RUN_CONTROL_FIELDS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_CONTROL_FIELDS}

    def differences(self, other: TrainConfig) -> list[str]:
        """Names of the run-identity fields where ``self`` and ``other`` disagree."""
        a, b = self.run_identity(), other.run_identity()
        return sorted(k for k in a if a[k] != b.get(k))


def _check_pos_int(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
