"""Alerts that reach a human when it matters, and never get in the way of trading.

Levels and where they go (``[alerts]`` in the config):

==========  =======  =======  =============  ===========
level       console  webhook  email (SMTP)   SMS gateway
==========  =======  =======  =============  ===========
INFO        yes      yes      no (*)         no
WARNING     yes      yes      no (*)         no
CRITICAL    yes      yes      yes            no
EMERGENCY   yes      yes      yes            yes
==========  =======  =======  =============  ===========

(*) ``email_min_level`` (default ``critical``) moves the e-mail floor, e.g. to ``info`` for
a mail per fill. The trader's alerts (position loss, fills, rate limit, stale data, the broker
or stream unreachable, emergency exit outcome, daily summary) are raised by
:mod:`engine.alert_rules`.

* console: when ``console`` is on, one line per alert on the given stream, coloured when the
  stream is a terminal;
* webhook: a JSON POST to ``webhook_url`` that Slack (``text``, ``blocks``) and Discord
  (``content``, ``embeds``) both accept, with the structured fields and plain ``level``,
  ``title``, ``message``, ``fields``, ``timestamp`` keys for anything else;
* email: when ``email_enabled``, over SMTP to ``smtp_host:smtp_port`` from ``email_from`` to
  ``email_to``, with STARTTLS when ``smtp_starttls`` and a login with ``smtp_user`` and
  ``smtp_password`` (env ``SMTP_PASSWORD``); sent from a worker thread;
* SMS: a JSON POST ``{"to": sms_to, "message": ...}`` to ``sms_endpoint``, EMERGENCY only.

Guarantees: :meth:`Alerter.send` never raises and each channel runs under a timeout
(``channel_timeout``, all channels at once), so an alert cannot stall the trading loop for
long. The daemon goes further (:meth:`Alerter.deliver_in_background`, switched on by the
trading loop): ``send`` then writes the console line, the log line and the journal row at
once and hands the remote channels (webhook, e-mail, SMS) to a background sender task, most
urgent first, so that safety actions (emergency exits, liquidation orders) never wait on a
slow SMTP server or webhook. The sender logs ``alert_delivered`` or ``alert_delivery_failed``
per alert; :meth:`Alerter.drain` gives pending deliveries a bounded time at shutdown and
logs ``alert_delivery_abandoned`` for what is left. E-mail is sent from a daemon thread, so a
stalled SMTP server cannot hold up the process's exit either. A failed delivery is logged as ``alert_delivery_failed`` (channel and a reason free of
secrets) and nothing else happens. The same ``key`` (default: level and title) is delivered
at most once per ``throttle_seconds`` of the injected clock; repeats are counted and the next
delivery says ``(suppressed N repeats)``, so a flapping condition cannot spam
(:meth:`Alerter.flush` delivers pending summaries). Every alert is logged as ``alert``
(``alert_level``, ``title``, ``channels``) and recorded in the journal when one is attached.
Registered secrets (API keys, the SMTP password, the webhook URL and its token, the SMS
endpoint's token) are replaced by ``***`` in titles, messages and fields before anything is
sent or logged.

The triggers the daemon raises (helpers below build the message for each):

==========================================  =========  ===================================
condition                                   level      helper
==========================================  =========  ===================================
circuit breaker tripped                     EMERGENCY  :meth:`Alerter.circuit_breaker_tripped`
emergency liquidation                       EMERGENCY  :meth:`Alerter.emergency_liquidation`
emergency stop failed                       EMERGENCY  :meth:`Alerter.emergency_stop_failed`
daily drawdown limit reached                CRITICAL   :meth:`Alerter.daily_drawdown_limit`
unprotected positions at start-up           CRITICAL   :meth:`Alerter.startup_unprotected`
broker unreachable during the session       CRITICAL   :meth:`Alerter.broker_unreachable`
PDT block                                   WARNING    :meth:`Alerter.pdt_blocked`
risk exit that may flag the account as PDT  CRITICAL   :meth:`Alerter.account_may_be_flagged`
gap risk MODERATE / HIGH / EXTREME          INFO / WARNING / CRITICAL  :meth:`Alerter.gap_risk`
trading state changed                       WARNING    :meth:`Alerter.trading_state_changed`
reconciliation discrepancies                WARNING    :meth:`Alerter.reconciliation_discrepancies`
==========================================  =========  ===================================
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import json
import smtplib
import ssl
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Protocol, TextIO
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import structlog

from core.clock import Clock

log = structlog.get_logger(__name__)

MASK = "***"
DEFAULT_CHANNEL_TIMEOUT = 10.0
#: Wall seconds :meth:`Alerter.drain` (shutdown) waits for queued deliveries by default.
DEFAULT_FLUSH_SECONDS = 3.0
#: Queued deliveries beyond this are dropped (logged), EMERGENCY ones excepted.
MAX_QUEUED_ALERTS = 200
QUEUED = "queued"
SMS_MAX_CHARS = 320
DISCORD_MAX_CHARS = 2000
_MIN_SUBSTRING_SECRET = 4
_SECRET_FIELD_WORDS = ("password", "secret", "token", "api_key", "apikey", "authorization")


class AlertLevel(str, enum.Enum):
    """How urgent an alert is; decides the channels (see the module docstring)."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"
    EMERGENCY = "emergency"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    @property
    def log_method(self) -> str:
        return {"info": "info", "warning": "warning", "critical": "error", "emergency": "critical"}[self.value]


