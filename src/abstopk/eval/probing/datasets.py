"""Real, offline labelled sentences for the probing tasks, and deterministic balanced splits.

Sources (all from PyPI / Debian packages; fetched into ``$ABSTOPK_CACHE``, default
``~/.cache/abstopk``, never committed):

==============  =====================================================================  =========
task            source                                                                 licence
==============  =====================================================================  =========
``sentiment``   VADER ground truth (Hutto & Gilbert, ICWSM 2014): the vaderSentiment   MIT
                3.3.2 **sdist** (2.5 MB) → ``additional_resources/hutto_ICWSM_2014.tar.gz``
                → ``*_GroundTruth.txt`` (``id<TAB>mean valence in [-4, 4]<TAB>text``).
                positive: valence ≥ +1, negative: valence ≤ −1 (in between dropped).
                Second attribute: the source (movie, tweets, amazon, nyt).
``source``      the same sentences labelled by source (4 classes); second attribute =
                sentiment.
``fever``       BIG-bench ``fact_checker/fever`` (bigbench 1.0.0 sdist, 358 MB, fetched   Apache-2.0
                only when this task runs): 6,612 claims, label true/false, the wrapper
                "On DATE, the following claim was made: … Q: Was this claim true or
                false?" stripped to the bare claim.
``language``    linux-doc ``html/_sources/translations/{it_IT,zh_CN,zh_TW,ja_JP,ko_KR}``  GPL-2.0
                vs the English originals of the same pages (label ``en``); reST cleaned
                with :func:`abstopk.data.corpus.clean_rst`, split into sentences.
                ``language_XX`` is the binary task XX vs en (e.g. ``language_it``).
a file path     the user's own ``.jsonl`` (objects with ``text``, ``label`` [, ``attr2``])
                or ``.csv`` (header with ``text,label[,attr2]``).
==============  =====================================================================  =========

The tarballs are read with :mod:`tarfile` without extraction (the VADER ground truth is a
tarball nested in the sdist). Downloads use ``pip download --no-deps --no-binary :all:``
(pip is the ordinary PyPI client) and are checked against pinned sha256 digests.

Set-up (idempotent, a few seconds when done)::

    python -m abstopk.eval.probing.datasets fetch            # VADER + linux-doc translations
    python -m abstopk.eval.probing.datasets fetch --fever    # + the 358 MB BIG-bench sdist

Splits (:func:`load_task_data`): per class, the examples in reading order are permuted with
``numpy.random.default_rng(seed)``, the first ``n // n_classes`` kept (fewer if a class is
smaller: then every class gets the size of the smallest), and each class is split into train
and test by ``test_fraction``; so the splits are balanced, stratified and deterministic.
"""

from __future__ import annotations

import csv
import functools
import glob
import html
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import DataUnavailable
from ...files import cache_root, sha256_file

__all__ = [
    "BIGBENCH_VERSION",
    "DataUnavailable",
    "Example",
    "LANGUAGES",
    "LANGUAGE_TASKS",
    "TASK_NAMES",
    "TaskData",
    "VADER_SOURCES",
    "VADER_VERSION",
    "balanced_indices",
    "cache_root",
    "fetch",
    "fetch_bigbench",
    "fetch_vader",
    "linux_doc_sources",
    "load_examples",
    "load_quadrants",
    "load_task_data",
    "read_fever",
    "read_language",
    "read_user_file",
    "read_vader",
    "split_sentences",
]

VADER_VERSION = "3.3.2"
VADER_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
BIGBENCH_VERSION = "1.0.0"
BIGBENCH_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"

#: ground-truth file stem in hutto_ICWSM_2014.tar.gz -> short source name
VADER_SOURCES = {
    "movieReviewSnippets": "movie",
    "tweets": "tweets",
    "amazonReviewSnippets": "amazon",
    "nytEditorialSnippets": "nyt",
}
#: linux-doc translation folders (label = folder name) plus English originals (``en``)
LANGUAGES = ("en", "it_IT", "zh_CN", "zh_TW", "ja_JP", "ko_KR")
_CJK = ("zh_CN", "zh_TW", "ja_JP", "ko_KR")

