"""``BookClock``: walks the simulated broker's book through time, minute by minute only
where it matters.

The engine (:class:`simulator.engine.SimBroker`) says what happens at a session boundary
(orders activate, auctions run, DAY orders expire, the close is recorded) and in a minute bar
(orders match); this class decides which boundaries and which minutes are visited:

* with no open order the book jumps straight to the target, recording the closes it passes;
* otherwise each day is cut into phases (closed, pre-market, regular, after-hours, closed)
  whose starts and ends are announced, and within a trading phase only minutes whose bar may
  fill or trigger a working order are matched (``Market.first_bar_reaching``), symbols whose
  session range no resting price reaches are skipped (``Market.session_range``);
* :meth:`BookClock.book_can_change` answers, without reading a minute bar, whether moving on
  could change anything (the backtest's fast-forward relies on it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from simulator.orders import SimOrder
from simulator.sessions import SessionDay, Sessions
from simulator.wire import et_date, et_datetime, floor_minute

ONE_MINUTE = timedelta(minutes=1)


def _reach_test(order: SimOrder, minute: datetime) -> tuple[float, float, float]:
    """``(from_epoch, low_at_most, high_at_least)``: the bars on which ``order`` may execute
    or change state (see :meth:`simulator.market.Market.first_bar_reaching`)."""
    start = max(order.eligible_from, minute).timestamp()
    buy = order.side == "buy"
    kind = order.type
    if (kind == "limit" or (kind == "stop_limit" and order.triggered)) and order.limit_price is not None:
        price = float(order.limit_price)
        return (start, price, math.inf) if buy else (start, -math.inf, price)
    if kind in ("stop", "stop_limit") and order.stop_price is not None:
        price = float(order.stop_price)
        return (start, -math.inf, price) if buy else (start, price, math.inf)
    return start, math.inf, -math.inf  # market orders, trailing stops: every bar


def _may_reach(
    bounds: tuple[float, float], tests: Iterable[tuple[float, float, float]], margin: float = 0.0
) -> bool:
    """Whether a bar whose prices all lie in ``bounds = (low, high)`` may pass any of
    ``tests`` (:func:`_reach_test`); ``margin`` widens the bounds by that fraction of each
    level (0: exactly the float comparisons of ``Market.first_bar_reaching``)."""
    low, high = bounds
    for _, low_at_most, high_at_least in tests:
        if low_at_most == math.inf:
            return True
        if low <= low_at_most + abs(low_at_most) * margin or high >= high_at_least - abs(high_at_least) * margin:
            return True
    return False


# book_can_change compares a session's range with order prices with this relative margin.
REACH_MARGIN = 1e-9
# Orders book_can_change can reason about: resting limits and stops (market orders and
# trailing stops may change at any bar; auctions and immediate orders always act).
_RESTING_TYPES = frozenset({"limit", "stop", "stop_limit"})
_RESTING_TIFS = frozenset({"day", "gtc"})


class BookClock:
    """The processed-until cursor of the book and the walk from it to a later minute.

    ``open_orders``: the engine's open orders by id (read only). The callbacks are the
    engine's: ``on_phase_start``/``on_phase_end`` ``(day, phase, at)``, ``match_minute``
    ``(symbol, orders, bar, minute)``, ``record_close(day)`` for a close passed while idle.
    """

    def __init__(
        self,
        market: Any,
        sessions: Sessions,
        open_orders: Mapping[str, SimOrder],
        start: datetime,
        *,
        on_phase_start: Callable[[SessionDay, str, datetime], None],
        on_phase_end: Callable[[SessionDay, str, datetime], None],
        match_minute: Callable[[str, list[SimOrder], Any, datetime], None],
        record_close: Callable[[SessionDay], None],
    ) -> None:
        self.market = market
        self.sessions = sessions
        self.cursor = start
        self._open_orders = open_orders
        self._on_phase_start = on_phase_start
        self._on_phase_end = on_phase_end
        self._match_minute = match_minute
        self._record_close = record_close

    def advance_to(self, t: datetime) -> None:
        """Process every complete minute up to ``t``: triggers, fills, OCO, expiries, closes.

        Minutes are only iterated for symbols that have working orders, and only while any
        order is working; otherwise the book jumps from one session boundary (pre-market
        start, open, close, after-hours end) to the next. Idempotent for ``t`` already passed.
        """
        target = floor_minute(t)
        if not self._open_orders and self.cursor < target:
            self._advance_idle(target)
            return
        while self.cursor < target:
            day_date = et_date(self.cursor)
            next_midnight = et_datetime(day_date + timedelta(days=1), datetime.min.time())
            day = self.sessions.day(day_date)
            if day is None:
                self.cursor = min(target, next_midnight)
                continue
            midnight = et_datetime(day_date, datetime.min.time())
            segments = (
                ("closed", midnight, day.pre_start),
                ("pre", day.pre_start, day.open),
                ("regular", day.open, day.close),
                ("post", day.close, day.post_end),
                ("closed", day.post_end, next_midnight),
            )
            for phase, start, end in segments:
                if end <= self.cursor:
                    continue
                if start >= target:
                    break
                lo, hi = max(self.cursor, start), min(target, end)
                if lo == start:
                    self._on_phase_start(day, phase, lo)
                if phase != "closed":
                    self._run_minutes(phase, lo, hi)
                if hi == end:
                    self._on_phase_end(day, phase, hi)
                self.cursor = hi

    def _advance_idle(self, target: datetime) -> None:
        """:meth:`advance_to` with no open order: nothing activates, matches, expires or runs
        an auction, so of the phase steps only the closes passed record their snapshots."""
        for day in self.sessions.between(et_date(self.cursor), et_date(target)):
            if self.cursor < day.close <= target:
                self._record_close(day)
        self.cursor = target

    def book_can_change(self, until: datetime) -> bool:
        """Whether :meth:`advance_to` ``(until)`` might change any order or position.

        False only when advancing the book from where it is (:attr:`processed_until`) to
        ``until`` provably changes nothing: no order activates, triggers, fills (fully or
        partly), expires or is canceled, no trailing-stop mark moves, no auction runs (so no
        position changes). It reads no minute bar: resting limit and stop prices are compared
        with each session's price range (``Market.session_range``, the daily bar's low and
        high for CSV daily data) with a small margin. Conservative: True whenever unsure
        (market orders, trailing stops, opg/cls/ioc/fok orders, orders not yet active, a DAY
        order while a close or after-hours end falls in the span, a session whose range the
        market cannot give, e.g. a synthetic market or a symbol with shocks).
        """
        target = floor_minute(until)
        cursor = self.cursor
        if target <= cursor or not self._open_orders:
            return False
        days = [
            d for d in self.sessions.between(et_date(cursor), et_date(target))
            if d.pre_start < target and d.post_end > cursor
        ]
        ranger = getattr(self.market, "session_range", None)
        for order in self._open_orders.values():
            if order.status == "held":
                if order.parent_id in self._open_orders:
                    continue  # waits for its (open) parent, which is examined itself
                return True
            if not order.is_working or order.type not in _RESTING_TYPES or order.time_in_force not in _RESTING_TIFS:
                return True
            for day in days:
                first, last = (day.pre_start, day.post_end) if order.extended_hours else (day.open, day.close)
                if order.time_in_force == "day" and cursor < last <= target:
                    return True  # expires in the span
                if not (first < target and last > cursor):
                    continue  # not matched in the span that day
                bounds = ranger(order.symbol, day.date) if ranger is not None else None
                if bounds is None or _may_reach(bounds, (_reach_test(order, max(cursor, first)),), REACH_MARGIN):
                    return True
        return False

    def _run_minutes(self, phase: str, lo: datetime, hi: datetime) -> None:
        """Match the working orders against the bars of ``[lo, hi)`` (one phase of one day).

        Only minutes in which some working order can execute or change its trigger state are
        visited (:meth:`_next_event`); any other minute would leave the book as it is.
        """
        minute = lo
        while minute < hi:
            active = self._working_by_symbol(phase)
            tests = {symbol: [_reach_test(order, minute) for order in orders] for symbol, orders in active.items()}
            self._drop_unreachable(active, tests, minute)
            if not active:
                return
            found = self._next_event(active, minute, hi, tests)
            if found is None:
                return
            minute = found
            for symbol, orders in active.items():
                bar = self.market.bar_at(symbol, minute)
                if bar is not None:
                    self._match_minute(symbol, orders, bar, minute)
            minute += ONE_MINUTE

    def _next_event(
        self, active: dict[str, list[SimOrder]], minute: datetime, hi: datetime,
        tests: dict[str, list[tuple[float, float, float]]] | None = None,
    ) -> datetime | None:
        """The first minute in ``[minute, hi)`` whose bar may fill or trigger one of ``active``.

        A limit needs the bar to reach its price, a stop its stop price (a triggered stop-limit
        its limit); market and trailing-stop orders (whose mark moves) need any bar. Prices
        are compared as floats, which can only add minutes (checked exactly by the matcher),
        never skip one. A market without ``first_bar_reaching`` is scanned minute by minute.
        """
        finder = getattr(self.market, "first_bar_reaching", None)
        if finder is None:
            return minute
        best: datetime | None = None
        for symbol, orders in active.items():
            checks = tests[symbol] if tests is not None else [_reach_test(order, minute) for order in orders]
            found = finder(symbol, minute, hi if best is None else best, checks)
            if found is not None:
                best = found
        return best

    def _drop_unreachable(
        self, active: dict[str, list[SimOrder]], tests: dict[str, list[tuple[float, float, float]]], minute: datetime
    ) -> None:
        """Remove from ``active`` the symbols whose ``tests`` no bar of ``minute``'s day passes.

        Read from the session's price range (``Market.session_range``, no minute bars) with
        the same float comparisons as ``first_bar_reaching``: a symbol dropped here would
        have had no event found and no bar matched that day (matching a bar that reaches no
        resting price changes nothing), so dropping it changes nothing either.
        """
        ranger = getattr(self.market, "session_range", None)
        if ranger is None or not active:
            return
        session = et_date(minute)
        for symbol in list(active):
            bounds = ranger(symbol, session)
            if bounds is not None and not _may_reach(bounds, tests[symbol]):
                del active[symbol]

    def _working_by_symbol(self, phase: str) -> dict[str, list[SimOrder]]:
        active: dict[str, list[SimOrder]] = {}
        for order in self._open_orders.values():
            if not order.is_working or order.time_in_force in ("opg", "cls", "ioc", "fok"):
                continue
            if phase != "regular" and not order.extended_hours:
                continue
            active.setdefault(order.symbol, []).append(order)
        return active
