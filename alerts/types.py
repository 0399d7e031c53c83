"""Plain alert data: how urgent an alert is, what one ``send`` did, and the JSON-friendly
copies the channels and the journal read. Imports nothing of the project, so every other part
of :mod:`alerts` (and any channel plug-in) can read it."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

QUEUED = "queued"


class AlertLevel(str, enum.Enum):
    """How urgent an alert is; decides the channels (see :mod:`alerter`'s docstring)."""

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


@dataclass
class AlertOutcome:
    """What happened to one :meth:`alerter.Alerter.send` call.

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
        """Channels handed to the background sender (:meth:`alerter.Alerter.deliver_in_background`)."""
        return [name for name, result in self.channels.items() if result == QUEUED]

    @property
    def delivered(self) -> bool:
        """True when at least one channel took the alert."""
        return bool(self.sent)


@dataclass(frozen=True)
class Alert:
    """One alert as a channel receives it: already scrubbed of secrets, throttle summary
    (``(suppressed N repeats)``) already in ``body``, ``fields`` already JSON-friendly."""

    level: AlertLevel
    title: str
    body: str
    fields: dict[str, Any]
    at: datetime


def plain(value: Any) -> Any:
    """JSON-friendly copy: Decimal and dates as strings, enums by value, containers walked."""
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return plain(to_dict())
    return str(value)


def field_text(value: Any) -> str:
    """One field's value as a channel prints it (strings as they are, the rest as JSON)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
