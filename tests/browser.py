"""Driving a real browser: the system Chromium through Playwright (its own download does not work
offline). `make test` installs both where it can; where it cannot, the tests that need them skip
and the run ends with a loud section naming every browser check that did not run (conftest.py)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

ARTIFACTS = Path(os.environ.get("IMGEXTRACT_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def available() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return chromium_path() is not None


REASON = "BROWSER CHECK NOT RUN: no Chromium/Playwright here (make test installs chromium with apt-get)"
MISSED: list[str] = []   # pages whose browser check could not run, for the session's closing summary
required = pytest.mark.skipif(not available(), reason=REASON)


def check_page_if_available(path: Path, screenshot: str | None = None):
    """The browser check of a page a longer test produced, or a recorded miss (reported loudly at the end)."""
    if not available():
        MISSED.append(str(path))
        return None
    return check_page(path, screenshot)


class PageCheck:
    """A page opened from disk, with the console errors and timings it produced."""

    def __init__(self, browser, path: Path, viewport=(1280, 900)):
        self.errors: list[str] = []
        self.page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        t0 = time.perf_counter()
        self.page.goto(path.resolve().as_uri(), wait_until="load")
        self.load_seconds = time.perf_counter() - t0

    def all_images_decode(self) -> tuple[int, list[str]]:
        """Force lazy images to load, then list those that did not decode."""
        self.page.evaluate("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
        self.page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=120_000)
        bad = self.page.evaluate("Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src)")
        return self.page.evaluate("document.images.length"), bad

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        out = ARTIFACTS / name
        self.page.screenshot(path=str(out))
        return out


def open_browser(playwright):
    return playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])


def check_page(path: Path, screenshot: str | None = None) -> PageCheck:
    """Open a page, assert no console error and every image decodes; returns the check (closed)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = open_browser(p)
        try:
            check = PageCheck(browser, path)
            n, bad = check.all_images_decode()
            assert not check.errors, check.errors
            assert not bad, bad[:5]
            wide = check.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert wide <= 1, f"{path.name} runs {wide} px past the window: text or a table does not wrap"
            check.images = n
            if screenshot:
                check.screenshot(screenshot)
        finally:
            browser.close()
    return check
