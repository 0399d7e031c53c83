"""The command line as a user meets it: flags in any position, bad configuration refused with
one line per problem before anything talks to a broker, and the operator subcommands."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest

import main
from tests.e2e_helpers import (
    MainRun,
    RunPaths,
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
    (["--bogus"], "--bogus"),
    (["--sim-days", "x"], "--sim-days"),
    (["--mode", "demo"], "--mode"),
    (["halt"], "--reason"),
    (["frobnicate"], "frobnicate"),
])
def test_bad_command_line(argv: list[str], named: str, run_paths: RunPaths, broker: Listener) -> None:
    run = run_main(argv, run_paths, env=_broker_env(broker), with_paths=False)
    assert run.returncode == 2, run.describe()
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], run.stderr
    assert broker.connections == 0


def test_halt_with_a_blank_reason_is_refused(run_paths: RunPaths) -> None:
    run = run_main(["halt", "--reason", "  "], run_paths)
    assert run.returncode == 2
    assert "--reason" in run.stderr
