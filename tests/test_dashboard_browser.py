"""The live dashboard in a real browser (issue 16, item 1): headless Chromium from the system's
packages, driven by Playwright, against ``python main.py`` in SIM mode.

The page must load without a console error, show the equity ``/metrics`` exports, and follow
the simulator as it moves (market clock, a position bought, the decisions that led to it)
without a reload.

Chromium comes from Debian (``apt-get install chromium``); Playwright's own browser download
is never used. Locally, without ``/usr/bin/chromium`` or the ``playwright`` package, the test
is skipped with the reason; under CI (``CI`` set, as ``.ci/run`` does) it fails instead, so
the dashboard can never go untested there.
"""

from __future__ import annotations

import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e_helpers import HOLDING_ARGS, HOLDING_ENV, Daemon, make_run_paths, run_dir  # noqa: F401

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.e2e


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the browser test (.ci/run installs chromium with apt-get)")
    pytest.skip(f"{reason}; install it with `apt-get install -y chromium` (and requirements-dev.txt)")


def _sync_playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed")
    if not CHROMIUM.exists():
        _missing(f"no Chromium at {CHROMIUM}")
    return sync_playwright


def _metric(base: str, name: str) -> float | None:
    with urllib.request.urlopen(base + "metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def test_the_dashboard_loads_clean_matches_metrics_and_follows_the_simulator(run_dir: Path) -> None:  # noqa: F811
    sync_playwright = _sync_playwright()
    paths = make_run_paths(run_dir)
    with Daemon([*HOLDING_ARGS, "--http", "0"], paths, env=HOLDING_ENV) as daemon:
        url = daemon.wait_for("http_server_started", timeout=60)["url"]
        daemon.wait_for("cycle_complete", timeout=60)
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                _check_page(browser, url, daemon)
            finally:
                browser.close()


def _wait_until(page: Any, what: str, check: Any, timeout: float = 20.0) -> None:
    """Poll ``check()`` from Python (the page's CSP forbids the string eval that Playwright's
    wait_for_function uses, and it must stay on: a CSP violation is a console error)."""
    for _ in range(int(timeout * 10)):
        if check():
            return
        page.wait_for_timeout(100)
    pytest.fail(f"the dashboard never showed {what}")


def _check_page(browser: Any, url: str, daemon: Daemon) -> None:
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
            if msg.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url}")
            if not req.url.endswith("/events") else None)
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    page.goto(url, wait_until="load")
    _wait_until(page, "an equity", lambda: bool(page.get_attribute("#equity", "data-value")))
    page.evaluate("window.__loadMarker = 'first load'")

    # the same equity as /metrics (both move with the market: read until one reading agrees)
    agreed = None
    for _ in range(100):
        shown = page.get_attribute("#equity", "data-value")
        exported = _metric(url, "trading_equity_dollars")
        if shown and exported is not None and abs(float(shown) - exported) < 0.005:
            agreed = (shown, exported)
            break
        page.wait_for_timeout(100)
    assert agreed is not None, f"page equity {shown!r} never matched /metrics {exported!r}"
    assert "$" in page.inner_text("#equity")

    # the simulator moves: the market clock advances, NVDA is bought under its bracket and
    # shows in the positions (with its protection) and decisions, all without a reload
    first_clock = page.inner_text("#market-time")
    daemon.wait_for("cycle_complete", lambda e: e["positions"] >= 1, timeout=60)
    _wait_until(page, "the NVDA position", lambda: "NVDA" in page.inner_text("#positions tbody"))
    _wait_until(page, "the market clock move", lambda: page.inner_text("#market-time") != first_clock)
    assert "protected" in page.inner_text("#positions tbody").lower()
    decisions = page.inner_text("#decisions tbody")
    assert "NVDA" in decisions and "order_submitted" in decisions
    assert page.inner_text("#health") in ("ok", "degraded")
    assert page.evaluate("window.__loadMarker") == "first load", "the page reloaded"
    assert len(navigations) == 1, navigations
    assert problems == [], problems


def test_with_a_token_the_dashboard_opened_with_it_works_and_without_it_shows_no_data(run_dir: Path) -> None:  # noqa: F811
    sync_playwright = _sync_playwright()
    token = "browser-test-token-0123456789"
    paths = make_run_paths(run_dir)
    with Daemon(["--http", "0", "--symbols", "SPY"], paths, env={"TRADING_HTTP_TOKEN": token}) as daemon:
        url = daemon.wait_for("http_server_started", timeout=60)["url"]
        daemon.wait_for("cycle_complete", timeout=60)
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(url + "?token=" + token, wait_until="load")
                _wait_until(page, "an equity", lambda: bool(page.get_attribute("#equity", "data-value")))
                assert errors == []
                stranger = browser.new_page()
                stranger.goto(url, wait_until="load")
                stranger.wait_for_timeout(1500)
                assert stranger.get_attribute("#equity", "data-value") == ""
                assert "reconnecting" in stranger.inner_text("#connection")
            finally:
                browser.close()
        assert token not in daemon.stdout() and token not in paths.log_file.read_text()
