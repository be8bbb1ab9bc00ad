"""Reading a latent-statistics folder (format ``abstopk-latent-stats`` version 1) as plain JSON.

Layout (written by :func:`abstopk.analysis.latent_stats.compute_and_write`; the contract is
in docs/dashboard.md)::

    STATS/index.json                 {"format", "version", "sae", "cache", "negative_side",
                                      "latents": [{"index", "freq_pos", "freq_neg", "max_pos",
                                                   "max_neg", "bidir_score", "label",
                                                   "explanation"}, ...]}
    STATS/latents/{index:06d}.json   one per latent that fired (a dead one may have none)

Unknown keys are ignored; missing optional keys read as None / empty lists.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...errors import StatsFormatError

__all__ = ["FORMAT", "VERSION", "iter_latents", "latent_path", "read_index", "read_judge",
           "read_latent", "read_pairs"]

FORMAT = "abstopk-latent-stats"
VERSION = 1


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StatsFormatError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StatsFormatError(f"{path} is not valid JSON ({e})") from None


def read_index(stats_dir: str | Path) -> dict[str, Any]:
    """``STATS/index.json``, checked: the format name, a version this reader knows and a
    ``latents`` list of dicts with an integer ``index``. Raises
    :class:`~abstopk.errors.StatsFormatError`."""
    d = Path(stats_dir)
    if not d.is_dir():
        raise StatsFormatError(f"{d} is not a folder of latent statistics")
    idx = _read_json(d / "index.json")
    if not isinstance(idx, dict) or idx.get("format") != FORMAT:
        raise StatsFormatError(f"{d / 'index.json'} is not an {FORMAT} index")
    ver = idx.get("version")
    if not isinstance(ver, int) or ver < 1 or ver > VERSION:
        raise StatsFormatError(f"{d / 'index.json'} has version {ver!r}; this dashboard "
                               f"reads versions 1 to {VERSION}")
    lats = idx.get("latents")
    if not isinstance(lats, list) or not all(
            isinstance(r, dict) and isinstance(r.get("index"), int) for r in lats):
        raise StatsFormatError(f"{d / 'index.json'}: 'latents' must be a list of rows "
                               "with an integer 'index'")
    return idx


def latent_path(stats_dir: str | Path, index: int) -> Path:
    """Where the statistics of latent ``index`` lie: ``STATS/latents/{index:06d}.json``."""
    return Path(stats_dir) / "latents" / f"{int(index):06d}.json"


def read_latent(stats_dir: str | Path, index: int) -> dict[str, Any] | None:
    """The statistics of latent ``index``, or None when it has no file (a dead latent)."""
    p = latent_path(stats_dir, index)
    if not p.exists():
        return None
    lat = _read_json(p)
    if not isinstance(lat, dict):
        raise StatsFormatError(f"{p} is not a latent's statistics (a JSON object)")
    if lat.get("index", index) != index:
        raise StatsFormatError(f"{p} holds latent {lat.get('index')!r}, not {index}")
    return lat


def iter_latents(stats_dir: str | Path, index: dict[str, Any]
                 ) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    """``(summary row, latent stats or None)`` for every row of ``index``, in index order."""
    for row in index["latents"]:
        yield row, read_latent(stats_dir, row["index"])


def read_pairs(stats_dir: str | Path, pairs_file: str | Path | None = None
               ) -> dict[int, list[dict[str, Any]]]:
    """Latent → its minimal pairs ``[{"a", "b", "category", "z_a", "z_b", "kind"}]`` from
    ``pairs_file`` or else ``STATS/pairs.json`` (format ``abstopk-minimal-pairs``, written by
    ``abstopk analyze pairs --stats``); empty when neither exists."""
    p = Path(pairs_file) if pairs_file else Path(stats_dir) / "pairs.json"
    if not p.exists():
        if pairs_file:
            raise StatsFormatError(f"{p} is missing")
        return {}
    d = _read_json(p)
    if not isinstance(d, dict) or d.get("format") != "abstopk-minimal-pairs" \
            or not isinstance(d.get("per_latent"), dict):
        raise StatsFormatError(f"{p} is not an abstopk-minimal-pairs file")
    out: dict[int, list[dict[str, Any]]] = {}
    for k, v in d["per_latent"].items():
        if str(k).isdigit() and isinstance(v, list):
            out[int(k)] = [x for x in v if isinstance(x, dict)]
    return out


def read_judge(stats_dir: str | Path, judge_file: str | Path | None = None
               ) -> dict[int, dict[str, Any]]:
    """Latent → its judge record from ``judge_file`` or else ``STATS/judge.json`` (``abstopk
    analyze judge``); empty when neither exists."""
    p = Path(judge_file) if judge_file else Path(stats_dir) / "judge.json"
    if not p.exists():
        if judge_file:
            raise StatsFormatError(f"{p} is missing")
        return {}
    d = _read_json(p)
    if not isinstance(d, dict) or d.get("format") != "abstopk-judge":
        raise StatsFormatError(f"{p} is not an abstopk-judge file")
    return {int(r["index"]): r for r in d.get("latents") or []
            if isinstance(r, dict) and isinstance(r.get("index"), int)}
