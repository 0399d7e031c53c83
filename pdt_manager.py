"""Day-trading compliance that knows the rules changed on 2026-06-04.

FINRA retired the pattern-day-trader rule on 2026-06-04 (Regulatory Notice 26-10): Rule
4210 now sets intraday margin standards instead, which brokers may phase in until
2027-10-20. Alpaca dropped ``pattern_day_trader`` and ``daytrade_count`` from the account
on 2026-07-06. So this manager works in one of two regimes:

``legacy``
    A day trade is closing, on the same session, a position opened that session. With
    equity under ``pdt.equity_threshold`` ($25,000), a closing order that would be the 4th
    day trade within ``pdt.window_business_days`` (5) NYSE sessions is blocked, unless it
    is a risk exit (stop, emergency exit, liquidation): that goes through with a
    ``warn_flag`` ("account may be flagged PDT") for an alert. The count comes from the
    journal (:meth:`PDTManager.record_day_trade` / :meth:`PDTManager.load_day_trades`) and
    from the broker's ``daytrade_count`` when the account has it; the broker wins when they
    disagree.
``intraday_margin``
    No count limit. An opening order that would create or increase an intraday margin
    deficit is reduced (the quantity that still fits) or blocked. The deficit is measured
    at the time of the opening trade: intraday exposure (the gross notional of positions
    and working opening orders, plus this order) against ``equity x INTRADAY_MARGIN_MULTIPLIER``
    (4x, the standard day-trading leverage of a margin account; the account's own
    ``multiplier`` caps it, so a cash account gets 1x).

Which regime: ``pdt.regime`` when forced to ``legacy`` or ``intraday_margin``; with
``auto``, the broker's account payload decides (PDT fields present -> legacy, absent ->
intraday margin), and without a payload (simulations, backtests) the date does (before
``pdt.retirement_date`` -> legacy).

In both regimes: a 40310100 rejection ("trade denied due to pattern day trading
protection") blocks the symbol for the rest of the session (:meth:`PDTManager.block_symbol`,
cleared by :meth:`PDTManager.new_session`), and the optional self-imposed budget
``pdt.max_day_trades`` per ``pdt.budget_window_days`` sessions blocks a new day trade unless
it is a risk exit. Blocks are logged as ``pdt_blocked``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Iterable, Literal, Mapping, Protocol

import structlog
from broker.models import to_decimal

log = structlog.get_logger(__name__)

Regime = Literal["legacy", "intraday_margin"]

ZERO = Decimal(0)

#: Legacy PDT: this many day trades in the window are allowed; the next one is blocked.
LEGACY_MAX_DAY_TRADES = 3
#: Intraday margin: exposure may reach this multiple of equity during the session.
INTRADAY_MARGIN_MULTIPLIER = Decimal(4)
#: Alpaca's error code for "trade denied due to pattern day trading protection".
PDT_REJECTION_CODE = 40310100
#: Account fields that exist only while the broker enforces the legacy PDT rule.
PDT_ACCOUNT_FIELDS = (
    "pattern_day_trader",
    "daytrade_count",
    "daytrading_buying_power",
    "last_daytrade_count",
    "last_daytrading_buying_power",
)

FLAG_MAY_BE_FLAGGED = "account may be flagged PDT"
FLAG_OVER_BUDGET = "self-imposed day-trade budget exceeded"
FLAG_SYMBOL_BLOCKED = "broker refused a day trade on this symbol today (40310100)"


class Calendar(Protocol):
    """What the manager needs of ``trading_calendar.TradingCalendar``."""

    def is_session(self, day: date) -> bool: ...
    def business_days_back(self, day: date, n: int) -> date: ...


@dataclass(frozen=True)
class DayTrade:
    """One day trade (open and close of ``symbol`` within ``session_date``)."""

    symbol: str
    session_date: date


@dataclass(frozen=True)
class OrderCheck:
    """An order about to be sent, as the PDT check needs to see it.

    ``opens_today``: the position this order closes was opened this session (so closing it
    is a day trade). ``is_risk_exit``: a protective stop, an emergency exit or a
    liquidation, which must not be blocked by a count.
    """

    symbol: str
    side: Literal["buy", "sell"]
    qty: Decimal
    price: Decimal
    is_closing: bool
    opens_today: bool = False
    is_risk_exit: bool = False

    def __post_init__(self) -> None:
        if self.side not in ("buy", "sell"):
            raise ValueError(f"OrderCheck.side must be 'buy' or 'sell', got {self.side!r}")
        if self.qty <= ZERO:
            raise ValueError(f"OrderCheck.qty must be positive, got {self.qty}")
        if self.price <= ZERO:
            raise ValueError(f"OrderCheck.price must be positive (a reference price for market orders), got {self.price}")

    @property
    def is_day_trade(self) -> bool:
        return self.is_closing and self.opens_today

    @property
    def notional(self) -> Decimal:
        return abs(self.qty) * self.price


@dataclass(frozen=True)
class AccountView:
    """The account figures the PDT check uses (Decimal money).

    ``daytrade_count`` is the broker's count (None once the broker dropped it).
    ``intraday_exposure`` is the gross notional of positions and working opening orders now.
    ``multiplier`` is the account's margin multiplier (1, 2 or 4) when known.
    ``pdt_fields_present`` tells whether the broker's payload still carries PDT fields
    (None: no payload, as in simulations and backtests: the date decides).
    """

    equity: Decimal
    buying_power: Decimal
    daytrade_count: int | None = None
    intraday_exposure: Decimal = ZERO
    multiplier: Decimal | None = None
    pdt_fields_present: bool | None = None

    @classmethod
    def from_account(cls, account: Any, *, intraday_exposure: Decimal | None = None) -> AccountView:
        """Build from ``models.Account`` (or any object with its attribute names).

        Without an explicit ``intraday_exposure``, the account's gross position value
        (``long_market_value`` + |``short_market_value``|) is used; working opening orders
        are then not included, so pass the exposure when they matter.
        """
        fields = {name: getattr(account, name, None) for name in PDT_ACCOUNT_FIELDS}
        if intraday_exposure is None:
            long_value = getattr(account, "long_market_value", None)
            short_value = getattr(account, "short_market_value", None)
            intraday_exposure = abs(_dec(long_value or 0, "long_market_value")) + abs(
                _dec(short_value or 0, "short_market_value")
            )
        return cls(
            equity=_dec(account.equity, "equity"),
            buying_power=_dec(account.buying_power, "buying_power"),
            daytrade_count=_count(getattr(account, "daytrade_count", None)),
            intraday_exposure=intraday_exposure,
            multiplier=_dec(account.multiplier, "multiplier") if getattr(account, "multiplier", None) is not None else None,
            pdt_fields_present=has_pdt_fields(fields),
        )


@dataclass(frozen=True)
class PDTDecision:
    """Whether the order may go, how many shares (``qty``), why, and any alert to raise."""

    allowed: bool
    reason: str
    warn_flag: str | None
    qty: Decimal
    regime: Regime
    day_trade: bool = False

    @property
    def reduced(self) -> bool:
        return self.allowed and self.qty > ZERO and self.reason.startswith("reduced")


def has_pdt_fields(account_fields: Mapping[str, Any]) -> bool:
    """True when the payload carries any legacy PDT field with a value."""
    return any(account_fields.get(name) is not None for name in PDT_ACCOUNT_FIELDS)


class PDTManager:
    """Day-trade counting, the two regimes, symbol blocks and the self-imposed budget."""

    def __init__(self, settings: Any, calendar: Calendar) -> None:
        pdt = settings.pdt
        self.forced_regime: str = str(pdt.regime)
        if self.forced_regime not in ("auto", "legacy", "intraday_margin"):
            raise ValueError(f"pdt.regime must be auto, legacy or intraday_margin, got {self.forced_regime!r}")
        self.equity_threshold = _dec(pdt.equity_threshold, "pdt.equity_threshold")
        self.window = int(pdt.window_business_days)
        self.max_day_trades: int | None = None if pdt.max_day_trades is None else int(pdt.max_day_trades)
        self.budget_window = int(pdt.budget_window_days)
        self.retirement_date: date = pdt.retirement_date
        self.calendar = calendar
        self._day_trades: list[DayTrade] = []
        self._blocked: dict[str, date] = {}
        self._broker: tuple[date, int, int] | None = None  # (day, broker count, journal count then)

    # -- regime ----------------------------------------------------------------------------

    def regime_for(self, account_fields: Mapping[str, Any] | None, today: date) -> Regime:
        """The regime in force: forced by config, else from the payload, else by date."""
        return self._regime(None if account_fields is None else has_pdt_fields(account_fields), today)

    def _regime(self, pdt_fields_present: bool | None, today: date) -> Regime:
        if self.forced_regime == "legacy":
            return "legacy"
        if self.forced_regime == "intraday_margin":
            return "intraday_margin"
        if pdt_fields_present is not None:
            return "legacy" if pdt_fields_present else "intraday_margin"
        return "legacy" if today < self.retirement_date else "intraday_margin"

    # -- day-trade records -----------------------------------------------------------------

    def record_day_trade(self, symbol: str, session_date: date) -> None:
        """Count a day trade that just happened (the journal keeps the durable record)."""
        self._day_trades.append(DayTrade(symbol.upper(), session_date))

    def load_day_trades(self, day_trades: Iterable[DayTrade | tuple[str, date] | Mapping[str, Any]]) -> None:
        """Replace the in-memory records with the journal's (at start-up)."""
        loaded: list[DayTrade] = []
        for item in day_trades:
            if isinstance(item, DayTrade):
                loaded.append(DayTrade(item.symbol.upper(), item.session_date))
            elif isinstance(item, Mapping):
                day = item["session_date"]
                loaded.append(DayTrade(str(item["symbol"]).upper(), day if isinstance(day, date) else date.fromisoformat(str(day))))
            else:
                symbol, day = item
                loaded.append(DayTrade(str(symbol).upper(), day))
        self._day_trades = loaded

    def window_start(self, today: date, sessions: int | None = None) -> date:
        """The first session of the rolling window of ``sessions`` sessions ending ``today``."""
        n = self.window if sessions is None else sessions
        if self.calendar.is_session(today):
            return self.calendar.business_days_back(today, n - 1)
        return self.calendar.business_days_back(today, n)

    def journal_count(self, today: date, sessions: int | None = None) -> int:
        """Day trades recorded locally within the window ending ``today``."""
        start = self.window_start(today, sessions)
        return sum(1 for t in self._day_trades if start <= t.session_date <= today)

    def day_trades_in_window(self, today: date) -> int:
        """Day trades in the rolling window: the broker's count when reconciled today."""
        local = self.journal_count(today)
        if self._broker is not None and self._broker[0] == today:
            _, broker_count, local_then = self._broker
            return broker_count + max(0, local - local_then)
        return local

    def reconcile_count(self, broker_count: int, today: date) -> int:
        """Adopt the broker's ``daytrade_count``; log when the journal disagrees. Returns it."""
        local = self.journal_count(today)
        if broker_count != local:
            log.warning(
                "pdt_count_reconciled",
                broker_count=broker_count,
                journal_count=local,
                session_date=today.isoformat(),
                detail="the broker's count wins",
            )
        self._broker = (today, int(broker_count), local)
        return int(broker_count)

    # -- symbol blocks and sessions ----------------------------------------------------------

    def block_symbol(self, symbol: str, session_date: date) -> None:
        """The broker refused a day trade on ``symbol`` (40310100): block it this session."""
        self._blocked[symbol.upper()] = session_date
        log.warning(
            "pdt_blocked",
            symbol=symbol.upper(),
            session_date=session_date.isoformat(),
            reason=f"broker rejected with {PDT_REJECTION_CODE}: {symbol.upper()} blocked for the session",
        )

    def blocked_symbols(self) -> list[str]:
        return sorted(self._blocked)

    def new_session(self, session_date: date) -> None:
        """Daily reset: lift yesterday's symbol blocks and forget stale broker counts."""
        lifted = sorted(s for s, d in self._blocked.items() if d < session_date)
        self._blocked = {s: d for s, d in self._blocked.items() if d >= session_date}
        if self._broker is not None and self._broker[0] < session_date:
            self._broker = None
        horizon = self.window_start(session_date, max(self.window, self.budget_window) + 1)
        self._day_trades = [t for t in self._day_trades if t.session_date >= horizon]
        log.info("pdt_session_reset", session_date=session_date.isoformat(), unblocked=lifted)

    # -- the check -------------------------------------------------------------------------

    def check_order(self, order: OrderCheck, account: AccountView, today: date) -> PDTDecision:
        """May ``order`` be sent today? Returns the allowed quantity and any warning."""
        regime = self._regime(account.pdt_fields_present, today)
        symbol = order.symbol.upper()
        qty = abs(order.qty)
        day_trade = order.is_day_trade
        warnings: list[str] = []

        if symbol in self._blocked:
            reason = f"{symbol} is blocked for the session after a {PDT_REJECTION_CODE} rejection"
            if not order.is_risk_exit:
                return self._block(order, regime, reason, day_trade)
            warnings.append(FLAG_SYMBOL_BLOCKED)

        if day_trade and self.max_day_trades is not None:
            used = self._budget_used(account, today)
            if used >= self.max_day_trades:
                reason = (
                    f"self-imposed budget: {used} of {self.max_day_trades} day trades used in "
                    f"{self.budget_window} sessions"
                )
                if not order.is_risk_exit:
                    return self._block(order, regime, reason, day_trade)
                warnings.append(FLAG_OVER_BUDGET)

        if (regime == "legacy" and not order.is_closing and account.equity < self.equity_threshold
                and not order.is_risk_exit):
            used = account.daytrade_count if account.daytrade_count is not None else self.day_trades_in_window(today)
            if used >= LEGACY_MAX_DAY_TRADES:
                # Under the legacy rule the broker refuses a same-day closing order, protective
                # stops included: a position opened now could be neither exited nor protected today.
                reason = (
                    f"no day trades left ({used} in {self.window} sessions, equity {account.equity} "
                    f"below {self.equity_threshold}): a position opened now could not be protected today"
                )
                return self._block(order, regime, reason, day_trade)

        if regime == "legacy" and day_trade and account.equity < self.equity_threshold:
            used = account.daytrade_count if account.daytrade_count is not None else self.day_trades_in_window(today)
            if used >= LEGACY_MAX_DAY_TRADES:
                reason = (
                    f"would be day trade {used + 1} in {self.window} sessions with equity "
                    f"{account.equity} below {self.equity_threshold}"
                )
                if not order.is_risk_exit:
                    return self._block(order, regime, reason, day_trade)
                warnings.append(FLAG_MAY_BE_FLAGGED)

        if regime == "intraday_margin" and not order.is_closing:
            decision = self._intraday_margin(order, account, regime)
            if decision is not None:
                return decision

        warn = "; ".join(warnings) or None
        if warn:
            log.warning(
                "pdt_risk_exit_allowed",
                symbol=symbol,
                regime=regime,
                warn_flag=warn,
                qty=str(qty),
            )
            reason = f"risk exit allowed despite: {warn}"
        else:
            reason = "allowed"
        return PDTDecision(True, reason, warn, qty, regime, day_trade)

    def _intraday_margin(self, order: OrderCheck, account: AccountView, regime: Regime) -> PDTDecision | None:
        multiplier = INTRADAY_MARGIN_MULTIPLIER
        if account.multiplier is not None and account.multiplier > ZERO:
            multiplier = min(multiplier, account.multiplier)
        limit = account.equity * multiplier
        existing = account.intraday_exposure
        requested = abs(order.qty)
        if existing + order.notional <= limit:
            return None
        room = limit - existing
        allowed = (room / order.price).to_integral_value(rounding=ROUND_FLOOR) if room > ZERO else ZERO
        detail = (
            f"intraday exposure {existing} + {order.notional} would exceed {multiplier}x equity "
            f"{account.equity} = {limit}"
        )
        if allowed <= ZERO:
            return self._block(order, regime, f"{detail}: intraday margin deficit", False)
        allowed = Decimal(int(allowed))
        log.info(
            "pdt_reduced",
            symbol=order.symbol.upper(),
            regime=regime,
            requested_qty=str(requested),
            qty=str(allowed),
            reason=detail,
        )
        return PDTDecision(True, f"reduced to {allowed} shares: {detail}", None, allowed, regime, False)

    def _budget_used(self, account: AccountView | None, today: date) -> int:
        """Day trades counted against the self-imposed budget.

        Over the same window as the broker's count, the broker's count wins (it also sees
        day trades made by hand); over another window, the journal's records count.
        """
        if self.budget_window != self.window:
            return self.journal_count(today, self.budget_window)
        if account is not None and account.daytrade_count is not None:
            return account.daytrade_count
        return self.day_trades_in_window(today)

    def _block(self, order: OrderCheck, regime: Regime, reason: str, day_trade: bool) -> PDTDecision:
        log.warning(
            "pdt_blocked",
            symbol=order.symbol.upper(),
            side=order.side,
            qty=str(abs(order.qty)),
            regime=regime,
            day_trade=day_trade,
            is_risk_exit=order.is_risk_exit,
            reason=reason,
        )
        return PDTDecision(False, reason, None, ZERO, regime, day_trade)

    # -- status ----------------------------------------------------------------------------

    def status(self, today: date, account: AccountView | None = None) -> dict[str, Any]:
        """What ``python main.py status`` shows: regime, day trades used and left, blocks."""
        regime = self._regime(account.pdt_fields_present if account else None, today)
        if account is not None and account.daytrade_count is not None:
            used = account.daytrade_count
        else:
            used = self.day_trades_in_window(today)
        exempt = None if account is None else account.equity >= self.equity_threshold
        if regime == "legacy" and not exempt:
            limit: int | None = LEGACY_MAX_DAY_TRADES
            left: int | None = max(0, LEGACY_MAX_DAY_TRADES - used)
        else:
            limit = left = None
        budget_used = self._budget_used(account, today)
        budget_left = None if self.max_day_trades is None else max(0, self.max_day_trades - budget_used)
        return {
            "regime": regime,
            "forced_regime": self.forced_regime,
            "window_business_days": self.window,
            "window_start": self.window_start(today).isoformat(),
            "day_trades_used": used,
            "day_trade_limit": limit,
            "day_trades_left": left,
            "equity_threshold": str(self.equity_threshold),
            "exempt": exempt,
            "budget_max_day_trades": self.max_day_trades,
            "budget_window_days": self.budget_window,
            "budget_used": budget_used,
            "budget_left": budget_left,
            "blocked_symbols": self.blocked_symbols(),
        }


_dec = to_decimal  # one shared coercion (models.to_decimal)

def _count(value: Any) -> int | None:
    return None if value is None else int(value)
