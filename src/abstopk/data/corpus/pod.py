"""Perl POD (``perl-doc``'s ``pod/*.pod``) → prose paragraphs.

POD is a sequence of paragraphs separated by blank lines (rules recorded in the corpus
manifest: :data:`POD_CLEANING_RULES`):

- text before the first command and between ``=cut`` and the next command is Perl code and
  is dropped;
- *command* paragraphs start with ``=``: ``=head1``–``=head4`` and ``=item`` keep their text
  (an ``=item`` that is only a bullet or a number is dropped); ``=begin X`` … ``=end X`` and
  ``=for X …`` are dropped with their content; every other command (``=over``, ``=back``,
  ``=cut``, ``=pod``, ``=encoding``) is dropped;
- *verbatim* paragraphs (the first line starts with a space or a tab: code) are dropped;
- the text of ordinary paragraphs keeps its words: formatting codes ``B<x>``, ``I<x>``,
  ``C<x>``, ``F<x>``, ``S<x>`` become ``x`` (also the ``C<< x >>`` forms), ``L<text|target>``
  becomes ``text`` and ``L<target>`` the target without its ``/section`` quotes,
  ``E<lt>``/``E<gt>``/``E<verbar>``/``E<sol>``/numbers become the character, ``X<…>`` and
  ``Z<>`` vanish; lines are joined and whitespace collapsed; the prose filter of
  :func:`abstopk.data.corpus.rst.is_prose` applies.
"""

from __future__ import annotations

import re

from .rst import is_prose

__all__ = ["POD_CLEANING_RULES", "clean_pod", "pod_inline"]

POD_CLEANING_RULES = [
    "POD: =head1-4 and =item keep their text (bare bullet/number items dropped); "
    "=begin..=end and =for dropped with their content; other commands dropped",
    "POD: verbatim paragraphs (first line indented: code) and code outside POD (before the "
    "first command, after =cut) dropped",
    "POD: formatting codes reduced to their text (B, I, C, F, S; L<text|target> -> text; "
    "E<lt>/E<gt>/E<verbar>/E<sol>/E<n> -> the character; X<> and Z<> removed), also the "
    "C<< x >> forms",
    "POD: paragraph lines joined, whitespace collapsed; paragraphs with fewer than 2 letters "
    "or less than 40 % letters dropped",
]

_ESCAPES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&",
            "apos": "'", "nbsp": " "}
_MULTI = re.compile(r"([A-Z])<{2,}\s+(.*?)\s+>{2,}", re.S)
_SIMPLE = re.compile(r"([A-Z])<([^<>]*)>")
_WS = re.compile(r"\s+")
_BARE_ITEM = re.compile(r"^(\*|\d+\.?|[-+•o])?$")


def _code(letter: str, body: str) -> str:
    if letter in "XZ":
        return ""
    if letter == "E":
        if body in _ESCAPES:
            return _ESCAPES[body]
        try:
            return chr(int(body, 0)) if body.lower().startswith("0x") else chr(int(body))
        except ValueError:
            return ""
    if letter == "L":
        if "|" in body:
            return body.split("|", 1)[0]
        if re.match(r"^\w+://", body):
            return body
        name, _, section = body.partition("/")
        section = section.strip('"')
        return f"{section} in {name}" if name and section else (section or name)
    return body


def pod_inline(text: str) -> str:
    """Formatting codes of one POD paragraph reduced to their text (innermost first)."""
    text = _MULTI.sub(lambda m: _code(m.group(1), m.group(2)), text)
    prev = None
    while prev != text:
        prev = text
        text = _SIMPLE.sub(lambda m: _code(m.group(1), m.group(2)), text)
    return text


def clean_pod(text: str) -> list[str]:
    """Prose paragraphs of one POD document (rules: :data:`POD_CLEANING_RULES`)."""
    out: list[str] = []
    blocks = re.split(r"\n(?:[ \t]*\n)+", text.replace("\r\n", "\n"))
    in_begin: str | None = None
    in_pod = False  # a parser starts in code and enters POD at the first command
    for block in blocks:
        if not block.strip():
            continue
        if block.startswith("="):
            in_pod = not block.startswith("=cut")
            if not in_pod:
                continue
        elif not in_pod:
            continue  # Perl code between =cut and the next command
        if in_begin is not None:
            if re.match(rf"^=end\s+{re.escape(in_begin)}\b", block.strip()):
                in_begin = None
            continue
        if block[0] in " \t":
            continue  # verbatim: code
        if block.startswith("="):
            cmd, _, rest = block.partition(" ") if " " in block.split("\n", 1)[0] \
                else (block.split("\n", 1)[0], "", block.partition("\n")[2])
            cmd = cmd.strip()
            if cmd == "=begin":
                in_begin = rest.split()[0] if rest.split() else ""
                continue
            if cmd in ("=head1", "=head2", "=head3", "=head4", "=item"):
                rest = rest.strip()
                if cmd == "=item" and _BARE_ITEM.match(rest):
                    continue
                block = rest
            else:
                continue
        para = _WS.sub(" ", pod_inline(block)).strip()
        if para and is_prose(para):
            out.append(para)
    return out
