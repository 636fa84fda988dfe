"""A real browser for the playground: Debian's Chromium, driven by Playwright's Python API.

Playwright's own browser download needs the internet, so the browser is the
system's ``chromium`` (``.ci/run`` installs it with apt; ``EASEL_CHROMIUM``
names another). Without one the tests are skipped, except in CI (``CI`` set),
where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

# Headless on a machine with no display, no GPU and no network beyond loopback.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    return os.environ.get("EASEL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


# Module scope: Playwright's sync API keeps an event loop running in this thread while it is open, and the
# tests of other modules that call asyncio.run() must not find it there.
@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    executable = chromium_path()
    if executable is None:
        message = "no chromium on PATH (apt-get install chromium, or set EASEL_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    profile: Path = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport={"width": 1200, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()
