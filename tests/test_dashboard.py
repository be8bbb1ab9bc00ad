"""The dashboard's renderer, its commands and its server, without a browser (the browser
checks are in test_dashboard_browser.py). Statistics come from tests/stats_fixture.py."""

from __future__ import annotations

import html
import json
import re
import threading
import urllib.error
import urllib.request

import pytest
from cli_runner import cli_code as _cli
from stats_fixture import direction, write_stats

from abstopk.errors import StatsFormatError, UserError
from abstopk.report.dashboard import build_site
from abstopk.report.html import esc, fmt_signed, js_data


@pytest.fixture()
def stats(tmp_path):
    data = write_stats(tmp_path / "stats")
    return tmp_path / "stats", data


def _text(page_html: str) -> str:
    """Visible-ish text: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page_html))


def test_site_layout_and_pages(stats, tmp_path):
    folder, data = stats
    res = build_site(folder, tmp_path / "site", directions=[direction()])
    site = tmp_path / "site"
    n_rows = len(data["index"]["latents"])
    assert res["latents"] == n_rows and res["pages"] == len(data["latents"])
    assert not (site / "latents" / "000002.html").exists()      # dead latent: no page
    for i in data["latents"]:
        assert (site / "latents" / f"{i:06d}.html").is_file()
    assert len(res["directions"]) == 1
    js = (site / "data" / "index.js").read_text()
    assert js.startswith('window["ABSTOPK_INDEX"] = ') and "<" not in js.split("=", 1)[1]
    idx = json.loads(js.split("=", 1)[1].strip().rstrip(";").replace("\\u003c", "<"))
    assert [r["i"] for r in idx["latents"]] == list(range(n_rows))
    r0 = idx["latents"][0]
    lat0 = data["latents"][0]
    assert r0["tp"] == lat0["top_pos"][0]["tokens"][lat0["top_pos"][0]["focus"]]
    assert r0["tn"] == lat0["top_neg"][0]["tokens"][lat0["top_neg"][0]["focus"]]
    assert idx["latents"][2]["page"] is False and r0["page"] is True


def test_latent_page_shows_both_signs_escaped(stats, tmp_path):
    folder, data = stats
    build_site(folder, tmp_path / "site")
    lat = data["latents"][0]
    page = (tmp_path / "site" / "latents" / "000000.html").read_text()
    # every data token is escaped: no raw markup from tokens survives
    assert "<b>" not in page and "</script>" not in page.split("<script", 1)[0]
    assert "x&lt;y" in page and "&amp;amp;" in page
    neg = page.split('id="top-neg"', 1)[1].split("</section>", 1)[0]
    pos = page.split('id="top-pos"', 1)[1].split("</section>", 1)[0]
    for side, exs in ((pos, lat["top_pos"]), (neg, lat["top_neg"])):
        lines = re.findall(r'<div class="ctx (pos|neg)"', side)
        assert len(lines) == len(exs)
        first = _text(re.split(r'<div class="ctx (?:pos|neg)"', side)[1])
        assert fmt_signed(exs[0]["value"]) in first
        assert "".join(exs[0]["tokens"]).replace("\n", "⏎") in first
    assert set(re.findall(r'<div class="ctx (pos|neg)"', pos)) == {"pos"}
    assert set(re.findall(r'<div class="ctx (pos|neg)"', neg)) == {"neg"}
    # negative side left of positive side
    assert page.index('id="side-neg"') < page.index('id="side-pos"')
    # the focus token's highlight ∝ |z| / max |z| over both signs
    vmax = max(abs(lat["max_pos"]), abs(lat["max_neg"]))
    alphas = [float(a) for a in re.findall(r'--a:([0-9.]+)', pos)]
    assert alphas[0] == pytest.approx(min(1, abs(lat["top_pos"][0]["value"]) / vmax), abs=1e-3)
    # histogram: one bar per count, coloured by sign
    bars = re.findall(r'<rect class="(pos|neg|zero)"', page)
    assert len(bars) == len(lat["histogram"]["counts"])
    assert "1 pair, 1 of them by a sign flip" in _text(page)
    assert _text(page).count("sign flip") == 2 and "walked <in>." in _text(page)


def test_one_sided_latent_renders_empty_state(stats, tmp_path):
    folder, _ = stats
    build_site(folder, tmp_path / "site")
    page = (tmp_path / "site" / "latents" / "000001.html").read_text()
    neg = page.split('id="top-neg"', 1)[1].split("</section>", 1)[0]
    assert "no negative activations recorded" in neg and 'class="ctx' not in neg


def test_rebuild_removes_stale_pages(stats, tmp_path):
    folder, _ = stats
    build_site(folder, tmp_path / "site")
    (folder / "latents" / "000004.json").unlink()
    res = build_site(folder, tmp_path / "site")
    assert not (tmp_path / "site" / "latents" / "000004.html").exists()
    assert res["pages"] == len(list((tmp_path / "site" / "latents").glob("*.html")))


@pytest.mark.parametrize("bad", [{"format": "other", "version": 1, "latents": []},
                                 {"format": "abstopk-latent-stats", "version": 99, "latents": []},
                                 {"format": "abstopk-latent-stats", "version": 1,
                                  "latents": [{"i": 0}]}])
def test_bad_index_is_a_user_error(tmp_path, bad):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "index.json").write_text(json.dumps(bad))
    with pytest.raises(StatsFormatError):
        build_site(tmp_path / "s", tmp_path / "site")
    with pytest.raises(StatsFormatError, match="missing"):
        build_site(tmp_path, tmp_path / "site2")


def test_html_helpers():
    assert esc('<a href="x">&') == "&lt;a href=&quot;x&quot;&gt;&amp;"
    assert fmt_signed(-0.5) == "−0.5" and fmt_signed(2) == "+2" and fmt_signed(None) == "—"
    assert "\\u003c/script>" in js_data("X", {"t": "</script>"})




def test_cli_dashboard_and_out_rule(stats, tmp_path):
    folder, _ = stats
    dirs = tmp_path / "dirs.json"
    dirs.write_text(json.dumps([direction()]))
    site = tmp_path / "site"
    assert _cli(["dashboard", "--stats", str(folder), "--out", str(site),
                 "--directions", str(dirs)]) == 0
    assert (site / "index.html").is_file() and len(list((site / "directions").iterdir())) == 1
    # a finished site is not replaced without --force; never written into its input
    assert _cli(["dashboard", "--stats", str(folder), "--out", str(site)]) == 2
    assert _cli(["dashboard", "--stats", str(folder), "--out", str(site), "--force"]) == 0
    assert _cli(["dashboard", "--stats", str(folder), "--out", str(folder / "site")]) == 2
    assert _cli(["dashboard", "--out", str(tmp_path / "x")]) == 2     # no input at all


@pytest.mark.slow
def test_cli_dashboard_from_sae_and_cache(tmp_path, lm):
    """``dashboard --sae --cache``: statistics of a real-model cache, then the site; a latent
    page names the token its strongest context is focused on."""
    import torch
    from latent_cache import write_cache

    from abstopk.lm.hooks import capture_activations
    from abstopk.sae import SAE, SAEConfig

    model, tok, _ = lm
    ids = tok("The man walked in and sat down. The woman walked in and sat down. It was hot.",
              return_tensors="pt").input_ids[:, :30]
    with capture_activations(model, 3) as acts, torch.no_grad():
        model(ids)
    cache = write_cache(tmp_path / "cache", acts[3][0].float(), ids[0], context_len=10,
                        shard_rows=20, model="smollm2-135m")
    SAE(SAEConfig(d_in=acts[3].shape[-1], d_sae=32, architecture="abstopk", k=4,
                  model_name="smollm2-135m"), seed=0).save(tmp_path / "sae")
    site = tmp_path / "site"
    assert _cli(["dashboard", "--sae", str(tmp_path / "sae"), "--cache", str(cache),
                 "--out", str(site), "--top-n", "3"]) == 0
    index = json.loads((site / "stats" / "index.json").read_text())
    assert len(index["latents"]) == 32 and index["cache"]["rows_read"] == ids.shape[1]
    first = next(r for r in index["latents"] if r["freq_pos"] + r["freq_neg"] > 0)
    rec = json.loads((site / "stats" / "latents" / f"{first['index']:06d}.json").read_text())
    ex = (rec["top_pos"] + rec["top_neg"])[0]
    page = (site / "latents" / f"{first['index']:06d}.html").read_text()
    assert html.escape(ex["tokens"][ex["focus"]].strip()) in page


def _get(url: str, host: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def test_server_binds_localhost_and_refuses_other_hosts(stats, tmp_path):
    from abstopk.report.dashboard.server import make_server

    folder, _ = stats
    build_site(folder, tmp_path / "site")
    server = make_server(tmp_path / "site", 0)
    host, port = server.server_address[:2]
    assert host == "127.0.0.1"
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        code, body = _get(f"http://127.0.0.1:{port}/latents/000000.html")
        assert code == 200 and b'id="top-neg"' in body
        assert _get(f"http://127.0.0.1:{port}/", host="evil.example")[0] == 403
        assert _get(f"http://127.0.0.1:{port}/latents/")[0] == 404       # no listings
        assert _get(f"http://127.0.0.1:{port}/../stats/index.json")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(UserError, match="not a built dashboard"):
        make_server(folder, 0)


def test_cli_dashboard_from_sae_calls_the_statistics_producer(tmp_path, monkeypatch):
    """--sae/--cache: compute_and_write(sae, cache, SITE/stats, ...) then the site from it."""
    import sys
    import types

    calls = []

    def compute_and_write(sae_dir, cache_dir, out_dir, **kw):
        calls.append((str(sae_dir), str(cache_dir), str(out_dir), kw))
        write_stats(out_dir)
        return out_dir

    fake = types.ModuleType("abstopk.analysis.latent_stats")
    fake.compute_and_write = compute_and_write
    monkeypatch.setitem(sys.modules, "abstopk.analysis.latent_stats", fake)
    (tmp_path / "sae").mkdir()
    (tmp_path / "cache").mkdir()
    site = tmp_path / "site"
    assert _cli(["dashboard", "--sae", str(tmp_path / "sae"), "--cache", str(tmp_path / "cache"),
                 "--out", str(site), "--top-n", "7", "--max-rows", "1000"]) == 0
    assert len(calls) == 1
    sae, cache, out, kw = calls[0]
    assert (sae, cache, out) == (str(tmp_path / "sae"), str(tmp_path / "cache"),
                                 str(site / "stats"))
    assert kw["top_n"] == 7 and kw["max_rows"] == 1000 and kw["force"] is False
    assert (site / "index.html").is_file() and (site / "latents" / "000000.html").is_file()


def test_cli_serve_stops_on_ctrl_c(stats, tmp_path):
    """``abstopk serve SITE --port 0`` listens on 127.0.0.1, serves, and SIGINT stops it."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    folder, _ = stats
    build_site(folder, tmp_path / "site")
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}

    def deliverable_sigint() -> None:
        # the child starts as a shell would start a foreground command: SIGINT neither ignored
        # nor blocked, whatever the test process inherited (a background CI job ignores it)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen([sys.executable, "-m", "abstopk.cli", "serve", str(tmp_path / "site"),
                             "--port", "0", "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=deliverable_sigint)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line + proc.stderr.read() if proc.poll() is not None else line
        code, body = _get(f"http://127.0.0.1:{m.group(1)}/index.html")
        assert code == 200 and b"ABSTOPK_INDEX" not in body and b"data/index.js" in body
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "stopped" in out, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _pairs_file(folder, per_latent):
    (folder / "pairs.json").write_text(json.dumps({
        "format": "abstopk-minimal-pairs", "version": 1, "sae": "x",
        "per_latent": {str(i): v for i, v in per_latent.items()}}))