#: binary language tasks: name suffix -> translation folder (vs English)
LANGUAGE_TASKS = {"it": "it_IT", "zh": "zh_CN", "zh_TW": "zh_TW", "ja": "ja_JP", "ko": "ko_KR"}
TASK_NAMES = ("sentiment", "source", "fever", "language",
              *(f"language_{k}" for k in LANGUAGE_TASKS))

_FEVER_RE = re.compile(
    r"^\s*On [^\n]*?, the following claim was made:\s*(.*?)\s*\n\s*Q: Was this claim true or "
    r"false\?\s*$", re.S)



@dataclass(frozen=True)
class Example:
    """One labelled sentence: ``label`` (class name) and an optional second attribute."""

    text: str
    label: str
    attr2: str | None = None


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

    @property
    def n_per_class(self) -> int:
        return int((len(self.train_y) + len(self.test_y)) // max(1, len(self.classes)))


# ------------------------------------------------------------------------------ locations
def _pip_download(spec: str, dest: Path, fname: str, sha256: str,
                  log: Callable[[str], None]) -> Path:
    """``pip download --no-deps --no-binary :all: SPEC`` into ``dest/fname`` (atomic, checked)."""
    target = dest / fname
    if target.is_file():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", spec]
    log(f"downloading {spec} (sdist) with pip into {dest}")
    with tempfile.TemporaryDirectory(dir=dest, prefix=".pipdl-") as tmp:
        try:
            r = subprocess.run([*cmd, "-d", tmp], capture_output=True, text=True)
        except OSError as e:  # pragma: no cover - no python executable?
            raise DataUnavailable(f"cannot run pip to fetch {spec}: {e}") from e
        got = Path(tmp) / fname
        if r.returncode != 0 or not got.is_file():
            last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise DataUnavailable(
                f"could not download {spec} from PyPI ({last[0]}); run `pip download --no-deps "
                f"--no-binary :all: {spec} -d {dest}` on a machine with PyPI access and copy "
                f"{fname} there")
        digest = sha256_file(got)
        if digest != sha256:
            raise DataUnavailable(f"{fname}: sha256 {digest} does not match the pinned {sha256}")
        os.replace(got, target)
    return target


def fetch_vader(cache: str | os.PathLike | None = None,
                log: Callable[[str], None] = print) -> Path:
    """Path of the vaderSentiment sdist in ``<cache>/probing/``; downloads it (2.5 MB) once."""
    root = Path(cache) if cache is not None else cache_root()
    return _pip_download(f"vadersentiment=={VADER_VERSION}", root / "probing",
                         f"vaderSentiment-{VADER_VERSION}.tar.gz", VADER_SHA256, log)


def fetch_bigbench(cache: str | os.PathLike | None = None,
                   log: Callable[[str], None] = print) -> Path:
    """Path of the bigbench sdist in ``<cache>/bigbench/``; downloads it (358 MB) once."""
    root = Path(cache) if cache is not None else cache_root()
    return _pip_download(f"bigbench=={BIGBENCH_VERSION}", root / "bigbench",
                         f"bigbench-{BIGBENCH_VERSION}.tar.gz", BIGBENCH_SHA256, log)


_LD_PATTERN = "usr/share/doc/linux-doc-*/html/_sources"


def linux_doc_sources(cache: str | os.PathLike | None = None, *, install: bool = True,
                      log: Callable[[str], None] = print) -> Path:
    """``…/linux-doc-*/html/_sources`` holding ``translations/``.

    Looks system-wide and in the corpus' extraction folder ``<cache>/debs/root`` (where
    :mod:`abstopk.data.corpus` puts the package when it cannot ``apt-get install``); with
    ``install`` it lets :func:`abstopk.data.corpus.install_sources` obtain the package.
    """
    root = Path(cache) if cache is not None else cache_root()

    def find() -> Path | None:
        for base in (Path("/"), root / "debs" / "root"):
            hits = sorted(glob.glob(str(base / _LD_PATTERN)))
            hits = [h for h in hits if os.path.isdir(os.path.join(h, "translations"))]
            if hits:
                return Path(hits[-1])
        return None

    found = find()
    if found is None and install:
        from ...data.corpus import CorpusUnavailable, install_sources

        try:
            install_sources(root, log=log)
        except CorpusUnavailable as e:
            raise DataUnavailable(f"linux-doc translations unavailable: {e}") from e
        found = find()
    if found is None:
        raise DataUnavailable(
            "linux-doc is not installed (needed for the language tasks): run "
            "`python -m abstopk.eval.probing.datasets fetch` (uses apt) or "
            "`apt-get install linux-doc`")
    return found


def fetch(fever: bool = False, cache: str | os.PathLike | None = None,
          log: Callable[[str], None] = print) -> dict[str, str]:
    """Set-up step: make the probing data present; returns ``{source: path}``. Idempotent."""
    out = {"vader": str(fetch_vader(cache, log)),
           "linux-doc": str(linux_doc_sources(cache, log=log))}
    if fever:
        out["bigbench"] = str(fetch_bigbench(cache, log))
    return out


# ------------------------------------------------------------------------------- readers
def _file_key(path: str | os.PathLike) -> tuple[str, int, int]:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)


