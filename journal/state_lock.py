"""One daemon per state database: an OS-level lock held for the daemon's whole life.

Two daemons on one journal each keep their own trading state in memory: a ``halt`` applied
by one is marked done for both, and the other one keeps buying (issue 13). So ``main.py``
takes this lock before it touches the state database and holds it until it exits; a second
daemon on the same file is refused with the holder's pid.

The lock is :class:`portalocker.PidFileLock`: an ``flock`` on ``<db>.pid.lock`` (released by
the kernel when the process dies, ``kill -9`` included, so a crash never leaves a lock that
blocks the next start) and the holder's pid in ``<db>.pid``, written atomically after the
lock is taken, so a refused daemon can name the holder. Both files are removed on a clean
exit; after a crash they stay behind, unlocked, and are simply taken over.

The operator commands (``status``, ``halt``, ``rearm``) never take the lock: they only ask,
with :func:`lock_holder`, whether a daemon holds it, to say when a command takes effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import portalocker

from core.errors import TradingError

#: How long a starting daemon waits for the lock: covers the instant in which a ``halt``
#: or ``status`` probes it (see :func:`lock_holder`), never a running daemon.
ACQUIRE_WAIT_SECONDS = 1.0


class StateDbInUse(TradingError):
    """Another process holds the state database's daemon lock; ``holder_pid`` names it."""

    def __init__(self, path: Path, holder_pid: int | None) -> None:
        self.path = path
        self.holder_pid = holder_pid
        holder = f"pid {holder_pid}" if holder_pid is not None else "a process whose pid is unknown"
        super().__init__(
            f"state database {path} is in use by another daemon ({holder}); stop it first "
            "or give this run its own --state-db")


def pid_file(db: Path | str) -> Path:
    """Where the holder's pid is written: ``<db>.pid``."""
    return Path(f"{db}.pid")


def lock_file(db: Path | str) -> Path:
    """The file the OS lock is taken on: ``<db>.pid.lock`` (portalocker's sidecar)."""
    return Path(f"{pid_file(db)}.lock")


def _read_pid(db: Path | str) -> int | None:
    try:
        text = pid_file(db).read_bytes().decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and 0 < len(text) <= 20 and int(text) > 0 else None


@dataclass(frozen=True)
class LockHolder:
    """A process holding a state database's daemon lock (pid None: not readable)."""

    pid: int | None


def lock_holder(db: Path | str) -> LockHolder | None:
    """The daemon holding ``db``'s lock, or None when no process holds it.

    Asks the kernel (a non-blocking shared ``flock`` on the lock file, released at once)
    rather than trusting the pid file, which a crashed daemon leaves behind. Creates nothing.
    """
    try:
        handle = open(lock_file(db), "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return None
    except OSError:
        return LockHolder(_read_pid(db))  # cannot even look: assume the worst
    with handle:
        try:
            portalocker.lock(handle, portalocker.LOCK_SH | portalocker.LOCK_NB)
        except portalocker.LockException:
            return LockHolder(_read_pid(db))
        portalocker.unlock(handle)
    return None


class StateDbLock:
    """The daemon lock of one state database; use as a context manager around the daemon.

    ``acquire`` raises :class:`StateDbInUse` when another process holds it.
    """

    def __init__(self, db: Path | str, *, wait_seconds: float = ACQUIRE_WAIT_SECONDS) -> None:
        self.db = Path(db)
        self._lock = portalocker.PidFileLock(
            str(pid_file(self.db)), timeout=wait_seconds, check_interval=0.05,
            fail_when_locked=False)
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self) -> None:
        try:
            self._lock.acquire()
        except portalocker.LockException as exc:
            holder = getattr(exc, "holder_pid", None) or _read_pid(self.db)
            raise StateDbInUse(self.db, holder) from None
        self._held = True

    def release(self) -> None:
        """Give the lock up and remove its files (a no-op when not held)."""
        if self._held:
            self._held = False
            self._lock.release()

    def __enter__(self) -> StateDbLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

