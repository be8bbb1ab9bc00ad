"""``abstopk demo``: the guided tour a newcomer runs first (``make demo``).

The demo is a sequence of :class:`Stage` objects in :data:`STAGES`; each stage gets a header,
runs with its own progress display and may leave results in the shared :class:`DemoContext`
for later stages. Later features append stages (harvest + train on the embedded model,
evaluation table, ...) with :func:`add_stage`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from . import UserError
from .outputs import check_output

__all__ = ["DemoContext", "STAGES", "Stage", "add_stage", "demo_command", "register", "run_demo"]


@dataclass
class DemoContext:
    """Shared state of one demo run.

    Attributes:
        out: output folder (created); stages write their files under it.
        quick: smaller, faster settings (a smoke run of every stage).
        console: the rich console stages print to.
        results: stage name → whatever the stage returned (for later stages and the summary).
    """

    out: Path
    quick: bool
    console: Any
    results: dict[str, Any] = field(default_factory=dict)
    tokens: int | None = None
    d_sae: int | None = None
    steps: int | None = None
    seeds: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Stage:
    """One step of the demo: ``run(ctx)`` does the work and prints its own output."""

    name: str
    title: str
    run: Callable[[DemoContext], Any]


STAGES: list[Stage] = []


def add_stage(stage: Stage) -> Stage:
    """Append ``stage`` to the demo (names must be unique)."""
    if any(s.name == stage.name for s in STAGES):
        raise ValueError(f"demo stage {stage.name!r} already exists")
    STAGES.append(stage)
    return stage


# ----------------------------------------------------------------------------- stages
QUICK_ARCHITECTURES = ("topk", "abstopk", "jumprelu", "absjumprelu")
QUICK_STEPS = 800


def _synthetic_stage(ctx: DemoContext) -> Any:
    from ..analysis.synthetic import BenchConfig, SyntheticConfig
    from .bench import EXPLANATION, run_synthetic

    data_cfg = SyntheticConfig()
    bench_cfg = (BenchConfig(architectures=QUICK_ARCHITECTURES, steps=QUICK_STEPS)
                 if ctx.quick else BenchConfig())
    ctx.console.print(
        f"Data: {data_cfg.n_features} ground-truth directions in R^{data_cfg.d}, "
        f"{data_cfg.n_bidirectional} of them bidirectional (used with + and − signs). "
        f"One SAE per architecture, k = {bench_cfg.k}, same data, seed and steps."
    )
    result = run_synthetic(data_cfg, bench_cfg, console=ctx.console, threads=1,
                           json_out=ctx.out / "synthetic.json",
                           markdown_out=ctx.out / "synthetic.md")
    ctx.console.print(EXPLANATION)
    return result


add_stage(Stage("synthetic", "Synthetic ground truth: one signed latent or a ± pair?",
                _synthetic_stage))


def _pipeline_stage(ctx: DemoContext) -> Any:
    from ..experiments.demo import run_pipeline

    return run_pipeline(ctx.out / "pipeline", quick=ctx.quick, console=ctx.console,
                        tokens=ctx.tokens, d_sae=ctx.d_sae, steps=ctx.steps,
                        seeds=ctx.seeds or (0,))


add_stage(Stage("pipeline", "Real model: harvest, train TopK / AbsTopK / JumpReLU at matched L0, "
                "evaluate", _pipeline_stage))


def _bidirectionality_stage(ctx: DemoContext) -> Any:
    from ..experiments.demo_analysis import run_analysis

    return run_analysis(ctx.out, quick=ctx.quick, console=ctx.console)


add_stage(Stage("bidirectionality", "Bidirectionality: per-latent statistics, the proxy's "
                "bidirectional fraction, minimal pairs, the dashboard", _bidirectionality_stage))


def _steering_stage(ctx: DemoContext) -> Any:
    from ..experiments.demo_steering import run_demo_steering

    return run_demo_steering(ctx.out, quick=ctx.quick, console=ctx.console)


add_stage(Stage("steering", "Steering: DiM vs one AbsTopK latent vs a TopK pair (register axis)",
                _steering_stage))


def _report_stage(ctx: DemoContext) -> Any:
    from ..experiments.demo_report import write_report

    return str(write_report(ctx.out, console=ctx.console))


add_stage(Stage("report", "One-page report (report.html) and summary", _report_stage))


#: files whose presence marks a finished demo (or stage) in the out folder
DEMO_RESULTS = ("synthetic.json", "synthetic.md", "pipeline/pipeline.json",
                "pipeline/pipeline.md", "bidirectional.json", "minimal_pairs.json",
                "dashboard/index.html", "steering.json", "report.html")


# ----------------------------------------------------------------------------- runner
def run_demo(out: Path, quick: bool = False, console: Any = None,
             stages: list[Stage] | None = None, **knobs: Any) -> DemoContext:
    """Run ``stages`` (default: all of :data:`STAGES`) in order with a header each.

    Prints each stage's wall time and CPU time (user + sys of this process, all threads) and
    records them in ``out/stage_times.json`` (``[{"stage", "wall_s", "cpu_s"}, ...]`` in run
    order; the report shows them) after every stage.
    """
    from ..files import atomic_write_json
    from .bench import make_console

    console = console or make_console()
    stages = STAGES if stages is None else stages
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out=out, quick=quick, console=console, **knobs)
    t_all, c_all = time.perf_counter(), time.process_time()
    times: list[dict[str, Any]] = []
    for i, stage in enumerate(stages, 1):
        console.rule(f"[bold]Stage {i}/{len(stages)}: {stage.title}")
        t0, c0 = time.perf_counter(), time.process_time()
        if stage.name == "report":      # the report shows the times of the stages before it
            atomic_write_json(out / "stage_times.json", times)
        ctx.results[stage.name] = stage.run(ctx)
        t = {"stage": stage.name, "wall_s": round(time.perf_counter() - t0, 1),
             "cpu_s": round(time.process_time() - c0, 1)}
        times.append(t)
        atomic_write_json(out / "stage_times.json", times)
        console.print(f"[dim]stage {stage.name!r} done in {t['wall_s']:.0f} s wall, "
                      f"{t['cpu_s']:.0f} s CPU (user + sys)[/dim]")
    console.rule(f"demo finished in {time.perf_counter() - t_all:.0f} s wall, "
                 f"{time.process_time() - c_all:.0f} s CPU; outputs in {out}/")
    return ctx


def demo_command(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for the demo's outputs."),
    quick: bool = typer.Option(False, "--quick", help="Smaller, faster settings (smoke run)."),
    tokens: int = typer.Option(None, "--tokens", help="Activations to harvest (default 65,536)."),
    d_sae: int = typer.Option(None, "--d-sae", help="SAE width (default 2304 = 4 × 576)."),
    steps: int = typer.Option(None, "--steps", help="Training steps per SAE (default 200)."),
    seeds: str = typer.Option(None, "--seeds", help="Comma-separated seeds (default 0)."),
    force: bool = typer.Option(
        False, "--force", help="Run again over the results of an earlier demo in --out."),
) -> None:
    """Guided tour: synthetic ground truth, then harvest → train → evaluate on the embedded LM."""
    seed_tuple = None
    if seeds:
        try:
            seed_tuple = tuple(int(s) for s in seeds.split(","))
        except ValueError:
            raise UserError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    for name, v in (("--tokens", tokens), ("--d-sae", d_sae), ("--steps", steps)):
        if v is not None and v < 1:
            raise UserError(f"{name} must be ≥ 1, got {v}")
    check_output(out, what="the results of an earlier demo", finished=DEMO_RESULTS, force=force)
    run_demo(out, quick=quick, tokens=tokens, d_sae=d_sae, steps=steps, seeds=seed_tuple)


def register(app: typer.Typer) -> None:
    """Add ``abstopk demo`` to the app."""
    app.command("demo")(demo_command)
