"""The command line as a user meets it: flags in any position, bad configuration refused with
one line per problem before anything talks to a broker, and the operator subcommands."""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest

import main
from tests.e2e_helpers import (
    HOLDING_ARGS,
    HOLDING_ENV,
    TRADING_SEED,
    TRADING_SYMBOLS,
    Daemon,
    MainRun,
    RunPaths,
    make_run_paths,
    run_dir,  # noqa: F401  (fixture)
    run_main,
    run_paths,  # noqa: F401  (fixture)
)

# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["--state-db", "x.db", "status"],
    ["status", "--state-db", "x.db"],
    ["--state-db", "x.db", "halt", "--reason", "r"],
    ["halt", "--state-db", "x.db", "--reason", "r"],
    ["--state-db", "x.db", "run"],
    ["--state-db", "x.db"],
])
def test_common_flags_work_before_and_after_the_subcommand(argv: list[str]) -> None:
    args = main.build_parser().parse_args(argv)
    assert args.state_db == "x.db"
    assert args.seed is None and args.log_file is None


def test_flags_before_and_after_the_subcommand_combine() -> None:
    args = main.build_parser().parse_args(["--seed", "7", "--speed", "max", "run", "--sim-days", "2"])
    assert (args.command, args.seed, args.speed, args.sim_days) == ("run", 7, "max", 2)
    assert main.overrides_from_args(args) == {"sim.seed": 7, "sim.speed": "max", "sim.days": 2}


def test_no_subcommand_means_run_with_every_flag_unset() -> None:
    args = main.build_parser().parse_args([])
    assert args.command is None
    assert main.overrides_from_args(args) == {}


# -- bad configuration: exit 2, one line per problem, no broker contact -----------------------


