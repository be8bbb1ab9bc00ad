"""Seeded per-row sampling, latent choice by output effect, multiple-choice scoring and the
BIG-bench extraction, on hand-computed inputs (no model download)."""

from __future__ import annotations

import io
import json
import math
import tarfile

import pytest
import torch
from identity_sae import identity_sae

from abstopk.steer.generate import RowSampler, row_seed


# ------------------------------------------------------------------ seeded sampling
def _draw(sampler: RowSampler, scores: torch.Tensor) -> list[int]:
    return sampler(torch.zeros(len(scores), 1, dtype=torch.long), scores).argmax(-1).tolist()


def test_row_sampler_frequencies_match_the_tempered_softmax():
    # logits log(1), log(2), log(5) at τ = 1 → probabilities 1/8, 2/8, 5/8
    scores = torch.log(torch.tensor([[1.0, 2.0, 5.0]]))
    s = RowSampler([row_seed(0, 1)], temperature=1.0)
    n = 8000
    counts = [0, 0, 0]
    for _ in range(n):
        counts[_draw(s, scores)[0]] += 1
    for c, p in zip(counts, (1 / 8, 2 / 8, 5 / 8), strict=True):
        assert abs(c / n - p) < 4 * math.sqrt(p * (1 - p) / n)
    # τ = 0.5 squares the odds: 1, 4, 25 (/30)
    s = RowSampler([3], temperature=0.5)
    hits = sum(_draw(s, scores)[0] == 2 for _ in range(4000))
    assert abs(hits / 4000 - 25 / 30) < 4 * math.sqrt((25 / 30) * (5 / 30) / 4000)


def test_row_sampler_nucleus_and_row_independence():
    # probabilities 0.5, 0.3, 0.15, 0.05: top-p 0.7 keeps {0, 1} (0.5 < 0.7 ≤ 0.8)
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    s = RowSampler([11], temperature=1.0, top_p=0.7)
    seen = {_draw(s, scores)[0] for _ in range(500)}
    assert seen == {0, 1}
    s = RowSampler([11], temperature=1.0, top_p=0.01)       # nucleus = the argmax alone
    assert {_draw(s, scores)[0] for _ in range(50)} == {0}
    # a row's draws depend on its own seed only, not on the other rows of the batch
    flat = torch.zeros(1, 50)
    one = RowSampler([5], 1.0)
    two = RowSampler([5, 7], 1.0)
    a = [_draw(one, flat)[0] for _ in range(20)]
    b = [_draw(two, flat.repeat(2, 1))[0] for _ in range(20)]
    assert a == b and len(set(a)) > 5
    assert row_seed(0, 1, 2) == row_seed(0, 1, 2) != row_seed(0, 2, 1)
    with pytest.raises(ValueError, match="rows"):
        two(torch.zeros(1, 1, dtype=torch.long), flat)


# ------------------------------------------------------------------ latent choice
def _identity_sae(architecture: str):
    return identity_sae(architecture, k=2)


def test_latent_choice_by_output_effect_known_answer():
    from abstopk.steer.methods import choose_latents

    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 4, generator=g) + torch.tensor([3.0, 0, 0, 0])   # A: latent 0 high
    b = torch.randn(64, 4, generator=g) - torch.tensor([3.0, 0, 0, 0])
    v = a.mean(0) - b.mean(0)
    rows = torch.randn(32, 4, generator=g)
    # the concept score the "model" produces: linear in the edit, latent 2 moves it most
    w = {0: 0.1, 1: -0.2, 2: -0.9, 3: 0.3}
    calls = []

    def measure(latent, value):
        calls.append((latent, value))
        return 0.05 + w[latent] * value

    # identity decoder: c_i = 1, so the value passed is ±1 (× strength inside measure)
    ch = choose_latents(_identity_sae("abstopk"), a, b, v, rows, rule="output", n=4,
                        measure=measure, reference=0.05)
    assert (ch.pos, ch.neg, ch.sign_pos, ch.sign_neg) == (2, 2, -1.0, 1.0)
    out = {c["latent"]: c["output"] for c in ch.scores["candidates"]}
    assert out == pytest.approx({0: 0.1, 1: -0.2, 2: -0.9, 3: 0.3})
    assert sorted(v for _, v in calls) == pytest.approx([-1.0] * 4 + [1.0] * 4)
    # the activation-difference rule picks latent 0 instead (its effect is the largest)
    ch_e = choose_latents(_identity_sae("abstopk"), a, b, v, rows, rule="effect")
    assert ch_e.pos == ch_e.neg == 0 and ch_e.sign_pos == 1.0
    # a non-negative SAE gets a pair: most towards A (3: +0.3), most towards B (2: −0.9)
    ch_t = choose_latents(_identity_sae("topk"), a, b, v, rows, rule="output", n=4,
                          measure=measure, reference=0.05)
    assert (ch_t.pos, ch_t.neg) == (3, 2) and ch_t.n_latents == 2
    with pytest.raises(ValueError, match="measure"):
        choose_latents(_identity_sae("topk"), a, b, v, rows, rule="output")


