"""Steering: concept directions (difference in means) and interventions on a running LM.

Reads saved SAEs and the LM; imports nothing above ``eval``. Submodules:
:mod:`~abstopk.steer.directions` (DiM, separation AUC, typical magnitude) and
:mod:`~abstopk.steer.latents` (SAE latents ranked as candidates for a concept:
decoder cosine, signed standardised effect) and
:mod:`~abstopk.steer.interventions` (add a direction, ablate it, edit SAE latents with the
error term kept — context managers that work inside ``generate``).
"""

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

__all__ = [
    "Direction",
    "LatentEdit",
    "LatentScore",
    "PositionTracker",
    "ablate_direction",
    "add_direction",
    "diff_in_means",
    "edit_latents",
    "latent_pair",
    "latent_scores",
    "pooled_activations",
    "projection_auc",
    "rank_latents",
    "token_activations",
    "typical_magnitude",
]
