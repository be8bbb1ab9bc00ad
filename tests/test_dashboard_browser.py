"""The dashboard in a real headless Chromium (file:// pages, as a user opens them).

The check :func:`check_latent_page` reads the rendered text of a latent page and asserts that
its strongest positive and strongest negative contexts are shown (value and highlighted focus
token, on the right side); a page built without its negative contexts must fail it.
"""

from __future__ import annotations

import json

import pytest
from browser import browser, screenshot  # noqa: F401  (fixture)
from stats_fixture import direction, write_stats

from abstopk.report.dashboard import build_site
from abstopk.report.html import fmt_signed


def _visible(tok: str) -> str:
    return tok.replace("\n", "⏎").strip()


def check_latent_page(page, lat: dict) -> None:
    """Assert the rendered page shows the strongest + and − contexts of ``lat``."""
    for side, key in (("#top-pos", "top_pos"), ("#top-neg", "top_neg")):
        ex = lat[key][0]
        ctx = page.locator(f"{side} .ctx").first
        assert page.locator(f"{side} .ctx").count() >= 1, f"{side}: no contexts shown"
        assert ctx.is_visible(), f"{side}: first context not visible"
        text = ctx.inner_text()
        assert fmt_signed(ex["value"]) in text, f"{side}: value {ex['value']} not in {text!r}"
        mark = ctx.locator("mark").inner_text()
        assert _visible(mark) == _visible(ex["tokens"][ex["focus"]]), f"{side}: focus token"
        sign = "pos" if key == "top_pos" else "neg"
        assert sign in (ctx.get_attribute("class") or ""), f"{side}: wrong sign colour"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("dash")
    data = write_stats(root / "stats", n_random=12)
    build_site(root / "stats", root / "site", directions=[direction()])
    return root, data


def test_latent_page_shows_strongest_contexts(browser, site):  # noqa: F811
    root, data = site
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto((root / "site" / "latents" / "000000.html").as_uri())
    check_latent_page(page, data["latents"][0])
    # both sides are side by side: the negative column left of the positive one
    neg_box = page.locator("#side-neg").bounding_box()
    pos_box = page.locator("#side-pos").bounding_box()
    assert neg_box["x"] + neg_box["width"] <= pos_box["x"] + 1
    assert abs(neg_box["y"] - pos_box["y"]) < 2
    # markup in tokens is shown as text, not interpreted
    assert page.locator("#top-pos b, #top-neg b, #quantiles b").count() == 0
    assert "man <-> woman" in page.locator("#explanation").inner_text()
    screenshot(page, "dashboard-latent-000000.png")
    page.close()


def test_check_fails_without_negative_contexts(browser, site, tmp_path):  # noqa: F811
    root, data = site
    lat = data["latents"][0]
    stripped = tmp_path / "stats"
    stripped.mkdir()
    (stripped / "latents").mkdir()
    (stripped / "index.json").write_text((root / "stats" / "index.json").read_text())
    (stripped / "latents" / "000000.json").write_text(json.dumps({**lat, "top_neg": []}))
    build_site(stripped, tmp_path / "site")
    page = browser.new_page()
    page.goto((tmp_path / "site" / "latents" / "000000.html").as_uri())
    with pytest.raises(AssertionError, match="#top-neg"):
        check_latent_page(page, lat)
    page.close()


def _rows(page) -> list[int]:
    return [int(x) for x in page.locator("#latents tbody tr").evaluate_all(
        "rs => rs.map(r => r.dataset.index)")]


def test_index_search_sort_filter(browser, site):  # noqa: F811
    root, data = site
    rows = data["index"]["latents"]
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.goto((root / "site" / "index.html").as_uri())
    assert _rows(page) == [r["index"] for r in rows]
    assert page.locator("#count").inner_text().startswith(f"{len(rows)} of {len(rows)}")
    # sort by bidirectionality score: descending, unscored last
    page.select_option("#sort", "bidir")
    scored = sorted((r for r in rows if r["bidir_score"] is not None),
                    key=lambda r: (-r["bidir_score"], r["index"]))
    assert _rows(page)[:len(scored)] == [r["index"] for r in scored]
    page.select_option("#sort", "freq")
    by_freq = sorted(rows, key=lambda r: (-(r["freq_pos"] + r["freq_neg"]), r["index"]))
    assert _rows(page) == [r["index"] for r in by_freq]
    # search: a latent number, then words of an explanation
    page.fill("#search", "5")
    assert 5 in _rows(page)
    page.fill("#search", "man <-> woman")
    assert _rows(page) == [0]
    # filter by label
    page.fill("#search", "")
    page.select_option("#label", "dead")
    assert _rows(page) == [r["index"] for r in rows if r["label"] == "dead"]
    page.select_option("#label", "all")
    # links open the latent page and the direction page
    page.select_option("#sort", "index")
    page.click("#latents tbody tr:first-child a")
    page.wait_for_url("**/latents/000000.html")
    check_latent_page(page, data["latents"][0])
    page.goto((root / "site" / "index.html").as_uri())
    page.click("#directions a")
    d = direction()
    assert fmt_signed(d["top_neg"][0]["value"]) in page.locator("#top-neg .ctx").first.inner_text()
    screenshot(page, "dashboard-direction.png")
    page.close()


def test_index_filters_latents_with_minimal_pairs(browser, site):  # noqa: F811
    root, data = site
    rows = data["index"]["latents"]
    with_pairs = [r["index"] for r in rows
                  if (data["latents"].get(r["index"]) or {}).get("minimal_pairs")]
    assert 0 < len(with_pairs) < len(rows)
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.goto((root / "site" / "index.html").as_uri())
    page.check("#pairs-only")
    assert _rows(page) == with_pairs
    page.uncheck("#pairs-only")
    page.select_option("#sort", "pairs")
    assert set(_rows(page)[:len(with_pairs)]) == set(with_pairs)
    page.close()
