"""The demo's bidirectionality stage (``experiments/demo_analysis.py``) on a tiny demo folder:
a small cache of real SmolLM2 layer-9 activations and three small untrained SAEs, then the
report; its links into the dashboard must resolve, also in headless Chromium."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from browser import browser, screenshot  # noqa: F401  (fixture)
from latent_cache import write_cache

TEXT = ("The man walked into the room and sat down. The woman walked into the room and sat "
        "down. He was happy; she was sad. It was hot today and cold yesterday. The king and "
        "the queen opened the door; the boy closed it. def main(): return 0 # a comment")


def test_stage_order_and_finished_files():
    from abstopk.commands.demo import DEMO_RESULTS, STAGES

    names = [s.name for s in STAGES]
    assert names.index("pipeline") < names.index("bidirectionality") < names.index("report")
    assert names[-1] == "report"
    assert {"bidirectional.json", "minimal_pairs.json", "dashboard/index.html"} <= set(DEMO_RESULTS)


def test_stage_times_wall_and_cpu(tmp_path):
    """A busy stage has CPU time ≈ wall time, a sleeping one wall time and ~no CPU time; the
    times are in stage_times.json before the report stage runs (the report shows them)."""
    import time

    from rich.console import Console

    from abstopk.commands.demo import Stage, run_demo
    from abstopk.experiments.demo_report import collect_parts

    def busy(ctx):
        t0 = time.process_time()
        while time.process_time() - t0 < 0.3:
            pass

    seen = {}

    def report(ctx):
        seen.update(collect_parts(ctx.out)["provenance"])

    console = Console(record=True, width=120)
    run_demo(tmp_path / "d", console=console,
             stages=[Stage("busy", "Busy", busy),
                     Stage("sleep", "Sleep", lambda ctx: time.sleep(0.4)),
                     Stage("report", "Report", report)])
    t = json.loads((tmp_path / "d" / "stage_times.json").read_text())
    assert [x["stage"] for x in t] == ["busy", "sleep", "report"]
    assert t[0]["cpu_s"] >= 0.3 - 0.05
    assert t[1]["wall_s"] >= 0.4 - 0.05 and t[1]["cpu_s"] <= 0.1
    # wall time depends on the machine's load; the busy stage's CPU time (0.3 s) rounds to 0
    assert re.search(r"busy \d+ s wall / 0 s CPU", seen["stage times"])
    assert "report" not in seen["stage times"]
    assert "s CPU (user + sys)" in console.export_text()


@pytest.fixture(scope="module")
def lm():
    from abstopk.lm import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory, lm):
    """OUT/pipeline/pipeline.json naming a cache of 3 × 40 real rows and 3 SAEs (d_sae 64)."""
    from abstopk.lm.hooks import capture_activations
    from abstopk.sae import SAE, SAEConfig

    model, tok, _ = lm
    out = tmp_path_factory.mktemp("demo") / "demo-out"
    ids = tok(" ".join([TEXT] * 3), return_tensors="pt").input_ids[:, :120]
    with capture_activations(model, 9) as acts, torch.no_grad():
        model(ids)
    x = acts[9][0].float()
    cache = write_cache(out / "pipeline" / "cache", x, ids[0], context_len=40, shard_rows=50,
                        model="smollm2-135m")
    rows = []
    for arch in ("topk", "abstopk", "jumprelu"):
        cfg = SAEConfig(d_in=x.shape[1], d_sae=64, architecture=arch,
                        k=8 if arch != "jumprelu" else None, model_name="smollm2-135m",
                        hook_layer=9, hook_site="resid_post")
        d = out / "pipeline" / "sweep" / "saes" / arch
        SAE(cfg, seed=0).save(d)
        rows.append({"architecture": arch, "mode": "trained", "seed": 0, "sparsity": 8.0,
                     "sae_dir": str(d)})
    pipe = {"settings": {"model": "smollm2-135m", "layer": 9, "seeds": [0], "k_values": [8]},
            "cache": str(cache), "cache_rows": int(x.shape[0]), "sweep": {"rows": rows}}
    (out / "pipeline" / "pipeline.json").write_text(json.dumps(pipe))
    return out, x.shape[0]


@pytest.mark.slow
def test_stage_writes_sections_dashboard_and_resolving_links(demo_folder, lm, browser):  # noqa: F811
    from abstopk.analysis.latent_stats import compute_and_write
    from abstopk.analysis.minimal_pairs import analyze_sae, load_pairs
    from abstopk.experiments.demo_analysis import run_analysis
    from abstopk.experiments.demo_report import write_report
    from abstopk.sae import SAE

    out, n_rows = demo_folder
    res = run_analysis(out, rows=100, top_n=5, pages=6, loaded=lm)
    bid = json.loads((out / "bidirectional.json").read_text())
    mp = json.loads((out / "minimal_pairs.json").read_text())
    # one row per SAE, counts equal to a full statistics folder's (for TopK and JumpReLU the
    # stage computes labels only: compared with compute_and_write on the same rows)
    assert [r["SAE"] for r in bid["rows"]] == ["AbsTopK", "TopK", "JumpReLU"]
    for r, arch in zip(bid["rows"], ("abstopk", "topk", "jumprelu"), strict=True):
        stats = out / "analysis" / "stats" / arch
        if arch != "abstopk":
            assert not stats.exists()
            stats = compute_and_write(out / "pipeline" / "sweep" / "saes" / arch,
                                      out / "pipeline" / "cache", out.parent / f"ref-{arch}",
                                      max_rows=100, top_n=5, progress=False)
        idx = json.loads((stats / "index.json").read_text())
        ref = {k: v for k, v in idx["bidirectionality"].items() if k != "config"}
        got = {k: v for k, v in res["bidirectionality"][arch].items() if k != "config"}
        assert got == ref
        assert idx["cache"]["rows_read"] == r["rows read"] == 100 < n_rows
        labels = [x["label"] for x in idx["latents"]]
        live = sum(lab != "dead" for lab in labels)
        assert r["live"] == live and r["dead"] == 64 - live
        assert r["bidirectional"] == labels.count("bidirectional")
        assert r["fraction"] == f"{100 * labels.count('bidirectional') / live:.1f} %"
    assert bid["rows"][1]["bidirectional"] == 0 and bid["rows"][1]["negative side"] == "pre_activation"
    assert "upper bound" in bid["reading"] and "AbsTopK" in bid["reading"]
    # minimal pairs (first template): the stage's shared activations give analyze_sae's
    # coverage (a signed and a non-negative SAE)
    pairs = [dataclasses.replace(p, templates=p.templates[:1]) for p in load_pairs()]
    for r, arch in zip(mp["rows"][:2], ("abstopk", "topk"), strict=True):
        ref = analyze_sae(SAE.load(out / "pipeline" / "sweep" / "saes" / arch).eval(),
                          lm[0], lm[1], pairs=pairs)
        assert r["pairs"] == ref["pairs"] >= 100
        assert r["split on/off"] == ref["split_covered"]
        assert r["max pairs by one latent"] == ref["max_pairs_one_latent"]
        assert r["latents needed"] == ref["latents_needed"]
    # the dashboards: bounded pages (6 most frequent + the named latents), all latents indexed
    site = res["sites"]["abstopk"]
    named = {x["index"] for x in bid["latents"] + mp["latents"] if x["site"] == "dashboard"}
    assert site["latents"] == 64 and 6 <= site["pages"] <= 6 + len(named)
    assert (out / "dashboard" / "index.html").is_file()
    assert not (out / "dashboard-topk").exists() and set(res["stats"]) == {"abstopk"}
    assert len([x for x in bid["latents"] if x["site"] == "dashboard"]) == 5
    # the report: sections rendered, every relative link resolves to a file
    report = write_report(out)
    doc = report.read_text()
    assert 'id="bidirectional"' in doc and 'id="minimal-pairs"' in doc
    hrefs = re.findall(r'href="([^"#:]+)"', doc)
    assert "dashboard/index.html" in hrefs
    assert sum(h.startswith("dashboard/latents/") for h in hrefs) >= 5
    missing = [h for h in hrefs if not (out / h).is_file()]
    assert not missing, missing
    # a named AbsTopK latent's page carries its minimal pairs when it has some
    if mp["latents"] and mp["latents"][0]["site"] == "dashboard":
        i = mp["latents"][0]["index"]
        page = (out / "dashboard" / "latents" / f"{i:06d}.html").read_text()
        assert "no minimal pairs recorded" not in page
    # in Chromium: the section's table and the dashboard link render, the link opens a page
    page = browser.new_page(viewport={"width": 1250, "height": 900})
    page.goto(report.as_uri())
    assert page.locator("#bidirectional table tbody tr").count() == 3
    assert page.locator("#dashboard-link").is_visible()
    screenshot(page, "demo-report-bidirectional.png")
    page.locator("#bidirectional a").first.click()
    page.wait_for_load_state()
    assert "/dashboard/latents/" in page.url and page.locator("#side-neg").count() == 1
    page.close()
