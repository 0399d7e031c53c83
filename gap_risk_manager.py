"""Overnight gap risk: what the open (or the pre-market) did to the positions held at the close.

At the close the loop calls :meth:`GapRiskManager.record_close` with the closing prices of
the universe and the positions held; the returned dict goes to the journal, and
:meth:`GapRiskManager.load_close` restores it after a restart. In the pre-market and at the
open, :meth:`GapRiskManager.assess` compares current prices with those closes:

* per symbol, the gap ``(price - close) / close`` and, for a held position, its dollar
  impact ``qty x (price - close)`` (signed: a short position loses on a gap up);
* a level from ``settings.gap_risk`` on the size of the gap: LOW (< ``moderate``, 2 %),
  MODERATE (< ``high``, 4 %), HIGH (< ``extreme``, 7 %), EXTREME (>= 7 %); the report's
  level is the worst among the symbols assessed, held or only watched;
* an alert, logged as ``gap_risk``, for every gap of ``alert_threshold`` (2 %) or more;
* the portfolio's gap exposure: the sum of absolute impacts and the net impact, also as a
  fraction of equity when equity is given;
* ``defensive_required`` when the level is HIGH or worse (the loop then switches the
  defensive strategy on).

Pure: no clock, no broker; prices and positions are explicit inputs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Literal, Mapping, Protocol, Sequence, Union

import structlog
from broker.models import to_decimal

log = structlog.get_logger(__name__)

ZERO = Decimal(0)

Phase = Literal["pre", "regular"]


class GapLevel(str, enum.Enum):
    """How large a gap is, from the ``gap_risk`` thresholds."""

    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"
    EXTREME = "extreme"

    @property
    def rank(self) -> int:
        return _RANKS[self]


_RANKS = {GapLevel.LOW: 0, GapLevel.MODERATE: 1, GapLevel.HIGH: 2, GapLevel.EXTREME: 3}


class _HasQty(Protocol):
    @property
    def qty(self) -> Any: ...


class _Position(Protocol):
    @property
    def symbol(self) -> str: ...
    @property
    def qty(self) -> Any: ...


#: Positions as ``{symbol: qty}``, ``{symbol: position}`` or a sequence of objects with
#: ``symbol`` and signed ``qty`` (``models.Position``, ``risk_manager.PositionView``).
PositionsLike = Union[Mapping[str, Union[Decimal, int, str, _HasQty]], Sequence[_Position]]


@dataclass(frozen=True)
class GapItem:
    """One symbol's gap: previous close, current price, gap fraction, level, position impact."""

    symbol: str
    previous_close: Decimal
    price: Decimal
    gap_pct: Decimal
    level: GapLevel
    qty: Decimal
    dollar_impact: Decimal

    @property
    def held(self) -> bool:
        return self.qty != ZERO

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "previous_close": str(self.previous_close),
            "price": str(self.price),
            "gap_pct": str(self.gap_pct),
            "level": self.level.value,
            "qty": str(self.qty),
            "dollar_impact": str(self.dollar_impact),
        }


@dataclass(frozen=True)
class GapAlert:
    """A gap at or above the alert threshold, with a message for the alerter."""

    symbol: str
    gap_pct: Decimal
    level: GapLevel
    dollar_impact: Decimal
    held: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "gap_pct": str(self.gap_pct),
            "level": self.level.value,
            "dollar_impact": str(self.dollar_impact),
            "held": self.held,
            "message": self.message,
        }


@dataclass(frozen=True)
class GapReport:
    """The gap assessment of one moment (pre-market or the open)."""

    phase: Phase
    close_date: date | None
    items: tuple[GapItem, ...]
    level: GapLevel
    gross_impact: Decimal
    net_impact: Decimal
    gross_pct_of_equity: Decimal | None
    net_pct_of_equity: Decimal | None
    alerts: tuple[GapAlert, ...]
    defensive_required: bool
    missing: tuple[str, ...] = ()

    def item(self, symbol: str) -> GapItem | None:
        for entry in self.items:
            if entry.symbol == symbol.upper():
                return entry
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "close_date": self.close_date.isoformat() if self.close_date else None,
            "level": self.level.value,
            "gross_impact": str(self.gross_impact),
            "net_impact": str(self.net_impact),
            "gross_pct_of_equity": _str_or_none(self.gross_pct_of_equity),
            "net_pct_of_equity": _str_or_none(self.net_pct_of_equity),
            "defensive_required": self.defensive_required,
            "items": [item.to_dict() for item in self.items],
            "alerts": [alert.to_dict() for alert in self.alerts],
            "missing": list(self.missing),
        }


