"""Operator commands in order and start-up reconciliation after ``kill -9`` (issue 13, items
2 and 6), with the daemon's own ``TradingSystem`` against a simulator over HTTP on 127.0.0.1
at ``--speed max`` (see ``tests/test_e2e_safety_support.py``).

- A ``halt`` queued after a ``rearm`` wins, and a ``rearm`` queued before the current latch
  was set (before the breaker tripped) never opens it.
- A restart after ``kill -9`` mid-fills: the journal the dead daemon left behind (an entry
  journaled as partly filled, a fill of it not journaled, bracket legs journaled ``new``) is
  brought up to the broker's state by the start-up reconciliation, before the first cycle;
  ``status`` then shows that reconciled state, not the dead run's last cycle.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from ops import status
from tests.test_e2e_safety_support import (
    WIDE_STOPS,
    AlwaysBuy,
    PassThroughAnalyzer,
    SimStack,
    cycle,
    events,
    sim_stack,
)
from engine.trading_state import TradingState

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SESSION_START = "2025-03-04T10:30:00"


async def test_a_halt_queued_after_a_rearm_wins(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start=SESSION_START) as stack:
        system = stack.new_system()
        await system.startup()
        # queued while the market was closed / the daemon busy: both pending at the next cycle
        stack.journal.queue_operator_command("rearm", "old re-arm, left over", stack.clock.now())
        stack.journal.queue_operator_command("halt", "stop everything", stack.clock.now())
        with capture_logs() as logs:
            await cycle(system, minutes=1)
        assert system.safety.latched and system.safety.latch_kind == "halt"
        assert system.safety.state in (TradingState.LIQUIDATING, TradingState.HALTED)
        assert [e["reason"] for e in events(logs, "halted")] == ["stop everything"]
        assert not events(logs, "rearmed")
        assert stack.journal.operator_commands(pending=True) == []


async def test_a_rearm_queued_before_the_breaker_tripped_never_opens_the_latch(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start=SESSION_START) as stack:
        system = stack.new_system()
        await system.startup()
        # queued (for an earlier latch) while the cycle that trips the breaker was running
        stale = stack.journal.queue_operator_command("rearm", "meant for yesterday", stack.clock.now())
        system.safety.trip_circuit_breaker("equity fell through the breaker", stack.clock.now())
        system._persist_safety()  # what the cycle does right after the guards ran
        with capture_logs() as logs:
            await cycle(system, minutes=1)
        assert system.safety.latched, "a re-arm older than the latch must not open it"
        assert [e["seq"] for e in events(logs, "operator_rearm_stale")] == [stale["seq"]]
        assert not events(logs, "rearmed")
        assert [e["payload"]["id"] for e in stack.journal.events(kind="rearm_ignored")] == [stale["id"]]

        # a re-arm given after the trip does open it, and it survives a restart's reading
        stack.journal.queue_operator_command("rearm", "loss reviewed", stack.clock.now())
        with capture_logs() as logs:
            await cycle(system, minutes=1)
        assert [e["reason"] for e in events(logs, "rearmed")] == ["loss reviewed"]
        assert not system.safety.latched


# -- kill -9 mid-fills, then a restart --------------------------------------------------------


def _sql(db: str, statement: str, params: tuple[Any, ...] = ()) -> None:
    """Write to the journal behind the daemon's back (what a kill -9 leaves behind)."""
    with sqlite3.connect(db) as conn:
        conn.execute(statement, params)


async def _broker_orders(stack: SimStack) -> dict[str, Any]:
    """Every order and leg at the broker by client order id."""
    out: dict[str, Any] = {}
    for order in await stack.all_orders():
        for o in [order, *(order.legs or [])]:
            out[o.client_order_id] = o
    return out


