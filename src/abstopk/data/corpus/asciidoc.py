"""AsciiDoc (``git-doc``'s ``*.txt`` sources of the Git manual) → prose paragraphs.

Rules (recorded in the corpus manifest: :data:`ASCIIDOC_CLEANING_RULES`):

- two-line section titles (a text line underlined by ``=``, ``-``, ``~``, ``^`` or ``+`` of
  about its length) and one-line titles (``== Title``) keep the title, drop the underline;
- delimited blocks dropped with their content: listing ``----``, literal ``....``,
  passthrough ``++++``, comment ``////`` (four or more of the character), tables ``|===``;
  the contents of example ``====``, sidebar ``****`` and quote ``____`` blocks are kept;
- a paragraph after a ``[verse]``, ``[source…]``, ``[listing]`` or ``[literal]`` attribute
  line is dropped (a synopsis or code); other block attribute lines (``[NOTE]``), anchors
  ``[[id]]``, attribute entries ``:name: value``, ``//`` comments, ``include::``, ``ifdef::``
  … preprocessor lines and ``+`` list continuations are dropped;
- a paragraph whose first line is indented is a literal block (code) and is dropped, except
  the indented body of a labelled-list entry (``term::`` followed by its description);
- inline: ``linkgit:git-x[1]`` → ``git-x``, ``link:url[text]`` / ``https://url[text]`` →
  ``text``, ``<<id,text>>`` → ``text``, ``footnote:[x]`` → ``(x)``, ``{litdd}`` → ``--``,
  ``{caret}`` → ``^``, ``{tilde}`` → ``~``; quotes ```x```, ``'x'``, ``*x*``, ``_x_``,
  ``+x+`` → ``x``; then the reST cleaner's line joining and prose filter
  (:func:`abstopk.data.corpus.rst.paragraphs`, :func:`~abstopk.data.corpus.rst.is_prose`).
"""

from __future__ import annotations

import re

from .rst import is_prose, paragraphs

__all__ = ["ASCIIDOC_CLEANING_RULES", "asciidoc_inline", "clean_asciidoc"]

ASCIIDOC_CLEANING_RULES = [
    "AsciiDoc: section titles kept (two-line underlines and '== ' prefixes dropped)",
    "AsciiDoc: listing ----, literal ...., passthrough ++++, comment //// blocks and |=== "
    "tables dropped with their content; example/sidebar/quote block contents kept",
    "AsciiDoc: the paragraph after [verse]/[source]/[listing]/[literal] dropped; attribute, "
    "anchor, comment, include::/ifdef:: and '+' continuation lines dropped",
    "AsciiDoc: indented paragraphs (literal code) dropped except the body of a 'term::' "
    "labelled-list entry",
    "AsciiDoc: inline macros and quotes reduced to their text (linkgit:x[1] -> x, "
    "link:u[text] -> text, <<id,text>> -> text, `x`/'x'/*x*/_x_/+x+ -> x); lines joined and "
    "the prose filter (>= 2 letters, >= 40 % letters) as for reST",
]

_UNDERLINE = re.compile(r"^([=\-~^+])\1+\s*$")
_DELIM = re.compile(r"^(-{4,}|\.{4,}|\+{4,}|/{4,}|={4,}|\*{4,}|_{4,})\s*$")
_DROP_BLOCK = ("-", ".", "+", "/")
_ONE_LINE_TITLE = re.compile(r"^={1,5}\s+(.+?)(\s+=+)?\s*$")
_ATTR_LINE = re.compile(r"^\[[^\]]*\]\s*$")
_CODE_ATTR = re.compile(r"^\[(verse|source|listing|literal)\b", re.I)
_ATTR_ENTRY = re.compile(r"^:[\w-]+!?:(\s|$)")
_PREPROC = re.compile(r"^(include|ifdef|ifndef|ifeval|endif)::")
_TERM = re.compile(r"^(.+?)(::|;;|:::|::::)\s*$")

_LINKGIT = re.compile(r"linkgit:([\w.-]+)\[\d*\]")
_LINK = re.compile(r"(?:link:|(?=https?://))(\S+?)\[([^\]]*)\]")
_XREF = re.compile(r"<<([^,>]+)(?:,\s*([^>]+))?>>")
_FOOTNOTE = re.compile(r"footnote:\[([^\]]*)\]")
_ANCHOR = re.compile(r"\[\[[^\]]*\]\]")
_QUOTES = [re.compile(r"(?<![\w`])`([^`]+)`(?![\w`])"),
           re.compile(r"(?<![\w'])'([^'\s](?:[^']*[^'\s])?)'(?![\w'])"),
           re.compile(r"(?<![\w*])\*([^*\s](?:[^*]*[^*\s])?)\*(?![\w*])"),
           re.compile(r"(?<![\w_])_([^_\s](?:[^_]*[^_\s])?)_(?![\w_])"),
           re.compile(r"(?<![\w+])\+([^+\s](?:[^+]*[^+\s])?)\+(?![\w+])")]
