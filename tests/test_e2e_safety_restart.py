"""``kill -9`` in the middle of an order submission, then a restart (issue 5, items 7 and 12).

The daemon (``main.main()``, see ``tests/test_e2e_safety_support.py``) runs as a subprocess
against an external ``python -m simulator``, so the broker keeps its orders and positions
while the daemon dies and comes back. The simulator is told to accept every ``POST
/v2/orders`` and then hold the answer (``accept_then_timeout``): the order exists at the
broker, the daemon never hears so. The test SIGKILLs the daemon as soon as the journal shows
the submission row (written before the POST), restarts it on the same state db, and checks
that the broker holds no duplicate and that the journal agrees with the broker.

Two submissions are interrupted: a bracket entry for a trade intent (the default strategies
on a day they trade), and the protective order for a position found unprotected at start-up.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e_helpers import (  # noqa: F401  (run_dir is a fixture)
    HOLDING_ENV,
    TRADING_SEED,
    TRADING_START,
    TRADING_SYMBOLS,
    Simulator,
    journal_rows,
    make_run_paths,
    named,
    run_dir,
)
from tests.test_e2e_safety_support import ExternalDaemon, sim_control, sim_get, sim_post

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


def _rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Journal rows, or none while the daemon has not created or migrated the file yet."""
    try:
        return [dict(r) for r in journal_rows(db, sql, params)]
    except sqlite3.OperationalError:
        return []


def _broker_orders(url: str) -> list[dict[str, Any]]:
    return sim_get(url, "/v2/orders?status=all&nested=true&limit=500")


def _orders_of(orders: list[dict[str, Any]], symbol: str, side: str) -> list[dict[str, Any]]:
    """Every top-level order of ``symbol`` on ``side`` the broker ever accepted, any status."""
    return [o for o in orders if o["symbol"] == symbol and o["side"] == side
            and not o["client_order_id"].startswith("hand-")]


def _kill_during_submission(sim: Simulator, run_dir: Path, sim_args: list[str],
                            env: dict[str, str] | None = None) -> tuple[Any, dict[str, Any]]:
    """Start the daemon with every order POST held, SIGKILL it once the journal shows the
    submission row and the broker has the order, restart it with the faults cleared, let it
    run two cycles and stop it. Returns (paths, the killed submission's journal row)."""
    sim_control(sim.url, "faults", {"accept_then_timeout": 1.0, "endpoints": "/v2/orders", "timeout_s": 90})
    paths = make_run_paths(run_dir, "daemon")
    # Polling only for the daemon that is killed: on the trade stream it would hear of the
    # order from its "new" event while the POST's answer is held, and this is about a
    # submission whose outcome the journal does not know. The restart listens again.
    first = ExternalDaemon(sim.url, sim_args, paths, env={**(env or {}), "TRADING_STREAM__ENABLED": "false"})
    try:
        rows = first.wait_until(lambda: _rows(paths.state_db, "SELECT * FROM orders WHERE origin = 'submitted'"),
                                timeout=90, what="the journal's submission row")
        cid = rows[0]["client_order_id"]
        first.wait_until(lambda: any(o["client_order_id"] == cid for o in _broker_orders(sim.url)),
                         timeout=30, what="the order at the broker")
    finally:
        first.kill()  # SIGKILL: mid-POST, nothing flushed, no shutdown
    killed = _rows(paths.state_db, "SELECT * FROM orders WHERE client_order_id = ?", (cid,))[0]
    assert killed["broker_order_id"] is None, "killed before the broker's answer arrived"

    sim_control(sim.url, "faults", {"clear": True})
    before = len(first.events())  # the log file is shared: look only at the restart's lines
    second = ExternalDaemon(sim.url, sim_args, paths, env=env)
    try:
        second.wait_for("reconciliation", timeout=60, after=before)
        second.wait_until(lambda: len(named(second.events()[before:], "cycle_complete")) >= 2, timeout=60,
                          what="two cycles after the restart")
        assert second.stop() == 0
        reconciled = named(second.events()[before:], "reconciliation")
    finally:
        second.kill()
    changed = [c for e in reconciled for c in e.get("status_changes") or []]
    assert any(c["client_order_id"] == cid for c in changed), "the restart reconciles the killed submission"
    return paths, killed


