"""Probing tasks from labelled examples: deterministic, balanced, stratified train/test splits.

De-duplication first (:func:`dedupe_examples`): texts are compared after normalisation
(:func:`normalise_text`: whitespace runs collapsed to one space, ends stripped, Unicode
case-folded); of each group of equal texts the first (reading order) is kept, and a text
that occurs with two different labels is dropped altogether (its label is ambiguous). So
train and test never share a sentence, even up to case and spacing. The number removed is
``TaskData.n_duplicates_removed`` (VADER ``sentiment``: 29 exact duplicates).

Splits (:func:`load_task_data`): per class, the examples in reading order are permuted with
``numpy.random.default_rng(seed)``, the first ``n // n_classes`` kept (fewer if a class is
smaller: then every class gets the size of the smallest), and each class is split into train
and test by ``test_fraction``; so the splits are balanced, stratified and deterministic.
:func:`load_quadrants` applies the same rule to the four (label, second attribute) quadrants
SCR needs. The examples come from :func:`abstopk.data.labelled.load_examples`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ...data.labelled import Example, load_examples
from ...errors import DataUnavailable

__all__ = ["TaskData", "balanced_indices", "dedupe_examples", "load_quadrants", "load_task_data",
           "normalise_text"]


@dataclass
class TaskData:
    """A balanced, stratified, deterministic split of one task.

    ``classes`` are the label names (index = integer label); ``*_y`` are int64 arrays [n];
    ``*_attr2`` the second attribute per example (None when the source has none).
    """

    name: str
    classes: list[str]
    train_texts: list[str]
    train_y: np.ndarray
    test_texts: list[str]
    test_y: np.ndarray
    train_attr2: list[str | None] = field(default_factory=list)
    test_attr2: list[str | None] = field(default_factory=list)
    n_duplicates_removed: int = 0

    @property
    def n_per_class(self) -> int:
        return int((len(self.train_y) + len(self.test_y)) // max(1, len(self.classes)))

def normalise_text(text: str) -> str:
    """The key under which two texts are duplicates: whitespace runs → one space, ends
    stripped, case-folded."""
    return " ".join(text.split()).casefold()


def dedupe_examples(examples: Sequence[Example]) -> tuple[list[Example], int]:
    """(examples without duplicates, number removed); see the module docstring.

    The first of each group of texts equal after :func:`normalise_text` is kept; every copy
    of a text seen with two labels is removed.
    """
    first: dict[str, int] = {}
    conflicting: set[str] = set()
    for i, e in enumerate(examples):
        key = normalise_text(e.text)
        j = first.setdefault(key, i)
        if j != i and examples[j].label != e.label:
            conflicting.add(key)
    kept = [e for i, e in enumerate(examples)
            if first[normalise_text(e.text)] == i and normalise_text(e.text) not in conflicting]
    return kept, len(examples) - len(kept)


def balanced_indices(labels: Sequence[str], n: int | None, seed: int,
                     classes: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Per class, ``m`` indices into ``labels`` drawn without replacement, deterministic.

    ``m = min(n // n_classes, smallest class size)`` (all of the smallest class if ``n`` is
    None). Classes default to the sorted distinct labels.
    """
    labels = list(labels)
    classes = sorted(set(labels)) if classes is None else list(classes)
    by: dict[str, list[int]] = {c: [] for c in classes}
    for i, lab in enumerate(labels):
        if lab in by:
            by[lab].append(i)
    sizes = {c: len(v) for c, v in by.items()}
    if len(classes) < 2 or min(sizes.values()) == 0:
        raise DataUnavailable(f"need ≥ 2 non-empty classes, got sizes {sizes}")
    m = min(sizes.values())
    if n is not None:
        m = min(m, n // len(classes))
    if m < 2:
        raise DataUnavailable(f"too few examples per class ({m}) for a train/test split")
    rng = np.random.default_rng(seed)
    return {c: np.asarray(by[c])[rng.permutation(len(by[c]))[:m]] for c in classes}


def _split_counts(m: int, test_fraction: float) -> int:
    n_test = int(round(m * test_fraction))
    return min(max(n_test, 1), m - 1)


def load_task_data(name: str, n: int | None = 1000, seed: int = 0, *,
                   test_fraction: float = 0.25, classes: Sequence[str] | None = None,
                   examples: Sequence[Example] | None = None,
                   cache: str | os.PathLike | None = None,
                   log: Callable[[str], None] = print) -> TaskData:
    """Balanced train/test split of task ``name`` with about ``n`` examples in all.

    ``classes`` restricts (and orders) the classes; ``examples`` bypasses loading (tests).
    Examples are de-duplicated first (:func:`dedupe_examples`). Train and test are each
    shuffled deterministically (``seed``).
    """
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be in (0, 1)")
    ex = list(examples) if examples is not None else load_examples(name, cache=cache, log=log)
    ex, n_dup = dedupe_examples(ex)
    idx = balanced_indices([e.label for e in ex], n, seed, classes)
    cls = list(idx)
    rng = np.random.default_rng(seed + 1)
    tr: list[tuple[int, int]] = []
    te: list[tuple[int, int]] = []
    for ci, c in enumerate(cls):
        ids = idx[c]
        k = _split_counts(len(ids), test_fraction)
        te += [(int(i), ci) for i in ids[:k]]
        tr += [(int(i), ci) for i in ids[k:]]
    tr = [tr[i] for i in rng.permutation(len(tr))]
    te = [te[i] for i in rng.permutation(len(te))]
    return TaskData(
        name=name, classes=cls,
        train_texts=[ex[i].text for i, _ in tr], train_y=np.array([c for _, c in tr], np.int64),
        test_texts=[ex[i].text for i, _ in te], test_y=np.array([c for _, c in te], np.int64),
        train_attr2=[ex[i].attr2 for i, _ in tr], test_attr2=[ex[i].attr2 for i, _ in te],
        n_duplicates_removed=n_dup,
    )


def load_quadrants(name: str, attr2_values: tuple[str, str], n_per_quadrant: int,
                   seed: int = 0, *, test_fraction: float = 0.25,
                   label_values: tuple[str, str] | None = None,
                   examples: Sequence[Example] | None = None,
                   cache: str | os.PathLike | None = None,
                   log: Callable[[str], None] = print) -> dict[str, dict[tuple[int, int], list[str]]]:
    """Texts per (label, attr2) quadrant for SCR, split into train and test.

    Returns ``{"train"|"test": {(a, b): [texts]}}`` with ``a`` the index of the label in
    ``label_values`` (default: the two sorted labels) and ``b`` the index of the second
    attribute in ``attr2_values``. Every quadrant gets the same size
    ``min(n_per_quadrant, smallest quadrant)``. Examples are de-duplicated first.
    """
    ex = list(examples) if examples is not None else load_examples(name, cache=cache, log=log)
    ex, _ = dedupe_examples(ex)
    if label_values is None:
        labs = sorted({e.label for e in ex})
        if len(labs) != 2:
            raise DataUnavailable(f"{name}: SCR needs a binary label, found {labs}")
        label_values = (labs[0], labs[1])
    keys = [f"{a}\x00{b}" for a in label_values for b in attr2_values]
    lab = [f"{e.label}\x00{e.attr2}" for e in ex]
    if any(e.attr2 is None for e in ex):
        raise DataUnavailable(f"{name}: SCR needs a second attribute (attr2) on every example")
    idx = balanced_indices(lab, n_per_quadrant * len(keys), seed, keys)
    out: dict[str, dict[tuple[int, int], list[str]]] = {"train": {}, "test": {}}
    for qi, key in enumerate(keys):
        a, b = divmod(qi, 2)
        ids = idx[key]
        k = _split_counts(len(ids), test_fraction)
        out["test"][(a, b)] = [ex[i].text for i in ids[:k]]
        out["train"][(a, b)] = [ex[i].text for i in ids[k:]]
    return out

