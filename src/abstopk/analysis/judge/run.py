"""Judging a statistics folder: a seeded sample of its live latents → ``STATS/judge.json``.

``judge.json`` (format ``abstopk-judge`` version 2; version 1 lacked ``opposite_test``,
``opposite_threshold``, ``completion`` and the records' ``opposite_test``, ``opposite_score``,
``opposite_pmi``)::

    {"format", "version", "prompts": {version, source, sha256}, "judge": yes/no scorer meta,
     "completion": completion scorer meta (null for the question test),
     "opposite_test", "opposite_threshold",                  # the test that ran, its threshold
     "config": JudgeConfig, "sae": ..., "signed": bool, "sample": {"seed", "n", "of_live"},
     "bidirectional_fraction", "ci95", "counts", "live",      # of the judged sample
     "proxy_on_sample": {counts, bidirectional_fraction, ci95},   # the proxy's labels, same latents
     "opposite_axis_fraction", "seconds", "tokens_run",
     "latents": [judge record, ...]}                           # see .core.judge_latents

The fraction is over the judged sample (live latents only) with a 95 % Wilson interval.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...errors import StatsFormatError, UserError
from ...files import atomic_write_json
from ..bidirectionality import fraction_with_ci, wilson_interval
from .completion import CompletionScorer, LogProbScorer
from .config import JudgeConfig
from .core import judge_latents
from .prompts import JudgePrompts, load_prompts
from .scorers import EndpointScorer, LocalChatScorer, YesNoScorer

__all__ = ["FORMAT", "VERSION", "judge_stats", "make_scorer", "make_scorers"]

FORMAT = "abstopk-judge"
VERSION = 2


def make_scorer(cfg: JudgeConfig, prompts: JudgePrompts, *, model=None, tokenizer=None
                ) -> YesNoScorer:
    """The scorer ``cfg`` names: an endpoint when ``endpoint_url`` is set, else a local chat
    model (``model``/``tokenizer`` if given, else ``judge_model`` or the embedded one)."""
    if cfg.endpoint_url:
        return EndpointScorer(cfg.endpoint_url, str(cfg.endpoint_model), prompts.system,
                              api_key_env=cfg.api_key_env)
    name, revision = cfg.judge_model or "embedded", ""
    if model is None:
        from ...lm import load_model
        from ...lm.load import DEFAULT_MODEL

        model, tokenizer, info = load_model(cfg.judge_model or DEFAULT_MODEL)
        name, revision = info.ref, info.revision
    return LocalChatScorer(model, tokenizer, prompts.system, batch_size=cfg.judge_batch,
                           name=name, revision=revision)


def make_scorers(cfg: JudgeConfig, prompts: JudgePrompts, *, model=None, tokenizer=None
                 ) -> tuple[YesNoScorer, LogProbScorer | None]:
    """The yes/no scorer and, for the completion opposite test, a completion scorer on the
    same local model (loaded once)."""
    if cfg.endpoint_url or cfg.opposite_test != "completion":
        return make_scorer(cfg, prompts, model=model, tokenizer=tokenizer), None
    name, revision = cfg.judge_model or "embedded", ""
    if model is None:
        from ...lm import load_model
        from ...lm.load import DEFAULT_MODEL

        model, tokenizer, info = load_model(cfg.judge_model or DEFAULT_MODEL)
        name, revision = info.ref, info.revision
    yes_no = LocalChatScorer(model, tokenizer, prompts.system, batch_size=cfg.judge_batch,
                             name=name, revision=revision)
    return yes_no, CompletionScorer(model, tokenizer, batch_size=cfg.judge_batch, name=name,
                                    revision=revision)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StatsFormatError(f"{path} is missing") from None
    except (OSError, ValueError) as e:
        raise StatsFormatError(f"{path} is not readable JSON ({e})") from None


def judge_stats(stats_dir: str | Path, cfg: JudgeConfig | None = None, *,
                scorer: YesNoScorer | None = None, prompts: JudgePrompts | None = None,
                out: str | Path | None = None, completer: LogProbScorer | None = None
                ) -> dict[str, Any]:
    """Judge a seeded sample of the live latents of ``stats_dir``; write ``out`` (default
    ``STATS/judge.json``) and return its content. Without ``scorer`` the scorers of ``cfg``
    are made (:func:`make_scorers`)."""
    cfg = cfg or JudgeConfig()
    prompts = prompts or load_prompts(cfg.prompts)
    d = Path(stats_dir)
    idx = _read(d / "index.json")
    if not isinstance(idx, dict) or not isinstance(idx.get("latents"), list):
        raise StatsFormatError(f"{d / 'index.json'} is not a latent-statistics index")
    live = sorted(int(r["index"]) for r in idx["latents"] if r.get("label") != "dead"
                  and (d / "latents" / f"{int(r['index']):06d}.json").exists())
    if not live:
        raise UserError(f"{d}: no live latent to judge")
    n = len(live) if cfg.sample == 0 else min(cfg.sample, len(live))
    chosen = sorted(random.Random(cfg.seed).sample(live, n))
    lats = [_read(d / "latents" / f"{i:06d}.json") for i in chosen]
    signed = bool((idx.get("sae") or {}).get("signed",
                                              idx.get("negative_side") == "activation"))
    if scorer is None:
        scorer, completer = make_scorers(cfg, prompts)
    t0, c0 = time.perf_counter(), time.process_time()
    recs = judge_latents(lats, scorer, prompts, cfg, signed=signed, completer=completer)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    proxy = {int(r["index"]): r.get("label") for r in idx["latents"]}
    frac = fraction_with_ci([r["label"] for r in recs])
    pfrac = fraction_with_ci([proxy.get(i) for i in chosen])
    n_axis = sum(r["opposite_axis"] for r in recs)
    res = {
        "format": FORMAT, "version": VERSION, "prompts": prompts.meta(), "judge": scorer.meta(),
        "completion": completer.meta() if completer is not None and
        cfg.opposite_test == "completion" else None,
        "opposite_test": cfg.opposite_test, "opposite_threshold": cfg.threshold(),
        "config": asdict(cfg), "sae": idx.get("sae"), "signed": signed,
        "sample": {"seed": cfg.seed, "n": n, "of_live": len(live)},
        "bidirectional_fraction": frac["bidirectional_fraction"], "ci95": frac["ci95"],
        "counts": frac["counts"], "live": frac["live"],
        "proxy_on_sample": {k: pfrac[k] for k in ("counts", "bidirectional_fraction", "ci95")},
        "opposite_axis_fraction": n_axis / n, "opposite_axis_ci95": list(wilson_interval(n_axis, n)),
        "seconds": secs, "cpu_seconds": cpu,
        "tokens_run": (getattr(scorer, "tokens_run", 0) or 0)
        + (getattr(completer, "tokens_run", 0) or 0),
        "latents": recs,
    }
    atomic_write_json(Path(out) if out else d / "judge.json", res)
    return res
