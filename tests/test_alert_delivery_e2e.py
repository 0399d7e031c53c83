"""Safety never waits on messaging (issue 13, item 4), made to fire against the simulator.

The alert e-mail goes to an SMTP server on 127.0.0.1 that accepts the connection and then
says nothing (a stalled mail relay). The alerter's channel timeout is an hour, so a loop that
waited on delivery would hang the test (and hit pytest's timeout) instead of passing: the
assertions below can only be reached if start-up, the first cycle, the circuit breaker and
its liquidation orders all went ahead while the e-mail was still stuck.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest
from structlog.testing import capture_logs

from alerter import Alerter
from tests.e2e_helpers import Simulator, make_run_paths, run_dir  # noqa: F401  (run_dir is a fixture)
from tests.test_e2e_safety_support import (
    WIDE_STOPS,
    ExternalDaemon,
    buy_by_hand,
    cycle,
    events,
    sim_get,
    sim_post,
    sim_stack,
)
from engine.trading_state import TradingState

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SESSION_START = "2025-03-04T10:30:00"
HELD = {"SPY": 0.21, "QQQ": 0.21, "AAPL": 0.21, "MSFT": 0.21}
AN_HOUR = 3600.0


class StallingSmtpServer:
    """Accepts TCP connections on 127.0.0.1 and never answers (no SMTP greeting)."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self.port = int(self._listener.getsockname()[1])
        self.connections: list[socket.socket] = []
        self.accepted = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self._listener.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def stalled_smtp() -> Iterator[StallingSmtpServer]:
    server = StallingSmtpServer()
    try:
        yield server
    finally:
        server.close()


async def _until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    """Yield to the event loop until ``predicate()`` holds (bounded by the test's timeout)."""
    while not predicate():
        await asyncio.sleep(0.01)


async def test_emergency_exit_and_first_cycle_never_wait_on_a_stalled_smtp_server(
        tmp_path: Path, stalled_smtp: StallingSmtpServer) -> None:
    environ = {
        "TRADING_ALERTS__EMAIL_ENABLED": "true", "TRADING_ALERTS__SMTP_HOST": "127.0.0.1",
        "TRADING_ALERTS__SMTP_PORT": str(stalled_smtp.port), "TRADING_ALERTS__SMTP_STARTTLS": "false",
        "TRADING_ALERTS__EMAIL_FROM": "daemon@example.test", "TRADING_ALERTS__EMAIL_TO": "oncall@example.test",
    }
    async with sim_stack(tmp_path, start=SESSION_START, overrides=WIDE_STOPS, environ=environ) as stack:
        alerter = Alerter(stack.settings.alerts, stack.clock, channel_timeout=AN_HOUR)
        alerter.attach_journal(stack.journal)
        stack.alerter = alerter
        system = stack.new_system()
        assert alerter.background, "the trading loop delivers alerts beside itself"
        try:
            await buy_by_hand(stack, HELD)
            with capture_logs() as logs:
                # Start-up finds four unprotected positions: a CRITICAL alert, mailed.
                assert await system.startup()
                await _until(stalled_smtp.accepted.is_set, "the SMTP connection")
                assert alerter.pending == 1, "the start-up e-mail is stuck at the SMTP server"
                # The first cycle runs while that e-mail is still stuck.
                await cycle(system)
                assert len(events(logs, "cycle_complete")) == 1
                assert alerter.pending == 1

                # A crash through the breaker: liquidation goes out with the e-mail still stuck.
                await stack.control("shock", {"symbols": "*", "pct": -8})
                await cycle(system)
            assert system.safety.state is TradingState.HALTED
            assert await stack.positions() == [] and await stack.open_orders() == []
            assert alerter.pending >= 2, "the start-up and breaker e-mails are still waiting"
            assert not events(logs, "alert_delivered")

            # The sell orders went out before the breaker's alert was even raised.
            names = [e["event"] for e in logs]
            sells = [i for i, e in enumerate(logs) if e["event"] == "order_submitted" and e.get("side") == "sell"
                     and e.get("strategy") != "protection"]
            breaker_alert = [i for i, e in enumerate(logs) if e["event"] == "alert"
                             and "CIRCUIT BREAKER" in e["title"]]
            assert sells and breaker_alert and max(sells) < breaker_alert[0], names
            assert logs[breaker_alert[0]]["queued"] == ["email"] and logs[breaker_alert[0]]["sent"] == ["console"]
            # Journaled when raised, whatever the e-mail's fate.
            assert any("CIRCUIT BREAKER" in a["title"] for a in stack.journal.alerts())

            # Shutdown gives the stuck deliveries a bounded flush, then abandons them (logged).
            with capture_logs() as logs:
                left = await alerter.drain(timeout=0.2)
            assert left >= 2 and alerter.pending == 0
            assert events(logs, "alert_delivery_abandoned")[0]["pending"] == left
        finally:
            await alerter.aclose(flush_timeout=0)


