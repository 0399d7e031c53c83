"""Last trades and quotes of the simulated market (the conventions are in
:mod:`simulator.market`): the last trade at an instant from the minute bars (or the fast
paths), and the quote around it with the source's spread model, remembered per instant."""

from __future__ import annotations

import math
from datetime import date, datetime, time

import numpy as np

from core.clock import EXCHANGE_TZ
from simulator.bars import SimQuote
from simulator.market_arrays import UTC, UNKNOWN, hash_symbol, remember, to_epoch
from simulator.market_store import MarketStore


class MarketPrices(MarketStore):
    """Trades, prices and quotes at an instant, over :class:`MarketStore`'s bars."""

    def last_trade(self, symbol: str, t: datetime) -> tuple[float, datetime, int] | None:
        """(price, trade time, size) of the last trade at or before ``t``; None if none."""
        if symbol not in self._known:
            return None
        epoch = to_epoch(t)
        key = (symbol, epoch)
        if key in self._trades:
            return self._trades[key]
        known = self._known_trade(symbol, t, epoch)
        trade = self._last_trade(symbol, t, epoch) if known is UNKNOWN else known
        remember(self._trades, key, trade)  # type: ignore[arg-type]
        return trade  # type: ignore[return-value]

    def _known_trade(self, symbol: str, t: datetime, epoch: float) -> tuple[float, datetime, int] | None | object:
        """:meth:`last_trade` without expanding minute bars, or ``UNKNOWN`` when that needs
        them: for a session expanded from a daily row, the price from the expansion's price
        path (:meth:`_known_price`) and the size from its volumes and trade counts alone
        (:meth:`CsvSource.minute_volumes`), the trade's time as :meth:`_last_trade` stamps it."""
        found = self._expanded_session(symbol, t, epoch)
        if found is None or found is UNKNOWN:
            return found
        session, summary = found  # type: ignore[misc]
        price = self._path_price(symbol, session, summary, epoch)
        volumes = self._source.minute_volumes(symbol, session)  # type: ignore[attr-defined]
        if price is UNKNOWN or volumes is None:
            return UNKNOWN
        v, n = volumes
        i = min(int((epoch - summary.start) // 60), len(v) - 1)
        start = summary.start + 60.0 * i
        when = datetime.fromtimestamp(start if epoch < start + 60.0 else start + 59.0, UTC)
        size_unit = max(1, self._profile(symbol).avg_trade_size)
        trades = max(1, int(n[i]))
        size = max(1, min(int(v[i]) // trades, size_unit * 10)) if v[i] > 0 else 1
        return price, when, size

    def _last_trade(self, symbol: str, t: datetime, epoch: float) -> tuple[float, datetime, int] | None:
        size_unit = max(1, self._profile(symbol).avg_trade_size)
        for session in self._candidate_sessions(t):
            day = self.minute_arrays(symbol, session)
            if day is None:
                continue
            i = int(np.searchsorted(day.ts, epoch, side="right")) - 1
            if i < 0:
                continue
            start = float(day.ts[i])
            trades = max(1, int(day.n[i]))
            size = max(1, min(int(day.v[i]) // trades, size_unit * 10)) if day.v[i] > 0 else 1
            if epoch < start + 60.0:
                price = float(day.o[i]) * self._shock_factor(symbol, start, epoch)
                when = datetime.fromtimestamp(start, UTC)
            else:
                price = float(day.c[i]) * self._shock_factor(symbol, start + 60.0, epoch)
                when = datetime.fromtimestamp(start + 59.0, UTC)
            return round(price, 4), when, size
        return None

    def price_at(self, symbol: str, t: datetime) -> float | None:
        """Last trade price at ``t`` (see the module docstring), or None without data."""
        if symbol not in self._known:
            return None
        key = (symbol, to_epoch(t))
        prices = self._prices
        if key in prices:
            return prices[key]
        price: float | None
        known = self._known_price(symbol, t, key[1]) if key not in self._trades else UNKNOWN
        if known is UNKNOWN:
            trade = self.last_trade(symbol, t)
            price = None if trade is None else trade[0]
        else:
            price = known  # type: ignore[assignment]
        remember(prices, key, price)
        return price

    def quote_at(self, symbol: str, t: datetime) -> SimQuote | None:
        """Best bid/ask at ``t`` around :meth:`price_at`, with the spread model."""
        key = (symbol, to_epoch(t))
        if key in self._quotes:
            return self._quotes[key]
        quote = self._quote_at(symbol, t)
        if symbol in self._known:
            remember(self._quotes, key, quote)
        return quote

    def _quote_at(self, symbol: str, t: datetime) -> SimQuote | None:
        price = self.price_at(symbol, t)
        if price is None:
            return None
        phase = self.calendar.session_phase(t)
        epoch = to_epoch(t)
        if phase != "closed":
            recorded = self._source.recorded_quote(symbol, epoch)
            if recorded is not None:
                factor = self._shock_factor(symbol, float("-inf"), epoch)
                bid, ask, bid_size, ask_size, _ = recorded
                return SimQuote(round(bid * factor, 4), round(ask * factor, 4), bid_size,
                                ask_size, t.astimezone(UTC))
        profile = self._profile(symbol)
        multiplier = {"regular": 1.0, "pre": 4.0, "post": 4.0, "closed": 8.0}[phase]
        session = t.astimezone(EXCHANGE_TZ).date()
        if phase == "regular":
            opened = self.calendar.open_close(session)[0]
            if (t - opened).total_seconds() < 300:
                multiplier *= 2.0
        if self._source.volatile(symbol, session if phase != "closed" else self._last_session(t)):
            multiplier *= 2.0
        half = price * profile.spread_bps * multiplier / 10_000.0
        bid = math.floor((price - half) * 100.0 + 1e-9) / 100.0
        ask = math.ceil((price + half) * 100.0 - 1e-9) / 100.0
        if ask - bid < 0.0099:
            ask = round(bid + 0.01, 2)
        if bid <= 0:
            bid = 0.01
            ask = max(ask, 0.02)
        quote_time = t.astimezone(UTC)
        if phase == "closed":
            last = self._last_session(t)
            quote_time = min(quote_time, self.calendar.extended_hours(last)[1])
        minute = int(epoch) // 60
        mix = (minute * 2654435761 + hash_symbol(symbol)) & 0xFFFFFFFF
        depth = 12 if phase == "regular" else 4
        bid_size = 100 * (1 + (mix >> 3) % depth)
        ask_size = 100 * (1 + (mix >> 11) % depth)
        return SimQuote(round(bid, 2), round(ask, 2), bid_size, ask_size, quote_time)

    def _last_session(self, t: datetime) -> date:
        day = t.astimezone(EXCHANGE_TZ).date()
        local = t.astimezone(EXCHANGE_TZ)
        if self.calendar.is_session(day) and local.time() >= time(4, 0):
            return day
        return self.calendar.previous_session(day)
