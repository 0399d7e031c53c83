"""The plug-in point for alert channels: what :class:`alerter.Alerter` asks of a channel.

A channel is any object with

* ``name`` (``str``): how outcomes and log lines name it (``"webhook"``);
* ``inline`` (``bool``): True for a local channel written at once inside ``send`` (the
  console: never queued, never under the timeout); False for a remote one, run under
  ``channel_timeout`` and handed to the background sender when the daemon asks for it;
* ``accepts(level) -> bool``: whether, with the current settings, an alert of ``level``
  goes to it (read on every alert, so a settings change takes effect at once);
* ``async deliver(alert)``: send one :class:`alerts.types.Alert` (already scrubbed of
  secrets); raise :class:`DeliveryRefused` (or anything else) when it was not taken.

The alerter gives every channel throttling, secret scrubbing, the timeout, the
``alert_delivery_failed`` log line and background delivery; a channel only formats and sends.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from alerts.types import Alert, AlertLevel


@runtime_checkable
class AlertChannel(Protocol):
    """One way an alert reaches a human (see the module docstring)."""

    name: str
    inline: bool

    def accepts(self, level: AlertLevel) -> bool: ...

    async def deliver(self, alert: Alert) -> None: ...


class _DeliveryRefused(Exception):
    """A channel answered but did not take the alert (HTTP status, missing settings)."""


#: The public name a channel raises; the class keeps its historical name, which the
#: ``failed: _DeliveryRefused: ...`` outcomes and log lines show.
DeliveryRefused = _DeliveryRefused


class AlertSettings(Protocol):
    """The ``[alerts]`` settings the built-in channels read (``config.AlertSettings``)."""

    console: bool
    email_enabled: bool
    smtp_host: str
    smtp_port: int
    smtp_starttls: bool
    smtp_user: str | None
    smtp_password: Any
    # allow_plaintext_auth, email_min_level: read with getattr so older settings objects work
    email_from: str | None
    email_to: list[str]
    webhook_url: str | None
    sms_endpoint: str | None
    sms_to: str | None
    throttle_seconds: float
