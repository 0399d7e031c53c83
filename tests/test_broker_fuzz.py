"""Nothing the broker answers during trading stops the daemon, and every position stays protected.

The trading loop (``TradingSystem`` with its real executor, journal and alerter) runs against the
simulator core in this process (``sim_broker.InProcessBroker``: the gateway's own parsing and
error mapping, without sockets). A fault seam in front of the core makes one endpoint at a time
answer one error body for a whole cycle, in turn: every endpoint the daemon called in a healthy
warm-up, times every Alpaca error body of the taxonomy's tests plus a few nobody knows (418, a
422 with an unknown code, 200 with garbage). Before each faulty cycle one position's protection
is replaced by hand with a lone take-profit, so that the cycle has a cancel and a submission to
fail. The loop
must keep cycling (no exception out of ``run_cycle``, no ``stop_event``) and, once the broker
behaves again, every position must hold a protective stop for its full quantity.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from core import errors
from alerter import Alerter
from journal.journal import Journal
from broker.models import ApiResponse, OrderRequest
from backtest.sim_broker import InProcessBroker
from simulator.core import SimulatorCore
from tests.test_e2e_safety_support import (
    AlwaysBuy,
    PassThroughAnalyzer,
    events,
    load_test_settings,
    unprotected,
)
from tests.test_error_taxonomy import CASES
from engine.trading_state import TradingState
from engine.trading_system import TradingSystem

START = "2025-03-03T09:45:00-05:00"  # a Monday, regular hours
SYMBOLS = ["SPY", "AAPL", "MSFT"]
CYCLE_MINUTES = 0.25

_ID = re.compile(r"^/v2/orders/[^/:]+$")
_POSITION = re.compile(r"^/v2/positions/[^/]+$")
_STOCK = re.compile(r"^/v2/stocks/(?!bars$|snapshots$|trades/|quotes/)[^/]+/(.+)$")


def endpoint_of(method: str, path: str) -> tuple[str, str]:
    """(method, path template): ids and symbols replaced, so one fault covers every id."""
    path = path.split("?", 1)[0]
    if _ID.match(path):
        path = "/v2/orders/{id}"
    elif _POSITION.match(path):
        path = "/v2/positions/{symbol}"
    else:
        path = _STOCK.sub(r"/v2/stocks/{symbol}/\1", path)
    return method.upper(), path


def _bodies() -> list[tuple[int, bytes]]:
    """One real body per (status, code, exception) of the taxonomy's tests (the text does
    not change the mapping: test_error_taxonomy proves it), and some answers nobody knows."""
    seen: dict[tuple[int, bytes], None] = {}
    kinds: set[tuple[int, Any, type]] = set()
    for case in CASES:
        body = case.body
        kind = (case.status, body.get("code") if isinstance(body, dict) else None, case.error)
        if kind in kinds:
            continue
        kinds.add(kind)
        payload = b"" if body is None else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
        seen.setdefault((case.status, payload), None)
    for extra in [(418, b""), (422, b'{"code": 42299999, "message": "a code nobody documented"}'),
                  (200, b"<html>garbage</html>"), (200, b'{"unexpected": [1, 2, 3]}'),
                  (409, b'{"message": "conflict"}'), (503, b"")]:
        seen.setdefault(extra, None)
    return list(seen)


BODIES = _bodies()


class FaultyBroker(InProcessBroker):
    """The in-process broker with one fault seam: ``fault`` = (endpoint, status, body)."""

    def __init__(self, core: SimulatorCore, **kw: Any) -> None:
        super().__init__(core, **kw)
        self.fault: tuple[tuple[str, str], int, bytes] | None = None
        self.called: set[tuple[str, str]] = set()
        self.faults_served = 0
        # rotation: every other request to one of these endpoints answers the next body
        self.rotate: set[tuple[str, str]] = set()
        self._turn = 0

    async def request(self, method: str, path: str, **kw: Any) -> ApiResponse:
        endpoint = endpoint_of(method, path)
        self.called.add(endpoint)
        answer: tuple[int, bytes] | None = None
        if self.fault is not None and self.fault[0] == endpoint:
            answer = self.fault[1], self.fault[2]
        elif endpoint in self.rotate:
            self._turn += 1
            if self._turn % 2:
                answer = BODIES[(self._turn // 2) % len(BODIES)]
        if answer is not None:
            self.request_count += 1
            self.faults_served += 1
            return self._build_response(method.upper(), path, answer[0], {}, answer[1])
        return await super().request(method, path, **kw)


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[TradingSystem, FaultyBroker]]:
    settings = load_test_settings(tmp_path, {
        "scanning.symbols": SYMBOLS, "sim.start": START, "sim.speed": "max", "sim.cash": 100000,
        "ai.use_news_sentiment": False})
    core = SimulatorCore.create(symbols=SYMBOLS, seed=7, start=START, speed=None, cash=100000)
    broker = FaultyBroker(core, max_quote_age=settings.data_quality.max_quote_age_seconds,
                          data_feed=settings.api.data_feed)
    journal = Journal(settings.storage.state_db)
    alerter = Alerter(settings.alerts, core.clock, stream=io.StringIO())
    alerter.attach_journal(journal)
    system = TradingSystem(settings, broker, core.clock, journal=journal, alerter=alerter,
                           run_id="fuzz", regime_by_date=True)
    system.strategies = [AlwaysBuy(settings)]
    system.analyzer = PassThroughAnalyzer(core.clock)  # type: ignore[assignment]
    try:
        yield system, broker
    finally:
        await alerter.aclose()
        journal.close()


async def turn(system: TradingSystem, minutes: float = CYCLE_MINUTES) -> bool:
    """Let ``minutes`` of market time pass, then one turn of the daemon's own loop
    (``TradingSystem.step``: start-up until done, market status, cycle); True if a cycle ran."""
    await system.clock.sleep(minutes * 60)
    return await system.step() is not None


async def buy_one(broker: FaultyBroker, symbol: str, n: int) -> None:
    """A position opened by hand, straight at the broker (before the daemon starts)."""
    await broker.submit_order(OrderRequest.simple(symbol, 1, "buy", type="market", time_in_force="day",
                                                  client_order_id=f"hand-{symbol}-{n}"))


async def strip_protection(broker: FaultyBroker, symbol: str, n: int) -> None:
    """By hand: the symbol's exit orders canceled and replaced by a lone take-profit, so that
    the daemon must cancel it (a DELETE) and place protection (a POST) in the next cycle."""
    fault, broker.fault = broker.fault, None
    try:
        held = await broker.get_position(symbol)
        if held is None:
            return
        for order in await broker.list_orders(status="open", symbols=[symbol], nested=False):
            await broker.cancel_order(order.id)
        price = (held.current_price or held.avg_entry_price) * 2
        await broker.submit_order(OrderRequest.simple(
            symbol, abs(held.qty), "sell", type="limit", limit_price=price.quantize(Decimal("0.01")),
            time_in_force="gtc", client_order_id=f"hand-tp-{symbol}-{n}"))
    finally:
        broker.fault = fault


async def assert_all_protected(system: TradingSystem, broker: FaultyBroker) -> None:
    positions = await broker.list_positions()
    orders = await broker.list_orders(status="open", nested=True, limit=500)
    assert positions, "the fuzz needs positions to protect"
    assert unprotected(positions, orders) == {}


async def test_every_endpoint_answering_every_error_body_never_stops_the_loop(
    daemon: tuple[TradingSystem, FaultyBroker],
) -> None:
    system, broker = daemon
    await buy_one(broker, "SPY", 0)
    await turn(system)
    assert system._started
    for _ in range(3):  # healthy warm-up: entries, protection, the endpoints the daemon uses
        await turn(system)
    await strip_protection(broker, "SPY", 0)
    await turn(system)  # a re-protection: cancel + submit
    await assert_all_protected(system, broker)
    endpoints = sorted(broker.called | {("GET", "/v2/orders/{id}"), ("DELETE", "/v2/orders/{id}"),
                                        ("POST", "/v2/orders"), ("GET", "/v2/positions/{symbol}")})
    assert ("DELETE", "/v2/orders/{id}") in broker.called and ("POST", "/v2/orders") in broker.called
    cycles_before = system.summary.cycles
    runs = ran = 0
    with capture_logs() as logs:
        for endpoint in endpoints:
            for status, body in BODIES:
                runs += 1
                await strip_protection(broker, SYMBOLS[runs % len(SYMBOLS)], runs)
                broker.fault = (endpoint, status, body)
                try:
                    ran += await turn(system)  # must not raise
                finally:
                    broker.fault = None
                assert not system.stop_event.is_set(), (endpoint, status, body)
                assert system.fatal_error is None
        for _ in range(3):  # the broker behaves again
            assert await turn(system)
    # every turn ran its cycle, except where the market status step itself met the fault (the
    # session start reads the account): that turn pauses with backoff and the next one cycles
    assert system.summary.cycles == cycles_before + ran + 3
    assert runs - ran <= len(BODIES) and ran > runs * 0.9
    assert broker.faults_served > runs // 2  # the faults were really met
    await assert_all_protected(system, broker)
    assert not events(logs, "cycle_failed"), [e.get("error") for e in events(logs, "cycle_failed")][:5]
    skipped = events(logs, "operational_error")
    assert skipped and all(e["log_level"] == "error" and "status" in e and "code" in e for e in skipped)
    assert system.safety.state in (TradingState.ACTIVE, TradingState.REDUCING)


async def test_a_halt_meeting_every_error_body_on_its_cancels_and_exits_still_ends_flat(
    daemon: tuple[TradingSystem, FaultyBroker],
) -> None:
    """The emergency endpoints (cancel all, cancel one, position reads, exit orders) answer,
    every other request, the next body of the list while an operator halt flattens."""
    system, broker = daemon
    await buy_one(broker, "SPY", 0)
    await turn(system)
    await turn(system)
    positions = await broker.list_positions()
    assert len(positions) >= 2
    now = system.clock.now()
    system.journal.log_event("operator_command", {"id": "halt-1", "kind": "halt", "reason": "fuzz",
                                                  "at": now.isoformat()}, now)
    broker.rotate = {("DELETE", "/v2/orders"), ("DELETE", "/v2/orders/{id}"), ("GET", "/v2/positions/{symbol}"),
                     ("POST", "/v2/orders")}
    with capture_logs() as logs:
        for _ in range(8):
            await turn(system)
            assert not system.stop_event.is_set() and system.fatal_error is None
        served = broker.faults_served
        broker.rotate = set()
        for _ in range(6):
            await turn(system)
            if system.safety.state is TradingState.HALTED:
                break
    assert served >= 10  # the halt really met the faults
    assert events(logs, "emergency_liquidation")
    assert system.safety.state is TradingState.HALTED and system.safety.latched
    assert await broker.list_positions() == []
    assert not system.stop_event.is_set()


# -- the invariant, one answer at a time ------------------------------------------------------


async def test_an_unknown_answer_skips_the_cycle_and_a_run_of_them_reduces_never_stops(
    daemon: tuple[TradingSystem, FaultyBroker],
) -> None:
    system, broker = daemon
    await buy_one(broker, "SPY", 0)
    await turn(system)
    assert system._started
    await turn(system)
    unknown = b'{"code": 42299999, "message": "a code nobody documented"}'
    broker.fault = (("GET", "/v2/account"), 422, unknown)
    with capture_logs() as logs:
        for _ in range(TradingSystem.FAULTY_CYCLES_BEFORE_REDUCING):
            await turn(system)
    broker.fault = None
    assert not system.stop_event.is_set() and system.fatal_error is None
    skipped = events(logs, "operational_error")
    assert len(skipped) == 3 and skipped[0]["log_level"] == "error"
    assert skipped[0]["status"] == 422 and skipped[0]["code"] == 42299999
    assert skipped[0]["message"].endswith("a code nobody documented")
    assert skipped[0]["error_type"] == "UnclassifiedBrokerError"
    assert system.safety.state is TradingState.REDUCING
    assert "broker errors nobody classified" in system.safety.state_reason
    titles = [a["title"] for a in events(logs, "alert")]
    assert any("action skipped" in t for t in titles) and any("reducing" in t for t in titles), titles
    await turn(system)  # healthy again: protection and exits go on
    await assert_all_protected(system, broker)
    assert system.safety.state is TradingState.REDUCING  # entries stay off for the session


async def test_keys_refused_at_start_up_still_end_the_daemon_as_a_configuration_error(
    daemon: tuple[TradingSystem, FaultyBroker],
) -> None:
    system, broker = daemon
    broker.fault = (("GET", "/v2/account"), 401, b'{"code": 40110000, "message": "request is not authorized"}')
    with capture_logs() as logs:
        await system.run()
    assert system.stop_event.is_set() and system.fatal_error is not None
    assert "not authorized" in system.fatal_error
    assert events(logs, "operational_error")[0]["log_level"] == "critical"


async def test_keys_refused_during_trading_skip_cycles_but_the_loop_goes_on(
    daemon: tuple[TradingSystem, FaultyBroker],
) -> None:
    system, broker = daemon
    await buy_one(broker, "SPY", 0)
    await turn(system)
    assert system._started
    broker.fault = (("GET", "/v2/account"), 401, b'{"code": 40110000, "message": "request is not authorized"}')
    for _ in range(5):
        await turn(system)
    broker.fault = None
    assert not system.stop_event.is_set() and system.fatal_error is None
    await turn(system)
    await assert_all_protected(system, broker)


def test_the_fuzz_bodies_cover_every_category() -> None:
    categories = {case.error.category for case in CASES}
    assert categories == set(errors.ErrorCategory)


async def test_a_state_db_of_another_timeline_is_a_start_up_configuration_error(
    daemon: tuple[TradingSystem, FaultyBroker],
) -> None:
    """Before the first cycle, a journal whose session lies after the broker's (a state DB of
    another run) ends the run as bad configuration (main: exit 2); it is not retried forever."""
    system, _ = daemon
    system.safety._session_date = date(2099, 1, 2)
    with pytest.raises(errors.ConfigError, match="another timeline"):
        await system.run()
