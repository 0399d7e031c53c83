"""The configuration's value types and constants: symbols, lists from env strings,
fractions, endpoints (an Alpaca URL is https, or http to loopback only, and carries no key).

The section models (:mod:`settings.sections`) build their fields from these.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field

from core.urls import _split_secrets, is_loopback_host, normalise_host

PAPER_BASE_URL = "https://paper-api.alpaca.markets"
LIVE_BASE_URL = "https://api.alpaca.markets"
DATA_URL = "https://data.alpaca.markets"
_LIVE_HOST = "api.alpaca.markets"
_PAPER_HOST = "paper-api.alpaca.markets"

SYMBOL_PATTERN = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")
_STRATEGY_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_WEIGHT_TOLERANCE = 1e-6
#: Fastest simulator speed factor besides 'max' (a session in about a quarter second).
MAX_SIM_SPEED = 100_000.0

# -- value types -----------------------------------------------------------------------------


def _split_list(value: Any) -> Any:
    """Accept ``"A, B,C"`` (env, CLI) or a JSON list string as well as a real list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return value
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _normalise_symbol(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    symbol = value.strip().upper()
    if not SYMBOL_PATTERN.match(symbol):
        raise ValueError(
            "not a ticker symbol: must be 1-10 characters of A-Z, 0-9 and '.', "
            "starting with a letter (e.g. SPY, BRK.B)"
        )
    return symbol


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _speed(value: Any) -> Any:
    """``"max"`` (any case) means as fast as possible, which is ``None``."""
    if isinstance(value, str) and value.strip().lower() in ("max", "none", ""):
        return None
    return value


Symbol = Annotated[str, BeforeValidator(_normalise_symbol)]
SymbolList = Annotated[list[Symbol], BeforeValidator(_split_list)]
StringList = Annotated[list[str], BeforeValidator(_split_list)]
# A fraction strictly between 0 and 1 (a percentage written as 0.03 for 3%).
Fraction = Annotated[float, Field(gt=0, lt=1)]
# A probability or confidence, 0 and 1 included.
Probability = Annotated[float, Field(ge=0, le=1)]
Positive = Annotated[float, Field(gt=0)]


def _http_url(value: str | None) -> str | None:
    """Check an http(s) URL with a host; drop trailing slashes."""
    if value is None:
        return None
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return url


def _no_credentials(url: str) -> None:
    """An API endpoint carries no secrets: keys have their own settings (and stay secret)."""
    _, _, _, userinfo, query = _split_secrets(url)
    if userinfo:
        raise ValueError("must not contain user:password@; set APCA_API_KEY_ID and "
                         "APCA_API_SECRET_KEY instead")
    if query:
        raise ValueError("must not contain a query string or fragment (?...); keys go in "
                         "APCA_API_KEY_ID and APCA_API_SECRET_KEY")


def _broker_url(value: str | None) -> str | None:
    """An Alpaca endpoint: https, or plain http only to a loopback host (the simulator)."""
    if value is not None:
        _no_credentials(value)
    url = _http_url(value)
    if url is None:
        return None
    if url.endswith("/v2"):  # alpaca-trade-api users sometimes include the version
        url = url[: -len("/v2")]
    parts = urlsplit(url)
    if parts.scheme != "https" and not is_loopback_host(parts.hostname):
        raise ValueError(
            "plain http is only allowed to a loopback host (127.0.0.1, localhost, ::1); "
            "use https"
        )
    return url


def _url_host(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return normalise_host(urlsplit(url).hostname) or None
    except ValueError:
        return None
