"""``python main.py status``: what an operator needs at a glance.

Equity and day P&L, positions with their protection, open orders, day trades left and the
PDT regime, the breaker and trading state, pending operator commands, and whether a daemon
is running on this state database. Read from the journal, so it works in any mode without
opening a second broker session. The figures are the broker's state as the daemon last saw
it, and the output says when and which: reconciled with the broker at the daemon's
start-up (so a restart at night shows what the broker holds now, not the previous run's
last cycle), or at a trading cycle; with no daemon running it says they may be out of date.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.drawdown_stop import latch_label


def _snapshot_line(data: dict[str, Any]) -> str:
    """When and where the figures below come from."""
    at = data.get("at")
    if at is None:
        return "  last cycle        never (no start-up reconciliation or cycle journaled yet)"
    if data.get("source") == "startup_reconciliation":
        return (f"  last cycle        none since the daemon started; figures are the broker's state "
                f"reconciled at start-up, {at}")
    return f"  last cycle        {at} (phase {data.get('phase', '?')}); figures are the broker's state then"


def _daemon_line(db: Path) -> str:
    from journal.state_lock import lock_holder

    holder = lock_holder(db)
    if holder is None:
        return "  daemon            not running on this state database (figures may be out of date)"
    return f"  daemon            running (pid {holder.pid if holder.pid is not None else 'unknown'})"


async def render_status(settings: Any) -> str:
    from journal.journal import Journal

    db = Path(settings.storage.state_db)
    journal = Journal(db)
    try:
        last = journal.get_last_cycle() or {}
        safety = journal.get_state("safety") or {}
        commands = journal.operator_commands(pending=True)
        pdt = journal.get_state("pdt_status") or {}
    finally:
        journal.close()
    data = last.get("data", last) if isinstance(last, dict) else {}
    lines = ["Trading daemon status", ""]
    lines.append(_daemon_line(db))
    lines.append(_snapshot_line(data))
    lines.append(f"  equity            {data.get('equity', '?')}   day P&L {data.get('day_pnl', '?')}")
    state = safety.get("state", "ACTIVE")
    latch = ""
    if safety.get("latched"):
        kind = latch_label(safety.get("latch_kind"))
        reason = str(safety.get("reason"))
        if reason.lower().startswith(f"{kind.lower()}: "):  # the reason often names its stop already
            reason = reason[len(kind) + 2:]
        latch = f" LATCHED by {kind}: {reason} (re-arm with main.py rearm --reason ...)"
    lines.append(f"  trading state     {state}{latch}")
    lines.append(f"  session baseline  {safety.get('session_start_equity', '?')} ({safety.get('session_date', '?')})")
    peak = (safety.get("peak") or {}).get("high_water_mark")
    if peak is not None:
        lines.append(f"  high-water mark   {peak} (the maximum drawdown stop measures from it)")
    if pdt:
        lines.append(f"  day trading       {_day_trading(pdt)}")
    positions = data.get("position_details", [])
    lines.append(f"  positions         {data.get('positions', len(positions))}")
    for p in positions:
        protected = "protected" if p.get("protected") else "UNPROTECTED"
        lines.append(f"    {p['symbol']:<6} qty {p['qty']:>8}  P&L {p.get('unrealized_pl')}  stop {p.get('stop')}  {protected}")
    orders = data.get("order_details", [])
    # order_details lists every working order, bracket legs included
    lines.append(f"  open orders       {len(orders) if orders else data.get('open_orders', 0)}")
    for o in orders:
        lines.append(f"    {o['symbol']:<6} {o['side']:<4} {o['type']:<12} qty {o['qty']}  {o['status']}  {o.get('client_order_id', '')}")
    if commands:
        lines.append("  pending commands  " + ", ".join(f"{c.get('kind')} #{c.get('seq')}" for c in commands)
                     + " (applied in this order)")
    return "\n".join(lines)


def _day_trading(pdt: dict[str, Any]) -> str:
    """The PDT regime and what is left of it, e.g. ``regime legacy, 1 used in 5 business
    days, 2 left; blocked: none``."""
    used = pdt.get("day_trades_used")
    window = pdt.get("window_business_days")
    left = pdt.get("day_trades_left")
    if left is not None:
        allowance = f"{left} left"
    elif pdt.get("regime") == "legacy" and pdt.get("exempt"):
        allowance = f"no limit (equity at or above {pdt.get('equity_threshold')})"
    else:
        allowance = "no count limit"
    text = f"regime {pdt.get('regime')}, {used} used in {window} business days, {allowance}"
    if pdt.get("budget_max_day_trades") is not None:
        text += (f"; self-imposed budget {pdt.get('budget_left')} of {pdt.get('budget_max_day_trades')} "
                 f"left ({pdt.get('budget_window_days')} days)")
    blocked = pdt.get("blocked_symbols") or []
    return text + f"; blocked: {', '.join(blocked) if blocked else 'none'}"
