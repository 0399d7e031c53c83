"""``python main.py report`` never crashes on what the journal holds (issue 13, item 3).

A journal is crafted the way weeks of a daemon against a misbehaving broker (and a person
with ``sqlite3``) could leave it: equity rows of 0, -50000, NaN, Infinity, 1e308, garbage,
empty text, times without a zone or not times at all; trades with a zero quantity, a missing
or NaN price, an exit before the entry, no symbol, an absurd price. The real CLI runs on it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from journal.journal import Journal
from analytics.performance import usable_curve, usable_trades
from tests.e2e_helpers import MAIN, PYTHON, daemon_env

T0 = datetime(2025, 3, 3, 21, 0, tzinfo=timezone.utc)
BAD_EQUITY = [
    ("2025-03-05T21:30:00+00:00", "0"), ("2025-03-05T21:40:00+00:00", "-50000"),
    ("2025-03-06T21:10:00+00:00", "NaN"), ("2025-03-06T21:20:00+00:00", "Infinity"),
    ("2025-03-06T21:30:00+00:00", "1e308"), ("2025-03-06T21:40:00+00:00", "garbage"),
    ("2025-03-06T21:50:00+00:00", ""), ("not-a-time", "100000"), ("2025-03-07T21:00:00", "100000"),
]
TRADE_COLUMNS = "symbol, strategy, side, qty, entry_at, exit_at, entry_price, exit_price, pnl, return_pct, exit_reason"
ENTRY, EXIT = "2025-03-04T15:00:00+00:00", "2025-03-04T16:00:00+00:00"
BAD_TRADES = [
    ("MSFT", "x", "long", "0", ENTRY, EXIT, "100", "101", "0", "0.01", "exit"),       # zero quantity
    ("MSFT", "x", "long", "5", ENTRY, EXIT, "", "101", "5", None, "exit"),            # missing price
    ("MSFT", "x", "long", "5", ENTRY, EXIT, "NaN", "101", "5", None, "exit"),         # NaN price
    ("MSFT", "x", "long", "5", "garbage", EXIT, "100", "101", "5", None, "exit"),     # not a time
    ("MSFT", "x", "long", "5", "2025-03-04T17:00:00+00:00", EXIT, "100", "101", "5", None, "exit"),
    ("MSFT", "x", "long", "5", ENTRY, EXIT, "100", "1e308", "1e308", None, "exit"),  # absurd price
    ("", "x", "long", "5", ENTRY, EXIT, "100", "101", "5", None, "exit"),             # no symbol
    ("MSFT", None, "long", "-5", ENTRY, EXIT, "0", "0", "0", None, None),             # zero prices
]


def _crafted_journal(path: Path, *, good: bool = True) -> None:
    journal = Journal(path)
    if good:
        for day in range(6):
            journal.record_equity(T0 + timedelta(days=day), Decimal(100000 + 150 * day), Decimal(50000),
                                  Decimal(50000 + 150 * day))
        journal.record_trade("AAPL", "enhanced_momentum", T0, T0 + timedelta(hours=20), Decimal(10),
                             Decimal(200), Decimal(210), Decimal(100), "target")
    journal.close()
    with sqlite3.connect(path) as db:
        for at, equity in BAD_EQUITY:
            db.execute("INSERT INTO equity_snapshots (at, equity, cash, positions_value) VALUES (?, ?, '0', '0')",
                       (at, equity))
        for row in BAD_TRADES:
            db.execute(f"INSERT INTO trades ({TRADE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)


def _report(tmp_path: Path, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, str(MAIN), "report", "--state-db", str(db), "--out", str(tmp_path / "out"),
         "--log-file", str(tmp_path / "report.jsonl")],
        cwd=tmp_path, env=daemon_env(), capture_output=True, text=True, timeout=120)


def test_report_on_a_journal_full_of_nonsense_skips_and_lists_the_bad_rows(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    _crafted_journal(db)
    result = _report(tmp_path, db)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    skipped = len(BAD_EQUITY) + len(BAD_TRADES)
    assert f"skipped {skipped} journal row(s)" in result.stdout
    # the terminal shows the summary alone: the log lines (a warning included) are in the file
    assert '"event"' not in result.stdout + result.stderr and "report_rows_skipped" not in result.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    meta = summary["meta"]
    assert meta["journal_rows_skipped"] == skipped
    reasons = " | ".join(meta["skipped_rows"])
    for fragment in ("must be positive, got 0", "got -50000", "'NaN'", "1E+308", "'garbage'", "naive",
                     "zero", "symbol is missing", "before entry_at"):
        assert fragment in reasons, fragment
    performance = summary["performance"]
    assert performance["trades"]["total"] == 1, "only the one sound trade is counted"
    assert Decimal(performance["start_equity"]) == 100000 and Decimal(performance["end_equity"]) == 100750
    assert (tmp_path / "out" / "report.html").stat().st_size > 0
    logged = [json.loads(line) for line in (tmp_path / "report.jsonl").read_text().splitlines()]
    assert any(e["event"] == "report_rows_skipped" and e["count"] == skipped for e in logged)


def test_report_with_no_usable_equity_row_says_so_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    _crafted_journal(db, good=False)
    result = _report(tmp_path, db)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "none of the" in lines[0] and "is usable" in lines[0]


@pytest.mark.parametrize("equity", ["0", "-50000", "NaN", "1e308", "abc", None])
def test_usable_curve_never_raises(equity: object) -> None:
    rows = [{"id": 1, "at": T0.isoformat(), "equity": "100000"},
            {"id": 2, "at": (T0 + timedelta(days=1)).isoformat(), "equity": equity}]
    points, skipped = usable_curve(rows)
    assert [p[1] for p in points] == [Decimal(100000)]
    assert [s.row for s in skipped] == ["2"]


def test_usable_trades_keeps_sound_rows_in_exit_order() -> None:
    rows = [dict(zip(TRADE_COLUMNS.split(", "), row)) for row in BAD_TRADES]
    rows.append({"symbol": "AAPL", "side": "long", "qty": "3", "entry_at": ENTRY, "exit_at": EXIT,
                 "entry_price": "100", "exit_price": "90", "pnl": "-30"})
    records, skipped = usable_trades(rows)
    assert [r.symbol for r in records] == ["AAPL"] and records[0].return_pct == Decimal("-0.1")
    assert len(skipped) == len(BAD_TRADES)
