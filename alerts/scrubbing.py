"""Secret scrubbing: registered secrets (API keys, the SMTP password, the webhook URL and its
token, the SMS endpoint's token) become ``***`` in titles, messages and fields before an alert
is sent or logged, and fields named like a secret are masked whatever they hold."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

MASK = "***"
_MIN_SUBSTRING_SECRET = 4
_SECRET_FIELD_WORDS = ("password", "secret", "token", "api_key", "apikey", "authorization")


def secret_value(value: Any) -> str | None:
    """The text of a secret (a pydantic ``SecretStr`` or a plain string); None when empty."""
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    text = getter() if callable(getter) else value
    return str(text) if text else None


def url_secrets(url: str | None) -> list[str]:
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


class Scrubber:
    """The registered secrets, and the replacement of each in text and fields."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, value: Any) -> None:
        text = secret_value(value)
        if text:
            self._secrets.add(text)

    def scrub(self, text: str) -> str:
        """``text`` with every registered secret replaced by ``***``."""
        if text in self._secrets:
            return MASK
        for secret in sorted(self._secrets, key=len, reverse=True):
            if len(secret) >= _MIN_SUBSTRING_SECRET:
                text = text.replace(secret, MASK)
        return text

    def scrub_fields(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {
                self.scrub(k): (MASK if any(w in k.lower() for w in _SECRET_FIELD_WORDS) and v is not None
                                else self.scrub_fields(v))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.scrub_fields(v) for v in value]
        return value