_RANKS = {AlertLevel.INFO: 0, AlertLevel.WARNING: 1, AlertLevel.CRITICAL: 2, AlertLevel.EMERGENCY: 3}
_COLOURS = {
    AlertLevel.INFO: "\033[36m",
    AlertLevel.WARNING: "\033[33m",
    AlertLevel.CRITICAL: "\033[1;31m",
    AlertLevel.EMERGENCY: "\033[1;97;41m",
}
_RESET = "\033[0m"
_DISCORD_COLOURS = {
    AlertLevel.INFO: 0x439FE0, AlertLevel.WARNING: 0xFFA500,
    AlertLevel.CRITICAL: 0xFF0000, AlertLevel.EMERGENCY: 0x8B0000,
}


@dataclass
class AlertOutcome:
    """What happened to one :meth:`Alerter.send` call.

    ``channels`` maps each channel tried to ``"sent"`` or ``"failed: <reason>"``;
    ``throttled`` alerts were counted, not sent; ``suppressed_repeats`` is how many earlier
    repeats this delivery summarised.
    """

    level: AlertLevel
    title: str
    key: str
    throttled: bool = False
    suppressed_repeats: int = 0
    channels: dict[str, str] = field(default_factory=dict)

    @property
    def sent(self) -> list[str]:
        return [name for name, result in self.channels.items() if result == "sent"]

    @property
    def failed(self) -> list[str]:
        return [name for name, result in self.channels.items() if result not in ("sent", QUEUED)]

    @property
    def queued(self) -> list[str]:
        """Channels handed to the background sender (:meth:`Alerter.deliver_in_background`)."""
        return [name for name, result in self.channels.items() if result == QUEUED]

    @property
    def delivered(self) -> bool:
        """True when at least one channel took the alert."""
        return bool(self.sent)


class _AlertSettings(Protocol):
    console: bool
    email_enabled: bool
    smtp_host: str
    smtp_port: int
    smtp_starttls: bool
    smtp_user: str | None
    smtp_password: Any
    # allow_plaintext_auth: read with getattr (default False) so older settings objects work
    email_from: str | None
    email_to: list[str]
    webhook_url: str | None
    sms_endpoint: str | None
    sms_to: str | None
    throttle_seconds: float


class _JournalLike(Protocol):
    def record_alert(self, level: str, title: str, message: str, at: datetime) -> None: ...


class SmtpClient(Protocol):
    """The part of :class:`smtplib.SMTP` the alerter uses (for a test double)."""

    def ehlo(self, name: str = ...) -> Any: ...
    def starttls(self, *, context: ssl.SSLContext | None = ...) -> Any: ...
    def login(self, user: str, password: str) -> Any: ...
    def send_message(self, msg: EmailMessage) -> Any: ...
    def quit(self) -> Any: ...
    def close(self) -> None: ...


SmtpFactory = Callable[[str, int, float], SmtpClient]


def _default_smtp_factory(host: str, port: int, timeout: float) -> SmtpClient:
    return smtplib.SMTP(host, port, timeout=timeout)


