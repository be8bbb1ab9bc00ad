"""Planted latents of known type, in real words: where the judge's (and the proxy's) truth
is known.

Each planted latent is a statistics record (``top_pos``, ``top_neg``: ``per_pole`` examples
each, a sentence with the focus word marked) built from the minimal pairs
(``analysis/data/minimal_pairs.tsv``, their templates) and neutral filler words
(``analysis/data/judge_filler_words.txt``). Four types, ``n_per_type`` each (seeded):

* ``opposite`` (truth ``bidirectional``): + pole = the a-words of 1–3 pairs of one kind, − pole
  = their b-words (male ↔ female nouns and pronouns; or one antonym pair, hot ↔ cold), the
  orientation drawn at random;
* ``unrelated`` (truth ``unidirectional``: two meaningful poles that are not one concept): +
  pole from one pair, − pole from another pair of a different kind (king ↔ cold);
* ``one_sided`` (truth ``unidirectional``): + pole from a pair, − pole a different filler word
  in every example (the noise a real latent's weak side shows);
* ``noise`` (truth ``unclear``): both poles filler words.

:func:`validate` judges them (detection prompts included) and reports, for the judge's
labels with the configured pole test (``judge``), with either pole test
(``judge_coherence_poles``, ``judge_detection_poles``) and for the judge-free proxy
(:func:`abstopk.analysis.bidirectionality.classify` on the focus words, ``proxy``): the label
accuracy (3-way and bidirectional-vs-not) with 95 % Wilson intervals and the confusion matrix;
and the detection AUC (word poles vs filler poles) and the opposite AUC (``opposite`` vs
``unrelated`` latents) of the judge's log-odds.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict
from importlib import resources
from typing import Any

from ..bidirectionality import classify, wilson_interval
from ..minimal_pairs import load_pairs
from .completion import LogProbScorer
from .config import JudgeConfig
from .core import judge_latents
from .prompts import JudgePrompts, load_prompts
from .scorers import YesNoScorer

__all__ = ["TRUTH", "auc", "choose_threshold", "filler_words", "planted_latents", "validate"]

TRUTH = {"opposite": "bidirectional", "unrelated": "unidirectional",
         "one_sided": "unidirectional", "noise": "unclear", "related": "unidirectional"}
HALVES = ("all", "even", "odd")
TWO_WORD_POLES = ("opposite", "unrelated", "related")
GENDER = ("noun", "plural", "subject_pronoun", "object_pronoun", "possessive", "reflexive")
FILLER_TEMPLATES = ("They talked about the {} again.", "We saw the {} near the door.",
                    "Nobody mentioned the {} that day.", "She wrote about the {} twice.")


def filler_words() -> list[str]:
    text = (resources.files("abstopk.analysis") / "data" / "judge_filler_words.txt").read_text(
        encoding="utf-8")
    out: list[str] = []
    for ln in text.splitlines():
        w = ln.strip()
        if w and not w.startswith("#") and w not in out:
            out.append(w)
    return out


def _example(template: str, word: str, value: float) -> dict[str, Any]:
    a = template.index("{}")
    return {"value": value, "tokens": [template[:a], word, template[a + 2:]], "focus": 1,
            "row": -1}


def planted_latents(n_per_type: int = 10, *, per_pole: int = 6, seed: int = 0,
                    pairs: str = "all", related: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """``[(type, latent record)]``, ``n_per_type`` of each type (module docstring), then
    ``related`` latents of type ``related``. ``pairs``: draw from all minimal pairs, or only
    those at even (odd) positions of the pairs file, so that a calibration and a test set
    share no pair."""
    if pairs not in HALVES:
        raise ValueError(f"pairs must be one of {HALVES}, got {pairs!r}")
    rng = random.Random(seed)
    half = pairs
    kept = [p for i, p in enumerate(load_pairs())
            if half == "all" or i % 2 == (0 if half == "even" else 1)]
    gender = [p for p in kept if p.category in GENDER]
    anton = [p for p in kept if p.category not in GENDER]
    fill = filler_words()

    def pole_from(group, side: str):
        words = [getattr(p, side) for p in group]
        temps = [t for p in group for t in p.templates]
        return words, temps

    def word_group():
        if rng.random() < 0.5:
            g = rng.sample(gender, rng.randint(1, 3))
        else:
            g = [rng.choice(anton)]
        return g

    def examples(words, temps, sign: float, random_words: bool = False):
        out = []
        drawn = rng.sample(fill, per_pole) if random_words else []   # all different
        for k in range(per_pole):
            # each word twice in a row: every word of the pole is in its train half
            w = drawn[k] if random_words else words[(k // 2) % len(words)]
            t = rng.choice(FILLER_TEMPLATES if random_words else temps)
            out.append(_example(t, w, sign * (10.0 - k)))
        return out

    res: list[tuple[str, dict[str, Any]]] = []
    idx = 0
    plan = [t for t in ("opposite", "unrelated", "one_sided", "noise")
            for _ in range(n_per_type)] + ["related"] * related
    for typ in plan:
        g = word_group() if typ != "related" else rng.sample(gender, rng.randint(1, 3))
        sides = ["a", "b"]
        rng.shuffle(sides)
        if typ == "related":
            # the same side of two disjoint gendered groups: king, he ↔ prince, boy
            rest = [p for p in gender if p not in g]
            other = rng.sample(rest, rng.randint(1, min(3, len(rest))))
            pw, pt = pole_from(g, sides[0])
            nw, nt = pole_from(other, sides[0])
            pos, neg = examples(pw, pt, 1.0), examples(nw, nt, -1.0)
        elif typ == "opposite":
            pw, pt = pole_from(g, sides[0])
            nw, nt = pole_from(g, sides[1])
            pos, neg = examples(pw, pt, 1.0), examples(nw, nt, -1.0)
        elif typ == "unrelated":
            pw, pt = pole_from(g, sides[0])
            other = [rng.choice(anton if g[0] in gender else gender + anton)]
            while other[0] in g or (g[0] in anton and other[0] in anton
                                    and other[0].category == g[0].category
                                    and rng.random() < 0.5):
                other = [rng.choice(gender + anton)]
            nw, nt = pole_from(other, rng.choice("ab"))
            pos, neg = examples(pw, pt, 1.0), examples(nw, nt, -1.0)
        elif typ == "one_sided":
            pw, pt = pole_from(g, sides[0])
            pos, neg = examples(pw, pt, 1.0), examples([], [], -0.3, random_words=True)
        else:
            pos = examples([], [], 1.0, random_words=True)
            neg = examples([], [], -1.0, random_words=True)
        kinds = {"pos": "filler" if typ == "noise" else "words",
                 "neg": "words" if typ in ("opposite", "unrelated", "related") else "filler"}
        if typ == "one_sided" and rng.random() < 0.5:      # the word pole on either side
            pos, neg = ([{**e, "value": -e["value"]} for e in neg],
                        [{**e, "value": -e["value"]} for e in pos])
            kinds = {"pos": "filler", "neg": "words"}
        res.append((typ, {"index": idx, "top_pos": pos, "top_neg": neg,
                          "count_pos": per_pole, "count_neg": per_pole,
                          "planted_poles": kinds}))
        idx += 1
    return res


def auc(pos: list[float], neg: list[float]) -> float | None:
    """P(a random ``pos`` score > a random ``neg`` one), ties ½; None if either is empty."""
    if not pos or not neg:
        return None
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


def _acc(ok: list[bool]) -> dict[str, Any]:
    k, n = sum(ok), len(ok)
    return {"correct": k, "n": n, "accuracy": k / n if n else None,
            "ci95": list(wilson_interval(k, n))}


def _words(lat: dict[str, Any], key: str) -> list[str]:
    return [ex["tokens"][ex["focus"]] for ex in lat[key]]


def _score(r: dict[str, Any]) -> float | None:
    return r.get("opposite_score", r.get("opposite_logodds"))


def choose_threshold(validation: dict[str, Any]) -> float:
    """The opposite threshold with the largest Youden J = TPR − FPR of "opposite" between the
    planted ``opposite`` latents and the ``unrelated`` and ``related`` ones (the types whose
    poles are both meaningful, which only the opposite test tells apart); a midpoint between
    neighbouring scores, ties to the larger (more conservative) threshold."""
    lats = [r for r in validation["latents"] if r["type"] in TWO_WORD_POLES
            and _score(r) is not None]
    vals = sorted({_score(r) for r in lats})
    cands = [vals[0] - 1.0] + [(a + b) / 2 for a, b in zip(vals, vals[1:], strict=False)] \
        + [vals[-1] + 1.0]
    opp = [_score(r) for r in lats if r["type"] == "opposite"]
    unr = [_score(r) for r in lats if r["type"] != "opposite"]

    def youden(t: float) -> float:
        return (sum(x > t for x in opp) / max(len(opp), 1)
                - sum(x > t for x in unr) / max(len(unr), 1))
    return max(cands, key=lambda t: (youden(t), t))


def validate(scorer: YesNoScorer | None, cfg: JudgeConfig | None = None, *,
             prompts: JudgePrompts | None = None, n_per_type: int = 10, per_pole: int = 6,
             seed: int = 0, detect: bool = True, pairs: str = "all", related: int = 0,
             completer: LogProbScorer | None = None) -> dict[str, Any]:
    """Judge the planted latents; accuracies, confusion, AUCs (module docstring).
    ``detect=False`` skips the detection prompts (8 of the 9 prompts a latent costs): the
    detection-pole results are then absent. ``pairs`` and ``related``: as
    :func:`planted_latents`. ``opposite_auc`` compares ``opposite`` with ``unrelated``
    latents, ``opposite_auc_related`` with ``related`` ones (None without them)."""
    cfg = cfg or JudgeConfig()
    prompts = prompts or load_prompts(cfg.prompts)
    planted = planted_latents(n_per_type, per_pole=per_pole, seed=seed, pairs=pairs,
                              related=related)
    recs = judge_latents([lat for _, lat in planted], scorer, prompts, cfg, signed=True,
                         detect=detect, completer=completer)
    types = [t for t, _ in planted]
    present = [t for t in TRUTH if t in types]

    def scored(labels: list[str]) -> dict[str, Any]:
        confusion: dict[str, Counter] = {t: Counter() for t in present}
        for t, lab in zip(types, labels, strict=True):
            confusion[t][lab] += 1
        return {"accuracy": _acc([TRUTH[t] == lab for t, lab in zip(types, labels, strict=True)]),
                "bidirectional_accuracy": _acc(
                    [(TRUTH[t] == "bidirectional") == (lab == "bidirectional")
                     for t, lab in zip(types, labels, strict=True)]),
                "confusion": {t: dict(c) for t, c in confusion.items()}}
    proxy = [classify(_words(lat, "top_pos"), _words(lat, "top_neg"), per_pole, per_pole, True,
                      pos_values=[e["value"] for e in lat["top_pos"]],
                      neg_values=[e["value"] for e in lat["top_neg"]])[1] for _, lat in planted]
    word_poles, filler_poles = [], []
    for (_, lat), r in zip(planted, recs, strict=True):
        for s in ("pos", "neg"):
            is_filler = lat["planted_poles"][s] == "filler"
            if r[f"detect_{s}"] is not None:
                (filler_poles if is_filler else word_poles).append(r[f"detect_{s}"])
    def of(typ: str) -> list[float]:
        return [r["opposite_score"] for t, r in zip(types, recs, strict=True)
                if t == typ and r["opposite_score"] is not None]
    return {
        "n_per_type": n_per_type, "per_pole": per_pole, "seed": seed, "pairs": pairs,
        "related": related, "config": asdict(cfg), "opposite_test": cfg.opposite_test,
        "opposite_threshold": cfg.threshold(), "prompts": prompts.meta(),
        "scorer": scorer.meta() if scorer is not None else None,
        "completer": completer.meta() if completer is not None else None,
        "judge": scored([r["label"] for r in recs]),
        "judge_coherence_poles": scored([r["label_by"]["coherence"] for r in recs]),
        "judge_detection_poles": scored([r["label_by"]["detection"] for r in recs])
        if detect else None,
        "proxy": scored(proxy),
        "detection_auc": auc(word_poles, filler_poles) if detect else None,
        "opposite_auc": auc(of("opposite"), of("unrelated")),
        "opposite_auc_related": auc(of("opposite"), of("related")),
        "latents": [{"type": t, **r} for t, r in zip(types, recs, strict=True)],
    }