class GapRiskManager:
    """Keeps the last closing snapshot and measures gaps against it."""

    def __init__(self, settings: Any) -> None:
        gap = settings.gap_risk
        self.alert_threshold = _dec(gap.alert_threshold, "gap_risk.alert_threshold")
        self.moderate = _dec(gap.moderate, "gap_risk.moderate")
        self.high = _dec(gap.high, "gap_risk.high")
        self.extreme = _dec(gap.extreme, "gap_risk.extreme")
        if not ZERO <= self.moderate <= self.high <= self.extreme:
            raise ValueError(
                "gap_risk thresholds must satisfy 0 <= moderate <= high <= extreme, got "
                f"{self.moderate}, {self.high}, {self.extreme}"
            )
        self._close_date: date | None = None
        self._closes: dict[str, Decimal] = {}
        self._positions: dict[str, Decimal] = {}

    @property
    def close_date(self) -> date | None:
        """The session of the recorded closing snapshot, if any."""
        return self._close_date

    def level_for(self, gap_pct: Decimal) -> GapLevel:
        """The level of a gap of ``gap_pct`` (either direction)."""
        size = abs(gap_pct)
        if size >= self.extreme:
            return GapLevel.EXTREME
        if size >= self.high:
            return GapLevel.HIGH
        if size >= self.moderate:
            return GapLevel.MODERATE
        return GapLevel.LOW

    # -- the closing snapshot --------------------------------------------------------------

    def record_close(
        self, session_date: date, closes: Mapping[str, Any], positions: PositionsLike
    ) -> dict[str, Any]:
        """Remember the closing prices and held quantities; return them for the journal."""
        parsed = _closes(closes)
        self._close_date = session_date
        self._closes = parsed
        self._positions = _quantities(positions)
        snapshot = self.snapshot()
        log.info(
            "gap_close_recorded",
            session_date=session_date.isoformat(),
            symbols=len(parsed),
            positions=len(self._positions),
        )
        return snapshot

    def snapshot(self) -> dict[str, Any]:
        """The recorded closing snapshot as a JSON-friendly dict."""
        return {
            "session_date": self._close_date.isoformat() if self._close_date else None,
            "closes": {s: str(p) for s, p in sorted(self._closes.items())},
            "positions": {s: str(q) for s, q in sorted(self._positions.items())},
        }

    def load_close(self, snapshot: Mapping[str, Any]) -> None:
        """Restore a snapshot produced by :meth:`record_close` (after a restart)."""
        self._close_date, self._closes, self._positions = _parse_snapshot(snapshot)

    # -- the assessment --------------------------------------------------------------------

    def assess(
        self,
        prices_now: Mapping[str, Any],
        positions: PositionsLike | None = None,
        phase: Phase = "regular",
        *,
        equity: Decimal | None = None,
        closing: Mapping[str, Any] | None = None,
        log_findings: bool = True,
    ) -> GapReport:
        """Gaps of every recorded symbol with a current price, and what they do to positions.

        ``positions`` are the quantities held now (signed; the closing snapshot's when None).
        ``closing`` is a journaled snapshot from :meth:`record_close` to measure against
        instead of the one in memory (an empty mapping means "use the one in memory").
        ``log_findings=False`` only reports (no ``gap_risk`` / ``gap_price_missing`` lines):
        for a caller that looks ahead before the loop's own assessment.
        """
        if phase not in ("pre", "regular"):
            raise ValueError(f"phase must be 'pre' or 'regular', got {phase!r}")
        close_date: date | None
        if closing:
            close_date, closes, closing_positions = _parse_snapshot(closing)
        else:
            close_date, closes, closing_positions = self._close_date, self._closes, self._positions
        held = closing_positions if positions is None else _quantities(positions)
        prices = {s.upper(): _dec(p, f"price of {s}") for s, p in prices_now.items()}
        items: list[GapItem] = []
        missing: list[str] = []
        for symbol in sorted(set(closes) | set(held)):
            close = closes.get(symbol)
            price = prices.get(symbol)
            if close is None or price is None or price <= ZERO:
                if held.get(symbol, ZERO) != ZERO:
                    missing.append(symbol)
                continue
            gap = (price - close) / close
            qty = held.get(symbol, ZERO)
            items.append(GapItem(symbol, close, price, gap, self.level_for(gap), qty, qty * (price - close)))

        level = max((item.level for item in items), key=lambda lv: lv.rank, default=GapLevel.LOW)
        gross = sum((abs(item.dollar_impact) for item in items), ZERO)
        net = sum((item.dollar_impact for item in items), ZERO)
        gross_pct = net_pct = None
        if equity is not None and _dec(equity, "equity") > ZERO:
            eq = _dec(equity, "equity")
            gross_pct, net_pct = gross / eq, net / eq

        alerts: list[GapAlert] = []
        for item in items:
            if abs(item.gap_pct) < self.alert_threshold:
                continue
            direction = "up" if item.gap_pct > ZERO else "down"
            impact = f", position impact ${item.dollar_impact.quantize(Decimal('0.01'))}" if item.held else ""
            message = (
                f"{item.symbol} gapped {direction} {_pct(abs(item.gap_pct))} "
                f"({item.previous_close} -> {item.price}) at the {_phase_name(phase)}: "
                f"{item.level.value.upper()}{impact}"
            )
            alerts.append(GapAlert(item.symbol, item.gap_pct, item.level, item.dollar_impact, item.held, message))
            if not log_findings:
                continue
            log.warning(
                "gap_risk",
                symbol=item.symbol,
                phase=phase,
                gap_pct=str(item.gap_pct),
                level=item.level.value,
                previous_close=str(item.previous_close),
                price=str(item.price),
                qty=str(item.qty),
                dollar_impact=str(item.dollar_impact),
                message=message,
            )
        if missing and log_findings:
            log.warning("gap_price_missing", symbols=missing, phase=phase)

        return GapReport(
            phase=phase,
            close_date=close_date,
            items=tuple(items),
            level=level,
            gross_impact=gross,
            net_impact=net,
            gross_pct_of_equity=gross_pct,
            net_pct_of_equity=net_pct,
            alerts=tuple(alerts),
            defensive_required=level.rank >= GapLevel.HIGH.rank,
            missing=tuple(missing),
        )


