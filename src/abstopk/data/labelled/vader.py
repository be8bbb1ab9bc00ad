"""VADER ground truth (Hutto & Gilbert, ICWSM 2014) read from the vaderSentiment sdist.

The sdist holds ``additional_resources/hutto_ICWSM_2014.tar.gz``, a tarball whose
``*_GroundTruth.txt`` files have one ``id<TAB>mean valence in [-4, 4]<TAB>text`` per line.
Both tarballs are read with :mod:`tarfile`, without extraction.
"""

from __future__ import annotations

import functools
import html
import io
import os
import tarfile

from ...errors import DataUnavailable
from .example import Example, file_key

__all__ = ["VADER_SOURCES", "read_vader"]

#: ground-truth file stem in hutto_ICWSM_2014.tar.gz -> short source name
VADER_SOURCES = {
    "movieReviewSnippets": "movie",
    "tweets": "tweets",
    "amazonReviewSnippets": "amazon",
    "nytEditorialSnippets": "nyt",
}


def read_vader(sdist: str | os.PathLike, threshold: float = 1.0) -> list[Example]:
    """VADER ground-truth sentences with |mean valence| ≥ ``threshold`` from the sdist.

    label ``positive`` (valence ≥ +threshold) or ``negative`` (≤ −threshold); ``attr2`` the
    source (``movie``, ``tweets``, ``amazon``, ``nyt``). Order: source files sorted by name,
    lines in file order. HTML entities (``&amp;``, some escaped twice) are unescaped.
    Parsed once per (file, size, mtime) and threshold in a process.
    """
    return list(_read_vader(file_key(sdist), float(threshold)))


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

