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

This module is the face; the parts live in :mod:`alerts`: the channel plug-in interface
(:class:`alerts.channel.AlertChannel`) and the built-in channels (:mod:`alerts.console`,
:mod:`alerts.http_channels`, :mod:`alerts.email_channel`), scrubbing
(:mod:`alerts.scrubbing`), the throttle (:mod:`alerts.throttle`), the background sender
(:mod:`alerts.background`) and the named triggers below (:mod:`alerts.triggers`).

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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TextIO

import aiohttp
import structlog

from alerts.background import DEFAULT_FLUSH_SECONDS, MAX_QUEUED_ALERTS, BackgroundSender, Delivery
from alerts.channel import AlertChannel, AlertSettings, DeliveryRefused
from alerts.console import ConsoleChannel
from alerts.email_channel import PLAINTEXT_AUTH_REFUSED, EmailChannel, SmtpClient, SmtpFactory
from alerts.http_channels import DISCORD_MAX_CHARS, SMS_MAX_CHARS, JsonPoster, SmsChannel, WebhookChannel
from alerts.scrubbing import MASK, Scrubber, secret_value, url_secrets
from alerts.throttle import Throttle
from alerts.triggers import AlertTriggers
from alerts.types import QUEUED, Alert, AlertLevel, AlertOutcome, plain
from core.clock import Clock

__all__ = [
    "DEFAULT_CHANNEL_TIMEOUT", "DEFAULT_FLUSH_SECONDS", "DISCORD_MAX_CHARS", "MASK", "MAX_QUEUED_ALERTS",
    "PLAINTEXT_AUTH_REFUSED", "QUEUED", "SMS_MAX_CHARS", "Alert", "AlertChannel", "AlertLevel",
    "AlertOutcome", "Alerter", "DeliveryRefused", "SmtpClient", "SmtpFactory",
]

log = structlog.get_logger(__name__)

DEFAULT_CHANNEL_TIMEOUT = 10.0


class _JournalLike(Protocol):
    def record_alert(self, level: str, title: str, message: str, at: datetime) -> None: ...


