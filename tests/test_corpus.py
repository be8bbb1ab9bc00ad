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
    assert set(manifest["sources"]) == set(C.PACKAGES)
    assert manifest["processing_version"] == C.PROCESSING_VERSION == 2
    for s in manifest["sources"].values():
        assert s["version"] and s["version"] != "unknown" and s["files"] > 0
    assert manifest["sources"]["austen"]["files"] > 250  # chapters of six novels
    assert manifest["sources"]["linux-doc"]["files"] > 2000
    for part, n in (("postgresql-doc", 1000), ("django-doc", 400), ("perl-doc", 150),
                    ("git-doc", 250), ("sqlalchemy-doc", 100)):
        assert manifest["sources"][part]["files"] > n, part
    tr, ho = manifest["splits"]["train"], manifest["splits"]["heldout"]
    assert tr["n_chars"] > 40e6 and 1e6 < ho["n_chars"] < 0.1 * tr["n_chars"]
    assert set(tr["docs_per_source"]) == set(C.SOURCES)
    # tokens counted with the model's tokenizer: the train split holds >= 11M
    tok = manifest["tokens"]
    assert tok["total"]["train"] == sum(tok["train"].values()) >= 11_000_000
    assert set(tok["train"]) == set(C.SOURCES) == set(tok["heldout"])
    # chars per token of real English text: between 3 and 5.5 for every part
    for part, n in tok["train"].items():
        n_chars = sum(len(d["text"]) for d in _docs("train") if d["source"] == part)
        assert 3.0 < n_chars / n < 5.5, (part, n_chars / n)
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
    html_bad = ("¶", "Prev Up Next", "Table of Contents")    # header links, navigation
    git_bad = ("linkgit:", "[verse]", "include::", "{litdd}")
    n_lines, parts = 0, set()
    for d in _docs("heldout"):
        parts.add(d["source"])
        for line in (ln for p in d["text"].split("\n\n") for ln in p.split("\n")):
            n_lines += 1
            assert line.strip() and line == line.strip()
            assert "  " not in line
            if d["id"].startswith(("sphinx-doc/", "django-doc/internals/contributing/writing")):
                continue  # pages about writing reST quote its markup as text
            if d["source"] in ("linux-doc", "python-doc"):       # reST
                assert not line.startswith(bad[:5]), line[:80]
                assert not any(b in line for b in bad[5:]), line[:80]
            if d["source"] in ("postgresql-doc", "django-doc", "pylib-doc"):
                assert not any(b in line for b in html_bad), (d["id"], line[:80])
            if d["source"] == "perl-doc":    # no POD command left (perlpod quotes them inline)
                assert not line.startswith(("=head", "=item", "=over", "=back", "=cut")), line
            if d["source"] == "git-doc":
                assert not any(b in line for b in git_bad), (d["id"], line[:80])
    assert parts == set(C.SOURCES)
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


# ------------------------------------------------------------------ the version-2 sources
HTML = """<!DOCTYPE html><html><head><title>Ignored title</title>
<script>var x = "no";</script><style>p {color: red}</style></head>
<body><div class="navheader"><table><tr><td>Prev</td><td>Next</td></tr></table></div>
<div class="sphinxsidebar"><p>Table of contents in the sidebar.</p></div>
<div id="fixed-sidebar"><p>SQLAlchemy navigation text.</p></div>
<h1>Chapter&nbsp;1. Getting <code>started</code><a class="headerlink" href="#x">¶</a></h1>
<p>The <em>server</em> accepts
   connections &amp; queries.<br>A second line after a break.</p>
<pre class="programlisting">SELECT * FROM t;</pre>
<div class="highlight"><pre><span>import</span> os</pre></div>
<ul><li>First item</li><li>Second <b>bold</b> item</li></ul>
<dl><dt>max_connections</dt><dd>How many clients may connect.</dd></dl>
<table><tr><td>a table cell</td></tr></table>
<p>12345 -- 678</p>
<div class="navfooter"><p>Footer link text.</p></div>
</body></html>"""

POD = """=encoding utf8

=head1 NAME

perlfoo - a B<bold> and I<italic> example

=head1 DESCRIPTION

The function C<print> writes to F<STDOUT>; see L<perlfunc/print> and
L<the manual|perlop>. E<lt>tagsE<gt> stay, X<index>the index vanishes.

    my $x = 1;   # verbatim: code
    print $x;

=over 4


=item *

A bulleted item with C<< $a <=> $b >> inside.

=item open FILEHANDLE

Opens a file.

=back

=begin html

<p>raw html</p>

=end html

=for comment hidden

=cut

sub ignored { }
"""

