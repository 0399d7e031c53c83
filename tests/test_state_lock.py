"""One daemon per state database (issue 13, item 2): the lock a daemon holds for its life.

A holder in another process (what a second daemon meets), the holder's pid named, the
probe that ``halt``/``status`` use, and a holder killed with SIGKILL (the kernel releases
the lock: the next daemon takes it over)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from journal.state_lock import StateDbInUse, StateDbLock, lock_file, lock_holder, pid_file
from tests.conftest import ROOT

HOLD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from journal.state_lock import StateDbLock
    lock = StateDbLock({db!r})
    lock.acquire()
    print("locked", flush=True)
    time.sleep(60)
""")


@pytest.fixture()
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock of ``tmp_path/state.db``."""
    db = tmp_path / "state.db"
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(root=str(ROOT), db=str(db))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    db = tmp_path / "state.db"
    with pytest.raises(StateDbInUse) as refused:
        StateDbLock(db, wait_seconds=0.2).acquire()
    assert refused.value.holder_pid == holder.pid
    message = str(refused.value)
    assert f"pid {holder.pid}" in message and str(db) in message and "\n" not in message
    assert lock_holder(db) is not None and lock_holder(db).pid == holder.pid  # type: ignore[union-attr]


def test_the_lock_is_released_by_sigkill_and_taken_over(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    db = tmp_path / "state.db"
    holder.kill()
    holder.wait(timeout=10)
    assert pid_file(db).exists(), "a crashed holder leaves its pid file behind"
    assert lock_holder(db) is None, "but no process holds the lock any more"
    with StateDbLock(db) as lock:
        assert lock.held
        assert pid_file(db).read_text().strip() == str(os.getpid())
        assert lock_holder(db) is not None
    assert lock_holder(db) is None
    assert not pid_file(db).exists() and not lock_file(db).exists(), "a clean release leaves nothing"


def test_the_probe_creates_nothing_and_does_not_block_a_daemon(tmp_path: Path) -> None:
    db = tmp_path / "nothing" / "state.db"
    assert lock_holder(db) is None
    assert not (tmp_path / "nothing").exists()
    db = tmp_path / "state.db"
    with StateDbLock(db):
        pass
    lock = StateDbLock(db)
    assert lock_holder(db) is None
    lock.acquire()  # the probe released its shared lock at once
    try:
        assert lock_holder(db) is not None
    finally:
        lock.release()


def test_different_databases_do_not_share_a_lock(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    # a backtest or a second paper account with its own --state-db is unaffected
    with StateDbLock(tmp_path / "other.db") as lock:
        assert lock.held
