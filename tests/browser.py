"""Headless Chromium for the page tests: Debian's `chromium` driven by Playwright, nothing downloaded at run time.

`open_page(path)` loads a local file and records what a person's browser would show as wrong: console errors, page
errors and any request that leaves the file (a self-contained page makes none). With no Chromium on the machine the
page tests are skipped (reported as skipped, never as passed), unless `EOSGUARD_REQUIRE_BROWSER=1` (set by `.ci/run`),
where a missing browser is a failure.

Run as:
    python -m pytest tests/recipes/test_pages.py -q
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).parent / "artifacts"  # screenshots kept after the run (git-ignored)
CHROMIUM_FLAGS = [  # as root, in a closed network: no sandbox, no background connections to Google's hosts
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


@dataclass
class Visit:
    page: Any
    console_errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)


@pytest.fixture(scope="session")
def browser():
    path = chromium_path()
    if path is None:
        if os.environ.get("EOSGUARD_REQUIRE_BROWSER") == "1":
            pytest.fail("EOSGUARD_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install -y chromium)")
        pytest.skip("no chromium on PATH: the page tests need Debian's chromium (apt-get install -y chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def open_page(browser):
    contexts = []

    def visit(path: Path, width: int = 1400) -> Visit:
        context = browser.new_context(viewport={"width": width, "height": 1000})
        contexts.append(context)
        page = context.new_page()
        v = Visit(page)
        page.on("console", lambda m: v.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: v.console_errors.append(str(exc)))
        page.on(
            "request",
            lambda r: None if r.url.startswith(("file:", "data:", "about:")) else v.external_requests.append(r.url),
        )
        page.goto(path.resolve().as_uri())
        page.wait_for_load_state("load")
        return v

    yield visit
    for c in contexts:
        c.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / name
    page.screenshot(path=str(out))
    return out