def test_pairs_and_judge_files_reach_pages_and_index(stats, tmp_path):
    f, data = stats
    _pairs_file(f, {3: [{"a": "hot", "b": "cold", "category": "adjective", "z_a": 1.5,
                         "z_b": -2.0, "kind": "flip"},
                        {"a": "king", "b": "queen", "category": "noun", "z_a": 0.7,
                         "z_b": 0.0, "kind": "a_only"}]})
    (f / "judge.json").write_text(json.dumps({
        "format": "abstopk-judge", "version": 1,
        "latents": [{"index": 4, "label": "bidirectional", "explanation": "+: hot · −: cold",
                     "opposite_logodds": 1.25},
                    {"index": 5, "label": "unidirectional", "opposite_test": "completion",
                     "opposite_score": -0.75, "opposite_logodds": None}]}))
    build_site(f, tmp_path / "site")
    page3 = _text((tmp_path / "site" / "latents" / "000003.html").read_text())
    assert "2 pairs, 1 of them by a sign flip" in page3
    assert "on for a only" in page3 and "cold" in page3
    page4 = (tmp_path / "site" / "latents" / "000004.html").read_text()
    assert 'id="judge"' in page4 and "+1.25" in page4
    page5 = _text((tmp_path / "site" / "latents" / "000005.html").read_text())
    assert "opposite score (PMI)" in page5 and "0.75" in page5
    # an explicit judge file (e.g. judge-completion.json) replaces STATS/judge.json
    other_judge = tmp_path / "judge-completion.json"
    other_judge.write_text(json.dumps({
        "format": "abstopk-judge", "version": 2,
        "latents": [{"index": 6, "label": "bidirectional", "opposite_test": "completion",
                     "opposite_score": 7.5}]}))
    build_site(f, tmp_path / "site2", judge_file=other_judge)
    rows2 = {r["i"]: r for r in json.loads(
        (tmp_path / "site2" / "data" / "index.js").read_text().split("=", 1)[1].rstrip()
        .rstrip(";"))["latents"]}
    assert rows2[6]["jl"] == "bidirectional" and rows2[4].get("jl") is None
    with pytest.raises(StatsFormatError, match="missing"):
        build_site(f, tmp_path / "site3", judge_file=tmp_path / "nope.json")
    rows = {r["i"]: r for r in json.loads(
        (tmp_path / "site" / "data" / "index.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))
        ["latents"]}
    assert rows[3]["np"] == 2 and rows[4]["jl"] == "bidirectional"
    # the stats folder's own (fixture) pair of latent 0 stays when pairs.json names others
    assert rows[0]["np"] == 1 and rows[5]["np"] == len(data["latents"][5]["minimal_pairs"])
    # an explicit pairs file replaces STATS/pairs.json; a wrong file is a user error
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(StatsFormatError, match="abstopk-minimal-pairs"):
        build_site(f, tmp_path / "site2", pairs_file=other)
