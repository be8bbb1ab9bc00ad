"""The claim-1 pipeline end to end at toy sizes on the real embedded model: the harvest
stops at the first rows and continues later with those rows unchanged, validation and test
share no document, the learning rate is the one with the lowest validation nmse, the numbers
are those of a plain recomputation, and a second call redoes nothing."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from abstopk.data import corpus as C
from abstopk.experiments.claim1 import Claim1Config, plan_runs, run_plan, valtest_of

pytestmark = pytest.mark.slow

SMALL = Claim1Config(d_sae=64, batch_size=64, train_rows=4500, first_rows=500, val_rows=300,
                     test_rows=400, lr_contexts=2, checkpoint_every=3, shard_rows=256,
                     steps={"0.1M": 2, "1M": 4, "10M": 12})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if shutil.which("apt-get") is None and C.load_manifest(check=False) is None:
        pytest.skip("apt-get is missing on this machine: the embedded corpus cannot be built")
    out = tmp_path_factory.mktemp("claim1")
    run_plan(out, steps=["harvest-1M"], cfg=SMALL, log=lambda s: None)
    head = json.loads((out / "cache-train" / "manifest.json").read_text())
    run_plan(out, steps=["heldout", "lr-sweep", "ablation", "harvest-10M", "k32-10M",
                         "lr-10M", "nosink-10M"], cfg=SMALL, log=lambda s: None)
    return out, head


def test_harvest_stops_at_the_first_rows_then_continues_unchanged(run):
    out, head = run
    assert head["complete"] is False
    # stopped at the first shard boundary past 500 rows (one forward batch: 16 contexts)
    assert 500 <= head["total_rows"] <= 16 * 128 and len(head["shards"]) == 1
    final = json.loads((out / "cache-train" / "manifest.json").read_text())
    assert final["complete"] is True and final["total_rows"] == 4500
    # the shards written before the stop are the first shards of the finished cache, unchanged
    assert final["shards"][:len(head["shards"])] == head["shards"]


def test_validation_and_test_share_no_document(run):
    out, _ = run
    ids = {s: [json.loads(line)["id"] for line in (out / "valtest" / f"{s}.jsonl").open()]
           for s in ("val", "test")}
    held = [json.loads(line)["id"] for line in C.split_path("heldout").open()]
    assert not set(ids["val"]) & set(ids["test"])
    assert sorted(ids["val"] + ids["test"]) == sorted(held)
    assert all(valtest_of(i) == "val" for i in ids["val"])
    assert 0.2 < len(ids["val"]) / len(held) < 0.45
    for s, rows in (("val", 300), ("test", 400)):
        m = json.loads((out / f"cache-{s}" / "manifest.json").read_text())
        assert m["complete"] and m["total_rows"] == rows and m["layer"] == 6
        assert m["dtype"] == "float16"


def test_best_lr_is_the_lowest_validation_nmse_recomputed(run):
    from safetensors.torch import load_file

    from abstopk.data.cache import ActivationCache
    from abstopk.sae import SAE

    out, _ = run
    best = json.loads((out / "best_lr.json").read_text())
    c = ActivationCache(out / "cache-val")
    x = torch.cat([load_file(c.shard_path(i))["activations"].float()
                   for i in range(len(c.shards))])
    assert x.shape == (300, 576)
    for arch in ("topk", "abstopk"):
        nmse = {}
        for r in plan_runs():
            if r.step == "lr-sweep" and r.arch == arch:
                d = out / "saes" / r.name
                sae = SAE.load(d).eval()
                with torch.no_grad():
                    z = sae.encode(x)
                    xh = sae.decode(z)
                per_token = ((x - xh) ** 2).sum(1) / (x ** 2).sum(1)
                nmse[r.lr] = per_token.mean().item()
                ev = json.loads((d / "eval_val.json").read_text())
                assert ev["nmse"] == pytest.approx(nmse[r.lr], rel=1e-4)
                assert ev["lr"] == r.lr and ev["split"] == "val"
                fired = (z != 0).sum(1)               # AbsTopK keeps 32 signed values,
                assert (fired == 32).all() if arch == "abstopk" else (fired <= 32).all()
                if arch == "abstopk":                 # TopK drops the non-positive ones
                    assert (z < 0).any()
        assert best[arch]["lr"] == min(nmse, key=nmse.get)


def _chosen_10m(out, arch):
    """The table's 10M seed-0 SAE of ``arch``: the lr-10M check's choice."""
    return json.loads((out / "best_lr_10M.json").read_text())[arch]["run"]


def test_the_10m_learning_rate_is_the_lowest_validation_nmse_and_later_runs_use_it(run):
    out, _ = run
    best1 = json.loads((out / "best_lr.json").read_text())
    best10 = json.loads((out / "best_lr_10M.json").read_text())
    for arch in ("topk", "abstopk"):
        val = {}
        for d in (out / "saes").glob(f"{arch}_k32_10M_s0*"):
            if d.name.endswith("_nosink"):
                continue
            lr = json.loads((d / "train_config.json").read_text())["lr"]
            ev = json.loads((d / "eval_val.json").read_text())
            assert ev["lr"] == lr and ev["train_tokens"] == 12 * 64
            val[lr] = (ev["nmse"], d.name)
        # the grid 1e-3, 2e-3, 4e-3 and the k32-10M run at the 1M best (one SAE per rate)
        assert set(val) == {1e-3, 2e-3, 4e-3, best1[arch]["lr"]}
        lr = min(val, key=lambda v: val[v][0])
        assert (best10[arch]["lr"], best10[arch]["run"]) == (lr, val[lr][1])
        assert best10[arch]["val_nmse"] == val[lr][0]
        # the k32-10M SAE is the 1M best's point of the check, not trained twice
        assert f"{arch}_k32_10M_s0_lr{best1[arch]['lr']:g}" not in {n for _, n in val.values()}
        ns = json.loads((out / "saes" / f"{arch}_k32_10M_s0_nosink" / "train_config.json")
                        .read_text())
        assert ns["lr"] == lr                    # a 10M run after the check uses its rate
        assert (out / "saes" / val[lr][1] / "eval_test.json").is_file()


def test_ten_m_step_reports_test_numbers_and_a_partial_summary(run):
    out, _ = run
    for arch in ("topk", "abstopk"):
        ev = json.loads((out / "saes" / _chosen_10m(out, arch) / "eval_test.json").read_text())
        assert ev["split"] == "test" and ev["train_tokens"] == 12 * 64
        assert ev["l0"] == pytest.approx(32.0) if arch == "abstopk" else ev["l0"] <= 32.0
        assert ev["lr_contexts"] == 2 and 0 < ev["nmse"] < 1.5
        assert ev["ce_zero_ablated"] > ev["ce_clean"]
    md = (out / "claim1.md").read_text()
    assert "PARTIAL: 2 of 25 planned" in md and "Learning-rate sweep" in md
    assert (out / "claim1.csv").read_text().count("\n") == 3   # header + 2 SAEs
    import csv
    rows = {r["run"]: r for r in csv.DictReader((out / "claim1.csv").open())}
    for arch in ("topk", "abstopk"):   # both ablations reach the table, as evaluated
        ev = json.loads((out / "saes" / _chosen_10m(out, arch) / "eval_test.json").read_text())
        row = rows[_chosen_10m(out, arch)]
        assert float(row["loss_recovered_mean_ablation"]) == pytest.approx(
            ev["loss_recovered_mean_ablation"])
        assert ev["ce_mean_ablated"] > ev["ce_clean"]
    assert "loss rec. (mean abl.)" in md
    assert (out / "scaling.png").stat().st_size > 1000


def test_ablation_variants_are_trained_as_stated_and_evaluated_without_the_sinks(run):
    from safetensors.torch import load_file

    from abstopk.data.cache import ActivationCache
    from abstopk.sae import SAE

    out, _ = run
    saes = out / "saes"
    best = json.loads((out / "best_lr.json").read_text())["topk"]["lr"]
    cfg = {v: json.loads((saes / f"topk_k32_1M_s1{v}" / "train_config.json").read_text())
           for v in ("", "_aux", "_nosink")}
    assert cfg[""]["dead_tokens"] == 4 * 64 and cfg["_nosink"]["dead_tokens"] == 4 * 64
    assert cfg["_aux"]["dead_tokens"] == int(0.1 * 4 * 64)          # AuxK can start
    assert {c["lr"] for c in cfg.values()} == {best} and cfg["_aux"]["seed"] == 1
    assert cfg["_nosink"]["min_position"] == 1 and cfg["_aux"]["min_position"] == 0
    meta = json.loads((saes / "topk_k32_1M_s1_nosink" / "cfg.json").read_text())
    assert meta["dataset"].split(" ")[0].endswith("[positions>=1]")
    # the positions ≥ 1 numbers are those of a plain recomputation over those test rows
    c = ActivationCache(out / "cache-test")
    sh = [load_file(c.shard_path(i)) for i in range(len(c.shards))]
    x = torch.cat([t["activations"].float() for t in sh])
    pos = torch.cat([t["positions"] for t in sh])
    assert (pos == 0).any() and (pos > 0).any()
    for name in ("abstopk_k32_1M_s0_nosink", "topk_k32_1M_s1_aux"):
        sae = SAE.load(saes / name).eval()
        ev = json.loads((saes / name / "eval_ablation.json").read_text())
        with torch.no_grad():
            xh = sae.decode(sae.encode(x))
        per_token = ((x - xh) ** 2).sum(1) / (x ** 2).sum(1)
        assert ev["nmse"] == pytest.approx(per_token.mean().item(), rel=1e-4)
        assert ev["nmse_pos1"] == pytest.approx(per_token[pos >= 1].mean().item(), rel=1e-4)
        assert ev["variant"] == name.rsplit("_", 1)[1]
    plain = json.loads((saes / f"topk_k32_1M_s0_lr{best:g}" / "eval_ablation.json").read_text())
    assert plain["variant"] == "plain" and plain["train_min_position"] == 0
    md = (out / "ablation.md").read_text()
    for v in ("plain", "aux", "nosink"):
        assert f"| {v} | topk | 0,1 |" in md and f"| {v} | abstopk | 0,1 |" in md
    assert "PARTIAL: 2 of 25 planned" in (out / "claim1.md").read_text()  # not table rows


def test_the_10m_nosink_pair_and_loss_recovered_without_the_sinks(run, lm):
    """``nosink-10M`` trains the 10M pair of seeds 0 and 1 without position 0 (seed 1's plain
    pair with it, ``scaling-10M`` not having run) and lands in ablation.md beside the plain
    pairs; the plain and nosink SAEs' loss recovered at positions ≥ 1 is that of a
    direct ``evaluate_loss_recovered(min_position=1)`` call on the plan's test contexts."""
    from abstopk.data.tokens import bos_token_id, iter_contexts
    from abstopk.eval.loss_recovered import evaluate_loss_recovered
    from abstopk.sae import SAE

    out, _ = run
    saes = out / "saes"
    for arch in ("topk", "abstopk"):
        for seed in (0, 1):
            ns = saes / f"{arch}_k32_10M_s{seed}_nosink"
            cfg = json.loads((ns / "train_config.json").read_text())
            assert (cfg["min_position"], cfg["steps"], cfg["seed"]) == (1, 12, seed)
            ev = json.loads((ns / "eval_ablation.json").read_text())
            assert (ev["tokens"], ev["variant"], ev["train_min_position"]) == ("10M", "nosink", 1)
            assert not (ns / "eval_test.json").exists()
        plain1 = json.loads((saes / f"{arch}_k32_10M_s1" / "eval_ablation.json").read_text())
        assert (plain1["variant"], plain1["tokens"]) == ("plain", "10M")
        assert json.loads((saes / _chosen_10m(out, arch) / "eval_ablation.json").read_text())[
            "variant"] == "plain"
    # loss recovered at positions ≥ 1: plain and nosink runs, not aux
    assert (saes / "topk_k32_1M_s1_nosink" / "eval_ablation_lr.json").is_file()
    assert (saes / "abstopk_k32_1M_s1" / "eval_ablation_lr.json").is_file()
    assert not (saes / "topk_k32_1M_s1_aux" / "eval_ablation_lr.json").exists()
    model, tok, _ = lm
    name = "abstopk_k32_10M_s0_nosink"
    got = json.loads((saes / name / "eval_ablation_lr.json").read_text())
    ctx = iter_contexts(tok, source=str(out / "valtest" / "test.jsonl"), split="all",
                        context_size=128)
    ref = evaluate_loss_recovered(SAE.load(saes / name).eval(), model, ctx, layer=6,
                                  n_contexts=2, batch_size=4,
                                  skip_token_ids={bos_token_id(tok)}, min_position=1)
    assert got["lr_min_position"] == 1 and got["lr_contexts"] == 2
    for k in ("ce_spliced", "ce_zero_ablated", "ce_mean_ablated", "loss_recovered"):
        assert got[k] == pytest.approx(ref[k], rel=1e-6), k
    md = (out / "ablation.md").read_text()
    # groups are means over seeds: the 10M plain and nosink groups hold seeds 0 and 1
    assert "| 10M | nosink | topk | 0,1 |" in md and "| 10M | plain | abstopk | 0,1 |" in md
    lrs = [json.loads((saes / f"abstopk_k32_10M_s{s}_nosink" / "eval_ablation_lr.json")
                      .read_text())["loss_recovered"] for s in (0, 1)]
    assert lrs[0] == got["loss_recovered"] and f"{sum(lrs) / 2:.4f}" in md
    assert "| 10M | nosink | 0,1 |" in md and "| 1M | nosink | 0,1 |" in md


