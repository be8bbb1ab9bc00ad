"""The named labelled data sets: ``load_examples(name)`` → every :class:`Example` of a set.

Names (see :mod:`abstopk.data.labelled` for sources and licences): ``sentiment`` and
``source`` (VADER), ``fever`` (BIG-bench), ``language`` and the binary ``language_XX``
(linux-doc translations vs English), or the path of a user's ``.jsonl``/``.csv`` file.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ...errors import DataUnavailable
from .example import Example
from .fetch import fetch_bigbench, fetch_vader, linux_doc_sources
from .fever import read_fever
from .language import read_language
from .user_file import read_user_file
from .vader import read_vader

__all__ = ["LANGUAGE_TASKS", "TASK_NAMES", "load_examples"]

#: binary language tasks: name suffix -> translation folder (vs English)
LANGUAGE_TASKS = {"it": "it_IT", "zh": "zh_CN", "zh_TW": "zh_TW", "ja": "ja_JP", "ko": "ko_KR"}
TASK_NAMES = ("sentiment", "source", "fever", "language",
              *(f"language_{k}" for k in LANGUAGE_TASKS))


def load_examples(name: str, *, cache: str | os.PathLike | None = None,
                  log: Callable[[str], None] = print) -> list[Example]:
    """All examples of a task (fetching its source on first use). See the module docstring.

    Raises :class:`DataUnavailable` (a :class:`~abstopk.errors.UserError`) for an unknown
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

