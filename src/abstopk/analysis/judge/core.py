"""Judging latents: is each pole meaningful, and are the two poles opposites of one concept?

A latent record is the statistics contract (``top_pos``, ``top_neg``: examples ranked by |v|,
see :mod:`abstopk.analysis.latent_stats`). Per pole s ∈ {+, −} with examples e₁, e₂, …:

* **coherence** (no model): C_s = the proxy's coherence of the pole's focus tokens
  (:func:`abstopk.analysis.bidirectionality.coherence`), *coherent* when the pole has
  ≥ ``min_examples`` examples and C_s ≥ ``min_coherence`` (the proxy's thresholds);
* **detection** (delphi-style, the judge; run when ``pole_test == "detection"``): the
  explanation is built from the *train* examples e₁, e₃, e₅, … (their distinct focus tokens,
  :func:`.prompts.pole_words`); the judge's log-odds Δ of "Yes" to "does it fire on the
  marked word?" is read for the first ``held_out`` *held-out* examples e₂, e₄, … and for as
  many *negatives* (examples of other latents of the same run whose focus token is not in the
  explanation, seeded). D_s = mean Δ(held-out) − mean Δ(negatives); *detected* when
  D_s > ``detect_margin``;
* **opposites** (the judge, always), by ``opposite_test``: ``completion`` (default) — S, the
  symmetrised PMI of :func:`.completion.opposite_pmi` between the first ``completion_words``
  words of each pole under the prompt file's completion templates; ``question`` — Δ_opp, the
  log-odds of Yes to "do A and B form a pair of opposites?" (the prompt file's wording) for the
  two poles' words (:func:`.prompts.pole_words` of all their examples). *opposite* when the
  score > the threshold (``cfg.threshold()``); a pole without words is never opposite. The
  question is asked for every latent; the completion test (up to 24 forwards a latent) runs
  only where it can change a label — both poles coherent, or both detected — and the
  others' ``opposite_score`` is None (not opposite).

A pole is *meaningful* when it passes ``pole_test`` (coherent, or detected). Label (the
paper's categories): ``bidirectional`` = both poles meaningful and opposite; ``unidirectional``
= at least one pole meaningful; ``unclear`` = none. For a non-negative SAE the − pole is its
negative pre-activations (it never fires there), so its label uses the + pole only and
``opposite_axis`` (both meaningful and opposite) says whether the discarded pole is the
opposite of the fired one.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import UserError
from ..bidirectionality import BidirConfig, coherence
from .completion import LogProbScorer, opposite_pmi, render_templates
from .config import JudgeConfig
from .prompts import JudgePrompts, explain_pole, format_context, pole_words, quote_words
from .scorers import YesNoScorer

__all__ = ["judge_latents", "label_of", "split_pole"]


def split_pole(examples: Sequence[Mapping[str, Any]], held_out: int
               ) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """``(train, held)``: examples 1, 3, 5, … and the first ``held_out`` of 2, 4, …"""
    ex = list(examples or [])
    return ex[0::2], ex[1::2][:held_out]


def label_of(pos_ok: bool, neg_ok: bool, opposite: bool, signed: bool) -> str:
    """The paper's category from the poles' tests and the opposite answer."""
    if signed and pos_ok and neg_ok and opposite:
        return "bidirectional"
    if pos_ok or (signed and neg_ok):
        return "unidirectional"
    return "unclear"


def _focus(ex: Mapping[str, Any]) -> str | None:
    w = pole_words([ex], 1)
    return w[0] if w else None


def judge_latents(latents: Sequence[Mapping[str, Any]], scorer: YesNoScorer | None,
                  prompts: JudgePrompts, cfg: JudgeConfig, *, signed: bool,
                  detect: bool | None = None, completer: LogProbScorer | None = None
                  ) -> list[dict[str, Any]]:
    """One record per latent (order kept): ``{index, label, words_pos, words_neg,
    explanation, coherence_pos/neg, coherent_pos/neg, detect_pos/neg (None when not run or a
    pole lacks train and held-out examples), detected_pos/neg, opposite_test, opposite_score,
    opposite_logodds (question test) / opposite_pmi (completion test; the other None),
    opposite, opposite_axis, label_by: {coherence[, detection]}}``. ``detect``: run the
    detection prompts (default: when ``cfg.pole_test == "detection"``). ``scorer`` answers the
    yes/no prompts (needed for detection or the question test), ``completer`` the completion
    test."""
    detect = cfg.pole_test == "detection" if detect is None else detect
    completion = cfg.opposite_test == "completion"
    if completion and completer is None:
        raise ValueError("the completion opposite test needs a completion scorer")
    if completion and not prompts.completion_templates:
        raise UserError(f"judge prompts file {prompts.source} has no completion templates "
                        "(the completion opposite test needs them)")
    if (detect or not completion) and scorer is None:
        raise ValueError("detection and the question test need a yes/no scorer")
    thr = cfg.threshold()
    bc = BidirConfig()
    rng = random.Random(cfg.seed)
    w = cfg.judge_context
    pool = []
    if detect:
        for j, lat in enumerate(latents):
            for key in ("top_pos", "top_neg"):
                for ex in lat.get(key) or []:
                    word = _focus(ex)
                    if word:
                        pool.append((j, ex, word.lower()))
    plans: list[dict[str, Any]] = []
    det_msgs: list[str] = []
    for j, lat in enumerate(latents):
        plan: dict[str, Any] = {"index": lat.get("index")}
        for s, key in (("pos", "top_pos"), ("neg", "top_neg")):
            exs = list(lat.get(key) or [])
            focus = [f for f in (_focus(e) for e in exs) if f is not None]
            plan[f"words_{s}"] = pole_words(exs, cfg.explain_words)
            plan[f"coherence_{s}"] = coherence(focus, bc.min_examples)
            plan[f"msgs_{s}"] = None
            if not detect:
                continue
            train, held = split_pole(exs, cfg.held_out)
            words = pole_words(train, cfg.explain_words)
            if not words or not held:
                continue
            expl = explain_pole(words)
            lower = {x.lower() for x in words}
            cands = [ex for jj, ex, word in pool if jj != j and word not in lower]
            negs = rng.sample(cands, min(len(held), len(cands)))
            a = len(det_msgs)
            det_msgs += [prompts.detection.format(explanation=expl,
                                                  context=format_context(ex, w))
                         for ex in held + negs]
            plan[f"msgs_{s}"] = (a, len(held), len(negs))
        plans.append(plan)
    det = scorer.score(det_msgs) if det_msgs else []
    out = []
    for plan, lat in zip(plans, latents, strict=True):
        rec: dict[str, Any] = {"index": plan["index"], "words_pos": plan["words_pos"],
                               "words_neg": plan["words_neg"]}
        for s, key in (("pos", "top_pos"), ("neg", "top_neg")):
            n_ex = len(lat.get(key) or [])
            rec[f"coherence_{s}"] = plan[f"coherence_{s}"]
            rec[f"coherent_{s}"] = (n_ex >= bc.min_examples
                                    and plan[f"coherence_{s}"] >= bc.min_coherence)
            m = plan[f"msgs_{s}"]
            if m is None:
                rec[f"detect_{s}"], rec[f"detected_{s}"] = None, False
                continue
            a, npos, nneg = m
            dp = det[a:a + npos]
            dn = det[a + npos:a + npos + nneg]
            score = sum(dp) / npos - (sum(dn) / nneg if nneg else 0.0)
            rec[f"detect_{s}"] = score
            rec[f"detected_{s}"] = score > cfg.detect_margin
        out.append(rec)
    # the opposite test: the question for every latent; the (costlier) completion test only
    # where it can change a label: both poles coherent, or both detected
    asked = [j for j, rec in enumerate(out) if not completion
             or (rec["coherent_pos"] and rec["coherent_neg"])
             or (detect and rec["detected_pos"] and rec["detected_neg"])]
    if completion:
        temps = render_templates(prompts.completion_templates, completer,
                                 prompts.completion_system)
        got: list[float | None] = opposite_pmi(
            [(plans[j]["words_pos"][:cfg.completion_words],
              plans[j]["words_neg"][:cfg.completion_words]) for j in asked],
            completer, temps, prompts.completion_neutral)
    else:
        msgs = [prompts.opposite.format(words_a=quote_words(plans[j]["words_pos"]),
                                        words_b=quote_words(plans[j]["words_neg"]))
                for j in asked]
        got = list(scorer.score(msgs)) if msgs else []
    opp: dict[int, float | None] = dict(zip(asked, got, strict=True))
    for j, rec in enumerate(out):
        d_opp = opp.get(j)
        rec["opposite_test"] = cfg.opposite_test
        rec["opposite_score"] = d_opp
        rec["opposite_logodds"] = None if completion else d_opp
        rec["opposite_pmi"] = d_opp if completion else None
        rec["opposite"] = d_opp is not None and d_opp > thr
        by = {"coherence": label_of(rec["coherent_pos"], rec["coherent_neg"], rec["opposite"],
                                    signed)}
        if detect:
            by["detection"] = label_of(rec["detected_pos"], rec["detected_neg"],
                                       rec["opposite"], signed)
        rec["label_by"] = by
        test = "detected" if cfg.pole_test == "detection" else "coherent"
        rec["opposite_axis"] = bool(rec[f"{test}_pos"] and rec[f"{test}_neg"] and rec["opposite"])
        rec["label"] = by["detection" if cfg.pole_test == "detection" else "coherence"]
        rec["explanation"] = (f"+: {', '.join(rec['words_pos']) or '—'} · "
                              f"−: {', '.join(rec['words_neg']) or '—'}")
    return out
