"""The judge's prompts: a versioned TOML file and the text pieces put into it.

The shipped file is ``analysis/data/judge_prompts_v2.toml`` (v1, the yes/no judge alone, is kept
beside it) with keys ``version`` (int), ``system``, ``detection`` (fields ``{explanation}``,
``{context}``), ``opposite`` (fields ``{words_a}``, ``{words_b}``: a pole's words in quotes)
and, optionally, the table ``completion`` of the completion opposite test: ``system``,
``neutral`` (a word) and ``templates`` (a list of tables with ``context`` and ``continuation``,
both holding ``{word}``, and an optional chat ``user`` message). A user's own file with the
same keys can replace it; its ``version`` and sha256 are recorded in every judge output.

A *context* is an example of the statistics contract, ``{"tokens": [str], "focus": i,
"value": z}``; it is shown as plain text with the focus token between « and », cut to
``window`` tokens each side. An *explanation* of a pole is its distinct focus tokens, most
frequent first: ``words such as «man», «he», «his»``.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ...errors import UserError

__all__ = ["CompletionTemplate", "JudgePrompts", "explain_pole", "format_context", "load_prompts", "pole_words",
           "quote_words"]

DEFAULT_FILE = "judge_prompts_v2.toml"
_FIELDS = {"detection": ("{explanation}", "{context}"),
           "opposite": ("{words_a}", "{words_b}")}


@dataclass(frozen=True)
class CompletionTemplate:
    """One template of the completion test; ``user`` set: a chat (``context`` begins the
    assistant's reply)."""

    context: str
    continuation: str
    user: str | None = None


@dataclass(frozen=True)
class JudgePrompts:
    version: int
    system: str
    detection: str
    opposite: str
    source: str
    sha256: str
    completion_system: str = ""
    completion_neutral: str = ""
    completion_templates: tuple[CompletionTemplate, ...] = ()

    def meta(self) -> dict[str, Any]:
        return {"version": self.version, "source": self.source, "sha256": self.sha256}


def load_prompts(path: str | Path | None = None) -> JudgePrompts:
    """The prompts of ``path`` (default: the shipped file). :class:`UserError` for a file
    without the keys or the fields above."""
    if path is None:
        raw = (resources.files("abstopk.analysis") / "data" / DEFAULT_FILE).read_bytes()
        source = f"abstopk/analysis/data/{DEFAULT_FILE}"
    else:
        try:
            raw = Path(path).read_bytes()
        except OSError as e:
            raise UserError(f"judge prompts file {path} cannot be read ({e.strerror})") from None
        source = str(path)
    try:
        d = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"judge prompts file {source} is not valid TOML ({e})") from None
    if not isinstance(d.get("version"), int):
        raise UserError(f"judge prompts file {source} has no integer 'version'")
    for key in ("system", "detection", "opposite"):
        if not isinstance(d.get(key), str):
            raise UserError(f"judge prompts file {source} has no text '{key}'")
    for key, fields in _FIELDS.items():
        for f in fields:
            if f not in d[key]:
                raise UserError(f"judge prompts file {source}: '{key}' lacks the field {f}")
    comp = _completion(d.get("completion"), source)
    return JudgePrompts(d["version"], d["system"], d["detection"], d["opposite"], source,
                        hashlib.sha256(raw).hexdigest(), *comp)


def _completion(c: Any, source: str) -> tuple[str, str, tuple[CompletionTemplate, ...]]:
    if c is None:
        return "", "", ()
    bad = f"judge prompts file {source}: 'completion'"
    if not isinstance(c, dict) or not isinstance(c.get("templates"), list) or not c["templates"]:
        raise UserError(f"{bad} needs a non-empty list 'templates'")
    neutral, system = c.get("neutral"), c.get("system", "")
    if not isinstance(neutral, str) or not neutral.strip() or not isinstance(system, str):
        raise UserError(f"{bad} needs a text 'neutral' (a word) and a text 'system'")
    out = []
    for t in c["templates"]:
        ctx, cont, user = (t.get(k) if isinstance(t, dict) else None
                           for k in ("context", "continuation", "user"))
        if not (isinstance(ctx, str) and isinstance(cont, str) and "{word}" in ctx
                and "{word}" in cont and (user is None or isinstance(user, str))):
            raise UserError(f"{bad}: every template needs a 'context' and a 'continuation' "
                            "holding {word}")
        out.append(CompletionTemplate(ctx, cont, user))
    return system, neutral, tuple(out)


def _clean(tok: Any) -> str:
    return str(tok).replace("\n", " ").replace("«", '"').replace("»", '"')


def format_context(ex: Mapping[str, Any], window: int) -> str:
    """The example's tokens joined, focus token between « and », ``window`` tokens each side."""
    toks = [_clean(t) for t in (ex.get("tokens") or [])]
    f = ex.get("focus")
    if not isinstance(f, int) or not 0 <= f < len(toks):
        return "".join(toks).strip()
    lo, hi = max(0, f - window), min(len(toks), f + window + 1)
    word = toks[f]
    lead = word[: len(word) - len(word.lstrip())]
    return ("".join(toks[lo:f]) + lead + "«" + word.strip() + "»"
            + "".join(toks[f + 1:hi])).strip()


def pole_words(examples: Sequence[Mapping[str, Any]], n: int) -> list[str]:
    """The distinct focus tokens of ``examples`` (stripped, case kept), most frequent first
    (ties: first seen first), at most ``n``."""
    words = []
    for ex in examples:
        toks, f = ex.get("tokens") or [], ex.get("focus")
        if isinstance(f, int) and 0 <= f < len(toks):
            w = _clean(toks[f]).strip()
            if w:
                words.append(w)
    c = Counter(words)
    first = {w: i for i, w in reversed(list(enumerate(words)))}
    return sorted(c, key=lambda w: (-c[w], first[w]))[:n]


def explain_pole(words: Sequence[str]) -> str:
    """``words such as «a», «b»`` (the pole's explanation), or ``no words`` when empty."""
    if not words:
        return "no words"
    return "words such as " + ", ".join(f"«{w}»" for w in words)


def quote_words(words: Sequence[str]) -> str:
    """``"a", "b"`` (a pole's words for the opposite question), ``nothing`` when empty."""
    return ", ".join(f'"{w}"' for w in words) if words else "nothing"