def test_a_second_call_redoes_nothing_and_other_sizes_are_refused(run):
    out, _ = run
    files = {p: p.stat().st_mtime_ns for p in (out / "saes").rglob("*") if p.is_file()}
    files |= {p: p.stat().st_mtime_ns for p in out.glob("cache-*/*") if p.is_file()}
    run_plan(out, steps=["harvest-1M", "heldout", "lr-sweep", "ablation", "harvest-10M",
                         "k32-10M", "lr-10M", "nosink-10M"], cfg=SMALL, log=lambda s: None)
    assert {p: p.stat().st_mtime_ns for p in files} == files
    # a run made with a shorter learning-rate grid continues: the grid only gained values
    plan = json.loads((out / "plan.json").read_text())
    (out / "plan.json").write_text(json.dumps({**plan, "lrs": plan["lrs"][:3]}))
    run_plan(out, steps=["summary"], cfg=SMALL, log=lambda s: None)
    assert json.loads((out / "plan.json").read_text()) == plan
    (out / "plan.json").write_text(json.dumps({**plan, "lrs": plan["lrs"][1:]}))
    with pytest.raises(ValueError, match="other settings"):   # not a prefix: refused
        run_plan(out, steps=["summary"], cfg=SMALL, log=lambda s: None)
    (out / "plan.json").write_text(json.dumps(plan))
    other = Claim1Config(**{**SMALL.__dict__, "d_sae": 128})
    with pytest.raises(ValueError, match="other settings"):
        run_plan(out, steps=["summary"], cfg=other)


