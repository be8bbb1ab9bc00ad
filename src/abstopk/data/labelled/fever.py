"""BIG-bench ``fact_checker/fever`` claims read from the bigbench sdist (true/false)."""

from __future__ import annotations

import json
import os
import re
import tarfile

from ...errors import DataUnavailable
from .example import Example

__all__ = ["read_fever"]

_FEVER_RE = re.compile(
    r"^\s*On [^\n]*?, the following claim was made:\s*(.*?)\s*\n\s*Q: Was this claim true or "
    r"false\?\s*$", re.S)


def read_fever(sdist: str | os.PathLike) -> list[Example]:
    """BIG-bench ``fact_checker/fever`` claims from the bigbench sdist, label true/false.

    Reads ``*/bigbench/benchmark_tasks/fact_checker/fever/task.json`` straight from the
    tarball and strips each input to the bare claim (examples whose input does not match the
    wrapper, or whose ``target_scores`` are not one-hot over true/false, are skipped).
    """
    with tarfile.open(sdist) as t:
        for m in t:
            p = m.name.split("/")
            if (len(p) >= 6 and p[-4:] == ["benchmark_tasks", "fact_checker", "fever",
                                           "task.json"]):
                data = json.load(t.extractfile(m))
                break
        else:
            raise DataUnavailable(f"{sdist}: no benchmark_tasks/fact_checker/fever/task.json")
    out = []
    for ex in data.get("examples", []):
        mt = _FEVER_RE.match(ex.get("input", ""))
        ts = ex.get("target_scores", {})
        if not mt or set(ts) != {"true", "false"} or ts["true"] + ts["false"] != 1:
            continue
        out.append(Example(" ".join(mt.group(1).split()), "true" if ts["true"] else "false"))
    return out

