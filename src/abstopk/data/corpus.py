"""The embedded default corpus: real English text from three Debian packages.

=================  ==========================  ==========================================
part               Debian package              files read
=================  ==========================  ==========================================
``linux-doc``      ``linux-doc`` (meta)        ``linux-doc-*/html/_sources/**/*.rst.txt``
                                               (``translations/`` skipped)
``python-doc``     ``python3-doc`` (meta)      ``python3*/html/_sources/**/*.rst.txt``
``austen``         ``r-cran-janeaustenr``      ``janeaustenr/data/Rdata.rdb`` (6 novels)
=================  ==========================  ==========================================

``fetch()`` (command line: ``python -m abstopk.data.corpus fetch``) does everything:

1. finds the packages' files (system-wide ``/usr/share/doc`` or already extracted into the
   cache); installs what is missing — as root ``apt-get install -y linux-doc python3-doc``,
   otherwise ``apt-get download`` + ``dpkg -x`` into ``$ABSTOPK_CACHE/debs``. Austen is
   always downloaded + extracted (``apt-get install`` would pull in all of R). ``apt-get
   update`` runs once, only when apt knows no candidate for a package;
2. cleans the reST markup (:func:`clean_rst`), splits the novels into chapters;
3. splits BY DOCUMENT into ``train`` and ``heldout``: a document is held out when the first
   8 bytes of ``sha256("abstopk-split:" + doc_id)`` read as an integer ``h`` satisfy
   ``h / 2**64 < heldout_fraction`` (default 5 %). The rule depends on the id only, so the
   split is stable across machines and runs and the two parts never share a document;
4. deduplicates: exact duplicate documents and exact duplicate paragraphs (sha1 of the
   whitespace-normalised paragraph) are dropped, first occurrence kept, all train documents
   processed before held-out ones — so held-out text never repeats a train paragraph;
5. writes ``$ABSTOPK_CACHE/corpus/{train,heldout}.jsonl`` (one ``{"id", "source", "text"}``
   per line, atomically) and ``manifest.json`` (sources with package versions, per-split
   ``n_docs``/``n_chars``/``sha256``, the cleaning and split rules).

A second call with a valid manifest (same processing version, files present with the recorded
sizes and checksums) does nothing. A machine without apt gets one :class:`CorpusUnavailable`
error naming what to pass instead.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import CorpusUnavailable
from ..files import atomic_write, atomic_write_json, cache_root, sha256_file

__all__ = [
    "CORPUS_FORMAT",
    "PROCESSING_VERSION",
    "CorpusUnavailable",
    "austen_novels",
    "cache_root",
    "clean_rst",
    "corpus_dir",
    "ensure_corpus",
    "fetch",
    "is_heldout",
    "load_manifest",
    "main",
    "split_path",
]

CORPUS_FORMAT = "abstopk-corpus"
PROCESSING_VERSION = 1
DEFAULT_HELDOUT_FRACTION = 0.05
SPLITS = ("train", "heldout")

AUSTEN_TITLES = ("Emma", "Mansfield Park", "Northanger Abbey", "Persuasion",
                 "Pride and Prejudice", "Sense and Sensibility")

NO_APT_MESSAGE = (
    "the embedded corpus is built from Debian packages (linux-doc, python3-doc, "
    "r-cran-janeaustenr) and this machine has no apt-get/dpkg; pass a text source instead: "
    "a local .txt, .jsonl or .parquet file (field/column 'text') or a Hugging Face dataset "
    "name such as monology/pile-uncopyrighted"
)



# ------------------------------------------------------------------------------ locations
def corpus_dir(cache: str | os.PathLike | None = None) -> Path:
    """Folder of the processed corpus: ``<cache>/corpus``."""
    return (Path(cache) if cache is not None else cache_root()) / "corpus"


def split_path(split: str, cache: str | os.PathLike | None = None) -> Path:
    """Path of a processed split file (``train.jsonl`` / ``heldout.jsonl``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return corpus_dir(cache) / f"{split}.jsonl"


# ----------------------------------------------------------------------- split rule
def is_heldout(doc_id: str, fraction: float = DEFAULT_HELDOUT_FRACTION) -> bool:
    """Deterministic document-level split: ``sha256("abstopk-split:"+id)[:8] / 2**64 < f``."""
    h = hashlib.sha256(("abstopk-split:" + doc_id).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64 < fraction


SPLIT_RULE = ("document d is held out iff int(sha256('abstopk-split:' + d.id)[:8 bytes], "
              "big-endian) / 2**64 < heldout_fraction; the rest is train")


# ------------------------------------------------------------------------- reST cleaning
CLEANING_RULES = [
    "section adornment lines (a punctuation character repeated >= 3 times) dropped, "
    "titles kept",
    "directive/comment/target lines starting with '..' dropped with their indented bodies, "
    "except prose directives (note, warning, function, class, versionadded, ...) whose "
    "bodies are kept and cleaned recursively (their option lines ':opt:' dropped)",
    "tables dropped: grid tables ('+--', '+==', rows starting with '|') and simple tables "
    "(from a '=== ===' border to the border followed by a blank line)",
    "literal blocks dropped: the indented block after a paragraph ending in '::' "
    "('text::' -> 'text:'); doctest blocks (from a '>>>' line to the next blank line)",
    "inline markup: :role:`text <target>` -> text (leading ~ or ! removed), ``code`` -> "
    "code, `text <url>`_ -> text, `ref`_ -> ref, **x**/*x* -> x, |subst| -> subst, "
    "footnote references [#x]_ / [1]_ removed",
    "paragraph lines joined with one space (list items kept on their own line); runs of "
    "spaces/tabs collapsed; paragraphs separated by one blank line",
    "paragraphs with fewer than 2 letters or less than 40 % letters dropped",
]

PROSE_DIRECTIVES = frozenset("""
note warning tip important attention caution danger error hint admonition seealso
versionadded versionchanged deprecated deprecated-removed impl-detail topic sidebar
rubric function class method attribute data exception describe decorator classmethod
staticmethod coroutinefunction coroutinemethod abstractmethod opcode cmdoption option
envvar module-contents glossary c:function c:macro c:type c:member c:var c:struct c:union
c:enum c:enumerator c:data cpp:function cpp:class c:namespace kernel-feat
""".split())

_ADORN = re.compile(r"^\s*([=\-~^\"'`#*+<>_:.])\1{2,}\s*$")
_SIMPLE_BORDER = re.compile(r"^\s*=+(\s+=+)+\s*$")
_DIRECTIVE = re.compile(r"^\.\.\s+([\w:.-]+)::\s*(.*)$")
_OPTION_LINE = re.compile(r"^:[\w -]+:( |$)")
_BULLET = re.compile(r"^([-*+•]\s|#\.\s|\(?\d+[.)]\s|\(?[a-zA-Z][.)]\s)")
_ROLE = re.compile(r":[\w:.+-]+:`([^`]*)`")
_LITERAL = re.compile(r"``(.+?)``")
_LINK = re.compile(r"`([^`<]*?)\s*<[^`>]*>`__?")
_REF = re.compile(r"`([^`]+)`__?")
_INTERP = re.compile(r"`([^`]+)`")
_STRONG = re.compile(r"\*\*(\S(?:.*?\S)?)\*\*")
_EMPH = re.compile(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])")
_SUBST = re.compile(r"\|([\w -]+)\|")
_FOOTREF = re.compile(r"\s?\[(#[\w-]*|\d+|\*)\]_")
_SPACES = re.compile(r"[ \t\u00a0]+")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _role_text(m: re.Match) -> str:
    t = m.group(1)
    t = re.sub(r"\s*<[^>]*>\s*$", "", t) if "<" in t else t
    return t.lstrip("~!")


def clean_inline(text: str) -> str:
    """Remove reST inline markup from one line of text (see ``CLEANING_RULES``)."""
    if "`" in text:
        text = _ROLE.sub(_role_text, text)
        text = _LITERAL.sub(r"\1", text)
        text = _LINK.sub(r"\1", text)
        text = _REF.sub(r"\1", text)
        text = _INTERP.sub(r"\1", text)
    if "*" in text:
        text = _STRONG.sub(r"\1", text)
        text = _EMPH.sub(r"\1", text)
    if "|" in text:
        text = _SUBST.sub(r"\1", text)
    if "]_" in text:
        text = _FOOTREF.sub("", text)
    return text


def _skip_block(lines: list[str], i: int, base: int) -> int:
    """Index of the first line at or after ``i`` that is non-blank with indent <= base."""
    n = len(lines)
    while i < n and (not lines[i].strip() or _indent(lines[i]) > base):
        i += 1
    return i


def _clean_lines(lines: list[str], out: list[str]) -> None:
    """Append cleaned lines (blank lines separate paragraphs) for the reST ``lines``."""
    i, n = 0, len(lines)
    while i < n:
        raw = lines[i].rstrip()
        s = raw.strip()
        if not s:
            out.append("")
            i += 1
            continue
        ind = _indent(raw)
        if s.startswith(".."):
            m = _DIRECTIVE.match(s)
            i0 = i
            while i0 + 1 < n and lines[i0].rstrip().endswith("\\"):
                i0 += 1  # signature continued on the next line
            j = _skip_block(lines, i0 + 1, ind)
            if m and m.group(1).lower() in PROSE_DIRECTIVES:
                body = lines[i0 + 1:j]
                k = 0
                while k < len(body) and _OPTION_LINE.match(body[k].strip()):
                    k += 1
                body = body[k:]
                nonblank = [_indent(b) for b in body if b.strip()]
                cut = min(nonblank) if nonblank else 0
                out.append("")
                _clean_lines([b[cut:] for b in body], out)
                out.append("")
            else:
                out.append("")
            i = j
            continue
        if _SIMPLE_BORDER.match(raw):
            # simple table: skip to the border that is followed by a blank line / EOF
            j = i + 1
            while j < n:
                if _SIMPLE_BORDER.match(lines[j]) and (j + 1 >= n or not lines[j + 1].strip()):
                    break
                j += 1
            out.append("")
            i = j + 1
            continue
        if _ADORN.match(raw):
            out.append("")  # adornment: the title above stays a paragraph of its own
            i += 1
            continue
        if s.startswith(("+-", "+=", "|")):
            out.append("")
            i += 1
            continue
        if s.startswith(">>>"):  # a doctest block ends at the next blank line
            while i < n and lines[i].strip():
                i += 1
            out.append("")
            continue
        if s.endswith("::"):
            text = s[:-2].rstrip()
            if text and not s.endswith(" ::"):
                text += ":"
            if text:
                out.append(text)
            # skip the literal block: blank lines then lines indented deeper than this one
            j = i + 1
            while j < n and not lines[j].strip():
                j += 1
            if j < n and _indent(lines[j]) > ind:
                j = _skip_block(lines, j, ind)
            out.append("")
            i = j
            continue
        out.append(s)
        i += 1


def _paragraphs(lines: list[str]) -> Iterator[str]:
    para: list[str] = []
    for line in lines + [""]:
        if line:
            line = _SPACES.sub(" ", line).strip()
            if not line:
                continue
            if para and _BULLET.match(line):
                para.append("\n" + line)
            else:
                para.append((" " if para else "") + line)
        elif para:
            text = _SPACES.sub(" ", clean_inline("".join(para))).strip()
            if text:
                yield text
            para = []


_NON_LETTERS = re.compile(r"[\W\d_]+")


def _is_prose(p: str) -> bool:
    letters = len(_NON_LETTERS.sub("", p))
    return letters >= 2 and letters >= 0.4 * len(p)


def clean_rst(text: str) -> list[str]:
    """Clean reST source into a list of prose paragraphs (rules: ``CLEANING_RULES``)."""
    out: list[str] = []
    _clean_lines(text.expandtabs(8).splitlines(), out)
    return [p for p in _paragraphs(out) if _is_prose(p)]


# ------------------------------------------------------------------------------- Austen
def austen_novels(rdb_path: str | os.PathLike) -> list[list[str]]:
    """The 6 novels of janeaustenr's R lazy-load database, each a list of text lines.

    Each object of ``Rdata.rdb`` is a 4-byte length + a zlib stream holding an XDR-serialised
    character vector; its strings are CHARSXPs (low byte of the flags == 9, then a 4-byte
    big-endian length, then the bytes; length -1 is NA). Order: Emma, Mansfield Park,
    Northanger Abbey, Persuasion, Pride and Prejudice, Sense and Sensibility.
    """
    b = Path(rdb_path).read_bytes()
    pos, novels = 0, []
    while pos < len(b):
        d = zlib.decompressobj()
        raw = d.decompress(b[pos + 4:])
        pos = len(b) - len(d.unused_data)
        lines, i, n_raw = [], 0, len(raw)
        while i < n_raw - 8:
            flags, n = struct.unpack_from(">Ii", raw, i)
            if flags & 0xFF == 9:
                if n == -1:
                    i += 8
                    continue
                if 0 <= n < 1 << 20 and i + 8 + n <= n_raw:
                    lines.append(raw[i + 8:i + 8 + n].decode("utf-8", "replace"))
                    i += 8 + n
                    continue
            i += 1
        novels.append(lines)
    return novels


_CHAPTER = re.compile(r"^\s*chapter\s+([ivxlc]+|\d+)\b", re.IGNORECASE)


def austen_chapters(novels: list[list[str]]) -> Iterator[tuple[str, list[str]]]:
    """``(doc_id, paragraphs)`` per chapter; front matter goes with the first chapter."""
    for title, lines in zip(AUSTEN_TITLES, novels, strict=False):
        chapters: list[list[str]] = [[]]
        for line in lines:
            if _CHAPTER.match(line) and chapters[-1] and any(x.strip() for x in chapters[-1]) \
                    and any(_CHAPTER.match(x) for x in chapters[-1]):
                chapters.append([])
            chapters[-1].append(line)
        slug = title.lower().replace(" ", "-")
        for c, ch in enumerate(chapters):
            paras = [p for p in _paragraphs([ln.strip() for ln in ch]) if _is_prose(p)]
            yield f"austen/{slug}/{c:03d}", paras


# ---------------------------------------------------------------------- package handling
PACKAGES = {
    # part: (apt package to ask for, glob of the data root relative to a filesystem root)
    "linux-doc": ("linux-doc", "usr/share/doc/linux-doc-*/html/_sources"),
    "python-doc": ("python3-doc", "usr/share/doc/python3*/html/_sources"),
    "austen": ("r-cran-janeaustenr", "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"),
}


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


def _deb_root(cache: Path) -> Path:
    return cache / "debs" / "root"


def _locate(cache: Path) -> dict[str, Path | None]:
    roots = [_deb_root(cache), Path("/")]
    found = {}
    for part, (_pkg, pattern) in PACKAGES.items():
        roots_here = [_deb_root(cache)] if part == "austen" else roots
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
    r = _run(["dpkg", "-x", files[-1], str(_deb_root(cache))])
    if r.returncode != 0:
        raise CorpusUnavailable(f"dpkg -x {files[-1]} failed: {r.stderr.strip()}")
    log(f"downloaded and extracted {Path(files[-1]).name} into {_deb_root(cache)}")


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
    doc_parts = [p for p in ("linux-doc", "python-doc") if p in pkgs]
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
    if "austen" in pkgs:
        _download_extract(pkgs["austen"], cache, log)
    found = _locate(cache)
    still = [p for p, v in found.items() if v is None]
    if still:
        raise CorpusUnavailable("could not obtain corpus part(s) " + ", ".join(still) +
                                " via apt; pass a local .txt/.jsonl/.parquet file or a "
                                "Hugging Face dataset name instead")
    return found  # type: ignore[return-value]


def _package_version(part: str, data_root: Path, cache: Path) -> dict:
    """``{"package": name, "version": v}`` of the package that provided ``data_root``."""
    if str(data_root).startswith(str(_deb_root(cache))):
        rel = data_root.relative_to(_deb_root(cache))
        pkg_hint = {"linux-doc": "linux-doc-", "python-doc": "python3",
                    "austen": "r-cran-janeaustenr_"}[part]
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


# -------------------------------------------------------------------------------- build
def _documents(found: dict[str, Path]) -> Iterator[tuple[str, str, list[str]]]:
    """``(doc_id, part, paragraphs)`` for every document, in a deterministic order."""
    for part in ("linux-doc", "python-doc"):
        root = found[part]
        for p in sorted(glob.glob(str(root / "**" / "*.rst.txt"), recursive=True)):
            rel = os.path.relpath(p, root)
            if rel.split(os.sep)[0] == "translations" or "/translations/" in p:
                continue
            text = Path(p).read_text(encoding="utf-8", errors="replace")
            yield f"{part}/{rel[:-len('.rst.txt')]}", part, clean_rst(text)
    for doc_id, paras in austen_chapters(austen_novels(found["austen"])):
        yield doc_id, "austen", paras


def load_manifest(cache: str | os.PathLike | None = None, *, check: bool = True) -> dict | None:
    """The corpus manifest if present and valid (files match sizes and sha256), else None."""
    d = corpus_dir(cache)
    try:
        man = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if man.get("format") != CORPUS_FORMAT or man.get("processing_version") != PROCESSING_VERSION:
        return None
    for split in SPLITS:
        info = man.get("splits", {}).get(split)
        p = d / f"{split}.jsonl"
        if info is None or not p.exists() or p.stat().st_size != info.get("bytes"):
            return None
        if check and sha256_file(p) != info.get("sha256"):
            return None
    return man


def fetch(cache: str | os.PathLike | None = None, *, force: bool = False,
          heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
          log: Callable[[str], None] | None = None) -> dict:
    """Install (if needed), clean, deduplicate, split and write the corpus; returns its manifest.

    Idempotent: with a valid manifest for the same ``heldout_fraction`` nothing is done.
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    cache_p = Path(cache) if cache is not None else cache_root()
    man = None if force else load_manifest(cache_p)
    if man is not None and man.get("heldout_fraction") == heldout_fraction:
        log(f"corpus ready in {corpus_dir(cache_p)} (train {man['splits']['train']['n_docs']} "
            f"docs, heldout {man['splits']['heldout']['n_docs']} docs); nothing to do")
        return man
    t0 = time.perf_counter()
    found = install_sources(cache_p, log)
    t_install = time.perf_counter() - t0
    log("cleaning and splitting: " + ", ".join(f"{k}={v}" for k, v in found.items()))

    from tqdm import tqdm

    docs: dict[str, list[tuple[str, str, list[str]]]] = {s: [] for s in SPLITS}
    n_files = {p: 0 for p in PACKAGES}
    raw_docs = 0
    for doc_id, part, paras in tqdm(_documents(found), desc="corpus", unit="doc",
                                    disable=None, mininterval=1.0):
        raw_docs += 1
        n_files[part] += 1
        split = "heldout" if is_heldout(doc_id, heldout_fraction) else "train"
        docs[split].append((doc_id, part, paras))

    seen_par: set[bytes] = set()
    seen_doc: set[bytes] = set()
    stats = {"duplicate_docs": 0, "duplicate_paragraphs": 0, "empty_docs": 0}
    d = corpus_dir(cache_p)
    splits_info = {}
    for split in SPLITS:  # train first: held-out never repeats a train paragraph
        kept_lines: list[str] = []
        n_chars = 0
        per_part = {p: 0 for p in PACKAGES}
        for doc_id, part, paras in docs[split]:
            dkey = hashlib.sha1("\n\n".join(paras).encode()).digest()
            if dkey in seen_doc:
                stats["duplicate_docs"] += 1
                continue
            seen_doc.add(dkey)
            kept = []
            for p in paras:
                k = hashlib.sha1(p.encode()).digest()
                if k in seen_par:
                    stats["duplicate_paragraphs"] += 1
                    continue
                seen_par.add(k)
                kept.append(p)
            if not kept:
                stats["empty_docs"] += 1
                continue
            text = "\n\n".join(kept)
            n_chars += len(text)
            per_part[part] += 1
            kept_lines.append(json.dumps({"id": doc_id, "source": part, "text": text},
                                         ensure_ascii=False))
        data = ("\n".join(kept_lines) + "\n").encode("utf-8")
        path = d / f"{split}.jsonl"
        atomic_write(path, lambda tmp, data=data: Path(tmp).write_bytes(data))
        splits_info[split] = {"file": path.name, "n_docs": len(kept_lines), "n_chars": n_chars,
                              "approx_tokens": n_chars // 4, "docs_per_source": per_part,
                              "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    sources = {}
    for part, root in found.items():
        sources[part] = {**_package_version(part, root, cache_p), "files": n_files[part]}
    man = {
        "format": CORPUS_FORMAT,
        "processing_version": PROCESSING_VERSION,
        "name": "embedded",
        "sources": sources,
        "raw_docs": raw_docs,
        "heldout_fraction": heldout_fraction,
        "split_rule": SPLIT_RULE,
        "document_ids": "linux-doc/<path under _sources>, python-doc/<path>, "
                        "austen/<novel>/<chapter index>",
        "cleaning_rules": CLEANING_RULES,
        "dedup_rule": "exact duplicate documents and paragraphs (sha1 of the cleaned text) "
                      "dropped, first occurrence kept, train processed before heldout",
        "dedup": stats,
        "splits": splits_info,
        "seconds_install": round(t_install, 1),
        "seconds": round(time.perf_counter() - t0 - t_install, 1),
    }
    atomic_write_json(d / "manifest.json", man)
    log(f"wrote {d}: " + "; ".join(
        f"{s} {i['n_docs']} docs, {i['n_chars'] / 1e6:.1f} M chars" for s, i in splits_info.items())
        + f" (processing {man['seconds']} s, install {man['seconds_install']} s)")
    return man


def ensure_corpus(cache: str | os.PathLike | None = None,
                  log: Callable[[str], None] | None = None) -> dict:
    """The valid manifest, building the corpus first when it is missing (see :func:`fetch`)."""
    man = load_manifest(cache, check=False)
    if man is not None:
        return man
    return fetch(cache, log=log)


def main(argv: list[str] | None = None) -> int:
    """``python -m abstopk.data.corpus fetch [--force] [--cache DIR]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m abstopk.data.corpus",
                                 description="Build the embedded default text corpus.")
    ap.add_argument("command", choices=["fetch", "info"])
    ap.add_argument("--cache", default=None, help="cache folder (default $ABSTOPK_CACHE or "
                    "~/.cache/abstopk)")
    ap.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = ap.parse_args(argv)
    try:
        if args.command == "fetch":
            man = fetch(args.cache, force=args.force, log=print)
        else:
            man = load_manifest(args.cache)
            if man is None:
                print("no valid corpus; run: python -m abstopk.data.corpus fetch")
                return 1
        print(json.dumps({k: man[k] for k in ("sources", "splits", "dedup")}, indent=2))
    except CorpusUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
