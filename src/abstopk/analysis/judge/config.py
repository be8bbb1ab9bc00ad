"""``JudgeConfig``: the knobs of the local judge (also the CLI's options)."""

from __future__ import annotations

from dataclasses import dataclass

from ...fields import doc_field

__all__ = ["JudgeConfig"]


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
    opposite_threshold: float = doc_field("Log-odds of Yes above which the two poles count as "
                                          "opposites (default: chosen for the embedded judge on "
                                          "planted latents; recalibrate for another judge with "
                                          "judge-check).", -1.037)
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
                         ("judge_context", 0), ("judge_batch", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer ≥ {lo}, got {v!r}")
        if self.pole_test not in ("coherence", "detection"):
            raise ValueError(f"pole_test must be 'coherence' or 'detection', got {self.pole_test!r}")
        for name in ("detect_margin", "opposite_threshold"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
                raise ValueError(f"{name} must be a number, got {v!r}")
        if self.endpoint_url is not None:
            if not str(self.endpoint_url).startswith(("http://", "https://")):
                raise ValueError(f"endpoint_url must be an http(s) URL, got {self.endpoint_url!r}")
            if not self.endpoint_model:
                raise ValueError("an endpoint needs the model name to send (endpoint_model)")
            if self.judge_model is not None:
                raise ValueError("give either a local judge model or an endpoint, not both")
