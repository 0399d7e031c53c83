"""Shared machinery of the end-to-end safety tests (``tests/test_e2e_safety*.py``).

Everything here talks to the simulator over real HTTP on 127.0.0.1:

* :func:`sim_stack` runs the daemon's own parts in-process (``TradingSystem`` with the real
  ``ResilientAlpacaGateway``, ``Journal`` and ``Alerter``) against a simulator core served by
  ``simulator.server.start_server`` at ``--speed max``: simulated time moves only when the
  daemon sleeps on the clock or a test moves it, so "within one cycle" is exact.
* :class:`ExternalDaemon` runs ``python tests/test_e2e_safety_support.py daemon --sim-url URL
  [main.py options]`` against an external ``python -m simulator`` (``tests.e2e_helpers.
  Simulator``), whose broker state survives a daemon that is killed and restarted. That is
  ``main.main()`` (the real CLI, signal handling, journal and loop) with one seam changed:
  the broker is the external simulator and the daemon's clock is the simulator's clock (each
  of the daemon's sleeps moves it ahead), instead of an embedded simulator. ``python main.py``
  has no such mode: in ``paper`` mode it runs on the wall clock, which would make these tests
  depend on the time of day they run at.

No test in this module; pytest collects it only for its name.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import config  # noqa: E402
from ai_analyzer import TradeIntent  # noqa: E402
from alerter import Alerter  # noqa: E402
from api_gateway import ResilientAlpacaGateway  # noqa: E402
from core.clock import EXCHANGE_TZ  # noqa: E402
from journal.journal import Journal  # noqa: E402
from market.market_data import MarketData  # noqa: E402
from market_status_manager import MarketStatus  # noqa: E402
from broker.models import Order, OrderRequest, Position  # noqa: E402
from order_executor import protected_quantity  # noqa: E402
from broker.rate_limit import RateLimiter  # noqa: E402
from simulator.core import SimulatorCore  # noqa: E402
from simulator.server import RunningServer, start_server  # noqa: E402
from strategies.base import BaseStrategy, Signal  # noqa: E402
from tests.e2e_helpers import Daemon, RunPaths, daemon_env  # noqa: E402
from engine.trading_system import TradingSystem  # noqa: E402

PYTHON = sys.executable
SYMBOLS = ["SPY", "QQQ", "AAPL", "MSFT"]
FAKE_KEY = "PKE2ESAFETYKEY0001"
FAKE_SECRET = "e2e-safety-secret-do-not-leak-0001"

# Wide protective stops: a shock of several percent moves equity through the breaker
# without triggering them (the scenario the circuit breaker exists for). The config rules
# hold: max_position_size * stop_loss < circuit_breaker_loss < emergency_exit_loss.
WIDE_STOPS = {"trading.stop_loss": 0.2, "trading.take_profit": 0.4, "risk.emergency_exit_loss": 0.3}


def load_test_settings(tmp: Path, overrides: Mapping[str, Any] | None = None,
                       environ: Mapping[str, str] | None = None) -> Any:
    """Validated settings for a test: its own state db and log file under ``tmp``."""
    values: dict[str, Any] = {
        "mode": "sim",
        "scanning.symbols": SYMBOLS,
        "storage.state_db": str(tmp / "state.db"),
        "storage.log_file": str(tmp / "trading.jsonl"),
    }
    values.update(overrides or {})
    return config.load_settings(overrides=values, environ=dict(environ or {}), env_file=None)


# -- in-process stack ----------------------------------------------------------------------


@dataclass
class SimStack:
    """A simulator served over HTTP and the daemon's parts wired to it."""

    core: SimulatorCore
    server: RunningServer
    gateway: ResilientAlpacaGateway
    settings: Any
    tmp: Path
    journal: Journal
    alerter: Alerter
    alert_stream: io.StringIO
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.server.base_url

    @property
    def clock(self) -> Any:
        return self.core.clock

    def new_system(self, **kw: Any) -> TradingSystem:
        """A ``TradingSystem`` as ``main.run_daemon`` builds it (sim mode: regime by date)."""
        kw.setdefault("regime_by_date", True)
        kw.setdefault("run_id", "e2e")
        return TradingSystem(self.settings, self.gateway, self.clock, journal=self.journal,
                             alerter=self.alerter, **kw)

    def reopen_journal(self) -> Journal:
        """Close the journal and open the same file again (what a restart does)."""
        self.journal.close()
        self.journal = Journal(self.settings.storage.state_db)
        self.alerter.attach_journal(self.journal)
        return self.journal

    async def control(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return await control(self.http, self.url, path, body)

    async def take_broker_offline(self) -> None:
        """Stop serving: every request now fails to connect (the simulator keeps running)."""
        await self.server.stop()

    async def bring_broker_back(self) -> None:
        """Serve the same simulator again on the same port."""
        self.server = await start_server(self.core, host="127.0.0.1", port=self.server.port,
                                         rate_limit_per_minute=None)

    async def positions(self) -> list[Position]:
        return await self.gateway.list_positions()

    async def open_orders(self) -> list[Order]:
        return await self.gateway.list_orders(status="open", nested=True, limit=500)

    async def all_orders(self) -> list[Order]:
        return await self.gateway.list_orders(status="all", nested=True, limit=500)


@contextlib.asynccontextmanager
async def sim_stack(
    tmp: Path,
    *,
    start: str,
    symbols: Sequence[str] = SYMBOLS,
    cash: int = 100000,
    seed: int = 7,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    key_pair: tuple[str, str] | None = None,
) -> AsyncIterator[SimStack]:
    """A simulator at ``--speed max`` on a free loopback port and the daemon's parts.

    ``key_pair``: the simulator then requires these keys and the gateway sends them.
    """
    values = {"scanning.symbols": list(symbols), "sim.cash": cash, "sim.seed": seed, "sim.start": start,
              "sim.speed": "max"}
    values.update(overrides or {})
    settings = load_test_settings(tmp, values, environ)
    core = SimulatorCore.create(symbols=list(symbols), seed=seed, start=start, speed=None, cash=cash)
    kw: dict[str, Any] = {"rate_limit_per_minute": None}
    if key_pair is not None:
        kw.update(key=key_pair[0], secret=key_pair[1])
    server = await start_server(core, host="127.0.0.1", port=0, **kw)
    clock = core.clock
    gateway = build_gateway(settings, server.base_url, clock,
                            key_pair[0] if key_pair else None, key_pair[1] if key_pair else None)
    journal = Journal(settings.storage.state_db)
    stream = io.StringIO()
    alerter = Alerter(settings.alerts, clock, secrets=settings.secret_values(), stream=stream)
    alerter.attach_journal(journal)
    stack: SimStack | None = None
    try:
        # the simulator's control API takes its keys like the trading API
        keys = {"APCA-API-KEY-ID": key_pair[0], "APCA-API-SECRET-KEY": key_pair[1]} if key_pair else None
        async with gateway, aiohttp.ClientSession(headers=keys) as http:
            stack = SimStack(core, server, gateway, settings, tmp, journal, alerter, stream, http)
            yield stack
            await alerter.aclose()
    finally:
        (stack.journal if stack else journal).close()
        await server.stop()


def build_gateway(settings: Any, url: str, clock: Any, key_id: Any = None, secret_key: Any = None) -> ResilientAlpacaGateway:
    """The gateway as ``main.open_broker`` wires it in sim mode: its rate limiter and its
    retry back-off measure and wait on the simulated clock."""
    api, rl = settings.api, settings.rate_limit
    limiter = RateLimiter(max_per_minute=rl.max_requests_per_minute, buffer=rl.rate_limit_buffer,
                          burst_allowance=rl.burst_allowance, cooldown_seconds=rl.cooldown_seconds,
                          monotonic=lambda: clock.now().timestamp(), sleep=clock.sleep)
    return ResilientAlpacaGateway(
        base_url=url, data_url=url, key_id=key_id, secret_key=secret_key, mode="sim",
        timeout=api.timeout_seconds, max_retries=api.max_retries, backoff_base=api.backoff_base_seconds,
        backoff_max=api.backoff_max_seconds, rate_limiter=limiter,
        max_quote_age=settings.data_quality.max_quote_age_seconds, data_feed=api.data_feed,
        clock=clock, sleep=clock.sleep)


async def control(http: aiohttp.ClientSession, url: str, path: str,
                  body: Mapping[str, Any] | None = None) -> Any:
    """Call the simulator's control API (``/_sim/v1/<path>``); GET without a body."""
    target = f"{url}/_sim/v1/{path}"
    if body is None:
        async with http.get(target) as response:
            data = await response.json(content_type=None)
    else:
        async with http.post(target, json=dict(body)) as response:
            data = await response.json(content_type=None)
    if response.status != 200:
        raise AssertionError(f"control {path} refused: {response.status} {data}")
    return data


async def cycle(system: TradingSystem, minutes: float = 1.0) -> MarketStatus:
    """Let ``minutes`` of market time pass, then run one loop iteration as ``run()`` does."""
    if minutes > 0:
        await system.clock.sleep(minutes * 60)
    status = await system.refresh_market_status()
    if not status.is_closed:
        await system.run_cycle(status)
    return status


async def sleep_until(system: TradingSystem, moment_et: datetime) -> None:
    """Move simulated time to ``moment_et`` (aware) by sleeping on the daemon's clock."""
    delta = (moment_et - system.clock.now()).total_seconds()
    if delta > 0:
        await system.clock.sleep(delta)


def et(text: str) -> datetime:
    """``YYYY-MM-DDTHH:MM`` read as New York time."""
    return datetime.fromisoformat(text).replace(tzinfo=EXCHANGE_TZ)


async def buy_by_hand(stack: SimStack, fractions: Mapping[str, float], *, prefix: str = "hand") -> dict[str, Decimal]:
    """Market-buy ``fraction`` of equity in each symbol straight at the broker (a position
    the daemon did not open, e.g. bought by hand before it started). Returns the quantities."""
    account = await stack.gateway.get_account()
    trades = await stack.gateway.get_latest_trades(list(fractions))
    bought: dict[str, Decimal] = {}
    for symbol, fraction in fractions.items():
        price = Decimal(str(trades[symbol].p))
        qty = (account.equity * Decimal(str(fraction)) / price).quantize(Decimal(1))
        order = await stack.gateway.submit_order(OrderRequest.simple(
            symbol, qty, "buy", type="market", time_in_force="day",
            client_order_id=f"{prefix}-{symbol}"))
        order = await stack.gateway.get_order(order.id)  # the POST answer is the order as accepted
        assert order.status == "filled", f"hand buy of {symbol} did not fill: {order.status}"
        bought[symbol] = qty
    return bought


def unprotected(positions: Sequence[Position], open_orders: Sequence[Order]) -> dict[str, Decimal]:
    """Positions whose full quantity is not covered by working stop orders at the broker."""
    out: dict[str, Decimal] = {}
    for p in positions:
        covered = protected_quantity(p, open_orders)
        if covered < abs(p.qty):
            out[p.symbol] = abs(p.qty) - covered
    return out


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [entry for entry in logs if entry.get("event") == name]


# -- a strategy that always wants in (to prove a latch, not a strategy, blocks entries) ------


class AlwaysBuy(BaseStrategy):
    """Buys every symbol it is shown with a sane bracket; never sells."""

    name = "e2e_always_buy"

    async def evaluate_opportunity(self, symbol: str, market_data: MarketData) -> Signal:
        price = market_data.last_price
        return Signal(symbol=symbol, action="buy", confidence=0.95, reasoning="e2e: always buy",
                      strategy=self.name, stop_price=price * 0.97, target_price=price * 1.06)


class AlwaysSell(BaseStrategy):
    """Says sell for every symbol: the loop's strategy-exit path for each held position."""

    name = "e2e_always_sell"

    async def evaluate_opportunity(self, symbol: str, market_data: MarketData) -> Signal:
        return Signal(symbol=symbol, action="sell", confidence=0.95, reasoning="e2e: always sell",
                      strategy=self.name)


class PassThroughAnalyzer:
    """Turns every buy signal into an intent with the signal's confidence (the AI is not what
    these tests are about); the deterministic intent id is the daemon's own format."""

    def __init__(self, clock: Any) -> None:
        self._clock = clock

    def detect_regime(self, benchmark: Any) -> str:
        return "range"

    async def analyze(self, signal: Signal, market_data: MarketData) -> TradeIntent | None:
        if signal.action != "buy":
            return None
        now = self._clock.now()
        session = now.astimezone(EXCHANGE_TZ).date().isoformat()
        price = market_data.last_price
        return TradeIntent(
            intent_id=f"{signal.strategy}-{signal.symbol}-{session}-1", symbol=signal.symbol, side="buy",
            confidence=signal.confidence, confidence_breakdown={"signal": signal.confidence},
            reasoning=signal.reasoning, strategy=signal.strategy, entry_price=price,
            stop_price=signal.stop_price or price * 0.97, target_price=signal.target_price or price * 1.06,
            created_at=now, decays_at=now + timedelta(hours=4))


# -- external simulator and the daemon as a subprocess --------------------------------------


def sim_control(url: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
    """Synchronous call of a simulator's control API (``/_sim/v1/<path>``; GET without body)."""
    import urllib.request

    data = None if body is None else json.dumps(dict(body)).encode()
    request = urllib.request.Request(f"{url}/_sim/v1/{path}", data=data,
                                     method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:  # loopback only
        return json.loads(response.read())


def sim_get(url: str, path: str) -> Any:
    """GET a Trading API path of a simulator that requires no keys."""
    import urllib.request

    with urllib.request.urlopen(f"{url}{path}", timeout=30) as response:  # loopback only
        return json.loads(response.read())


def sim_post(url: str, path: str, body: Mapping[str, Any]) -> Any:
    """POST a JSON body to a Trading API path of a simulator that requires no keys."""
    import urllib.request

    request = urllib.request.Request(f"{url}{path}", data=json.dumps(dict(body)).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:  # loopback only
        return json.loads(response.read())


class ExternalDaemon(Daemon):
    """``main.main()`` in a subprocess whose broker and clock are an external simulator
    (see the module docstring); otherwise used exactly like :class:`tests.e2e_helpers.Daemon`."""

    def __init__(self, sim_url: str, args: Sequence[str], paths: RunPaths, *,
                 env: Mapping[str, str] | None = None) -> None:
        self.paths = paths
        self.args = [*args, *paths.flags()]
        self.stdout_path = paths.workdir / "stdout.txt"
        self.stderr_path = paths.workdir / "stderr.txt"
        self._out = self.stdout_path.open("a", encoding="utf-8")
        self._err = self.stderr_path.open("a", encoding="utf-8")
        command = [PYTHON, str(Path(__file__).resolve()), "daemon", "--sim-url", sim_url, *self.args]
        self.proc = subprocess.Popen(command, cwd=paths.workdir, env=daemon_env(env),
                                     stdout=self._out, stderr=self._err, text=True)

    def wait_until(self, predicate: Callable[[], Any], *, timeout: float = 30, what: str = "condition") -> Any:
        """Poll ``predicate()`` until it returns something truthy, which is returned."""
        deadline = time.monotonic() + timeout
        while True:
            found = predicate()
            if found:
                return found
            if self.proc.poll() is not None:
                pytest.fail(f"daemon exited ({self.proc.returncode}) before {what}\n{self.stderr_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout:g}s\n{self.stderr_tail()}")
            time.sleep(0.02)


# -- the child: main.main() against an external simulator -----------------------------------


class ExternalSimClock:
    """The daemon's clock when the broker is an external ``--speed max`` simulator.

    ``now()`` is the simulator's time as last read; ``sleep(s)`` moves the simulator's clock
    ``s`` seconds ahead through ``POST /_sim/v1/clock`` (then yields), exactly as the embedded
    simulator's clock does at ``--speed max``. While the simulator cannot be reached, a sleep
    waits a little wall time instead and simulated time stands still.
    """

    def __init__(self, url: str, now: datetime) -> None:
        self._url = url
        self._now = now
        self._session: aiohttp.ClientSession | None = None

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(f"{self._url}/_sim/v1/clock",
                                          json={"advance_minutes": seconds / 60.0},
                                          timeout=aiohttp.ClientTimeout(total=10)) as response:
                body = await response.json(content_type=None)
            self._now = datetime.fromisoformat(body["now"])
        except (aiohttp.ClientError, asyncio.TimeoutError, KeyError, ValueError):
            await asyncio.sleep(min(seconds, 0.2))
        await asyncio.sleep(0)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _child_main(argv: list[str]) -> int:
    """``daemon --sim-url URL [main.py args]``: ``main.main(args)`` on the external simulator."""
    import urllib.request

    import main as daemon_main

    if len(argv) < 3 or argv[0] != "daemon" or argv[1] != "--sim-url":
        print("usage: python tests/test_e2e_safety_support.py daemon --sim-url URL [main.py options]",
              file=sys.stderr)
        return 2
    url, rest = argv[2], argv[3:]
    with urllib.request.urlopen(f"{url}/_sim/v1/state", timeout=10) as response:  # loopback only
        start_now = datetime.fromisoformat(json.loads(response.read())["now"])

    @contextlib.asynccontextmanager
    async def external_broker(settings: Any, *, announce: bool = True) -> AsyncIterator[tuple[Any, Any, str]]:
        clock = ExternalSimClock(url, start_now)
        gateway = build_gateway(settings, url, clock, settings.api.key_id, settings.api.secret_key)
        if announce:
            print(f"E2E: daemon on the external simulator at {url}", flush=True)
        try:
            async with gateway:
                yield gateway, clock, url
        finally:
            await clock.aclose()

    daemon_main.open_broker = external_broker  # the one seam this runner changes
    return daemon_main.main(rest)


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
