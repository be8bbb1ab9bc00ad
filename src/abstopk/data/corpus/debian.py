"""The corpus' Debian packages: find their files, or obtain them with apt/dpkg.

``install_sources(cache)`` returns ``{package part: data root}`` for the twelve packages
(:data:`PACKAGES`; for ``perl-doc`` and ``git-doc`` a marker file inside the data folder),
looking system-wide and in ``<cache>/debs/root``. What is missing is installed as root with
``apt-get install -y`` (linux-doc and python3-doc, :data:`SYSTEM_INSTALL`), otherwise fetched
with ``apt-get download`` and unpacked with ``dpkg -x`` into ``<cache>/debs/root``; the other
parts are always downloaded + extracted (``apt-get install`` of r-cran-janeaustenr would pull
in all of R; the documentation packages need no install). Meta packages
(:data:`META_PACKAGES`, e.g. ``postgresql-doc``) are resolved to the versioned package.
``apt-get update`` runs once, only when apt knows no candidate for a package.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from ...errors import CorpusUnavailable

__all__ = ["DEB_PREFIX", "NO_APT_MESSAGE", "PACKAGES", "SOURCES", "SOURCE_OF", "SYSTEM_INSTALL", "deb_root", "install_sources", "package_version"]

NO_APT_MESSAGE = (
    "the embedded corpus is built from Debian packages (linux-doc, python3-doc, "
    "r-cran-janeaustenr, postgresql-doc, python-django-doc, perl-doc, git-doc, python-sqlalchemy-doc, python-flask-doc, python-werkzeug-doc, "
    "python-setuptools-doc, sphinx-doc) and this machine has no apt-get/dpkg; pass a text source instead: "
    "a local .txt, .jsonl or .parquet file (field/column 'text') or a Hugging Face dataset "
    "name such as monology/pile-uncopyrighted"
)

PACKAGES = {
    # part: (apt package to ask for, glob of the data root relative to a filesystem root)
    "linux-doc": ("linux-doc", "usr/share/doc/linux-doc-*/html/_sources"),
    "python-doc": ("python3-doc", "usr/share/doc/python3.*/html/_sources"),
    "austen": ("r-cran-janeaustenr", "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"),
    # added in corpus processing version 2 (always apt-get download + dpkg -x when missing)
    "postgresql-doc": ("postgresql-doc", "usr/share/doc/postgresql-doc-*/html"),
    "django-doc": ("python-django-doc", "usr/share/doc/python-django-doc/html"),
    "perl-doc": ("perl-doc", "usr/share/perl/5.*/pod/perlfunc.pod"),
    "git-doc": ("git-doc", "usr/share/doc/git-doc/git.txt"),
    "sqlalchemy-doc": ("python-sqlalchemy-doc", "usr/share/doc/python-sqlalchemy-doc/html"),
    "flask-doc": ("python-flask-doc", "usr/share/doc/python-flask-doc/html"),
    "werkzeug-doc": ("python-werkzeug-doc", "usr/share/doc/python-werkzeug-doc/html"),
    "setuptools-doc": ("python-setuptools-doc", "usr/share/doc/python-setuptools-doc/html"),
    "sphinx-doc": ("sphinx-doc", "usr/share/doc/sphinx-doc/html"),
}

#: the corpus part (the ``source`` label of a document, counted in ``token_mix``) of each
#: package; the small Python-library manuals share one part so that every part holds a few
#: percent of the text
SOURCE_OF = {p: p for p in PACKAGES} | {
    p: "pylib-doc" for p in ("sqlalchemy-doc", "flask-doc", "werkzeug-doc", "setuptools-doc",
                             "sphinx-doc")}
SOURCES = tuple(dict.fromkeys(SOURCE_OF.values()))

#: apt meta packages that name the current version's package (postgresql-doc -> -15)
META_PACKAGES = ("linux-doc", "python3-doc", "postgresql-doc")

#: the parts that ``apt-get install`` may install system-wide when running as root
SYSTEM_INSTALL = ("linux-doc", "python-doc")

#: file-name prefix of each part's downloaded ``.deb`` (for the version in the manifest)
DEB_PREFIX = {"linux-doc": "linux-doc-", "python-doc": "python3", "austen": "r-cran-janeaustenr_",
              "postgresql-doc": "postgresql-doc-", "django-doc": "python-django-doc_",
              "perl-doc": "perl-doc_", "git-doc": "git-doc_",
              "sqlalchemy-doc": "python-sqlalchemy-doc_", "flask-doc": "python-flask-doc_",
              "werkzeug-doc": "python-werkzeug-doc_",
              "setuptools-doc": "python-setuptools-doc_", "sphinx-doc": "sphinx-doc_"}


def _run(cmd: list[str], cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def _find(pattern: str, roots: list[Path]) -> Path | None:
    for root in roots:
        hits = sorted(glob.glob(str(root / pattern)))
        hits = sorted({os.path.realpath(h) for h in hits if os.path.exists(h)})
        if hits:
            return Path(hits[-1])  # newest version sorts last
    return None


def deb_root(cache: Path) -> Path:
    """Where ``dpkg -x`` unpacks packages: ``<cache>/debs/root`` (a filesystem root)."""
    return cache / "debs" / "root"


def _locate(cache: Path) -> dict[str, Path | None]:
    roots = [deb_root(cache), Path("/")]
    found = {}
    for part, (_pkg, pattern) in PACKAGES.items():
        roots_here = [deb_root(cache)] if part == "austen" else roots
        found[part] = _find(pattern, roots_here)
    return found


def _apt_has_candidate(pkg: str) -> bool:
    r = _run(["apt-cache", "policy", pkg])
    m = re.search(r"Candidate:\s*(\S+)", r.stdout)
    return bool(m) and m.group(1) != "(none)"


def _resolve_meta(pkg: str) -> str:
    """The concrete package behind a meta package (linux-doc -> linux-doc-6.1)."""
    r = _run(["apt-cache", "depends", "--no-recommends", "--no-suggests", pkg])
    for line in r.stdout.splitlines():
        line = line.strip()
        if line.startswith("Depends:"):
            return line.split(":", 1)[1].strip().strip("<>")
    return pkg


def _download_extract(pkg: str, cache: Path, log: Callable[[str], None]) -> None:
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for old in glob.glob(str(debs / f"{pkg}_*.deb")):
        os.unlink(old)
    r = _run(["apt-get", "download", "-o", "APT::Sandbox::User=root", pkg], cwd=debs) \
        if os.geteuid() == 0 else _run(["apt-get", "download", pkg], cwd=debs)
    files = sorted(glob.glob(str(debs / f"{pkg}_*.deb")))
    if r.returncode != 0 or not files:
        raise CorpusUnavailable(f"apt-get download {pkg} failed: "
                                f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    r = _run(["dpkg", "-x", files[-1], str(deb_root(cache))])
    if r.returncode != 0:
        raise CorpusUnavailable(f"dpkg -x {files[-1]} failed: {r.stderr.strip()}")
    log(f"downloaded and extracted {Path(files[-1]).name} into {deb_root(cache)}")


def install_sources(cache: Path, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Make every part's files present; returns ``{part: data root}``.

    Raises :class:`CorpusUnavailable` when something is missing and apt cannot help.
    """
    found = _locate(cache)
    missing = [p for p, v in found.items() if v is None]
    if not missing:
        return found  # type: ignore[return-value]
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise CorpusUnavailable(NO_APT_MESSAGE)
    pkgs = {p: PACKAGES[p][0] for p in missing}
    root = os.geteuid() == 0
    if any(not _apt_has_candidate(pkg) for pkg in pkgs.values()):
        if not root:
            raise CorpusUnavailable(
                "apt knows no candidate for " + ", ".join(pkgs.values()) +
                "; run `sudo apt-get update` once, then retry (or pass a local "
                ".txt/.jsonl/.parquet file or a Hugging Face dataset name instead)")
        log("apt-get update")
        _run(["apt-get", "update"])
    doc_parts = [p for p in SYSTEM_INSTALL if p in pkgs]
    if doc_parts and root:
        names = [pkgs[p] for p in doc_parts]
        log("apt-get install -y " + " ".join(names))
        r = _run(["apt-get", "install", "-y", "--no-install-recommends",
                  "-o", "DPkg::Lock::Timeout=300", *names])
        if r.returncode != 0:
            log(f"apt-get install failed ({r.stderr.strip()[-200:]}); "
                "falling back to apt-get download + dpkg -x")
        now = _locate(cache)
        doc_parts = [p for p in doc_parts if now[p] is None]
    for part in doc_parts:  # not root, or the install failed: extract into the cache
        _download_extract(_resolve_meta(pkgs[part]), cache, log)
    for part in (p for p in pkgs if p not in SYSTEM_INSTALL):
        pkg = pkgs[part]
        _download_extract(_resolve_meta(pkg) if pkg in META_PACKAGES else pkg, cache, log)
    found = _locate(cache)
    still = [p for p, v in found.items() if v is None]
    if still:
        raise CorpusUnavailable("could not obtain corpus part(s) " + ", ".join(still) +
                                " via apt; pass a local .txt/.jsonl/.parquet file or a "
                                "Hugging Face dataset name instead")
    return found  # type: ignore[return-value]


def package_version(part: str, data_root: Path, cache: Path) -> dict:
    """``{"package": name, "version": v}`` of the package that provided ``data_root``."""
    if str(data_root).startswith(str(deb_root(cache))):
        rel = data_root.relative_to(deb_root(cache))
        pkg_hint = DEB_PREFIX[part]
        debs = sorted(glob.glob(str(cache / "debs" / f"{pkg_hint}*.deb")))
        if debs:
            name, version = Path(debs[-1]).name.split("_")[:2]
            return {"package": name, "version": version.replace("%3a", ":"),
                    "installed": "extracted", "path": "/" + str(rel)}
    r = _run(["dpkg", "-S", str(data_root)])
    pkg = r.stdout.split(":")[0].strip() if r.returncode == 0 else ""
    if pkg:
        v = _run(["dpkg-query", "-W", "-f=${Version}", pkg]).stdout.strip()
        return {"package": pkg, "version": v, "installed": "system", "path": str(data_root)}
    return {"package": PACKAGES[part][0], "version": "unknown", "installed": "system",
            "path": str(data_root)}