def test_batch_and_jumprelu_steps_train_at_their_twins_rates_and_reach_the_summary(
        run, tmp_path, monkeypatch):
    """Layer 6's last steps on a copy of the run: BatchTopK and JumpReLU train at TopK's 10M
    rate, batch AbsTopK at AbsTopK's (set apart here), JumpReLU towards target L0 k; the
    summary pairs batch AbsTopK − BatchTopK by seed and draws the frontier."""
    import csv
    import shutil

    src, _ = run
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    best = json.loads((out / "best_lr_10M.json").read_text())
    best["topk"]["lr"], best["abstopk"]["lr"] = 4e-3, 1e-3          # distinct rates
    (out / "best_lr_10M.json").write_text(json.dumps(best))
    import abstopk.report.plots as plots

    drawn: list[list[dict]] = []
    real = plots.plot_sweep
    monkeypatch.setattr(plots, "plot_sweep",
                        lambda rows, path, **kw: (drawn.append(rows), real(rows, path, **kw))[1])
    run_plan(out, steps=["batch", "jumprelu", "summary"], cfg=SMALL, log=lambda s: None)
    saes = out / "saes"
    cfg = {n: json.loads((saes / f"{n}_k32_10M_s0" / "train_config.json").read_text())
           for n in ("batchtopk", "batchabstopk", "jumprelu")}
    assert (cfg["batchtopk"]["lr"], cfg["batchabstopk"]["lr"], cfg["jumprelu"]["lr"]) == \
        (4e-3, 1e-3, 4e-3)
    assert cfg["batchtopk"]["k"] == 32 and cfg["batchabstopk"]["k"] == 32
    assert cfg["jumprelu"]["target_l0"] == 32.0 and cfg["jumprelu"]["k"] is None
    assert all(c["steps"] == 12 and c["d_sae"] == 64 for c in cfg.values())
    ev = {n: json.loads((saes / f"{n}_k32_10M_s0" / "eval_test.json").read_text())
          for n in cfg}
    assert all(e["split"] == "test" and e["train_tokens"] == 12 * 64 for e in ev.values())
    rows = {r["run"]: r for r in csv.DictReader((out / "claim1.csv").open())}
    assert {f"{n}_k32_10M_s0" for n in cfg} <= set(rows)
    gap = ev["batchabstopk"]["nmse"] - ev["batchtopk"]["nmse"]
    rel = 100 * gap / ev["batchtopk"]["nmse"]
    md = (out / "claim1.md").read_text()
    assert (f"| batch AbsTopK − BatchTopK | 32 | 768 | 0 | {gap:.4f} ± 0.0000 | {rel:.1f} ± 0.0 |"
            in md)
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the last summary's frontier: the 10M rows on test (the k 32 pair's SAEs at the rates set
    # here were never evaluated on test, so the three new SAEs are those rows)
    assert sorted(r["architecture"] for r in drawn[-1]) == ["batchabstopk", "batchtopk",
                                                            "jumprelu"]
