"""Real, offline labelled sentences (the probing tasks' data): fetching and reading.

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

    abstopk data fetch probing            # VADER + linux-doc translations
    abstopk data fetch probing --fever    # + the 358 MB BIG-bench sdist

Modules: :mod:`.fetch` (downloads, linux-doc), one reader per source (:mod:`.vader`,
:mod:`.fever`, :mod:`.language`, :mod:`.user_file`), :mod:`.catalog` (names → examples).
Sampling and splitting into probing tasks is :mod:`abstopk.eval.probing.tasks`.
"""

from __future__ import annotations

from .catalog import LANGUAGE_TASKS, TASK_NAMES, load_examples
from .example import Example
from .fetch import (
    BIGBENCH_VERSION,
    VADER_VERSION,
    fetch_bigbench,
    fetch_labelled,
    fetch_vader,
    linux_doc_sources,
)
from .fever import read_fever
from .language import LANGUAGES, read_language, split_sentences
from .user_file import read_user_file
from .vader import VADER_SOURCES, read_vader

__all__ = [
    "BIGBENCH_VERSION",
    "LANGUAGES",
    "LANGUAGE_TASKS",
    "TASK_NAMES",
    "VADER_SOURCES",
    "VADER_VERSION",
    "Example",
    "fetch_bigbench",
    "fetch_labelled",
    "fetch_vader",
    "linux_doc_sources",
    "load_examples",
    "read_fever",
    "read_language",
    "read_user_file",
    "read_vader",
    "split_sentences",
]
