"""The HTTP channels: a webhook (Slack and Discord both accept its JSON) and an SMS gateway,
both a JSON POST through one shared :class:`JsonPoster` (one aiohttp session, opened lazily)."""

from __future__ import annotations

from datetime import timezone
from typing import Any

import aiohttp

from alerts.channel import AlertSettings, DeliveryRefused
from alerts.types import Alert, AlertLevel, field_text

SMS_MAX_CHARS = 320
DISCORD_MAX_CHARS = 2000
_DISCORD_COLOURS = {
    AlertLevel.INFO: 0x439FE0, AlertLevel.WARNING: 0xFFA500,
    AlertLevel.CRITICAL: 0xFF0000, AlertLevel.EMERGENCY: 0x8B0000,
}


class JsonPoster:
    """POSTs JSON with a total timeout; a status of 300 or more is a refusal.

    A session passed in is used and left open; otherwise one is opened on first use and
    closed by :meth:`aclose`.
    """

    def __init__(self, session: aiohttp.ClientSession | None, timeout: float) -> None:
        self._session = session
        self._owns_session = session is None
        self._timeout = timeout

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
            self._owns_session = True
        return self._session

    async def post(self, url: str, payload: dict[str, Any]) -> None:
        async with self._http().post(
            url, json=payload, timeout=aiohttp.ClientTimeout(total=self._timeout)
        ) as response:
            if response.status >= 300:
                raise DeliveryRefused(f"HTTP {response.status}")

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None if self._owns_session else self._session


class WebhookChannel:
    """Every level to ``webhook_url``: Slack ``text``/``blocks``, Discord ``content``/``embeds``,
    plus plain ``level``, ``title``, ``message``, ``fields``, ``timestamp`` for anything else."""

    name = "webhook"
    inline = False

    def __init__(self, settings: AlertSettings, poster: JsonPoster) -> None:
        self._settings = settings
        self._poster = poster

    def accepts(self, level: AlertLevel) -> bool:
        return bool(self._settings.webhook_url)

    async def deliver(self, alert: Alert) -> None:
        url = self._settings.webhook_url
        assert url is not None
        await self._poster.post(url, webhook_payload(alert))


def webhook_payload(alert: Alert) -> dict[str, Any]:
    """The JSON body of a webhook alert (Slack and Discord read their own keys of it)."""
    level, title, body, data = alert.level, alert.title, alert.body, alert.fields
    stamp = alert.at.astimezone(timezone.utc).isoformat()
    text = f"[{level.value.upper()}] {title}\n{body}".strip()
    field_items = [(name, field_text(value)) for name, value in data.items()]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {
            "type": "mrkdwn", "text": (f"*[{level.value.upper()}] {title}*\n{body}").strip()[:3000]}},
    ]
    for start in range(0, min(len(field_items), 50), 10):  # Slack: 10 fields per section
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*{n}*\n{v}"[:2000]} for n, v in field_items[start:start + 10]
        ]})
    return {
        "text": text,  # Slack (and the notification fallback of its blocks)
        "blocks": blocks,  # Slack Block Kit; Discord ignores it
        "content": text[:DISCORD_MAX_CHARS],  # Discord; Slack ignores it
        "embeds": [{
            "title": title[:256], "description": body[:4096], "color": _DISCORD_COLOURS[level],
            "timestamp": stamp,
            "fields": [{"name": n[:256], "value": (v or "-")[:1024], "inline": len(v) < 40}
                       for n, v in field_items[:25]],
        }],
        "level": level.value,
        "title": title,
        "message": body,
        "fields": data,
        "timestamp": stamp,
    }


class SmsChannel:
    """EMERGENCY only: ``{"to": sms_to, "message": ...}`` to ``sms_endpoint``, one line,
    at most :data:`SMS_MAX_CHARS` characters."""

    name = "sms"
    inline = False

    def __init__(self, settings: AlertSettings, poster: JsonPoster) -> None:
        self._settings = settings
        self._poster = poster

    def accepts(self, level: AlertLevel) -> bool:
        s = self._settings
        return bool(s.sms_endpoint and s.sms_to) and level is AlertLevel.EMERGENCY

    async def deliver(self, alert: Alert) -> None:
        s = self._settings
        assert s.sms_endpoint is not None
        text = f"[{alert.level.value.upper()}] {alert.title}: {alert.body}".replace("\n", " ")
        if len(text) > SMS_MAX_CHARS:
            text = text[: SMS_MAX_CHARS - 3] + "..."
        await self._poster.post(s.sms_endpoint, {"to": s.sms_to, "message": text})
