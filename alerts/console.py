"""The console channel: one line per alert (plus body and fields) on a stream, coloured
when the stream is a terminal. Local and immediate, so it is written inside ``send``."""

from __future__ import annotations

import sys
from datetime import timezone
from typing import TextIO

from alerts.channel import AlertSettings
from alerts.types import Alert, AlertLevel, field_text

_COLOURS = {
    AlertLevel.INFO: "\033[36m",
    AlertLevel.WARNING: "\033[33m",
    AlertLevel.CRITICAL: "\033[1;31m",
    AlertLevel.EMERGENCY: "\033[1;97;41m",
}
_RESET = "\033[0m"


class ConsoleChannel:
    """Writes to ``stream`` (standard error when None, looked up per alert) when ``console`` is on."""

    name = "console"
    inline = True

    def __init__(self, settings: AlertSettings, stream: TextIO | None = None) -> None:
        self._settings = settings
        self._stream = stream

    def accepts(self, level: AlertLevel) -> bool:
        return bool(self._settings.console)

    async def deliver(self, alert: Alert) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        stamp = alert.at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        head = f"[{alert.level.value.upper()}] {alert.title}"
        if stream.isatty():
            head = f"{_COLOURS[alert.level]}{head}{_RESET}"
        lines = [f"{stamp} {head}"]
        lines += [f"    {line}" for line in alert.body.splitlines()]
        lines += [f"    {name}: {field_text(value)}" for name, value in alert.fields.items()]
        stream.write("\n".join(lines) + "\n")
        stream.flush()