# ------------------------------------------------------------------ multiple choice
class _CharTokenizer:
    """BOS 0, pad 4; 'a' 1, 'b' 2 (spaces and other characters are dropped)."""

    pad_token_id = 4
    bos_token_id = 0
    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        table = {"a": 1, "b": 2}
        return {"input_ids": [table[c] for c in text if c in table]}


class _FixedLM(torch.nn.Module):
    """Every position predicts the same distribution: P = (.1, .1, .4, .3, .1)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.logp = torch.log(torch.tensor([0.1, 0.1, 0.4, 0.3, 0.1]))

    def forward(self, input_ids, attention_mask=None):
        class Out:
            pass

        o = Out()
        o.logits = self.logp.expand(*input_ids.shape, 5).clone()
        return o


def test_mc_scorer_hand_computed(monkeypatch):
    import abstopk.data.tokens as tokens
    from abstopk.data.bigbench import MCQuestion
    from abstopk.steer.mc import choice_logprobs, mc_accuracy

    monkeypatch.setattr(tokens, "bos_token_id", lambda tok: 0)
    qs = [MCQuestion("ab", ("a", "bb"), 1),        # " a": lp1 = log .1; " bb": 2·lp2 = log .16
          MCQuestion("b", ("a", "b"), 0),          # single tokens (one forward): "b" (wrong)
          MCQuestion("a", ("aa", "b"), 1)]         # " aa": log .01; " b": log .4 (right)
    tok, lm = _CharTokenizer(), _FixedLM()
    sc = choice_logprobs(lm, tok, qs, batch_size=2)
    assert sc[0] == pytest.approx([math.log(0.1), math.log(0.16)], abs=1e-6)
    assert sc[1] == pytest.approx([math.log(0.1), math.log(0.4)], abs=1e-6)
    assert sc[2] == pytest.approx([math.log(0.01), math.log(0.4)], abs=1e-6)
    assert choice_logprobs(lm, tok, qs, batch_size=1) == sc
    r = mc_accuracy(lm, tok, qs)
    assert r["correct"] == [1, 0, 1] and r["accuracy"] == pytest.approx(2 / 3)
    assert r["chance"] == pytest.approx(0.5)


def _tar_with(tmp_path, files: dict[str, dict]):
    path = tmp_path / "bigbench-1.0.0.tar.gz"
    with tarfile.open(path, "w:gz") as t:
        for name, obj in files.items():
            data = json.dumps(obj).encode()
            info = tarfile.TarInfo(f"bigbench-1.0.0/bigbench/benchmark_tasks/{name}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def test_bigbench_extraction_and_prompts(tmp_path):
    from abstopk.data.bigbench import extract_mc, load_mc
    from abstopk.errors import DataUnavailable

    sdist = _tar_with(tmp_path, {
        "toy/task.json": {"canary": "CANARY", "examples": [
            {"input": "Is ice cold?", "target_scores": {"Yes": 1, "No": 0}},
            {"input": "two right", "target_scores": {"x": 1, "y": 1}},      # skipped
            {"input": "Sky colour?", "target_scores": {"green": 0, "blue": 1, "red": 0}}]},
        "sub/one/task.json": {"task_prefix": "Decide.\n", "example_input_prefix": "\nS: ",
                              "example_output_prefix": "\nVerdict: ", "examples": [
                                  {"input": "fine", "target_scores": {"ok": 1, "bad": 0}}]},
        "other/task.json": {"examples": []}})
    paths = extract_mc(sdist, tmp_path / "cache" / "mc", ["toy", "sub/one"])
    assert set(paths) == {"toy", "sub/one"}
    doc = json.loads(paths["toy"].read_text())
    assert doc["canary"] == "CANARY" and doc["n_total"] == 3 and len(doc["examples"]) == 2
    q = load_mc("toy", tmp_path / "cache")
    assert [x.prompt for x in q] == ["Q: Is ice cold?\nA:", "Q: Sky colour?\nA:"]
    assert q[1].choices == ("green", "blue", "red") and q[1].answer == 1
    (s,) = load_mc("sub/one", tmp_path / "cache", n=1)
    assert s.prompt == "Decide.\n\nS: fine\nVerdict:" and s.answer == 0
    with pytest.raises(DataUnavailable, match="missing_task"):
        extract_mc(sdist, tmp_path / "x", ["missing_task"])
    with pytest.raises(DataUnavailable, match="abstopk data fetch bigbench"):
        load_mc("nope", tmp_path / "cache")


# ------------------------------------------------------------------ merging runs
def _fake_run(methods, shift):
    cfg = {"axes": ["gender"], "methods": methods, "strengths": [-1.0, 1.0], "n_boot": 200,
           "seed": 0, "seeds": 2, "layer": 6}
    recs, conds = [], []
    for m in methods:
        for s in ([0.0] if m == "none" else [-1.0, 1.0]):
            conds.append({"axis": "gender", "method": m, "strength": s, "latent": None,
                          "capability_loss": 3.0, "capability_loss_ref": 3.0})
            for split in ("dev", "test"):
                for pid in ("p0", "p1"):
                    for g in (0, 1):
                        recs.append({"axis": "gender", "split": split, "method": m,
                                     "strength": s, "latent": None, "seed": g,
                                     "prompt_id": pid, "concept": shift.get(m, 0.0) * s,
                                     "nll": 2.0, "distinct2": 1.0, "repetition3": 0.0})
    return {"config": cfg, "axes": [{"axis": "gender", "latents": {}}], "records": recs,
            "conditions": conds}


def test_merge_results_adds_only_new_methods():
    from abstopk.steer.summary import merge_results, summarize

    a = _fake_run(["none", "dim"], {"dim": 0.5})
    b = _fake_run(["none", "relu"], {"relu": -0.25})
    m = merge_results(a, b)
    assert m["config"]["methods"] == ["none", "dim", "relu"]
    assert len(m["records"]) == len(a["records"]) + len(b["records"]) - 8   # b's none rows
    pts = {(p["method"], p["strength"]): p["concept"] for p in summarize(m)["points"]
           if p["split"] == "test"}
    assert pts == {("none", 0.0): 0.0, ("dim", -1.0): -0.5, ("dim", 1.0): 0.5,
                   ("relu", -1.0): 0.25, ("relu", 1.0): -0.25}
    c = _fake_run(["none", "topk"], {})
    c["config"]["seeds"] = 3
    with pytest.raises(ValueError, match="seeds"):
        merge_results(a, c)


def test_merge_results_joins_axes():
    from abstopk.steer.summary import merge_results

    a = _fake_run(["none", "dim"], {"dim": 0.5})
    b = _fake_run(["none", "dim"], {"dim": 0.2})
    for r in b["records"] + b["conditions"]:
        r["axis"] = "register"
    b["axes"][0]["axis"], b["config"]["axes"] = "register", ["register"]
    m = merge_results(a, b)
    assert m["config"]["axes"] == ["gender", "register"]
    assert [x["axis"] for x in m["axes"]] == ["gender", "register"]
    assert len(m["records"]) == len(a["records"]) + len(b["records"])


# ------------------------------------------------------------------ the demo's steering stage
def test_demo_steering_stage_writes_the_report_section(tmp_path, monkeypatch):
    """The stage's wiring: pipeline SAEs in, steering.json / steering.md out, and the demo
    report shows the section (the steering run itself is replaced by a synthetic result)."""
    import abstopk.lm as lm
    import abstopk.steer.run as run
    from abstopk.commands.demo import STAGES
    from abstopk.experiments import demo_steering
    from abstopk.experiments.demo_report import write_report
    from abstopk.sae import SAE, SAEConfig

    pipe = tmp_path / "pipeline"
    rows = []
    for arch in ("abstopk", "topk"):
        d = pipe / "saes" / arch
        SAE(SAEConfig(d_in=8, d_sae=16, architecture=arch, k=2, hook_layer=9)).save(d)
        rows.append({"mode": "trained", "seed": 0, "sparsity": 32.0, "architecture": arch,
                     "sae_dir": str(d)})
    (pipe / "pipeline.json").write_text(json.dumps({
        "settings": {"layer": 9, "model": "smollm2-135m", "seeds": [0], "k_values": [32]},
        "sweep": {"rows": rows}}))
    seen = {}

    def fake_run(model, tok, cfg, saes, **kw):
        seen.update(cfg=cfg, saes=saes)
        res = _fake_run(["none", "dim", "abstopk", "topk"],
                        {"dim": 0.5, "abstopk": 0.4, "topk": 0.1})
        for r in res["records"] + res["conditions"]:
            r["axis"] = "register"
        res["config"].update(axes=["register"], n_prompts=2, positions="all",
                             latent_mode="add", max_new_tokens=12, temperature=0.7, top_p=0.9,
                             capability_contexts=2, capability_context_size=32)
        res["axes"] = [{"axis": "register", "end_a": "literary", "end_b": "technical",
                        "scorer": "clf", "dim_auc": 0.99, "dim_norm": 3.0, "scale": 10.0,
                        "latents": {"abstopk": {"pos": 5, "neg": 5},
                                    "topk": {"pos": 1, "neg": 2}}}]
        return res

    names = [s.name for s in STAGES]
    assert names.index("bidirectionality") < names.index("steering") < names.index("report")
    monkeypatch.setattr(run, "run_steer", fake_run)
    monkeypatch.setattr(lm, "load_model", lambda *a, **k: (None, None, None))
    sec = demo_steering.run_demo_steering(tmp_path)
    assert seen["cfg"].layer == 9 and seen["cfg"].axes == ["register"]
    assert set(seen["saes"]) == {"abstopk", "topk"}
    assert seen["saes"]["abstopk"].cfg.architecture == "abstopk"
    got = json.loads((tmp_path / "steering.json").read_text())
    assert got["title"] == sec["title"] and len(got["rows"]) == 1 + 3 * 2
    dim_up = next(r for r in got["rows"] if r["method"] == "dim" and r["strength"] == 1.0)
    assert dim_up["concept (test)"] == pytest.approx(0.5)
    assert [x["index"] for x in got["latents"]] == [5, 1, 2]
    assert "both ways" in got["reading"] and (tmp_path / "steering.md").is_file()
    html = write_report(tmp_path).read_text()
    assert 'id="steering"' in html and "one signed AbsTopK latent" in html


# ------------------------------------------------------------------ real data (make data)
@pytest.mark.slow
def test_embedded_model_is_above_chance_on_step_inference(lm):
    """The first 24 goal_step_wikihow/step_inference questions (4 choices, chance 1/4), fetched
    by `make data` (`abstopk data fetch bigbench`): the unsteered model's number right has a
    one-sided binomial p-value < 0.01 against chance."""
    from abstopk.data.bigbench import load_mc, mc_dir
    from abstopk.steer.mc import mc_accuracy

    if not (mc_dir() / "goal_step_wikihow__step_inference.json").is_file():
        pytest.skip("BIG-bench tasks not fetched: run `make data` "
                    "(abstopk data fetch bigbench)")
    model, tok, _ = lm
    qs = load_mc("goal_step_wikihow/step_inference", n=24)
    r = mc_accuracy(model, tok, qs)
    assert r["chance"] == 0.25 and r["n"] == 24
    k = sum(r["correct"])
    p = sum(math.comb(24, j) * 0.25 ** j * 0.75 ** (24 - j) for j in range(k, 25))
    assert p < 0.01, (k, p)


def test_fetch_mc_deletes_a_downloaded_sdist_and_keeps_a_present_one(tmp_path, monkeypatch):
    import shutil

    import abstopk.data.labelled.fetch as fetch
    from abstopk.data.bigbench import fetch_mc

    src = _tar_with(tmp_path, {"toy/task.json": {"examples": [
        {"input": "Is ice cold?", "target_scores": {"Yes": 1, "No": 0}}]}})
    cache = tmp_path / "cache"
    sdist = cache / "bigbench" / "bigbench-1.0.0.tar.gz"

    def fake_download(c, log):          # what pip_download leaves: the checked file in place
        sdist.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, sdist)
        return sdist

    monkeypatch.setattr(fetch, "fetch_bigbench", fake_download)
    paths = fetch_mc(cache, ["toy"], log=lambda m: None)
    assert paths["toy"].is_file() and not sdist.exists()          # downloaded → deleted
    paths["toy"].unlink()
    fake_download(cache, None)                                     # already there (e.g. fever)
    fetch_mc(cache, ["toy"], log=lambda m: None)
    assert paths["toy"].is_file() and sdist.exists()
    mtime = paths["toy"].stat().st_mtime_ns
    fetch_mc(cache, ["toy"], log=lambda m: None)                   # idempotent: nothing redone
    assert paths["toy"].stat().st_mtime_ns == mtime
