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
    HOLDING_ARGS,
    HOLDING_ENV,
    TRADING_SEED,
    TRADING_START,
    TRADING_SYMBOLS,
    Daemon,
    MainRun,
    RunPaths,
    Simulator,
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
    """``python main.py --sim-days 1 --speed max`` exactly as a newcomer types it: the default
    seed and universe start on the demo day (main.DEMO_START), on which the default strategies
    enter, exit and hold positions."""
    with scratch_dir(tmp_path_factory.mktemp("one-day")) as base:
        yield run_main(["--sim-days", "1", "--speed", "max"], make_run_paths(base), timeout=120)


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
    assert regular and all(c["symbols"] == 6 for c in regular)


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
            # (reconciliation_orders_fetched: a bracket closed at the broker since the last
            # periodic check; its legs' final states cost one listing, whatever the symbols)
            if event["event"] in ("order_submitted", "history_loaded", "strategy_exit",
                                  "reconciliation_orders_fetched"):
                busy = True
            elif event["event"] == "cycle_complete":
                if event["phase"] == "regular" and not busy and event["positions"] == 0:
                    out.add(event["requests"])
                busy = False
        return out

    six = steady(one_day.events)
    assert len(six) >= 1
    paths = make_run_paths(run_dir, "two")
    # cycles every 10 simulated minutes so the pre-market passes quickly; stop with SIGTERM
    # after a few regular-session cycles
    with Daemon(["--speed", "max", "--seed", str(TRADING_SEED), "--start", "2025-03-03",
                 "--symbols", "SPY,NVDA"], paths,
                env={"TRADING_TRADING__CYCLE_INTERVAL_SECONDS": "600"}) as daemon:
        daemon.wait_for("cycle_complete", lambda e: e["phase"] == "regular" and e["symbols"] == 2)
        first = len(daemon.events())
        daemon.wait_for("cycle_complete", lambda e: e["phase"] == "regular", after=first)
        later = len(daemon.events())
        daemon.wait_for("cycle_complete", lambda e: e["phase"] == "regular", after=later)
        assert daemon.stop(signal.SIGTERM) == 0
        two = steady(daemon.events())
    assert two and six == two, f"6 symbols: {six} requests per cycle, 2 symbols: {two}"


def _assert_graceful(code: int, events: list[dict], stdout: str, paths: RunPaths) -> None:
    assert code == 0
    names = [e["event"] for e in events]
    assert "shutdown_requested" in names
    assert names.count("system_shutdown") == 1
    shutdown = next(e for e in events if e["event"] == "system_shutdown")
    assert shutdown["open_positions"] == names.count("open_position")
    assert "Run summary" in stdout
    # state flushed: the safety state and the last cycle are in the journal
    safety = journal_state(paths.state_db, "safety")
    assert safety is not None and safety["state"] == "active" and not safety["latched"]
    assert journal_state(paths.state_db, "last_cycle") is not None


def test_sigterm_stops_gracefully(run_dir: Path) -> None:
    paths = make_run_paths(run_dir)
    with Daemon(["--speed", "60", "--seed", str(TRADING_SEED), "--start", TRADING_START,
                 "--symbols", TRADING_SYMBOLS], paths) as daemon:
        daemon.wait_for("cycle_complete", timeout=60)
        code = daemon.stop(signal.SIGTERM, timeout=10)
        _assert_graceful(code, daemon.events(), daemon.stdout(), paths)
    assert "SIGTERM" in next(e["signal"] for e in daemon.events() if e["event"] == "shutdown_requested")


def test_sigint_while_holding_logs_the_position_and_its_protection(run_dir: Path) -> None:
    paths = make_run_paths(run_dir)
    with Daemon(HOLDING_ARGS, paths, env=HOLDING_ENV) as daemon:
        daemon.wait_for("cycle_complete", lambda e: e["positions"] >= 1, timeout=60)
        code = daemon.stop(signal.SIGINT, timeout=10)
        events = daemon.events()
        _assert_graceful(code, events, daemon.stdout(), paths)
    held = [e for e in events if e["event"] == "open_position"]
    assert [e["symbol"] for e in held] == ["NVDA"]
    assert Decimal(held[0]["protected_qty"]) == Decimal(held[0]["qty"]) > 0
    shutdown = next(e for e in events if e["event"] == "system_shutdown")
    assert shutdown["protected_positions"] == shutdown["open_positions"] == 1


