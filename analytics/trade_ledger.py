"""Round-trip trades from fills: FIFO lots per symbol, long and short, partial fills welcome.

A :class:`TradeLedger` is fed every fill once (:meth:`TradeLedger.apply`). Fills on the side
of the open lots (or on a flat symbol) open lots (scale-in); fills on the other side close
the oldest lots first (FIFO, scale-out) and come back as :class:`ClosedTrade` records, with
an exact ``Decimal`` P&L. A fill larger than the open quantity closes everything and opens
the remainder on the other side (a reversal).

One closing fill yields one trade per run of matched lots sharing an entry strategy and an
entry session date (America/New_York), so :func:`is_day_trade` is exact even when a sale
closes yesterday's and today's shares at once.

With an :class:`analytics.excursions.ExcursionTracker` attached (``ledger.excursions``), every
trade also carries its maximum favourable and adverse excursion (``mfe_pct``/``mae_pct``) from
the prices seen while its position was open; without one (a replay of old fills) they are None.

The ledger persists through :meth:`TradeLedger.to_dict` / :meth:`TradeLedger.from_dict`
(plain JSON: money as strings, times ISO-8601 UTC), which the trading loop keeps in the
journal's state, so a restart does not forget open lots. It also remembers the last
:data:`SEEN_LIMIT` execution ids and ignores a fill it has already applied.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Iterable, Literal, Mapping, Protocol
from zoneinfo import ZoneInfo

from core.clock import EXCHANGE_TZ
from analytics.excursions import ExcursionTracker
from broker.models import to_decimal

ZERO = Decimal(0)
SEEN_LIMIT = 10_000
FORMAT_VERSION = 1

Side = Literal["buy", "sell"]


_decimal = to_decimal  # one shared coercion (models.to_decimal)

def _aware(moment: Any, name: str) -> datetime:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if not isinstance(moment, datetime):
        raise ValueError(f"{name} must be a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(timezone.utc)


@dataclass(frozen=True)
class FillRecord:
    """One execution: ``qty`` shares of ``symbol`` bought or sold at ``price``.

    ``strategy`` is the strategy that placed the order (None when unknown); ``exit_reason``
    says why a closing order was placed (``stop_loss``, ``take_profit``, ...), when known.
    """

    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    at: datetime
    strategy: str | None
    execution_id: str
    exit_reason: str | None = None

    def __post_init__(self) -> None:
        if not self.symbol or not self.symbol.strip():
            raise ValueError("fill symbol is empty")
        if self.side not in ("buy", "sell"):
            raise ValueError(f"fill side must be 'buy' or 'sell', got {self.side!r}")
        object.__setattr__(self, "qty", _decimal(self.qty, "fill qty"))
        object.__setattr__(self, "price", _decimal(self.price, "fill price"))
        if self.qty <= ZERO:
            raise ValueError(f"fill qty must be positive, got {self.qty}")
        if self.price <= ZERO:
            raise ValueError(f"fill price must be positive, got {self.price}")
        object.__setattr__(self, "at", _aware(self.at, "fill time"))
        if not self.execution_id:
            raise ValueError("fill execution_id is empty")


@dataclass(frozen=True)
class ClosedTrade:
    """A finished round trip (or the part of one that a closing fill completed).

    ``side`` is ``long`` (bought then sold) or ``short``; ``entry_price`` is the VWAP of the
    matched lots; ``pnl`` is exact; ``return_pct`` is a fraction of the entry value
    (0.05 = +5 %), as :mod:`engine.protections` expects. ``trade_id`` is deterministic (the closing
    execution id and a sequence number), so recording the same trade twice can be detected.
    """

    symbol: str
    strategy: str | None
    side: Literal["long", "short"]
    qty: Decimal
    entry_at: datetime
    exit_at: datetime
    entry_price: Decimal
    exit_price: Decimal
    pnl: Decimal
    return_pct: Decimal
    exit_reason: str | None
    holding_seconds: float
    trade_id: str = ""
    #: Maximum favourable / adverse excursion, fractions of the entry price (MFE >= 0 >= MAE);
    #: None when no price was seen while the position was open.
    mfe_pct: Decimal | None = None
    mae_pct: Decimal | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (money as strings, times ISO-8601 UTC)."""
        return {
            "trade_id": self.trade_id,
            "symbol": self.symbol,
            "strategy": self.strategy,
            "side": self.side,
            "qty": str(self.qty),
            "entry_at": self.entry_at.isoformat(),
            "exit_at": self.exit_at.isoformat(),
            "entry_price": str(self.entry_price),
            "exit_price": str(self.exit_price),
            "pnl": str(self.pnl),
            "return_pct": str(self.return_pct),
            "exit_reason": self.exit_reason,
            "holding_seconds": self.holding_seconds,
            "mfe_pct": None if self.mfe_pct is None else str(self.mfe_pct),
            "mae_pct": None if self.mae_pct is None else str(self.mae_pct),
        }


