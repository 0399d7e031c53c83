"""Structured logging for the daemon: JSON lines to a file and to stdout, secrets redacted.

Call :func:`configure` once at start-up. Afterwards every ``structlog.get_logger(__name__)``
event, and every record of a stdlib logger (aiohttp, asyncio, ...), becomes one JSON object
per line with ``timestamp`` (ISO-8601 UTC), ``level``, ``logger`` and ``event`` first, then
the fields, including whatever was bound with ``structlog.contextvars.bind_contextvars``
(``run_id``, ``client_order_id``). The file is flushed after every line, so ``tail -f``
follows it live. On a terminal, stdout gets a human-friendly rendering instead of JSON.

Before anything is written, :func:`redact_secrets` replaces every registered secret (API
key id and secret, SMTP password, webhook URL: see :func:`add_secret`) with ``***``
wherever it appears, and masks the value of any field whose name says it holds a secret.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import secrets as _random
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from core.private_files import private_dir, private_file

__all__ = [
    "MASK",
    "configure",
    "shutdown",
    "add_secret",
    "redact_secrets",
    "new_run_id",
    "bind_run",
]

MASK = "***"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Secrets shorter than this are only masked where a whole value equals them: as substrings
# they would match ordinary words and shred every log line.
_MIN_SUBSTRING_SECRET = 4
_LEADING_KEYS = ("timestamp", "level", "logger", "event")
_EXACT_SECRET_KEYS = frozenset(
    {"api_key", "key_id", "authorization", "apca_api_key_id", "apca_api_secret_key"}
)
_MAX_DEPTH = 20

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
_handlers: list[logging.Handler] = []
_root_level_before: int | None = None  # restored by shutdown()


# -- secrets ------------------------------------------------------------------------------------


def add_secret(value: str | None) -> None:
    """Register a secret: from now on it is replaced by ``***`` in every log event."""
    if not value:
        return
    global _pattern
    with _lock:
        _secrets.add(value)
        long_ones = sorted(
            (s for s in _secrets if len(s) >= _MIN_SUBSTRING_SECRET), key=len, reverse=True
        )
        _pattern = re.compile("|".join(map(re.escape, long_ones))) if long_ones else None


def _is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    name = key.lower().replace("-", "_")
    return (
        "secret" in name
        or "password" in name
        or name in _EXACT_SECRET_KEYS
        or name.endswith(("_api_key", "_key_id"))
    )


def _scrub_text(text: str) -> str:
    if text in _secrets:
        return MASK
    pattern = _pattern
    return pattern.sub(MASK, text) if pattern is not None else text


def _scrub(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` with every registered secret replaced (containers walked)."""
    if depth > _MAX_DEPTH:
        return MASK
    if isinstance(value, str):
        return _scrub_text(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {
            key: (MASK if _is_secret_key(key) and item is not None else _scrub(item, depth + 1))
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_scrub(item, depth + 1) for item in value]
        return items if isinstance(value, list) else type(value)(items)
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("utf-8", "replace")
        scrubbed = _scrub_text(text)
        return value if scrubbed == text else scrubbed
    # Anything else is rendered with str() later: check that rendering for secrets now.
    try:
        text = str(value)
    except Exception:  # a broken __str__ must not break logging
        return value
    scrubbed = _scrub_text(text)
    return value if scrubbed == text else scrubbed


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask registered secrets anywhere in the event, and secret fields.

    Registered secret values are replaced by ``***`` inside every string (the message, field
    values, nested dicts/lists, formatted exception text). Fields named like ``*secret*``,
    ``*password*``, ``api_key``, ``key_id``, ``authorization``, ``apca-api-key-id`` or
    ``apca-api-secret-key`` (any case) are masked whatever their value.
    """
    for key, value in list(event_dict.items()):
        if key.startswith("_"):  # structlog's private bookkeeping (_record, _from_structlog)
            continue
        if _is_secret_key(key) and value is not None:
            event_dict[key] = MASK
        else:
            event_dict[key] = _scrub(value)
    return event_dict


# -- run ids ------------------------------------------------------------------------------------


def new_run_id() -> str:
    """A fresh id for one daemon run: UTC start time plus random hex, sortable and unique."""
    started = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{started}-{_random.token_hex(4)}"


def bind_run(run_id: str) -> None:
    """Attach ``run_id`` to every later log event of this context (task, thread)."""
    structlog.contextvars.bind_contextvars(run_id=run_id)


# -- configuration ------------------------------------------------------------------------------


def _leading_keys_first(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Put timestamp, level, logger, event first, so a line reads well in ``tail -f``."""
    ordered = {key: event_dict[key] for key in _LEADING_KEYS if key in event_dict}
    ordered.update((key, value) for key, value in event_dict.items() if key not in ordered)
    return ordered


def add_utc_timestamp(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """``timestamp`` as ISO-8601 UTC ending in ``Z``; a stdlib record keeps its own time.

    (Wall time: when the line was written. Simulated market time is a field of its own.)
    """
    record = event_dict.get("_record")
    if record is not None and not event_dict.get("_from_structlog", False):
        moment = datetime.fromtimestamp(record.created, timezone.utc)
    else:
        moment = datetime.now(timezone.utc)
    event_dict["timestamp"] = moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        add_utc_timestamp,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]


def _json_formatter(shared: list[Processor]) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _leading_keys_first,
            structlog.processors.JSONRenderer(default=str),
        ],
    )


