"""The ``diagnose`` checks that look at the daemon's own ground: its configuration, its clock
against the broker's, its rate budget, its state database and its alert channels.

Each returns ``(name, verdict, detail)`` with a verdict of PASS, WARN or FAIL, and checks
something real (no line is PASS by construction):

* ``configuration``: every field and cross-field rule run again over the settings in effect
  (:func:`config.revalidate`), and the directories of the state DB and log file writable;
* ``clock skew``: the broker's clock against the daemon's, half the round trip allowed for;
  FAIL past :data:`SKEW_FAIL_SECONDS` only when the daemon runs on the host's wall clock (it
  would time the market wrong); a clock that follows the broker only warns;
* ``rate budget``: the client's token bucket, a 429 cooldown, and what the broker's
  ``X-RateLimit-Remaining`` said is left;
* ``state db``: SQLite's ``PRAGMA integrity_check`` on the journal, opened read-only;
* ``alert channels``: each configured remote channel is contacted without sending an alert
  (webhook and SMS: a TCP, and for https a TLS, connection to the host; e-mail: the SMTP
  greeting, EHLO and STARTTLS when configured, then QUIT, no login).
"""

from __future__ import annotations

import asyncio
import os
import smtplib
import sqlite3
import ssl
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Literal
from urllib.parse import urlsplit

Verdict = Literal["PASS", "WARN", "FAIL"]
CheckResult = tuple[str, Verdict, str]

SKEW_WARN_SECONDS = 2.0
SKEW_FAIL_SECONDS = 30.0
CHANNEL_TIMEOUT_SECONDS = 5.0
#: Below this share of the per-minute budget left at the broker, the rate check warns.
RATE_WARN_FRACTION = 0.10


def check_configuration(settings: Any) -> CheckResult:
    """The settings in effect validated again, and the paths the daemon writes writable."""
    from config import revalidate

    problems = list(revalidate(settings))
    for label, target in (("state db", settings.storage.state_db), ("log file", settings.storage.log_file)):
        problem = _unwritable_parent(Path(target))
        if problem:
            problems.append(f"{label} {target}: {problem}")
    if problems:
        return "configuration", "FAIL", "; ".join(problems)
    return ("configuration", "PASS",
            f"{settings.mode} mode, profile {settings.profile}: every field and cross-field rule holds; "
            f"position {settings.trading.max_position_size:.0%}, stop {settings.trading.stop_loss:.0%}, "
            f"breaker {settings.risk.circuit_breaker_loss:.0%}; state db and log directories writable")


def _unwritable_parent(path: Path) -> str | None:
    """Why the daemon could not create ``path`` (None when it could)."""
    parent = path.parent if str(path.parent) else Path(".")
    existing = parent
    while not existing.exists():  # the daemon creates missing directories: look where it would
        if existing.parent == existing:
            return "no existing parent directory"
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if path.exists() and not os.access(path, os.W_OK):
        return "not writable"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"directory {existing} not writable"
    return None


async def check_clock_skew(broker: Any, clock: Any) -> CheckResult:
    """The broker's ``/v2/clock`` timestamp against the daemon's clock."""
    from core.clock import WallClock

    before = time.monotonic()
    market_clock = await broker.get_clock()
    round_trip = time.monotonic() - before
    ours = clock.now()
    skew = (market_clock.timestamp - ours).total_seconds()
    slack = round_trip / 2 + 1.0  # the broker stamps whole seconds somewhere inside the round trip
    wall = isinstance(clock, WallClock)
    detail = (f"broker {market_clock.timestamp.isoformat()} vs ours {ours.isoformat()}: "
              f"{skew:+.1f}s (round trip {round_trip * 1000:.0f} ms)")
    if abs(skew) <= max(SKEW_WARN_SECONDS, slack):
        return "clock skew", "PASS", detail
    if wall and abs(skew) > SKEW_FAIL_SECONDS:
        return "clock skew", "FAIL", detail + "; the host clock is wrong: sync it (NTP) before trading"
    return "clock skew", "WARN", detail + ("; sync the host clock (NTP)" if wall else
                                           "; the daemon follows the broker's clock")


