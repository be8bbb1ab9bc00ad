"""Settings of a sparsity sweep and the SAEs it trains.

:class:`SweepConfig` holds the settings of ``abstopk sweep`` (its field docs are the CLI help);
:func:`sweep_specs` lists one :class:`SweepSpec` per (seed, architecture, sparsity) and
:func:`train_config_for` gives each its :class:`~abstopk.train.config.TrainConfig`. Sparsity is
matched across architectures: TopK-family SAEs are trained with ``k`` latents per token, the
penalised ones (JumpReLU, ReLU) with ``target_l0 = k`` (or an explicit ``jumprelu_targets``
list), so the L0 controller lands them at that mean L0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..fields import doc_field

__all__ = ["SweepConfig", "SweepSpec", "sweep_specs", "train_config_for"]


@dataclass
class SweepConfig:
    """Settings of ``abstopk sweep`` (field docs are the CLI help)."""

    cache: str = doc_field("Activation cache folder (train split) written by `abstopk harvest`.", "")
    out: str = doc_field("Output folder: sweep.csv, sweep.json, sweep.png, saes/.", "")
    architectures: list[str] = doc_field("Architectures to train (comma separated).", ["topk", "abstopk", "jumprelu"])
    k: list[int] = doc_field("Sparsity grid: k of TopK/AbsTopK and the target L0 of "
                      "JumpReLU/ReLU (comma separated).", [8, 16, 32, 64])
    jumprelu_targets: list[float] | None = doc_field("Target L0s of the penalised architectures "
                                              "(JumpReLU, ReLU); default: the k grid.", None)
    d_sae: int = doc_field("Latents per SAE.", 2304)
    steps: int = doc_field("Optimisation steps per SAE.", 1000)
    batch_size: int = doc_field("Tokens per batch.", 2048)
    lr: float = doc_field("Peak Adam learning rate.", 4e-4)
    seeds: list[int] = doc_field("Seeds (init and data order); mean ± std over them.", [0, 1, 2])
    dead_tokens: int = doc_field("A latent is dead (AuxK) after this many tokens unfired.", 1_000_000)
    jumprelu_init_threshold: float = doc_field("Initial JumpReLU threshold θ (normalised units; "
                                        "1.0 as in the paper's code, so that short runs start "
                                        "near a sparse code).", 1.0)
    l0_controller_ki: float | None = doc_field("Integral gain of the target-L0 controller (per step, "
                                 "log space); None: the trainer's default per architecture "
                                 "(0.1 for jumprelu, 0.01 for relu). The sweep's 0.02 without "
                                 "the band lands its short runs closer to the target "
                                 "(docs/pipeline.md).", 0.02)
    l0_controller_band: float | None = doc_field("The target-L0 controller's band (log ratio; "
                                 "2 or more: off; None: the trainer's default per "
                                 "architecture).", 2.0)
    eval_tokens: int = doc_field("Held-out activations for the reconstruction metrics.", 65536)
    eval_contexts: int = doc_field(
        "Held-out contexts for loss recovered / KL, zero and mean ablation (0: skip).", 64)
    eval_cache: str | None = doc_field("Held-out activation cache (default: harvest eval_tokens "
                                "held-out rows into OUT/heldout_cache with the cache's model).", None)
    inference_k: bool = doc_field("Also evaluate trained TopK/AbsTopK SAEs at every k of the "
                           "grid by changing k at inference (no retraining).", True)
    inference_k_from: int | None = doc_field("Training k whose SAEs get the inference-k sweep "
                                      "(default: the grid value closest to 32).", None)
    inference_k_loss: bool = doc_field("Also compute loss recovered for the inference-k rows.", False)
    device: str = doc_field("Torch device.", "cpu")
    progress: bool = doc_field("Progress bars.", True)

    def __post_init__(self) -> None:
        from ..sparsity import get_operator

        if not self.architectures:
            raise ValueError("architectures must not be empty")
        for a in self.architectures:
            get_operator(a)
        if len(set(self.architectures)) != len(self.architectures):
            raise ValueError("architectures must be distinct")
        if not self.k or any(int(k) < 1 for k in self.k):
            raise ValueError(f"k must be positive integers, got {self.k}")
        self.k = sorted({int(k) for k in self.k})
        if max(self.k) > self.d_sae:
            raise ValueError(f"k = {max(self.k)} exceeds d_sae = {self.d_sae}")
        if self.jumprelu_targets is not None:
            if not self.jumprelu_targets or any(t <= 0 for t in self.jumprelu_targets):
                raise ValueError("jumprelu targets must be positive")
            self.jumprelu_targets = sorted({float(t) for t in self.jumprelu_targets})
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if self.l0_controller_ki is not None and not self.l0_controller_ki >= 0:
            raise ValueError(f"l0_controller_ki must be >= 0, got {self.l0_controller_ki!r}")
        if self.l0_controller_band is not None and not self.l0_controller_band > 0:
            raise ValueError(
                f"l0_controller_band must be positive, got {self.l0_controller_band!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        for name in ("d_sae", "steps", "batch_size", "dead_tokens"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.eval_tokens < 1 or self.eval_contexts < 0:
            raise ValueError("eval_tokens must be >= 1 and eval_contexts >= 0")
        if not self.out:
            raise ValueError("out is required")

    def reference_k(self) -> int:
        """The training k whose TopK/AbsTopK SAEs get the inference-time k sweep."""
        if self.inference_k_from is not None:
            return int(self.inference_k_from)
        return min(self.k, key=lambda k: (abs(k - 32), k))


@dataclass(frozen=True)
class SweepSpec:
    """One SAE of a sweep: ``architecture`` at ``sparsity`` (k, or target L0), ``seed``."""

    architecture: str
    sparsity: float
    seed: int

    @property
    def uses_k(self) -> bool:
        from ..sparsity import get_operator

        return get_operator(self.architecture).needs_k

    @property
    def name(self) -> str:
        s = self.sparsity
        tag = f"k{int(s)}" if self.uses_k else (f"l0{int(s)}" if float(s).is_integer()
                                                 else f"l0{s:g}")
        return f"{self.architecture}_{tag}_s{self.seed}"


def sweep_specs(cfg: SweepConfig) -> list[SweepSpec]:
    """Every (architecture, sparsity, seed) of ``cfg``, seed-major."""
    from ..sparsity import get_operator

    specs = []
    for seed in cfg.seeds:
        for arch in cfg.architectures:
            op = get_operator(arch)
            if op.needs_k:
                grid: Sequence[float] = cfg.k
            elif op.penalty is not None:
                grid = cfg.jumprelu_targets or [float(k) for k in cfg.k]
            else:
                raise ValueError(f"{arch} has neither k nor a penalty; cannot be swept")
            specs.extend(SweepSpec(arch, float(s), int(seed)) for s in grid)
    return specs


def train_config_for(spec: SweepSpec, cfg: SweepConfig) -> Any:
    """The :class:`~abstopk.train.TrainConfig` of one SAE of the sweep."""
    from ..train.config import TrainConfig

    kw: dict[str, Any] = {}
    if spec.uses_k:
        kw["k"] = int(spec.sparsity)
    else:
        kw["target_l0"] = float(spec.sparsity)
    return TrainConfig(architecture=spec.architecture, d_sae=cfg.d_sae, steps=cfg.steps,
                       batch_size=cfg.batch_size, lr=cfg.lr, seed=spec.seed,
                       dead_tokens=cfg.dead_tokens, device=cfg.device, progress=False,
                       jumprelu_init_threshold=cfg.jumprelu_init_threshold,
                       l0_controller_ki=cfg.l0_controller_ki,
                       l0_controller_band=cfg.l0_controller_band, prefetch=0, **kw)