_ATTRS = {"{litdd}": "--", "{caret}": "^", "{tilde}": "~", "{plus}": "+", "{nbsp}": " ",
          "{empty}": "", "{startsb}": "[", "{endsb}": "]", "{vbar}": "|", "{apostrophe}": "'"}


def asciidoc_inline(text: str) -> str:
    """Inline AsciiDoc macros and quotes of one line reduced to their text."""
    for k, v in _ATTRS.items():
        text = text.replace(k, v)
    text = _LINKGIT.sub(r"\1", text)
    text = _LINK.sub(lambda m: m.group(2) or m.group(1), text)
    text = _XREF.sub(lambda m: m.group(2) or m.group(1), text)
    text = _FOOTNOTE.sub(r"(\1)", text)
    text = _ANCHOR.sub("", text)
    for q in _QUOTES:
        text = q.sub(r"\1", text)
    return text


def clean_asciidoc(text: str) -> list[str]:
    """Prose paragraphs of one AsciiDoc document (rules: :data:`ASCIIDOC_CLEANING_RULES`)."""
    lines = text.expandtabs(8).replace("\r\n", "\n").split("\n")
    out: list[str] = []
    i, n = 0, len(lines)
    prev_blank = True
    drop_next_para = False
    in_term_body = False  # inside the description of a 'term::' entry
    while i < n:
        raw = lines[i].rstrip()
        s = raw.strip()
        if not s:
            out.append("")
            prev_blank = True
            i += 1
            continue
        if s.startswith("|==="):
            j = i + 1
            while j < n and not lines[j].strip().startswith("|==="):
                j += 1
            out.append("")
            i, prev_blank = j + 1, True
            continue
        # a two-line title: text line followed by an underline of about its length
        if i + 1 < n and _UNDERLINE.match(lines[i + 1].strip()) and not _DELIM.match(s) \
                and abs(len(lines[i + 1].strip()) - len(s)) <= 3:
            out += ["", asciidoc_inline(s), ""]
            i, prev_blank, in_term_body = i + 2, True, False
            continue
        m = _DELIM.match(s)
        if m:
            ch = s[0]
            if ch in _DROP_BLOCK or drop_next_para:
                j = i + 1
                while j < n and lines[j].strip() != s:
                    j += 1
                i = j + 1
            else:
                i += 1  # example / sidebar / quote block: keep its content
            out.append("")
            prev_blank, drop_next_para = True, False
            continue
        if s == "--" or s == "+" or s.startswith("//") or _ATTR_ENTRY.match(s) \
                or _PREPROC.match(s) or _ANCHOR.fullmatch(s):
            out.append("")
            i += 1
            continue
        if _ATTR_LINE.match(s):
            drop_next_para = bool(_CODE_ATTR.match(s))
            out.append("")
            i += 1
            continue
        t = _ONE_LINE_TITLE.match(s)
        if t and prev_blank:
            out += ["", asciidoc_inline(t.group(1)), ""]
            i += 1
            continue
        # a paragraph starts here: read it to the next blank line
        j = i
        while j < n and lines[j].strip() and not _DELIM.match(lines[j].strip()) \
                and lines[j].strip() != "+":
            j += 1
        block = [ln.rstrip() for ln in lines[i:j]]
        i, prev_blank = j, False
        if drop_next_para:
            drop_next_para = False
            out.append("")
            continue
        indented = block[0][:1] == " "
        term = _TERM.match(block[0].strip()) if not indented else None
        if term:
            out += ["", asciidoc_inline(term.group(1)), ""]
            block = block[1:]
            in_term_body = True
            if not block:
                continue
            indented = False
        elif indented and not in_term_body:
            out.append("")
            continue  # a literal paragraph: code
        else:
            in_term_body = indented and in_term_body
        for ln in block:  # a 'term::' line inside a block starts another entry
            t2 = _TERM.match(ln.strip()) if ln[:1] != " " else None
            out += ["", asciidoc_inline(t2.group(1)), ""] if t2 and t2.group(2) == "::" \
                else [asciidoc_inline(ln.strip())]
        out.append("")
    return [p for p in paragraphs(out) if is_prose(p)]
