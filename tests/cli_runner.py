"""Test helper: run the ``abstopk`` CLI in-process."""

from __future__ import annotations

from abstopk import cli


def cli_code(argv) -> int:
    """Run ``abstopk ARGV``; return its exit code (0 when it returns normally)."""
    try:
        cli.main([str(a) for a in argv])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """Run ``abstopk ARGV``; return (exit code, stdout, stderr) captured by ``capsys``."""
    capsys.readouterr()
    code = cli_code(argv)
    out, err = capsys.readouterr()
    return code, out, err