async def test_restart_after_kill_9_mid_fills_reconciles_quantities_and_legs_before_trading(
        tmp_path: Path) -> None:
    symbols = ["SPY", "AAPL", "MSFT"]
    async with sim_stack(tmp_path, start=SESSION_START, symbols=symbols, overrides=WIDE_STOPS) as stack:
        system = stack.new_system(analyzer=PassThroughAnalyzer(stack.clock))
        system.strategies = [AlwaysBuy(stack.settings)]
        await system.startup()
        for _ in range(3):  # entries, then their legs journaled from the open-orders list
            await cycle(system, minutes=1)
        db = stack.settings.storage.state_db
        entries = [o for o in stack.journal.orders() if o["origin"] == "submitted" and o["order_class"] == "bracket"
                   and o["status"] == "filled"]
        assert len(entries) >= 2, [(o["client_order_id"], o["status"]) for o in stack.journal.orders()]
        legs = [o for o in stack.journal.orders() if o["origin"] == "leg"]
        assert legs and all(o["status"] in ("new", "held") for o in legs)

        # kill -9 in the middle of the fills of the first entry: its last fill and its final
        # status never reached the journal (journaled: partly filled, one share short).
        victim = entries[0]
        qty = Decimal(victim["qty"])
        bid = victim["broker_order_id"]
        stack.journal.close()
        _sql(db, "DELETE FROM fills WHERE broker_order_id = ?", (bid,))
        _sql(db, "INSERT INTO fills (execution_id, client_order_id, broker_order_id, symbol, side, qty, price, at, "
                 "applied_qty, cum_qty, segments, source) VALUES (?, ?, ?, ?, 'buy', ?, ?, ?, ?, ?, ?, 'broker')",
             (f"partial-{bid}", victim["client_order_id"], bid, victim["symbol"], str(qty - 1),
              str(victim["filled_avg_price"]), victim["updated_at"].isoformat(), str(qty - 1), str(qty - 1),
              f'[["0", "{qty - 1}"]]'))
        _sql(db, "UPDATE orders SET status = 'partially_filled', filled_qty = ? WHERE client_order_id = ?",
             (str(qty - 1), victim["client_order_id"]))
        _sql(db, "DELETE FROM fills WHERE execution_id NOT LIKE 'partial-%' AND broker_order_id = ?", (bid,))

        # While the daemon is down the market rallies through every take-profit: the broker
        # fills them and cancels the stop legs. The journal still says "new" for all legs.
        await stack.control("shock", {"symbols": "*", "pct": 45})
        await stack.clock.sleep(60)
        broker = await _broker_orders(stack)
        assert any(broker[o["client_order_id"]].status == "canceled" for o in legs)
        assert any(broker[o["client_order_id"]].status == "filled" for o in legs)

        stack.reopen_journal()
        restarted = stack.new_system(analyzer=PassThroughAnalyzer(stack.clock))
        with capture_logs() as logs:
            assert await restarted.startup()
        assert not events(logs, "cycle_complete"), "start-up reconciles before any trading cycle"

        journal = stack.journal
        for row in journal.orders():
            order = broker.get(row["client_order_id"])
            if order is None:
                continue
            assert row["status"] == order.status, (row["client_order_id"], row["status"], order.status)
            counted = sum((f["applied_qty"] for f in journal.fills_for(row["client_order_id"])), Decimal(0))
            assert counted == order.filled_qty, (row["client_order_id"], counted, order.filled_qty)
        assert Decimal(journal.order_by_client_id(victim["client_order_id"])["filled_qty"]) == qty
        positions = {p.symbol: p.qty for p in await stack.positions()}
        implied = {s: q for s, q in journal.implied_positions().items() if q != 0}
        assert implied == positions
        reconciled = events(logs, "reconciliation")
        assert len(reconciled) == 1
        changed = {c["client_order_id"]: c["to"] for c in reconciled[0]["status_changes"]}
        assert {o["client_order_id"] for o in legs} <= set(changed)
        assert reconciled[0]["position_mismatches"] == []

        # status shows the reconciled state (flat after the rally), saying where it comes from
        text = await status.render_status(stack.settings)
        assert "reconciled at start-up" in text
        assert "positions         0" in text and "open orders       0" in text, text
