"""reST source → prose paragraphs: the cleaning rule of the embedded corpus.

:func:`clean_rst` turns one ``.rst.txt`` file into a list of paragraphs (rules, recorded in
the corpus manifest: :data:`CLEANING_RULES`). :func:`paragraphs` and :func:`is_prose` are
the last two steps (line joining, the letter-ratio filter); the Austen chapters reuse them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["CLEANING_RULES", "PROSE_DIRECTIVES", "clean_inline", "clean_rst", "is_prose",
           "paragraphs"]

CLEANING_RULES = [
    "section adornment lines (a punctuation character repeated >= 3 times) dropped, "
    "titles kept",
    "directive/comment/target lines starting with '..' dropped with their indented bodies, "
    "except prose directives (note, warning, function, class, versionadded, ...) whose "
    "bodies are kept and cleaned recursively (their option lines ':opt:' dropped)",
    "tables dropped: grid tables ('+--', '+==', rows starting with '|') and simple tables "
    "(from a '=== ===' border to the border followed by a blank line)",
    "literal blocks dropped: the indented block after a paragraph ending in '::' "
    "('text::' -> 'text:'); doctest blocks (from a '>>>' line to the next blank line)",
    "inline markup: :role:`text <target>` -> text (leading ~ or ! removed), ``code`` -> "
    "code, `text <url>`_ -> text, `ref`_ -> ref, **x**/*x* -> x, |subst| -> subst, "
    "footnote references [#x]_ / [1]_ removed",
    "paragraph lines joined with one space (list items kept on their own line); runs of "
    "spaces/tabs collapsed; paragraphs separated by one blank line",
    "paragraphs with fewer than 2 letters or less than 40 % letters dropped",
]

PROSE_DIRECTIVES = frozenset("""
note warning tip important attention caution danger error hint admonition seealso
versionadded versionchanged deprecated deprecated-removed impl-detail topic sidebar
rubric function class method attribute data exception describe decorator classmethod
staticmethod coroutinefunction coroutinemethod abstractmethod opcode cmdoption option
envvar module-contents glossary c:function c:macro c:type c:member c:var c:struct c:union
c:enum c:enumerator c:data cpp:function cpp:class c:namespace kernel-feat
""".split())

_ADORN = re.compile(r"^\s*([=\-~^\"'`#*+<>_:.])\1{2,}\s*$")
_SIMPLE_BORDER = re.compile(r"^\s*=+(\s+=+)+\s*$")
_DIRECTIVE = re.compile(r"^\.\.\s+([\w:.-]+)::\s*(.*)$")
_OPTION_LINE = re.compile(r"^:[\w -]+:( |$)")
_BULLET = re.compile(r"^([-*+•]\s|#\.\s|\(?\d+[.)]\s|\(?[a-zA-Z][.)]\s)")
_ROLE = re.compile(r":[\w:.+-]+:`([^`]*)`")
_LITERAL = re.compile(r"``(.+?)``")
_LINK = re.compile(r"`([^`<]*?)\s*<[^`>]*>`__?")
_REF = re.compile(r"`([^`]+)`__?")
_INTERP = re.compile(r"`([^`]+)`")
_STRONG = re.compile(r"\*\*(\S(?:.*?\S)?)\*\*")
_EMPH = re.compile(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])")
_SUBST = re.compile(r"\|([\w -]+)\|")
_FOOTREF = re.compile(r"\s?\[(#[\w-]*|\d+|\*)\]_")
_SPACES = re.compile(r"[ \t\u00a0]+")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _role_text(m: re.Match) -> str:
    t = m.group(1)
    t = re.sub(r"\s*<[^>]*>\s*$", "", t) if "<" in t else t
    return t.lstrip("~!")


def clean_inline(text: str) -> str:
    """Remove reST inline markup from one line of text (see ``CLEANING_RULES``)."""
    if "`" in text:
        text = _ROLE.sub(_role_text, text)
        text = _LITERAL.sub(r"\1", text)
        text = _LINK.sub(r"\1", text)
        text = _REF.sub(r"\1", text)
        text = _INTERP.sub(r"\1", text)
    if "*" in text:
        text = _STRONG.sub(r"\1", text)
        text = _EMPH.sub(r"\1", text)
    if "|" in text:
        text = _SUBST.sub(r"\1", text)
    if "]_" in text:
        text = _FOOTREF.sub("", text)
    return text


def _skip_block(lines: list[str], i: int, base: int) -> int:
    """Index of the first line at or after ``i`` that is non-blank with indent <= base."""
    n = len(lines)
    while i < n and (not lines[i].strip() or _indent(lines[i]) > base):
        i += 1
    return i


def _clean_lines(lines: list[str], out: list[str]) -> None:
    """Append cleaned lines (blank lines separate paragraphs) for the reST ``lines``."""
    i, n = 0, len(lines)
    while i < n:
        raw = lines[i].rstrip()
        s = raw.strip()
        if not s:
            out.append("")
            i += 1
            continue
        ind = _indent(raw)
        if s.startswith(".."):
            m = _DIRECTIVE.match(s)
            i0 = i
            while i0 + 1 < n and lines[i0].rstrip().endswith("\\"):
                i0 += 1  # signature continued on the next line
            j = _skip_block(lines, i0 + 1, ind)
            if m and m.group(1).lower() in PROSE_DIRECTIVES:
                body = lines[i0 + 1:j]
                k = 0
                while k < len(body) and _OPTION_LINE.match(body[k].strip()):
                    k += 1
                body = body[k:]
                nonblank = [_indent(b) for b in body if b.strip()]
                cut = min(nonblank) if nonblank else 0
                out.append("")
                _clean_lines([b[cut:] for b in body], out)
                out.append("")
            else:
                out.append("")
            i = j
            continue
        if _SIMPLE_BORDER.match(raw):
            # simple table: skip to the border that is followed by a blank line / EOF
            j = i + 1
            while j < n:
                if _SIMPLE_BORDER.match(lines[j]) and (j + 1 >= n or not lines[j + 1].strip()):
                    break
                j += 1
            out.append("")
            i = j + 1
            continue
        if _ADORN.match(raw):
            out.append("")  # adornment: the title above stays a paragraph of its own
            i += 1
            continue
        if s.startswith(("+-", "+=", "|")):
            out.append("")
            i += 1
            continue
        if s.startswith(">>>"):  # a doctest block ends at the next blank line
            while i < n and lines[i].strip():
                i += 1
            out.append("")
            continue
        if s.endswith("::"):
            text = s[:-2].rstrip()
            if text and not s.endswith(" ::"):
                text += ":"
            if text:
                out.append(text)
            # skip the literal block: blank lines then lines indented deeper than this one
            j = i + 1
            while j < n and not lines[j].strip():
                j += 1
            if j < n and _indent(lines[j]) > ind:
                j = _skip_block(lines, j, ind)
            out.append("")
            i = j
            continue
        out.append(s)
        i += 1


def paragraphs(lines: list[str]) -> Iterator[str]:
    """Join cleaned lines into paragraphs (blank lines separate them), inline markup removed.

    Lines of a paragraph are joined with one space, except list items, which start a new
    line; runs of spaces/tabs collapse to one space; empty paragraphs are not yielded.
    """
    para: list[str] = []
    for line in lines + [""]:
        if line:
            line = _SPACES.sub(" ", line).strip()
            if not line:
                continue
            if para and _BULLET.match(line):
                para.append("\n" + line)
            else:
                para.append((" " if para else "") + line)
        elif para:
            text = _SPACES.sub(" ", clean_inline("".join(para))).strip()
            if text:
                yield text
            para = []


_NON_LETTERS = re.compile(r"[\W\d_]+")


def is_prose(p: str) -> bool:
    """True for a paragraph with >= 2 letters that are >= 40 % of its characters."""
    letters = len(_NON_LETTERS.sub("", p))
    return letters >= 2 and letters >= 0.4 * len(p)


def clean_rst(text: str) -> list[str]:
    """Clean reST source into a list of prose paragraphs (rules: ``CLEANING_RULES``)."""
    out: list[str] = []
    _clean_lines(text.expandtabs(8).splitlines(), out)
    return [p for p in paragraphs(out) if is_prose(p)]
