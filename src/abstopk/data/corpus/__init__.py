"""The embedded default corpus: real English text from twelve Debian packages.

==================  ==========================  =========================================
part (``source``)   Debian package              files read
==================  ==========================  =========================================
``linux-doc``       ``linux-doc`` (meta)        ``linux-doc-*/html/_sources/**/*.rst.txt``
                                                (``translations/`` skipped)
``python-doc``      ``python3-doc`` (meta)      ``python3.*/html/_sources/**/*.rst.txt``
``austen``          ``r-cran-janeaustenr``      ``janeaustenr/data/Rdata.rdb`` (6 novels)
``postgresql-doc``  ``postgresql-doc`` (meta)   ``postgresql-doc-*/html/*.html``
``django-doc``      ``python-django-doc``       ``python-django-doc/html/**/*.html``
``perl-doc``        ``perl-doc``                ``perl/5.*/pod/*.pod``
``git-doc``         ``git-doc``                 ``git-doc/**/*.txt`` (AsciiDoc sources)
``pylib-doc``       ``python-sqlalchemy-doc``,  ``<package>/html/**/*.html``
                    ``python-flask-doc``,
                    ``python-werkzeug-doc``,
                    ``python-setuptools-doc``,
                    ``sphinx-doc``
==================  ==========================  =========================================

Version 1 of the processing had the first three parts only; version 2 (now) adds the others
(:data:`PROCESSING_VERSION`), processed after them so that the first three keep their text.

``fetch()`` (command line: ``abstopk data fetch corpus``) does everything:

1. finds the packages' files (system-wide ``/usr/share/doc`` or already extracted into the
   cache); installs what is missing — as root ``apt-get install -y linux-doc python3-doc``,
   otherwise ``apt-get download`` + ``dpkg -x`` into ``$ABSTOPK_CACHE/debs``. Austen is
   always downloaded + extracted (``apt-get install`` would pull in all of R). ``apt-get
   update`` runs once, only when apt knows no candidate for a package;
2. cleans the reST markup (:func:`clean_rst`), HTML (:func:`clean_html`), POD
   (:func:`clean_pod`) and AsciiDoc (:func:`clean_asciidoc`), splits the novels into chapters;
3. splits BY DOCUMENT into ``train`` and ``heldout``: a document is held out when the first
   8 bytes of ``sha256("abstopk-split:" + doc_id)`` read as an integer ``h`` satisfy
   ``h / 2**64 < heldout_fraction`` (default 5 %). The rule depends on the id only, so the
   split is stable across machines and runs and the two parts never share a document;
4. deduplicates: exact duplicate documents and exact duplicate paragraphs (sha1 of the
   whitespace-normalised paragraph) are dropped, first occurrence kept, all train documents
   processed before held-out ones — so held-out text never repeats a train paragraph;
5. writes ``$ABSTOPK_CACHE/corpus/{train,heldout}.jsonl`` (one ``{"id", "source", "text"}``
   per line, atomically) and ``manifest.json`` (sources with package versions, per-split
   ``n_docs``/``n_chars``/``sha256``, the cleaning and split rules).

A second call with a valid manifest (same processing version, files present with the recorded
sizes and checksums) does nothing. A machine without apt gets one :class:`CorpusUnavailable`
error naming what to pass instead.

Modules: :mod:`.rst`, :mod:`.html`, :mod:`.pod`, :mod:`.asciidoc` (cleaning), :mod:`.austen` (the novels' R database, chapters),
:mod:`.debian` (finding/obtaining the packages), :mod:`.split` (paths, split rule),
:mod:`.build` (reading, deduplication, writing, the manifest), :mod:`.token_count` (tokens
per part for the manifest).
"""

from __future__ import annotations

from ...errors import CorpusUnavailable
from .asciidoc import clean_asciidoc
from .austen import AUSTEN_TITLES, austen_chapters, austen_novels
from .build import CORPUS_FORMAT, PROCESSING_VERSION, ensure_corpus, fetch, load_manifest
from .debian import PACKAGES, SOURCE_OF, SOURCES, install_sources
from .html import clean_html
from .pod import clean_pod
from .rst import CLEANING_RULES, clean_inline, clean_rst
from .split import (
    DEFAULT_HELDOUT_FRACTION,
    SPLIT_RULE,
    SPLITS,
    corpus_dir,
    is_heldout,
    split_path,
)

__all__ = [
    "AUSTEN_TITLES",
    "CLEANING_RULES",
    "CORPUS_FORMAT",
    "DEFAULT_HELDOUT_FRACTION",
    "PACKAGES",
    "PROCESSING_VERSION",
    "SOURCES",
    "SOURCE_OF",
    "SPLITS",
    "SPLIT_RULE",
    "CorpusUnavailable",
    "austen_chapters",
    "austen_novels",
    "clean_asciidoc",
    "clean_html",
    "clean_inline",
    "clean_pod",
    "clean_rst",
    "corpus_dir",
    "ensure_corpus",
    "fetch",
    "install_sources",
    "is_heldout",
    "load_manifest",
    "split_path",
]