def _console_formatter(shared: list[Processor], colors: bool) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.dev.ConsoleRenderer(colors=colors),
        ],
    )


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def configure(
    *,
    log_file: Path | str | None = "logs/trading.jsonl",
    level: str = "INFO",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    json_console: bool | None = None,
    console: bool = True,
) -> None:
    """Send every log event as JSON to ``log_file`` and to ``stream`` (default stdout).

    ``console=False`` logs to ``log_file`` only (a backtest keeps the terminal for its
    progress bar and summary).

    ``level`` is DEBUG, INFO, WARNING, ERROR or CRITICAL. ``secrets`` are registered with
    :func:`add_secret` (they stay registered). The console gets JSON unless it is a terminal;
    ``json_console`` forces the choice. ``log_file=None`` logs to the stream only.
    Calling again replaces the previous configuration (handlers are closed).
    """
    name = str(level).strip().upper()
    if name not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    for value in secrets:
        add_secret(value)

    out = stream if stream is not None else sys.stdout
    as_json = json_console if json_console is not None else not _is_tty(out)
    shared = _shared_processors()

    handlers: list[logging.Handler] = []
    if log_file is not None:
        path = Path(log_file)
        private_dir(path.parent)
        private_file(path)  # owner-only: the log holds account figures
        # WatchedFileHandler reopens the file after logrotate moves it; it flushes per record.
        file_handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
        file_handler.setFormatter(_json_formatter(shared))
        handlers.append(file_handler)
    if console or log_file is None:
        handler = logging.StreamHandler(out)
        handler.setFormatter(
            _json_formatter(shared) if as_json else _console_formatter(shared, _is_tty(out))
        )
        handlers.append(handler)

    global _root_level_before
    root = logging.getLogger()
    with _lock:
        if _root_level_before is None:
            _root_level_before = root.level
        for old in _handlers:
            root.removeHandler(old)
            old.close()
        _handlers[:] = handlers
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(getattr(logging, name))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
        # False so that a later configure() (tests, a changed level) reaches every logger.
        cache_logger_on_first_use=False,
    )


def shutdown() -> None:
    """Flush and detach the handlers :func:`configure` installed; structlog back to defaults."""
    global _root_level_before
    root = logging.getLogger()
    with _lock:
        for handler in _handlers:
            root.removeHandler(handler)
            handler.close()
        _handlers.clear()
        if _root_level_before is not None:
            root.setLevel(_root_level_before)
            _root_level_before = None
    structlog.reset_defaults()
