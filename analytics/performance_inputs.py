"""The inputs of :func:`analytics.performance.compute_performance`, normalised: an equity
curve of ``(aware UTC datetime, Decimal)`` points and :class:`TradeRecord` closed trades.
``normalize_*`` reject malformed input (``ValueError``); ``usable_*`` read a journal that may
hold anything, keeping what is sane and naming each row they skip (:class:`SkippedRow`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Iterable, Mapping

from broker.models import to_decimal
from market.market_data import MAX_SANE_PRICE as _MAX_BAR_PRICE

UNKNOWN_STRATEGY = "unknown"
_ZERO = Decimal(0)

EquityPoint = tuple[datetime, Decimal]


# -- strict inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TradeRecord:
    """One closed trade, normalised: Decimal money, aware UTC times, ``return_pct`` a fraction."""

    symbol: str
    strategy: str
    side: str
    qty: Decimal
    entry_at: datetime
    exit_at: datetime
    entry_price: Decimal
    exit_price: Decimal
    pnl: Decimal
    return_pct: Decimal
    exit_reason: str | None
    #: Maximum favourable / adverse excursion (fractions of the entry price), when known.
    mfe_pct: Decimal | None = None
    mae_pct: Decimal | None = None

    @property
    def holding_hours(self) -> float:
        """Time from entry to exit, in hours."""
        return (self.exit_at - self.entry_at).total_seconds() / 3600.0


_to_decimal = to_decimal  # one shared coercion (models.to_decimal)

def _to_utc(value: Any, what: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{what} is not an ISO-8601 time: {value!r}") from None
    if not isinstance(value, datetime):
        raise ValueError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(timezone.utc)


def normalize_curve(equity_curve: Iterable[Any], *, name: str = "equity curve") -> list[EquityPoint]:
    """Validate a curve of ``(time, equity)`` pairs (or ``{"at", "equity"}`` mappings).

    Times must be timezone-aware and in order; equity positive and finite. Two points at the
    same instant keep the later one. Raises ``ValueError`` naming the offending point.
    """
    points: list[EquityPoint] = []
    for index, item in enumerate(equity_curve):
        if isinstance(item, Mapping):
            at_raw = item.get("at", item.get("timestamp"))
            value_raw = item.get("equity", item.get("value"))
        else:
            try:
                at_raw, value_raw = item
            except (TypeError, ValueError):
                raise ValueError(f"{name} point {index} must be a (time, equity) pair, got {item!r}") from None
        at = _to_utc(at_raw, f"{name} point {index} time")
        value = _to_decimal(value_raw, f"{name} point {index} value")
        if value <= _ZERO:
            raise ValueError(f"{name} point {index} value must be positive, got {value}")
        if points and at < points[-1][0]:
            raise ValueError(
                f"{name} point {index} ({at.isoformat()}) is earlier than the point before it "
                f"({points[-1][0].isoformat()}): the curve must be in time order"
            )
        if points and at == points[-1][0]:
            points[-1] = (at, value)
        else:
            points.append((at, value))
    if not points:
        raise ValueError(f"{name} is empty: at least one (time, equity) point is needed")
    return points


def _field(trade: Any, key: str) -> Any:
    if isinstance(trade, Mapping):
        return trade.get(key)
    return getattr(trade, key, None)


def normalize_trades(trades: Iterable[Any]) -> list[TradeRecord]:
    """Closed trades (objects such as ``trade_ledger.ClosedTrade`` or dicts) as records.

    Needs symbol, qty, entry_at, exit_at, entry_price, exit_price and pnl; strategy, side,
    return_pct and exit_reason are optional (a missing return is pnl over entry value).
    Strings are parsed (journal rows store Decimal as text and times as ISO-8601).
    The result is ordered by exit time.
    """
    records: list[TradeRecord] = []
    for index, trade in enumerate(trades):
        symbol = _field(trade, "symbol")
        if not isinstance(symbol, str) or not symbol.strip():
            raise ValueError(f"trade {index}: symbol is missing")
        label = f"trade {index} ({symbol})"
        for required in ("qty", "entry_at", "exit_at", "entry_price", "exit_price", "pnl"):
            if _field(trade, required) is None:
                raise ValueError(f"{label}: {required} is missing")
        qty = _to_decimal(_field(trade, "qty"), f"{label} qty")
        entry_price = _to_decimal(_field(trade, "entry_price"), f"{label} entry_price")
        exit_price = _to_decimal(_field(trade, "exit_price"), f"{label} exit_price")
        pnl = _to_decimal(_field(trade, "pnl"), f"{label} pnl")
        entry_at = _to_utc(_field(trade, "entry_at"), f"{label} entry_at")
        exit_at = _to_utc(_field(trade, "exit_at"), f"{label} exit_at")
        if exit_at < entry_at:
            raise ValueError(f"{label}: exit_at {exit_at.isoformat()} is before entry_at {entry_at.isoformat()}")
        raw_return = _field(trade, "return_pct")
        if raw_return is not None:
            return_pct = _to_decimal(raw_return, f"{label} return_pct")
        else:
            notional = abs(qty) * entry_price
            if notional == _ZERO:
                raise ValueError(f"{label}: return_pct is missing and qty x entry_price is zero")
            return_pct = pnl / notional
        strategy = _field(trade, "strategy")
        side = _field(trade, "side")
        reason = _field(trade, "exit_reason")
        mfe, mae = (_field(trade, "mfe_pct"), _field(trade, "mae_pct"))
        records.append(
            TradeRecord(
                symbol=symbol.strip(),
                strategy=str(strategy) if strategy else UNKNOWN_STRATEGY,
                side=str(side) if side else "unknown",
                qty=qty,
                entry_at=entry_at,
                exit_at=exit_at,
                entry_price=entry_price,
                exit_price=exit_price,
                pnl=pnl,
                return_pct=return_pct,
                exit_reason=str(reason) if reason else None,
                mfe_pct=None if mfe is None else _to_decimal(mfe, f"{label} mfe_pct"),
                mae_pct=None if mae is None else _to_decimal(mae, f"{label} mae_pct"),
            )
        )
    records.sort(key=lambda t: (t.exit_at, t.entry_at))
    return records


# -- lenient inputs: a journal that holds anything --------------------------------------------

#: Equity beyond this (more money than exists) is a broken reading, not a result.
MAX_SANE_EQUITY = Decimal("1e15")
#: A share price beyond this is a broken reading (see ``market_data.MAX_SANE_PRICE``).
MAX_SANE_PRICE = Decimal(str(_MAX_BAR_PRICE))


@dataclass(frozen=True)
class SkippedRow:
    """A journal row a report left out, and why (shown in the report, never a traceback)."""

    kind: str  # "equity" or "trade"
    row: str  # the row's id or position, as text
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "row": self.row, "reason": self.reason}


def usable_curve(rows: Iterable[Any]) -> tuple[list[EquityPoint], list[SkippedRow]]:
    """The points of ``rows`` a report can use, in time order, and the rows it skipped.

    ``rows``: ``(time, equity)`` pairs or mappings with ``at``/``equity`` (and ``id``), as
    text or parsed. A point is skipped when its time does not parse or has no zone, or its
    equity is not a finite positive number below :data:`MAX_SANE_EQUITY`. Never raises.
    """
    points: list[EquityPoint] = []
    skipped: list[SkippedRow] = []
    for index, item in enumerate(rows):
        label = str(item.get("id", index)) if isinstance(item, Mapping) else str(index)
        try:
            point = normalize_curve([item], name=f"equity row {label}")[0]
            if point[1] > MAX_SANE_EQUITY:
                raise ValueError(f"equity row {label} value {point[1]} is not a believable equity")
        except (ValueError, TypeError, ArithmeticError) as exc:
            skipped.append(SkippedRow("equity", label, str(exc).replace(" point 0", "", 1)))
            continue
        points.append(point)
    points.sort(key=lambda p: p[0])
    deduped: list[EquityPoint] = []
    for point in points:  # two points at one instant: the later row wins (as normalize_curve)
        if deduped and deduped[-1][0] == point[0]:
            deduped[-1] = point
        else:
            deduped.append(point)
    return deduped, skipped


def usable_trades(rows: Iterable[Any]) -> tuple[list[TradeRecord], list[SkippedRow]]:
    """The closed trades of ``rows`` a report can use, and the rows it skipped.

    Each row goes through :func:`normalize_trades` alone; on top of its checks, a trade with
    a zero quantity, a price that is not positive or absurd (above :data:`MAX_SANE_PRICE`),
    or an absurd P&L is skipped. Never raises.
    """
    records: list[TradeRecord] = []
    skipped: list[SkippedRow] = []
    for index, item in enumerate(rows):
        label = str(item.get("id", index)) if isinstance(item, Mapping) else str(index)
        try:
            record = normalize_trades([item])[0]
            problem = _trade_problem(record)
            if problem is not None:
                raise ValueError(f"trade {label} ({record.symbol}): {problem}")
        except (ValueError, TypeError, ArithmeticError, AttributeError) as exc:
            skipped.append(SkippedRow("trade", label, str(exc).replace("trade 0", f"trade {label}", 1)))
            continue
        records.append(record)
    records.sort(key=lambda t: (t.exit_at, t.entry_at))
    return records, skipped


def _trade_problem(trade: TradeRecord) -> str | None:
    if trade.qty == _ZERO:
        return "zero quantity"
    for name in ("entry_price", "exit_price"):
        price = getattr(trade, name)
        if price <= _ZERO or price > MAX_SANE_PRICE:
            return f"{name} {price} is not a usable price"
    if abs(trade.pnl) > MAX_SANE_EQUITY or abs(trade.return_pct) > MAX_SANE_EQUITY:
        return f"pnl {trade.pnl} is not believable"
    return None