def read_vader(sdist: str | os.PathLike, threshold: float = 1.0) -> list[Example]:
    """VADER ground-truth sentences with |mean valence| ≥ ``threshold`` from the sdist.

    label ``positive`` (valence ≥ +threshold) or ``negative`` (≤ −threshold); ``attr2`` the
    source (``movie``, ``tweets``, ``amazon``, ``nyt``). Order: source files sorted by name,
    lines in file order. HTML entities (``&amp;``, some escaped twice) are unescaped.
    Parsed once per (file, size, mtime) and threshold in a process.
    """
    return list(_read_vader(_file_key(sdist), float(threshold)))


@functools.lru_cache(maxsize=4)
def _read_vader(key: tuple[str, int, int], threshold: float) -> tuple[Example, ...]:
    sdist = key[0]
    out: list[Example] = []
    with tarfile.open(sdist) as outer:
        member = next((m for m in outer.getmembers()
                       if m.name.endswith("additional_resources/hutto_ICWSM_2014.tar.gz")), None)
        if member is None:
            raise DataUnavailable(f"{sdist}: no additional_resources/hutto_ICWSM_2014.tar.gz")
        blob = outer.extractfile(member).read()
    with tarfile.open(fileobj=io.BytesIO(blob)) as inner:
        members = sorted((m for m in inner.getmembers() if m.name.endswith("_GroundTruth.txt")),
                         key=lambda m: m.name)
        for m in members:
            stem = os.path.basename(m.name)[: -len("_GroundTruth.txt")]
            src = VADER_SOURCES.get(stem, stem)
            raw = inner.extractfile(m).read().decode("utf-8", errors="replace")
            for line in raw.splitlines():
                parts = line.split("\t")
                if len(parts) != 3:
                    continue
                try:
                    v = float(parts[1])
                except ValueError:
                    continue
                text = html.unescape(html.unescape(parts[2]))  # some are escaped twice
                text = " ".join(text.split())
                if not text:
                    continue
                if v >= threshold:
                    out.append(Example(text, "positive", src))
                elif v <= -threshold:
                    out.append(Example(text, "negative", src))
    if not out:
        raise DataUnavailable(f"{sdist}: no ground-truth sentences found")
    return tuple(out)


