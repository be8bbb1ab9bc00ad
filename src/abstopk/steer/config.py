"""``SteerConfig``: the settings of one steering comparison (``abstopk steer``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SteeringError
from ..fields import doc_field

__all__ = ["METHODS", "SteerConfig"]

METHODS = ("none", "prompt", "dim", "abstopk", "topk", "jumprelu", "relu")


@dataclass
class SteerConfig:
    """Validated on construction (:class:`~abstopk.errors.SteeringError`)."""

    axes: list[str] = doc_field("Concept axes: sentiment, gender, register.",
                                ["sentiment", "gender", "register"])
    methods: list[str] = doc_field(
        "Methods: none, prompt, dim and SAE architectures (abstopk, topk, jumprelu, relu, …).",
        list(METHODS))
    layer: int = doc_field("Block whose output (resid_post) is steered.", 6)
    strengths: list[float] = doc_field(
        "Signed strengths in units of the DiM's typical magnitude (95th-percentile "
        "|projection| on held-out corpus tokens); 0 is the unsteered row.", [-1.0, -0.5, 0.5, 1.0])
    n_prompts: int = doc_field("Neutral prompts per split (dev and test; at most 10).", 4)
    seeds: int = doc_field(
        "Generation seeds per prompt: continuation s of a prompt is sampled by its own "
        "generator seeded from (seed, s, prompt id), the same draws for every method.", 3)
    max_new_tokens: int = doc_field("Tokens generated per continuation.", 16)
    temperature: float = doc_field("Sampling temperature (0: greedy).", 0.7)
    top_p: float = doc_field("Nucleus sampling mass.", 0.9)
    positions: str = doc_field("Positions steered while generating: all, generated.", "all")
    latent_mode: str = doc_field("SAE latent edit: add (z_i += value) or set (z_i = value).",
                                 "add")
    latent_rule: str = doc_field(
        "How each SAE's latent(s) are chosen: output (largest measured move of the concept "
        "score on dev prompts among the top candidates by effect and cosine), effect "
        "(standardised activation difference) or cosine (decoder cosine with the DiM).",
        "output")
    candidates: int = doc_field(
        "Candidates per ranking (effect, cosine) and direction whose output effect is "
        "measured (latent rule output).", 3)
    effect_strength: float = doc_field(
        "Strength (× m) at which a candidate's output effect is measured.", 1.0)
    mc_tasks: list[str] = doc_field(
        "Multiple-choice tasks (BIG-bench, fetched by `abstopk data fetch bigbench`) scored "
        "as a capability cost; empty: none.", [])
    mc_questions: int = doc_field("Questions per multiple-choice task (first n, fixed).", 100)
    n_train: int = doc_field("Texts per axis end used to estimate directions and latents.", 128)
    capability_contexts: int = doc_field("Held-out corpus contexts for the capability loss.", 4)
    capability_context_size: int = doc_field("Tokens per capability context.", 48)
    magnitude_tokens: int = doc_field(
        "Held-out corpus tokens for the typical magnitude and latent units.", 2048)
    n_boot: int = doc_field("Bootstrap replicates of the confidence intervals.", 1000)
    seed: int = doc_field("Seed of the data splits, the sampling and the bootstrap.", 0)

    def __post_init__(self) -> None:
        from .axes import AXES

        self.axes, self.methods = list(self.axes), list(self.methods)
        self.strengths = [float(s) for s in self.strengths]
        bad = [a for a in self.axes if a not in AXES]
        if bad or not self.axes:
            raise SteeringError(f"unknown or no axes {bad}; choose from {', '.join(AXES)}")
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise SteeringError("methods must be given once each")
        if "none" not in self.methods:
            self.methods.insert(0, "none")  # the reference of fluency and capability
        if any(s == 0 for s in self.strengths) or len(set(self.strengths)) != len(self.strengths):
            raise SteeringError("strengths must be distinct and non-zero (0 is the 'none' row)")
        if not self.strengths:
            raise SteeringError("no strengths given")
        for name in ("n_prompts", "seeds", "max_new_tokens", "candidates", "mc_questions", "n_train", "capability_contexts",
                     "capability_context_size", "magnitude_tokens", "n_boot"):
            if getattr(self, name) < 1:
                raise SteeringError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.n_prompts > 10:
            raise SteeringError("n_prompts is at most 10 (each axis has 10 dev and 10 test prompts)")
        if self.layer < 0:
            raise SteeringError(f"layer must be ≥ 0, got {self.layer}")
        if self.positions not in ("all", "generated"):
            raise SteeringError(f"positions must be 'all' or 'generated', got {self.positions!r}")
        if self.latent_mode not in ("add", "set"):
            raise SteeringError(f"latent_mode must be 'add' or 'set', got {self.latent_mode!r}")
        if self.latent_rule not in ("output", "effect", "cosine"):
            raise SteeringError(f"latent_rule must be output, effect or cosine, got "
                                f"{self.latent_rule!r}")
        if not self.effect_strength > 0:
            raise SteeringError(f"effect_strength must be > 0, got {self.effect_strength}")
        self.mc_tasks = [t for t in self.mc_tasks if t]
        if not (self.temperature >= 0 and 0 < self.top_p <= 1):
            raise SteeringError("temperature must be ≥ 0 and top_p in (0, 1]")

    @property
    def sae_methods(self) -> list[str]:
        return [m for m in self.methods if m not in ("none", "prompt", "dim")]
