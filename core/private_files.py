"""Owner-only files: the state database, logs, reports and key files are nobody else's business.

The journal holds positions, orders and equity; the logs hold account figures; the
credential store holds the (encrypted) API keys. On a shared server the default umask (022)
makes all of them world-readable. Two layers keep them private:

* :func:`owner_only_umask` at start-up (``main.main``): every file and folder the process
  creates from then on, including those third-party code creates (SQLite's ``-wal`` and
  ``-shm``, a rotated log, the backtest's CSV), is ``0600`` / ``0700``;
* explicit modes where the daemon creates its own files (:func:`private_dir`,
  :func:`private_file`), so the journal or a log opened by a library user, a test or a tool
  that did not go through ``main`` is private too.

Only what the daemon creates is tightened: an existing folder the user chose (``data/``,
their home) keeps its mode; an existing file the daemon owns (its state DB, its log) is
tightened to ``0600``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
UMASK = 0o077


def owner_only_umask() -> int:
    """Set the process umask to 077; returns the previous one (to restore it)."""
    return os.umask(UMASK)


def private_dir(path: Path | str) -> Path:
    """Create ``path`` and any missing parents as ``0700`` folders; existing ones are left as is."""
    folder = Path(path)
    missing: list[Path] = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for created in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it in between
            created.mkdir(mode=DIR_MODE)
            os.chmod(created, DIR_MODE)  # mkdir's mode passes through the umask
    return folder


def private_file(path: Path | str) -> Path:
    """Make sure ``path`` exists as a ``0600`` file (created empty if missing, tightened if not)."""
    target = Path(path)
    try:
        handle = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        tighten(target)
        return target
    os.close(handle)
    os.chmod(target, FILE_MODE)  # os.open's mode passes through the umask
    return target


def tighten(path: Path | str) -> None:
    """``chmod 600`` an existing regular file. A missing one is fine (nothing to protect), a
    device (``--log-file /dev/null``) is not ours, and someone else's file we may only read
    (``status`` on a read-only copy) stays as it is."""
    target = Path(path)
    if not target.is_file():
        return
    with contextlib.suppress(FileNotFoundError, PermissionError):
        os.chmod(target, FILE_MODE)
