"""``JudgeConfig``: the knobs of the local judge (also the CLI's options)."""

from __future__ import annotations

from dataclasses import dataclass

from ...fields import doc_field

__all__ = ["JudgeConfig", "OPPOSITE_TESTS", "THRESHOLDS"]

OPPOSITE_TESTS = ("completion", "question")
# the default opposite threshold of each test, chosen for the embedded judge on planted
# latents (max Youden J, docs/latent-stats.md): question on seed 0 (all pairs, vs unrelated),
# completion on seed 0's even-numbered pairs (vs unrelated and related latents)
THRESHOLDS = {"question": -1.037, "completion": 4.389}


@dataclass
class JudgeConfig:
    """Validated on construction (``ValueError``)."""

    sample: int = doc_field("Latents judged: a seeded sample of the live ones (0: all).", 200)
    seed: int = doc_field("Seed of the latent sample and of the negative contexts.", 0)
    pole_test: str = doc_field("What makes a pole meaningful: 'coherence' (its focus tokens, "
                               "as the proxy) or 'detection' (the judge recognises held-out "
                               "contexts from an explanation, delphi-style).", "coherence")
    held_out: int = doc_field("Held-out contexts judged per pole (and as many contexts of "
                              "other latents as negatives).", 2)
    explain_words: int = doc_field("Distinct focus tokens that name a pole in its explanation.", 5)
    judge_context: int = doc_field("Tokens shown each side of a judged context's marked token.", 6)
    detect_margin: float = doc_field("A pole is detected when the judge's mean log-odds of Yes on "
                                     "its held-out contexts exceeds that on negatives by this.",
                                     1.0)
    opposite_test: str = doc_field("How the judge tells opposite poles from unrelated ones: "
                                   "'completion' (how much naming one pole's words raises the "
                                   "other's after 'The opposite of …', a PMI; needs a local "
                                   "model) or 'question' (the log-odds of Yes to a yes/no "
                                   "question; near chance with the embedded 135M judge).",
                                   "completion")
    opposite_threshold: float | None = doc_field("Score above which the two poles count as "
                                                 "opposites (default: the test's threshold "
                                                 "chosen for the embedded judge on planted "
                                                 "latents; recalibrate for another judge with "
                                                 "judge-check).", None)
    completion_words: int = doc_field("Words of each pole paired in the completion test "
                                      "(its cost grows with their square).", 3)
    judge_model: str | None = doc_field("Chat model that judges (default: the embedded "
                                        "SmolLM2-135M-Instruct; a local folder or cached hub id).",
                                        None)
    endpoint_url: str | None = doc_field("OpenAI-compatible endpoint (…/v1) to judge with "
                                         "instead of a local model; nothing is called without it.",
                                         None)
    endpoint_model: str | None = doc_field("Model name sent to the endpoint.", None)
    api_key_env: str = doc_field("Environment variable holding the endpoint's API key.",
                                 "OPENAI_API_KEY")
    prompts: str | None = doc_field("Judge prompts file (TOML; default: the shipped, versioned "
                                    "one).", None)
    judge_batch: int = doc_field("Prompts per forward pass of a local judge.", 16)

    def __post_init__(self) -> None:
        for name, lo in (("sample", 0), ("held_out", 1), ("explain_words", 1),
                         ("judge_context", 0), ("judge_batch", 1), ("completion_words", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer ≥ {lo}, got {v!r}")
        if self.pole_test not in ("coherence", "detection"):
            raise ValueError(f"pole_test must be 'coherence' or 'detection', got {self.pole_test!r}")
        if self.opposite_test not in OPPOSITE_TESTS:
            raise ValueError(f"opposite_test must be one of {OPPOSITE_TESTS}, "
                             f"got {self.opposite_test!r}")
        for name in ("detect_margin", "opposite_threshold"):
            v = getattr(self, name)
            if name == "opposite_threshold" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
                raise ValueError(f"{name} must be a number, got {v!r}")
        if self.endpoint_url is not None:
            if not str(self.endpoint_url).startswith(("http://", "https://")):
                raise ValueError(f"endpoint_url must be an http(s) URL, got {self.endpoint_url!r}")
            if not self.endpoint_model:
                raise ValueError("an endpoint needs the model name to send (endpoint_model)")
            if self.judge_model is not None:
                raise ValueError("give either a local judge model or an endpoint, not both")
            if self.opposite_test == "completion":
                raise ValueError("the completion opposite test needs a local model (an "
                                 "endpoint gives the first token only): use the 'question' "
                                 "opposite test with an endpoint")

    def threshold(self) -> float:
        """The opposite threshold in force: the configured one, else the test's default."""
        return float(THRESHOLDS[self.opposite_test] if self.opposite_threshold is None
                     else self.opposite_threshold)
