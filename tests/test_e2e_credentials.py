"""Encrypted credentials and owner-only files, as a user meets them (issue 18, item 6).

``python main.py credentials set --from-env`` moves the keys out of the environment into
``data/credentials.enc``; the daemon, started with no keys in its environment but the
passphrase in ``TRADING_CREDENTIALS_PASSPHRASE``, trades the (keyed) broker with them. Every
file the run leaves behind (credentials, state DB with its -wal/-shm, log) is ``0600``, every
folder it made ``0700``; neither key nor passphrase appears in any output or file in clear.
"""

from __future__ import annotations

import signal
import stat
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e_helpers import (
    TRADING_SEED,
    TRADING_START,
    TRADING_SYMBOLS,
    Daemon,
    Simulator,
    make_run_paths,
    run_dir,  # noqa: F401  (fixture)
    run_main,
)

pytestmark = pytest.mark.e2e

KEY_ID = "PKSTOREDKEY000000042"
SECRET = "stored-secret-Zq7-never-in-clear-0042"
PASSPHRASE = "a long passphrase 4 the store"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def keyed_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with Simulator(tmp_path_factory.mktemp("simulator"), ["--key", KEY_ID, "--secret", SECRET, "--seed",
                                                          str(TRADING_SEED), "--start", TRADING_START,
                                                          "--symbols", TRADING_SYMBOLS]) as sim:
        yield sim


def test_the_daemon_trades_with_stored_keys_and_leaves_only_private_files(
        keyed_simulator: Simulator, run_dir: Path) -> None:
    paths = make_run_paths(run_dir, "daemon")
    paths.workdir.chmod(0o755)
    stored = run_main(["credentials", "set", "--from-env"], paths, with_paths=False, env={
        "APCA_API_KEY_ID": KEY_ID, "APCA_API_SECRET_KEY": SECRET, "TRADING_CREDENTIALS_PASSPHRASE": PASSPHRASE})
    assert stored.returncode == 0, stored.describe()
    store = paths.workdir / "data" / "credentials.enc"
    assert _mode(store) == 0o600 and _mode(store.parent) == 0o700

    shown = run_main(["credentials", "show"], paths, with_paths=False,
                     env={"TRADING_CREDENTIALS_PASSPHRASE": PASSPHRASE})
    assert shown.returncode == 0, shown.describe()
    assert "PKST" in shown.stdout and "(37 characters)" in shown.stdout
    wrong = run_main(["credentials", "show"], paths, with_paths=False,
                     env={"TRADING_CREDENTIALS_PASSPHRASE": "not the passphrase"})
    assert wrong.returncode == 2 and "wrong passphrase" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1

    # the daemon: no keys in its environment, only where the broker is and the passphrase
    env = {"TRADING_CREDENTIALS_PASSPHRASE": PASSPHRASE,
           "APCA_API_BASE_URL": keyed_simulator.url, "APCA_API_DATA_URL": keyed_simulator.url}
    logs = paths.workdir / "logs"
    with Daemon(["--symbols", TRADING_SYMBOLS, "--log-file", str(logs / "trading.jsonl")], paths, env=env,
                with_paths=False) as daemon:
        paths = type(paths)(paths.workdir, paths.workdir / "data" / "trading_state.db", logs / "trading.jsonl")
        daemon.paths = paths
        reconciliation = daemon.wait_for("reconciliation", timeout=60)
        assert daemon.stop(signal.SIGTERM) == 0, daemon.stderr_tail()
        texts = {"stdout": daemon.stdout(), "stderr": daemon.stderr()}
    assert reconciliation["discrepancy_count"] == 0
    start = next(e for e in daemon.events() if e["event"] == "system_start")
    assert start["mode"] == "paper", "the keys came from the store, so the daemon left sim mode"

    made = [p for p in paths.workdir.rglob("*") if p.name not in ("stdout.txt", "stderr.txt")]
    files = [p for p in made if p.is_file()]
    assert paths.state_db in files and paths.log_file in files and store in files
    assert {p: oct(_mode(p)) for p in files if _mode(p) != 0o600} == {}
    assert {p: oct(_mode(p)) for p in made if p.is_dir() and _mode(p) != 0o700} == {}
    texts |= {"set": stored.stdout + stored.stderr, "show": shown.stdout + shown.stderr,
              "wrong": wrong.stdout + wrong.stderr}
    leaks = [f"{where}: {s!r}" for where, text in texts.items() for s in (KEY_ID, SECRET, PASSPHRASE) if s in text]
    leaks += [f"{p.name}: {s!r}" for p in files for s in (KEY_ID, SECRET, PASSPHRASE)
              if s.encode() in p.read_bytes()]
    assert leaks == []
