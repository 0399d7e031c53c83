"""The daemon's HTTP endpoint (issue 16, item 1): /health states, /metrics content, the token,
the loopback guard, ``--http`` parsing, ``--http off`` and a taken port.

Health is driven with an injected wall clock and a stand-in for the TradingSystem (the state
the endpoint reads: safety machine, journal's last cycle, market status, clock, settings), so
"stale" is reached without waiting; the HTTP tests talk real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

import config
import main
from ops.daemon_http import DaemonHttp, start_endpoint
from ops.health import LOOP_MAX_BACKOFF_SECONDS, health
from ops.http_server import HttpServer
from ops.metrics import DaemonMetrics, endpoint_label
from ops.telemetry import Telemetry, install_log_tap

TOKEN = "tok-" + "s3cr3t-value-for-tests"
NOW = datetime(2026, 1, 5, 15, 0, tzinfo=timezone.utc)


class FakeWall:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeClock:
    speed = 1.0

    def __init__(self) -> None:
        self.at = NOW

    def now(self) -> datetime:
        return self.at


@dataclass
class FakeSafety:
    state: Any = field(default_factory=lambda: SimpleNamespace(value="active"))
    state_reason: str = "initial state"
    latched: bool = False
    latch_kind: str | None = None
    latch_reason: str | None = None
    session_start_equity: Decimal | None = Decimal("100000")


class FakeJournal:
    def __init__(self) -> None:
        self.last: dict[str, Any] | None = None

    def get_last_cycle(self) -> dict[str, Any] | None:
        return self.last

    def equity_curve(self, since: datetime | None = None) -> list[tuple[datetime, Decimal]]:
        return [(NOW - timedelta(minutes=5), Decimal("99990")), (NOW - timedelta(minutes=1), Decimal("100000"))]


def fake_system() -> SimpleNamespace:
    settings = SimpleNamespace(trading=SimpleNamespace(cycle_interval_seconds=60))
    return SimpleNamespace(settings=settings, safety=FakeSafety(), journal=FakeJournal(),
                           market_status=SimpleNamespace(current=None), clock=FakeClock(),
                           broker=SimpleNamespace(rate_limiter=None))


def cycle(telemetry: Telemetry, equity: str = "100000", **extra: Any) -> None:
    telemetry.on_event("cycle_complete", "info", {"market_time": NOW.isoformat(), "duration_ms": 42.0,
                                                  "phase": "regular", "equity": equity, "positions": 0,
                                                  "open_orders": 0, "unprotected": [], "state": "active",
                                                  **extra})


@pytest.fixture
def wired() -> tuple[Telemetry, FakeWall, SimpleNamespace]:
    wall = FakeWall()
    telemetry = Telemetry(wall=wall)
    system = fake_system()
    telemetry.attach(system)
    return telemetry, wall, system


# -- /health ------------------------------------------------------------------------------


def test_health_is_ok_after_a_cycle_and_stale_when_the_loop_stops_turning(wired: Any) -> None:
    telemetry, wall, _system = wired
    cycle(telemetry)
    wall.t += 5
    code, body = health(telemetry, stale_after_seconds=30)
    assert (code, body["status"]) == (200, "ok"), body
    assert body["trading_state"] == "active" and body["last_cycle_age_s"] == 5.0
    assert body["broker"] == "unknown" and body["stream"] == "polling"
    # 60 s cycles at 1x: three intervals (180 s) without a sign of life is stale
    wall.t += 170
    assert health(telemetry, stale_after_seconds=30)[1]["status"] == "ok"
    wall.t += 20
    code, body = health(telemetry, stale_after_seconds=30)
    assert (code, body["status"]) == (503, "stale")
    assert "no sign of life" in body["reasons"][0]
    cycle(telemetry)  # the loop turns again
    assert health(telemetry, stale_after_seconds=30)[0] == 200


def test_health_is_degraded_with_reasons_when_the_broker_fails_or_trading_is_not_active(wired: Any) -> None:
    telemetry, wall, system = wired
    cycle(telemetry)
    telemetry.on_broker_exchange("GET", "/v2/account", 0, {})
    code, body = health(telemetry)
    assert (code, body["status"], body["broker"]) == (200, "degraded", "unreachable")
    telemetry.on_broker_exchange("GET", "/v2/account", 200, {})
    assert health(telemetry)[1]["status"] == "ok"
    system.safety = FakeSafety(state=SimpleNamespace(value="halted"), latched=True, latch_kind="circuit_breaker",
                               latch_reason="daily loss 3.1% > 3%")
    code, body = health(telemetry)
    assert (code, body["status"], body["trading_state"]) == (200, "degraded", "halted")
    assert any("daily loss" in r for r in body["reasons"])
    telemetry.set_stream_status(lambda: "reconnecting")
    assert health(telemetry)[1]["stream"] == "reconnecting"
    system.journal.get_last_cycle = lambda: 1 / 0  # a state the endpoint cannot read
    code, body = health(telemetry)
    assert (code, body["status"]) == (200, "degraded") and any("ZeroDivisionError" in r for r in body["reasons"])


def test_a_stream_status_on_the_loop_or_its_broker_is_what_health_reports() -> None:
    import enum

    class StreamState(enum.Enum):
        CONNECTED = "connected"
        DOWN = "disconnected"

    system = fake_system()
    system.broker.stream_status = StreamState.CONNECTED  # an attribute on the broker
    telemetry = Telemetry()
    telemetry.attach(system)
    cycle(telemetry)
    assert health(telemetry)[1]["stream"] == "connected"
    system.broker.stream_status = StreamState.DOWN
    code, body = health(telemetry)
    assert (code, body["status"], body["stream"]) == (200, "degraded", "disconnected")
    system.stream_status = lambda: "polling"  # a method on the loop wins
    telemetry.attach(system)
    assert health(telemetry)[1]["stream"] == "polling"


def test_a_failing_broker_backoff_is_degraded_not_stale(wired: Any) -> None:
    """The loop waits up to 300 s between attempts on purpose: a watchdog must not restart it."""
    telemetry, wall, _system = wired
    cycle(telemetry)
    telemetry.on_event("broker_unavailable", "warning", {"error": "connection refused"})
    wall.t += 250
    code, body = health(telemetry)
    assert (code, body["status"]) == (200, "degraded")
    wall.t += LOOP_MAX_BACKOFF_SECONDS
    assert health(telemetry)[0] == 503


def test_sleeping_through_a_closed_market_is_not_stale_until_the_wake_up_is_overdue(wired: Any) -> None:
    telemetry, wall, system = wired
    cycle(telemetry)
    wake = NOW + timedelta(hours=17)
    telemetry.on_event("market_countdown", "info", {"waiting_for": "pre", "target": wake.isoformat()})
    wall.t += 10 * 3600  # ten hours of wall time without a cycle: the market is closed
    system.clock.at = NOW + timedelta(hours=10)
    code, body = health(telemetry)
    assert (code, body["status"]) == (200, "ok"), body
    assert body["sleeping_until"] == wake.isoformat() and body["last_cycle_age_s"] == 36000.0
    system.clock.at = wake + timedelta(minutes=4)  # three 60 s intervals past the wake-up
    assert health(telemetry)[1]["status"] == "stale"


def test_at_simulator_speed_the_cadence_is_the_interval_in_wall_time(wired: Any) -> None:
    telemetry, wall, system = wired
    system.clock.speed = 300.0  # 60 s cycles are 0.2 s of wall time: the floor decides
    cycle(telemetry)
    wall.t += 29
    assert health(telemetry, stale_after_seconds=30)[1]["status"] == "ok"
    wall.t += 2
    assert health(telemetry, stale_after_seconds=30)[1]["status"] == "stale"


# -- /metrics -----------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_follow_the_loops_events_and_the_brokers_answers(wired: Any) -> None:
    telemetry, wall, system = wired
    assert [e for _, e in telemetry.curve] == ["99990", "100000"]  # the session so far, from the journal
    system.journal.last = {"at": NOW.isoformat(), "data": {
        "at": NOW.isoformat(), "equity": "100250.5", "positions": 2, "open_orders": 1,
        "position_details": [{"symbol": "NVDA", "qty": "10", "unrealized_pl": "12.5", "stop": "120",
                              "protected": True},
                             {"symbol": "SPY", "qty": "3", "unrealized_pl": "-4", "stop": None,
                              "protected": False}],
        "order_details": [{"symbol": "NVDA", "side": "sell", "type": "stop", "qty": "10", "status": "new",
                           "client_order_id": "x"}]}}
    cycle(telemetry, equity="100250.5", duration_ms=1500.0)
    events = [("order_submitted", {"side": "buy", "order_class": "bracket", "symbol": "NVDA"}),
              ("order_submitted", {"side": "sell", "emergency": True, "symbol": "SPY"}),
              ("order_filled", {"side": "buy", "symbol": "NVDA"}),
              ("order_partially_filled", {"side": "sell", "symbol": "SPY"}),
              ("alert", {"alert_level": "critical", "title": "Circuit breaker", "message": "tripped"}),
              ("alert", {"alert_level": "info", "title": "x", "throttled": True}),
              ("risk_veto", {"symbol": "AAPL", "check": "max_positions", "reason": "full"}),
              ("signal", {"symbol": "AAPL", "action": "hold"}),
              ("signal", {"symbol": "AAPL", "action": "buy", "strategy": "breakout", "confidence": 0.7})]
    for name, fields in events:
        telemetry.on_event(name, "info", fields)
    for path, status in [("/v2/orders/8f1e2d3c-0000-4000-8000-123456789012", 200),
                         ("/v2/orders/0b7a9c1e-0000-4000-8000-123456789012", 200),
                         ("/v2/positions/NVDA", 404), ("/v2/account", 0)]:
        telemetry.on_broker_exchange("GET", path, status, {"X-RateLimit-Remaining": "57"})
    telemetry.refresh()
    got = samples(telemetry.metrics.render().decode())
    assert got[("trading_equity_dollars", ())] == 100250.5
    assert got[("trading_session_pnl_dollars", ())] == 250.5
    assert got[("trading_cycle_duration_seconds_count", ())] == 1
    assert got[("trading_cycle_duration_seconds_bucket", (("le", "2.5"),))] == 1
    assert got[("trading_cycle_duration_seconds_bucket", (("le", "1.0"),))] == 0
    assert got[("trading_orders_submitted_total", (("kind", "bracket"), ("side", "buy")))] == 1
    assert got[("trading_orders_submitted_total", (("kind", "emergency"), ("side", "sell")))] == 1
    assert got[("trading_fills_total", (("side", "buy"),))] == 1
    assert got[("trading_fills_total", (("side", "sell"),))] == 1
    assert got[("trading_broker_requests_total", (("endpoint", "/v2/orders/{id}"), ("status", "200")))] == 2
    assert got[("trading_broker_requests_total", (("endpoint", "/v2/positions/{id}"), ("status", "404")))] == 1
    assert got[("trading_broker_requests_total", (("endpoint", "/v2/account"), ("status", "0")))] == 1
    assert got[("trading_state", ())] == 0
    assert ("process_resident_memory_bytes", ()) in got  # a daemon that runs for weeks
    assert got[("trading_positions", ())] == 2 and got[("trading_unprotected_positions", ())] == 1
    assert got[("trading_open_orders", ())] == 1
    assert got[("trading_rate_limit_remaining", ())] == 57
    assert got[("trading_alerts_total", (("level", "critical"),))] == 1  # the throttled one is not counted
    assert got[("trading_risk_vetoes_total", ())] == 1 and got[("trading_signals_total", ())] == 1
    assert [d["stage"] for d in telemetry.decisions] == ["signal", "risk", "order", "order"]
    # a halted daemon shows as 2 with the latch
    system.safety = FakeSafety(state=SimpleNamespace(value="halted"), latched=True)
    telemetry.refresh()
    got = samples(telemetry.metrics.render().decode())
    assert got[("trading_state", ())] == 2 and got[("trading_breaker_latched", ())] == 1


def test_each_daemon_has_its_own_registry() -> None:
    one, two = DaemonMetrics(), DaemonMetrics()  # the global registry would refuse the second
    one.fills.labels(side="buy").inc()
    assert "trading_fills_total{side=\"buy\"} 1.0" in one.render().decode()
    assert "side=\"buy\"" not in two.render().decode()


def test_endpoint_labels_stay_bounded() -> None:
    assert endpoint_label("/v2/orders/8f1e2d3c-0000-4000-8000-123456789012") == "/v2/orders/{id}"
    assert endpoint_label("/v2/positions/AAPL?x=1") == "/v2/positions/{id}"
    assert endpoint_label("/v2/stocks/AAPL/bars") == "/v2/stocks/{id}/bars"
    assert endpoint_label("/v1beta1/news") == "/v1beta1/news"


def test_the_log_tap_sees_events_below_the_configured_level_and_never_breaks_logging() -> None:
    telemetry = Telemetry()
    remove = install_log_tap(telemetry)
    try:
        structlog.get_logger("t").info("cycle_complete", equity="123.45", market_time=NOW.isoformat(),
                                       duration_ms=1.0)
        telemetry.on_event = None  # type: ignore[assignment]  # a broken tap costs nothing
        structlog.get_logger("t").info("still_logged")
    finally:
        remove()
    assert telemetry.equity == Decimal("123.45") and telemetry.counts["cycles"] == 1
    assert telemetry not in structlog.get_config()["processors"]


# -- over HTTP ----------------------------------------------------------------------------


async def _get(url: str, **kw: Any) -> tuple[int, str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url, **kw) as resp:
        return resp.status, await resp.text(), resp.headers


async def test_the_server_answers_health_metrics_dashboard_and_refuses_writes(wired: Any) -> None:
    telemetry, wall, _system = wired
    cycle(telemetry, equity="99999.99")
    server = HttpServer(telemetry, port=0)
    await server.start()
    try:
        status, text, headers = await _get(server.url + "health")
        assert status == 200 and '"status": "ok"' in text
        status, text, headers = await _get(server.url + "metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert "trading_equity_dollars 99999.99" in text
        status, text, headers = await _get(server.url)
        assert status == 200 and 'id="equity"' in text and "http://" not in text.replace("http://www.w3", "")
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        for name in ("dashboard.js", "dashboard.css"):
            assert (await _get(server.url + "static/" + name))[0] == 200
        assert (await _get(server.url + "static/../http_server.py"))[0] == 404
        async with aiohttp.ClientSession() as session, session.post(server.url + "health") as resp:
            assert resp.status == 405
        # DNS rebinding: a page of evil.example resolving to 127.0.0.1 is refused
        status, _text, _h = await _get(server.url + "health", headers={"Host": "evil.example:8686"})
        assert status == 403
        wall.t += 1000
        assert (await _get(server.url + "health"))[0] == 503
    finally:
        await server.stop()


async def test_a_token_is_required_when_configured_and_never_logged() -> None:
    settings = config.load_settings(env_file=None, environ={"TRADING_HTTP_TOKEN": TOKEN,
                                                            "TRADING_HTTP__PORT": "0"})
    http = DaemonHttp(settings.http)
    with structlog.testing.capture_logs() as logs:
        await http.start()
    try:
        url = http.server.url
        assert (await _get(url + "health"))[0] == 401
        assert (await _get(url + "metrics", headers={"Authorization": "Bearer wrong-token-xxxxxxxx"}))[0] == 401
        assert (await _get(url + "metrics", headers={"Authorization": f"Bearer {TOKEN}"}))[0] == 200
        assert (await _get(url + "health", params={"token": TOKEN}))[0] == 200
        # the page's shell holds no data and loads without it; its data routes need it
        assert (await _get(url))[0] == 200 and (await _get(url + "static/dashboard.js"))[0] == 200
        assert (await _get(url + "api/snapshot"))[0] == 401
        assert (await _get(url + "api/snapshot", params={"token": TOKEN}))[0] == 200
    finally:
        await http.close()
    started = [e for e in logs if e["event"] == "http_server_started"]
    assert started and started[0]["token_required"] is True
    assert TOKEN not in repr(logs)
    assert TOKEN in settings.secret_values()  # registered with the log redactor by main.py
    assert settings.redacted_dict()["http"]["token"] == "***"


def test_beyond_loopback_the_config_demands_a_token_without_echoing_it() -> None:
    with pytest.raises(config.ConfigError) as exc:
        config.load_settings(env_file=None, environ={"TRADING_HTTP__HOST": "0.0.0.0"})
    assert "token is required" in config.format_problems(exc.value)
    with pytest.raises(config.ConfigError) as exc:
        config.load_settings(env_file=None, environ={"TRADING_HTTP__HOST": "0.0.0.0", "TRADING_HTTP_TOKEN": "short1"})
    assert "short1" not in config.format_problems(exc.value)
    ok = config.load_settings(env_file=None, environ={"TRADING_HTTP__HOST": "0.0.0.0", "TRADING_HTTP_TOKEN": TOKEN})
    assert ok.http.host == "0.0.0.0"


# -- the command line ---------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("off", {"http.enabled": False}),
    ("9000", {"http.enabled": True, "http.port": 9000}),
    ("0", {"http.enabled": True, "http.port": 0}),
    ("0.0.0.0:9000", {"http.enabled": True, "http.port": 9000, "http.host": "0.0.0.0"}),
    ("[::1]:9000", {"http.enabled": True, "http.port": 9000, "http.host": "::1"}),
])
def test_http_flag_values(value: str, expected: dict[str, Any]) -> None:
    args = main.build_parser().parse_args(["--http", value])
    assert {k: v for k, v in main.overrides_from_args(args).items() if k.startswith("http")} == expected


@pytest.mark.parametrize("value", ["65536", "-1", "eighty", ":80", "8686x", ""])
def test_a_bad_http_value_is_one_line_and_exit_2(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main.main(["--http", value, "status"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: argument --http:") and "'off'" in err[0]


def _busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def test_a_chosen_port_that_is_taken_ends_the_run_with_one_line(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    sock = _busy_port()
    port = sock.getsockname()[1]
    try:
        code = main.main(["--http", str(port), "--sim-days", "1", "--speed", "max", "--symbols", "SPY",
                          "--state-db", str(tmp_path / "s.db"), "--log-file", str(tmp_path / "l.jsonl")])
    finally:
        sock.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and f"127.0.0.1:{port}" in err[0] and "--http off" in err[0], err


async def test_the_default_port_taken_costs_only_the_endpoint() -> None:
    """A second daemon on the machine: it trades on, says so in the log, and has no endpoint."""
    sock = _busy_port()
    http_settings = SimpleNamespace(enabled=True, host="127.0.0.1", port=sock.getsockname()[1], token=None,
                                    stale_after_seconds=30.0, model_fields_set=set())
    try:
        with structlog.testing.capture_logs() as logs:
            http = await start_endpoint(http_settings)
    finally:
        sock.close()
    assert http is None
    assert [e["event"] for e in logs] == ["http_unavailable"] and "--http" in logs[0]["hint"]


async def test_http_off_starts_nothing() -> None:
    settings = config.load_settings(env_file=None, environ={}, overrides={"http.enabled": False})
    assert await start_endpoint(settings.http) is None


def test_a_daemon_run_with_http_off_serves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main.main(["--http", "off", "--sim-days", "1", "--speed", "max", "--symbols", "SPY",
                      "--state-db", str(tmp_path / "s.db"), "--log-file", str(tmp_path / "l.jsonl")])
    out = capsys.readouterr().out
    assert code == 0
    assert "Dashboard:" not in out
    assert "http_server_started" not in (tmp_path / "l.jsonl").read_text()


def test_the_sample_grafana_dashboard_graphs_metrics_the_daemon_exports() -> None:
    import json
    import re

    dashboard = json.loads((Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\btrading_[a-z_]+", expr)}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",), "info": ("_info",)}
    exported = {family.name + suffix for family in DaemonMetrics().registry.collect()
                for suffix in suffixes[family.type]}
    assert used and used <= exported, sorted(used - exported)
    assert {"trading_equity_dollars", "trading_state", "trading_unprotected_positions"} <= used


async def _next_snapshot(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    import json

    async for raw in resp.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            return json.loads(line[len("data: "):])
    raise AssertionError("the stream ended")


async def test_the_event_stream_pushes_each_change_and_ends_when_the_server_stops(wired: Any) -> None:
    telemetry, _wall, _system = wired
    cycle(telemetry, equity="100000")
    server = HttpServer(telemetry, port=0)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session, session.get(server.url + "events") as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            first = await _next_snapshot(resp)
            assert first["equity"] == "100000" and first["health"]["status"] == "ok"
            cycle(telemetry, equity="100123.45")
            telemetry.on_event("alert", "critical", {"alert_level": "critical", "title": "Breaker tripped",
                                                     "message": "daily loss"})
            for _ in range(20):
                update = await _next_snapshot(resp)
                if update["equity"] == "100123.45" and update["alerts"]:
                    break
            assert update["equity"] == "100123.45" and update["curve"][-1][1] == "100123.45"
            assert update["alerts"][0]["title"] == "Breaker tripped"
            await asyncio.wait_for(server.stop(), 15)  # an open stream does not hold up a shutdown
    finally:
        await server.stop()


def body_run_id(daemon: Any) -> str:
    return str(next(e["run_id"] for e in daemon.events() if e.get("event") == "system_start"))


def test_a_running_daemon_serves_health_and_metrics_and_closes_the_port_on_sigterm(tmp_path: Path) -> None:
    """What the acceptance check does: start the daemon in SIM mode and scrape it."""
    import json
    import signal
    import urllib.error
    import urllib.request

    from tests.e2e_helpers import HOLDING_ARGS, HOLDING_ENV, Daemon, make_run_paths

    paths = make_run_paths(tmp_path)
    with Daemon([*HOLDING_ARGS, "--http", "0"], paths, env=HOLDING_ENV) as daemon:
        url = daemon.wait_for("http_server_started", timeout=60)["url"]
        daemon.wait_for("cycle_complete", lambda e: e["positions"] >= 1, timeout=60)
        daemon.wait_for("stream_catchup", timeout=60)  # the trade stream is listening and caught up
        with urllib.request.urlopen(url + "health", timeout=10) as resp:
            assert resp.status == 200
            body = json.loads(resp.read())
        assert body["status"] == "ok" and body["trading_state"] == "active", body
        assert body["broker"] == "ok" and body["stream"] == "connected" and body["last_cycle_age_s"] >= 0
        with urllib.request.urlopen(url + "metrics", timeout=10) as resp:
            got = samples(resp.read().decode())
        assert got[("trading_positions", ())] == 1 and got[("trading_unprotected_positions", ())] == 0
        assert got[("trading_fills_total", (("side", "buy"),))] >= 1
        assert got[("trading_orders_submitted_total", (("kind", "bracket"), ("side", "buy")))] == 1
        assert got[("trading_broker_requests_total", (("endpoint", "/v2/account"), ("status", "200")))] >= 1
        assert got[("trading_cycle_duration_seconds_count", ())] >= 1
        assert got[("trading_daemon_info", (("mode", "sim"), ("run_id", body_run_id(daemon))))] == 1
        assert "Dashboard: " + url in daemon.stdout()
        assert daemon.stop(signal.SIGTERM) == 0
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "health", timeout=5)


def test_the_curve_is_the_new_york_sessions_and_starts_afresh_the_next_day() -> None:
    telemetry = Telemetry()
    day = datetime(2026, 1, 5, 14, 31, tzinfo=timezone.utc)
    for minutes, equity in [(0, "100000"), (60, "100100"), (9 * 60 + 20, "100200")]:  # 19:51 ET, after midnight UTC
        telemetry.on_event("cycle_complete", "info", {"market_time": (day + timedelta(minutes=minutes)).isoformat(),
                                                      "equity": equity, "duration_ms": 1.0})
    assert [e for _, e in telemetry.curve] == ["100000", "100100", "100200"]
    telemetry.on_event("cycle_complete", "info", {"market_time": (day + timedelta(days=1)).isoformat(),
                                                  "equity": "100300", "duration_ms": 1.0})
    assert [e for _, e in telemetry.curve] == ["100300"]
