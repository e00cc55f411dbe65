"""A real headless Chromium, driven by Selenium, against a `moncreneau run` process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from moncreneau.auth import keys
from moncreneau.db import make_engine, make_session_factory
from tests import services
from tests.e2e.conftest import call, pipeline_env
from tests.receiver import Receiver, start_receiver

CHROMIUM = os.environ.get("MONCRENEAU_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MONCRENEAU_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
# Set to a folder (docs/portal) to keep the screenshots the tests take.
SCREENSHOTS = os.environ.get("MONCRENEAU_SCREENSHOTS", "")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    "--lang=en-GB",
)


def _browser_problem() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A fresh headless Chromium with a profile of its own, quit after the test."""
    problem = _browser_problem()
    if problem:
        services.unavailable("Chromium", problem)
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    try:
        driver = webdriver.Chrome(
            service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")),
            options=options,
        )
    except WebDriverException as error:
        services.unavailable("Chromium", str(error).splitlines()[0])
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshot(browser: Any, tmp_path: Path) -> Any:
    """Save the page as a PNG: under MONCRENEAU_SCREENSHOTS if set, else with the test."""
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        path = folder / f"{name}.png"
        assert browser.save_screenshot(str(path)), path
        return path

    return take


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = start_receiver()
    yield rec
    rec.server.shutdown()


@dataclass
class Server:
    base: str
    env: dict[str, str]
    folder: Path

    def new_organization(self) -> str:
        """A new organization's API key: each test sees only its own webhooks."""
        engine = make_engine(self.env["DATABASE_URL"])
        try:
            with make_session_factory(engine)() as db:
                key: str = keys.create_organization(db, "Clinique")["apiKey"]
                db.commit()
        finally:
            engine.dispose()
        return key


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A `moncreneau run` process (SQLite, deliveries in process) for the module's tests.

    Failed attempts are retried an hour later, so every attempt a test sees is one it
    asked for.
    """
    folder = tmp_path_factory.mktemp("moncreneau-run")
    env = pipeline_env(f"sqlite:///{folder / 'moncreneau.db'}", None)
    env["MONCRENEAU_RETRY_SCHEDULE"] = "3600"
    with services.moncreneau_run(folder, env) as base:
        yield Server(base, env, folder)


@pytest.fixture
def server(running: Server, request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """The running server's address and a new organization's key."""
    yield running.base, running.new_organization()
    if getattr(request.node, "rep_call", None) and request.node.rep_call.failed:
        print((running.folder / "run.log").read_text(errors="replace")[-5000:])


def portal_link(base: str, key: str, read_only: bool = False) -> str:
    made = call(base, key, "POST", "/portal-links", {"expiresInMinutes": 30, "readOnly": read_only})
    url: str = made["url"]
    return url
