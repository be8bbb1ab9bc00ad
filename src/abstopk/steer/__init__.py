"""Steering: concept directions (difference in means) and interventions on a running LM.

Reads saved SAEs and the LM; imports nothing above ``eval``. Submodules:
:mod:`~abstopk.steer.directions` (DiM, separation AUC, typical magnitude) and
:mod:`~abstopk.steer.latents` (SAE latents ranked as candidates for a concept:
decoder cosine, signed standardised effect) and
:mod:`~abstopk.steer.interventions` (add a direction, ablate it, edit SAE latents with the
error term kept — context managers that work inside ``generate``).

The comparison behind ``abstopk steer``: :mod:`~abstopk.steer.axes` (concept axes with
train/held and dev/test splits), :mod:`~abstopk.steer.scorers` (offline concept scorers),
:mod:`~abstopk.steer.generate` (seeded batched sampling, continuation perplexity),
:mod:`~abstopk.steer.costs` (held-out LM loss under an intervention),
:mod:`~abstopk.steer.methods` (DiM / SAE latents at signed strengths in one unit),
:mod:`~abstopk.steer.config`, :mod:`~abstopk.steer.run`, :mod:`~abstopk.steer.summary`,
:mod:`~abstopk.steer.stats`, and :mod:`~abstopk.steer.refusal` (the refusal table).
"""

from .axes import AXES, Axis, build_axis
from .config import SteerConfig
from .directions import (
    Direction,
    diff_in_means,
    pooled_activations,
    projection_auc,
    token_activations,
    typical_magnitude,
)
from .interventions import (
    LatentEdit,
    PositionTracker,
    ablate_direction,
    add_direction,
    edit_latents,
)
from .latents import LatentScore, latent_pair, latent_scores, rank_latents
from .refusal import RefusalConfig, run_refusal
from .run import run_steer
from .scorers import LexiconScorer, TextClassifierScorer, VaderScorer
from .summary import summarize

__all__ = [
    "AXES",
    "Axis",
    "Direction",
    "LatentEdit",
    "LatentScore",
    "LexiconScorer",
    "PositionTracker",
    "RefusalConfig",
    "SteerConfig",
    "TextClassifierScorer",
    "VaderScorer",
    "ablate_direction",
    "add_direction",
    "build_axis",
    "diff_in_means",
    "edit_latents",
    "latent_pair",
    "latent_scores",
    "pooled_activations",
    "projection_auc",
    "rank_latents",
    "run_refusal",
    "run_steer",
    "summarize",
    "token_activations",
    "typical_magnitude",
]
