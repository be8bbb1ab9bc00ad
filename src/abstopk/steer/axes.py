"""Concept axes for steering: two labelled text sets, neutral prompts and an offline scorer.

An :class:`Axis` runs from end B (score −1) to end A (score +1). Its texts are split, with a
seeded shuffle, into ``train`` (to estimate directions and latents) and ``held`` (to measure
the direction's separation, projection AUC); its neutral prompts into ``dev`` (to choose a
method's operating point) and ``test`` (to report). The three built-in axes:

==============  ===================================  ==========================================
axis            texts (A vs B)                       scorer
==============  ===================================  ==========================================
``sentiment``   VADER-rated sentences, valence       VADER compound (:class:`VaderScorer`)
                ≥ +1 vs ≤ −1 (``data.labelled``)
``gender``      templated sentences with female vs   gendered-word lexicon
                male names, pronouns and nouns       (:class:`LexiconScorer`)
                (``steer/data/gender.json``)
``register``    literary (Austen) vs technical       logistic regression on word/char n-grams
                (linux-doc, python-doc) paragraphs    trained on the *other* half of the held-out
                of the embedded corpus's held-out    documents (:class:`TextClassifierScorer`)
                documents (one half)
==============  ===================================  ==========================================

The register classifier never sees a document whose paragraphs estimate the direction: the
held-out documents are split by document (seeded) into a direction half and a scorer half.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources

from ..errors import UserError

__all__ = ["AXES", "Axis", "build_axis", "gender_texts", "register_paragraphs", "split"]

AXES = ("sentiment", "gender", "register")

#: prompt-baseline instructions prepended to a prompt, per axis: (towards A, towards B)
INSTRUCTIONS = {
    "sentiment": ("Write positively: ", "Write negatively: "),
    "gender": ("Write about a woman: ", "Write about a man: "),
    "register": ("Write like a 19th-century novel: ", "Write like technical documentation: "),
}
ENDS = {"sentiment": ("positive", "negative"), "gender": ("female", "male"),
        "register": ("literary", "technical")}


@dataclass
class Axis:
    """One bidirectional concept (see the module docstring); scores are + towards ``end_a``."""

    name: str
    end_a: str
    end_b: str
    train_a: list[str]
    train_b: list[str]
    held_a: list[str]
    held_b: list[str]
    dev: list[tuple[str, str]]   # (prompt id, prompt)
    test: list[tuple[str, str]]
    instructions: tuple[str, str]
    scorer: Callable[[Sequence[str]], list[float]]
    info: dict = field(default_factory=dict)


def split(items: Sequence, frac: float, seed: int) -> tuple[list, list]:
    """Seeded shuffle of ``items``, cut into (first ``round(frac·n)``, rest)."""
    items = list(items)
    random.Random(seed).shuffle(items)
    n = round(frac * len(items))
    return items[:n], items[n:]


def _data(name: str) -> dict:
    return json.loads(resources.files(__package__).joinpath("data", name).read_text("utf-8"))


def gender_texts() -> tuple[list[str], list[str], dict]:
    """(female sentences, male sentences, the gender.json data): every template × name,
    each female sentence paired with the male sentence of the same template and name index."""
    g = _data("gender.json")
    out: dict[str, list[str]] = {"female": [], "male": []}
    for side in ("female", "male"):
        w = g[f"{side}_words"]
        for ti, t in enumerate(g["templates"]):
            for ni, name in enumerate(g[f"{side}_names"]):
                noun = w["nouns"][(ti + ni) % len(w["nouns"])]
                out[side].append(t.format(name=name, subj=w["subj"], obj=w["obj"],
                                          poss=w["poss"], refl=w["refl"], noun=noun))
    return out["female"], out["male"], g


def register_paragraphs(*, min_words: int = 25,
                        max_chars: int = 400) -> dict[str, list[tuple[str, str]]]:
    """{"literary" | "technical": [(document id, paragraph)]} from the held-out split.

    Paragraphs (blank-line separated) of at least ``min_words`` words, cut to ``max_chars``
    characters at a word boundary; austen → literary, linux-doc / python-doc → technical.
    """
    from ..data.corpus import ensure_corpus, split_path

    ensure_corpus()
    out: dict[str, list[tuple[str, str]]] = {"literary": [], "technical": []}
    with open(split_path("heldout"), encoding="utf-8") as f:
        docs = [json.loads(line) for line in f if line.strip()]
    for doc in docs:
        kind = "literary" if doc["source"] == "austen" else "technical"
        for para in doc["text"].split("\n\n"):
            para = " ".join(para.split())
            if len(para.split()) < min_words:
                continue
            if len(para) > max_chars:
                para = para[:max_chars].rsplit(" ", 1)[0]
            out[kind].append((doc["id"], para))
    return out


def _prompts(name: str, seed: int, n: int | None) -> tuple[list, list]:
    ps = [(f"{name}-{i:02d}", p) for i, p in enumerate(_data("prompts.json")[name])]
    dev, test = split(ps, 0.5, seed)
    return (dev[:n], test[:n]) if n else (dev, test)


def build_axis(name: str, *, seed: int = 0, n_train: int = 64, n_prompts: int | None = None,
               ) -> Axis:
    """Build axis ``name`` (one of :data:`AXES`) with ``n_train`` train texts per end (and
    as many held-out ones, fewer if the data runs out) and up to ``n_prompts`` dev / test
    prompts (all 10 / 10 when None)."""
    from .scorers import LexiconScorer, TextClassifierScorer, VaderScorer

    if name not in AXES:
        raise UserError(f"unknown axis {name!r}; choose from {', '.join(AXES)}")
    dev, test = _prompts(name, seed, n_prompts)
    info: dict = {}
    if name == "sentiment":
        from ..data.labelled import load_examples

        ex = load_examples("sentiment", log=lambda _m: None)
        pos = [e.text for e in ex if e.label == "positive" and 6 <= len(e.text.split()) <= 40]
        neg = [e.text for e in ex if e.label == "negative" and 6 <= len(e.text.split()) <= 40]
        ta, ha = split(pos, 0.5, seed)
        tb, hb = split(neg, 0.5, seed + 1)
        scorer = VaderScorer()
        info["texts"] = "VADER ground-truth sentences, |valence| ≥ 1, 6–40 words"
    elif name == "gender":
        fem, mal, g = gender_texts()
        idx_train, idx_held = split(range(len(fem)), 0.5, seed)  # paired split
        ta, ha = [fem[i] for i in idx_train], [fem[i] for i in idx_held]
        tb, hb = [mal[i] for i in idx_train], [mal[i] for i in idx_held]
        scorer = LexiconScorer(g["lexicon_female"], g["lexicon_male"])
        info["texts"] = "templated sentences (steer/data/gender.json), paired female/male"
    else:
        paras = register_paragraphs()
        docs = sorted({d for k in paras.values() for d, _ in k})
        dir_docs, clf_docs = (set(x) for x in split(docs, 0.5, seed))
        lit = [p for d, p in paras["literary"] if d in dir_docs]
        tec = [p for d, p in paras["technical"] if d in dir_docs]
        ta, ha = split(lit, 0.5, seed)
        tb, hb = split(tec, 0.5, seed + 1)
        c_lit = [p for d, p in paras["literary"] if d in clf_docs]
        c_tec = [p for d, p in paras["technical"] if d in clf_docs]
        ca, cha = split(c_lit, 0.8, seed + 2)
        cb, chb = split(c_tec, 0.8, seed + 3)
        n_c = min(len(ca), len(cb), 400)
        scorer = TextClassifierScorer(seed).fit(ca[:n_c], cb[:n_c], cha[:100], chb[:100])
        info["texts"] = ("held-out paragraphs of the embedded corpus: austen vs linux-doc + "
                         "python-doc; directions and classifier on disjoint documents")
        info["classifier_train"] = [n_c, n_c]
        info["classifier_accuracy"] = scorer.accuracy
    if min(len(ta), len(tb), len(ha), len(hb)) < 2:
        raise UserError(f"axis {name}: too few texts to estimate and check a direction")
    ea, eb = ENDS[name]
    return Axis(name, ea, eb, ta[:n_train], tb[:n_train], ha[:n_train], hb[:n_train], dev, test,
                INSTRUCTIONS[name], scorer, info)
