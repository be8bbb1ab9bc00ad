"""Multiple-choice questions from BIG-bench 1.0.0, extracted once into small JSON files.

The ``bigbench`` 1.0.0 sdist (358 MB, PyPI, Apache-2.0 upstream) is fetched with pip
(:func:`abstopk.data.labelled.fetch.fetch_bigbench`, sha256-pinned); :func:`fetch_mc` reads only
the tasks in :data:`MC_TASKS` straight from the tarball and writes one JSON per task to
``<cache>/mc/`` (at most :data:`MAX_EXAMPLES` examples each, in file order), then deletes the
tarball unless asked to keep it (or it was in the cache before). A task file::

    {"task": "goal_step_wikihow/step_inference", "source": "bigbench==1.0.0",
     "canary": "...", "task_prefix": "", "input_prefix": "\\nQ: ", "output_prefix": "\\nA: ",
     "n_total": 2250, "examples": [{"input": str, "choices": [str, ...], "answer": int}, ...]}

``answer`` is the index of the choice with target score 1 (examples without exactly one such
choice are skipped). Prompts follow BIG-bench's multiple-choice layout:
``task_prefix + input_prefix + input + output_prefix`` followed by the choice
(:func:`mc_prompt`); missing prefixes take BIG-bench's defaults ``"\\nQ: "`` / ``"\\nA: "``.
Every file keeps BIG-bench's canary string: never mix this text into a training corpus.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataUnavailable
from ..files import atomic_write_json, cache_root

__all__ = ["MAX_EXAMPLES", "MC_TASKS", "MCQuestion", "extract_mc", "fetch_mc", "load_mc",
           "mc_dir", "mc_prompt"]

#: the tasks extracted by default (English, short inputs, 2–6 choices)
MC_TASKS = ("goal_step_wikihow/step_inference", "goal_step_wikihow/goal_inference",
            "social_iqa", "general_knowledge", "hyperbaton", "sports_understanding",
            "strategyqa", "winowhy")
#: examples kept per task (the first ones in the task file)
MAX_EXAMPLES = 2000


@dataclass(frozen=True)
class MCQuestion:
    """One question: the full prompt, its choices and the index of the right one."""

    prompt: str
    choices: tuple[str, ...]
    answer: int


def mc_dir(cache: str | os.PathLike | None = None) -> Path:
    return (Path(cache) if cache is not None else cache_root()) / "mc"


def _fname(task: str) -> str:
    return task.replace("/", "__") + ".json"


def extract_mc(sdist: str | os.PathLike, out: str | os.PathLike,
               tasks: Sequence[str] = MC_TASKS, *, max_examples: int = MAX_EXAMPLES
               ) -> dict[str, Path]:
    """Write ``out/<task>.json`` for each of ``tasks`` found in the sdist; {task: path}.

    Reads ``*/bigbench/benchmark_tasks/<task>/task.json`` (``task_mc.json`` where a task has
    one) from the tarball. Raises :class:`DataUnavailable` naming any task not found.
    """
    want = set(tasks)
    found: dict[str, dict] = {}
    with tarfile.open(sdist) as t:
        for m in t:
            p = m.name.split("/")
            if "benchmark_tasks" not in p or p[-1] not in ("task.json", "task_mc.json"):
                continue
            i = p.index("benchmark_tasks")
            name = "/".join(p[i + 1:-1])
            if name in want and (name not in found or p[-1] == "task_mc.json"):
                found[name] = json.load(t.extractfile(m))
    missing = sorted(want - set(found))
    if missing:
        raise DataUnavailable(f"{sdist}: no BIG-bench task {', '.join(missing)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in tasks:
        d = found[name]
        ex = []
        for e in d.get("examples", []):
            ts = e.get("target_scores") or {}
            right = [c for c, v in ts.items() if v == 1]
            if "input" not in e or len(ts) < 2 or len(right) != 1:
                continue
            choices = list(ts)
            ex.append({"input": e["input"], "choices": choices,
                       "answer": choices.index(right[0])})
            if len(ex) >= max_examples:
                break
        canary = d.get("canary", "")
        doc = {"task": name, "source": "bigbench==1.0.0", "canary": canary,
               "task_prefix": d.get("task_prefix") or "",
               "input_prefix": (d["example_input_prefix"]
                                if d.get("example_input_prefix") is not None else "\nQ: "),
               "output_prefix": (d["example_output_prefix"]
                                 if d.get("example_output_prefix") is not None else "\nA: "),
               "n_total": len(d.get("examples", [])), "examples": ex}
        paths[name] = atomic_write_json(out / _fname(name), doc)
    return paths


def fetch_mc(cache: str | os.PathLike | None = None, tasks: Sequence[str] = MC_TASKS, *,
             keep_sdist: bool = False, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Set-up step: the task files in ``<cache>/mc/``; downloads the sdist when a task is
    missing. Idempotent (quick when every file is there). Returns {task: path}."""
    from .labelled.fetch import BIGBENCH_VERSION, fetch_bigbench

    out = mc_dir(cache)
    have = {t: out / _fname(t) for t in tasks if (out / _fname(t)).is_file()}
    if len(have) == len(tasks):
        return have
    root = Path(cache) if cache is not None else cache_root()
    sdist = root / "bigbench" / f"bigbench-{BIGBENCH_VERSION}.tar.gz"
    existed = sdist.is_file()
    sdist = fetch_bigbench(cache, log)
    log(f"extracting {len(tasks)} multiple-choice tasks into {out}")
    paths = extract_mc(sdist, out, tasks)
    if not (keep_sdist or existed):
        sdist.unlink()
        log(f"deleted {sdist} (keep it with keep_sdist)")
    return paths


def load_mc(task: str, cache: str | os.PathLike | None = None, n: int | None = None
            ) -> list[MCQuestion]:
    """The first ``n`` (all when None) questions of ``task`` as prompts with their choices."""
    path = mc_dir(cache) / _fname(task)
    if not path.is_file():
        raise DataUnavailable(f"multiple-choice task {task!r} is not in {path.parent}: fetch "
                              "it with `abstopk data fetch bigbench`")
    d = json.loads(path.read_text(encoding="utf-8"))
    ex = d["examples"][:n] if n is not None else d["examples"]
    return [MCQuestion(mc_prompt(d, e["input"]), tuple(e["choices"]), int(e["answer"]))
            for e in ex]


def mc_prompt(task: dict, text: str) -> str:
    """``task_prefix + input_prefix + input + output_prefix``, leading newlines and the
    trailing space stripped (the scorer puts a space before each choice)."""
    p = f"{task.get('task_prefix', '')}{task.get('input_prefix', '')}{text}" \
        f"{task.get('output_prefix', '')}"
    return p.lstrip("\n").rstrip(" ")
