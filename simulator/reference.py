"""Reference data of the simulated broker: clock, calendar and assets (Trading API v2 shapes).

Assets are the market's symbols, all active, tradable, marginable, shortable and
fractionable ``us_equity``. Their ids are stable UUIDs derived from the symbol, so the same
symbol has the same ``asset_id`` in every run. The listing exchange comes from the market's
symbol profile when it has one (the simulator's ``Market`` does), else ``NASDAQ``.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from simulator.errors import not_found, validation_error
from simulator.sessions import Sessions
from simulator.wire import et_date, et_iso, parse_date

CALENDAR_DEFAULT_SPAN = timedelta(days=365)
NAMES = {
    "SPY": "SPDR S&P 500 ETF Trust",
    "QQQ": "Invesco QQQ Trust, Series 1",
    "AAPL": "Apple Inc. Common Stock",
    "MSFT": "Microsoft Corporation Common Stock",
    "NVDA": "NVIDIA Corporation Common Stock",
    "TSLA": "Tesla, Inc. Common Stock",
}


@functools.lru_cache(maxsize=4096)
def asset_id(symbol: str) -> str:
    """The stable asset id of ``symbol`` (derived once per symbol: it is asked for on every
    order and position)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"simulator-asset:{symbol}"))


class ReferenceData:
    """``/v2/clock``, ``/v2/calendar`` and ``/v2/assets`` over the market and calendar."""

    def __init__(self, market: Any, calendar: Any, sessions: Sessions) -> None:
        self._market = market
        self._calendar = calendar
        self._sessions = sessions
        self._ids: dict[str, str] = {}

    def symbols(self) -> list[str]:
        return list(self._market.symbols)

    def resolve(self, symbol_or_id: str) -> str | None:
        """The market symbol named by a symbol, ``SYM:EXCH`` form or asset id; None if unknown."""
        symbols = self.symbols()
        if symbol_or_id in symbols:
            return symbol_or_id
        base = symbol_or_id.split(":", 1)[0]
        if base in symbols:
            return base
        if not self._ids or len(self._ids) != len(symbols):
            self._ids = {asset_id(symbol): symbol for symbol in symbols}
        return self._ids.get(symbol_or_id)

    def exchange(self, symbol: str) -> str:
        profile = getattr(self._market, "profile", None)
        if profile is not None:
            try:
                return str(profile(symbol).exchange)
            except (KeyError, AttributeError):
                pass
        return "NASDAQ"

    def clock_json(self, now: datetime) -> dict[str, Any]:
        """``GET /v2/clock``: timestamps in New York time with their offset."""
        today = self._sessions.day(et_date(now))
        upcoming = self._sessions.next_after(et_date(now))
        next_open = today.open if today is not None and now < today.open else upcoming.open
        next_close = today.close if today is not None and now < today.close else upcoming.close
        return {
            "timestamp": et_iso(now),
            "is_open": self._sessions.phase(now) == "regular",
            "next_open": et_iso(next_open),
            "next_close": et_iso(next_close),
        }

    def calendar_json(self, params: Mapping[str, Any], now: datetime) -> list[dict[str, Any]]:
        """``GET /v2/calendar?start&end`` (inclusive dates; default: a year either side of today)."""
        today = et_date(now)
        start = parse_date(params["start"], "start") if params.get("start") else today - CALENDAR_DEFAULT_SPAN
        end = parse_date(params["end"], "end") if params.get("end") else today + CALENDAR_DEFAULT_SPAN
        date_type = str(params.get("date_type") or "TRADING").upper()
        if date_type not in ("TRADING", "SETTLEMENT"):
            raise validation_error(f"invalid date_type: {date_type!r}")
        if start > end:
            return []
        try:
            return list(self._calendar.calendar_json(start, end))
        except ValueError as exc:
            raise validation_error(str(exc)) from None

    def assets(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``GET /v2/assets``: filters ``status``, ``asset_class``, ``exchange``."""
        status = params.get("status")
        if status is not None and status not in ("active", "inactive"):
            raise validation_error(f"invalid status: {status!r}")
        asset_class = params.get("asset_class")
        if status == "inactive" or asset_class not in (None, "us_equity"):
            return []
        exchange = params.get("exchange")
        items = [self.asset_json(symbol) for symbol in self.symbols()]
        return [item for item in items if exchange is None or item["exchange"] == exchange]

    def asset(self, symbol_or_id: str) -> dict[str, Any]:
        """``GET /v2/assets/{symbol_or_id}``; 404 'asset not found for X'."""
        resolved = self.resolve(symbol_or_id)
        if resolved is None:
            raise not_found(f"asset not found for {symbol_or_id}")
        return self.asset_json(resolved)

    def asset_json(self, symbol: str) -> dict[str, Any]:
        return {
            "id": asset_id(symbol),
            "class": "us_equity",
            "exchange": self.exchange(symbol),
            "symbol": symbol,
            "name": NAMES.get(symbol, f"{symbol} (simulated)"),
            "status": "active",
            "tradable": True,
            "marginable": True,
            "shortable": True,
            "easy_to_borrow": True,
            "fractionable": True,
            "maintenance_margin_requirement": 30,
            "margin_requirement_long": "50",
            "margin_requirement_short": "50",
            "attributes": [],
        }
