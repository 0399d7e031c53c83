"""The state database as a user meets it after trouble (issue 13, items 2 and 6).

- Two daemons started on one state database: the second exits 2 at once with one line on
  stderr naming the first one's pid; the first keeps trading and obeys ``halt``.
- ``kill -9`` during an entry's fills, the market moving while the daemon is down (the
  rest of the fills, a take-profit filled and its stop leg canceled by the broker), then a
  restart on the same journal: the start-up reconciliation, before the first trading cycle,
  brings every order's and leg's state and every filled quantity in the journal up to the
  broker's, and ``status`` shows that reconciled state.
"""

from __future__ import annotations

import signal
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e_helpers import (  # noqa: F401  (run_dir is a fixture)
    HOLDING_ARGS,
    HOLDING_ENV,
    TRADING_SEED,
    TRADING_START,
    TRADING_SYMBOLS,
    Daemon,
    RunPaths,
    Simulator,
    journal_rows,
    make_run_paths,
    named,
    run_dir,
    run_main,
)
from tests.test_e2e_safety_support import ExternalDaemon, sim_control, sim_get

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_a_second_daemon_on_the_same_state_db_exits_2_naming_the_first(run_dir: Path) -> None:
    first_paths = make_run_paths(run_dir, "first")
    with Daemon(HOLDING_ARGS, first_paths, env=HOLDING_ENV) as first:
        first.wait_for("cycle_complete", timeout=60)
        second_paths = RunPaths(workdir=make_run_paths(run_dir, "second").workdir,
                                state_db=first_paths.state_db, log_file=run_dir / "second" / "log.jsonl")
        second = run_main(HOLDING_ARGS, second_paths, env=HOLDING_ENV, timeout=60)
        assert second.returncode == 2, second.describe()
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, second.stderr
        assert f"pid {first.pid}" in lines[0] and str(first_paths.state_db) in lines[0]
        assert not second.named("system_start"), "the second daemon must not start trading"
        assert [e["holder_pid"] for e in second.named("state_db_in_use")] == [first.pid]

        # the first one is untouched: still running, still obeying the operator
        assert first.proc.poll() is None
        halt = run_main(["halt", "--reason", "one daemon only"], first_paths)
        assert halt.returncode == 0 and f"(pid {first.pid})" in halt.stdout, halt.describe()
        first.wait_for("halted", timeout=30)
        assert first.stop(signal.SIGTERM) == 0
    # once it is gone, the database is free again
    status = run_main(["status"], first_paths)
    assert "not running on this state database" in status.stdout, status.stdout

    # a halt given while no daemon runs: said so, and applied at the next start, before trading
    run_main(["rearm", "--reason", "back to work"], first_paths)
    halt = run_main(["halt", "--reason", "weekend maintenance"], first_paths)
    assert halt.returncode == 0 and "applied when the daemon next starts" in halt.stdout, halt.describe()
    later = RunPaths(workdir=make_run_paths(run_dir, "later").workdir, state_db=first_paths.state_db,
                     log_file=run_dir / "later" / "log.jsonl")
    with Daemon(HOLDING_ARGS, later, env=HOLDING_ENV) as daemon:
        rearmed = daemon.wait_for("rearmed", timeout=60)
        halted = daemon.wait_for("halted", timeout=60)
        daemon.wait_for("cycle_complete", lambda e: e["state"] == "halted", timeout=60)
        assert daemon.stop(signal.SIGTERM) == 0
        names = [e["event"] for e in daemon.events()]
    assert rearmed["reason"] == "back to work" and halted["reason"] == "weekend maintenance"
    assert names.index("halted") < names.index("cycle_complete"), "the halt is applied before trading"


# -- kill -9 during fills, then a restart ------------------------------------------------------


def _rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    try:
        return [dict(r) for r in journal_rows(db, sql, params)]
    except sqlite3.OperationalError:
        return []


def _broker_orders(url: str) -> dict[str, dict[str, Any]]:
    """Every order and leg the broker has, by client order id."""
    out: dict[str, dict[str, Any]] = {}
    for order in sim_get(url, "/v2/orders?status=all&nested=true&limit=500"):
        for o in [order, *(order.get("legs") or [])]:
            out[o["client_order_id"]] = o
    return out


