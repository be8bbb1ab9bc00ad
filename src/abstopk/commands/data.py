"""``abstopk data``: build and inspect the embedded default text corpus."""

from __future__ import annotations

import json
from pathlib import Path

import typer

data_app = typer.Typer(help="The embedded default text corpus (Debian docs + Jane Austen).",
                       no_args_is_help=True)


@data_app.command("fetch")
def fetch_cmd(
    cache: Path | None = typer.Option(
        None, help="Cache folder (default: $ABSTOPK_CACHE or ~/.cache/abstopk)."),
    force: bool = typer.Option(False, help="Rebuild even when the corpus is up to date."),
) -> None:
    """Install the source packages if needed (apt), clean, deduplicate, split, write the corpus.

    Quick (a checksum check) when the corpus is already there.
    """
    from ..data.corpus import fetch

    man = fetch(cache, force=force, log=print)
    for split, info in man["splits"].items():
        print(f"{split}: {info['n_docs']} documents, {info['n_chars']:,} characters "
              f"(~{info['approx_tokens']:,} tokens)")


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
