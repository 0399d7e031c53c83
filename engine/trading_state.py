"""Safety as a state machine: ACTIVE, REDUCING, HALTED, LIQUIDATING, with a persisted latch.

What each state lets the daemon do:

=============  =======  =================================  =======
state          entries  exits                              cancels
=============  =======  =================================  =======
ACTIVE         yes      yes                                yes
REDUCING       no       yes (stops, targets, risk exits)   yes
LIQUIDATING    no       yes: cancel everything, flatten    yes
HALTED         no       no (only through LIQUIDATING)      yes
=============  =======  =================================  =======

How the daemon moves between them (the loop calls :meth:`SafetyStateMachine.on_cycle` once
per cycle with an explicit portfolio snapshot and journals every returned
:class:`Transition`):

* the daily loss limit (``risk.max_daily_drawdown``, measured from the session's starting
  equity and from the day's equity high) moves ACTIVE -> REDUCING for the rest of the
  session; :meth:`~SafetyStateMachine.new_session` clears it the next session;
* a run of broker answers nobody could classify (the loop counts them) moves ACTIVE ->
  REDUCING the same way (:meth:`~SafetyStateMachine.reduce`): nothing the broker answers
  ends the daemon, but it stops opening positions until a human has looked;
* the circuit breaker (a loss of ``risk.circuit_breaker_loss`` from the session's starting
  equity) latches and moves to LIQUIDATING; once the account is flat
  (:meth:`~SafetyStateMachine.mark_flat`, or a flat snapshot) the machine rests in HALTED;
* an operator halt (``python main.py halt --reason``) latches and flattens the same way;
* the cumulative loss stop (``risk.max_drawdown_from_peak``: equity that far below its
  high-water mark, kept across sessions and restarts by :mod:`engine.drawdown_stop`) latches
  and flattens the same way (latch kind ``max_drawdown``), catching a run of losing days
  that each stayed under the daily limits;
* only :meth:`~SafetyStateMachine.rearm` with a reason opens the latch (-> ACTIVE). A new
  session does not, and neither does a restart: :meth:`~SafetyStateMachine.to_dict` /
  :meth:`~SafetyStateMachine.from_dict` carry the latch and the session's baseline equity
  through the journal, so restarting the process cannot reset the breaker's reference.

No method reads the clock, the broker or the disk: every input is explicit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Literal, Mapping, Protocol

import structlog

from core.clock import EXCHANGE_TZ
from broker.models import to_decimal
from engine.drawdown_stop import PeakDrawdownStop
from engine.portfolio import PortfolioState, TradingState, loss_fraction


log = structlog.get_logger(__name__)

ZERO = Decimal(0)

LatchKind = Literal["circuit_breaker", "halt", "max_drawdown"]
_LATCH_KINDS = (None, "circuit_breaker", "halt", "max_drawdown")


@dataclass(frozen=True)
class Transition:
    """One change of trading state, returned to the loop so it can journal and alert it."""

    from_state: TradingState
    to_state: TradingState
    reason: str
    at: datetime

    def to_dict(self) -> dict[str, str]:
        """A JSON-friendly form for the journal and alerts: ``from``, ``to``, ``reason``, ``at``."""
        return {
            "from": self.from_state.value,
            "to": self.to_state.value,
            "reason": self.reason,
            "at": self.at.isoformat(),
        }


class _RiskSettings(Protocol):
    circuit_breaker_loss: float
    max_daily_drawdown: float


class _Settings(Protocol):
    @property
    def risk(self) -> _RiskSettings: ...


_decimal = to_decimal  # one shared coercion (models.to_decimal)

def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {moment!r}")
    return moment


def _reason(reason: str | None, action: str) -> str:
    if reason is None or not reason.strip():
        raise ValueError(f"{action} requires a non-empty reason (it is journaled and alerted)")
    return reason.strip()


class SafetyStateMachine:
    """The trading state with its guards, latch and per-session baseline.

    Build one per daemon from settings, restore it from the journal with
    :meth:`from_dict`, call :meth:`new_session` at each session start and :meth:`on_cycle`
    every loop cycle. Every state change comes back as a :class:`Transition`.
    """

    def __init__(self, settings: _Settings) -> None:
        self._breaker_loss = _decimal(settings.risk.circuit_breaker_loss, "risk.circuit_breaker_loss")
        self._daily_limit = _decimal(settings.risk.max_daily_drawdown, "risk.max_daily_drawdown")
        self._state = TradingState.ACTIVE
        self._state_reason = "initial state"
        self._latched = False
        self._latch_kind: LatchKind | None = None
        self._latch_reason: str | None = None
        self._tripped_at: datetime | None = None
        self._session_date: date | None = None
        self._session_start_equity: Decimal | None = None
        self._breaker_baseline: Decimal | None = None
        self._rebase_pending = False
        self._day_high_equity: Decimal | None = None
        # Optional in duck-typed settings (tests, tools): absent means no cumulative stop.
        self._peak_stop = PeakDrawdownStop(getattr(settings.risk, "max_drawdown_from_peak", None))

    # -- read-only views -------------------------------------------------------------------

    @property
    def state(self) -> TradingState:
        return self._state

    @property
    def state_reason(self) -> str:
        """Why the machine is in its current state."""
        return self._state_reason

    @property
    def latched(self) -> bool:
        """True once the breaker tripped or an operator halted, until :meth:`rearm`."""
        return self._latched

    @property
    def latch_reason(self) -> str | None:
        return self._latch_reason

    @property
    def latch_kind(self) -> LatchKind | None:
        return self._latch_kind

    @property
    def tripped_at(self) -> datetime | None:
        return self._tripped_at

    @property
    def session_date(self) -> date | None:
        return self._session_date

    @property
    def session_start_equity(self) -> Decimal | None:
        """The session's starting equity: set once per session, restored across restarts."""
        return self._session_start_equity

    @property
    def breaker_baseline(self) -> Decimal | None:
        """The equity the circuit breaker measures its loss from.

        It is the session's starting equity, except after an operator re-arm during a
        session, when it becomes the equity at the first cycle after the re-arm (otherwise
        the breaker would trip again at once).
        """
        return self._breaker_baseline

    @property
    def day_high_equity(self) -> Decimal | None:
        """The highest equity seen this session (the daily drawdown is also measured from it)."""
        return self._day_high_equity

    @property
    def high_water_mark(self) -> Decimal | None:
        """The highest equity seen across sessions (the cumulative loss stop measures from it)."""
        return self._peak_stop.high_water_mark

    def peak_drawdown(self, equity: Decimal) -> Decimal:
        """The fall of ``equity`` from the high-water mark, as a fraction."""
        return self._peak_stop.drawdown(_decimal(equity, "equity"))

    def allows_entry(self) -> bool:
        """May a new position be opened? Only when ACTIVE and not latched."""
        return self._state.allows_entry and not self._latched

    def allows_exit(self) -> bool:
        """May a position be reduced or closed? In every state but HALTED."""
        return self._state.allows_exit

    def allows_cancel(self) -> bool:
        """Cancelling orders is always allowed: it can only reduce exposure."""
        return True

    # -- session ---------------------------------------------------------------------------

    def new_session(
        self, session_date: date, start_equity: Decimal, at: datetime | None = None
    ) -> list[Transition]:
        """Start ``session_date`` with ``start_equity`` as its baseline.

        Calling it again for the same session (a restart) keeps the baseline already set:
        the first value of the session wins. A new session clears REDUCING from the daily
        loss limit but never the latch. Going back to an earlier session is refused.
        ``at`` stamps a resulting transition (default: 09:30 New York time that day).
        """
        at = _aware(at, "at") if at is not None else datetime.combine(session_date, time(9, 30), EXCHANGE_TZ)
        equity = _decimal(start_equity, "start_equity")
        if equity <= ZERO:
            raise ValueError(f"start_equity must be positive, got {equity}")
        if self._session_date is not None:
            if session_date == self._session_date:
                return []
            if session_date < self._session_date:
                raise ValueError(
                    f"session {session_date} is earlier than the current session {self._session_date}"
                )
        self._session_date = session_date
        self._session_start_equity = equity
        self._breaker_baseline = equity
        self._rebase_pending = False
        self._day_high_equity = equity
        self._peak_stop.observe(equity)
        log.info(
            "session_baseline_set",
            session_date=session_date.isoformat(),
            session_start_equity=str(equity),
        )
        if self._state is TradingState.REDUCING and not self._latched:
            return [self._move(TradingState.ACTIVE, f"new session {session_date.isoformat()}", at)]
        return []

    # -- the per-cycle check ---------------------------------------------------------------

    def on_cycle(self, portfolio: PortfolioState) -> list[Transition]:
        """Apply the guards to this cycle's snapshot; return the transitions taken.

        Order: a liquidation that has finished rests in HALTED; positions found while
        HALTED are flattened again; the circuit breaker trips (latch, LIQUIDATING); the
        daily loss limit moves ACTIVE to REDUCING.
        """
        at = _aware(portfolio.now, "portfolio.now")
        equity = _decimal(portfolio.equity, "portfolio.equity")
        if self._session_start_equity is None:
            self._adopt_baseline(portfolio)
        if self._rebase_pending:
            self._breaker_baseline = equity
            self._rebase_pending = False
            log.info("breaker_baseline_rebased", breaker_baseline=str(equity))
        self._day_high_equity = max(
            d for d in (self._day_high_equity, equity, _optional(portfolio.day_high_equity)) if d is not None
        )
        self._peak_stop.observe(equity)

        transitions: list[Transition] = []
        flat = not portfolio.positions and not portfolio.open_order_symbols
        if self._state is TradingState.LIQUIDATING and flat:
            transitions.extend(self.mark_flat(at))
        elif self._state is TradingState.HALTED and portfolio.positions:
            symbols = ", ".join(sorted(portfolio.positions))
            transitions.append(
                self._move(TradingState.LIQUIDATING, f"positions found while halted: {symbols}", at)
            )

        if not self._latched:
            breaker_loss = self.breaker_loss(equity)
            if breaker_loss >= self._breaker_loss:
                reason = (
                    f"circuit breaker: equity {equity} is {_pct(breaker_loss)} below "
                    f"the baseline {self._breaker_baseline} (limit {_pct(self._breaker_loss)})"
                )
                transitions.extend(self._trip("circuit_breaker", reason, at, equity=equity))
                return transitions
            if self._peak_stop.breached(equity):
                stop = self._peak_stop
                reason = (
                    f"maximum drawdown stop: equity {equity} is {_pct(stop.drawdown(equity))} below "
                    f"the high-water mark {stop.high_water_mark} (limit {_pct(stop.limit or ZERO)})"
                )
                transitions.extend(self._trip("max_drawdown", reason, at, equity=equity))
                return transitions

        if self._state is TradingState.ACTIVE and not self._latched:
            daily = self.daily_drawdown(equity)
            if daily >= self._daily_limit:
                reason = (
                    f"daily drawdown {_pct(daily)} reached the limit {_pct(self._daily_limit)}"
                    f" (equity {equity}, session start {self._session_start_equity},"
                    f" day high {self._day_high_equity}): exits only for the rest of the session"
                )
                transitions.append(self._move(TradingState.REDUCING, reason, at))
        return transitions

    def breaker_loss(self, equity: Decimal) -> Decimal:
        """The loss from the breaker's baseline at ``equity``, as a fraction."""
        if self._breaker_baseline is None:
            return ZERO
        return loss_fraction(self._breaker_baseline, equity)

    def daily_drawdown(self, equity: Decimal) -> Decimal:
        """The larger of the loss from the session start and the drop from the day's high."""
        from_start = loss_fraction(self._session_start_equity or ZERO, equity)
        from_high = loss_fraction(self._day_high_equity or ZERO, equity)
        return max(from_start, from_high)

    # -- explicit commands -----------------------------------------------------------------

    def trip_circuit_breaker(self, reason: str, at: datetime) -> list[Transition]:
        """Latch and liquidate now (used by the loop's own checks and by tests).

        Tripping an already latched machine changes nothing and returns no transition.
        """
        return self._trip("circuit_breaker", _reason(reason, "trip_circuit_breaker"), _aware(at, "at"))

    def halt(self, reason: str, at: datetime) -> list[Transition]:
        """Operator halt: latch, cancel everything and flatten, then rest in HALTED."""
        text = _reason(reason, "halt")
        _aware(at, "at")
        if self._latched:
            # Already latched: flattening is under way or done; nothing changes.
            log.info("halt_already_latched", reason=text, latch_reason=self._latch_reason)
            return []
        self._latched = True
        self._latch_kind = "halt"
        self._latch_reason = text
        self._tripped_at = at
        log.warning("halted", reason=text, at=at.isoformat())
        return [self._move(TradingState.LIQUIDATING, f"operator halt: {text}", at)]

    def reduce(self, reason: str, at: datetime) -> list[Transition]:
        """ACTIVE -> REDUCING (exits only) for the rest of the session, e.g. after a run of
        broker answers nobody could classify: keep protecting and exiting, open nothing new.

        Like the daily loss limit it does not latch: :meth:`new_session` clears it. In any
        other state nothing changes (REDUCING already, or a latch that is stricter).
        """
        text = _reason(reason, "reduce")
        at = _aware(at, "at")
        if self._state is not TradingState.ACTIVE or self._latched:
            return []
        return [self._move(TradingState.REDUCING, text, at)]

    def mark_flat(self, at: datetime) -> list[Transition]:
        """The liquidation finished (no position, no open order): rest in HALTED."""
        _aware(at, "at")
        if self._state is not TradingState.LIQUIDATING:
            return []
        if self._latched:
            return [self._move(TradingState.HALTED, f"liquidation complete; latched: {self._latch_reason}", at)]
        return [self._move(TradingState.ACTIVE, "liquidation complete", at)]

    def rearm(self, reason: str, at: datetime, equity: Decimal | None = None) -> list[Transition]:
        """Open the latch (the only way to): back to ACTIVE.

        ``reason`` is required and journaled. The breaker's baseline becomes ``equity`` when
        given, else the equity of the next cycle, so that the loss that tripped it does not
        trip it again at once. The daily loss limit keeps measuring from the session start.
        Re-arming an unlatched machine changes nothing and is logged as ``rearm_ignored``.
        """
        text = _reason(reason, "rearm")
        _aware(at, "at")
        if not self._latched:
            log.info("rearm_ignored", reason=text, detail="not latched", state=self._state.value)
            return []
        previous = self._latch_reason
        if self._latch_kind == "max_drawdown":
            self._peak_stop.rebase(_decimal(equity, "equity") if equity is not None else None)
        self._latched = False
        self._latch_kind = None
        self._latch_reason = None
        self._tripped_at = None
        if equity is not None:
            self._breaker_baseline = _decimal(equity, "equity")
            self._rebase_pending = False
        else:
            self._rebase_pending = True
        log.warning("rearmed", reason=text, at=at.isoformat(), previous_latch_reason=previous)
        if self._state is TradingState.ACTIVE:
            return []
        return [self._move(TradingState.ACTIVE, f"rearmed: {text}", at)]

    # -- persistence -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly snapshot for the journal (money as strings, times ISO-8601)."""
        return {
            "state": self._state.value,
            "state_reason": self._state_reason,
            "latched": self._latched,
            "latch_kind": self._latch_kind,
            "reason": self._latch_reason,
            "tripped_at": self._tripped_at.isoformat() if self._tripped_at else None,
            "session_date": self._session_date.isoformat() if self._session_date else None,
            "session_start_equity": _str_or_none(self._session_start_equity),
            "breaker_baseline": _str_or_none(self._breaker_baseline),
            "rebase_pending": self._rebase_pending,
            "day_high_equity": _str_or_none(self._day_high_equity),
            "peak": self._peak_stop.to_dict(),
        }

    @classmethod
    def from_dict(cls, settings: _Settings, data: Mapping[str, Any]) -> SafetyStateMachine:
        """Rebuild the machine from :meth:`to_dict`'s snapshot (after a restart)."""
        machine = cls(settings)
        try:
            machine._state = TradingState(data["state"])
            machine._latched = bool(data["latched"])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"invalid trading-state snapshot: {exc}") from exc
        machine._state_reason = str(data.get("state_reason") or "restored")
        kind = data.get("latch_kind")
        if kind not in _LATCH_KINDS:
            raise ValueError(f"invalid trading-state snapshot: latch_kind {kind!r}")
        machine._latch_kind = kind
        if machine._latched and machine._latch_kind is None:
            machine._latch_kind = "circuit_breaker"
        machine._latch_reason = data.get("reason")
        tripped = data.get("tripped_at")
        machine._tripped_at = _aware(datetime.fromisoformat(tripped), "tripped_at") if tripped else None
        session = data.get("session_date")
        machine._session_date = date.fromisoformat(session) if session else None
        machine._session_start_equity = _optional(data.get("session_start_equity"))
        machine._breaker_baseline = _optional(data.get("breaker_baseline")) or machine._session_start_equity
        machine._rebase_pending = bool(data.get("rebase_pending", False))
        machine._day_high_equity = _optional(data.get("day_high_equity"))
        machine._peak_stop.restore(data.get("peak"))
        if machine._latched and machine._state in (TradingState.ACTIVE, TradingState.REDUCING):
            raise ValueError("invalid trading-state snapshot: latched but state is " + machine._state.value)
        return machine

    # -- internals -------------------------------------------------------------------------

    def _adopt_baseline(self, portfolio: PortfolioState) -> None:
        """No session was started: take the portfolio's own session start as the baseline."""
        baseline = _optional(portfolio.session_start_equity)
        if baseline is None or baseline <= ZERO:
            return
        self._session_start_equity = baseline
        if self._breaker_baseline is None:
            self._breaker_baseline = baseline
        log.warning("session_baseline_adopted", session_start_equity=str(baseline))

    def _trip(self, kind: LatchKind, reason: str, at: datetime, *, equity: Decimal | None = None) -> list[Transition]:
        if self._latched:
            return []
        self._latched = True
        self._latch_kind = kind
        self._latch_reason = reason
        self._tripped_at = at
        if kind == "max_drawdown":
            stop = self._peak_stop
            log.critical("max_drawdown_stop_triggered", reason=reason, at=at.isoformat(),
                         equity=_str_or_none(equity), high_water_mark=_str_or_none(stop.high_water_mark),
                         limit=_str_or_none(stop.limit))
        else:
            log.critical(
                "circuit_breaker_triggered",
                reason=reason,
                at=at.isoformat(),
                equity=_str_or_none(equity),
                breaker_baseline=_str_or_none(self._breaker_baseline),
                session_start_equity=_str_or_none(self._session_start_equity),
                limit=str(self._breaker_loss),
            )
        if self._state is TradingState.LIQUIDATING:
            return []
        return [self._move(TradingState.LIQUIDATING, reason, at)]

    def _move(self, to_state: TradingState, reason: str, at: datetime) -> Transition:
        transition = Transition(self._state, to_state, reason, at)
        self._state = to_state
        self._state_reason = reason
        log.warning(
            "trading_state_changed",
            from_state=transition.from_state.value,
            to_state=to_state.value,
            reason=reason,
            at=at.isoformat(),
            latched=self._latched,
        )
        return transition


def _optional(value: Any) -> Decimal | None:
    if value is None:
        return None
    return _decimal(value, "equity")


def _str_or_none(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _pct(fraction: Decimal) -> str:
    return f"{(fraction * 100).quantize(Decimal('0.01'))}%"
