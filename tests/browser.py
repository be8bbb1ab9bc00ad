"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright.

Playwright cannot download its own browsers here, so it launches the system browser
(``executable_path=shutil.which("chromium")``). ``make test`` installs ``chromium`` through
apt (the Makefile's ``browser`` target); the tests skip only where apt is absent, and fail
with a clear message when apt is there but the browser was not installed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

#: screenshots kept as test artefacts (git-ignored)
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def chromium_path() -> str:
    exe = shutil.which("chromium")
    if exe:
        return exe
    if shutil.which("apt-get") is None:
        pytest.skip("headless Chromium is not installed and apt-get is absent on this machine, "
                    "so the browser tests cannot run (install Chromium to run them)")
    pytest.fail("chromium is missing: run `make browser` (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def browser():
    exe = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[dev]'")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield b
        b.close()


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot under tests/artifacts/ and print its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path