def _quantities(positions: PositionsLike) -> dict[str, Decimal]:
    pairs: list[tuple[str, Any]] = []
    if isinstance(positions, Mapping):
        for symbol, value in positions.items():
            pairs.append((str(symbol), value.qty if hasattr(value, "qty") else value))
    else:
        for position in positions:
            if not hasattr(position, "symbol") or not hasattr(position, "qty"):
                raise ValueError(f"a position needs symbol and qty, got {position!r}")
            pairs.append((str(position.symbol), position.qty))
    result: dict[str, Decimal] = {}
    for symbol, raw in pairs:
        qty = _dec(raw, f"quantity of {symbol}")
        if qty != ZERO:
            result[symbol.upper()] = result.get(symbol.upper(), ZERO) + qty
    return result


def _closes(closes: Mapping[str, Any]) -> dict[str, Decimal]:
    parsed: dict[str, Decimal] = {}
    for symbol, price in closes.items():
        value = _dec(price, f"close of {symbol}")
        if value <= ZERO:
            raise ValueError(f"close of {symbol} must be positive, got {value}")
        parsed[str(symbol).upper()] = value
    return parsed


def _parse_snapshot(snapshot: Mapping[str, Any]) -> tuple[date, dict[str, Decimal], dict[str, Decimal]]:
    try:
        day = date.fromisoformat(str(snapshot["session_date"]))
        closes = _closes(snapshot["closes"])
        positions = _quantities(dict(snapshot.get("positions") or {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"invalid gap closing snapshot: {exc}") from exc
    return day, closes, positions


_dec = to_decimal  # one shared coercion (models.to_decimal)

def _pct(fraction: Decimal) -> str:
    return f"{(fraction * 100).quantize(Decimal('0.01'))}%"


def _phase_name(phase: Phase) -> str:
    return "pre-market" if phase == "pre" else "open"


def _str_or_none(value: Decimal | None) -> str | None:
    return None if value is None else str(value)
