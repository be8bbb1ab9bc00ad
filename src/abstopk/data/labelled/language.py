"""Sentences of the linux-doc translations and of their English originals (language ID).

Pages are reST, cleaned with :func:`abstopk.data.corpus.rst.clean_rst`, then split into
sentences and filtered (Latin script: 40–300 characters, >= 6 words, >= 70 % letters, a
capital first; CJK: >= 12 characters, >= 50 % non-ASCII), deduplicated per label.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from ...errors import DataUnavailable
from ..corpus.rst import clean_rst
from .example import Example

__all__ = ["CJK_LANGUAGES", "LANGUAGES", "read_language", "split_sentences"]

#: linux-doc translation folders (label = folder name) plus English originals (``en``)
LANGUAGES = ("en", "it_IT", "zh_CN", "zh_TW", "ja_JP", "ko_KR")
#: the languages written without spaces between words (sentence rules differ)
CJK_LANGUAGES = ("zh_CN", "zh_TW", "ja_JP", "ko_KR")

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
    if lang in CJK_LANGUAGES:
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
    root = Path(sources)
    tr = root / "translations"
    out: list[Example] = []
    seen: set[tuple[str, str]] = set()
    english_pages: set[str] = set()

    def add(path: Path, lang: str) -> None:
        text = path.read_text(encoding="utf-8", errors="replace").lstrip("\ufeff")
        for para in clean_rst(text):
            for s in split_sentences(para, cjk=lang in CJK_LANGUAGES):
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

