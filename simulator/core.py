"""The simulator without sockets: market, broker, clock and market-data API in one object.

``SimulatorCore.create(...)`` assembles the parts; the HTTP server (``simulator.server``)
and the in-process backtest broker both drive the same core, so they share every line of
matching. Importing this module does not import aiohttp.

Default start time (``start=None``):

* synthetic market: 09:00 America/New_York (pre-market, half an hour before the open) of the
  most recent session on or before today's date in New York, so at the default speed (60)
  the market opens about 30 wall seconds after start-up;
* CSV replay: 09:00 ET of the 251st session counted from the first session in which every
  chosen symbol has data (or the last session when the data is shorter), so at least 250
  daily bars of every symbol exist before the start for warm-up.

``start`` as a string follows ``--start``: a date alone is that day's pre-market (04:00 ET),
an ISO-8601 datetime without an offset is read as New York time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any

import structlog

from core.clock import EXCHANGE_TZ
from simulator.clock import SimClock, parse_start
from simulator.engine import SimBroker
from simulator.faults import FaultConfig, FaultInjector
from simulator.market import Market
from simulator.market_data_api import MarketDataApi
from market.trading_calendar import FIRST_DATE, LAST_DATE, TradingCalendar

log = structlog.get_logger(__name__)

UTC = timezone.utc
DEFAULT_START_TIME = time(9, 0)
CSV_WARMUP_SESSIONS = 250

__all__ = ["SimulatorCore", "parse_start", "default_start"]


def default_start(market: Market, calendar: TradingCalendar, *, csv: bool, today: date | None = None) -> datetime:
    """The start instant used when none is given (see the module docstring)."""
    if csv:
        sessions = market.trading_days(FIRST_DATE, LAST_DATE)
        if not sessions:
            raise ValueError("the market data holds no trading session to start from")
        first = max(_first_session_with_data(market, symbol, sessions) for symbol in market.symbols)
        session = sessions[min(first + CSV_WARMUP_SESSIONS, len(sessions) - 1)]
    else:
        if today is None:
            today = datetime.now(UTC).astimezone(EXCHANGE_TZ).date()  # wall date: where to start only
        session = calendar.session_on_or_before(min(today, LAST_DATE))
    return datetime.combine(session, DEFAULT_START_TIME, EXCHANGE_TZ).astimezone(UTC)


def _first_session_with_data(market: Market, symbol: str, sessions: list[date]) -> int:
    """Index in ``sessions`` of the first one where ``symbol`` has a bar (binary search:
    a symbol's history is taken to run without long holes from its first session on)."""
    lo, hi = 0, len(sessions) - 1
    if market.daily_bar(symbol, sessions[hi]) is None:
        return 0
    while lo < hi:
        mid = (lo + hi) // 2
        if market.daily_bar(symbol, sessions[mid]) is None:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _start_instant(start: datetime | str | None) -> datetime | None:
    if start is None:
        return None
    if isinstance(start, str):
        return parse_start(start)
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (or a string such as 2025-03-03)")
    return start.astimezone(UTC)


@dataclass
class SimulatorCore:
    """The whole simulated broker, importable and drivable without HTTP.

    ``sync()`` brings the broker up to the clock's now (fills, triggers, expiries); the
    server calls it before every request and a backtest after every clock step.
    """

    market: Market
    broker: SimBroker
    clock: SimClock
    calendar: TradingCalendar
    data: MarketDataApi
    seed: int = 42
    faults: FaultInjector = field(default_factory=FaultInjector)
    _synced_to: datetime | None = field(default=None, init=False, repr=False)

    @classmethod
    def create(
        cls,
        *,
        data_dir: str | Path | None = None,
        symbols: list[str] | None = None,
        seed: int = 42,
        start: datetime | str | None = None,
        speed: float | None = 60.0,
        cash: Decimal | float | int | str = 100000,
        partial_fills: bool = False,
        slippage_bps: float = 1.0,
        faults: FaultConfig | str | None = None,
    ) -> SimulatorCore:
        """Build a simulator: synthetic market (seeded) unless ``data_dir`` holds CSV bars.

        ``speed``: simulated seconds per wall second, ``None`` = max (time moves only when
        someone sleeps on the clock or calls :meth:`advance`). Raises ``ValueError`` with one
        clear message on bad input.
        """
        calendar = TradingCalendar()
        if data_dir is not None:
            market = Market.from_csv_dir(data_dir, symbols, calendar=calendar, seed=seed)
        else:
            market = Market.synthetic(symbols, seed=seed, calendar=calendar)
        # The day cache holds a few sessions per symbol: enough for every request of a cycle,
        # small enough that a long run's memory stays flat (a soak of 20 sessions).
        market.cache_days = max(24, 2 * len(market.symbols) + 8)
        instant = _start_instant(start) or default_start(market, calendar, csv=data_dir is not None)
        clock = SimClock(instant, speed, calendar)
        market.attach_clock(clock)
        broker = SimBroker(
            market,
            clock,
            calendar,
            cash=cash,
            partial_fills=partial_fills,
            slippage_bps=slippage_bps,
            seed=seed,
        )
        data = MarketDataApi(market, clock)
        if isinstance(faults, str):
            faults = FaultConfig.parse(faults)
        config = faults if faults is not None else FaultConfig(seed=seed)
        core = cls(market, broker, clock, calendar, data, seed=seed, faults=FaultInjector(config))
        log.info(
            "sim_core_created",
            source="csv" if data_dir is not None else "synthetic",
            symbols=list(market.symbols),
            start=instant.isoformat(),
            speed=speed,
            seed=seed,
        )
        return core

    # -- time ------------------------------------------------------------------------------

    def sync(self) -> datetime:
        """Advance the broker to the clock's now (cheap when time has not moved)."""
        now = self.clock.now()
        if self._synced_to is None or now > self._synced_to:
            self.broker.advance_to(now)
            self._synced_to = now
        return now

    def advance(self, minutes: float) -> datetime:
        """Move simulated time forward ``minutes`` and process everything up to then."""
        if minutes < 0:
            raise ValueError(f"advance_minutes must not be negative, got {minutes:g}")
        self.sync()
        self.clock.advance(minutes)
        return self.sync()

    def set_speed(self, speed: float | None) -> None:
        """Change the clock's speed (``None`` = max) from now on."""
        self.sync()
        self.clock.set_speed(speed)

    # -- market events ---------------------------------------------------------------------

    def shock(self, symbols: list[str] | str, pct: float) -> dict[str, Any]:
        """Move prices of ``symbols`` (or ``"*"``) by ``pct`` percent now, as a jump; the
        market continues from the new level. Returns the new last prices."""
        now = self.sync()
        self.market.shock(symbols, pct, now)
        self.sync()
        targets = list(self.market.symbols) if symbols == "*" else list(symbols)
        # A shock is a jump, not a move through the prices between: resting orders meet it
        # as a gap now (a stop jumped through fills at the new price, not at its stop).
        self.broker.meet_jump(targets, now)
        return {
            "at": now.isoformat(),
            "pct": pct,
            "prices": {s: self.market.price_at(s, now) for s in targets},
        }

    def gap(self, symbols: list[str] | str, pct: float) -> dict[str, Any]:
        """Make the next regular open of ``symbols`` (or ``"*"``) gap ``pct`` percent from
        the previous close. Returns when that open is."""
        now = self.sync()
        opened = self.market.schedule_gap(symbols, pct, now)
        return {"at": now.isoformat(), "pct": pct, "open": opened.isoformat()}

    # -- state -----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """A JSON-ready snapshot for ``GET /_sim/v1/state``: time, market, broker, faults."""
        now = self.clock.now()
        speed = self.clock.speed
        return {
            "now": now.isoformat(),
            "now_et": now.astimezone(EXCHANGE_TZ).isoformat(),
            "phase": self.calendar.session_phase(now),
            "speed": "max" if speed is None else speed,
            "seed": self.seed,
            "market": self.market.describe(),
            "broker": self.broker.state(),
            "faults": dict(self.faults.counts),
            "fault_config": self.faults.config.to_dict(),
        }
