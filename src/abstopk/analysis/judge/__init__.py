"""The local judge: a small chat model answering constrained yes/no questions about latents,
scored by the log-probability of "Yes" against "No".

* :mod:`.prompts` — the versioned prompt file (``analysis/data/judge_prompts_v2.toml``);
* :mod:`.completion` — :class:`CompletionScorer` (continuation log-probabilities) and the
  completion opposite test (a symmetrised PMI after "The opposite of …"), the default;
* :mod:`.scorers` — :class:`LocalChatScorer` (a transformers chat model, the embedded one by
  default) and :class:`EndpointScorer` (an OpenAI-compatible endpoint, only when configured);
* :mod:`.core` — :func:`judge_latents`: delphi-style detection per pole and "are the two poles
  opposites?" (completion test or yes/no question), then the paper's labels;
* :mod:`.run` — :func:`judge_stats`: a seeded sample of a statistics folder → ``judge.json``;
* :mod:`.planted` — :func:`validate`: planted latents of known type in real words.
"""

from .completion import CompletionScorer
from .config import JudgeConfig
from .core import judge_latents
from .planted import planted_latents, validate
from .prompts import JudgePrompts, load_prompts
from .run import judge_stats, make_scorer, make_scorers
from .scorers import EndpointScorer, LocalChatScorer, YesNoScorer

__all__ = ["CompletionScorer", "EndpointScorer", "JudgeConfig", "JudgePrompts", "LocalChatScorer", "YesNoScorer",
           "judge_latents", "judge_stats", "load_prompts", "make_scorer", "make_scorers",
           "planted_latents",
           "validate"]