@dataclass
class _Delivery:
    """One alert's remote channels, waiting for the background sender."""

    level: AlertLevel
    title: str
    key: str
    channels: list[str]
    start: dict[str, Callable[[], Any]]


@dataclass
class _Throttle:
    last_sent: datetime
    level: AlertLevel
    title: str
    message: str = ""
    fields: dict[str, Any] | None = None
    suppressed: int = 0


def _secret_value(value: Any) -> str | None:
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    text = getter() if callable(getter) else value
    return str(text) if text else None


def _url_secrets(url: str | None) -> list[str]:
    """The URL itself and the parts of it that look like tokens (long path parts, query values)."""
    if not url:
        return []
    found = [url]
    parts = urlsplit(url)
    found += [part for part in parts.path.split("/") if len(part) >= 16]
    found += [value for _key, value in parse_qsl(parts.query) if len(value) >= 8]
    if parts.password:
        found.append(parts.password)
    return found


def _plain(value: Any) -> Any:
    """JSON-friendly copy: Decimal and dates as strings, enums by value, containers walked."""
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return _plain(to_dict())
    return str(value)


def _field_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


class Alerter:
    """Delivers alerts to the configured channels with throttling and secret scrubbing."""

    def __init__(
        self,
        settings: _AlertSettings,
        clock: Clock,
        *,
        secrets: Iterable[str | None] = (),
        http_session: aiohttp.ClientSession | None = None,
        smtp_factory: SmtpFactory | None = None,
        stream: TextIO | None = None,
        channel_timeout: float = DEFAULT_CHANNEL_TIMEOUT,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._session = http_session
        self._owns_session = http_session is None
        self._smtp_factory = smtp_factory or _default_smtp_factory
        self._stream = stream
        self._timeout = float(channel_timeout)
        self._journal: _JournalLike | None = None
        self._throttles: dict[str, _Throttle] = {}
        self._secrets: set[str] = set()
        self._password = _secret_value(settings.smtp_password)
        self._background = False
        self._queue: asyncio.PriorityQueue[tuple[int, int, _Delivery]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._order = itertools.count()
        self._in_flight: _Delivery | None = None
        for value in [*secrets, self._password, *_url_secrets(settings.webhook_url),
                      *_url_secrets(settings.sms_endpoint)[1:]]:
            self.add_secret(value)

    # -- configuration -------------------------------------------------------------------

    def add_secret(self, value: str | None) -> None:
        """Never let ``value`` appear in an alert or in an alert's log line."""
        text = _secret_value(value)
        if text:
            self._secrets.add(text)

    def attach_journal(self, journal: _JournalLike) -> None:
        """Record every delivered alert in ``journal`` from now on."""
        self._journal = journal

    def channels_for(self, level: AlertLevel) -> list[str]:
        """The channels an alert of ``level`` goes to with the current settings."""
        s = self._settings
        names: list[str] = []
        if s.console:
            names.append("console")
        if s.webhook_url:
            names.append("webhook")
        if s.email_enabled and level.rank >= _email_floor(s).rank:
            names.append("email")
        if s.sms_endpoint and s.sms_to and level is AlertLevel.EMERGENCY:
            names.append("sms")
        return names

    def deliver_in_background(self, enabled: bool = True) -> None:
        """From now on :meth:`send` does not wait for remote channels (see the module docstring)."""
        self._background = enabled

    @property
    def background(self) -> bool:
        return self._background

    @property
    def pending(self) -> int:
        """Alerts queued or being delivered by the background sender."""
        queued = self._queue.qsize() if self._queue is not None else 0
        return queued + (1 if self._in_flight is not None else 0)

    async def drain(self, timeout: float = DEFAULT_FLUSH_SECONDS) -> int:
        """Give queued deliveries up to ``timeout`` wall seconds; return how many were left.

        What is left is abandoned (``alert_delivery_abandoned`` names each title): a shutdown
        never waits longer than ``timeout`` on messaging.
        """
        queue, worker = self._queue, self._worker
        if queue is None or worker is None or worker.done():
            return 0
        try:
            await asyncio.wait_for(queue.join(), timeout=max(float(timeout), 0.0))
        except asyncio.TimeoutError:
            pass
        except asyncio.CancelledError:  # a stop that could not wait: say what is lost, then go
            left = self._abandon() if self.pending else 0
            if left:
                log.warning("alert_delivery_abandoned", pending=left, timeout_seconds=float(timeout),
                            cancelled=True)
            raise
        left = self._abandon() if self.pending else 0
        if left:
            log.warning("alert_delivery_abandoned", pending=left, timeout_seconds=float(timeout))
        return left

    def _abandon(self) -> int:
        """Stop the sender and forget what it still had (logged), counting it."""
        titles = [self._in_flight.title] if self._in_flight is not None else []
        if self._queue is not None:
            while not self._queue.empty():
                titles.append(self._queue.get_nowait()[2].title)
        if titles:
            log.warning("alert_delivery_abandoned_titles", titles=titles)
        if self._worker is not None:
            self._worker.cancel()
        self._worker, self._queue, self._in_flight = None, None, None
        return len(titles)

    async def aclose(self, flush_timeout: float = DEFAULT_FLUSH_SECONDS) -> None:
        """Flush queued deliveries (bounded), stop the sender, close the HTTP session the
        alerter opened (a session passed in is left open)."""
        await self.drain(flush_timeout)
        self._abandon()
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None if self._owns_session else self._session

    # -- sending -------------------------------------------------------------------------

    async def send(
        self,
        level: AlertLevel | str,
        title: str,
        message: str,
        *,
        key: str | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> AlertOutcome:
        """Deliver an alert (or count it, when throttled). Never raises.

        An unknown ``level`` is treated as CRITICAL (better too loud than silent) and logged.
        """
        alert_level = self._level(level)
        outcome = AlertOutcome(alert_level, str(title), key or f"{alert_level.value}:{title}")
        try:
            await self._send(outcome, str(message), fields)
        except Exception as exc:  # an alert must never take the trading loop down
            log.error("alert_failed", title=self.scrub(str(title)), error=type(exc).__name__,
                      reason=self.scrub(str(exc)))
        return outcome

    async def flush(self) -> list[AlertOutcome]:
        """Deliver the summary of every throttled key whose quiet period is over."""
        now = self._clock.now()
        outcomes: list[AlertOutcome] = []
        for key, state in list(self._throttles.items()):
            if state.suppressed and self._elapsed(state, now):
                outcomes.append(
                    await self.send(state.level, state.title, state.message, key=key, fields=state.fields)
                )
        return outcomes

    def pending_repeats(self, key: str) -> int:
        """How many repeats of ``key`` are waiting to be summarised."""
        state = self._throttles.get(key)
        return state.suppressed if state else 0

    def _level(self, level: AlertLevel | str) -> AlertLevel:
        if isinstance(level, AlertLevel):
            return level
        try:
            return AlertLevel(str(level).lower())
        except ValueError:
            log.error("alert_invalid_level", given=self.scrub(str(level)), used="critical")
            return AlertLevel.CRITICAL

    def _elapsed(self, state: _Throttle, now: datetime) -> bool:
        return (now - state.last_sent).total_seconds() >= float(self._settings.throttle_seconds)

    async def _send(self, outcome: AlertOutcome, message: str, fields: Mapping[str, Any] | None) -> None:
        now = self._clock.now()
        title = self.scrub(outcome.title)
        outcome.title = title
        body = self.scrub(message)
        data = self._scrub_fields(_plain(dict(fields or {})))
        state = self._throttles.get(outcome.key)
        if state is not None and not self._elapsed(state, now):
            state.suppressed += 1
            state.message, state.fields = body, data
            outcome.throttled = True
            log.debug("alert", alert_level=outcome.level.value, title=title, key=outcome.key,
                      channels=[], throttled=True, pending_repeats=state.suppressed)
            return
        repeats = state.suppressed if state is not None else 0
        if repeats:
            body = f"{body}\n(suppressed {repeats} repeats)" if body else f"(suppressed {repeats} repeats)"
        outcome.suppressed_repeats = repeats
        self._throttles[outcome.key] = _Throttle(now, outcome.level, title, body, data)

        channels = self.channels_for(outcome.level)
        tasks = {
            "webhook": lambda: self._webhook(outcome.level, title, body, data, now),
            "email": lambda: self._email(outcome.level, title, body, data, now),
            "sms": lambda: self._sms(outcome.level, title, body),
        }
        if "console" in channels:
            outcome.channels["console"] = self._console(outcome.level, title, body, data, now)
        remote = [name for name in channels if name != "console"]
        if self._background and remote:
            self._enqueue(_Delivery(outcome.level, title, outcome.key, remote,
                                    {name: tasks[name] for name in remote}))
            outcome.channels.update({name: QUEUED for name in remote})
        else:
            results = await asyncio.gather(*(self._deliver(name, tasks[name]) for name in remote))
            outcome.channels.update(zip(remote, results))
        for name, result in outcome.channels.items():
            if result not in ("sent", QUEUED):
                log.warning("alert_delivery_failed", channel=name, reason=result.removeprefix("failed: "),
                            alert_level=outcome.level.value, title=title)
        getattr(log, outcome.level.log_method)(
            "alert", alert_level=outcome.level.value, title=title, message=body, key=outcome.key,
            channels=channels, sent=outcome.sent, failed=outcome.failed, queued=outcome.queued,
            suppressed_repeats=repeats,
        )
        if self._journal is not None:
            try:
                self._journal.record_alert(outcome.level.value, title, body, now)
            except Exception as exc:
                log.error("alert_journal_failed", error=type(exc).__name__, reason=self.scrub(str(exc)))

    def _enqueue(self, job: _Delivery) -> None:
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.PriorityQueue()
            self._worker = asyncio.get_running_loop().create_task(self._send_queued(self._queue),
                                                                  name="alert-sender")
        if self._queue.qsize() >= MAX_QUEUED_ALERTS and job.level is not AlertLevel.EMERGENCY:
            log.warning("alert_dropped", title=job.title, alert_level=job.level.value, queued=self._queue.qsize())
            return
        self._queue.put_nowait((-job.level.rank, next(self._order), job))

    async def _send_queued(self, queue: asyncio.PriorityQueue[tuple[int, int, _Delivery]]) -> None:
        """The background sender: one alert at a time, most urgent first, each channel bounded."""
        while True:
            job = (await queue.get())[2]
            self._in_flight = job
            try:
                results = await asyncio.gather(*(self._deliver(name, job.start[name]) for name in job.channels))
                for name, result in zip(job.channels, results):
                    if result != "sent":
                        log.warning("alert_delivery_failed", channel=name, reason=result.removeprefix("failed: "),
                                    alert_level=job.level.value, title=job.title)
                log.info("alert_delivered", title=job.title, key=job.key, alert_level=job.level.value,
                         sent=[n for n, r in zip(job.channels, results) if r == "sent"],
                         failed=[n for n, r in zip(job.channels, results) if r != "sent"])
            except Exception as exc:  # the sender must outlive any one alert
                log.error("alert_failed", title=job.title, error=type(exc).__name__, reason=self.scrub(str(exc)))
            finally:
                self._in_flight = None
                queue.task_done()

    async def _deliver(self, name: str, start: Callable[[], Any]) -> str:
        try:
            await asyncio.wait_for(start(), timeout=self._timeout)
        except asyncio.TimeoutError:
            return f"failed: timed out after {self._timeout:g}s"
        except Exception as exc:
            detail = self.scrub(str(exc)).strip()
            return f"failed: {type(exc).__name__}" + (f": {detail}" if detail else "")
        return "sent"

    # -- channels ------------------------------------------------------------------------

    def _console(self, level: AlertLevel, title: str, body: str, data: dict[str, Any], now: datetime) -> str:
        stream = self._stream if self._stream is not None else sys.stderr
        stamp = now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        head = f"[{level.value.upper()}] {title}"
        try:
            if stream.isatty():
                head = f"{_COLOURS[level]}{head}{_RESET}"
            lines = [f"{stamp} {head}"]
            lines += [f"    {line}" for line in body.splitlines()]
            lines += [f"    {name}: {_field_text(value)}" for name, value in data.items()]
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        except Exception as exc:
            return f"failed: {type(exc).__name__}"
        return "sent"

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
            self._owns_session = True
        return self._session

    async def _post(self, url: str, payload: dict[str, Any]) -> None:
        async with self._http().post(
            url, json=payload, timeout=aiohttp.ClientTimeout(total=self._timeout)
        ) as response:
            if response.status >= 300:
                raise _DeliveryRefused(f"HTTP {response.status}")

    async def _webhook(
        self, level: AlertLevel, title: str, body: str, data: dict[str, Any], now: datetime
    ) -> None:
        url = self._settings.webhook_url
        assert url is not None
        text = f"[{level.value.upper()}] {title}\n{body}".strip()
        field_items = [(name, _field_text(value)) for name, value in data.items()]
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {
                "type": "mrkdwn", "text": (f"*[{level.value.upper()}] {title}*\n{body}").strip()[:3000]}},
        ]
        for start in range(0, min(len(field_items), 50), 10):  # Slack: 10 fields per section
            blocks.append({"type": "section", "fields": [
                {"type": "mrkdwn", "text": f"*{n}*\n{v}"[:2000]} for n, v in field_items[start:start + 10]
            ]})
        payload = {
            "text": text,  # Slack (and the notification fallback of its blocks)
            "blocks": blocks,  # Slack Block Kit; Discord ignores it
            "content": text[:DISCORD_MAX_CHARS],  # Discord; Slack ignores it
            "embeds": [{
                "title": title[:256], "description": body[:4096], "color": _DISCORD_COLOURS[level],
                "timestamp": now.astimezone(timezone.utc).isoformat(),
                "fields": [{"name": n[:256], "value": (v or "-")[:1024], "inline": len(v) < 40}
                           for n, v in field_items[:25]],
            }],
            "level": level.value,
            "title": title,
            "message": body,
            "fields": data,
            "timestamp": now.astimezone(timezone.utc).isoformat(),
        }
        await self._post(url, payload)

    async def _sms(self, level: AlertLevel, title: str, body: str) -> None:
        s = self._settings
        assert s.sms_endpoint is not None
        text = f"[{level.value.upper()}] {title}: {body}".replace("\n", " ")
        if len(text) > SMS_MAX_CHARS:
            text = text[: SMS_MAX_CHARS - 3] + "..."
        await self._post(s.sms_endpoint, {"to": s.sms_to, "message": text})

    async def _email(
        self, level: AlertLevel, title: str, body: str, data: dict[str, Any], now: datetime
    ) -> None:
        s = self._settings
        if not s.email_from or not s.email_to:
            raise _DeliveryRefused("email_from and email_to must be configured")
        if self._plaintext_login():
            raise _DeliveryRefused(PLAINTEXT_AUTH_REFUSED)
        msg = EmailMessage()
        msg["Subject"] = f"[{level.value.upper()}] {title}"
        msg["From"] = s.email_from
        msg["To"] = ", ".join(s.email_to)
        msg["Date"] = format_datetime(now.astimezone(timezone.utc))
        msg["Message-ID"] = make_msgid(domain="trading-daemon.local")
        lines = [body, ""] if body else []
        lines += [f"{name}: {_field_text(value)}" for name, value in data.items()]
        lines += ["", f"Level {level.value.upper()} at {now.astimezone(timezone.utc).isoformat()} (UTC)."]
        msg.set_content("\n".join(lines).strip() + "\n")
        await _in_daemon_thread(self._smtp_send, msg)

    def _plaintext_login(self) -> bool:
        """Whether sending would log in without TLS and the config does not allow it."""
        s = self._settings
        return bool(s.smtp_user and self._password and not s.smtp_starttls
                    and not getattr(s, "allow_plaintext_auth", False))

    def _smtp_send(self, msg: EmailMessage) -> None:
        s = self._settings
        if self._plaintext_login():  # checked again where the password would leave
            raise _DeliveryRefused(PLAINTEXT_AUTH_REFUSED)
        smtp = self._smtp_factory(s.smtp_host, s.smtp_port, self._timeout)
        try:
            smtp.ehlo()
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if s.smtp_user and self._password:
                smtp.login(s.smtp_user, self._password)
            smtp.send_message(msg)
        finally:
            try:
                smtp.quit()
            except Exception:
                smtp.close()

    # -- scrubbing -----------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """``text`` with every registered secret replaced by ``***``."""
        if text in self._secrets:
            return MASK
        for secret in sorted(self._secrets, key=len, reverse=True):
            if len(secret) >= _MIN_SUBSTRING_SECRET:
                text = text.replace(secret, MASK)
        return text

    def _scrub_fields(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {
                self.scrub(k): (MASK if any(w in k.lower() for w in _SECRET_FIELD_WORDS) and v is not None
                                else self._scrub_fields(v))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self._scrub_fields(v) for v in value]
        return value

    # -- the daemon's triggers -----------------------------------------------------------

    async def circuit_breaker_tripped(
        self, *, loss: Decimal | float, equity: Decimal, baseline: Decimal, reason: str = ""
    ) -> AlertOutcome:
        """EMERGENCY: the breaker latched; every order is being canceled and positions closed."""
        return await self.send(
            AlertLevel.EMERGENCY, "CIRCUIT BREAKER TRIPPED",
            f"Equity {equity} is {_pct(loss)} below the session baseline {baseline}. Trading is "
            "latched: open orders are canceled and every position is being closed. Only "
            "`python main.py rearm --reason ...` re-arms it." + (f" {reason}" if reason else ""),
            key="circuit_breaker",
            fields={"loss": _pct(loss), "equity": equity, "baseline": baseline},
        )

    async def emergency_liquidation(self, *, reason: str, symbols: Sequence[str]) -> AlertOutcome:
        """EMERGENCY: every position is being closed."""
        return await self.send(
            AlertLevel.EMERGENCY, "EMERGENCY LIQUIDATION",
            f"Closing every position ({', '.join(symbols) or 'none held'}): {reason}",
            key="emergency_liquidation", fields={"symbols": list(symbols), "reason": reason},
        )

    async def emergency_stop_failed(
        self, *, symbol: str, reason: str, attempts: int | None = None
    ) -> AlertOutcome:
        """EMERGENCY: a position could not be closed; a human must act."""
        return await self.send(
            AlertLevel.EMERGENCY, f"EMERGENCY STOP FAILED: {symbol}",
            f"Could not flatten {symbol}" + (f" after {attempts} attempts" if attempts else "")
            + f": {reason}. Close it by hand.",
            key=f"emergency_stop_failed:{symbol}",
            fields={"symbol": symbol, "reason": reason, "attempts": attempts},
        )

    async def daily_drawdown_limit(
        self, *, drawdown: Decimal | float, limit: Decimal | float, equity: Decimal
    ) -> AlertOutcome:
        """CRITICAL: the daily loss limit was reached; no new entries this session."""
        return await self.send(
            AlertLevel.CRITICAL, "Daily drawdown limit reached",
            f"Down {_pct(drawdown)} today (limit {_pct(limit)}), equity {equity}. "
            "No new entries for the rest of the session; exits continue.",
            key="daily_drawdown", fields={"drawdown": _pct(drawdown), "limit": _pct(limit), "equity": equity},
        )

    async def startup_unprotected(self, positions: Sequence[Any]) -> AlertOutcome | None:
        """CRITICAL, the STARTUP ALERT: positions found without a full protective stop.

        ``positions``: :class:`broker.models.Position` objects or mappings with ``symbol``, ``qty``,
        ``unrealized_pl`` and ``market_value``. None when the list is empty.
        """
        if not positions:
            return None
        rows = [_position_row(p) for p in positions]
        lines = [f"{r['symbol']}: qty {r['qty']}, P&L {r['unrealized_pl']}, value {r['market_value']}" for r in rows]
        return await self.send(
            AlertLevel.CRITICAL, "STARTUP ALERT: unprotected positions",
            f"{len(rows)} position(s) had no protective stop for their full quantity at start-up:\n"
            + "\n".join(lines),
            key="startup_unprotected", fields={"positions": rows},
        )

    async def broker_unreachable(self, *, error: str, since: datetime | None = None) -> AlertOutcome:
        """CRITICAL: the broker cannot be reached during the session."""
        return await self.send(
            AlertLevel.CRITICAL, "Broker unreachable during the session",
            f"{error}. Protective orders at the broker remain the safety net; the daemon keeps "
            "retrying and catches up when the connection returns.",
            key="broker_unreachable", fields={"since": since} if since else None,
        )

    async def pdt_blocked(self, *, symbol: str, reason: str) -> AlertOutcome:
        """WARNING: an order was blocked by day-trading rules."""
        return await self.send(
            AlertLevel.WARNING, f"Day trade blocked: {symbol}", reason,
            key=f"pdt_blocked:{symbol}", fields={"symbol": symbol},
        )

    async def account_may_be_flagged(self, *, symbol: str, reason: str) -> AlertOutcome:
        """CRITICAL: a risk exit went through although it may flag the account as PDT."""
        return await self.send(
            AlertLevel.CRITICAL, f"Account may be flagged as pattern day trader: {symbol}",
            f"A risk exit of {symbol} was sent although it is a day trade beyond the limit: {reason}",
            key=f"pdt_flag:{symbol}", fields={"symbol": symbol},
        )

    async def gap_risk(
        self,
        *,
        level: Any,
        gap_pct: Decimal | float,
        dollar_impact: Decimal | float,
        symbol: str | None = None,
    ) -> AlertOutcome | None:
        """MODERATE -> INFO, HIGH -> WARNING, EXTREME -> CRITICAL; LOW -> no alert (None)."""
        name = str(getattr(level, "value", level)).lower()
        alert_level = {"moderate": AlertLevel.INFO, "high": AlertLevel.WARNING,
                       "extreme": AlertLevel.CRITICAL}.get(name)
        if alert_level is None:
            return None
        subject = symbol or "portfolio"
        return await self.send(
            alert_level, f"Gap risk {name.upper()}: {subject}",
            f"{subject} gapped {_pct(gap_pct, signed=True)}, impact {dollar_impact}.",
            key=f"gap_risk:{subject}:{name}",
            fields={"symbol": subject, "gap": _pct(gap_pct, signed=True), "dollar_impact": dollar_impact},
        )

    async def trading_state_changed(self, *, from_state: Any, to_state: Any, reason: str) -> AlertOutcome:
        """WARNING: the trading state machine moved (e.g. ACTIVE -> REDUCING)."""
        old, new = (str(getattr(s, "value", s)) for s in (from_state, to_state))
        return await self.send(
            AlertLevel.WARNING, f"Trading state {old.upper()} -> {new.upper()}", reason,
            key=f"trading_state:{new}", fields={"from": old, "to": new},
        )

    async def reconciliation_discrepancies(self, report: Any) -> AlertOutcome | None:
        """WARNING when a reconciliation flagged something (None when all agreed)."""
        found = list(getattr(report, "discrepancies", []) or [])
        if not found:
            return None
        lines = []
        for item in found[:20]:
            kind = item.get("kind", "?")
            what = item.get("client_order_id") or item.get("symbol") or ""
            lines.append(f"{kind}: {what}")
        return await self.send(
            AlertLevel.WARNING, "Reconciliation found discrepancies",
            f"{len(found)} difference(s) between the journal and the broker (the broker wins):\n"
            + "\n".join(lines),
            key="reconciliation", fields={"discrepancies": found},
        )


async def _in_daemon_thread(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a daemon thread, awaited. Unlike ``asyncio.to_thread`` (the
    default executor, which the interpreter joins at exit), a thread stuck on a stalled SMTP
    server can neither delay shutdown nor outlive its timeout in anyone's wait."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = function(*args), None
        except BaseException as exc:  # handed to the awaiting coroutine
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass

    threading.Thread(target=run, name="alert-smtp", daemon=True).start()
    return await future

PLAINTEXT_AUTH_REFUSED = (
    "refusing to send the SMTP password without TLS (alerts.smtp_starttls is false); enable "
    "smtp_starttls, or set alerts.allow_plaintext_auth = true for a relay you trust"
)


class _DeliveryRefused(Exception):
    """A channel answered but did not take the alert (HTTP status, missing settings)."""


def _email_floor(settings: Any) -> AlertLevel:
    """The lowest level e-mailed (``email_min_level``; CRITICAL for settings without it)."""
    try:
        return AlertLevel(str(getattr(settings, "email_min_level", "critical")).lower())
    except ValueError:
        return AlertLevel.CRITICAL


def _pct(value: Decimal | float, *, signed: bool = False) -> str:
    number = float(value) * 100
    return f"{number:+.2f}%" if signed else f"{number:.2f}%"


def _position_row(position: Any) -> dict[str, Any]:
    get = position.get if isinstance(position, Mapping) else lambda name, default=None: getattr(position, name, default)
    return {
        "symbol": get("symbol"),
        "qty": _plain(get("qty")),
        "unrealized_pl": _plain(get("unrealized_pl")),
        "market_value": _plain(get("market_value")),
    }
