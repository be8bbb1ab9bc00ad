"""Obtaining the labelled data: pinned PyPI sdists (via pip) and Debian's linux-doc (via apt).

Downloads use ``pip download --no-deps --no-binary :all: PKG==VERSION`` (pip is the
ordinary PyPI client) into a temporary folder of the destination, are checked against a
pinned sha256 and then moved into place, so a file in the cache is always complete.
Everything lands in ``$ABSTOPK_CACHE`` (default ``~/.cache/abstopk``).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ...errors import CorpusUnavailable, DataUnavailable
from ...files import cache_root, sha256_file
from ..corpus.debian import deb_root, install_sources

__all__ = ["BIGBENCH_VERSION", "VADER_VERSION", "fetch_bigbench", "fetch_labelled",
           "fetch_vader", "linux_doc_sources", "pip_download"]

VADER_VERSION = "3.3.2"
VADER_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
BIGBENCH_VERSION = "1.0.0"
BIGBENCH_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"


def pip_download(spec: str, dest: Path, fname: str, sha256: str,
                  log: Callable[[str], None]) -> Path:
    """``pip download --no-deps --no-binary :all: SPEC`` into ``dest/fname`` (atomic, checked)."""
    target = dest / fname
    if target.is_file():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", spec]
    log(f"downloading {spec} (sdist) with pip into {dest}")
    with tempfile.TemporaryDirectory(dir=dest, prefix=".pipdl-") as tmp:
        try:
            r = subprocess.run([*cmd, "-d", tmp], capture_output=True, text=True)
        except OSError as e:  # pragma: no cover - no python executable?
            raise DataUnavailable(f"cannot run pip to fetch {spec}: {e}") from e
        got = Path(tmp) / fname
        if r.returncode != 0 or not got.is_file():
            last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise DataUnavailable(
                f"could not download {spec} from PyPI ({last[0]}); run `pip download --no-deps "
                f"--no-binary :all: {spec} -d {dest}` on a machine with PyPI access and copy "
                f"{fname} there")
        digest = sha256_file(got)
        if digest != sha256:
            raise DataUnavailable(f"{fname}: sha256 {digest} does not match the pinned {sha256}")
        os.replace(got, target)
    return target


def fetch_vader(cache: str | os.PathLike | None = None,
                log: Callable[[str], None] = print) -> Path:
    """Path of the vaderSentiment sdist in ``<cache>/probing/``; downloads it (2.5 MB) once."""
    root = Path(cache) if cache is not None else cache_root()
    return pip_download(f"vadersentiment=={VADER_VERSION}", root / "probing",
                         f"vaderSentiment-{VADER_VERSION}.tar.gz", VADER_SHA256, log)


def fetch_bigbench(cache: str | os.PathLike | None = None,
                   log: Callable[[str], None] = print) -> Path:
    """Path of the bigbench sdist in ``<cache>/bigbench/``; downloads it (358 MB) once."""
    root = Path(cache) if cache is not None else cache_root()
    return pip_download(f"bigbench=={BIGBENCH_VERSION}", root / "bigbench",
                         f"bigbench-{BIGBENCH_VERSION}.tar.gz", BIGBENCH_SHA256, log)


_LD_PATTERN = "usr/share/doc/linux-doc-*/html/_sources"


def linux_doc_sources(cache: str | os.PathLike | None = None, *, install: bool = True,
                      log: Callable[[str], None] = print) -> Path:
    """``…/linux-doc-*/html/_sources`` holding ``translations/``.

    Looks system-wide and in the corpus' extraction folder ``<cache>/debs/root`` (where
    :mod:`abstopk.data.corpus` puts the package when it cannot ``apt-get install``); with
    ``install`` it lets :func:`abstopk.data.corpus.debian.install_sources` obtain it.
    """
    root = Path(cache) if cache is not None else cache_root()

    def find() -> Path | None:
        for base in (Path("/"), deb_root(root)):
            hits = sorted(glob.glob(str(base / _LD_PATTERN)))
            hits = [h for h in hits if os.path.isdir(os.path.join(h, "translations"))]
            if hits:
                return Path(hits[-1])
        return None

    found = find()
    if found is None and install:
        try:
            install_sources(root, log=log)
        except CorpusUnavailable as e:
            raise DataUnavailable(f"linux-doc translations unavailable: {e}") from e
        found = find()
    if found is None:
        raise DataUnavailable(
            "linux-doc is not installed (the language tasks read its translations): install "
            "the Debian package linux-doc (`apt-get install linux-doc`) or unpack it into "
            f"{deb_root(root)}")
    return found



def fetch_labelled(fever: bool = False, cache: str | os.PathLike | None = None,
                   log: Callable[[str], None] = print) -> dict[str, str]:
    """Set-up step: make the probing data present; returns ``{source: path}``. Idempotent.

    VADER and the linux-doc translations always; the 358 MB bigbench sdist with ``fever``.
    """
    out = {"vader": str(fetch_vader(cache, log)),
           "linux-doc": str(linux_doc_sources(cache, log=log))}
    if fever:
        out["bigbench"] = str(fetch_bigbench(cache, log))
    return out
