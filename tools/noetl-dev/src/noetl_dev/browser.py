"""Headless Chromium for the run inspector's browser test and bench: Debian's ``chromium``
package driven by Playwright (a dev dependency) with ``executable_path``, so no browser is
downloaded. ``make test`` and ``.ci/run`` install the package (``make browser``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: where Debian puts it; NOETL_CHROMIUM overrides
_CANDIDATES = ("chromium", "chromium-browser")


def chromium_path() -> str:
    """The Chromium binary, or an error that says how to install it."""
    configured = os.environ.get("NOETL_CHROMIUM")
    found = configured or next((p for p in map(shutil.which, _CANDIDATES) if p), None)
    if not found:
        raise RuntimeError("no chromium on PATH: `make browser` (apt-get install chromium) or set NOETL_CHROMIUM")
    return found


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (Playwright's ``Browser``), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        # --no-sandbox: CI and the dev machines run as root, where Chromium's sandbox refuses to start
        browser = driver.chromium.launch(executable_path=chromium_path(), headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()
