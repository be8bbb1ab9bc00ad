"""`abstopk data fetch corpus|probing`: help texts, and user errors as one line with exit 2."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from abstopk import cli
from abstopk.data.labelled import fetch as labelled_fetch


def run_cli(argv, capsys):
    """Run ``abstopk`` in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.mark.parametrize("argv, words", [
    (["data", "fetch", "--help"], ["corpus", "probing"]),
    (["data", "fetch", "corpus", "--help"], ["--cache", "--force"]),
    (["data", "fetch", "probing", "--help"], ["--cache", "--fever"]),
    (["data", "stats", "--help"], ["--fever"]),
])
def test_fetch_help(argv, words, capsys):
    code, out, _ = run_cli(argv, capsys)
    assert code == 0
    for w in words:
        assert w in out


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_fetch_corpus_without_apt_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    # an empty cache and no apt-get/dpkg: the corpus cannot be built here
    monkeypatch.setattr(shutil, "which", lambda name: None)
    code, _, err = run_cli(["data", "fetch", "corpus", "--cache", str(tmp_path)], capsys)
    assert code == 2
    line = _one_error_line(err)
    assert "apt" in line and "monology/pile-uncopyrighted" in line
    assert "--" not in line  # the library's message names the problem, not a flag
    assert not (tmp_path / "corpus").exists()


def test_fetch_probing_download_failure_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    def fail(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(labelled_fetch.subprocess, "run", fail)
    code, _, err = run_cli(["data", "fetch", "probing", "--cache", str(tmp_path)], capsys)
    assert code == 2
    line = _one_error_line(err)
    assert f"could not download vadersentiment=={labelled_fetch.VADER_VERSION}" in line
    assert "No matching distribution" in line


def test_linux_doc_missing_message_names_no_command(tmp_path, monkeypatch):
    monkeypatch.setattr(labelled_fetch.glob, "glob", lambda pattern: [])
    with pytest.raises(labelled_fetch.DataUnavailable) as e:
        labelled_fetch.linux_doc_sources(tmp_path, install=False, log=lambda s: None)
    msg = str(e.value)
    assert "linux-doc" in msg and "\n" not in msg
    assert "abstopk" not in msg and "--" not in msg
