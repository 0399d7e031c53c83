"""Protections: lock entries for a while after a run of bad trades (live and in backtests).

Four protections in the style of freqtrade's, each fed the closed trades and an explicit
``now`` (nothing here reads a clock, so a backtest gets the same locks as the daemon):

``stoploss_guard``
    ``trade_limit`` losing stop-outs (exit reason in ``stop_reasons``) within
    ``lookback_minutes`` lock entries for ``lock_minutes``: globally, or only for the
    symbol when ``only_per_symbol``. Defaults: 3 stop-outs in 24 h lock everything for 6 h.
``cooldown``
    After a losing exit on a symbol, that symbol is locked for ``lock_minutes``
    (default 60) so a strategy does not buy straight back into what just stopped it out.
``max_drawdown``
    When the closed trades of the last ``lookback_minutes`` (default 48 h, at least
    ``trade_limit`` = 3 of them) compound to a drawdown of ``max_allowed_drawdown``
    (default 10 %) or more from their running peak, all entries lock for ``lock_minutes``
    (default 12 h).
``low_profit``
    A symbol whose last ``lookback_minutes`` (default 72 h, at least ``trade_limit`` = 2
    trades) sum to a profit below ``required_profit`` (default 0: a net loss) is locked
    for ``lock_minutes`` (default 24 h).

Profits are fractions of the trade's cost (0.02 = +2 %). A lock is logged as
``protection_lock`` when it starts. Locks do not stop exits or protective orders: they
only answer "may this symbol be entered now?".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any, Mapping

import structlog

log = structlog.get_logger(__name__)

#: Exit reasons that count as a stop-out for the stop-loss guard.
DEFAULT_STOP_REASONS: tuple[str, ...] = (
    "stop_loss",
    "trailing_stop_loss",
    "emergency_exit",
    "emergency_stop",
)


@dataclass(frozen=True)
class ClosedTrade:
    """A finished round trip: when it closed, how it went (fraction) and why it closed."""

    symbol: str
    exit_time: datetime
    profit_pct: float
    exit_reason: str

    def __post_init__(self) -> None:
        if self.exit_time.tzinfo is None:
            raise ValueError(f"ClosedTrade.exit_time must be timezone-aware ({self.symbol})")


@dataclass(frozen=True)
class Lock:
    """Entries are refused for ``symbol`` (or every symbol when None) until ``until``."""

    symbol: str | None
    start: datetime
    until: datetime
    protection: str
    reason: str

    @property
    def is_global(self) -> bool:
        return self.symbol is None

    def active_at(self, now: datetime) -> bool:
        return self.start <= now < self.until

    def covers(self, symbol: str) -> bool:
        return self.symbol is None or self.symbol == symbol.upper()

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "start": self.start.isoformat(),
            "until": self.until.isoformat(),
            "protection": self.protection,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lock:
        try:
            start = datetime.fromisoformat(str(data["start"]))
            until = datetime.fromisoformat(str(data["until"]))
            symbol = data.get("symbol")
            lock = cls(
                symbol=str(symbol).upper() if symbol else None,
                start=start,
                until=until,
                protection=str(data["protection"]),
                reason=str(data["reason"]),
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(f"invalid protection lock {dict(data)!r}: {exc}") from exc
        if start.tzinfo is None or until.tzinfo is None:
            raise ValueError(f"invalid protection lock {dict(data)!r}: times must be timezone-aware")
        return lock


@dataclass(frozen=True)
class StoplossGuardConfig:
    enabled: bool = True
    trade_limit: int = 3
    lookback_minutes: int = 24 * 60
    lock_minutes: int = 6 * 60
    only_per_symbol: bool = False
    stop_reasons: tuple[str, ...] = DEFAULT_STOP_REASONS


@dataclass(frozen=True)
class CooldownConfig:
    enabled: bool = True
    lock_minutes: int = 60


@dataclass(frozen=True)
class MaxDrawdownConfig:
    enabled: bool = True
    trade_limit: int = 3
    lookback_minutes: int = 48 * 60
    max_allowed_drawdown: float = 0.10
    lock_minutes: int = 12 * 60


@dataclass(frozen=True)
class LowProfitConfig:
    enabled: bool = True
    trade_limit: int = 2
    lookback_minutes: int = 72 * 60
    required_profit: float = 0.0
    lock_minutes: int = 24 * 60


_SECTIONS: dict[str, type] = {
    "stoploss_guard": StoplossGuardConfig,
    "cooldown": CooldownConfig,
    "max_drawdown": MaxDrawdownConfig,
    "low_profit": LowProfitConfig,
}


@dataclass(frozen=True)
class ProtectionConfig:
    """The parameters of the four protections (see the module docstring for the defaults)."""

    stoploss_guard: StoplossGuardConfig = field(default_factory=StoplossGuardConfig)
    cooldown: CooldownConfig = field(default_factory=CooldownConfig)
    max_drawdown: MaxDrawdownConfig = field(default_factory=MaxDrawdownConfig)
    low_profit: LowProfitConfig = field(default_factory=LowProfitConfig)

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in _SECTIONS:
            section = getattr(self, name)
            for f in fields(section):
                value = getattr(section, f.name)
                if f.name in ("trade_limit", "lookback_minutes", "lock_minutes") and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 1
                ):
                    problems.append(f"{name}.{f.name}={value!r}: must be an integer >= 1")
        if not 0 < self.max_drawdown.max_allowed_drawdown < 1:
            problems.append(
                f"max_drawdown.max_allowed_drawdown={self.max_drawdown.max_allowed_drawdown!r}: must be between 0 and 1"
            )
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ProtectionConfig:
        """Build from ``{"cooldown": {"lock_minutes": 30}, ...}``; unknown keys are errors."""
        sections: dict[str, Any] = {}
        for name, values in data.items():
            if name not in _SECTIONS:
                raise ValueError(f"protections.{name}: unknown protection; allowed: {', '.join(_SECTIONS)}")
            kind = _SECTIONS[name]
            if isinstance(values, kind):
                sections[name] = values
                continue
            if not isinstance(values, Mapping):
                raise ValueError(f"protections.{name}: expected a table of parameters, got {values!r}")
            allowed = {f.name for f in fields(kind)}
            for key in values:
                if key not in allowed:
                    raise ValueError(f"protections.{name}.{key}: unknown parameter; allowed: {', '.join(sorted(allowed))}")
            params = dict(values)
            if "stop_reasons" in params:
                params["stop_reasons"] = tuple(str(r) for r in params["stop_reasons"])
            sections[name] = kind(**params)
        return cls(**sections)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ProtectionManager:
    """Keeps recent closed trades and the locks they caused; answers whether a symbol is locked."""

    def __init__(self, config: ProtectionConfig | Mapping[str, Any] | Any | None = None) -> None:
        if config is None:
            self.config = ProtectionConfig()
        elif isinstance(config, ProtectionConfig):
            self.config = config
        elif isinstance(config, Mapping):
            self.config = ProtectionConfig.from_mapping(config)
        elif hasattr(config, "model_dump"):
            self.config = ProtectionConfig.from_mapping(config.model_dump())
        else:
            raise TypeError(f"protections config must be a ProtectionConfig or a mapping, got {type(config).__name__}")
        self._trades: list[ClosedTrade] = []
        self._locks: list[Lock] = []
        c = self.config
        self._history = timedelta(
            minutes=max(c.stoploss_guard.lookback_minutes, c.max_drawdown.lookback_minutes, c.low_profit.lookback_minutes)
        )

    # -- feeding ---------------------------------------------------------------------------

    def record_trade(self, trade: ClosedTrade, now: datetime) -> list[Lock]:
        """Add a closed trade and run the protections; return the locks it started."""
        _aware(now)
        trade = replace(trade, symbol=trade.symbol.upper())
        self._trades.append(trade)
        self._trades.sort(key=lambda t: t.exit_time)
        self._prune(now)
        candidates = [
            self._stoploss_guard(trade, now),
            self._cooldown(trade, now),
            self._max_drawdown(now),
            self._low_profit(trade, now),
        ]
        started: list[Lock] = []
        for lock in candidates:
            if lock is not None and self._add(lock):
                started.append(lock)
        return started

    def load_trades(self, trades: list[ClosedTrade], now: datetime) -> None:
        """Restore recent trade history (from the journal) without starting locks."""
        _aware(now)
        self._trades.extend(replace(t, symbol=t.symbol.upper()) for t in trades)
        self._trades.sort(key=lambda t: t.exit_time)
        self._prune(now)

    def load_locks(self, snapshot: list[Mapping[str, Any]]) -> None:
        """Restore locks saved by :meth:`locks_snapshot` (after a restart)."""
        for item in snapshot:
            lock = Lock.from_dict(item)
            if lock not in self._locks:
                self._locks.append(lock)

    # -- questions -------------------------------------------------------------------------

    def is_locked(self, symbol: str, now: datetime) -> Lock | None:
        """The lock (global or on ``symbol``) in force at ``now`` that ends last, or None."""
        _aware(now)
        active = [lock for lock in self._locks if lock.active_at(now) and lock.covers(symbol)]
        return max(active, key=lambda lock: lock.until) if active else None

    def global_lock(self, now: datetime) -> Lock | None:
        """The lock on every symbol in force at ``now`` that ends last, or None."""
        _aware(now)
        active = [lock for lock in self._locks if lock.active_at(now) and lock.is_global]
        return max(active, key=lambda lock: lock.until) if active else None

    def locks_snapshot(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Every stored lock (only those in force at ``now`` when given), JSON-friendly."""
        locks = self._locks if now is None else [lock for lock in self._locks if lock.active_at(now)]
        return [lock.to_dict() for lock in sorted(locks, key=lambda lock: (lock.until, lock.symbol or ""))]

    def trades(self) -> list[ClosedTrade]:
        """The closed trades still inside some protection's lookback."""
        return list(self._trades)

    # -- the protections -------------------------------------------------------------------

    def _stoploss_guard(self, trade: ClosedTrade, now: datetime) -> Lock | None:
        cfg = self.config.stoploss_guard
        if not cfg.enabled or not self._is_stop_out(trade):
            return None
        since = now - timedelta(minutes=cfg.lookback_minutes)
        stop_outs = [
            t for t in self._trades
            if since < t.exit_time <= now and self._is_stop_out(t)
            and (not cfg.only_per_symbol or t.symbol == trade.symbol)
        ]
        if len(stop_outs) < cfg.trade_limit:
            return None
        scope = f"on {trade.symbol}" if cfg.only_per_symbol else "across all symbols"
        reason = (
            f"{len(stop_outs)} stop-outs {scope} in the last {_duration(cfg.lookback_minutes)} "
            f"(limit {cfg.trade_limit}): entries locked for {_duration(cfg.lock_minutes)}"
        )
        symbol = trade.symbol if cfg.only_per_symbol else None
        return Lock(symbol, now, now + timedelta(minutes=cfg.lock_minutes), "stoploss_guard", reason)

    def _cooldown(self, trade: ClosedTrade, now: datetime) -> Lock | None:
        cfg = self.config.cooldown
        if not cfg.enabled or trade.profit_pct >= 0:
            return None
        reason = (
            f"losing exit on {trade.symbol} ({_pct(trade.profit_pct)}, {trade.exit_reason}): "
            f"cooling down for {_duration(cfg.lock_minutes)}"
        )
        return Lock(trade.symbol, now, now + timedelta(minutes=cfg.lock_minutes), "cooldown", reason)

    def _max_drawdown(self, now: datetime) -> Lock | None:
        cfg = self.config.max_drawdown
        if not cfg.enabled:
            return None
        since = now - timedelta(minutes=cfg.lookback_minutes)
        recent = [t for t in self._trades if since < t.exit_time <= now]
        if len(recent) < cfg.trade_limit:
            return None
        drawdown = compounded_drawdown([t.profit_pct for t in recent])
        if drawdown < cfg.max_allowed_drawdown:
            return None
        reason = (
            f"drawdown {_pct(drawdown)} over {len(recent)} trades in the last {_duration(cfg.lookback_minutes)} "
            f"reached {_pct(cfg.max_allowed_drawdown)}: all entries locked for {_duration(cfg.lock_minutes)}"
        )
        return Lock(None, now, now + timedelta(minutes=cfg.lock_minutes), "max_drawdown", reason)

    def _low_profit(self, trade: ClosedTrade, now: datetime) -> Lock | None:
        cfg = self.config.low_profit
        if not cfg.enabled:
            return None
        since = now - timedelta(minutes=cfg.lookback_minutes)
        recent = [t for t in self._trades if t.symbol == trade.symbol and since < t.exit_time <= now]
        if len(recent) < cfg.trade_limit:
            return None
        profit = sum(t.profit_pct for t in recent)
        if profit >= cfg.required_profit:
            return None
        reason = (
            f"{trade.symbol} made {_pct(profit)} over {len(recent)} trades in the last "
            f"{_duration(cfg.lookback_minutes)} (required {_pct(cfg.required_profit)}): "
            f"locked for {_duration(cfg.lock_minutes)}"
        )
        return Lock(trade.symbol, now, now + timedelta(minutes=cfg.lock_minutes), "low_profit", reason)

    # -- internals -------------------------------------------------------------------------

    def _is_stop_out(self, trade: ClosedTrade) -> bool:
        return trade.exit_reason in self.config.stoploss_guard.stop_reasons and trade.profit_pct < 0

    def _add(self, lock: Lock) -> bool:
        """Store ``lock`` unless a lock of the same scope already lasts at least as long."""
        for existing in self._locks:
            if existing.symbol == lock.symbol and existing.active_at(lock.start) and existing.until >= lock.until:
                return False
        self._locks.append(lock)
        log.warning(
            "protection_lock",
            protection=lock.protection,
            symbol=lock.symbol or "*",
            scope="global" if lock.is_global else "symbol",
            start=lock.start.isoformat(),
            until=lock.until.isoformat(),
            reason=lock.reason,
        )
        return True

    def _prune(self, now: datetime) -> None:
        horizon = now - self._history
        self._trades = [t for t in self._trades if t.exit_time > horizon]
        self._locks = [lock for lock in self._locks if lock.until > now]


def compounded_drawdown(profits: list[float]) -> float:
    """The largest fall from a running peak when ``profits`` (fractions) compound in order."""
    equity = peak = 1.0
    worst = 0.0
    for profit in profits:
        equity *= 1.0 + profit
        peak = max(peak, equity)
        if peak > 0:
            worst = max(worst, (peak - equity) / peak)
    return worst


def _aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.2f}%"


def _duration(minutes: int) -> str:
    if minutes % 60 == 0:
        return f"{minutes // 60} h"
    return f"{minutes} min"
