"""Account activities (FILL) and portfolio history of the simulated account.

Activities are kept in execution order; pages follow Alpaca's cursor rule: ``page_token`` is
the ``id`` of the last item of the previous page. Portfolio history is recomputed on demand
from the ledger's journal and the market's prices, so it costs nothing while the simulation
runs: equity at a point = cash then + each holding then x the market price then.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from core.clock import EXCHANGE_TZ
from simulator.accounts import Ledger
from simulator.errors import validation_error
from simulator.sessions import SessionDay, Sessions
from simulator.wire import et_date, et_datetime, num, parse_int, parse_time, ts

ZERO = Decimal(0)
ACTIVITY_PAGE_MAX = 100
TIMEFRAMES = {"1Min": 1, "5Min": 5, "15Min": 15, "1H": 60, "1D": None}
MAX_INTRADAY_DAYS = 30
PERIOD = re.compile(r"^(\d+)([DWMA])$")

PriceAt = Callable[[str, datetime], Decimal | None]


class ActivityLog:
    """FILL activities in execution order."""

    def __init__(self) -> None:
        self._entries: list[tuple[datetime, dict[str, Any]]] = []

    @property
    def items(self) -> list[dict[str, Any]]:
        """Every FILL activity, oldest first."""
        return [item for _, item in self._entries]

    def add_fill(
        self,
        *,
        activity_uuid: str,
        at: datetime,
        kind: str,
        price: Decimal,
        qty: Decimal,
        side: str,
        symbol: str,
        leaves_qty: Decimal,
        order_id: str,
        cum_qty: Decimal,
        order_status: str,
    ) -> dict[str, Any]:
        moment = at.astimezone(EXCHANGE_TZ)  # Alpaca writes the id's time in New York time
        stamp = moment.strftime("%Y%m%d%H%M%S") + f"{moment.microsecond // 1000:03d}"
        item = {
            "id": f"{stamp}::{activity_uuid}",
            "activity_type": "FILL",
            "transaction_time": ts(at),
            "type": kind,
            "price": num(price),
            "qty": num(qty),
            "side": side,
            "symbol": symbol,
            "leaves_qty": num(leaves_qty),
            "order_id": order_id,
            "cum_qty": num(cum_qty),
            "order_status": order_status,
        }
        self._entries.append((at, item))
        return item

    def query(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``GET /v2/account/activities`` with Alpaca's filters and cursor pagination."""
        types_param = params.get("activity_types") or params.get("activity_type")
        if types_param:
            wanted = {t.strip().upper() for t in str(types_param).split(",") if t.strip()}
        else:
            wanted = {"FILL"}
        category = params.get("category")
        if category is not None:
            if types_param:
                raise validation_error("category cannot be combined with activity_types")
            if category not in ("trade_activity", "non_trade_activity"):
                raise validation_error(f"invalid category: {category!r}")
            wanted = {"FILL"} if category == "trade_activity" else set()
        direction = str(params.get("direction") or "desc").lower()
        if direction not in ("asc", "desc"):
            raise validation_error(f"invalid direction: {direction!r}")
        page_size = parse_int(params.get("page_size", ACTIVITY_PAGE_MAX), "page_size", low=1, high=ACTIVITY_PAGE_MAX)
        after = parse_time(params["after"], "after") if params.get("after") else None
        until = parse_time(params["until"], "until") if params.get("until") else None
        on_date: date | None = None
        if params.get("date"):
            on_date = parse_time(params["date"], "date").astimezone(EXCHANGE_TZ).date()

        selected = []
        for moment, item in self._entries if direction == "asc" else reversed(self._entries):
            if item["activity_type"] not in wanted:
                continue
            if after is not None and not moment > after:
                continue
            if until is not None and not moment < until:
                continue
            if on_date is not None and et_date(moment) != on_date:
                continue
            selected.append(item)
        token = params.get("page_token")
        if token:
            ids = [item["id"] for item in selected]
            if token not in ids:
                raise validation_error(f"invalid page_token: {token!r}")
            selected = selected[ids.index(token) + 1 :]
        return [dict(item) for item in selected[:page_size]]


def equity_series(ledger: Ledger, moments: list[datetime], price_at: PriceAt) -> list[Decimal]:
    """Equity at each of ``moments`` (ascending) from the journal and market prices.

    A symbol without a market price at some moment is valued at its last execution price.
    """
    results: list[Decimal] = []
    cash = ledger.initial_cash
    holdings: dict[str, Decimal] = {}
    last_fill: dict[str, Decimal] = {}
    journal = ledger.journal
    index = 0
    for moment in moments:
        while index < len(journal) and journal[index].time <= moment:
            entry = journal[index]
            cash += entry.cash_delta
            holdings[entry.symbol] = holdings.get(entry.symbol, ZERO) + entry.qty_delta
            if entry.qty_delta:
                last_fill[entry.symbol] = abs(entry.cash_delta / entry.qty_delta)
            index += 1
        value = cash
        for symbol, qty in holdings.items():
            if qty == 0:
                continue
            price = price_at(symbol, moment)
            value += qty * (price if price is not None else last_fill.get(symbol, ZERO))
        results.append(value)
    return results


