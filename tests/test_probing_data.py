"""Labelled data of the probing tasks: real VADER / linux-doc data, FEVER parsing on a tiny
tarball with the bigbench layout, users' files, balanced deterministic splits."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from abstopk.data.labelled import (
    Example,
    load_examples,
    read_fever,
    read_user_file,
    read_vader,
    split_sentences,
)
from abstopk.data.labelled import fetch as ds
from abstopk.errors import DataUnavailable
from abstopk.eval.probing.tasks import load_quadrants, load_task_data


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


# ------------------------------------------------------------------------------- VADER
@pytest.fixture(scope="module")
def vader_sdist() -> Path:
    return ds.fetch_vader()  # the project's set-up step (2.5 MB once, then a no-op)


def test_vader_real_counts(vader_sdist):
    ex = read_vader(vader_sdist)
    c = Counter((e.attr2, e.label) for e in ex)
    # counts of |mean valence| ≥ 1 per source, checked against the raw files
    assert c[("movie", "positive")] == 4598 and c[("movie", "negative")] == 4575
    assert c[("tweets", "positive")] == 1830 and c[("tweets", "negative")] == 837
    assert c[("amazon", "positive")] == 1514 and c[("amazon", "negative")] == 941
    assert c[("nyt", "positive")] == 558 and c[("nyt", "negative")] == 996
    assert len(ex) == 15849
    assert not any("&amp;" in e.text for e in ex)


def test_vader_nested_tarball_thresholds(tmp_path):
    gt = "1\t1.0\tgood &amp; fine\n2\t0.99\tmeh\n3\t-1.0\tbad\n4\t-2.5\tawful\nbroken line\n"
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as t:
        _add(t, "hutto_ICWSM_2014/tweets_GroundTruth.txt", gt.encode())
        _add(t, "hutto_ICWSM_2014/tweets_anonDataRatings.txt", b"ignored")
    sdist = tmp_path / "vaderSentiment-3.3.2.tar.gz"
    with tarfile.open(sdist, "w:gz") as t:
        _add(t, "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
             inner.getvalue())
    assert read_vader(sdist) == [Example("good & fine", "positive", "tweets"),
                                 Example("bad", "negative", "tweets"),
                                 Example("awful", "negative", "tweets")]


def test_balanced_deterministic_split(vader_sdist):
    d = load_task_data("sentiment", 200, seed=0)
    d2 = load_task_data("sentiment", 200, seed=0)
    d3 = load_task_data("sentiment", 200, seed=1)
    assert d.classes == ["negative", "positive"]
    assert len(d.train_y) == 150 and len(d.test_y) == 50
    assert np.bincount(d.train_y).tolist() == [75, 75]
    assert np.bincount(d.test_y).tolist() == [25, 25]
    assert d.train_texts == d2.train_texts and d.test_texts == d2.test_texts
    assert d.train_texts != d3.train_texts
    assert not set(d.train_texts) & set(d.test_texts)
    # labels agree with the source data
    truth = {e.text: e.label for e in read_vader(vader_sdist)}
    assert all(truth[t] == d.classes[y] for t, y in zip(d.train_texts, d.train_y, strict=True))
    src = load_task_data("source", 400, seed=0)
    assert src.classes == ["amazon", "movie", "nyt", "tweets"]
    assert np.bincount(src.train_y).tolist() == [75] * 4
    assert set(src.train_attr2) == {"positive", "negative"}


def test_quadrants(vader_sdist):
    q = load_quadrants("sentiment", ("movie", "tweets"), 40, seed=0,
                       label_values=("negative", "positive"))
    truth = {(e.text, e.label, e.attr2) for e in read_vader(vader_sdist)}
    for part, size in (("train", 30), ("test", 10)):
        assert sorted(q[part]) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        for (a, b), texts in q[part].items():
            assert len(texts) == size
            lab, src = ("negative", "positive")[a], ("movie", "tweets")[b]
            assert all((t, lab, src) in truth for t in texts)
    with pytest.raises(DataUnavailable):
        load_quadrants("x", ("a", "b"), 4, examples=[Example("t", "p")] * 4)


# ------------------------------------------------------------------------------- FEVER
def test_fever_parsing_from_bigbench_layout(tmp_path):
    task = {"name": "fever", "examples": [
        {"input": "On June 2017, the following claim was made: Paris is in France.\n"
                  "Q: Was this claim true or false?", "target_scores": {"true": 1, "false": 0}},
        {"input": "On August 5, 2017, the following claim was made: The  moon is\ncheese.\n"
                  "Q: Was this claim true or false?", "target_scores": {"true": 0, "false": 1}},
        {"input": "Something else entirely", "target_scores": {"true": 1, "false": 0}},
        {"input": "On June 2017, the following claim was made: Ambiguous.\n"
                  "Q: Was this claim true or false?", "target_scores": {"true": 1, "false": 1}},
    ]}
    other = {"examples": [{"input": "On June 2017, the following claim was made: decoy.\n"
                                    "Q: Was this claim true or false?",
                           "target_scores": {"true": 1, "false": 0}}]}
    sdist = tmp_path / "bigbench-1.0.0.tar.gz"
    base = "bigbench-1.0.0/bigbench/benchmark_tasks/fact_checker"
    with tarfile.open(sdist, "w:gz") as t:
        _add(t, f"{base}/politifact/task.json", json.dumps(other).encode())
        _add(t, f"{base}/fever/task.json", json.dumps(task).encode())
    assert read_fever(sdist) == [Example("Paris is in France.", "true"),
                                 Example("The moon is cheese.", "false")]
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz") as t:
        _add(t, f"{base}/politifact/task.json", json.dumps(other).encode())
    with pytest.raises(DataUnavailable, match="fever"):
        read_fever(empty)


# --------------------------------------------------------------------------- language
def test_split_sentences():
    assert split_sentences("One two. Three four! five. Six?") == ["One two.", "Three four! five.",
                                                                  "Six?"]
    assert split_sentences("内核 开发。 很好！ok", cjk=True) == ["内核开发。", "很好！", "ok"]
    assert split_sentences("한국어 문장. 두번째 문장", cjk=True) == ["한국어 문장.", "두번째 문장"]


@pytest.mark.skipif(shutil.which("apt-get") is None and not list(
    Path("/usr/share/doc").glob("linux-doc-*")), reason="no apt on this machine: linux-doc "
    "cannot be installed (language tasks need it)")
def test_language_real_linux_doc():
    ex = load_examples("language")
    c = Counter(e.label for e in ex)
    assert set(c) == {"en", "it_IT", "zh_CN", "zh_TW", "ja_JP", "ko_KR"}
    assert c["en"] > 5000 and c["it_IT"] > 2000 and c["zh_CN"] > 5000 and c["ko_KR"] > 100
    zh = [e.text for e in ex if e.label == "zh_CN"]
    assert not any("内 核" in s for s in zh)  # no line-join spaces between Han characters
    it = load_task_data("language_it", 100, seed=0)
    assert it.classes == ["en", "it_IT"] and len(it.train_y) + len(it.test_y) == 100
    with pytest.raises(DataUnavailable, match="language_it"):
        load_examples("language_xx")


# ------------------------------------------------------------------------ users' files
def test_user_files(tmp_path):
    j = tmp_path / "mine.jsonl"
    j.write_text('{"text": "a", "label": 1, "attr2": "x"}\n\n{"text": "b", "label": 0}\n')
    assert read_user_file(j) == [Example("a", "1", "x"), Example("b", "0", None)]
    c = tmp_path / "mine.csv"
    c.write_text("label,text,attr2\npos,\"hello, world\",s1\nneg,bye,\n")
    assert load_examples(str(c)) == [Example("hello, world", "pos", "s1"),
                                      Example("bye", "neg", None)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n')
    with pytest.raises(DataUnavailable, match="label"):
        read_user_file(bad)
    with pytest.raises(DataUnavailable):
        read_user_file(tmp_path / "missing.csv")
    with pytest.raises(DataUnavailable, match="unknown probing task"):
        load_examples("no_such_task")


def test_split_from_user_examples_is_balanced():
    ex = [Example(f"p{i}", "p") for i in range(30)] + [Example(f"n{i}", "n") for i in range(10)]
    d = load_task_data("mine", None, seed=3, examples=ex)
    assert d.classes == ["n", "p"]
    assert np.bincount(d.train_y).tolist() == [8, 8] and np.bincount(d.test_y).tolist() == [2, 2]
    with pytest.raises(DataUnavailable):
        load_task_data("mine", 2, examples=ex)


# ----------------------------------------------------------------------------- fetching
def test_download_failure_and_checksum_are_clear_errors(tmp_path, monkeypatch):
    def fail(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(ds.subprocess, "run", fail)
    with pytest.raises(DataUnavailable, match="could not download vadersentiment"):
        ds.fetch_vader(tmp_path, log=lambda s: None)

    def wrong(cmd, **kw):
        d = Path(cmd[cmd.index("-d") + 1])
        (d / f"vaderSentiment-{ds.VADER_VERSION}.tar.gz").write_bytes(b"not the sdist")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(ds.subprocess, "run", wrong)
    with pytest.raises(DataUnavailable, match="sha256"):
        ds.fetch_vader(tmp_path, log=lambda s: None)
    assert not (tmp_path / "probing" / f"vaderSentiment-{ds.VADER_VERSION}.tar.gz").exists()