@dataclass
class Lot:
    """Open shares from one entry fill: ``qty`` left at ``price`` (``side`` buy = long)."""

    side: Side
    qty: Decimal
    price: Decimal
    at: datetime
    strategy: str | None
    execution_id: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "qty": str(self.qty),
            "price": str(self.price),
            "at": self.at.isoformat(),
            "strategy": self.strategy,
            "execution_id": self.execution_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lot:
        side = data["side"]
        if side not in ("buy", "sell"):
            raise ValueError(f"lot side must be 'buy' or 'sell', got {side!r}")
        qty = _decimal(data["qty"], "lot qty")
        if qty <= ZERO:
            raise ValueError(f"lot qty must be positive, got {qty}")
        return cls(
            side=side,
            qty=qty,
            price=_decimal(data["price"], "lot price"),
            at=_aware(data["at"], "lot time"),
            strategy=data.get("strategy"),
            execution_id=str(data.get("execution_id", "")),
        )


class _Calendar(Protocol):
    def sessions(self, start: date, end: date) -> list[date]: ...


@dataclass
class _Match:
    lot: Lot
    qty: Decimal


class TradeLedger:
    """Open lots per symbol, FIFO. Feed it fills; it hands back closed trades."""

    def __init__(self, excursions: ExcursionTracker | None = None) -> None:
        #: Price ranges of open positions, for the trades' MFE/MAE (None: not tracked).
        self.excursions = excursions
        self._lots: dict[str, deque[Lot]] = {}
        self._seen: deque[str] = deque(maxlen=SEEN_LIMIT)
        self._seen_set: set[str] = set()

    # -- feeding -------------------------------------------------------------------------

    def apply(self, fill: FillRecord) -> list[ClosedTrade]:
        """Apply one fill; return the trades it closed (empty for an entry or a repeat)."""
        if fill.execution_id in self._seen_set:
            return []
        self._remember(fill.execution_id)
        lots = self._lots.setdefault(fill.symbol, deque())
        tracker = self.excursions
        if tracker is not None:
            if not lots:
                tracker.open(fill.symbol, fill.price)
            tracker.observe(fill.symbol, fill.price)
        if not lots or lots[0].side == fill.side:
            lots.append(self._lot(fill, fill.qty))
            return []
        remaining = fill.qty
        matches: list[_Match] = []
        while remaining > ZERO and lots:
            lot = lots[0]
            take = min(lot.qty, remaining)
            matches.append(_Match(replace(lot), take))
            lot.qty -= take
            remaining -= take
            if lot.qty == ZERO:
                lots.popleft()
        trades = self._trades(fill, matches, tracker)
        if remaining > ZERO:  # reversal: the rest opens a position on the other side
            lots.append(self._lot(fill, remaining))
            if tracker is not None:
                tracker.open(fill.symbol, fill.price)
        if not lots:
            del self._lots[fill.symbol]
            if tracker is not None:
                tracker.close(fill.symbol)
        return trades

    def apply_all(self, fills: Iterable[FillRecord]) -> list[ClosedTrade]:
        """Apply fills in order (e.g. replaying the journal); return every closed trade."""
        closed: list[ClosedTrade] = []
        for fill in fills:
            closed.extend(self.apply(fill))
        return closed

    # -- reading -------------------------------------------------------------------------

    def open_lots(self, symbol: str) -> list[Lot]:
        """The open lots of ``symbol``, oldest first (copies: changing them changes nothing)."""
        return [replace(lot) for lot in self._lots.get(symbol, ())]

    def position(self, symbol: str) -> Decimal:
        """The signed quantity the lots add up to (negative for a short)."""
        total = sum((lot.qty for lot in self._lots.get(symbol, ())), ZERO)
        lots = self._lots.get(symbol)
        return -total if lots and lots[0].side == "sell" else total

    def symbols(self) -> list[str]:
        """Symbols with open lots."""
        return sorted(self._lots)

    def holding_sessions(self, symbol: str, now: datetime, calendar: _Calendar) -> int | None:
        """Trading sessions since the oldest open lot of ``symbol`` was entered (0 = today).

        None when nothing is open.
        """
        lots = self._lots.get(symbol)
        if not lots:
            return None
        start = lots[0].at.astimezone(EXCHANGE_TZ).date()
        end = _aware(now, "now").astimezone(EXCHANGE_TZ).date()
        if end <= start:
            return 0
        return max(len([d for d in calendar.sessions(start, end) if start < d <= end]), 0)

    # -- persistence ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: the open lots and the recent execution ids."""
        return {
            "version": FORMAT_VERSION,
            "lots": {symbol: [lot.to_dict() for lot in lots] for symbol, lots in self._lots.items()},
            "seen": list(self._seen),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TradeLedger:
        """Rebuild a ledger saved by :meth:`to_dict`; a malformed snapshot is a ValueError."""
        version = data.get("version")
        if version != FORMAT_VERSION:
            raise ValueError(f"trade ledger snapshot version {version!r} is not {FORMAT_VERSION}")
        ledger = cls()
        try:
            for symbol, lots in dict(data.get("lots", {})).items():
                restored = deque(Lot.from_dict(lot) for lot in lots)
                if len({lot.side for lot in restored}) > 1:
                    raise ValueError(f"{symbol} has long and short lots at once")
                if restored:
                    ledger._lots[str(symbol)] = restored
        except (KeyError, TypeError) as exc:
            raise ValueError(f"invalid trade ledger snapshot: {exc!r}") from exc
        for execution_id in data.get("seen", []):
            ledger._remember(str(execution_id))
        return ledger

    # -- internals -----------------------------------------------------------------------

    def _remember(self, execution_id: str) -> None:
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(execution_id)
        self._seen_set.add(execution_id)

    @staticmethod
    def _lot(fill: FillRecord, qty: Decimal) -> Lot:
        return Lot(fill.side, qty, fill.price, fill.at, fill.strategy, fill.execution_id)

    @staticmethod
    def _trades(fill: FillRecord, matches: list[_Match], tracker: ExcursionTracker | None) -> list[ClosedTrade]:
        groups: list[list[_Match]] = []
        for match in matches:
            key = (match.lot.strategy, _session_date(match.lot.at))
            if groups and (groups[-1][0].lot.strategy, _session_date(groups[-1][0].lot.at)) == key:
                groups[-1].append(match)
            else:
                groups.append([match])
        trades: list[ClosedTrade] = []
        for number, group in enumerate(groups):
            qty = sum((m.qty for m in group), ZERO)
            cost = sum((m.qty * m.lot.price for m in group), ZERO)
            entry_price = cost / qty
            long = group[0].lot.side == "buy"
            proceeds = fill.price * qty
            pnl = proceeds - cost if long else cost - proceeds
            entry_at = min(m.lot.at for m in group)
            mfe, mae = (tracker.for_trade(fill.symbol, "long" if long else "short", entry_price, fill.price)
                        if tracker is not None else (None, None))
            trades.append(
                ClosedTrade(
                    symbol=fill.symbol,
                    strategy=group[0].lot.strategy,
                    side="long" if long else "short",
                    qty=qty,
                    entry_at=entry_at,
                    exit_at=fill.at,
                    entry_price=entry_price,
                    exit_price=fill.price,
                    pnl=pnl,
                    return_pct=pnl / cost,
                    exit_reason=fill.exit_reason,
                    holding_seconds=(fill.at - entry_at).total_seconds(),
                    trade_id=f"{fill.execution_id}#{number}",
                    mfe_pct=mfe,
                    mae_pct=mae,
                )
            )
        return trades


def _session_date(moment: datetime, tz: ZoneInfo = EXCHANGE_TZ) -> date:
    return moment.astimezone(tz).date()


def is_day_trade(trade: ClosedTrade, tz: ZoneInfo = EXCHANGE_TZ) -> bool:
    """True when the trade opened and closed on the same exchange session date (ET)."""
    return _session_date(trade.entry_at, tz) == _session_date(trade.exit_at, tz)