def check_rate_budget(broker: Any, settings: Any) -> CheckResult:
    """The client's bucket, a cooldown after 429s, and the broker's stated budget left."""
    limiter = getattr(broker, "rate_limiter", None)
    if limiter is None:
        return "rate budget", "WARN", "the broker client has no rate limiter to inspect"
    limit = int(settings.rate_limit.max_requests_per_minute)
    tokens = float(limiter.tokens)
    cooling = float(limiter.cooldown_remaining)
    remaining = limiter.remaining() if hasattr(limiter, "remaining") else None
    used = getattr(broker, "request_count", None)
    parts = [f"client budget {limit}/min x {settings.rate_limit.rate_limit_buffer:g} buffer, "
             f"{tokens:.1f} tokens now (reserve {limiter.reserve:g} for emergencies)"]
    parts.append(f"broker says {remaining} left in its window" if remaining is not None
                 else "broker sent no X-RateLimit budget")
    if used is not None:
        parts.append(f"{used} requests made by this diagnostic")
    refused = int(getattr(limiter, "rate_limited_count", 0))
    detail = "; ".join(parts)
    if cooling > 0 or refused:
        return "rate budget", "FAIL", (
            f"{detail}; the broker refused {refused} request(s) for its rate limit (429)"
            + (f", cooling down {cooling:.0f}s" if cooling > 0 else "")
            + ": another client may share these keys, or max_requests_per_minute is above the broker's")
    if remaining is not None and remaining < RATE_WARN_FRACTION * limit:
        return "rate budget", "WARN", f"{detail}; nearly exhausted"
    if tokens <= limiter.reserve:
        return "rate budget", "WARN", f"{detail}; the client's own budget is down to its reserve"
    return "rate budget", "PASS", detail


def check_state_db(settings: Any) -> CheckResult:
    """``PRAGMA integrity_check`` on the state database, opened read-only."""
    db = Path(settings.storage.state_db)
    if not db.exists():
        return "state db", "PASS", f"no state db at {db} yet (first run creates it)"
    try:
        conn = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True, timeout=5)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return "state db", "FAIL", f"{db}: {type(exc).__name__}: {exc}"
    if rows != ["ok"]:
        return "state db", "FAIL", f"{db}: integrity check found {len(rows)} problem(s): {'; '.join(rows[:3])}"
    return "state db", "PASS", f"{db}: integrity ok, {tables} tables, user_version {version}"


async def check_alert_channels(settings: Any) -> CheckResult:
    """Contact each configured remote alert channel without sending anything."""
    alerts = settings.alerts
    probes: dict[str, Callable[[], Awaitable[str]]] = {}
    if alerts.webhook_url:
        probes["webhook"] = lambda: _probe_url(alerts.webhook_url)
    if alerts.sms_endpoint:
        probes["sms"] = lambda: _probe_url(alerts.sms_endpoint)
    if alerts.email_enabled:
        probes["email"] = lambda: asyncio.to_thread(_probe_smtp, alerts)
    results: list[str] = ["console " + ("on" if alerts.console else "off")]
    failed: list[str] = []
    for name, probe in probes.items():
        try:
            results.append(f"{name} {await asyncio.wait_for(probe(), CHANNEL_TIMEOUT_SECONDS)}")
        except Exception as exc:
            reason = "no answer" if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) else \
                f"{type(exc).__name__}: {exc}"
            failed.append(name)
            results.append(f"{name} UNREACHABLE ({reason})")
    detail = "; ".join(results)
    if failed:
        return "alert channels", "FAIL", detail
    if not probes:
        return "alert channels", "WARN", detail + "; no remote channel: nobody is told while away"
    return "alert channels", "PASS", detail


async def _probe_url(url: str) -> str:
    """A TCP (and for https a verified TLS) connection to the URL's host: no request sent."""
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    host = parts.hostname or ""
    _reader, writer = await asyncio.open_connection(
        host, port, ssl=ssl.create_default_context() if secure else None)
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, ssl.SSLError):
        pass
    return f"{host}:{port} reachable ({'TLS' if secure else 'TCP'})"


def _probe_smtp(alerts: Any) -> str:
    """Greeting, EHLO (and STARTTLS when configured), QUIT: the server answers, no login."""
    smtp = smtplib.SMTP(alerts.smtp_host, alerts.smtp_port, timeout=CHANNEL_TIMEOUT_SECONDS)
    try:
        smtp.ehlo()
        if alerts.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        code, _ = smtp.noop()
        if code != 250:
            raise smtplib.SMTPResponseException(code, b"NOOP refused")
    finally:
        try:
            smtp.quit()
        except smtplib.SMTPException:
            smtp.close()
    return f"{alerts.smtp_host}:{alerts.smtp_port} answers" + (" (STARTTLS)" if alerts.smtp_starttls else "")