def _filled_in_journal(db: Path, cid: str) -> Decimal:
    rows = _rows(db, "SELECT qty, applied_qty FROM fills WHERE client_order_id = ?", (cid,))
    return sum((Decimal(r["applied_qty"] or r["qty"]) for r in rows), Decimal(0))


def test_kill_9_during_fills_then_restart_reconciles_quantities_and_legs(run_dir: Path) -> None:
    with Simulator(run_dir, ["--speed", "max", "--symbols", TRADING_SYMBOLS, "--seed", str(TRADING_SEED),
                             "--start", f"{TRADING_START}T09:50:00", "--no-rate-limit"]) as sim:
        paths = make_run_paths(run_dir, "daemon")
        args = ["--symbols", TRADING_SYMBOLS, "--seed", str(TRADING_SEED)]
        first = ExternalDaemon(sim.url, args, paths, env=HOLDING_ENV)
        try:
            # killed once the entry's first fill is journaled (its legs may not be yet)
            entry = first.wait_until(lambda: _rows(
                paths.state_db, "SELECT o.* FROM orders o JOIN fills f ON f.client_order_id = o.client_order_id "
                "WHERE o.origin = 'submitted' AND o.order_class = 'bracket' LIMIT 1"),
                timeout=90, what="the entry's first journaled fill")[0]
        finally:
            first.kill()  # SIGKILL: no shutdown, nothing flushed
        cid = entry["client_order_id"]

        # While it is down: the market rallies through the take-profit; the broker fills it
        # and cancels the stop leg.
        sim_control(sim.url, "shock", {"symbols": entry["symbol"], "pct": 25})
        sim_control(sim.url, "clock", {"advance_minutes": 5})
        broker = _broker_orders(sim.url)
        legs = {o["client_order_id"]: o for o in broker[cid]["legs"]}
        assert sorted(o["status"] for o in legs.values()) == ["canceled", "filled"], legs
        journaled_legs = {r["client_order_id"]: r["status"] for r in _rows(
            paths.state_db, "SELECT * FROM orders WHERE parent_client_order_id = ?", (cid,))}
        assert all(status not in ("canceled", "filled") for status in journaled_legs.values())

        before = len(first.events())
        second = ExternalDaemon(sim.url, args, paths, env=HOLDING_ENV)
        try:
            reconciled = second.wait_for("reconciliation", timeout=60, after=before)
            second.wait_for("cycle_complete", timeout=60, after=before)
            assert second.stop() == 0
            restart = second.events()[before:]
        finally:
            second.kill()
        # the broker as the restarted daemon left it (it may have traded after the restart)
        final = _broker_orders(sim.url)
        names = [e["event"] for e in restart]
        assert names.index("reconciliation") < names.index("cycle_complete"), "reconciled before trading"

    # The start-up reconciliation itself set the legs' real states ...
    changed = {c["client_order_id"]: c["to"] for c in reconciled.get("status_changes") or []}
    adopted = {c["client_order_id"]: c["status"] for c in reconciled.get("legs_adopted") or []}
    for leg_cid, leg in legs.items():
        assert changed.get(leg_cid, adopted.get(leg_cid)) == leg["status"], (leg_cid, changed, adopted)
    # ... and the journal now agrees with the broker on every order and leg that existed when
    # the daemon died (those the broker did not change again after the restart), filled
    # quantities included.
    checked = set()
    for row in _rows(paths.state_db, "SELECT * FROM orders"):
        cid_ = row["client_order_id"]
        order = final.get(cid_)
        if cid_ not in broker or order is None or \
                (order["status"], order["filled_qty"]) != (broker[cid_]["status"], broker[cid_]["filled_qty"]):
            continue
        assert row["status"] == order["status"], (cid_, row["status"], order["status"])
        assert Decimal(row["filled_qty"] or 0) == Decimal(order["filled_qty"]), cid_
        assert _filled_in_journal(paths.state_db, cid_) == Decimal(order["filled_qty"]), cid_
        checked.add(cid_)
    assert {cid, *legs} <= checked
    assert not named(restart, "position_still_unprotected")
