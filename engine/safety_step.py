"""Step 3 of the loop: operator commands, the safety state machine, emergency exits, protection.

:class:`SafetyStep` is what :meth:`engine.trading_system.TradingSystem.enforce_safety` and
``apply_operator_commands`` run: ``halt``/``rearm`` from the journal (with the latch horizon
that makes a stale ``rearm`` harmless), the breaker and drawdown checks of
:class:`engine.trading_state.SafetyStateMachine`, liquidation, the risk manager's emergency
exits, protective stops, and the journal, log and alert of every state change.

It holds a reference to the loop rather than copies of its parts: tests replace the loop's
``safety`` and the backtest reads the same state, so the step must see what the loop sees.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Sequence

import structlog

from alerter import AlertLevel
from core.errors import TemporaryError
from engine.cycle_record import AccountSnapshot
from engine.exits import opened_in
from engine.portfolio import TradingState
from engine.trading_state import Transition
from market_status_manager import MarketStatus
from pdt_manager import AccountView, OrderCheck

# The loop's own logger name: the log lines read as before the step moved out of the loop.
log = structlog.get_logger("engine.trading_system")


class SafetyStep:
    """Operator commands, safety checks and state-change announcements for the loop ``system``
    (a TradingSystem; typed loosely because importing it here would make a circle)."""

    def __init__(self, system: Any) -> None:
        self.system = system
        self._stored_states: dict[str, dict[str, Any]] = {}

    async def apply_operator_commands(self) -> None:
        """``python main.py halt`` / ``rearm`` append ``operator_command`` events to the journal
        (append-only, so the CLI and the daemon never overwrite each other); apply new ones in
        the order they were queued (the journal's sequence, not anybody's clock).

        A ``rearm`` queued before the current latch was set (before the halt, or before the
        breaker tripped) is stale: it was not a decision about this latch, so it is ignored
        (``operator_rearm_stale``) and never cancels a later halt.
        """
        system = self.system
        journal = system.journal
        pending = journal.operator_commands(pending=True)
        if not pending:
            return
        now = system.clock.now()
        for command in pending:
            kind, reason, seq = command.get("kind"), command.get("reason", ""), int(command.get("seq", 0))
            applied = {"reason": reason, "id": command.get("id"), "seq": seq, "requested_at": command.get("at")}
            if kind == "halt":
                transitions = system.safety.halt(reason, now)
                self.raise_latch_horizon(seq)
            elif kind == "rearm":
                horizon = self.latch_horizon()
                if system.safety.latched and horizon is not None and seq <= horizon:
                    log.warning("operator_rearm_stale", reason=reason, seq=seq, latch_seq=horizon,
                                latch_reason=system.safety.latch_reason,
                                detail="queued before the current latch was set; ignored")
                    journal.log_event("rearm_ignored", {**applied, "latch_seq": horizon,
                                                        "why": "queued before the latch"}, now)
                    journal.mark_operator_command_applied(str(command.get("id")))
                    continue
                account = await system.broker.get_account()
                # A non-positive reading is no baseline: rebase on the next believed cycle.
                equity = account.equity if account.equity > 0 else None
                transitions = system.safety.rearm(reason, now, equity=equity)
            else:
                log.warning("operator_command_unknown", command=command)
                if command.get("id"):
                    journal.mark_operator_command_applied(str(command["id"]))
                continue
            journal.log_event(f"{kind}_applied", applied, now)
            journal.mark_operator_command_applied(str(command.get("id")))
            self.persist()
            await self.announce(transitions)

    def latch_identity(self) -> str | None:
        """Which latch is set now (kind and time), or None when unlatched."""
        safety = self.system.safety
        if not safety.latched:
            return None
        at = safety.tripped_at
        return f"{safety.latch_kind}@{at.isoformat() if at else '?'}"

    def latch_horizon(self) -> int | None:
        """The newest operator command queued before the current latch (None: unknown)."""
        saved = self.system.journal.get_state("latch_horizon") or {}
        identity = self.latch_identity()
        if identity is None or saved.get("latch") != identity:
            return None
        return int(saved.get("seq", 0))

    def raise_latch_horizon(self, seq: int) -> None:
        """Commands up to ``seq`` predate the current latch (a halt at ``seq``, or a halt at
        ``seq`` that found the machine already latched)."""
        identity = self.latch_identity()
        if identity is None:
            return
        horizon = self.latch_horizon()
        if horizon is None or seq > horizon:
            self.system.journal.set_state("latch_horizon", {"latch": identity, "seq": seq})

    def note_latch_horizon(self) -> None:
        """A latch set by the loop itself (circuit breaker): every operator command queued so
        far predates it. Called whenever the safety state is persisted."""
        if self.system.safety.latched and self.latch_horizon() is None:
            self.raise_latch_horizon(self.system.journal.last_operator_seq())

    async def enforce_safety(self, snapshot: AccountSnapshot, status: MarketStatus) -> AccountSnapshot:
        """Breaker, drawdown, emergency exits and protection, every cycle, before anything else.

        A rejected (unconfirmed) account reading trips nothing and exits nothing; a liquidation
        decided earlier on a confirmed reading (or by the operator) carries on.
        """
        system = self.system
        if snapshot.rejected:
            if system.safety.state is TradingState.LIQUIDATING:
                await system.executor.liquidate_all(system.safety.state_reason, phase=status.phase)
            return snapshot
        transitions = system.safety.on_cycle(snapshot.portfolio)
        self.persist()
        self.record_transitions(transitions)
        if system.safety.state is TradingState.LIQUIDATING:
            # The liquidation orders go out first; the alert saying so follows them (also
            # when the broker fails half-way).
            try:
                reports = await system.executor.liquidate_all(system.safety.state_reason, phase=status.phase)
            finally:
                await self.alert_transitions(transitions)
            await system.alert_rules.emergency_outcomes(reports)
            snapshot = await system.refresh_account()
            transitions = system.safety.on_cycle(snapshot.portfolio)
            self.persist()
            await self.announce(transitions)
            return snapshot
        await self.alert_transitions(transitions)
        exits = system.risk.check_positions(snapshot.portfolio)
        for exit_order in exits:
            await self._emergency_exit(exit_order, snapshot, status)
        if exits:
            snapshot = await system.refresh_account()
        if system.safety.state is not TradingState.HALTED:
            await system.executor.protect_positions(snapshot.positions, snapshot.open_orders)
        return snapshot

    async def _emergency_exit(self, exit_order: Any, snapshot: AccountSnapshot, status: MarketStatus) -> None:
        """One of the risk manager's emergency exits: out first, the PDT flag alert after it."""
        system = self.system
        pdt = None
        if status.session is not None and exit_order.qty > 0:
            position = next((p for p in snapshot.positions if p.symbol == exit_order.symbol), None)
            price = (position.current_price or position.avg_entry_price) if position else Decimal(1)
            pdt = system.pdt.check_order(
                OrderCheck(symbol=exit_order.symbol, side=exit_order.side, qty=abs(exit_order.qty),
                           price=price, is_closing=True,
                           opens_today=opened_in(system.ledger, exit_order.symbol, status.session), is_risk_exit=True),
                AccountView.from_account(snapshot.account), status.session)
        log.warning("emergency_exit_threshold", symbol=exit_order.symbol, reason=exit_order.reason,
                    loss_fraction=str(exit_order.loss_fraction))
        report = await system.executor.emergency_exit(exit_order.symbol, exit_order.reason, phase=status.phase,
                                                      known_qty=exit_order.qty)
        if pdt is not None and pdt.warn_flag:  # after the exit went out, never before it
            await system.alerter.send(AlertLevel.CRITICAL, f"Risk exit of {exit_order.symbol}: {pdt.warn_flag}",
                                      pdt.reason, key=f"pdt_flag:{exit_order.symbol}")
        await system.alert_rules.emergency_outcome(report)

    async def announce(self, transitions: Sequence[Transition]) -> None:
        """Journal, then alert, each state change."""
        self.record_transitions(transitions)
        await self.alert_transitions(transitions)

    def record_transitions(self, transitions: Sequence[Transition]) -> None:
        """Journal each state change (before anything is done about it)."""
        system = self.system
        for t in transitions:
            system.journal.log_event("trading_state_changed", t.to_dict(), system.clock.now())
        system.summary.state = system.safety.state.value

    async def alert_transitions(self, transitions: Sequence[Transition]) -> None:
        system = self.system
        for t in transitions:
            data = t.to_dict()
            level = AlertLevel.WARNING
            title = f"Trading state {data.get('from')} -> {data.get('to')}"
            if data.get("to") == TradingState.LIQUIDATING.value:
                level = AlertLevel.EMERGENCY
                if system.safety.latch_kind == "circuit_breaker":
                    title = "CIRCUIT BREAKER TRIPPED: liquidating"
                elif system.safety.latch_kind == "max_drawdown":
                    title = "MAXIMUM DRAWDOWN STOP: liquidating"
            await system.alerter.send(level, title, data.get("reason", ""), key=f"state:{data.get('to')}", fields=data)
        system.summary.state = system.safety.state.value

    def persist(self) -> None:
        """The safety state into the journal (and the latch horizon of a latch the loop set)."""
        self.store_state("safety", self.system.safety.to_dict())
        self.note_latch_horizon()

    def store_state(self, key: str, value: dict[str, Any]) -> None:
        """``journal.set_state``, skipped when this loop last stored exactly this value there
        (only the loop writes these keys; most cycles change neither)."""
        if self._stored_states.get(key) != value:
            self.system.journal.set_state(key, value)
            self._stored_states[key] = value

    async def on_broker_unavailable(self, exc: TemporaryError, status: MarketStatus) -> None:
        """Disconnect policy: protection orders live at the broker; alert during the session."""
        log.warning("broker_unavailable", error=str(exc), phase=status.phase)
        if status.is_regular or status.is_extended:  # alerted once it lasts alerts.unreachable_alert_seconds
            await self.system.alert_rules.connection_lost("broker", str(exc))
