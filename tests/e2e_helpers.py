"""Helpers for end-to-end tests that run the daemon the way a user does: ``python main.py``
as a subprocess, talking real HTTP to a simulator on 127.0.0.1.

What they give a test:

- :func:`run_dir` (a pytest fixture): a scratch directory for one daemon's state db and log
  file, on tmpfs when the machine has one (the journal fsyncs every commit by design, which
  costs seconds per simulated day on a disk), removed afterwards.
- :func:`daemon_env`: the environment for the subprocess with no Alpaca keys and no
  ``TRADING_*`` settings leaking in from the caller's shell, plus the test's own variables.
- :func:`run_main`: run ``main.py`` to completion -> :class:`MainRun` (exit code, stdout,
  stderr, parsed JSON log events, the sqlite journal).
- :class:`Daemon`: a ``main.py`` running in the background, with :meth:`Daemon.wait_for`
  tailing its JSON log file until an event appears, signals, and a bounded stop.
- :class:`Simulator`: ``python -m simulator`` on a free loopback port (``--port 0``).

Each subprocess runs in its scratch directory as working directory, so a ``.env`` or
``config.toml`` in the repository never changes what a test sees.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import pytest

REPO = Path(__file__).resolve().parent.parent
MAIN = REPO / "main.py"
PYTHON = sys.executable

# A seed and a session on which the default strategies trade in one simulated day: on
# 2026-01-05 the synthetic NVDA (seed 42) has a catalyst day (+3.2 % on 1.5x volume), so
# enhanced momentum buys it with a bracket order in the morning. Most synthetic days have no
# entry at all with the default thresholds (we tried a dozen), hence the fixed date.
TRADING_SEED = 42
TRADING_START = "2026-01-05"
TRADING_SYMBOLS = "SPY,NVDA"
# A few minutes before that entry (09:56 New York) at 600x: the daemon buys NVDA within about
# a second of wall time and, with only the momentum and breakout strategies enabled (mean
# reversion would exit at once), holds it under its bracket for the rest of the session.
HOLDING_ARGS = ["--speed", "600", "--seed", str(TRADING_SEED), "--start", "2026-01-05T09:50:00-05:00",
                "--symbols", TRADING_SYMBOLS]
HOLDING_ENV = {"TRADING_STRATEGY__ENABLED": "enhanced_momentum,breakout"}

Event = dict[str, Any]
EventPredicate = Callable[[Event], bool]


# -- scratch directories and environment ----------------------------------------------------


def _fast_base() -> Path | None:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return None


@dataclass(frozen=True)
class RunPaths:
    """Where one daemon keeps its files: working directory, journal, JSON log."""

    workdir: Path
    state_db: Path
    log_file: Path

    def flags(self) -> list[str]:
        """``--state-db``/``--log-file`` flags pointing at this directory."""
        return ["--state-db", str(self.state_db), "--log-file", str(self.log_file)]


def make_run_paths(base: Path, name: str = "run") -> RunPaths:
    workdir = base / name
    workdir.mkdir(parents=True, exist_ok=True)
    return RunPaths(workdir=workdir, state_db=workdir / "state.db", log_file=workdir / "log.jsonl")


@contextlib.contextmanager
def scratch_dir(fallback: Path) -> Iterator[Path]:
    """A fresh directory on tmpfs when available (else ``fallback``), removed afterwards."""
    base = _fast_base()
    if base is None:
        yield fallback
        return
    path = Path(tempfile.mkdtemp(prefix="e2e-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    """A scratch directory for one test's daemons (see :func:`scratch_dir`)."""
    with scratch_dir(tmp_path) as path:
        yield path


@pytest.fixture
def run_paths(run_dir: Path) -> RunPaths:
    """Journal and log file paths for one daemon in :func:`run_dir`."""
    return make_run_paths(run_dir)


def daemon_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without Alpaca keys or ``TRADING_*`` settings, plus ``extra``."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("APCA_", "ALPACA_", "TRADING_", "PYTEST_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


# -- log events -----------------------------------------------------------------------------


