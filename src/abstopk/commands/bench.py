"""``abstopk bench``: benchmarks run from the command line.

``abstopk bench synthetic`` trains one SAE per architecture on data drawn from a known
dictionary with bidirectional (signed) and unidirectional features and prints how each
architecture captures the bidirectional ones (see :mod:`abstopk.analysis.synthetic`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from ..analysis.synthetic import BenchConfig, SyntheticConfig
from ..report.synthetic_table import markdown_table as synthetic_markdown
from . import UserError
from .options import config_kwargs, config_options
from .outputs import check_output_file

__all__ = ["make_console", "register", "render_table", "run_synthetic", "synthetic_command", "torch_threads"]

EXPLANATION = (
    "What to look at: 'bi:1 signed' is the share of bidirectional ground-truth features "
    "captured by ONE latent that fires with both signs; 'bi:± pair' the share split into two "
    "one-sided latents (fragmentation). Signed codes (abstopk, batchabstopk, absjumprelu) "
    "should sit near 100 % in the first column, non-negative codes (topk, batchtopk, jumprelu, "
    "relu) are 0 % there by construction and pay about 2 latents per bidirectional feature."
)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (restored on exit); ``None``: unchanged.

    The synthetic SAEs are tiny (256 × 64 matrices): there intra-op parallelism only adds
    synchronisation, and on a loaded machine it can make a step 10–50× slower.
    """
    import torch

    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def make_console():
    """A rich Console; 120 columns when stdout is not a terminal (pipes, CI logs, ``make``),
    where rich would otherwise squeeze the table into 80."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=120)


def render_table(result: Any, title: str | None = None):
    """A rich Table with one row per architecture of a :class:`BenchResult`."""
    from ..report.synthetic_table import render_table as synthetic_table

    s = result.data_summary
    dc, bc = result.data_cfg, result.bench_cfg
    setup = {"d": dc.d, "n_features": dc.n_features, "n_bidirectional": s["n_bidirectional"],
             "mean_active_test": s["mean_active_test"], "k": bc.k, "d_sae": bc.d_sae(dc),
             "steps": bc.steps, "seed": bc.seed, "tau": bc.tau, "seconds": result.seconds}
    return synthetic_table([r.to_dict() for r in result.results], setup, title=title)


def run_synthetic(data_cfg: Any, bench_cfg: Any, *, console: Any = None, threads: int | None = 1,
                  json_out: Path | None = None, markdown_out: Path | None = None,
                  show_progress: bool = True):
    """Run the synthetic benchmark with a rich progress bar, print the table, write outputs.

    Returns the :class:`~abstopk.analysis.synthetic.BenchResult`.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..analysis.synthetic import run_benchmark
    from ..files import atomic_write_bytes, atomic_write_json

    console = console or make_console()
    archs = bench_cfg.architectures
    with Progress(TextColumn("{task.description:>14}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, disable=not show_progress,
                  transient=False) as prog:
        tasks = {a: prog.add_task(a, total=bench_cfg.steps) for a in archs}

        def progress(arch: str, step: int, total: int) -> None:
            if step % 25 == 0 or step == total:
                prog.update(tasks[arch], completed=step)

        with torch_threads(threads):
            result = run_benchmark(data_cfg, bench_cfg, progress=progress)
    console.print(render_table(result))
    if json_out is not None:
        atomic_write_json(json_out, result.to_dict())
        console.print(f"wrote {json_out}")
    if markdown_out is not None:
        atomic_write_bytes(markdown_out, synthetic_markdown(
            [r.to_dict() for r in result.results]).encode())
        console.print(f"wrote {markdown_out}")
    return result


@config_options(BenchConfig, SyntheticConfig)
def synthetic_command(
    seed: int = typer.Option(0, "--seed", help="Seed of everything: data, SAE init, batch order."),
    threads: int = typer.Option(
        1, "--threads", min=1, help="torch CPU threads while training (tiny matrices: 1 is fastest)."),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for synthetic.json and synthetic.md (as the demo writes)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write all results as JSON here."),
    markdown_out: Path | None = typer.Option(
        None, "--markdown", help="Write the table as Markdown here."),
    force: bool = typer.Option(False, "--force", help="Replace existing --json / --markdown files."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    **fields: Any,
) -> None:
    """Train one SAE per architecture on synthetic data with known bidirectional features."""
    if out is not None:
        if out.exists() and not out.is_dir():
            raise UserError(f"{out} exists and is not a folder")
        json_out = json_out or out / "synthetic.json"
        markdown_out = markdown_out or out / "synthetic.md"
    for p in (json_out, markdown_out):
        check_output_file(p, what="benchmark results", force=force)
    try:
        data_cfg = SyntheticConfig(**config_kwargs(SyntheticConfig, fields, seed=seed))
        bench_cfg = BenchConfig(**config_kwargs(BenchConfig, fields, seed=seed))
    except ValueError as e:
        raise UserError(str(e)) from None
    run_synthetic(data_cfg, bench_cfg, threads=threads, json_out=json_out,
                  markdown_out=markdown_out, show_progress=progress)
    typer.echo(EXPLANATION)


bench_app = typer.Typer(
    help="Benchmarks: `synthetic` (ground-truth bidirectional features).",
    no_args_is_help=True,
)
bench_app.command("synthetic")(synthetic_command)


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command group to the ``abstopk`` app."""
    app.add_typer(bench_app, name="bench")
