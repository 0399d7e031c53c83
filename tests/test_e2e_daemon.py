"""The daemon as a user runs it: ``python main.py`` in a subprocess, trading the embedded
simulator over real HTTP on 127.0.0.1, stopped by ``--sim-days``, SIGTERM or SIGINT."""

from __future__ import annotations

import json
import signal
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e_helpers import (
    TRADING_SEED,
    TRADING_START,
    TRADING_SYMBOLS,
    Daemon,
    MainRun,
    journal_rows,
    journal_state,
    make_run_paths,
    run_dir,  # noqa: F401  (fixture)
    run_main,
    scratch_dir,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def one_day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MainRun]:
    """One simulated session at ``--speed max`` on a day the default strategies trade
    (see ``TRADING_START`` in e2e_helpers for why this day)."""
    with scratch_dir(tmp_path_factory.mktemp("one-day")) as base:
        yield run_main(["--sim-days", "1", "--speed", "max", "--seed", str(TRADING_SEED),
                        "--start", TRADING_START, "--symbols", TRADING_SYMBOLS],
                       make_run_paths(base), timeout=120)


def test_one_simulated_day_trades_and_exits_cleanly(one_day: MainRun) -> None:
    run = one_day
    assert run.returncode == 0, run.describe()
    assert "SIM MODE" in run.stdout and "no Alpaca API keys are configured" in run.stdout
    summary = run.stdout[run.stdout.index("Run summary"):]
    for label in ("closed trades", "win rate", "realized P&L", "max drawdown"):
        assert label in summary, f"summary lacks {label!r}:\n{summary}"
    assert "sessions traded   1" in summary
    names = run.event_names()
    for event in ("system_start", "market_status", "cycle_complete", "signal", "trade_intent",
                  "order_submitted", "order_filled", "system_shutdown"):
        assert event in names, f"{event} never logged"
    assert names & {"position_closed", "open_position"}
    # the summary line agrees with the journal's closed trades
    shutdown = run.named("system_shutdown")[-1]
    trades = journal_rows(run.paths.state_db, "SELECT * FROM trades")
    assert shutdown["trades"] == len(trades) >= 1
    assert f"closed trades     {len(trades)}" in summary


def test_cycle_complete_reports_duration_symbols_and_requests(one_day: MainRun) -> None:
    cycles = one_day.named("cycle_complete")
    assert cycles, one_day.describe()
    for cycle in cycles:
        assert cycle["duration_ms"] >= 0
        assert isinstance(cycle["requests"], int) and cycle["requests"] > 0
        assert cycle["phase"] in ("pre", "regular", "post")
    regular = [c for c in cycles if c["phase"] == "regular"]
    assert regular and all(c["symbols"] == 2 for c in regular)


def test_every_position_carried_protection_for_its_full_quantity(one_day: MainRun) -> None:
    """Each cycle that saw a position saw a working stop for all of it, every entry was a
    bracket with a stop leg for the ordered quantity, and nothing was left unprotected."""
    run = one_day
    held = [c for c in run.named("cycle_complete") if c["positions"] > 0]
    assert held, "no cycle ever held a position: the chosen day no longer trades"
    for cycle in held:
        assert cycle["unprotected"] == [], f"unprotected at {cycle.get('market_time')}: {cycle}"
    entries = journal_rows(run.paths.state_db,
                           "SELECT * FROM orders WHERE side = 'buy' AND origin = 'submitted'")
    assert entries
    for order in entries:
        payload = json.loads(order["payload"])
        assert order["order_class"] == "bracket", dict(order)
        assert Decimal(payload["stop_loss"]["stop_price"]) > 0
        assert Decimal(payload["take_profit"]["limit_price"]) > Decimal(payload["stop_loss"]["stop_price"])
        if order["filled_qty"]:
            assert Decimal(order["filled_qty"]) <= Decimal(order["qty"])
    assert "position_unprotected" not in run.event_names()
    for position in run.named("open_position"):
        assert Decimal(position["protected_qty"]) >= abs(Decimal(position["qty"])), position


def test_requests_per_cycle_do_not_grow_with_symbols(one_day: MainRun, run_dir: Path) -> None:
    """Six symbols cost the same HTTP requests per regular-session cycle as two."""

    def steady(events: list[dict]) -> set[int]:
        # requests of regular-session cycles in which the loop only watched: no order sent,
        # no daily history loaded (once per session), nothing held
        out: set[int] = set()
        busy = False
        for event in events:
            if event["event"] in ("order_submitted", "history_loaded", "strategy_exit"):
                busy = True
            elif event["event"] == "cycle_complete":
                if event["phase"] == "regular" and not busy and event["positions"] == 0:
                    out.add(event["requests"])
                busy = False
        return out

    two = steady(one_day.events)
    assert len(two) >= 1
    paths = make_run_paths(run_dir, "six")
    # cycles every 10 simulated minutes: the pre-market passes quickly; stop after a few
    # regular-session cycles with SIGTERM
    with Daemon(["--speed", "max", "--seed", str(TRADING_SEED), "--start", "2025-03-03",
                 "--symbols", "SPY,QQQ,AAPL,MSFT,NVDA,TSLA"], paths,
                env={"TRADING_TRADING__CYCLE_INTERVAL_SECONDS": "600"}) as daemon:
        daemon.wait_for("cycle_complete", lambda e: e["phase"] == "regular" and e["symbols"] == 6)
        first = len(daemon.events())
        daemon.wait_for("cycle_complete", lambda e: e["phase"] == "regular", after=first)
        later = len(daemon.events())
        daemon.wait_for("cycle_complete", lambda e: e["phase"] == "regular", after=later)
        assert daemon.stop(signal.SIGTERM) == 0
        six = steady(daemon.events())
    assert six and six == two, f"2 symbols: {two} requests per cycle, 6 symbols: {six}"


def _sigterm_or_sigint(signum: int, run_dir: Path) -> None:
    paths = make_run_paths(run_dir, signal.Signals(signum).name.lower())
    with Daemon(["--speed", "60", "--seed", str(TRADING_SEED), "--start", TRADING_START,
                 "--symbols", TRADING_SYMBOLS], paths) as daemon:
        daemon.wait_for("cycle_complete", timeout=60)
        code = daemon.stop(signum, timeout=10)
        events = daemon.events()
        stdout = daemon.stdout()
    assert code == 0, daemon.stderr_tail()
    names = [e["event"] for e in events]
    assert "shutdown_requested" in names
    assert names.count("system_shutdown") == 1
    shutdown = next(e for e in events if e["event"] == "system_shutdown")
    for position in (e for e in events if e["event"] == "open_position"):
        assert "protected_qty" in position and "qty" in position
    assert shutdown["open_positions"] == names.count("open_position")
    assert "Run summary" in stdout
    safety = journal_state(paths.state_db, "safety")
    assert safety is not None and safety["state"] == "active"
    assert journal_state(paths.state_db, "last_cycle") is not None


def test_sigterm_stops_gracefully(run_dir: Path) -> None:
    _sigterm_or_sigint(signal.SIGTERM, run_dir)


def test_sigint_stops_gracefully(run_dir: Path) -> None:
    _sigterm_or_sigint(signal.SIGINT, run_dir)
