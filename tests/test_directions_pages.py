"""Direction pages: DiM / probe / steering vectors projected over a cache (streaming top ±
rows equal a brute-force ranking), saved as safetensors, rendered and checked in Chromium."""

from __future__ import annotations

import pytest
import torch
from browser import browser, screenshot  # noqa: F401  (fixture)
from latent_cache import write_cache

from abstopk.analysis.latent_stats.directions import (
    direction_records,
    load_directions,
    project_topn,
    save_directions,
)
from abstopk.errors import UserError
from abstopk.report.dashboard import build_site
from abstopk.report.html import fmt_signed
from abstopk.steer.directions import Direction

D, N, VOCAB = 12, 90, 50


class _Tok:
    def decode(self, ids):
        return "".join(f" w{i}" for i in ids)


class _LM:
    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.emb = torch.nn.Linear(D, VOCAB, bias=False)
        self.emb.weight.data = torch.randn(VOCAB, D, generator=g)

    def get_output_embeddings(self):
        return self.emb


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("dirs")
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(N, D, generator=g)
    toks = torch.randint(0, VOCAB, (N,), generator=g)
    cache = write_cache(root / "cache", acts, toks, context_len=15, shard_rows=40)
    vecs = {"dim: a − b": torch.randn(D, generator=g) * 3, "probe": torch.randn(D, generator=g)}
    return root, cache, acts, toks, vecs


def test_projection_topn_equals_brute_force(toy):
    _, _, acts, _, vecs = toy
    V = torch.stack(list(vecs.values()))
    batches = [(a, acts[a:a + 17]) for a in range(0, N, 17)]
    tp, tn, mean, std, n = project_topn(V, batches, 5)
    p = acts @ (V / V.norm(dim=1, keepdim=True)).T
    assert n == N
    for k in range(V.shape[0]):
        assert [r for _, r in tp.entries(k)] == p[:, k].argsort(descending=True)[:5].tolist()
        assert [r for _, r in tn.entries(k)] == p[:, k].argsort()[:5].tolist()
        assert tn.entries(k)[0][0] == pytest.approx(float(p[:, k].min()), abs=1e-5)
    assert mean.float() == pytest.approx(p.mean(0), abs=1e-5)
    assert std.float() == pytest.approx(p.std(0, unbiased=False), abs=1e-5)


def test_records_saved_vectors_and_steering_directions(toy, tmp_path):
    _, cache, acts, toks, vecs = toy
    f = save_directions(tmp_path / "d.safetensors", vecs, layer=3)
    loaded, meta = load_directions(f)
    assert meta == {"layer": "3"} and list(loaded) == list(vecs)
    recs = direction_records(loaded, cache, layer=3, top_n=4, context_window=2, lm=_LM(),
                             tokenizer=_Tok())
    v = vecs["probe"]
    p = acts @ (v / v.norm())
    top = recs[1]["top_pos"][0]
    r = int(p.argmax())
    assert top["row"] == r and top["tokens"][top["focus"]] == f" w{int(toks[r])}"
    assert recs[1]["top_neg"][0]["row"] == int(p.argmin())
    # context window stays inside the packed context of 15 rows
    assert all(abs(e["row"] // 15 - r // 15) == 0 for e in [top])
    assert len(top["tokens"]) <= 5
    ell = _LM().emb.weight @ (v / v.norm())
    assert recs[1]["logits_pos"][0]["token"] == f" w{int(ell.argmax())}"
    assert recs[1]["logits_neg"][0]["token"] == f" w{int(ell.argmin())}"
    # a steering-layer Direction: its name and layer are kept; a wrong layer is refused
    d = Direction(vector=v, layer=3, name="sentiment")
    (rec,) = direction_records([d], cache, top_n=2, lm=_LM(), tokenizer=_Tok())
    assert rec["name"] == "sentiment" and rec["layer"] == 3
    with pytest.raises(UserError, match="layer 5"):
        direction_records([Direction(vector=v, layer=5)], cache, lm=_LM(), tokenizer=_Tok())
    with pytest.raises(UserError, match="dimensions"):
        direction_records({"x": torch.ones(D + 1)}, cache, lm=_LM(), tokenizer=_Tok())
    bad = tmp_path / "bad.safetensors"
    save_directions(bad, {"m": torch.ones(2, D)})
    with pytest.raises(UserError, match="not \\[d\\]"):
        load_directions(bad)


def test_direction_page_in_chromium(browser, toy, tmp_path):  # noqa: F811
    from stats_fixture import write_stats

    _, cache, acts, _, vecs = toy
    recs = direction_records(vecs, cache, top_n=4, lm=_LM(), tokenizer=_Tok())
    write_stats(tmp_path / "stats", n_random=2)
    res = build_site(tmp_path / "stats", tmp_path / "site", directions=recs)
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.goto((tmp_path / "site" / "index.html").as_uri())
    assert page.locator("#directions a").count() == 2
    page.click("#directions a >> nth=0")
    page.wait_for_url("**/directions/*.html")
    for side, key in (("#top-pos", "top_pos"), ("#top-neg", "top_neg")):
        ex = recs[0][key][0]
        ctx = page.locator(f"{side} .ctx").first
        assert fmt_signed(ex["value"]) in ctx.inner_text()
        assert ctx.locator("mark").inner_text().strip() == ex["tokens"][ex["focus"]].strip()
    assert page.locator("#logits-pos td.tok").first.inner_text().strip() == \
        recs[0]["logits_pos"][0]["token"].strip()
    assert "projection" in page.locator("main").inner_text()
    screenshot(page, "dashboard-direction-vectors.png")
    page.close()
    assert len(res["directions"]) == 2


def test_cli_dashboard_with_vector_file(toy, tmp_path, monkeypatch):
    """``dashboard --stats S --directions v.safetensors`` projects over the cache the
    statistics record (the LM is a stand-in here) and writes one page per vector."""
    import json

    from cli_runner import cli_code
    from stats_fixture import write_stats

    import abstopk.analysis.latent_stats.directions as dirs

    _, cache, _, _, vecs = toy
    real = dirs.direction_records
    seen = {}

    def fake(directions, cache_dir, **kw):
        seen.update(cache=str(cache_dir), layer=kw.get("layer"))
        return real(directions, cache_dir, **{**kw, "lm": _LM(), "tokenizer": _Tok()})

    monkeypatch.setattr(dirs, "direction_records", fake)
    write_stats(tmp_path / "stats", n_random=1)
    ix = json.loads((tmp_path / "stats" / "index.json").read_text())
    ix["cache"] = {"path": str(cache)}
    (tmp_path / "stats" / "index.json").write_text(json.dumps(ix))
    f = save_directions(tmp_path / "v.safetensors", vecs, layer=3)
    assert cli_code(["dashboard", "--stats", tmp_path / "stats", "--directions", f,
                     "--out", tmp_path / "site"]) == 0
    assert seen == {"cache": str(cache), "layer": 3}
    assert len(list((tmp_path / "site" / "directions").glob("*.html"))) == 2
