"""``abstopk analyze``: per-latent statistics (the dashboard's data) and minimal pairs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from . import UserError
from .options import config_kwargs, config_options
from .outputs import check_output, check_output_file

analyze_app = typer.Typer(help="Analyses of saved SAEs: per-latent statistics with "
                          "bidirectionality labels, minimal pairs.", no_args_is_help=True)


def _configs(fields: dict[str, Any]):
    from ..analysis.bidirectionality import BidirConfig
    from ..analysis.latent_stats import StatsConfig

    try:
        return (StatsConfig(**config_kwargs(StatsConfig, fields)),
                BidirConfig(**config_kwargs(BidirConfig, fields)))
    except ValueError as e:
        raise UserError(str(e)) from None


def _stats_options():
    from ..analysis.bidirectionality import BidirConfig
    from ..analysis.latent_stats.config import StatsConfig

    return config_options(StatsConfig, BidirConfig)


@analyze_app.command("latents")
@_stats_options()
def latents_cmd(
    sae: Path = typer.Option(..., "--sae", help="Saved SAE folder."),
    cache: Path = typer.Option(..., "--cache", help="Activation cache folder (with per-row "
                               "positions, cache format 2)."),
    out: Path = typer.Option(..., "--out", help="Stats folder to write (index.json + latents/)."),
    model: str | None = typer.Option(None, "--model", help="Model for the tokenizer and "
                                     "unembedding (default: the SAE's model_name)."),
    force: bool = typer.Option(False, "--force", help="Replace a stats folder already in --out."),
    **fields: Any,
) -> None:
    """Per-latent statistics in one pass: top ± contexts, quantile samples, signed histogram,
    frequencies per sign, ± logits, bidirectionality score and label."""
    from ..analysis.latent_stats import compute_and_write
    from ..report.latent_tables import render_bidir
    from ..report.tables import table_console

    check_output(out, what="latent statistics", finished=("index.json",), inputs=[sae, cache],
                 force=force)
    stats, bidir = _configs(fields)
    path = compute_and_write(sae, cache, out, model=model, force=force, bidir=bidir,
                             progress=True, **dataclasses.asdict(stats))
    import json

    ix = json.loads((path / "index.json").read_text())
    console = table_console()
    console.print(render_bidir([(str(sae), ix)]))
    console.print(f"wrote {path} ({ix['cache']['rows_read']:,} rows, "
                    f"{ix['seconds']['pass']:.0f} s pass)")


@analyze_app.command("pairs")
def pairs_cmd(
    sae: list[Path] = typer.Option(..., "--sae", help="Saved SAE folder (repeat to compare)."),
    model: str | None = typer.Option(None, "--model", help="Model to run the templates through "
                                     "(default: the SAE's model_name)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the results (with the "
                                         "latents per pair) to this JSON file."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --json file "
                               "(and STATS/pairs.json)."),
    stats: list[Path] = typer.Option([], "--stats", help="Statistics folder of each --sae, in "
                                     "the same order: its pairs.json gets each latent's pairs "
                                     "(the dashboard shows them)."),
) -> None:
    """Minimal pairs: latents that flip sign (signed SAEs) or switch on/off (non-negative
    ones) between man/woman, good/bad, ...; coverage per SAE."""
    from ..analysis.minimal_pairs import analyze_sae
    from ..files import atomic_write_json
    from ..lm import load_model
    from ..report.latent_tables import render_pairs
    from ..report.tables import table_console
    from ..sae import load_sae

    check_output_file(json_out, what="a results file", inputs=sae, force=force)
    if stats and len(stats) != len(sae):
        raise UserError(f"{len(stats)} statistics folders for {len(sae)} SAEs: give one per SAE")
    for s_dir, sae_dir in zip(stats, sae, strict=False):
        _check_stats_of(s_dir, sae_dir)
        check_output_file(s_dir / "pairs.json", what="minimal pairs", force=force)
    saes = []
    for s in sae:
        try:
            saes.append(load_sae(s))
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from None
    refs = {model or x.cfg.model_name for x in saes}
    if None in refs:
        raise UserError("an SAE records no model_name; name the model to run")
    loaded = {r: load_model(r)[:2] for r in refs}
    results = []
    for path, x in zip(sae, saes, strict=True):
        m, tok = loaded[model or x.cfg.model_name]
        results.append((str(path), analyze_sae(x, m, tok)))
    console = table_console()
    console.print(render_pairs(results))
    for name, r in results:
        if r["max_pairs_one_latent"] == 0:
            continue
        console.print(f"{name}: latent {r['best_latent']} covers "
                        f"{', '.join(r['best_latent_pairs'][:12])}")
    if json_out is not None:
        atomic_write_json(json_out, {name: r for name, r in results})
    from ..analysis.minimal_pairs import per_latent

    for s_dir, (name, r) in zip(stats, results, strict=False):
        summary = {k: v for k, v in r.items() if k != "per_pair"}
        atomic_write_json(s_dir / "pairs.json", {
            "format": "abstopk-minimal-pairs", "version": 1, "sae": name, "summary": summary,
            "per_latent": {str(i): v for i, v in sorted(per_latent(r).items())}})
        console.print(f"wrote {s_dir / 'pairs.json'}")


def _check_stats_of(stats: Path, sae: Path) -> None:
    """``stats`` must be a statistics folder computed from ``sae``."""
    import json

    try:
        ix = json.loads((stats / "index.json").read_text(encoding="utf-8"))
        recorded = Path((ix.get("sae") or {}).get("path") or "")
    except (OSError, ValueError, AttributeError):
        raise UserError(f"{stats} is not a latent-statistics folder (no readable index.json)") \
            from None
    if recorded.resolve() != sae.resolve():
        raise UserError(f"{stats} holds the statistics of {recorded}, not of {sae}")


def _judge_config(fields: dict[str, Any]):
    from ..analysis.judge import JudgeConfig

    try:
        return JudgeConfig(**config_kwargs(JudgeConfig, fields))
    except ValueError as e:
        raise UserError(str(e)) from None


def _judge_options():
    from ..analysis.judge.config import JudgeConfig

    return config_options(JudgeConfig)


def _ci(frac: float, ci: list[float]) -> str:
    return f"{100 * frac:.1f} % (95 % CI {100 * ci[0]:.1f}–{100 * ci[1]:.1f})"


@analyze_app.command("judge")
@_judge_options()
def judge_cmd(
    stats: Path = typer.Option(..., "--stats", help="Latent-statistics folder (from "
                               "`abstopk analyze latents`)."),
    out: Path | None = typer.Option(None, "--out", help="Judge results file (default: "
                                    "STATS/judge.json, where the dashboard finds it)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing results file."),
    **fields: Any,
) -> None:
    """Judge a seeded sample of the latents with a local chat model (or a configured
    endpoint): bidirectional fraction with a 95 % CI beside the proxy's on the same latents."""
    from ..analysis.judge import judge_stats

    cfg = _judge_config(fields)
    target = out or stats / "judge.json"
    check_output_file(target, what="judge results", inputs=[stats / "index.json"], force=force)
    r = judge_stats(stats, cfg, out=target)
    p = r["proxy_on_sample"]
    typer.echo(f"judged {r['sample']['n']} of {r['sample']['of_live']} live latents "
               f"({r['judge'].get('model') or r['judge'].get('url')}, prompts v"
               f"{r['prompts']['version']}, opposite test {r['opposite_test']} > "
               f"{r['opposite_threshold']:+.3f}, {r['seconds']:.0f} s)")
    typer.echo(f"bidirectional (judge): {_ci(r['bidirectional_fraction'], r['ci95'])}; "
               f"counts {r['counts']}")
    typer.echo(f"bidirectional (proxy, same latents): "
               f"{_ci(p['bidirectional_fraction'], p['ci95'])}")
    if not r["signed"]:
        typer.echo("non-negative SAE: its − pole is negative pre-activations; opposite axis "
                   f"(pre-activation pole opposite of the fired one): "
                   f"{_ci(r['opposite_axis_fraction'], r['opposite_axis_ci95'])}")
    typer.echo(f"wrote {target}")


