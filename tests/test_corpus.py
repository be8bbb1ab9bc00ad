"""The embedded corpus: reST cleaning (known answers), split rule, and the REAL corpus.

The real-corpus tests build the corpus with ``fetch()`` (apt as root, or apt-get download +
dpkg -x) into ``$ABSTOPK_CACHE`` on first use; they skip only on a machine without apt.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time

import pytest

from abstopk.data import corpus as C

RST = """\
:mod:`json` --- JSON encoder
============================

.. module:: json
   :synopsis: Encode and decode.

.. SPDX-License-Identifier: GPL-2.0

The :func:`dumps` function uses ``sort_keys`` and
`the spec <https://json.org>`_ [#f1]_ to write **strong** and *emphasised* text.

Example::

    >>> json.dumps([1])
    '[1]'

.. code-block:: c

\tint main(void) { return 0; }

.. note::
   :class: small

   Be careful with :ref:`untrusted input <security>`.

.. function:: dump(obj, fp, *, skipkeys=False, \\
                   indent=None)

   Serialize *obj* to *fp*.

+-------+-------+
| a     | b     |
+=======+=======+
| 1     | 2     |
+-------+-------+

=====  =====
col1   col2
=====  =====
x      y
=====  =====

>>> print(1)
1

- first item
  continued here
- second item

After the table.
"""


def test_clean_rst_known_answer():
    assert C.clean_rst(RST) == [
        "json --- JSON encoder",
        "The dumps function uses sort_keys and the spec to write strong and emphasised text.",
        "Example:",
        "Be careful with untrusted input.",
        "Serialize obj to fp.",
        "- first item continued here\n- second item",
        "After the table.",
    ]


def test_split_rule_is_deterministic_and_about_five_percent():
    ids = [f"doc/{i}" for i in range(20000)]
    held = [i for i in ids if C.is_heldout(i)]
    assert 0.045 < len(held) / len(ids) < 0.055
    assert held == [i for i in ids if C.is_heldout(i)]
    # the rule is the documented formula
    h = int.from_bytes(hashlib.sha256(b"abstopk-split:doc/0").digest()[:8], "big")
    assert C.is_heldout("doc/0") == (h / 2**64 < 0.05)
    assert not any(C.is_heldout(i, 0.0) for i in ids[:100])


def test_no_apt_gives_one_clear_message(tmp_path, monkeypatch):
    # an empty cache: Austen is always taken from the cache, so something is missing
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(C.CorpusUnavailable) as e:
        C.install_sources(tmp_path, log=lambda s: None)
    msg = str(e.value)
    assert "\n" not in msg and "apt" in msg
    for alt in (".txt", ".jsonl", ".parquet", "monology/pile-uncopyrighted"):
        assert alt in msg


# ------------------------------------------------------------------ the real corpus
@pytest.fixture(scope="module")
def manifest():
    if shutil.which("apt-get") is None and C.load_manifest(check=False) is None:
        pytest.skip("apt-get is missing on this machine: the embedded corpus cannot be built")
    return C.fetch(log=print)


def _docs(split):
    with open(C.split_path(split), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_real_corpus_manifest(manifest):
    assert manifest["format"] == C.CORPUS_FORMAT
    assert set(manifest["sources"]) == {"linux-doc", "python-doc", "austen"}
    for s in manifest["sources"].values():
        assert s["version"] and s["version"] != "unknown" and s["files"] > 0
    assert manifest["sources"]["austen"]["files"] > 250  # chapters of six novels
    assert manifest["sources"]["linux-doc"]["files"] > 2000
    tr, ho = manifest["splits"]["train"], manifest["splits"]["heldout"]
    assert tr["n_chars"] > 15e6 and 0.5e6 < ho["n_chars"] < 0.1 * tr["n_chars"]
    assert all(n > 0 for n in tr["docs_per_source"].values())
    assert all(n > 0 for n in ho["docs_per_source"].values())
    for split in C.SPLITS:
        data = C.split_path(split).read_bytes()
        assert hashlib.sha256(data).hexdigest() == manifest["splits"][split]["sha256"]


def test_real_corpus_splits_never_mix(manifest):
    train, held = _docs("train"), _docs("heldout")
    assert len(train) == manifest["splits"]["train"]["n_docs"]
    assert len(held) == manifest["splits"]["heldout"]["n_docs"]
    tids = {d["id"] for d in train}
    hids = {d["id"] for d in held}
    assert not tids & hids and len(tids) == len(train) and len(hids) == len(held)
    assert all(C.is_heldout(i) for i in hids) and not any(C.is_heldout(i) for i in tids)
    # no paragraph is repeated, within or across the splits
    paras = [p for d in train + held for p in d["text"].split("\n\n")]
    assert len(set(paras)) == len(paras)
    assert sum(len(d["text"]) for d in train) == manifest["splits"]["train"]["n_chars"]


def test_real_corpus_is_clean_prose(manifest):
    bad = ("..", "+--", "+==", "|", ">>>", ":ref:`", ":func:`", "``", ".. code-block::")
    n_lines = 0
    for d in _docs("heldout"):
        for line in (ln for p in d["text"].split("\n\n") for ln in p.split("\n")):
            n_lines += 1
            assert line.strip() and line == line.strip()
            assert not line.startswith(bad[:5]), line[:80]
            assert not any(b in line for b in bad[5:]), line[:80]
            assert "  " not in line
    assert n_lines > 1000
    text = {d["id"]: d["text"] for d in _docs("train") + _docs("heldout")}
    pride = text["austen/pride-and-prejudice/000"]  # title page + chapter 1
    assert pride.startswith("PRIDE AND PREJUDICE") and \
        "It is a truth universally acknowledged, that a single man in possession of a good " \
        "fortune, must be in want of a wife." in pride


def test_fetch_again_is_quick_and_identical(manifest):
    t = time.perf_counter()
    again = C.fetch(log=lambda s: None)
    assert time.perf_counter() - t < 5.0
    assert again == manifest