def _assert_journal_matches_broker(db: Path, orders: list[dict[str, Any]], killed_cid: str) -> None:
    """Every order of the run (all but those bought by hand before it) is journaled under the
    broker's id with the broker's status; the killed submission's legs, adopted by the
    restart's reconciliation, are journaled under theirs; nothing the daemon journaled as
    submitted is missing at the broker; no client order id was used twice."""
    journal = {r["client_order_id"]: r for r in _rows(db, "SELECT * FROM orders")}
    run_orders = {o["client_order_id"]: o for o in orders if not o["client_order_id"].startswith("hand-")}
    assert set(run_orders) <= set(journal), set(run_orders) - set(journal)
    submitted = {k for k, r in journal.items() if r["origin"] == "submitted"}
    assert submitted <= set(run_orders), submitted - set(run_orders)
    for key, order in run_orders.items():
        assert journal[key]["broker_order_id"] == order["id"], key
        assert journal[key]["status"] == order["status"], (key, journal[key]["status"], order["status"])
    assert journal[killed_cid]["origin"] == "submitted", "the killed submission is the daemon's own row"
    for leg in run_orders[killed_cid].get("legs") or []:
        row = journal.get(leg["client_order_id"])
        assert row is not None and row["broker_order_id"] == leg["id"], leg["client_order_id"]
        assert row["parent_client_order_id"] == killed_cid
    counts = Counter(o["client_order_id"] for o in orders)
    assert all(n == 1 for n in counts.values()), counts


def test_kill_9_during_a_bracket_entry_leaves_one_order_per_intent(run_dir: Path) -> None:
    # The shared e2e trading day: the default momentum strategy buys NVDA at 09:56 New York.
    symbols = TRADING_SYMBOLS
    with Simulator(run_dir, ["--speed", "max", "--symbols", symbols, "--seed", str(TRADING_SEED),
                             "--start", f"{TRADING_START}T09:50:00", "--no-rate-limit"]) as sim:
        paths, killed = _kill_during_submission(
            sim, run_dir, ["--symbols", symbols, "--seed", str(TRADING_SEED)], env=HOLDING_ENV)
        assert killed["intent_id"] and killed["order_class"] == "bracket"
        symbol = killed["symbol"]
        orders = _broker_orders(sim.url)
        entries = _orders_of(orders, symbol, "buy")
        assert [o["client_order_id"] for o in entries] == [killed["client_order_id"]], \
            "one entry order at the broker for the intent, the killed one"
        intents = _rows(paths.state_db, "SELECT intent_id FROM intents WHERE symbol = ?", (symbol,))
        assert killed["intent_id"] in {r["intent_id"] for r in intents}
        _assert_journal_matches_broker(paths.state_db, orders, killed["client_order_id"])


def test_kill_9_during_a_protective_order_leaves_no_duplicate_protection(run_dir: Path) -> None:
    with Simulator(run_dir, ["--speed", "max", "--symbols", "SPY,AAPL,MSFT", "--seed", "7",
                             "--start", "2025-03-04T10:30:00", "--no-rate-limit"]) as sim:
        # Positions bought by hand before the daemon starts: it must protect them at start-up.
        held = {"AAPL": Decimal(50), "MSFT": Decimal(20)}
        for symbol, qty in held.items():
            order = sim_post(sim.url, "/v2/orders", {"symbol": symbol, "qty": str(qty), "side": "buy",
                                                     "type": "market", "time_in_force": "day",
                                                     "client_order_id": f"hand-{symbol}"})
            assert sim_get(sim.url, f"/v2/orders/{order['id']}")["status"] == "filled"
        paths, killed = _kill_during_submission(sim, run_dir, ["--symbols", "SPY,AAPL,MSFT"])
        assert killed["symbol"] in held and killed["side"] == "sell"

        orders = _broker_orders(sim.url)
        positions = {p["symbol"]: Decimal(p["qty"]) for p in sim_get(sim.url, "/v2/positions")}
        assert positions == held
        # Each position got exactly one protective order over the whole run (a second one,
        # even if the first had been canceled to make room, would show here), covering its
        # full quantity; the killed submission's is the one that protects its symbol.
        for symbol, qty in held.items():
            protective = _orders_of(orders, symbol, "sell")
            assert len(protective) == 1, (symbol, [(o["client_order_id"], o["status"]) for o in protective])
            assert Decimal(protective[0]["qty"]) == qty and protective[0]["status"] == "new"
        assert [o["client_order_id"] for o in _orders_of(orders, killed["symbol"], "sell")] == \
            [killed["client_order_id"]]
        _assert_journal_matches_broker(paths.state_db, orders, killed["client_order_id"])
