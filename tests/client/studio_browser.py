"""What the studio's browser tests share: a real ``framecast serve`` on the built-in model, the studio
on it (in a thread of the test's process), and Debian's headless Chromium driven by Playwright.

Chromium is the system's (``/usr/bin/chromium``, which ``make test`` installs with apt-get where it is
missing): Playwright's own browser download is never used. Screenshots go to
``$FRAMECAST_STUDIO_SCREENSHOTS`` when it is set, else under the test's temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("FRAMECAST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]  # fmt: skip


@pytest.fixture(scope="module")
def framecast_server(tmp_path_factory):
    """``framecast serve`` on the built-in model, on a free loopback port."""
    from framecast.engine.model import builtin_model_dir
    from framecast.server.app import start_server
    from framecast.server.config import ServerConfig

    config = ServerConfig.build(model_dir=str(builtin_model_dir()), data_dir=str(tmp_path_factory.mktemp("studio-data")),
                                host="127.0.0.1", port=0)  # fmt: skip
    server = start_server(config)
    assert server.wait_ready(timeout=120), server.load_error
    yield server
    server.stop(grace=5)


@pytest.fixture(scope="module")
def studio(framecast_server, tmp_path_factory):
    """The studio's page on that server: its URL."""
    from framecast.client import FramecastClient
    from framecast.client.studio.app import make_app
    from framecast.client.studio.server import RunningStudio

    client = FramecastClient(f"127.0.0.1:{framecast_server.port}", timeout=60)
    running = RunningStudio(make_app(client, tmp_path_factory.mktemp("studio-cache")))
    yield running.url
    running.stop()
    client.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the studio's browser tests need Chromium at {CHROMIUM}: apt-get install chromium (make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser, studio):
    """A fresh page (its own storage) on the studio, at 1280 pixels wide."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(studio)
    page.wait_for_selector("body[data-ready='1']")
    yield page
    context.close()


@pytest.fixture()
def shots(tmp_path):
    """``shots(page, name, section=None)``: a screenshot ``name``.png of the whole page (or of the element
``section`` selects), where screenshots go."""
    folder = Path(os.environ.get("FRAMECAST_STUDIO_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)

    def take(page, name: str, section: str | None = None) -> Path:
        path = folder / f"{name}.png"
        if section is None:
            page.screenshot(path=str(path), full_page=True)
        else:
            page.locator(section).screenshot(path=str(path))
        return path

    take.folder = folder
    return take
