"""What the claim-1 plan consists of: its sizes (:class:`Claim1Config`), its steps
(:data:`STEPS`; another layer than 6 runs :data:`SUBSET_STEPS`) and its SAEs
(:func:`plan_runs`, each a :class:`Run`). The steps' work is done by
:mod:`abstopk.experiments.claim1`, whose docstring describes every step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..fields import doc_field
from .claim1_plan import DEFAULT_LAYER

__all__ = ["ABLATIONS", "AUX_DEAD_SHARE", "CONTEXT", "LAYER", "LAYER6_ONLY", "LRS", "LRS_10M",
           "NOT_IN_TABLE",
           "SITE", "STEPS", "SUBSET_STEPS", "Claim1Config", "Run", "plan_runs", "sae_lr", "steps_of"]

LAYER, SITE, CONTEXT = DEFAULT_LAYER, "resid_post", 128   # LAYER: the full plan's layer
LRS = (4e-4, 1e-3, 2e-3, 4e-3, 8e-3)
LRS_10M = (1e-3, 2e-3, 4e-3)   # the lr-10M step's rates (claim1_lr10m)
STEPS = ("harvest-1M", "heldout", "lr-sweep", "scaling", "ablation", "harvest-10M",
         "k32-10M", "lr-10M", "scaling-10M", "nosink-10M", "k-sweep", "batch", "jumprelu", "summary")
#: The ablation step's variants of the 1M k 32 runs (:class:`Run` ``variant``): ``aux`` =
#: AuxK active (dead window = :data:`AUX_DEAD_SHARE` of the run's tokens), ``nosink`` = trained
#: on the rows at context positions ≥ 1 (``CacheLoader(min_position=1)``). The step
#: ``nosink-10M`` trains the ``nosink`` variant of the 10M k 32 pair, seeds 0 and 1.
ABLATIONS = ("aux", "nosink")
AUX_DEAD_SHARE = 0.1
NOT_IN_TABLE = ("lr-sweep", "ablation", "lr-10M", "nosink-10M")   # steps whose SAEs are not rows of claim1.md
LAYER6_ONLY = ("k-sweep", "batch", "jumprelu")   # steps of layer 6's plan only
SUBSET_STEPS = tuple(s for s in STEPS if s not in LAYER6_ONLY)


def steps_of(layer: int) -> tuple[str, ...]:
    """The plan's steps on ``layer``: all of :data:`STEPS` on layer 6, else the subset."""
    return STEPS if layer == LAYER else SUBSET_STEPS


@dataclass
class Claim1Config:
    """Sizes of the plan (the defaults are the real run; tests shrink them)."""

    d_sae: int = doc_field("Latents of every SAE (8 × d_in).", 4608)
    batch_size: int = doc_field("Rows per training step.", 4096)
    train_rows: int = doc_field("Rows of the train cache in the end.", 10_500_000)
    first_rows: int = doc_field("Rows harvested before the learning-rate sweep.", 1_050_000)
    val_rows: int = doc_field("Rows of the validation cache (learning-rate choice).", 50_000)
    test_rows: int = doc_field("Rows of the test cache (reported numbers).", 100_000)
    lr_contexts: int = doc_field("Test contexts for loss recovered and KL.", 64)
    checkpoint_every: int = doc_field("Training steps between checkpoints.", 50)
    shard_rows: int = doc_field("Rows per cache shard (what a killed harvest loses at most).",
                                65536)
    steps: dict[str, int] = field(default_factory=lambda: {"0.1M": 24, "1M": 244, "10M": 2441},
                                  metadata={"help": "Training steps per token label."})
    model: str = doc_field("Model (the embedded SmolLM2-135M-Instruct Q4_1).", "smollm2-135m")

    def __post_init__(self) -> None:
        for k in ("d_sae", "batch_size", "train_rows", "first_rows", "val_rows", "test_rows",
                  "lr_contexts", "checkpoint_every", "shard_rows"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if set(self.steps) != {"0.1M", "1M", "10M"}:
            raise ValueError("steps must give the training steps of 0.1M, 1M and 10M")
        if self.steps["1M"] * self.batch_size > self.first_rows:
            raise ValueError("the 1M runs need more rows than harvested before the sweep")
        rows = self.steps["10M"] * self.batch_size
        if rows + rows // 64 > self.train_rows:   # a nosink run reads ≈ 1/64 more rows
            raise ValueError("the 10M runs need more rows than the train cache holds")


@dataclass(frozen=True)
class Run:
    """One SAE of the plan: name, architecture, k (target L0 for JumpReLU), tokens, seed, lr
    (None: the architecture's best from the sweep), the step it belongs to, and the ablation
    ``variant`` (one of :data:`ABLATIONS`, or "" for the plain recipe)."""

    step: str
    arch: str
    k: int
    tokens: str
    seed: int
    lr: float | None = None
    variant: str = ""

    @property
    def name(self) -> str:
        lr = "" if self.lr is None else f"_lr{self.lr:g}"
        var = f"_{self.variant}" if self.variant else ""
        return f"{self.arch}_k{self.k}_{self.tokens}_s{self.seed}{lr}{var}"


def plan_runs(layer: int = LAYER) -> list[Run]:
    """Every SAE of the plan on ``layer``, in the order they are trained (most deciding
    first); on a layer other than 6 the subset (of the 10M extra seeds only seed 1; no k-sweep,
    batch, JumpReLU)."""
    runs = [Run("lr-sweep", a, 32, "1M", 0, lr) for a in ("topk", "abstopk") for lr in LRS]
    runs += [Run("scaling", a, 32, t, s) for t in ("0.1M", "1M") for s in (0, 1, 2)
             for a in ("topk", "abstopk")]
    runs += [Run("ablation", a, 32, "1M", s, variant=v) for v in ABLATIONS for s in (0, 1)
             for a in ("topk", "abstopk")]
    runs += [Run("k32-10M", a, 32, "10M", 0) for a in ("topk", "abstopk")]
    # from the largest rate down, AbsTopK first: the rates nearest the 1M best come first
    runs += [Run("lr-10M", a, 32, "10M", 0, lr) for lr in sorted(LRS_10M, reverse=True)
             for a in ("abstopk", "topk")]
    # the 10M seeds (the verdict's error bars) before the nosink diagnostic
    runs += [Run("scaling-10M", a, 32, "10M", s) for s in (1, 2) for a in ("topk", "abstopk")]
    runs += [Run("nosink-10M", a, 32, "10M", s, variant="nosink") for s in (0, 1)
             for a in ("topk", "abstopk")]
    runs += [Run("k-sweep", a, k, "10M", 0) for k in (16, 64) for a in ("topk", "abstopk")]
    runs += [Run("batch", a, 32, "10M", 0) for a in ("batchtopk", "batchabstopk")]
    runs += [Run("jumprelu", "jumprelu", 32, "10M", 0)]
    if layer != LAYER:
        runs = [r for r in runs if r.step in ("lr-sweep", "ablation", "k32-10M", "lr-10M",
                                          "nosink-10M")
                or (r.step == "scaling" and r.tokens != "10M")
                or (r.step == "scaling-10M" and r.seed == 1)]
    return runs


def sae_lr(d: Path) -> float | None:
    """The learning rate a saved run was trained with (its train_config.json), or None."""
    try:
        return float(json.loads((d / "train_config.json").read_text())["lr"])
    except (OSError, ValueError, KeyError):
        return None
