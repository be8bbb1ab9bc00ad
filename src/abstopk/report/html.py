"""HTML building blocks shared by the dashboard (:mod:`.dashboard`) and the demo's report
(:mod:`.html_report`): escaping, tables, signed numbers, a page skeleton, JS data files.

Everything that comes from data (tokens, labels, explanations, names) goes through
:func:`esc`; tokens may hold ``<``, ``&`` and quotes. Markup is built as plain strings, no
templating engine, no network resources (the pages open from ``file://``).
"""

from __future__ import annotations

import functools
import html
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["esc", "fmt_num", "fmt_signed", "html_table", "js_data", "page", "render_token"]


def esc(text: Any) -> str:
    """HTML-escape ``str(text)`` for element content and quoted attribute values."""
    return html.escape("" if text is None else str(text), quote=True)


def _finite(v: Any) -> float | None:
    """``float(v)``, or None for None / NaN / non-numbers."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def fmt_num(v: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; ``—`` for None / NaN / non-numbers."""
    f = _finite(v)
    return "—" if f is None else f"{f:.{digits}g}"


def fmt_signed(v: Any, digits: int = 3) -> str:
    """A signed value with an explicit sign: ``+1.23`` / ``−0.456`` (true minus sign)."""
    f = _finite(v)
    if f is None:
        return "—"
    if f == 0:
        return "0"
    return ("−" if f < 0 else "+") + f"{abs(f):.{digits}g}"


def render_token(tok: Any) -> str:
    """One token as escaped text with whitespace made visible where it would vanish:
    newline → ``⏎``, tab → ``⇥``; spaces stay (the context boxes use ``white-space: pre``).
    Memoised for strings (a dashboard renders millions of tokens from one vocabulary)."""
    if isinstance(tok, str):
        return _render_str(tok)
    return _render_str("" if tok is None else str(tok))


@functools.lru_cache(maxsize=1 << 17)
def _render_str(s: str) -> str:
    return esc(s.replace("\r", "").replace("\n", "⏎").replace("\t", "⇥"))


def html_table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, cls: str = "tbl",
               raw: bool = False, table_id: str | None = None) -> str:
    """A ``<table>``: ``header`` cells escaped; row cells escaped unless ``raw`` (already
    HTML). Cells that look numeric are right-aligned (class ``num``)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for r in rows:
        cells = []
        for c in r:
            text = str(c) if raw else esc(c)
            num = _looks_numeric(c)
            cells.append(f'<td class="num">{text}</td>' if num else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    tid = f' id="{esc(table_id)}"' if table_id else ""
    return (f'<table class="{esc(cls)}"{tid}><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _looks_numeric(c: Any) -> bool:
    if isinstance(c, int | float):
        return True
    s = str(c).strip().replace("−", "-").replace("±", " ").replace("%", "")
    parts = s.split()
    if not parts:
        return False
    try:
        float(parts[0])
    except ValueError:
        return False
    return True


def js_data(var: str, obj: Any) -> str:
    """A JavaScript file assigning ``obj`` as JSON to ``window[var]``: loaded with
    ``<script src>``, which browsers allow from ``file://`` where ``fetch()`` is blocked.
    ``<`` is written as ``\\u003c`` so the text is also safe inside an inline script."""
    data = json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return f"window[{json.dumps(var)}] = {data.replace('<', chr(92) + 'u003c')};\n"


def page(title: str, body: str, *, css: Sequence[str] = (), scripts: Sequence[str] = (),
         inline_css: str = "") -> str:
    """A complete HTML5 document: ``title`` escaped, ``body`` raw HTML, stylesheet and
    script paths (relative URLs, escaped), optional inline CSS."""
    links = "".join(f'<link rel="stylesheet" href="{esc(c)}">' for c in css)
    style = f"<style>{inline_css}</style>" if inline_css else ""
    js = "".join(f'<script src="{esc(s)}"></script>' for s in scripts)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title>{links}{style}</head>"
            f"<body>{body}{js}</body></html>\n")
