"""Journal: schema and migrations, durability under kill -9, fills, reconciliation."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from journal.journal import (
    LATEST_VERSION,
    MIGRATIONS,
    Journal,
    JournalError,
    SchemaTooNew,
    migrate,
)
from broker.models import Activity, Position
from tests.conftest import ROOT

D = Decimal
T0 = datetime(2025, 3, 3, 15, 0, tzinfo=timezone.utc)


@pytest.fixture()
def journal(tmp_path: Path) -> Any:
    j = Journal(tmp_path / "state.db")
    yield j
    j.close()


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def broker_order(cid: str, oid: str, *, symbol: str = "AAPL", side: str = "buy", qty: str = "10",
                 status: str = "new", filled_qty: str = "0", avg: str | None = None,
                 type_: str = "market", legs: list[dict[str, Any]] | None = None,
                 order_class: str = "simple") -> dict[str, Any]:
    return {
        "id": oid, "client_order_id": cid, "status": status, "symbol": symbol, "side": side,
        "type": type_, "time_in_force": "gtc", "created_at": T0.isoformat(), "qty": qty,
        "filled_qty": filled_qty, "filled_avg_price": avg, "order_class": order_class,
        "stop_price": "90" if type_ == "stop" else None,
        "limit_price": "120" if type_ == "limit" else None, "legs": legs,
    }


def fill_activity(eid: str, oid: str, qty: str, price: str, cum: str, *, side: str = "buy",
                  symbol: str = "AAPL", minutes: float = 1) -> Activity:
    return Activity.model_validate({
        "id": eid, "activity_type": "FILL", "transaction_time": at(minutes).isoformat(),
        "type": "fill", "price": price, "qty": qty, "side": side, "symbol": symbol,
        "leaves_qty": "0", "order_id": oid, "cum_qty": cum, "order_status": "filled",
    })


def position(symbol: str, qty: str, price: str = "100") -> Position:
    return Position.model_validate({"symbol": symbol, "qty": qty, "avg_entry_price": price})


def submit(j: Journal, cid: str, *, symbol: str = "AAPL", qty: str = "10", minutes: float = 0,
           intent: str | None = None) -> None:
    j.record_order_submission(cid, intent, symbol, "buy", D(qty), "market", "bracket",
                              {"symbol": symbol, "qty": qty}, at(minutes))


# -- schema and migrations ---------------------------------------------------------------


def test_a_new_journal_is_wal_fully_synchronous_with_the_latest_schema(journal: Journal) -> None:
    assert journal.journal_mode() == "wal"
    assert journal.schema_version == LATEST_VERSION == len(MIGRATIONS)
    conn = sqlite3.connect(journal.path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert {"intents", "orders", "order_status_history", "fills", "trades", "day_trades",
            "equity_snapshots", "alerts", "state", "events", "schema_version"} <= tables
    assert journal._store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert journal._store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_opening_a_v1_database_upgrades_it_without_losing_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, MIGRATIONS[:1]) == 1
    stamp = T0.isoformat(timespec="microseconds")
    conn.execute("INSERT INTO intents VALUES ('i1', 'AAPL', 'buy', 'breakout', '0.8', '{}', ?)", (stamp,))
    conn.execute(
        "INSERT INTO orders (client_order_id, broker_order_id, intent_id, symbol, side, qty, order_type, "
        "order_class, status, filled_qty, filled_avg_price, origin, payload, submitted_at, updated_at) "
        "VALUES ('i1-0', 'b1', 'i1', 'AAPL', 'buy', '10', 'market', 'bracket', 'filled', '10', '100.5', "
        "'submitted', '{}', ?, ?)", (stamp, stamp))
    conn.execute("INSERT INTO fills VALUES ('e1', 'i1-0', 'b1', 'AAPL', 'buy', '10', '100.5', ?)", (stamp,))
    conn.execute("INSERT INTO state VALUES ('safety', '{\"latched\": true}')")
    conn.close()

    with Journal(path) as j:
        assert j.schema_version == LATEST_VERSION
        assert j.order_by_client_id("i1-0")["filled_avg_price"] == D("100.5")
        (old_fill,) = j.fills_for("i1-0")
        assert old_fill["qty"] == old_fill["applied_qty"] == D(10)
        assert j.get_state("safety") == {"latched": True}
        assert j.implied_positions() == {"AAPL": D(10)}
        assert j.strategy_for_order("b1") == "breakout"
        # the new columns work on the upgraded file
        assert j.record_cumulative_fill("i1-0", "b1", "AAPL", "buy", D(10), D("100.5"), at(1)) is None
        assert j.record_trade("AAPL", "breakout", T0, at(5), D(10), D("100.5"), D(101), D(5), "take_profit",
                              trade_id="t1")
        assert not j.record_trade("AAPL", "breakout", T0, at(5), D(10), D("100.5"), D(101), D(5),
                                  "take_profit", trade_id="t1")
    versions = [r[0] for r in sqlite3.connect(path).execute("SELECT version FROM schema_version")]
    assert versions == list(range(1, LATEST_VERSION + 1))


def test_a_database_from_a_newer_daemon_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    Journal(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO schema_version VALUES (?, 'from the future')", (LATEST_VERSION + 1,))
    conn.close()
    with pytest.raises(SchemaTooNew, match=f"schema version {LATEST_VERSION + 1}, newer than"):
        Journal(path)


def test_a_file_that_is_not_sqlite_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalError, match="not a usable journal"):
        Journal(path)


# -- durability ---------------------------------------------------------------------------


def test_everything_written_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    script = textwrap.dedent(f"""
        import sys, time
        from datetime import datetime, timezone
        from decimal import Decimal
        sys.path.insert(0, {str(ROOT)!r})
        from journal.journal import Journal
        j = Journal({str(path)!r})
        t = datetime(2025, 3, 3, 15, tzinfo=timezone.utc)
        for i in range(40):
            j.record_order_submission(f"c{{i}}", None, "AAPL", "buy", Decimal(1), "market", "simple", {{}}, t)
            j.update_order(f"c{{i}}", status="new", broker_order_id=f"b{{i}}", at=t)
            j.record_fill(f"e{{i}}", f"c{{i}}", f"b{{i}}", "AAPL", "buy", Decimal(1), Decimal("100.01"), t)
        j.set_state("safety", {{"latched": True, "reason": "breaker"}})
        print("written", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        while (line := proc.stdout.readline()) and line.strip() != "written":
            lines.append(line)  # the journal's own log lines
        assert line.strip() == "written", lines
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    wal = path.with_name(path.name + "-wal")
    assert wal.exists() and wal.stat().st_size > 0  # the data was still in the WAL, not checkpointed
    with Journal(path) as j:
        assert len(j.orders()) == 40
        assert all(o["status"] == "new" for o in j.orders())
        assert len(j.fills()) == 40
        assert j.implied_positions() == {"AAPL": D(40)}
        assert j.get_state("safety") == {"latched": True, "reason": "breaker"}


# -- orders, fills, values ------------------------------------------------------------------


def test_order_lifecycle_keeps_a_status_history_and_never_reopens_a_terminal_order(journal: Journal) -> None:
    journal.record_intent("i1", "AAPL", "buy", "breakout", 0.81, {"reasoning": "volume"}, T0)
    submit(journal, "i1-0", intent="i1")
    submit(journal, "i1-0", intent="i1", minutes=3)  # a restart journals the same id again: one order
    assert len(journal.orders()) == 1
    assert journal.order_by_client_id("i1-0")["submitted_at"] == T0
    journal.update_order("i1-0", status="accepted", broker_order_id="b1", at=at(0.1))
    journal.update_order("i1-0", status="accepted", broker_order_id="b1", at=at(0.2))  # no change
    journal.update_order("i1-0", status="partially_filled", filled_qty=D(4), filled_avg_price=D("100.1"), at=at(1))
    journal.update_order("i1-0", status="filled", filled_qty=D(10), filled_avg_price=D("100.2"), at=at(2))
    journal.update_order("i1-0", status="in_flight", at=at(3))  # late and stale: ignored
    order = journal.order_by_client_id("i1-0")
    assert order["status"] == "filled" and order["broker_order_id"] == "b1"
    assert order["filled_qty"] == D(10)
    assert [h["status"] for h in journal.order_history("i1-0")] == [
        "submitted", "accepted", "partially_filled", "filled"]
    assert journal.open_submissions() == []
    assert journal.strategy_for_order("b1") == "breakout"
    assert journal.intent("i1")["confidence"] == D("0.81")
    with pytest.raises(JournalError, match="unknown client_order_id 'nope'"):
        journal.update_order("nope", status="new", at=T0)


def test_fills_are_deduplicated_by_execution_id(journal: Journal) -> None:
    submit(journal, "c1")
    journal.update_order("c1", status="new", broker_order_id="b1", at=T0)
    assert journal.record_fill("e1", None, "b1", "AAPL", "buy", D(4), D("100.5"), at(1))
    assert not journal.record_fill("e1", None, "b1", "AAPL", "buy", D(4), D("100.5"), at(1))
    assert journal.record_fill("e2", "c1", "b1", "AAPL", "buy", D(6), D("100.7"), at(2))
    fills = journal.fills_for("c1")  # the broker id resolved the client id of the first fill
    assert [f["execution_id"] for f in fills] == ["e1", "e2"]
    assert journal.implied_positions() == {"AAPL": D(10)}


def test_cumulative_filled_qty_becomes_deltas_priced_to_the_broker_vwap(journal: Journal) -> None:
    submit(journal, "c1")
    journal.update_order("c1", status="partially_filled", broker_order_id="b1", at=T0)
    first = journal.record_cumulative_fill("c1", "b1", "AAPL", "buy", D(3), D(100), at(1))
    assert first is not None and (first.qty, first.price) == (D(3), D(100))
    assert journal.record_cumulative_fill("c1", "b1", "AAPL", "buy", D(3), D(100), at(2)) is None
    second = journal.record_cumulative_fill("c1", "b1", "AAPL", "buy", D(10), D("101.4"), at(3))
    assert second is not None
    assert (second.qty, second.price) == (D(7), D(102))  # (1014 - 300) / 7
    # The real executions arrive later: remembered, not counted twice.
    assert not journal.record_fill("x2", None, "b1", "AAPL", "buy", D(7), D(102), at(3), cum_qty=D(10))
    assert not journal.record_fill("x1", None, "b1", "AAPL", "buy", D(3), D(100), at(1), cum_qty=D(3))
    assert journal.implied_positions() == {"AAPL": D(10)}
    assert {f["execution_id"] for f in journal.fills_for("c1")} == {"cum:b1:3", "cum:b1:10", "x1", "x2"}

    # Real fills first, cumulative afterwards: only the rest is added.
    submit(journal, "c2", symbol="MSFT")
    journal.update_order("c2", status="partially_filled", broker_order_id="b2", at=T0)
    assert journal.record_fill("y1", None, "b2", "MSFT", "buy", D(4), D(50), at(1), cum_qty=D(4))
    rest = journal.record_cumulative_fill("c2", "b2", "MSFT", "buy", D(10), D("51.2"), at(2))
    assert rest is not None and (rest.qty, rest.price) == (D(6), D(52))  # (512 - 200) / 6
    # A fill reported without its cumulative quantity still counts once against the total.
    submit(journal, "c3", symbol="NVDA")
    journal.update_order("c3", status="partially_filled", broker_order_id="b3", at=T0)
    assert journal.record_fill("z1", None, "b3", "NVDA", "buy", D(2), D(10), at(1))
    assert journal.record_cumulative_fill("c3", "b3", "NVDA", "buy", D(2), D(10), at(2)) is None
    assert journal.implied_positions() == {"AAPL": D(10), "MSFT": D(10), "NVDA": D(2)}


def test_decimal_precision_and_utc_times_are_preserved(journal: Journal) -> None:
    tiny = D("0.000000001234567890123456789")
    big = D("123456789012.987654321")
    journal.record_equity(datetime(2025, 3, 3, 10, 0, tzinfo=timezone(timedelta(hours=-5))), big, tiny, D("0.10"))
    ((moment, equity),) = journal.equity_curve()
    assert equity == big and str(equity) == "123456789012.987654321"
    assert moment == T0 and moment.utcoffset() == timedelta(0)
    submit(journal, "c1", qty="0.000001")
    assert journal.order_by_client_id("c1")["qty"] == D("0.000001")
    journal.record_trade("AAPL", None, T0, at(1), D("1.5"), D("100.123456"), D("101.654321"),
                         D("2.2967985"), "stop_loss")
    (trade,) = journal.trades()
    assert trade["pnl"] == D("2.2967985") and isinstance(trade["pnl"], Decimal)


def test_naive_datetimes_and_bad_values_are_refused(journal: Journal) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        journal.record_equity(datetime(2025, 3, 3, 15), D(1), D(1), D(0))
    with pytest.raises(ValueError, match="must be 'buy' or 'sell'"):
        journal.record_fill("e", None, "b", "AAPL", "long", D(1), D(1), T0)
    with pytest.raises(ValueError, match="fill qty must be positive"):
        journal.record_fill("e", None, "b", "AAPL", "buy", D(0), D(1), T0)
    with pytest.raises(ValueError, match="state 'x' cannot be stored as JSON"):
        journal.set_state("x", {"value": object()})


def test_state_events_day_trades_and_the_status_summary(journal: Journal) -> None:
    journal.set_state("safety", {"state": "halted", "latched": True, "baseline": D("100000.50")})
    assert journal.get_state("safety") == {"state": "halted", "latched": True, "baseline": "100000.50"}
    journal.set_state("safety", {"state": "active", "latched": False})
    assert journal.get_state("safety") == {"state": "active", "latched": False}
    assert journal.get_state("missing") is None

    journal.log_event("rearmed", {"reason": "checked"}, T0)
    assert journal.events("rearmed") == [{"kind": "rearmed", "payload": {"reason": "checked"}, "at": T0}]
    assert journal.record_day_trade("AAPL", date(2025, 3, 3), ref="t1")
    assert not journal.record_day_trade("AAPL", date(2025, 3, 3), ref="t1")
    journal.record_day_trade("MSFT", date(2025, 2, 1))
    assert journal.day_trades(since=date(2025, 2, 27)) == [("AAPL", date(2025, 3, 3))]
    journal.record_alert("critical", "Broker unreachable", "no answer", T0)
    assert journal.alerts()[0]["title"] == "Broker unreachable"

    submit(journal, "c1")
    journal.last_cycle(at(1), {"phase": "regular", "equity": "100000"})
    assert journal.get_last_cycle() == {"at": at(1), "data": {"phase": "regular", "equity": "100000"}}
    summary = journal.status_summary()
    json.dumps(summary)
    assert summary["last_cycle"]["data"]["phase"] == "regular"
    assert summary["state"]["safety"] == {"state": "active", "latched": False}
    assert [o["client_order_id"] for o in summary["open_submissions"]] == ["c1"]
    assert summary["day_trades"] == [{"symbol": "AAPL", "session_date": "2025-03-03"}]


def test_a_closed_journal_says_so(tmp_path: Path) -> None:
    j = Journal(tmp_path / "s.db")
    j.close()
    j.close()  # twice is fine
    with pytest.raises(JournalError, match="closed"):
        j.get_state("x")


# -- reconciliation -------------------------------------------------------------------------


def test_orders_sent_but_not_journaled_and_hand_orders_are_adopted_and_flagged(journal: Journal) -> None:
    journal.record_intent("momentum-AAPL-20250303-1", "AAPL", "buy", "momentum", 0.7, {}, T0)
    known_leg = broker_order("leg-stop-1", "b1-stop", side="sell", type_="stop", status="held")
    orders = [
        broker_order("momentum-AAPL-20250303-1-0", "b1", status="new", order_class="bracket",
                     legs=[known_leg]),
        broker_order("web-manual-7", "b2", symbol="MSFT", side="sell", qty="3", type_="limit"),
    ]
    report = journal.reconcile(orders, [], [], at=at(1))
    reasons = {o["client_order_id"]: o["reason"] for o in report.adopted_orders}
    assert reasons == {"momentum-AAPL-20250303-1-0": "sent_not_journaled", "web-manual-7": "not_journaled"}
    assert [leg["client_order_id"] for leg in report.legs_adopted] == ["leg-stop-1"]
    assert report.has_discrepancies and len(report.discrepancies) == 2
    assert journal.order_by_client_id("web-manual-7")["origin"] == "adopted"
    assert journal.order_by_client_id("leg-stop-1")["parent_client_order_id"] == "momentum-AAPL-20250303-1-0"
    assert journal.strategy_for_order("b1-stop") == "momentum"
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data and "event" not in data
    assert journal.events("reconciliation")[0]["payload"]["discrepancy_count"] == 2

    again = journal.reconcile(orders, [], [], at=at(2))
    assert again.adopted_orders == [] and not again.has_discrepancies


def test_fills_missed_while_down_are_recorded_once_and_feed_the_ledger(journal: Journal) -> None:
    journal.record_intent("i1", "AAPL", "buy", "breakout", 0.7, {}, T0)
    submit(journal, "i1-0", intent="i1")
    journal.update_order("i1-0", status="accepted", broker_order_id="b1", at=T0)
    filled = broker_order("i1-0", "b1", status="filled", filled_qty="10", avg="100.6")
    fills = [fill_activity("f1", "b1", "4", "100", "4"), fill_activity("f2", "b1", "6", "101", "10", minutes=2)]
    report = journal.reconcile([filled], [position("AAPL", "10")], fills, at=at(5))
    assert [f["execution_id"] for f in report.fills_recorded] == ["f1", "f2"]
    assert [(f.qty, f.price, f.strategy) for f in report.new_fills] == [
        (D(4), D(100), "breakout"), (D(6), D(101), "breakout")]
    assert report.status_changes[0]["to"] == "filled"
    assert not report.has_discrepancies  # fills explain the position

    again = journal.reconcile([filled], [position("AAPL", "10")], fills, at=at(6))
    assert again.fills_recorded == [] and again.duplicate_fills == 2
    assert len(journal.fills()) == 2 and not again.has_discrepancies


def test_a_fill_seen_only_as_cumulative_filled_qty_is_recorded_as_a_delta(journal: Journal) -> None:
    submit(journal, "c1")
    journal.update_order("c1", status="new", broker_order_id="b1", at=T0)
    partial = broker_order("c1", "b1", status="partially_filled", filled_qty="4", avg="100")
    report = journal.reconcile([partial], [position("AAPL", "4")], [], at=at(1))
    assert [(f["applied_qty"], f["source"]) for f in report.fills_recorded] == [(D(4), "cumulative")]
    done = broker_order("c1", "b1", status="filled", filled_qty="10", avg="100.6")
    late = [fill_activity("f1", "b1", "4", "100", "4"), fill_activity("f2", "b1", "6", "101", "10")]
    report = journal.reconcile([done], [position("AAPL", "10")], late, at=at(2))
    assert [(f["applied_qty"], f["price"]) for f in report.fills_recorded] == [(D(6), D(101))]
    assert not report.has_discrepancies
    assert journal.implied_positions() == {"AAPL": D(10)}


def test_a_position_changed_by_hand_is_flagged_once_and_adopted(journal: Journal) -> None:
    submit(journal, "c1")
    journal.update_order("c1", status="filled", broker_order_id="b1", at=T0)
    journal.record_fill("f1", "c1", "b1", "AAPL", "buy", D(10), D(100), at(1))
    report = journal.reconcile([], [position("AAPL", "15"), position("TSLA", "-2")], [], at=at(2))
    assert sorted((m["symbol"], m["journal_qty"], m["broker_qty"], m["difference"])
                  for m in report.position_mismatches) == [
        ("AAPL", D(10), D(15), D(5)), ("TSLA", D(0), D(-2), D(-2))]
    assert report.has_discrepancies
    assert journal.implied_positions() == {"AAPL": D(15), "TSLA": D(-2)}
    assert journal.reconcile([], [position("AAPL", "15"), position("TSLA", "-2")], [], at=at(3)).position_mismatches == []
    # sold by hand to flat: flagged again, then adopted
    flat = journal.reconcile([], [position("TSLA", "-2")], [], at=at(4))
    assert [(m["symbol"], m["broker_qty"]) for m in flat.position_mismatches] == [("AAPL", D(0))]


def test_a_submission_the_broker_never_saw_becomes_never_landed_after_the_grace_period(journal: Journal) -> None:
    submit(journal, "lost-0", minutes=0)
    early = journal.reconcile([], [], [], at=at(5), grace_seconds=600)
    assert early.never_landed == [] and journal.order_by_client_id("lost-0")["status"] == "submitted"
    late = journal.reconcile([], [], [], at=at(11), grace_seconds=600)
    assert [o["client_order_id"] for o in late.never_landed] == ["lost-0"]
    assert journal.order_by_client_id("lost-0")["status"] == "never_landed"
    assert journal.open_submissions() == []
    assert late.has_discrepancies
    # it turns up after all: the broker wins
    found = journal.reconcile([broker_order("lost-0", "b9", status="new")], [], [], at=at(12))
    assert found.status_changes[0]["from"] == "never_landed"
    assert journal.order_by_client_id("lost-0")["broker_order_id"] == "b9"


def test_an_acknowledged_order_missing_from_the_list_is_resolved_by_its_fills(journal: Journal) -> None:
    submit(journal, "c1")
    journal.update_order("c1", status="accepted", broker_order_id="b1", at=T0)
    submit(journal, "c2", symbol="MSFT")
    journal.update_order("c2", status="accepted", broker_order_id="b2", at=T0)
    fills = [fill_activity("f1", "b1", "10", "100", "10")]
    report = journal.reconcile([], [position("AAPL", "10")], fills, at=at(30))
    assert [c["client_order_id"] for c in report.status_changes if c.get("inferred_from_fills")] == ["c1"]
    assert [o["client_order_id"] for o in report.unresolved] == ["c2"]
    assert report.never_landed == []  # acknowledged by the broker: it landed
    assert [o["client_order_id"] for o in journal.open_submissions()] == ["c2"]


# -- operator commands (issue 13, item 2) -------------------------------------------------------


def test_operator_commands_are_ordered_by_the_journal_sequence_not_by_clocks(journal: Journal) -> None:
    rearm = journal.queue_operator_command("rearm", "stale re-arm", at(10))
    # queued later by a process whose clock says earlier (NTP step, another host)
    halt = journal.queue_operator_command("halt", "stop now", at(-60))
    assert halt["seq"] > rearm["seq"]
    assert [c["kind"] for c in journal.operator_commands()] == ["rearm", "halt"]
    assert journal.last_operator_seq() == halt["seq"]
    journal.mark_operator_command_applied(rearm["id"])
    assert [c["id"] for c in journal.operator_commands(pending=True)] == [halt["id"]]
    journal.mark_operator_command_applied(halt["id"])
    assert journal.operator_commands(pending=True) == []
    with pytest.raises(ValueError, match="halt"):
        journal.queue_operator_command("liquidate", "x", at(0))


def test_commands_queued_by_an_older_cli_are_still_read(journal: Journal) -> None:
    # before issue 13 the CLI logged the payload itself: same event kind and fields
    journal.log_event("operator_command", {"id": "old-1", "kind": "halt", "reason": "r", "at": T0.isoformat()}, T0)
    assert [(c["id"], c["kind"]) for c in journal.operator_commands(pending=True)] == [("old-1", "halt")]


# -- what start-up reconciliation looks up (issue 13, item 6) -----------------------------------


def test_orders_to_reconcile_are_working_orders_of_any_origin_and_short_filled_ones(journal: Journal) -> None:
    stop_leg = broker_order("leg-stop", "b1-stop", side="sell", type_="stop", status="new")
    entry = broker_order("e1", "b1", status="filled", filled_qty="10", avg="100", order_class="bracket",
                         legs=[stop_leg])
    submit(journal, "e1")
    journal.update_order("e1", status="filled", broker_order_id="b1", filled_qty=D(10), filled_avg_price=D(100),
                         at=at(1))
    journal.record_fill("f1", "e1", "b1", "AAPL", "buy", D(9), D(100), at(1), cum_qty=D(9))
    journal.record_legs(entry, at=at(1))
    journal.record_order_submission("done", None, "MSFT", "buy", D(10), "market", "simple", {}, at(0))
    journal.update_order("done", status="filled", broker_order_id="b2", filled_qty=D(10), filled_avg_price=D(1),
                         at=at(1))
    journal.record_fill("f2", "done", "b2", "MSFT", "buy", D(10), D(1), at(1), cum_qty=D(10))

    behind = {o["client_order_id"] for o in journal.orders_to_reconcile()}
    # the leg (origin 'leg', still 'new') and the entry whose fills say 9 of 10; not 'done'
    assert behind == {"leg-stop", "e1"}
    assert {o["client_order_id"] for o in journal.orders_to_reconcile(short_fills=False)} == {"leg-stop"}

    # the broker's word fixes both: the leg was canceled, the 10th share filled
    canceled = broker_order("leg-stop", "b1-stop", side="sell", type_="stop", status="canceled")
    entry = broker_order("e1", "b1", status="filled", filled_qty="10", avg="100", order_class="bracket",
                         legs=[canceled])
    report = journal.reconcile([entry], [position("AAPL", "10"), position("MSFT", "10")], [], at=at(5))
    assert journal.order_by_client_id("leg-stop")["status"] == "canceled"
    assert sum(f["applied_qty"] for f in journal.fills_for("e1")) == D(10)
    assert [f["applied_qty"] for f in report.fills_recorded] == [D(1)]
    assert not report.position_mismatches
    assert journal.orders_to_reconcile() == []

    # a bracket whose legs were never journaled (killed before they were first listed)
    submit(journal, "e2")
    journal.update_order("e2", status="filled", broker_order_id="b3", filled_qty=D(1), filled_avg_price=D(100),
                         at=at(6))
    journal.record_fill("f3", "e2", "b3", "AAPL", "buy", D(1), D(100), at(6), cum_qty=D(1))
    assert [o["client_order_id"] for o in journal.orders_to_reconcile()] == ["e2"]
    assert journal.orders_to_reconcile(short_fills=False) == []
