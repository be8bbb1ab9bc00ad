"""``abstopk data``: fetch the embedded corpus and the probing data; describe text sources.

- ``abstopk data fetch corpus [--force]`` — build the embedded default text corpus;
- ``abstopk data fetch probing [--fever]`` — the labelled data of the probing tasks;
- ``abstopk data fetch bigbench [--keep-sdist]`` — BIG-bench multiple-choice tasks as small
  JSON files (the capability cost of ``abstopk steer``);
- ``abstopk data stats [--fever]`` — class counts of the probing tasks' labelled data;
- ``abstopk data info SOURCE`` — the JSON description of a text source.

Errors a user can fix (no apt, no PyPI access, a bad checksum) are one line, exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

__all__ = ["register"]

data_app = typer.Typer(help="Text and labelled data: fetch the corpus and the probing data, "
                       "describe text sources.", no_args_is_help=True)
fetch_app = typer.Typer(help="Fetch data into the cache ($ABSTOPK_CACHE, default "
                        "~/.cache/abstopk); quick when already there.", no_args_is_help=True)
data_app.add_typer(fetch_app, name="fetch")

CACHE_HELP = "Cache folder (default: $ABSTOPK_CACHE or ~/.cache/abstopk)."


@fetch_app.command("corpus")
def fetch_corpus_cmd(
    cache: Path | None = typer.Option(None, help=CACHE_HELP),
    force: bool = typer.Option(False, help="Rebuild even when the corpus is up to date."),
) -> None:
    """The embedded default text corpus (Debian docs + Jane Austen).

    Installs the source packages if needed (apt), cleans, deduplicates, splits and writes
    the corpus. Quick (a checksum check) when the corpus is already there.
    """
    from ..data.corpus import fetch

    man = fetch(cache, force=force, log=print)
    for split, info in man["splits"].items():
        print(f"{split}: {info['n_docs']} documents, {info['n_chars']:,} characters "
              f"(~{info['approx_tokens']:,} tokens)")


@fetch_app.command("probing")
def fetch_probing_cmd(
    cache: Path | None = typer.Option(None, help=CACHE_HELP),
    fever: bool = typer.Option(False, "--fever",
                               help="Also fetch the 358 MB bigbench sdist (FEVER task)."),
) -> None:
    """The labelled data of the probing tasks (VADER, linux-doc translations, BIG-bench).

    The VADER sdist (2.5 MB, pip) and the linux-doc translations (apt); with --fever also
    the bigbench sdist. Prints one "source: path" line per source.
    """
    from ..data.labelled import fetch_labelled

    for source, path in fetch_labelled(fever, cache).items():
        print(f"{source}: {path}")


@fetch_app.command("bigbench")
def fetch_bigbench_cmd(
    cache: Path | None = typer.Option(None, help=CACHE_HELP),
    tasks: str = typer.Option("", help="Comma-separated BIG-bench tasks (default: the "
                              "built-in list of English multiple-choice tasks)."),
    keep_sdist: bool = typer.Option(False, "--keep-sdist",
                                    help="Keep the 358 MB sdist after extraction."),
) -> None:
    """BIG-bench 1.0.0 multiple-choice tasks, extracted into <cache>/mc/ as small JSON.

    Downloads the bigbench sdist (358 MB, pip, sha256-pinned; about a minute), extracts only
    the tasks needed and deletes the sdist (unless it was already in the cache or
    --keep-sdist). Quick when the task files are there. Prints one "task: path (n
    questions)" line per task.
    """
    from ..data.bigbench import MC_TASKS, fetch_mc, load_mc

    names = tuple(t.strip() for t in tasks.split(",") if t.strip()) or MC_TASKS
    for task, path in fetch_mc(cache, names, keep_sdist=keep_sdist).items():
        print(f"{task}: {path} ({len(load_mc(task, cache))} questions)")


@data_app.command("stats")
def stats_cmd(
    cache: Path | None = typer.Option(None, help=CACHE_HELP),
    fever: bool = typer.Option(False, "--fever", help="Include the fever task (358 MB sdist)."),
) -> None:
    """Class counts of the probing tasks' labelled data (fetching it on first use)."""
    from ..data.labelled import load_examples

    names = ["sentiment", "source", "language"] + (["fever"] if fever else [])
    for name in names:
        examples = load_examples(name, cache=cache)
        counts: dict[str, int] = {}
        for e in examples:
            counts[e.label] = counts.get(e.label, 0) + 1
        print(f"{name}: {len(examples)} {dict(sorted(counts.items()))}")


@data_app.command("info")
def info_cmd(
    source: str = typer.Argument("embedded", help="Text source: embedded, a .txt/.jsonl/"
                                 ".parquet file or folder, or a Hugging Face dataset name."),
    split: str = typer.Option("train", help="train, heldout or all."),
) -> None:
    """Print the JSON description of a text source (what a cache manifest records)."""
    from ..data.text import describe_source
    from . import UserError

    if split not in ("train", "heldout", "all"):
        raise UserError(f"--split must be train, heldout or all, got {split!r}")
    print(json.dumps(describe_source(source, split), indent=2))


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