# -- secrets --------------------------------------------------------------------------------

KEY_ID = "PKE2EKEYID7Q3"
SECRET = "e2e-Secret-Zq9xW4vR8"


def _leaks(texts: dict[str, str], files: list[Path], *secrets: str) -> list[str]:
    """Where any of ``secrets`` appears: in the texts, or in the bytes of the files."""
    found = [f"{where}: {s!r}" for where, text in texts.items() for s in secrets if s in text]
    for path in files:
        data = path.read_bytes()
        found += [f"{path.name}: {s!r}" for s in secrets if s.encode() in data]
    return found


@pytest.fixture(scope="module")
def keyed_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """An external simulator that only answers requests carrying KEY_ID and SECRET."""
    with Simulator(tmp_path_factory.mktemp("simulator"), ["--key", KEY_ID, "--secret", SECRET, "--seed", str(TRADING_SEED),
                             "--start", TRADING_START, "--symbols", TRADING_SYMBOLS]) as sim:
        yield sim


def test_api_keys_appear_in_no_output_log_or_journal(keyed_simulator: Simulator, run_dir: Path) -> None:
    env = {"APCA_API_KEY_ID": KEY_ID, "APCA_API_SECRET_KEY": SECRET,
           "APCA_API_BASE_URL": keyed_simulator.url, "APCA_API_DATA_URL": keyed_simulator.url}
    paths = make_run_paths(run_dir, "daemon")
    with Daemon(["--symbols", TRADING_SYMBOLS], paths, env=env) as daemon:
        # start-up reads the account, positions, orders and fills with the keys, whatever
        # the wall-clock session is
        reconciliation = daemon.wait_for("reconciliation", timeout=60)
        assert daemon.stop(signal.SIGTERM) == 0, daemon.stderr_tail()
        texts = {"daemon stdout": daemon.stdout(), "daemon stderr": daemon.stderr()}
    assert reconciliation["discrepancy_count"] == 0
    start = next(e for e in daemon.events() if e["event"] == "system_start")
    assert start["mode"] == "paper"
    diagnose = run_main(["diagnose", "--symbols", TRADING_SYMBOLS], paths, env=env)
    assert diagnose.returncode == 0, diagnose.describe() + diagnose.stdout[-2000:]
    assert "[PASS] account access" in diagnose.stdout
    texts |= {"diagnose stdout": diagnose.stdout, "diagnose stderr": diagnose.stderr}
    files = [p for p in paths.workdir.iterdir() if p.is_file()]
    assert paths.state_db in files and paths.log_file in files
    assert not _leaks(texts, files, KEY_ID, SECRET)


def test_rejected_keys_stop_the_daemon_with_one_line(keyed_simulator: Simulator, run_dir: Path) -> None:
    wrong = "e2e-Wrong-Secret-5tY"
    env = {"APCA_API_KEY_ID": KEY_ID, "APCA_API_SECRET_KEY": wrong,
           "APCA_API_BASE_URL": keyed_simulator.url, "APCA_API_DATA_URL": keyed_simulator.url}
    paths = make_run_paths(run_dir, "daemon")
    run = run_main(["--symbols", TRADING_SYMBOLS], paths, env=env, timeout=60)
    assert run.returncode == 1, run.describe()
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "not authorized" in lines[0] and "Traceback" not in run.stderr, run.stderr
    assert "operational_error" in run.event_names() and "system_shutdown" in run.event_names()
    files = [p for p in paths.workdir.iterdir() if p.is_file()]
    assert not _leaks({"stdout": run.stdout, "stderr": run.stderr}, files, KEY_ID, wrong)