def _window(params: Mapping[str, Any], now: datetime, sessions: Sessions, intraday: bool) -> tuple[datetime, datetime]:
    end = parse_time(params["end"], "end") if params.get("end") else now
    end = min(end, now)
    if params.get("start"):
        start = parse_time(params["start"], "start")
        if params.get("period") and params.get("end"):
            raise validation_error("at most two of start, end and period may be given")
    else:
        period = str(params.get("period") or ("1D" if intraday else "1M"))
        match = PERIOD.match(period)
        if not match:
            raise validation_error(f"invalid period: {period!r} (use <n>D, <n>W, <n>M or <n>A)")
        count, unit = int(match.group(1)), match.group(2)
        if count < 1:
            raise validation_error("period must be at least 1")
        if unit in ("D", "W"):
            sessions_back = count if unit == "D" else count * 5
            day = et_date(end)
            first = sessions.day(day) or sessions.previous_before(day)
            for _ in range(sessions_back - 1):
                first = sessions.previous_before(first.date)
            start = et_datetime(first.date, datetime.min.time())
        else:
            days = count * (30 if unit == "M" else 365)
            start = end - timedelta(days=days)
    if start > end:
        raise validation_error("start must not be after end")
    return start, end


def _default_timeframe(params: Mapping[str, Any]) -> str:
    period = str(params.get("period") or "1M")
    match = PERIOD.match(period)
    if not match:
        return "1D"
    count, unit = int(match.group(1)), match.group(2)
    days = count * {"D": 1, "W": 7, "M": 30, "A": 365}[unit]
    if days < 7:
        return "1Min" if days <= 1 else "15Min"
    return "15Min" if days < 30 else "1D"


def portfolio_history(
    params: Mapping[str, Any], *, now: datetime, sessions: Sessions, ledger: Ledger, price_at: PriceAt
) -> dict[str, Any]:
    """``GET /v2/account/portfolio/history``: numbers are JSON numbers, timestamps UNIX seconds.

    ``1D`` points are labelled at midnight New York of each session and valued at its close
    (now, for a session still under way). Intraday points are left-labelled and valued at
    the end of their window, over regular hours (``intraday_reporting=market_hours``) or
    04:00-20:00 (``extended_hours``/``continuous``). ``pnl_reset=per_day`` (the default for
    intraday) measures profit/loss from the previous session's close each day.
    """
    timeframe = str(params.get("timeframe") or _default_timeframe(params))
    if timeframe not in TIMEFRAMES:
        raise validation_error(f"invalid timeframe: {timeframe!r} (allowed: {', '.join(TIMEFRAMES)})")
    step = TIMEFRAMES[timeframe]
    intraday = step is not None
    reporting = str(params.get("intraday_reporting") or "market_hours")
    if reporting not in ("market_hours", "extended_hours", "continuous"):
        raise validation_error(f"invalid intraday_reporting: {reporting!r}")
    pnl_reset = str(params.get("pnl_reset") or "per_day")
    if pnl_reset not in ("per_day", "no_reset"):
        raise validation_error(f"invalid pnl_reset: {pnl_reset!r}")
    start, end = _window(params, now, sessions, intraday)
    if intraday and end - start > timedelta(days=MAX_INTRADAY_DAYS):
        raise validation_error(f"intraday timeframes allow at most {MAX_INTRADAY_DAYS} days")

    days = sessions.between(et_date(start), et_date(end))
    labels: list[datetime] = []
    valued_at: list[datetime] = []
    day_of: list[SessionDay] = []
    for day in days:
        if not intraday:
            label = et_datetime(day.date, datetime.min.time())
            if day.open > end:
                continue
            labels.append(label)
            valued_at.append(min(day.close, end))
            day_of.append(day)
            continue
        first, last = (day.open, day.close) if reporting == "market_hours" else (day.pre_start, day.post_end)
        width = timedelta(minutes=step or 1)
        moment = first
        while moment < last and moment < end:
            if moment >= start:
                labels.append(moment)
                valued_at.append(min(moment + width, last, end))
                day_of.append(day)
            moment += width

    base_day = sessions.previous_before(days[0].date) if days else sessions.previous_before(et_date(start))
    previous_closes = {day.date: sessions.previous_before(day.date).close for day in {d.date: d for d in day_of}.values()}
    base_moments = sorted({base_day.close, *previous_closes.values()})
    base_values = dict(zip(base_moments, equity_series(ledger, base_moments, price_at)))
    base_value = base_values[base_day.close]
    equities = equity_series(ledger, valued_at, price_at)

    profit_loss: list[float] = []
    profit_loss_pct: list[float | None] = []
    for value, day in zip(equities, day_of):
        base = base_values[previous_closes[day.date]] if intraday and pnl_reset == "per_day" else base_value
        pl = value - base
        profit_loss.append(round(float(pl), 2))
        profit_loss_pct.append(round(float(pl / base), 6) if base else None)
    return {
        "timestamp": [int(label.timestamp()) for label in labels],
        "equity": [round(float(value), 2) for value in equities],
        "profit_loss": profit_loss,
        "profit_loss_pct": profit_loss_pct,
        "base_value": round(float(base_value), 2),
        "base_value_asof": base_day.date.isoformat(),
        "timeframe": timeframe,
        "cashflow": {},
    }