ADOC = """git-foo(1)
==========

NAME
----
git-foo - Do a 'foo' on the `index`

SYNOPSIS
--------
[verse]
'git foo' [--bar] <path>...

DESCRIPTION
-----------
Runs the *foo* machinery; see linkgit:git-config[1] and
link:https://git-scm.com/docs[the docs] for _details_.

------------
$ git foo --bar
------------

    an indented literal paragraph

--bar::
	Use the bar mode. It is
	faster{litdd}sometimes; see linkgit:git-web{litdd}browse[1].
--baz::
	The baz mode.

// a comment line
:attr: value
[NOTE]
Notes are prose, <<anchor,with a link>>.

|===
| a | b
|===
"""


def test_clean_html_known_answer():
    from abstopk.data.corpus.html import clean_html

    assert clean_html(HTML) == [
        "Chapter 1. Getting started",
        "The server accepts connections & queries.",
        "A second line after a break.",
        "First item",
        "Second bold item",
        "max_connections",
        "How many clients may connect.",
    ]


def test_clean_pod_known_answer():
    from abstopk.data.corpus.pod import clean_pod, pod_inline

    assert clean_pod(POD) == [
        "NAME",
        "perlfoo - a bold and italic example",
        "DESCRIPTION",
        "The function print writes to STDOUT; see print in perlfunc and the manual. <tags> "
        "stay, the index vanishes.",
        "A bulleted item with $a <=> $b inside.",
        "open FILEHANDLE",
        "Opens a file.",
    ]
    assert pod_inline("B<I<nested>> E<0x41>E<66> Z<>") == "nested AB "


def test_clean_asciidoc_known_answer():
    from abstopk.data.corpus.asciidoc import clean_asciidoc

    assert clean_asciidoc(ADOC) == [
        "git-foo(1)",
        "NAME",
        "git-foo - Do a foo on the index",
        "SYNOPSIS",
        "DESCRIPTION",
        "Runs the foo machinery; see git-config and the docs for details.",
        "--bar",
        "Use the bar mode. It is faster--sometimes; see git-web--browse.",
        "--baz",
        "The baz mode.",
        "Notes are prose, with a link.",
    ]


def test_interleaved_order_spreads_every_part_from_the_start():
    """Each part's documents in their own seeded permutation, all read by the fraction of
    their part before them: a part holding a tenth of the bytes fills about a tenth of any
    prefix, and every part opens the stream."""
    from abstopk.data.doc_order import interleaved_order

    parts = ["big"] * 900 + ["small"] * 100 + ["tiny"] * 3
    sizes = [10] * 900 + [10] * 100 + [1000] * 3
    order = interleaved_order(parts, sizes, seed=0)
    assert sorted(order) == list(range(len(parts)))
    assert {parts[i] for i in order[:3]} == {"big", "small", "tiny"}
    first = [parts[i] for i in order[:200]]
    assert 170 <= first.count("big") <= 185 and 17 <= first.count("small") <= 23
    small = [i for i in order if parts[i] == "small"]
    assert sorted(small) == list(range(900, 1000)) and small != sorted(small)
    assert interleaved_order(parts, sizes, seed=1) != order
    assert interleaved_order(parts, sizes, seed=0) == order


def test_resuming_a_cache_of_the_older_corpus_names_both_versions(tmp_path):
    """A cache harvested from corpus version 1 still opens, but continuing it from version
    2 is refused with one line naming both versions and checksums."""
    from abstopk.data.cache_writer import CacheWriter
    from abstopk.errors import CacheError

    old = {"kind": "embedded", "processing_version": 1, "sha256": {"train": "a" * 64}}
    new = {"kind": "embedded", "processing_version": 2, "sha256": {"train": "b" * 64}}
    base = {"model": "m", "layer": 6, "site": "resid_post", "d_in": 4, "dtype": "float16",
            "context_size": 8}
    CacheWriter(tmp_path / "c", {**base, "corpus": old})
    CacheWriter(tmp_path / "c", {**base, "corpus": old})              # same corpus: resumes
    with pytest.raises(CacheError) as e:
        CacheWriter(tmp_path / "c", {**base, "corpus": new})
    msg = str(e.value)
    assert "version 1 (train aaaaaaaaaaaa)" in msg and "version 2 (train bbbbbbbbbbbb)" in msg
    assert "\n" not in msg and "another folder" in msg