async def test_background_delivery_reaches_a_working_channel(tmp_path: Path) -> None:
    """Queued alerts are delivered by the sender task, most urgent first (an SMTP client
    double records what was sent)."""
    sent: list[str] = []

    class RecordingSmtp:
        def __init__(self, host: str, port: int, timeout: float) -> None: ...
        def ehlo(self, name: str = "") -> None: ...
        def starttls(self, *, context: object = None) -> None: ...
        def login(self, user: str, password: str) -> None: ...
        def send_message(self, msg: object) -> None:
            sent.append(str(msg["Subject"]))  # type: ignore[index]
        def quit(self) -> None: ...
        def close(self) -> None: ...

    environ = {"TRADING_ALERTS__EMAIL_ENABLED": "true", "TRADING_ALERTS__SMTP_HOST": "127.0.0.1",
               "TRADING_ALERTS__SMTP_STARTTLS": "false", "TRADING_ALERTS__EMAIL_FROM": "d@example.test",
               "TRADING_ALERTS__EMAIL_TO": "o@example.test"}
    async with sim_stack(tmp_path, start=SESSION_START, environ=environ) as stack:
        alerter = Alerter(stack.settings.alerts, stack.clock, smtp_factory=RecordingSmtp)
        alerter.deliver_in_background()
        with capture_logs() as logs:
            outcome = await alerter.send("critical", "raised first", "", key="a")
            await alerter.send("emergency", "more urgent", "", key="b")
            assert outcome.queued == ["email"] and not outcome.failed
            assert await alerter.drain(timeout=30) == 0
        # Both were waiting when the sender started: the most urgent went out first.
        assert sent == ["[EMERGENCY] more urgent", "[CRITICAL] raised first"]
        assert [e["title"] for e in events(logs, "alert_delivered")] == ["more urgent", "raised first"]
        await alerter.aclose()


def test_the_daemon_trades_on_while_a_stalled_smtp_server_holds_its_alerts(
        run_dir: Path, stalled_smtp: StallingSmtpServer) -> None:
    """``main.main()`` against an external simulator: the start-up alert (two unprotected
    positions, CRITICAL, mailed) is stuck at the SMTP server while the daemon protects the
    positions and completes cycles; SIGTERM then ends it with the stuck alert abandoned after
    a bounded flush. The order of the log lines is the proof: every cycle below is logged
    before the e-mail's 10 s channel timeout could have let a waiting loop go on."""
    with Simulator(run_dir, ["--speed", "max", "--symbols", "SPY,AAPL,MSFT", "--seed", "7",
                             "--start", "2025-03-04T10:30:00", "--no-rate-limit"]) as sim:
        for symbol, qty in {"AAPL": 50, "MSFT": 20}.items():
            order = sim_post(sim.url, "/v2/orders", {"symbol": symbol, "qty": str(qty), "side": "buy",
                                                     "type": "market", "time_in_force": "day",
                                                     "client_order_id": f"hand-{symbol}"})
            assert sim_get(sim.url, f"/v2/orders/{order['id']}")["status"] == "filled"
        env = {
            "TRADING_ALERTS__EMAIL_ENABLED": "true", "TRADING_ALERTS__SMTP_HOST": "127.0.0.1",
            "TRADING_ALERTS__SMTP_PORT": str(stalled_smtp.port), "TRADING_ALERTS__SMTP_STARTTLS": "false",
            "TRADING_ALERTS__EMAIL_FROM": "daemon@example.test", "TRADING_ALERTS__EMAIL_TO": "oncall@example.test",
        }
        paths = make_run_paths(run_dir, "daemon")
        daemon = ExternalDaemon(sim.url, ["--symbols", "SPY,AAPL,MSFT"], paths, env=env)
        try:
            daemon.wait_for("alert", lambda e: "STARTUP ALERT" in e["title"], timeout=60)
            assert stalled_smtp.accepted.wait(30), "the daemon's e-mail reached the SMTP server"
            daemon.wait_until(lambda: [e["event"] for e in daemon.events()].count("cycle_complete") >= 3,
                              timeout=60, what="three cycles")
            code = daemon.stop()
        finally:
            daemon.kill()
    assert code == 0
    events = daemon.events()
    names = [e["event"] for e in events]
    startup = next(e for e in events if e["event"] == "alert" and "STARTUP ALERT" in e["title"])
    assert startup["queued"] == ["email"]
    assert names.count("position_protected") == 2
    first_cycle = names.index("cycle_complete")
    delivery_ended = [i for i, n in enumerate(names) if n in ("alert_delivered", "alert_delivery_failed")]
    assert not delivery_ended or first_cycle < delivery_ended[0], "the first cycle did not wait on SMTP"
    assert "alert_delivery_abandoned" in names or delivery_ended
    assert "system_shutdown" in names