@analyze_app.command("judge-check")
@_judge_options()
def judge_check_cmd(
    n_per_type: int = typer.Option(20, "--n-per-type", help="Planted latents of each type."),
    planted_seed: int = typer.Option(0, "--planted-seed", help="Seed of the planted latents."),
    pairs: str = typer.Option("all", "--pairs", help="Minimal pairs the planted latents are "
                              "drawn from: all, even or odd (positions in the pairs file; "
                              "calibrate on one half, test on the other)."),
    related: int = typer.Option(0, "--related", help="Planted 'related' latents added (the "
                                "same side of two gendered groups: king, he vs prince, boy)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the full result here."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --json file."),
    **fields: Any,
) -> None:
    """Validate the judge (and the proxy) on planted latents of known type in real words:
    accuracy with 95 % CIs, detection and opposite AUCs."""
    from ..analysis.judge import load_prompts, make_scorers, validate
    from ..analysis.judge.planted import HALVES, choose_threshold
    from ..files import atomic_write_json

    cfg = _judge_config(fields)
    if pairs not in HALVES:
        raise UserError(f"the planted pairs must be one of {', '.join(HALVES)}, got {pairs!r}")
    if related < 0:
        raise UserError(f"the number of related latents must be ≥ 0, got {related}")
    check_output_file(json_out, what="a results file", force=force)
    prompts = load_prompts(cfg.prompts)
    scorer, completer = make_scorers(cfg, prompts)
    r = validate(scorer, cfg, prompts=prompts, n_per_type=n_per_type, seed=planted_seed,
                 pairs=pairs, related=related, completer=completer)
    for who in ("judge_coherence_poles", "judge_detection_poles", "proxy"):
        a, b = r[who]["accuracy"], r[who]["bidirectional_accuracy"]
        typer.echo(f"{who}: accuracy {_ci(a['accuracy'], a['ci95'])}, bidirectional-vs-not "
                   f"{_ci(b['accuracy'], b['ci95'])}")
    auc_rel = r["opposite_auc_related"]
    typer.echo(f"detection AUC {r['detection_auc']:.3f}, opposite AUC "
               f"({r['opposite_test']} test) vs unrelated {r['opposite_auc']:.3f}"
               + (f", vs related {auc_rel:.3f}" if auc_rel is not None else "")
               + f"; threshold in force {r['opposite_threshold']:+.3f}, best here "
               f"{choose_threshold(r):+.3f}")
    if json_out is not None:
        atomic_write_json(json_out, r)


def register(app: typer.Typer) -> None:
    app.add_typer(analyze_app, name="analyze")