def read_fever(sdist: str | os.PathLike) -> list[Example]:
    """BIG-bench ``fact_checker/fever`` claims from the bigbench sdist, label true/false.

    Reads ``*/bigbench/benchmark_tasks/fact_checker/fever/task.json`` straight from the
    tarball and strips each input to the bare claim (examples whose input does not match the
    wrapper, or whose ``target_scores`` are not one-hot over true/false, are skipped).
    """
    with tarfile.open(sdist) as t:
        for m in t:
            p = m.name.split("/")
            if (len(p) >= 6 and p[-4:] == ["benchmark_tasks", "fact_checker", "fever",
                                           "task.json"]):
                data = json.load(t.extractfile(m))
                break
        else:
            raise DataUnavailable(f"{sdist}: no benchmark_tasks/fact_checker/fever/task.json")
    out = []
    for ex in data.get("examples", []):
        mt = _FEVER_RE.match(ex.get("input", ""))
        ts = ex.get("target_scores", {})
        if not mt or set(ts) != {"true", "false"} or ts["true"] + ts["false"] != 1:
            continue
        out.append(Example(" ".join(mt.group(1).split()), "true" if ts["true"] else "false"))
    return out


_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9À-ÖØ-Þ])|(?<=[。！？])")
_SENT_SPLIT_CJK = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
# Han, kana and CJK punctuation: no spaces between them (Hangul is written with spaces)
_HAN_KANA = r"\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
_CJK_SPACE = re.compile(rf"(?<=[{_HAN_KANA}]) (?=[{_HAN_KANA}])")


def split_sentences(paragraph: str, cjk: bool = False) -> list[str]:
    """Split a cleaned paragraph into sentences.

    Latin script: after ``. ! ?`` + whitespace + a capital/digit/quote. CJK (``cjk=True``):
    after ``. ! ?`` + whitespace or after ``。！？``, and the spaces that line-joining put
    between two Han/kana characters are removed.
    """
    if cjk:
        paragraph = _CJK_SPACE.sub("", paragraph)
    rx = _SENT_SPLIT_CJK if cjk else _SENT_SPLIT
    return [s.strip() for s in rx.split(paragraph) if s and s.strip()]


def _keep_sentence(s: str, lang: str) -> bool:
    if "\n" in s or len(s) > 300:
        return False
    non_ascii = sum(ord(c) > 127 for c in s)
    if lang in _CJK:
        return len(s) >= 12 and non_ascii >= 0.5 * len(s)
    letters = sum(c.isalpha() for c in s)
    return len(s) >= 40 and len(s.split()) >= 6 and letters >= 0.7 * len(s) and s[0].isupper()


def read_language(sources: str | os.PathLike) -> list[Example]:
    """Sentences of linux-doc translations (label = folder, e.g. ``it_IT``) and English
    sentences from the originals of the same pages (label ``en``); deduplicated per label.

    ``sources`` is the ``html/_sources`` folder. Files are read in sorted order; the result is
    kept per folder (and its translations folder's mtime) for the life of the process.
    """
    tr = Path(sources) / "translations"
    return list(_read_language(str(Path(sources).resolve()), tr.stat().st_mtime_ns
                               if tr.exists() else 0))


@functools.lru_cache(maxsize=2)
def _read_language(sources: str, _mtime: int) -> tuple[Example, ...]:
    from ...data.corpus import clean_rst

    root = Path(sources)
    tr = root / "translations"
    out: list[Example] = []
    seen: set[tuple[str, str]] = set()
    english_pages: set[str] = set()

    def add(path: Path, lang: str) -> None:
        text = path.read_text(encoding="utf-8", errors="replace").lstrip("\ufeff")
        for para in clean_rst(text):
            for s in split_sentences(para, cjk=lang in _CJK):
                if _keep_sentence(s, lang) and (lang, s) not in seen:
                    seen.add((lang, s))
                    out.append(Example(s, lang))

    for lang in LANGUAGES[1:]:
        for p in sorted((tr / lang).rglob("*.rst.txt")):
            rel = p.relative_to(tr / lang)
            add(p, lang)
            if (root / rel).is_file() and rel.name != "index.rst.txt":
                english_pages.add(str(rel))
    for rel in sorted(english_pages):
        add(root / rel, "en")
    if not out:
        raise DataUnavailable(f"{root}: no translation sentences found")
    return tuple(out)


