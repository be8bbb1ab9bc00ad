"""HTML manual page → prose paragraphs (PostgreSQL's DocBook HTML, Django's and SQLAlchemy's
Sphinx HTML).

:func:`clean_html` walks the page with the standard library's :class:`html.parser.HTMLParser`
(rules recorded in the corpus manifest: :data:`HTML_CLEANING_RULES`):

- only the text inside ``<body>`` counts; ``<head>``, ``<script>``, ``<style>``, ``<pre>``
  (code listings), ``<table>``, ``<nav>``, ``<header>``, ``<footer>``, ``<form>`` and
  ``<math>`` are dropped with their content, and so is every element whose ``class`` has one
  of :data:`SKIP_CLASSES` (navigation bars, sidebars, highlighted code, synopses, ``¶``
  header links) or whose ``id`` is one of :data:`SKIP_IDS`;
- block elements (``p``, ``li``, ``dt``, ``dd``, ``h1``–``h6``, ``div``, ``blockquote``,
  ``br``, ...) end a paragraph; inline elements (``code``, ``em``, ``a``, ...) keep their text;
- character references are decoded; paragraphs are whitespace-normalised and the reST
  cleaner's prose filter applies (:func:`abstopk.data.corpus.rst.is_prose`).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from .rst import is_prose

__all__ = ["HTML_CLEANING_RULES", "SKIP_CLASSES", "SKIP_IDS", "SKIP_TAGS", "clean_html"]

SKIP_TAGS = frozenset("head script style pre table nav header footer form math svg "
                      "textarea select button".split())
SKIP_CLASSES = frozenset("""
navheader navfooter sphinxsidebar sphinxsidebarwrapper related headerlink highlight
literallayout programlisting screen synopsis cmdsynopsis funcsynopsis refsynopsisdiv toc
nav breadcrumbs footer searchbox
""".split())
#: element ids of the navigation around SQLAlchemy's pages (its theme marks them by id)
SKIP_IDS = frozenset("docs-top-navigation-container fixed-sidebar docs-bottom-navigation "
                     "docs-copyright".split())
BLOCK_TAGS = frozenset("""
p li dt dd h1 h2 h3 h4 h5 h6 div blockquote br hr ul ol dl section article main body
figure figcaption caption aside address details summary
""".split())
VOID_TAGS = frozenset("area base br col embed hr img input link meta source track wbr".split())

HTML_CLEANING_RULES = [
    "HTML: text of <body> only; <head>, <script>, <style>, <pre>, <table>, <nav>, <header>, "
    "<footer>, <form>, <math> dropped with their content, and every element whose class is "
    "one of " + ", ".join(sorted(SKIP_CLASSES)) + " or whose id is one of "
    + ", ".join(sorted(SKIP_IDS)),
    "HTML: block elements (p, li, dt, dd, h1-h6, div, blockquote, br, ...) end a paragraph; "
    "inline elements keep their text; character references decoded",
    "HTML: whitespace collapsed; paragraphs with fewer than 2 letters or less than 40 % "
    "letters dropped",
]

_WS = re.compile(r"\s+")


class _Prose(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paras: list[str] = []
        self.buf: list[str] = []
        self.in_body = False
        self.skip_tag: str | None = None  # the tag that opened the skipped element
        self.skip_depth = 0

    def _flush(self) -> None:
        text = _WS.sub(" ", "".join(self.buf)).strip()
        self.buf = []
        if text:
            self.paras.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.in_body = True
        if self.skip_tag is not None:
            if tag == self.skip_tag and tag not in VOID_TAGS:
                self.skip_depth += 1
            return
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        if (tag in SKIP_TAGS or classes & SKIP_CLASSES or a.get("id") in SKIP_IDS) \
                and tag not in VOID_TAGS:
            self._flush()
            self.skip_tag, self.skip_depth = tag, 1
            return
        if tag in BLOCK_TAGS:
            self._flush()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skip_tag is None and tag in BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if self.skip_tag is not None:
            if tag == self.skip_tag:
                self.skip_depth -= 1
                if self.skip_depth == 0:
                    self.skip_tag = None
            return
        if tag in BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self.in_body and self.skip_tag is None:
            self.buf.append(data)


def clean_html(text: str) -> list[str]:
    """Prose paragraphs of one HTML page (rules: :data:`HTML_CLEANING_RULES`)."""
    p = _Prose()
    p.feed(text)
    p.close()
    p._flush()
    return [x for x in p.paras if is_prose(x)]
