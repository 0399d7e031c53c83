"""The de-dup policy: the same key is delivered at most once per ``throttle_seconds`` of the
injected clock; repeats in between are counted (keeping the latest message and fields), and
the next delivery carries ``(suppressed N repeats)`` so a flapping condition cannot spam."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from alerts.types import AlertLevel


class _ThrottleSettings(Protocol):
    throttle_seconds: float


@dataclass
class ThrottleState:
    """One key's last delivery and the repeats counted since."""

    last_sent: datetime
    level: AlertLevel
    title: str
    message: str = ""
    fields: dict[str, Any] | None = None
    suppressed: int = 0


class Throttle:
    """Per-key quiet periods (``throttle_seconds`` is read on every alert)."""

    def __init__(self, settings: _ThrottleSettings) -> None:
        self._settings = settings
        self._states: dict[str, ThrottleState] = {}

    def elapsed(self, state: ThrottleState, now: datetime) -> bool:
        return (now - state.last_sent).total_seconds() >= float(self._settings.throttle_seconds)

    def hold(self, key: str, now: datetime, body: str, data: dict[str, Any]) -> int | None:
        """Count a repeat inside ``key``'s quiet period and return the count; None when the
        quiet period is over (or the key is new) and the alert is to be delivered."""
        state = self._states.get(key)
        if state is None or self.elapsed(state, now):
            return None
        state.suppressed += 1
        state.message, state.fields = body, data
        return state.suppressed

    def admit(self, key: str, now: datetime, level: AlertLevel, title: str, body: str,
              data: dict[str, Any]) -> tuple[str, int]:
        """Start a new quiet period for a delivered alert; return its body (with the repeats
        summary appended) and the number of repeats it summarises."""
        state = self._states.get(key)
        repeats = state.suppressed if state is not None else 0
        if repeats:
            body = f"{body}\n(suppressed {repeats} repeats)" if body else f"(suppressed {repeats} repeats)"
        self._states[key] = ThrottleState(now, level, title, body, data)
        return body, repeats

    def due(self, now: datetime) -> list[tuple[str, ThrottleState]]:
        """Keys with counted repeats whose quiet period is over (for a summary delivery)."""
        return [(key, state) for key, state in list(self._states.items())
                if state.suppressed and self.elapsed(state, now)]

    def pending(self, key: str) -> int:
        """How many repeats of ``key`` are waiting to be summarised."""
        state = self._states.get(key)
        return state.suppressed if state else 0