class Alerter(AlertTriggers):
    """Delivers alerts to the configured channels with throttling and secret scrubbing."""

    def __init__(
        self,
        settings: AlertSettings,
        clock: Clock,
        *,
        secrets: Iterable[str | None] = (),
        http_session: aiohttp.ClientSession | None = None,
        smtp_factory: SmtpFactory | None = None,
        stream: TextIO | None = None,
        channel_timeout: float = DEFAULT_CHANNEL_TIMEOUT,
        channels: Sequence[AlertChannel] = (),
    ) -> None:
        """``channels``: plug-in channels (:class:`alerts.channel.AlertChannel`) tried after
        the built-in console, webhook, e-mail and SMS channels."""
        self._settings = settings
        self._clock = clock
        self._timeout = float(channel_timeout)
        self._journal: _JournalLike | None = None
        self._scrubber = Scrubber()
        self._throttle = Throttle(settings)
        self._background = False
        self._sender = BackgroundSender(self._deliver, self.scrub)
        self._poster = JsonPoster(http_session, self._timeout)
        password = secret_value(settings.smtp_password)
        self._channels: list[AlertChannel] = [
            ConsoleChannel(settings, stream),
            WebhookChannel(settings, self._poster),
            EmailChannel(settings, password, smtp_factory, self._timeout),
            SmsChannel(settings, self._poster),
            *channels,
        ]
        for value in [*secrets, password, *url_secrets(settings.webhook_url),
                      *url_secrets(settings.sms_endpoint)[1:]]:
            self.add_secret(value)

    # -- configuration -------------------------------------------------------------------

    def add_secret(self, value: str | None) -> None:
        """Never let ``value`` appear in an alert or in an alert's log line."""
        self._scrubber.add(value)

    def attach_journal(self, journal: _JournalLike) -> None:
        """Record every delivered alert in ``journal`` from now on."""
        self._journal = journal

    def channels_for(self, level: AlertLevel) -> list[str]:
        """The channels an alert of ``level`` goes to with the current settings."""
        return [channel.name for channel in self._channels if channel.accepts(level)]

    def deliver_in_background(self, enabled: bool = True) -> None:
        """From now on :meth:`send` does not wait for remote channels (see the module docstring)."""
        self._background = enabled

    @property
    def background(self) -> bool:
        return self._background

    @property
    def pending(self) -> int:
        """Alerts queued or being delivered by the background sender."""
        return self._sender.pending

    async def drain(self, timeout: float = DEFAULT_FLUSH_SECONDS) -> int:
        """Give queued deliveries up to ``timeout`` wall seconds; return how many were left
        (abandoned and logged: a shutdown never waits longer than ``timeout`` on messaging)."""
        return await self._sender.drain(timeout)

    async def aclose(self, flush_timeout: float = DEFAULT_FLUSH_SECONDS) -> None:
        """Flush queued deliveries (bounded), stop the sender, close the HTTP session the
        alerter opened (a session passed in is left open)."""
        await self.drain(flush_timeout)
        self._sender.abandon()
        await self._poster.aclose()

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
        outcomes: list[AlertOutcome] = []
        for key, state in self._throttle.due(self._clock.now()):
            outcomes.append(await self.send(state.level, state.title, state.message, key=key, fields=state.fields))
        return outcomes

    def pending_repeats(self, key: str) -> int:
        """How many repeats of ``key`` are waiting to be summarised."""
        return self._throttle.pending(key)

    def _level(self, level: AlertLevel | str) -> AlertLevel:
        if isinstance(level, AlertLevel):
            return level
        try:
            return AlertLevel(str(level).lower())
        except ValueError:
            log.error("alert_invalid_level", given=self.scrub(str(level)), used="critical")
            return AlertLevel.CRITICAL

    async def _send(self, outcome: AlertOutcome, message: str, fields: Mapping[str, Any] | None) -> None:
        now = self._clock.now()
        title = self.scrub(outcome.title)
        outcome.title = title
        body = self.scrub(message)
        data = self._scrubber.scrub_fields(plain(dict(fields or {})))
        held = self._throttle.hold(outcome.key, now, body, data)
        if held is not None:
            outcome.throttled = True
            log.debug("alert", alert_level=outcome.level.value, title=title, key=outcome.key,
                      channels=[], throttled=True, pending_repeats=held)
            return
        body, repeats = self._throttle.admit(outcome.key, now, outcome.level, title, body, data)
        outcome.suppressed_repeats = repeats
        alert = Alert(outcome.level, title, body, data, now)
        chosen = [channel for channel in self._channels if channel.accepts(outcome.level)]
        for channel in chosen:
            if channel.inline:
                outcome.channels[channel.name] = await self._deliver_inline(channel, alert)
        remote = [channel for channel in chosen if not channel.inline]
        if self._background and remote:
            self._sender.enqueue(Delivery(outcome.level, title, outcome.key, [c.name for c in remote],
                                          {c.name: _starter(c, alert) for c in remote}))
            outcome.channels.update({c.name: QUEUED for c in remote})
        else:
            results = await asyncio.gather(*(self._deliver(c.name, _starter(c, alert)) for c in remote))
            outcome.channels.update(zip([c.name for c in remote], results))
        for name, result in outcome.channels.items():
            if result not in ("sent", QUEUED):
                log.warning("alert_delivery_failed", channel=name, reason=result.removeprefix("failed: "),
                            alert_level=outcome.level.value, title=title)
        getattr(log, outcome.level.log_method)(
            "alert", alert_level=outcome.level.value, title=title, message=body, key=outcome.key,
            channels=[c.name for c in chosen], sent=outcome.sent, failed=outcome.failed, queued=outcome.queued,
            suppressed_repeats=repeats,
        )
        if self._journal is not None:
            try:
                self._journal.record_alert(outcome.level.value, title, body, now)
            except Exception as exc:
                log.error("alert_journal_failed", error=type(exc).__name__, reason=self.scrub(str(exc)))

    @staticmethod
    async def _deliver_inline(channel: AlertChannel, alert: Alert) -> str:
        """A local channel (the console): written at once, no timeout, no detail in a failure."""
        try:
            await channel.deliver(alert)
        except Exception as exc:
            return f"failed: {type(exc).__name__}"
        return "sent"

    async def _deliver(self, name: str, start: Callable[[], Awaitable[Any]]) -> str:
        try:
            await asyncio.wait_for(start(), timeout=self._timeout)
        except asyncio.TimeoutError:
            return f"failed: timed out after {self._timeout:g}s"
        except Exception as exc:
            detail = self.scrub(str(exc)).strip()
            return f"failed: {type(exc).__name__}" + (f": {detail}" if detail else "")
        return "sent"

    # -- scrubbing -----------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """``text`` with every registered secret replaced by ``***``."""
        return self._scrubber.scrub(text)


def _starter(channel: AlertChannel, alert: Alert) -> Callable[[], Awaitable[None]]:
    """A channel's delivery of ``alert``, started only when called (queued or at once)."""
    return lambda: channel.deliver(alert)