def read_events(log_file: Path) -> list[Event]:
    """The JSON log lines written so far (a half-written last line is skipped)."""
    if not log_file.exists():
        return []
    events: list[Event] = []
    with log_file.open("r", encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            line = line.strip()
            if line:
                events.append(json.loads(line))
    return events


def named(events: Sequence[Event], name: str) -> list[Event]:
    return [e for e in events if e.get("event") == name]


# -- journal --------------------------------------------------------------------------------


def journal_state(state_db: Path, key: str) -> Any:
    """One row of the journal's ``state`` table, decoded, or None."""
    with sqlite3.connect(f"file:{state_db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else None


def journal_rows(state_db: Path, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
    """Read-only query of the journal."""
    conn = sqlite3.connect(f"file:{state_db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute(sql, tuple(params)))
    finally:
        conn.close()


# -- running main.py ------------------------------------------------------------------------


@dataclass
class MainRun:
    """A finished ``main.py``: exit code, output, log events, journal path."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    paths: RunPaths
    events: list[Event] = field(default_factory=list)

    def named(self, name: str) -> list[Event]:
        return named(self.events, name)

    def event_names(self) -> set[str]:
        return {str(e.get("event")) for e in self.events}

    def describe(self) -> str:
        """Enough of the run to diagnose a failed assertion."""
        tail = "\n".join(self.stderr.splitlines()[-15:])
        return f"main.py {' '.join(self.args)} -> exit {self.returncode}\nstderr tail:\n{tail}"


def main_command(args: Sequence[str]) -> list[str]:
    return [PYTHON, str(MAIN), *args]


def run_main(
    args: Sequence[str],
    paths: RunPaths,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 90,
    with_paths: bool = True,
) -> MainRun:
    """Run ``python main.py ARGS`` to completion (with this run's ``--state-db``/``--log-file``
    unless ``with_paths`` is False) and collect what it left behind."""
    full = [*args, *(paths.flags() if with_paths else [])]
    proc = subprocess.run(
        main_command(full), cwd=paths.workdir, env=daemon_env(env), capture_output=True,
        text=True, timeout=timeout, check=False,
    )
    return MainRun(args=full, returncode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr,
                   paths=paths, events=read_events(paths.log_file))


class Daemon:
    """``python main.py ARGS`` running in the background; output goes to files in its
    working directory so a chatty daemon can never block on a full pipe."""

    def __init__(self, args: Sequence[str], paths: RunPaths, *, env: Mapping[str, str] | None = None,
                 with_paths: bool = True) -> None:
        self.paths = paths
        self.args = [*args, *(paths.flags() if with_paths else [])]
        self.stdout_path = paths.workdir / "stdout.txt"
        self.stderr_path = paths.workdir / "stderr.txt"
        self._out = self.stdout_path.open("w", encoding="utf-8")
        self._err = self.stderr_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(main_command(self.args), cwd=paths.workdir, env=daemon_env(env),
                                     stdout=self._out, stderr=self._err, text=True)

    def __enter__(self) -> "Daemon":
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self) -> list[Event]:
        return read_events(self.paths.log_file)

    def wait_for(self, name: str, predicate: EventPredicate | None = None, *, timeout: float = 30,
                 after: int = 0) -> Event:
        """The first ``name`` event (matching ``predicate``) at index >= ``after`` in the log.

        Fails the test with the daemon's stderr tail if it exits or the time runs out first.
        """
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            for event in events[after:]:
                if event.get("event") == name and (predicate is None or predicate(event)):
                    return event
            if self.proc.poll() is not None:
                # the process is gone: one last read, then give up
                for event in self.events()[after:]:
                    if event.get("event") == name and (predicate is None or predicate(event)):
                        return event
                pytest.fail(f"daemon exited ({self.proc.returncode}) before logging {name!r}\n"
                            f"{self.stderr_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {name!r} in the log within {timeout:g}s\n{self.stderr_tail()}")
            time.sleep(0.05)

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Send ``signum`` and wait for the exit code (killing it if it does not exit)."""
        self.send_signal(signum)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"daemon did not exit within {timeout:g}s of {signal.Signals(signum).name}")

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"daemon did not finish within {timeout:g}s\n{self.stderr_tail()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._out.close()
        self._err.close()

    def stdout(self) -> str:
        self._out.flush()
        return self.stdout_path.read_text(encoding="utf-8")

    def stderr(self) -> str:
        self._err.flush()
        return self.stderr_path.read_text(encoding="utf-8")

    def stderr_tail(self, lines: int = 15) -> str:
        return "stderr tail:\n" + "\n".join(self.stderr().splitlines()[-lines:])


# -- an external simulator ------------------------------------------------------------------


class Simulator:
    """``python -m simulator`` on a free loopback port; ``url`` is its base URL.

    ``args`` are extra simulator flags (``--key K --secret S``, ``--speed max``, ...).
    """

    def __init__(self, workdir: Path, args: Sequence[str] = (), *, timeout: float = 30) -> None:
        self.stderr_path = workdir / "simulator-stderr.txt"
        self._err = self.stderr_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "simulator", "--host", "127.0.0.1", "--port", "0", *args],
            cwd=REPO, env=daemon_env(), stdout=subprocess.PIPE, stderr=self._err, text=True,
        )
        self.url = self._read_url(timeout)

    def _read_url(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if "listening on " not in line:
            self.stop()
            pytest.fail(f"simulator did not start: {line!r}\n{self.stderr_path.read_text()[-2000:]}")
        return line.split("listening on ", 1)[1].strip()

    def __enter__(self) -> "Simulator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._err.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8")
