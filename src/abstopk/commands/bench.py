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

from . import UserError, field_help

__all__ = ["make_console", "register", "render_table", "run_synthetic", "synthetic_command", "torch_threads"]

EXPLANATION = (
    "What to look at: 'bi:1 signed' is the share of bidirectional ground-truth features "
    "captured by ONE latent that fires with both signs; 'bi:± pair' the share split into two "
    "one-sided latents (fragmentation). Signed codes (abstopk, batchabstopk, absjumprelu) "
    "should sit near 100 % in the first column, non-negative codes (topk, batchtopk, jumprelu, "
    "relu) are 0 % there by construction and pay about 2 latents per bidirectional feature."
)


def _hb(name: str) -> str:
    from ..analysis.synthetic import BenchConfig

    return field_help(BenchConfig, name)


def _hd(name: str) -> str:
    from ..analysis.synthetic import SyntheticConfig

    return field_help(SyntheticConfig, name)


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
        atomic_write_bytes(markdown_out, result.to_markdown().encode())
        console.print(f"wrote {markdown_out}")
    return result


def _dflt(cls_name: str, name: str) -> Any:
    """Default of a config field (so ``--help`` shows the real defaults)."""
    import dataclasses

    from ..analysis import synthetic

    for f in dataclasses.fields(getattr(synthetic, cls_name)):
        if f.name == name:
            v = f.default
            return ",".join(v) if isinstance(v, tuple) else v
    raise KeyError(name)


def synthetic_command(
    seed: int = typer.Option(0, "--seed", help="Seed of everything: data, SAE init, batch order."),
    steps: int = typer.Option(_dflt("BenchConfig", "steps"), "--steps", help=_hb("steps")),
    architectures: str = typer.Option(_dflt("BenchConfig", "architectures"), "--architectures",
                                      help=_hb("architectures")),
    k: int = typer.Option(_dflt("BenchConfig", "k"), "--k", help=_hb("k")),
    expansion: float = typer.Option(_dflt("BenchConfig", "expansion"), "--expansion",
                                    help=_hb("expansion")),
    d: int = typer.Option(_dflt("SyntheticConfig", "d"), "--d", help=_hd("d")),
    n_features: int = typer.Option(_dflt("SyntheticConfig", "n_features"), "--n-features",
                                   help=_hd("n_features")),
    frac_bidirectional: float = typer.Option(
        _dflt("SyntheticConfig", "frac_bidirectional"), "--frac-bidirectional",
        help=_hd("frac_bidirectional")),
    mean_active: float = typer.Option(_dflt("SyntheticConfig", "mean_active"), "--mean-active",
                                      help=_hd("mean_active")),
    noise: float = typer.Option(_dflt("SyntheticConfig", "noise"), "--noise", help=_hd("noise")),
    tau: float = typer.Option(_dflt("BenchConfig", "tau"), "--tau", help=_hb("tau")),
    threads: int = typer.Option(
        1, "--threads", min=1, help="torch CPU threads while training (tiny matrices: 1 is fastest)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write all results as JSON here."),
    markdown_out: Path | None = typer.Option(
        None, "--markdown", help="Write the table as Markdown here."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Train one SAE per architecture on synthetic data with known bidirectional features."""
    from ..analysis.synthetic import BenchConfig, SyntheticConfig

    for p in (json_out, markdown_out):
        if p is not None and p.exists() and p.is_dir():
            raise UserError(f"{p} is a folder; give a file name")
    try:
        data_cfg = SyntheticConfig(seed=seed, d=d, n_features=n_features,
                                   frac_bidirectional=frac_bidirectional,
                                   mean_active=mean_active, noise=noise)
        bench_cfg = BenchConfig(seed=seed, steps=steps, architectures=architectures, k=k,
                                expansion=expansion, tau=tau)
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
