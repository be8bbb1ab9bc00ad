"""``abstopk dashboard`` (build the signed feature dashboard) and ``abstopk serve`` (serve a
built one on 127.0.0.1). See docs/dashboard.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ..report.dashboard.config import DashboardConfig
from . import UserError
from .options import config_kwargs, config_options
from .outputs import check_output

__all__ = ["compute_stats", "dashboard_command", "register", "serve_command"]

#: a site whose index.html exists is finished
SITE_FINISHED = ("index.html",)


def compute_stats(cfg: DashboardConfig, out: Path, *, force: bool) -> Path:
    """Compute the statistics of ``cfg.sae`` over ``cfg.cache`` into ``out/stats`` with
    :func:`abstopk.analysis.latent_stats.compute_and_write`."""
    from ..analysis.latent_stats import compute_and_write

    return Path(compute_and_write(cfg.sae, cfg.cache, out / "stats", model=cfg.model,
                                  top_n=cfg.top_n, max_rows=cfg.max_rows, force=force))


def _stats_cache(stats: str | None) -> str | None:
    if not stats:
        return None
    try:
        ix = json.loads((Path(stats) / "index.json").read_text(encoding="utf-8"))
        return (ix.get("cache") or {}).get("path")
    except (OSError, ValueError, AttributeError):
        return None


def _read_directions(path: str | None, cfg: DashboardConfig | None = None
                     ) -> list[dict[str, Any]] | None:
    if not path:
        return None
    p = Path(path)
    if p.suffix == ".safetensors":
        from ..analysis.latent_stats.directions import direction_records, load_directions

        cache = (cfg.cache if cfg else None) or _stats_cache(cfg.stats if cfg else None)
        if not cache:
            raise UserError("vectors need an activation cache to project onto; the statistics "
                            "folder records none")
        vecs, meta = load_directions(p)
        layer = int(meta["layer"]) if str(meta.get("layer", "")).isdigit() else None
        return direction_records(vecs, cache, model=cfg.model if cfg else None, layer=layer,
                                 top_n=cfg.top_n if cfg else 20,
                                 max_rows=cfg.max_rows if cfg else None)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"directions file {p} does not exist") from None
    except (OSError, ValueError) as e:
        raise UserError(f"directions file {p} is not readable JSON ({e})") from None
    if isinstance(data, dict) and "directions" in data:
        data = data["directions"]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise UserError(f"directions file {p} must hold a list of direction objects")
    return data


@config_options(DashboardConfig)
def dashboard_command(
    out: Path = typer.Option(..., "--out", help="Folder for the site (index.html, latents/)."),
    force: bool = typer.Option(False, "--force", help="Replace a site already built in --out."),
    **fields: Any,
) -> None:
    """Build the signed feature dashboard: a static site that opens from disk."""
    from ..report.dashboard import build_site

    try:
        cfg = DashboardConfig(**config_kwargs(DashboardConfig, fields))
    except ValueError as e:
        raise UserError(str(e)) from None
    check_output(out, what="a dashboard", finished=SITE_FINISHED,
                 inputs=[cfg.stats, cfg.sae, cfg.cache, cfg.directions, cfg.pairs, cfg.judge],
                 force=force)
    directions = _read_directions(cfg.directions, cfg)
    stats = Path(cfg.stats) if cfg.stats else compute_stats(cfg, out, force=force)
    res = build_site(stats, out, directions=directions, pairs_file=cfg.pairs,
                     judge_file=cfg.judge)
    typer.echo(f"wrote {res['pages']} latent pages ({res['latents']} latents in the index) "
               f"and {len(res['directions'])} direction pages; open {res['index']} "
               f"or run: abstopk serve {out}")


def serve_command(
    site: Path = typer.Argument(..., help="A built dashboard folder (with index.html)."),
    port: int = typer.Option(8000, "--port", help="Port on 127.0.0.1 (0: any free port)."),
    quiet: bool = typer.Option(False, "--quiet", help="Do not log requests."),
) -> None:
    """Serve a built dashboard on http://127.0.0.1:PORT/ only (Ctrl-C stops it)."""
    from ..report.dashboard.server import serve_site

    serve_site(site, port,
               on_ready=lambda url: typer.echo(f"serving {site} on {url} (Ctrl-C stops)"),
               log=None if quiet else (lambda m: typer.echo(m, err=True)))
    typer.echo("stopped")


def register(app: typer.Typer) -> None:
    """Add ``abstopk dashboard`` and ``abstopk serve`` to the app."""
    app.command("dashboard")(dashboard_command)
    app.command("serve")(serve_command)