def read_user_file(path: str | os.PathLike) -> list[Example]:
    """A user's labelled file: ``.jsonl`` (``{"text", "label"[, "attr2"]}`` per line) or
    ``.csv`` (header naming ``text``, ``label`` [, ``attr2``]). Labels are read as strings."""
    p = Path(path)
    if not p.is_file():
        raise DataUnavailable(f"labelled file {p} not found")
    rows: list[dict] = []
    if p.suffix == ".jsonl":
        with open(p, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise DataUnavailable(f"{p}:{i}: not JSON ({e.msg})") from e
    elif p.suffix == ".csv":
        with open(p, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        raise DataUnavailable(f"{p}: labelled files must be .jsonl or .csv")
    out = []
    for i, r in enumerate(rows, 1):
        if not isinstance(r, dict) or "text" not in r or "label" not in r:
            raise DataUnavailable(f"{p}: row {i} lacks a 'text' or 'label' field")
        a2 = r.get("attr2")
        out.append(Example(str(r["text"]), str(r["label"]), None if a2 in (None, "") else str(a2)))
    if not out:
        raise DataUnavailable(f"{p}: no rows")
    return out


# ------------------------------------------------------------------------------- tasks
def load_examples(name: str, *, cache: str | os.PathLike | None = None,
                  log: Callable[[str], None] = print) -> list[Example]:
    """All examples of a task (fetching its source on first use). See the module docstring.

    Raises :class:`DataUnavailable` (a :class:`~abstopk.commands.UserError`) for an unknown
    name or a source that cannot be obtained.
    """
    if name == "sentiment":
        return read_vader(fetch_vader(cache, log))
    if name == "source":
        return [Example(e.text, e.attr2 or "", e.label) for e in read_vader(fetch_vader(cache, log))]
    if name == "fever":
        return read_fever(fetch_bigbench(cache, log))
    if name == "language" or name.startswith("language_"):
        ex = read_language(linux_doc_sources(cache, log=log))
        if name == "language":
            return ex
        lang = LANGUAGE_TASKS.get(name[len("language_"):])
        if lang is None:
            raise DataUnavailable(f"unknown language task {name!r}: use one of "
                                  + ", ".join(f"language_{k}" for k in LANGUAGE_TASKS))
        return [e for e in ex if e.label in ("en", lang)]
    if name.endswith((".jsonl", ".csv")) or os.sep in name:
        return read_user_file(name)
    raise DataUnavailable(f"unknown probing task {name!r}: use one of {', '.join(TASK_NAMES)} "
                          "or a .jsonl/.csv file with text,label[,attr2]")


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
    Train and test are each shuffled deterministically (``seed``).
    """
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be in (0, 1)")
    ex = list(examples) if examples is not None else load_examples(name, cache=cache, log=log)
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
    ``min(n_per_quadrant, smallest quadrant)``.
    """
    ex = list(examples) if examples is not None else load_examples(name, cache=cache, log=log)
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


# ----------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    """``python -m abstopk.eval.probing.datasets fetch [--fever] [--cache DIR]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m abstopk.eval.probing.datasets",
                                 description="Fetch the offline labelled data of the probing tasks.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download/locate VADER and linux-doc (+ BIG-bench)")
    f.add_argument("--fever", action="store_true", help="also fetch the 358 MB bigbench sdist")
    f.add_argument("--cache", default=None, help="cache folder (default $ABSTOPK_CACHE)")
    s = sub.add_parser("stats", help="print per-task class counts")
    s.add_argument("--fever", action="store_true")
    s.add_argument("--cache", default=None)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "fetch":
            for k, v in fetch(a.fever, a.cache).items():
                print(f"{k}: {v}")
        else:
            names = ["sentiment", "source", "language"] + (["fever"] if a.fever else [])
            for nm in names:
                ex = load_examples(nm, cache=a.cache)
                counts: dict[str, int] = {}
                for e in ex:
                    counts[e.label] = counts.get(e.label, 0) + 1
                print(f"{nm}: {len(ex)} {dict(sorted(counts.items()))}")
    except DataUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

