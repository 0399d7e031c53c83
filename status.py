"""``python main.py status``: what an operator needs at a glance.

Equity and day P&L, positions with their protection, open orders, day trades left and the
PDT regime, the breaker and trading state, and the last cycle. Read from the journal, which
the running daemon updates every cycle, so it works while the daemon runs, in any mode,
without opening a second broker session (figures are as of the last cycle it shows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


async def render_status(settings: Any) -> str:
    from journal import Journal

    db = Path(settings.storage.state_db)
    if not db.exists():
        return f"No state yet at {db}: the daemon has not run with this --state-db."
    journal = Journal(db)
    try:
        last = journal.get_last_cycle() or {}
        safety = journal.get_state("safety") or {}
        applied = set((journal.get_state("operator_commands_applied") or {}).get("ids", []))
        commands = [e["payload"] for e in journal.events(kind="operator_command")
                    if e["payload"].get("id") not in applied]
        pdt = journal.get_state("pdt_status") or {}
    finally:
        journal.close()
    data = last.get("data", last) if isinstance(last, dict) else {}
    lines = ["Trading daemon status", ""]
    lines.append(f"  last cycle        {data.get('at', 'never')} (phase {data.get('phase', '?')})")
    lines.append(f"  equity            {data.get('equity', '?')}   day P&L {data.get('day_pnl', '?')}")
    state = safety.get("state", "ACTIVE")
    latch = ""
    if safety.get("latched"):
        kind = "circuit breaker" if safety.get("latch_kind") == "circuit_breaker" else "operator halt"
        latch = f" LATCHED by {kind}: {safety.get('reason')} (re-arm with main.py rearm --reason ...)"
    lines.append(f"  trading state     {state}{latch}")
    lines.append(f"  session baseline  {safety.get('session_start_equity', '?')} ({safety.get('session_date', '?')})")
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
        lines.append(f"  pending commands  {', '.join(c['kind'] for c in commands)}")
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
