"""What the gateway checks and encodes before anything is sent: the trading and data URLs
(HTTPS unless loopback, no credentials in them, the live host only with the live opt-in), the
API keys as secrets, and query parameters in the form Alpaca expects. Imports nothing above
``broker/`` (the URL helpers are :mod:`core.urls`, which ``config`` re-exports)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import yarl
from pydantic import SecretStr

from broker.models import decimal_text
from core import clock as clock_module
from core import errors
from core.urls import has_url_credentials, normalise_host, redact_url

LIVE_TRADING_HOST = "api.alpaca.markets"
MODES = ("sim", "paper", "live", "backtest")


def encode_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Query parameters as Alpaca expects them: None dropped, booleans ``true``/``false``,
    lists comma-joined, datetimes RFC 3339 UTC (aware only), decimals in plain notation."""
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        out[key] = param_text(key, value)
    return out


def param_text(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return clock_module.utc(value).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, Iterable):
        return ",".join(param_text(key, item) for item in value)
    raise TypeError(f"query parameter {key!r} has unsupported type {type(value).__name__}")


def is_loopback(host: str) -> bool:
    """Loopback by name or address, whatever the spelling (case, brackets, trailing dot)."""
    host = normalise_host(host)
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def checked_url(url: str, what: str, mode: str, live_enabled: bool) -> str:
    """``url`` without a trailing slash (or ``/v2``), or UnsafeEndpoint naming the problem."""
    if isinstance(url, str) and has_url_credentials(url):
        raise errors.UnsafeEndpoint(f"{what} must not contain credentials; use the key settings")
    try:
        parsed = yarl.URL(url)
    except (TypeError, ValueError):
        raise errors.UnsafeEndpoint(f"{what} is not a valid URL") from None
    if parsed.user or parsed.password:
        raise errors.UnsafeEndpoint(f"{what} must not contain credentials; use the key settings")
    shown = redact_url(url)  # a query string may hold a pasted key: never echoed
    host = normalise_host(parsed.host)
    scheme = (parsed.scheme or "").lower()
    if scheme not in ("http", "https") or not host:
        raise errors.UnsafeEndpoint(f"{what} {shown!r} is not an http(s) URL with a host")
    if scheme != "https" and not is_loopback(host):
        raise errors.UnsafeEndpoint(
            f"{what} {shown!r} uses plain HTTP to a non-loopback host; HTTPS is required"
        )
    if host == LIVE_TRADING_HOST and not (mode == "live" and live_enabled):
        raise errors.UnsafeEndpoint(
            f"{what} is the LIVE trading host {LIVE_TRADING_HOST}; refused unless mode is "
            f"'live' and live trading is explicitly enabled (mode={mode!r}, "
            f"live_enabled={live_enabled})"
        )
    text = str(parsed.with_query(None).with_fragment(None)).rstrip("/")
    if text.endswith("/v2"):
        text = text[: -len("/v2")]
    return text


def secret_or_none(value: str | SecretStr | None) -> SecretStr | None:
    if value is None:
        return None
    secret = value if isinstance(value, SecretStr) else SecretStr(value)
    return secret if secret.get_secret_value() else None
