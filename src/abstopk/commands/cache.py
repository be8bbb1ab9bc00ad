"""``abstopk cache verify|info``: check and describe activation caches."""

from __future__ import annotations

import json
from pathlib import Path

import typer

__all__ = ["register"]

cache_app = typer.Typer(help="Inspect activation caches written by `abstopk harvest`.",
                        no_args_is_help=True)


def _open_all(path: Path):
    from ..data.cache import ActivationCache, find_caches

    dirs = find_caches(path)
    if not dirs:
        ActivationCache(path)  # raises the precise error (missing folder / manifest)
    return [ActivationCache(d) for d in dirs]


@cache_app.command("verify")
def verify_command(
    path: Path = typer.Argument(..., help="Cache folder (or a folder of layer_L caches)."),
    checksums: bool = typer.Option(True, "--checksums/--no-checksums",
                                   help="Hash every shard (--no-checksums: sizes/shapes only)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """Check every shard's existence, shape, size and sha256; exit 1 naming bad shards."""
    caches = _open_all(path)
    n_bad = 0
    for c in caches:
        bar = None
        if progress and len(c.shards) > 1:
            from tqdm import tqdm

            bar = tqdm(total=len(c.shards), desc=f"verify {c.path.name}", unit="shard",
                       leave=False)
        try:
            problems = c.verify(checksums=checksums,
                                progress=(lambda _i, b=bar: b.update(1)) if bar else None)
        finally:
            if bar is not None:
                bar.close()
        state = "complete" if c.complete else \
            f"INCOMPLETE ({c.total_rows} of {c.manifest.get('requested_tokens')} rows)"
        if problems:
            n_bad += len(problems)
            for p in problems:
                typer.echo(f"error: {c.path}/{p}", err=True)
            typer.echo(f"{c.path}: FAILED, {len(problems)} problem(s)", err=True)
        else:
            typer.echo(f"{c.path}: OK, {len(c.shards)} shards, {c.total_rows} rows x {c.d_in} "
                       f"{c.dtype}, {state}, identity {c.identity()}")
    if n_bad:
        raise typer.Exit(1)


@cache_app.command("info")
def info_command(
    path: Path = typer.Argument(..., help="Cache folder (or a folder of layer_L caches)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Describe a cache: model, layer, site, rows, dtype, corpus, identity."""
    caches = _open_all(path)
    rows = [c.summary() for c in caches]
    if as_json:
        typer.echo(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))
        return
    for r in rows:
        typer.echo(f"{r['path']}")
        for k in ("identity", "model", "model_revision", "layer", "site", "hook_name", "d_in",
                  "dtype", "context_size", "keep_bos", "total_rows", "requested_tokens",
                  "complete", "shards", "bytes", "corpus", "corpus_split"):
            v = r[k]
            if k == "model_revision" and isinstance(v, str):
                v = v[:16]
            typer.echo(f"  {k:<18} {v}")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")