class Listener:
    """A loopback TCP port that counts connections (a broker that must never be called)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def broker() -> Iterator[Listener]:
    listener = Listener()
    try:
        yield listener
    finally:
        listener.close()


def _broker_env(broker: Listener, **extra: str) -> dict[str, str]:
    return {"APCA_API_KEY_ID": "PKTESTKEYID", "APCA_API_SECRET_KEY": "testsecret",
            "APCA_API_BASE_URL": broker.url, "APCA_API_DATA_URL": broker.url, **extra}


def _assert_refused(run: MainRun, broker: Listener, *keys: str) -> None:
    assert run.returncode == 2, run.describe()
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == len(keys), run.stderr
    for line, key in zip(sorted(lines), sorted(keys)):
        assert key in line, f"{key!r} not named in {line!r}"
    assert broker.connections == 0, "the broker was contacted despite a bad configuration"
    assert not run.paths.state_db.exists() and not run.paths.log_file.exists()


def test_invalid_setting_from_the_environment(run_paths: RunPaths, broker: Listener) -> None:
    run = run_main(["--mode", "paper"], run_paths,
                   env=_broker_env(broker, TRADING_TRADING__STOP_LOSS="-1"))
    _assert_refused(run, broker, "trading.stop_loss")
    assert "TRADING_TRADING__STOP_LOSS" in run.stderr


def test_unknown_keys_in_a_config_file(run_paths: RunPaths, broker: Listener) -> None:
    config = run_paths.workdir / "config.toml"
    config.write_text("[trading]\nstop_los = 0.02\n\n[risk]\ncircuit_breaker_loss = 2\n", encoding="utf-8")
    run = run_main(["--mode", "paper", "--config", str(config)], run_paths, env=_broker_env(broker))
    _assert_refused(run, broker, "trading.stop_los", "risk.circuit_breaker_loss")
    assert "did you mean stop_loss" in run.stderr


def test_live_mode_without_the_opt_in(run_paths: RunPaths, broker: Listener) -> None:
    run = run_main(["--mode", "live"], run_paths, env=_broker_env(broker))
    _assert_refused(run, broker, "mode")
    assert "TRADING_LIVE_ENABLED" in run.stderr


def test_malformed_symbols(run_paths: RunPaths, broker: Listener) -> None:
    run = run_main(["--mode", "paper", "--symbols", "sp y,AAPL"], run_paths, env=_broker_env(broker))
    _assert_refused(run, broker, "scanning.symbols")
    assert "'sp y'" in run.stderr


@pytest.mark.parametrize("argv, named", [
    (["--sim-days", "x"], "--sim-days"),
    (["--mode", "demo"], "--mode"),
    (["halt"], "--reason"),
    (["frobnicate"], "frobnicate"),
])
def test_bad_command_line(argv: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], lines


def test_bad_command_line_in_a_subprocess(run_paths: RunPaths, broker: Listener) -> None:
    run = run_main(["--bogus"], run_paths, env=_broker_env(broker), with_paths=False)
    assert run.returncode == 2, run.describe()
    assert run.stderr.strip() == "error: unrecognized arguments: --bogus"
    assert broker.connections == 0


def test_halt_with_a_blank_reason_is_refused(run_paths: RunPaths) -> None:
    run = run_main(["halt", "--reason", "  "], run_paths)
    assert run.returncode == 2
    assert "--reason" in run.stderr


# -- status, halt, rearm on a state database that is not there (issue 13) ---------------------


@pytest.mark.parametrize("argv", [["status"], ["halt", "--reason", "r"], ["rearm", "--reason", "r"]])
def test_operator_commands_on_a_missing_state_db_exit_2_and_create_nothing(
        argv: list[str], run_paths: RunPaths) -> None:
    typo = run_paths.workdir / "dta" / "trading_state.db"
    run = run_main([*argv, "--state-db", str(typo), "--log-file", str(run_paths.log_file)], run_paths,
                   with_paths=False)
    assert run.returncode == 2, run.describe()
    assert run.stderr.strip() == f"error: no state database at {typo} (check --state-db; the daemon " \
                                 "creates it when it first runs)"
    assert "queued" not in run.stdout
    assert sorted(p.name for p in run_paths.workdir.iterdir()) == [], "nothing may be created"


def _existing_state_db(paths: RunPaths) -> None:
    from journal.journal import Journal

    Journal(paths.state_db).close()


def test_halt_with_no_daemon_running_says_it_applies_at_the_next_start(run_paths: RunPaths) -> None:
    _existing_state_db(run_paths)
    run = run_main(["halt", "--reason", "weekend"], run_paths)
    assert run.returncode == 0, run.describe()
    assert "halt queued" in run.stdout and "no daemon is running" in run.stdout
    assert "applied when the daemon next starts" in run.stdout
    status = run_main(["status"], run_paths)
    assert "not running on this state database" in status.stdout
    assert "pending commands  halt" in status.stdout, status.stdout


def test_halt_while_a_daemon_holds_the_lock_names_it(run_paths: RunPaths) -> None:
    from journal.state_lock import StateDbLock

    _existing_state_db(run_paths)
    with StateDbLock(run_paths.state_db):  # this test process stands in for the daemon
        run = run_main(["halt", "--reason", "now"], run_paths)
        status = run_main(["status"], run_paths)
    assert run.returncode == 0, run.describe()
    assert f"the running daemon (pid {os.getpid()}) applies it at its next cycle" in run.stdout
    assert f"running (pid {os.getpid()})" in status.stdout


# -- status, halt, rearm against a running daemon --------------------------------------------

def _after(events: list[dict], name: str) -> list[dict]:
    """The events logged after the first ``name``."""
    index = next(i for i, e in enumerate(events) if e["event"] == name)
    return events[index + 1:]


@pytest.mark.e2e
def test_status_halt_and_rearm_drive_a_running_daemon(run_paths: RunPaths) -> None:
    with Daemon(HOLDING_ARGS, run_paths, env=HOLDING_ENV) as daemon:
        daemon.wait_for("order_filled", timeout=60)
        daemon.wait_for("cycle_complete", lambda e: e["positions"] >= 1 and e["unprotected"] == [])

        status = run_main(["status"], run_paths)
        assert status.returncode == 0, status.describe()
        text = status.stdout
        for label in ("last cycle", "equity", "day P&L", "trading state     active", "day trading",
                      "business days", "positions         1", "open orders"):
            assert label in text, f"status lacks {label!r}:\n{text}"
        nvda = next(line for line in text.splitlines() if line.strip().startswith("NVDA") and "qty" in line)
        assert "protected" in nvda and "UNPROTECTED" not in nvda, text
        assert "stop" in text and "sell" in text  # the bracket's exit legs are listed

        halt = run_main(["halt", "--reason", "operator test halt"], run_paths)
        assert halt.returncode == 0, halt.describe()
        assert "halt queued" in halt.stdout and f"running daemon (pid {daemon.pid})" in halt.stdout
        halted = daemon.wait_for("halted", timeout=30)
        assert halted["reason"] == "operator test halt"
        latched = daemon.wait_for("cycle_complete", lambda e: e["state"] == "halted", timeout=30)
        assert daemon.stop(signal.SIGTERM) == 0
        events = daemon.events()

    after = _after(events, "halted")
    # flattened and latched within one cycle: the first cycle after the command is flat
    first_cycle = next(e for e in after if e["event"] == "cycle_complete")
    assert first_cycle is latched or first_cycle["state"] in ("liquidating", "halted")
    assert latched["positions"] == 0 and latched["open_orders"] == 0
    assert first_cycle["positions"] == 0, first_cycle
    changes = [e for e in events if e["event"] == "trading_state_changed"]
    assert [c["to_state"] for c in changes][-2:] == ["liquidating", "halted"], changes
    assert not any(e["event"] == "open_position" for e in after)

    status = run_main(["status"], run_paths)
    assert "LATCHED" in status.stdout and "operator test halt" in status.stdout, status.stdout

    # the latch survives a restart: no entries, state halted from the first line
    restart = make_run_paths(run_paths.workdir.parent, "restart-log")
    paths = RunPaths(workdir=restart.workdir, state_db=run_paths.state_db, log_file=restart.log_file)
    with Daemon([*HOLDING_ARGS, "--speed", "3000"], paths, env=HOLDING_ENV) as daemon:
        start = daemon.wait_for("system_start")
        assert start["state"] == "halted"
        daemon.wait_for("cycle_complete", lambda e: e["phase"] == "regular", timeout=60)
        # past the minute the first run entered: still no order
        daemon.wait_for("cycle_complete", lambda e: e.get("market_time", "") >= "2026-01-05T15:00", timeout=60)
        assert not [e for e in daemon.events() if e["event"] in ("order_submitted", "trade_intent")]
        assert all(e["state"] == "halted" for e in daemon.events() if e["event"] == "cycle_complete")

        rearm = run_main(["rearm", "--reason", "operator test rearm"], paths)
        assert rearm.returncode == 0, rearm.describe()
        rearmed = daemon.wait_for("rearmed", timeout=30)
        assert rearmed["reason"] == "operator test rearm"
        daemon.wait_for("cycle_complete", lambda e: e["state"] == "active", timeout=30)
        assert daemon.stop(signal.SIGTERM) == 0
    status = run_main(["status"], paths)
    assert "trading state     active" in status.stdout and "LATCHED" not in status.stdout


# -- diagnose -------------------------------------------------------------------------------


@pytest.mark.e2e
def test_diagnose_in_sim_mode_is_healthy(run_paths: RunPaths) -> None:
    # mid-morning, so the order system check places and cancels a real test order
    run = run_main(["diagnose", "--seed", str(TRADING_SEED), "--start", "2026-01-05T10:30:00-05:00",
                    "--symbols", TRADING_SYMBOLS], run_paths)
    assert run.returncode == 0, run.describe() + "\n" + run.stdout[-3000:]
    report = run.stdout[run.stdout.index("System diagnostic"):]
    assert "(sim mode, http://127.0.0.1:" in report
    for check in ("configuration", "api connectivity", "account access", "market data", "order system"):
        assert f"[PASS] {check}" in report, report
    assert "test limit order placed and canceled" in report
    assert "risk systems" in report
    assert "Result: HEALTHY" in report


def _dead_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.e2e
def test_diagnose_reports_an_unreachable_broker(run_paths: RunPaths) -> None:
    url = f"http://127.0.0.1:{_dead_port()}"
    run = run_main(["diagnose", "--mode", "paper"], run_paths, env={
        "APCA_API_KEY_ID": "PKDIAGNOSEKEY", "APCA_API_SECRET_KEY": "diagnose-secret",
        "APCA_API_BASE_URL": url, "APCA_API_DATA_URL": url,
        "TRADING_API__MAX_RETRIES": "0", "TRADING_API__TIMEOUT_SECONDS": "1",
    })
    assert run.returncode not in (0, 2), run.describe()
    report = run.stdout[run.stdout.index("System diagnostic"):]
    assert f"(paper mode, {url})" in report
    assert "[FAIL] api connectivity" in report
    assert "Result: UNHEALTHY" in report
    assert "diagnose-secret" not in run.stdout + run.stderr
