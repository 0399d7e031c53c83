"""Truthful reports (issue 16, item 4): every ``diagnose`` line checks something real, and the
shutdown summary says "unknown" when the broker could not be asked. Against the simulator over
HTTP on 127.0.0.1, made to misbehave where a check must FAIL."""

from __future__ import annotations

import socket
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from core.clock import WallClock
from journal.journal import Journal
from ops.diagnostics import diagnose
from tests.test_e2e_safety_support import WIDE_STOPS, buy_by_hand, cycle, sim_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SESSION_START = "2025-03-04T10:30:00"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Quiet:
    """An SMTP server that accepts connections and counts messages (there must be none)."""

    def __init__(self) -> None:
        self.messages = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages += 1
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[_Quiet, int]]:
    handler, port = _Quiet(), _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def verdicts(report: Any) -> dict[str, tuple[str, str]]:
    return {c.name: (c.verdict, c.detail) for c in report.checks}


async def test_diagnose_checks_channels_state_db_skew_and_rate_for_real(
        tmp_path: Path, smtp_server: tuple[_Quiet, int]) -> None:
    handler, smtp_port = smtp_server
    hits: list[str] = []

    async def webhook(request: web.Request) -> web.Response:
        hits.append(request.method)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_route("*", "/hook", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    overrides = {"alerts.webhook_url": f"http://127.0.0.1:{port}/hook", "alerts.email_enabled": True,
                 "alerts.smtp_host": "127.0.0.1", "alerts.smtp_port": smtp_port, "alerts.smtp_starttls": False,
                 "alerts.email_from": "bot@example.com", "alerts.email_to": ["me@example.com"]}
    try:
        async with sim_stack(tmp_path, start=SESSION_START, overrides=overrides) as stack:
            stack.journal.set_state("probe", {"ok": True})  # a state db exists
            report = await diagnose(stack.settings, stack.gateway, stack.clock, stack.url)
            checks = verdicts(report)
            assert report.healthy, report.render()
            assert checks["configuration"][0] == "PASS" and "cross-field rule" in checks["configuration"][1]
            assert checks["state db"] == ("PASS", checks["state db"][1]) and "integrity ok" in checks["state db"][1]
            assert checks["alert channels"][0] == "PASS"
            assert "webhook 127.0.0.1" in checks["alert channels"][1] and "email 127.0.0.1" in checks["alert channels"][1]
            assert checks["clock skew"][0] == "PASS"
            assert checks["rate budget"][0] == "PASS" and "tokens now" in checks["rate budget"][1]
            assert hits == [] and handler.messages == 0, "a check must not send an alert"

            # Now everything goes wrong at once.
            stack.settings.risk.emergency_exit_loss = 0.01  # below the stop: a broken rule in memory
            stack.settings.alerts.webhook_url = f"http://127.0.0.1:{_free_port()}/hook"
            stack.journal.close()
            Path(stack.settings.storage.state_db).write_bytes(b"this is not a sqlite database" * 200)
            await stack.control("faults", {"spec": "rate_limit=1.0,endpoints=/v2/orders*"})

            class SkewedWallClock(WallClock):
                """The host's clock 45 s ahead of the broker's."""

                def now(self) -> datetime:
                    from datetime import timedelta
                    return stack.clock.now() + timedelta(seconds=45)

            report = await diagnose(stack.settings, stack.gateway, SkewedWallClock(), stack.url)
            checks = verdicts(report)
            await stack.control("faults", {"spec": ""})
            # a sound journal again for the stack's own teardown
            Path(stack.settings.storage.state_db).unlink()
            stack.journal = Journal(stack.settings.storage.state_db)
        assert not report.healthy
        assert checks["configuration"][0] == "FAIL" and "emergency_exit_loss" in checks["configuration"][1]
        assert checks["state db"][0] == "FAIL"
        assert checks["risk systems"][0] == "FAIL"
        assert checks["alert channels"][0] == "FAIL" and "webhook UNREACHABLE" in checks["alert channels"][1]
        assert checks["clock skew"][0] == "FAIL" and "-45" in checks["clock skew"][1]
        assert checks["rate budget"][0] == "FAIL" and "429" in checks["rate budget"][1]
    finally:
        await runner.cleanup()


async def test_shutdown_summary_says_unknown_when_the_broker_cannot_be_reached(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start=SESSION_START, overrides=WIDE_STOPS) as stack:
        system = stack.new_system()
        await buy_by_hand(stack, {"AAPL": 0.1})
        await system.startup()
        await cycle(system)
        await stack.take_broker_offline()
        system.stop_event.set()
        await system.shutdown()
        await stack.bring_broker_back()
    assert system.summary.open_positions is None and system.summary.protected_positions is None
    assert "open positions    unknown" in system.summary.render()
    assert system.summary.to_dict()["open_positions"] is None


async def test_shutdown_summary_counts_positions_when_the_broker_answers(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start=SESSION_START, overrides=WIDE_STOPS) as stack:
        system = stack.new_system()
        await buy_by_hand(stack, {"AAPL": 0.1})
        await system.startup()
        await cycle(system)
        system.stop_event.set()
        await system.shutdown()
    assert (system.summary.open_positions, system.summary.protected_positions) == (1, 1)
    assert "open positions    1 (1 protected)" in system.summary.render()
    # stopped inside the regular session it traded: the summary says so, and counts what it counts
    assert system.summary.sessions == 0 and system.summary.session_in_progress
    assert "sessions traded   0 (+1 in progress at shutdown)" in system.summary.render()
    assert "entry orders      0 (exits, protection and emergency orders not counted)" in system.summary.render()
