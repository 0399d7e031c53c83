"""Every setting of the trading daemon: seed defaults, profiles, validation, secrets.

Build the configuration with :func:`load_settings`. Sources, lowest to highest precedence:

1. seed defaults (the values in the section models below);
2. a named profile (``default``, ``conservative``, ``aggressive``; see :data:`PROFILES`);
3. a TOML file (``config_file`` argument, else ``TRADING_CONFIG``), sections as tables;
4. the environment, over ``.env`` (python-dotenv syntax; a real variable beats the file):
   ``APCA_API_KEY_ID``, ``APCA_API_SECRET_KEY``, ``APCA_API_BASE_URL``, ``APCA_API_DATA_URL``,
   ``TRADING_MODE``, ``TRADING_LIVE_ENABLED``, ``TRADING_PROFILE``, ``TRADING_CONFIG``,
   ``SMTP_PASSWORD`` and ``TRADING_<SECTION>__<FIELD>`` for any field (lists comma-separated);
   when neither has Alpaca keys, the encrypted store of ``python main.py credentials set``
   (``TRADING_CREDENTIALS_FILE``, default ``data/credentials.enc``; see :mod:`core.credentials`);
5. explicit ``overrides`` (a nested dict, typically from command-line flags).

Whatever is wrong is reported at once: :class:`core.errors.ConfigError` carries one line per
problem, each naming the dotted key, the offending value and what is allowed. Secret values
(API key id, API secret, SMTP password, webhook URL) never appear in those lines, in
``repr(settings)`` or in :meth:`Settings.redacted_dict`.

The trading mode defaults to ``sim`` (the embedded simulator) without Alpaca keys and to
``paper`` with both keys; ``live`` needs the explicit opt-in ``TRADING_LIVE_ENABLED=true``.
"""

from __future__ import annotations

import difflib
import io
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from core.errors import ConfigError

__all__ = [
    "PROFILES",
    "PAPER_BASE_URL",
    "LIVE_BASE_URL",
    "DATA_URL",
    "Settings",
    "load_settings",
    "format_problems",
    "is_loopback_host",
    "normalise_host",
    "redact_url",
    "has_url_credentials",
]

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


def normalise_host(host: str | None) -> str:
    """``host`` as DNS resolves it: lower case, without IPv6 brackets or the root's trailing
    dot (``API.Alpaca.Markets.`` is ``api.alpaca.markets``). Every host check compares
    normalised names, so spelling cannot slip the live endpoint past a guard."""
    return (host or "").strip().strip("[]").rstrip(".").lower()


def _split_secrets(text: str) -> tuple[str, str, str, bool, bool]:
    """(scheme, where, query+fragment, had user info, had query) of a URL, by hand: a key
    pasted as user info may hold '/' or '#', which fools urlsplit into showing part of it."""
    scheme, sep, rest = text.strip().partition("://")
    if not sep:
        scheme, rest = "", text.strip()
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    where, tail = rest[:cut], rest[cut:]
    userinfo = "@" in where
    if userinfo:
        where = where.rsplit("@", 1)[1]
    return scheme, where, tail, userinfo, bool(tail)


def has_url_credentials(text: str) -> bool:
    """Whether a URL carries user info (``user:pass@``), even one holding '/' or '#'."""
    return _split_secrets(text)[3]


def redact_url(text: str) -> str:
    """``text`` safe to show in a message: user info and query string replaced by ``***``
    (keys are sometimes pasted there), scheme, host, port and path kept."""
    scheme, where, _tail, userinfo, query = _split_secrets(text)
    shown = ("***@" if userinfo else "") + where
    if scheme:
        shown = f"{scheme}://{shown}"
    return shown + ("?***" if query else "")


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``: addresses that never leave the machine."""
    if not host:
        return False
    host = normalise_host(host)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


# -- sections ---------------------------------------------------------------------------------


class Section(BaseModel):
    """A settings section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ApiSettings(Section):
    """How to reach Alpaca (or the simulator). ``base_url``/``data_url`` follow the mode."""

    key_id: SecretStr | None = None
    secret_key: SecretStr | None = None
    base_url: str | None = None
    data_url: str | None = None
    data_feed: Annotated[
        Literal["iex", "sip", "delayed_sip", "boats", "overnight", "otc"],
        BeforeValidator(_lower),
    ] = "iex"
    timeout_seconds: Positive = 10.0
    max_retries: Annotated[int, Field(ge=0, le=20)] = 3
    backoff_base_seconds: Positive = 0.5
    backoff_max_seconds: Positive = 30.0
    # Whose time the daemon lives in: "wall" (Alpaca), "broker" (follow GET /v2/clock, for a
    # simulator whose time is not the wall clock), or "auto" (broker for a loopback base URL).
    clock: Literal["auto", "wall", "broker"] = "auto"

    @field_validator("key_id", "secret_key", mode="before")
    @classmethod
    def _blank_is_absent(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("base_url", "data_url")
    @classmethod
    def _safe_url(cls, value: str | None) -> str | None:
        return _broker_url(value)


class TradingSettings(Section):
    """Position sizing and the per-trade bracket (stop loss, take profit)."""

    max_position_size: Fraction = 0.10
    stop_loss: Fraction = 0.03
    take_profit: Fraction = 0.06
    max_positions: Annotated[int, Field(ge=1)] = 5
    # fixed: max_position_size of equity; volatility: that x confidence x vol; risk: the loss
    # at the stop sized to risk.max_risk_per_trade x the confidence (risk_manager.risk_fraction)
    position_sizing: Annotated[Literal["fixed", "volatility", "risk"], BeforeValidator(_lower)] = "risk"
    cycle_interval_seconds: Annotated[int, Field(ge=1)] = 60
    extended_hours: bool = False
    min_order_value: Annotated[float, Field(ge=0)] = 100.0


class RiskSettings(Section):
    """Portfolio-level limits: circuit breaker, drawdown, emergency exit, concentration."""

    circuit_breaker_loss: Fraction = 0.05
    max_portfolio_risk: Fraction = 0.12
    max_daily_drawdown: Fraction = 0.06
    # The cumulative loss stop: equity this far below its high-water mark (kept across
    # sessions and restarts) latches like the breaker; 0 switches it off.
    max_drawdown_from_peak: Annotated[float, Field(ge=0, lt=1)] = 0.15
    emergency_exit_loss: Fraction = 0.08
    max_risk_per_trade: Fraction = 0.02
    # position_sizing = "risk" with a calibrated probability: this share of the Kelly stake
    kelly_fraction: Annotated[float, Field(gt=0, le=1)] = 0.25
    max_concentration: Fraction = 0.20
    max_volatility_multiplier: Positive = 1.5
    min_volatility_multiplier: Positive = 0.5


class ScanningSettings(Section):
    """The universe and the filters a symbol must pass to be considered."""

    symbols: SymbolList = Field(
        default_factory=lambda: ["SPY", "QQQ", "AAPL", "MSFT", "NVDA", "TSLA"]
    )
    min_volume: Annotated[int, Field(ge=0)] = 1_000_000
    min_price: Positive = 10.0
    max_price: Positive = 500.0
    min_price_change: Annotated[float, Field(ge=0, lt=1)] = 0.02
    max_spread: Fraction = 0.01

    @field_validator("symbols")
    @classmethod
    def _unique_symbols(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one symbol")
        return list(dict.fromkeys(value))


class RateLimitSettings(Section):
    """Client-side request budget kept below Alpaca's 200 requests per minute."""

    max_requests_per_minute: Annotated[int, Field(ge=1)] = 200
    rate_limit_buffer: Annotated[float, Field(gt=0, le=1)] = 0.8
    burst_allowance: Annotated[int, Field(ge=0)] = 10
    cooldown_seconds: Annotated[float, Field(ge=0)] = 60


class DataQualitySettings(Section):
    """Market data older than this is refused."""

    max_quote_age_seconds: Positive = 900


class StrategySettings(Section):
    """Which strategies run, and their indicator parameters."""

    enabled: StringList = Field(
        default_factory=lambda: ["enhanced_momentum", "mean_reversion", "breakout", "defensive"]
    )
    rsi_period: Annotated[int, Field(ge=2)] = 14
    rsi_oversold: Annotated[float, Field(gt=0, lt=100)] = 30
    rsi_overbought: Annotated[float, Field(gt=0, lt=100)] = 70
    ma_short: Annotated[int, Field(ge=1)] = 10
    ma_medium: Annotated[int, Field(ge=1)] = 20
    ma_long: Annotated[int, Field(ge=1)] = 50
    momentum_min_move: Fraction = 0.02
    momentum_volume_ratio: Positive = 1.5
    breakout_buffer: Annotated[float, Field(ge=0, lt=1)] = 0.01
    breakout_volume_ratio: Positive = 2.0
    lookback_days: Annotated[int, Field(ge=1)] = 60

    @field_validator("enabled")
    @classmethod
    def _strategy_names(cls, value: list[str]) -> list[str]:
        names = [name.strip().lower() for name in value]
        bad = [name for name in names if not _STRATEGY_NAME.match(name)]
        if bad:
            raise ValueError(
                f"bad strategy name(s) {', '.join(map(repr, bad))}: "
                "use module names like enhanced_momentum"
            )
        return list(dict.fromkeys(names))


class AiSettings(Section):
    """Confidence model: threshold, component weights (summing to 1), optional endpoint."""

    min_confidence: Probability = 0.65
    # A *calibrated* probability (a trained model scored the idea) is held to its own
    # bracket's gate (ai/gate.py): break-even (stop + costs) / (stop + target), counting every
    # trade that misses the target (stop, timeout, strategy exit) as a stop, plus gate_margin
    # probability points; never below calibrated_min_confidence (an optional floor). "flat"
    # applies calibrated_min_confidence alone (e.g. to score every idea in a study).
    gate_mode: Annotated[Literal["break_even", "flat"], BeforeValidator(_lower)] = "break_even"
    gate_margin: Annotated[float, Field(ge=0, lt=0.5)] = 0.03
    gate_commission: Annotated[float, Field(ge=0, lt=0.05)] = 0.0  # per side, fraction of notional
    gate_assumed_spread: Annotated[float, Field(ge=0, lt=0.05)] = 0.001  # when no two-sided quote
    calibrated_min_confidence: Probability = 0.0
    technical_weight: Probability = 0.4
    market_context_weight: Probability = 0.3
    sentiment_weight: Probability = 0.3
    confidence_decay_hours: Positive = 4.0
    # Lifetimes of an idea (engine.opportunities): a symbol's analysis is re-scored at most
    # this often; an opportunity not taken within the timeout is dropped for the session.
    analysis_refresh_minutes: Positive = 15.0
    opportunity_timeout_minutes: Positive = 60.0
    model_path: str = "models/confidence_model.json"
    # auto: the trained model everywhere except the simulator's synthetic market (it was
    # calibrated on real history, not on a made-up market); always / never force it.
    use_model: Literal["auto", "always", "never"] = "auto"
    model_endpoint: str | None = None
    model_timeout_seconds: Positive = 3.0
    use_news_sentiment: bool = True

    @field_validator("model_endpoint")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        return _http_url(value)


class MeanReversionSettings(Section):
    """Mean-reversion entry thresholds and the longest hold."""

    deviation_threshold: Fraction = 0.15
    rsi_oversold: Annotated[float, Field(gt=0, lt=100)] = 30
    rsi_overbought: Annotated[float, Field(gt=0, lt=100)] = 70
    volume_confirmation: Positive = 1.2
    max_hold_days: Annotated[int, Field(ge=1)] = 5


class DefensiveSettings(Section):
    """Defensive mode: smaller, tighter, surer trades once the day goes badly."""

    size_multiplier: Annotated[float, Field(gt=0, le=1)] = 0.5
    stop_loss: Fraction = 0.02
    min_confidence: Probability = 0.75
    symbols: SymbolList = Field(default_factory=lambda: ["SPY", "QQQ", "AAPL", "MSFT"])
    activation_breaker_fraction: Annotated[float, Field(gt=0, le=1)] = 0.6
    volatility_threshold: Fraction = 0.03
    drawdown_threshold: Fraction = 0.03

    @field_validator("symbols")
    @classmethod
    def _unique_symbols(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


TIMEFRAME_NAMES = ("1Min", "5Min", "15Min", "1Hour", "1Day")
ROTATION_REGIMES = ("bull", "bear", "volatile", "sideways")


class MultiTimeframeSettings(Section):
    """Multi-timeframe analysis (ai.multi_timeframe): one signal per timeframe, combined
    with ``weights`` (normalised over the timeframes that have data) into a score in
    [-1, 1] that moves the technical confidence by up to ``logit_scale`` in log-odds."""

    enabled: bool = True
    weights: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {"1Min": 0.10, "5Min": 0.15, "15Min": 0.20, "1Hour": 0.25, "1Day": 0.30}
    )
    logit_scale: Annotated[float, Field(ge=0, le=3)] = 0.5
    # A calibrated model probability is moved only when this is true: the shift has shown no
    # out-of-sample skill (README, issue 18), and an unmeasured shift would uncalibrate it.
    shift_calibrated: bool = False

    @field_validator("weights")
    @classmethod
    def _known_timeframes(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(TIMEFRAME_NAMES))
        if unknown:
            raise ValueError(f"unknown timeframe(s) {unknown}; use {', '.join(TIMEFRAME_NAMES)}")
        if value and sum(value.values()) <= 0:
            raise ValueError("at least one timeframe weight must be positive")
        return value


def _default_rotation() -> dict[str, dict[str, float]]:
    return {
        "bull": {"enhanced_momentum": 1.0, "breakout": 1.0, "mean_reversion": 0.5, "defensive": 1.0},
        "bear": {"enhanced_momentum": 0.0, "breakout": 0.0, "mean_reversion": 0.5, "defensive": 1.0},
        "volatile": {"enhanced_momentum": 0.0, "breakout": 0.0, "mean_reversion": 0.5, "defensive": 1.0},
        "sideways": {"mean_reversion": 1.0, "breakout": 0.5, "enhanced_momentum": 0.5, "defensive": 1.0},
    }


class StrategyRotationSettings(Section):
    """Strategy rotation by market regime (engine.strategy_rotation), from the benchmark's
    weekly return (+/- ``weekly_threshold``: bull / bear) and its daily volatility over
    ``volatility_window_days`` (>= ``volatility_threshold``: volatile; first); sideways
    otherwise. ``regimes`` maps each regime to strategy -> weight (0: no entries; the weight
    ranks signals and scales the position; a strategy not named is not rotated, weight 1). In defensive mode every
    non-defensive strategy is throttled: ``defensive_throttle`` = ``size`` (times
    ``defensive_size_multiplier``) or ``off`` (no entries). ``enabled = false``: neither."""

    enabled: bool = True
    weekly_threshold: Fraction = 0.03
    volatility_threshold: Fraction = 0.02
    volatility_window_days: Annotated[int, Field(ge=2, le=250)] = 20
    regimes: dict[str, dict[str, Annotated[float, Field(ge=0, le=1)]]] = Field(default_factory=_default_rotation)
    defensive_throttle: Literal["size", "off"] = "size"
    defensive_size_multiplier: Annotated[float, Field(gt=0, le=1)] = 0.5

    @field_validator("regimes")
    @classmethod
    def _every_regime(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        unknown = sorted(set(value) - set(ROTATION_REGIMES))
        missing = sorted(set(ROTATION_REGIMES) - set(value))
        if unknown or missing:
            raise ValueError(f"regimes must name exactly {', '.join(ROTATION_REGIMES)}"
                             f" (unknown {unknown}, missing {missing})")
        return {regime: {name.strip().lower(): w for name, w in table.items()} for regime, table in value.items()}


class PdtSettings(Section):
    """Day-trading rules: legacy PDT before ``retirement_date``, intraday margin after."""

    regime: Annotated[
        Literal["auto", "legacy", "intraday_margin"], BeforeValidator(_lower)
    ] = "auto"
    equity_threshold: Annotated[float, Field(ge=0)] = 25000
    window_business_days: Annotated[int, Field(ge=1)] = 5
    max_day_trades: Annotated[int, Field(ge=0)] | None = None
    budget_window_days: Annotated[int, Field(ge=1)] = 5
    retirement_date: date = date(2026, 6, 4)


class GapRiskSettings(Section):
    """Overnight gap thresholds (fractions of the previous close)."""

    alert_threshold: Fraction = 0.02
    moderate: Fraction = 0.02
    high: Fraction = 0.04
    extreme: Fraction = 0.07


class AlertSettings(Section):
    """Where alerts go: console, email over SMTP, a webhook, an SMS gateway."""

    console: bool = True
    email_enabled: bool = False
    smtp_host: str = "localhost"
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 587
    smtp_starttls: bool = True
    # Log in (send smtp_password) over a connection without TLS: only for a relay you trust.
    allow_plaintext_auth: bool = False
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    email_from: str | None = None
    email_to: StringList = Field(default_factory=list)
    # Webhook URLs usually embed a token: treated as a secret (kept out of repr and logs).
    webhook_url: str | None = Field(default=None, repr=False)
    sms_endpoint: str | None = None
    sms_to: str | None = None
    throttle_seconds: Annotated[float, Field(ge=0)] = 300
    # E-mail goes to alerts at or above this level (INFO fills never by default).
    email_min_level: Annotated[Literal["info", "warning", "critical", "emergency"], BeforeValidator(_lower)] = \
        "critical"
    # The trader's alerts (engine/alert_rules.py): an open position's loss (fraction of its
    # cost) that warns; an INFO alert per fill; the broker's rate budget left (fraction of
    # rate_limit.max_requests_per_minute) that warns; market data older than this (seconds,
    # regular session) that warns; the broker or the stream unreachable for longer than this
    # (seconds); the summary of each session at its close.
    position_loss_alert: Fraction = 0.05
    fill_alerts: bool = True
    rate_limit_alert_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.10
    stale_data_seconds: Annotated[float, Field(gt=0)] = 600
    unreachable_alert_seconds: Annotated[float, Field(ge=0)] = 120
    daily_summary: bool = True

    @field_validator("webhook_url", "sms_endpoint")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        return _http_url(value)

    @field_validator("email_from")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value.strip()):
            raise ValueError("must be an email address like bot@example.com")
        return value.strip() if value is not None else None

    @field_validator("email_to")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        bad = [address for address in value if not _EMAIL.match(address)]
        if bad:
            raise ValueError(f"not an email address: {', '.join(map(repr, bad))}")
        return value


class StorageSettings(Section):
    """Where state and logs live, and how much to log."""

    state_db: str = "data/trading_state.db"
    log_file: str = "logs/trading.jsonl"
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)
    ] = "INFO"


class HttpSettings(Section):
    """The daemon's HTTP endpoint (``/health``, ``/metrics``, the dashboard; ops/http_server.py).

    Loopback by default. Any other bind address is served only with a ``token``
    (``TRADING_HTTP_TOKEN``), which every request must then carry; the token is a secret
    (never logged). ``port`` 0 takes any free port (the log's ``http_server_started`` names it).
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8686
    token: SecretStr | None = None
    # /health says "stale" after this many wall seconds without a sign of life from the loop
    # (or three cycle intervals at the clock's speed, if longer; see ops/health.py).
    stale_after_seconds: Positive = 30.0

    @field_validator("token", mode="before")
    @classmethod
    def _blank_token_is_absent(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        text = value.strip()
        if not text:
            raise ValueError("must be an address to listen on, e.g. 127.0.0.1 (loopback) or 0.0.0.0 (all)")
        return text

    @field_validator("token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (e.g. python -c "
                             "'import secrets; print(secrets.token_urlsafe(24))')")
        return value

class StreamSettings(Section):
    """Alpaca's ``trade_updates`` stream: orders, fills and positions kept from broker events
    (``engine.stream_feed``), with REST as catch-up, periodic reconciliation and fallback."""

    # Listen to the trading stream in sim, paper and live; off = poll every cycle as before.
    enabled: bool = True
    # The stream's URL; unset = the trading API URL with http->ws, https->wss, path /stream.
    url: str | None = None
    # Ping the stream this often (wall seconds); no frame or pong for stale_after_seconds in
    # market hours = a dead stream: reconnect.
    heartbeat_seconds: Annotated[float, Field(gt=0, le=60)] = 10.0
    stale_after_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    # Reconnect backoff (wall seconds, exponential with jitter).
    reconnect_min_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    reconnect_max_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    # A full REST reconciliation of account, positions, orders and fills this often (market
    # minutes) while the stream is healthy: the safety net.
    reconcile_minutes: Annotated[float, Field(gt=0, le=240)] = 5.0
    # No stream for this long (wall seconds): warn, alert, and poll (as before) until it is back.
    fallback_after_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0

    @field_validator("url")
    @classmethod
    def _ws_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("ws://", "wss://")):
            raise ValueError("must be a ws:// or wss:// URL")
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> "StreamSettings":
        if self.reconnect_max_seconds < self.reconnect_min_seconds:
            raise ValueError("reconnect_max_seconds must be >= reconnect_min_seconds")
        return self


class SimSettings(Section):
    """The embedded simulator: history length, speed (``None`` = max), data, seed, faults."""

    days: Annotated[int, Field(ge=1)] | None = None
    # 300x: five market minutes per second, a session in about 80 s, so a newcomer sees
    # signals, bracket orders, fills and exits within a minute (60 = a market minute per second).
    speed: Annotated[float | None, BeforeValidator(_speed)] = 300.0
    data_dir: str | None = None
    seed: int = 42
    start: str | None = None
    cash: Annotated[float, Field(gt=0)] = 100000
    faults: str | None = None

    @field_validator("faults")
    @classmethod
    def _fault_spec(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            from simulator.faults import FaultConfig  # light: no numpy, no server

            FaultConfig.parse(value)  # ValueError names the key and what is allowed
        return value

    @field_validator("speed")
    @classmethod
    def _speed_range(cls, value: float | None) -> float | None:
        # Above this a millisecond of wall time is more than a market minute and a run races
        # past the calendar's end: 'max' (as fast as the loop goes) is the way to go fast.
        if value is not None and not (0 < value <= MAX_SIM_SPEED):
            raise ValueError(f"must be a number > 0 and <= {MAX_SIM_SPEED:g}, or 'max'")
        return value

    @field_validator("start")
    @classmethod
    def _iso_date(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip()
        try:
            day = date.fromisoformat(text)
        except ValueError:
            try:
                day = datetime.fromisoformat(text.replace("Z", "+00:00")).date()
            except ValueError:
                raise ValueError(
                    "must be a date like 2024-03-01 or an ISO-8601 time like 2024-03-01T09:25:00-05:00"
                ) from None
        first, last = _sim_date_range()
        if not first <= day <= last:
            raise ValueError(f"must be between {first.isoformat()} and {last.isoformat()} "
                             "(the NYSE calendar the simulator knows)")
        return text


def _sim_date_range() -> tuple[date, date]:
    """First and last simulated start: the trading calendar's range, less a month at the end
    so a run has sessions ahead of it (imported late: the calendar library is heavy)."""
    from market.trading_calendar import FIRST_DATE, LAST_DATE

    return FIRST_DATE, LAST_DATE - timedelta(days=31)


SECTIONS: dict[str, type[Section]] = {
    "api": ApiSettings,
    "trading": TradingSettings,
    "risk": RiskSettings,
    "scanning": ScanningSettings,
    "rate_limit": RateLimitSettings,
    "data_quality": DataQualitySettings,
    "strategy": StrategySettings,
    "ai": AiSettings,
    "mean_reversion": MeanReversionSettings,
    "defensive": DefensiveSettings,
    "multi_timeframe": MultiTimeframeSettings,
    "strategy_rotation": StrategyRotationSettings,
    "pdt": PdtSettings,
    "gap_risk": GapRiskSettings,
    "alerts": AlertSettings,
    "storage": StorageSettings,
    "stream": StreamSettings,
    "sim": SimSettings,
    "http": HttpSettings,
}
_TOP_LEVEL = ("mode", "live_trading_enabled", "profile")
# Dotted keys holding URLs: shown in problems without user info or query (keys get pasted there).
_URL_KEYS = frozenset({"api.base_url", "api.data_url", "ai.model_endpoint", "alerts.sms_endpoint"})
# Dotted keys whose values are secrets: never echoed in problems, dumps or logs.
SECRET_KEYS = frozenset(
    {"api.key_id", "api.secret_key", "alerts.smtp_password", "alerts.webhook_url",
     "http.token"}
)

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    "conservative": {
        "trading": {
            "max_position_size": 0.05,
            "stop_loss": 0.02,
            "take_profit": 0.04,
            "max_positions": 3,
        },
        "risk": {
            "circuit_breaker_loss": 0.03,
            "max_daily_drawdown": 0.04,
            "max_portfolio_risk": 0.08,
            "max_drawdown_from_peak": 0.10,
        },
        "ai": {"min_confidence": 0.75, "gate_margin": 0.06},
    },
    "aggressive": {
        "trading": {
            "max_position_size": 0.15,
            # The seed's aggressive bracket and breaker: 5% stop, 10% target, 8% breaker.
            "stop_loss": 0.05,
            "take_profit": 0.10,
            "max_positions": 8,
            "position_sizing": "volatility",
        },
        "risk": {
            "circuit_breaker_loss": 0.08,
            "max_portfolio_risk": 0.18,
            "max_daily_drawdown": 0.08,
            "max_drawdown_from_peak": 0.20,
        },
        "ai": {"min_confidence": 0.60, "gate_margin": 0.01},
    },
}

# -- the settings object ----------------------------------------------------------------------


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`.

    ``Settings()`` alone gives the seed defaults (mode ``sim``) and reads nothing from the
    environment: every outside source goes through :func:`load_settings`, so one place
    decides precedence and reports problems.
    """

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)

    mode: Annotated[Literal["sim", "paper", "live"], BeforeValidator(_lower)] = "sim"
    live_trading_enabled: bool = False
    profile: str = "default"

    api: ApiSettings = Field(default_factory=ApiSettings)
    trading: TradingSettings = Field(default_factory=TradingSettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    scanning: ScanningSettings = Field(default_factory=ScanningSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    data_quality: DataQualitySettings = Field(default_factory=DataQualitySettings)
    strategy: StrategySettings = Field(default_factory=StrategySettings)
    ai: AiSettings = Field(default_factory=AiSettings)
    mean_reversion: MeanReversionSettings = Field(default_factory=MeanReversionSettings)
    defensive: DefensiveSettings = Field(default_factory=DefensiveSettings)
    multi_timeframe: MultiTimeframeSettings = Field(default_factory=MultiTimeframeSettings)
    strategy_rotation: StrategyRotationSettings = Field(default_factory=StrategyRotationSettings)
    pdt: PdtSettings = Field(default_factory=PdtSettings)
    gap_risk: GapRiskSettings = Field(default_factory=GapRiskSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    sim: SimSettings = Field(default_factory=SimSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only explicit values: load_settings() layers profiles, TOML, .env and environment.
        return (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _derive(cls, data: Any) -> Any:
        return _derive_mode_and_urls(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        problems = _cross_field_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def redacted_dict(self) -> dict[str, Any]:
        """Every setting as JSON-safe data, secrets shown as ``"***"`` (safe to log)."""
        data = self.model_dump(mode="json")
        for dotted in SECRET_KEYS:
            section, key = dotted.split(".")
            if data[section].get(key) is not None:
                data[section][key] = "***"
        return data

    def secret_values(self) -> list[str]:
        """The raw secret strings, for registering with the log redactor."""
        values = [
            self.api.key_id.get_secret_value() if self.api.key_id else None,
            self.api.secret_key.get_secret_value() if self.api.secret_key else None,
            self.alerts.smtp_password.get_secret_value() if self.alerts.smtp_password else None,
            self.alerts.webhook_url,
            self.http.token.get_secret_value() if self.http.token else None,
        ]
        return [value for value in values if value]

    @property
    def has_api_keys(self) -> bool:
        """True when both the Alpaca key id and secret are configured."""
        return self.api.key_id is not None and self.api.secret_key is not None


# -- deriving the mode and endpoints ----------------------------------------------------------


def _present(value: Any) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return isinstance(value, str) and bool(value.strip())


def _derive_mode_and_urls(data: dict[str, Any]) -> dict[str, Any]:
    """Fill in the default mode and the Alpaca endpoints it implies (pure; input untouched).

    No mode: ``paper`` with both keys, else ``sim``. Sim mode keeps an endpoint only if it is
    on loopback (an external simulator): it never talks to Alpaca, whatever the environment
    says. Paper and live get Alpaca's URLs unless the user named others.
    """
    data = dict(data)
    api = data.get("api", {})
    api = dict(api) if isinstance(api, Mapping) else api
    mode = data.get("mode")
    if isinstance(mode, str):
        mode = mode.strip().lower() or None
    if mode is None:
        keys = (
            isinstance(api, dict)
            and _present(api.get("key_id"))
            and _present(api.get("secret_key"))
        )
        mode = "paper" if keys else "sim"
    data["mode"] = mode
    if isinstance(api, dict):
        for name in ("base_url", "data_url"):
            if isinstance(api.get(name), str) and not api[name].strip():
                api[name] = None
        if mode == "sim":
            for name in ("base_url", "data_url"):
                url = api.get(name)
                if isinstance(url, str) and not is_loopback_host(_url_host(url.strip())):
                    api[name] = None
        elif mode in ("paper", "live"):
            if api.get("base_url") is None:
                api["base_url"] = PAPER_BASE_URL if mode == "paper" else LIVE_BASE_URL
            if api.get("data_url") is None:
                api["data_url"] = DATA_URL
        data["api"] = api
    return data


# -- cross-field rules ------------------------------------------------------------------------


class _Unavailable(Exception):
    """A rule needs a section that failed its own validation; the rule is skipped."""


class _PartialSettings:
    """Validated sections by attribute; a failed section raises :class:`_Unavailable`."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        value = self._values.get(name)
        if value is None:
            raise _Unavailable(name)
        return value


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _fmt(value: Any) -> str:
    """A value as shown in a problem line: numbers bare (even from env strings), text quoted."""
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, str):
        return value if _NUMBER.match(value) else repr(value)
    return str(value)


def _rules_key_pair(s: Any) -> Iterator[str]:
    has_key = s.api.key_id is not None
    has_secret = s.api.secret_key is not None
    if has_key != has_secret:
        present, missing = (
            ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY")
            if has_key
            else ("APCA_API_SECRET_KEY", "APCA_API_KEY_ID")
        )
        name = "api.secret_key" if has_key else "api.key_id"
        yield (
            f"{name}: {present} is set but {missing} is missing; "
            "set both (paper/live) or neither (sim)"
        )


def _rules_modes(s: Any) -> Iterator[str]:
    mode = s.mode
    if mode in ("paper", "live") and s.api.key_id is None and s.api.secret_key is None:
        yield (
            f"mode={mode!r}: needs APCA_API_KEY_ID and APCA_API_SECRET_KEY; "
            "set both, or use TRADING_MODE=sim for the embedded simulator"
        )
    if mode == "live" and not s.live_trading_enabled:
        yield (
            "mode='live': live trading is not enabled; to trade real money set "
            "TRADING_LIVE_ENABLED=true (or live_trading_enabled = true in the config file)"
        )
    host = _url_host(s.api.base_url)
    if mode == "paper" and host == _LIVE_HOST:
        yield (
            f"api.base_url={redact_url(s.api.base_url)!r}: the live endpoint is not allowed in paper mode; "
            f"use {PAPER_BASE_URL} (or TRADING_MODE=live with TRADING_LIVE_ENABLED=true)"
        )
    if mode == "live" and host == _PAPER_HOST:
        yield (
            f"api.base_url={redact_url(s.api.base_url)!r}: the paper endpoint contradicts mode 'live'; "
            f"use {LIVE_BASE_URL} or TRADING_MODE=paper"
        )


def _rules_trade(s: Any) -> Iterator[str]:
    t = s.trading
    if t.stop_loss >= t.take_profit:
        yield (
            f"trading.stop_loss={_fmt(t.stop_loss)}: must be < trading.take_profit "
            f"({_fmt(t.take_profit)})"
        )


def _rules_trade_vs_risk(s: Any) -> Iterator[str]:
    t, r = s.trading, s.risk
    worst = t.max_position_size * t.stop_loss
    if worst >= r.circuit_breaker_loss:
        yield (
            f"trading.stop_loss={_fmt(t.stop_loss)}: worst single-trade loss "
            f"max_position_size*stop_loss = {_fmt(worst)} must be below "
            f"risk.circuit_breaker_loss ({_fmt(r.circuit_breaker_loss)}); tighten the stop "
            "or shrink trading.max_position_size"
        )
    if r.emergency_exit_loss <= t.stop_loss:
        yield (
            f"risk.emergency_exit_loss={_fmt(r.emergency_exit_loss)}: must be > "
            f"trading.stop_loss ({_fmt(t.stop_loss)})"
        )


def _rules_risk(s: Any) -> Iterator[str]:
    r = s.risk
    if r.min_volatility_multiplier > r.max_volatility_multiplier:
        yield (
            f"risk.min_volatility_multiplier={_fmt(r.min_volatility_multiplier)}: must be <= "
            f"risk.max_volatility_multiplier ({_fmt(r.max_volatility_multiplier)})"
        )


def _rules_scanning(s: Any) -> Iterator[str]:
    c = s.scanning
    if c.min_price >= c.max_price:
        yield (
            f"scanning.min_price={_fmt(c.min_price)}: must be < scanning.max_price "
            f"({_fmt(c.max_price)})"
        )


def _rules_rate_limit(s: Any) -> Iterator[str]:
    r = s.rate_limit
    budget = r.rate_limit_buffer * r.max_requests_per_minute
    if r.burst_allowance >= budget:
        yield (
            f"rate_limit.burst_allowance={r.burst_allowance}: must be < rate_limit_buffer * "
            f"max_requests_per_minute ({_fmt(budget)})"
        )


def _rules_strategy(s: Any) -> Iterator[str]:
    g = s.strategy
    if not g.ma_short < g.ma_medium < g.ma_long:
        yield (
            f"strategy.ma_short={g.ma_short}: must be < strategy.ma_medium ({g.ma_medium}) "
            f"< strategy.ma_long ({g.ma_long})"
        )
    if g.rsi_oversold >= g.rsi_overbought:
        yield (
            f"strategy.rsi_oversold={_fmt(g.rsi_oversold)}: must be < strategy.rsi_overbought "
            f"({_fmt(g.rsi_overbought)})"
        )
    if g.lookback_days < g.ma_long:
        yield (
            f"strategy.lookback_days={g.lookback_days}: must be >= strategy.ma_long "
            f"({g.ma_long}) so the long average can be computed"
        )
    m = s.mean_reversion
    if m.rsi_oversold >= m.rsi_overbought:
        yield (
            f"mean_reversion.rsi_oversold={_fmt(m.rsi_oversold)}: must be < "
            f"mean_reversion.rsi_overbought ({_fmt(m.rsi_overbought)})"
        )


def _rules_ai(s: Any) -> Iterator[str]:
    a = s.ai
    total = a.technical_weight + a.market_context_weight + a.sentiment_weight
    if not math.isclose(total, 1.0, rel_tol=0, abs_tol=_WEIGHT_TOLERANCE):
        yield (
            f"ai.technical_weight+market_context_weight+sentiment_weight={_fmt(total)}: "
            "the three weights must sum to 1"
        )


def _rules_gap(s: Any) -> Iterator[str]:
    g = s.gap_risk
    if not g.moderate <= g.high <= g.extreme:
        yield (
            f"gap_risk.moderate={_fmt(g.moderate)}: must be <= gap_risk.high "
            f"({_fmt(g.high)}) <= gap_risk.extreme ({_fmt(g.extreme)})"
        )


def _rules_http(s: Any) -> Iterator[str]:
    h = s.http
    if h.enabled and not is_loopback_host(h.host) and h.token is None:
        yield (f"http.host={h.host!r}: not loopback, so a token is required (TRADING_HTTP_TOKEN) "
               "so that only you can read the daemon; or keep http.host = 127.0.0.1")


def _rules_alerts(s: Any) -> Iterator[str]:
    a = s.alerts
    if a.email_enabled and a.email_from is None:
        yield "alerts.email_from=None: required when alerts.email_enabled is true"
    if a.email_enabled and not a.email_to:
        yield "alerts.email_to=[]: name at least one recipient when alerts.email_enabled is true"
    if (a.email_enabled and a.smtp_user and a.smtp_password is not None and not a.smtp_starttls
            and not a.allow_plaintext_auth):
        yield (
            "alerts.smtp_starttls=false: the SMTP password would be sent without TLS; set "
            "smtp_starttls = true, or allow_plaintext_auth = true for a relay you trust"
        )


_RULES: tuple[Callable[[Any], Iterator[str]], ...] = (
    _rules_key_pair,
    _rules_modes,
    _rules_trade,
    _rules_trade_vs_risk,
    _rules_risk,
    _rules_scanning,
    _rules_rate_limit,
    _rules_strategy,
    _rules_ai,
    _rules_gap,
    _rules_alerts,
    _rules_http,
)


def _cross_field_problems(settings: Any) -> list[str]:
    """Run every rule whose sections are available; one line per broken rule."""
    problems: list[str] = []
    for rule in _RULES:
        try:
            problems.extend(rule(settings))
        except _Unavailable:
            continue
    return problems


# -- translating pydantic errors into one line per problem ------------------------------------

_RANGE_TYPES = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_TYPE_MESSAGES = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list (or a comma-separated string)",
    "model_type": "must be a table of settings",
    "model_attributes_type": "must be a table of settings",
    "dict_type": "must be a table of settings",
    "date_from_datetime_parsing": "must be a date like 2026-06-04",
    "date_parsing": "must be a date like 2026-06-04",
    "date_type": "must be a date like 2026-06-04",
    "missing": "is required",
}


_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _range_text(info: FieldInfo | None, ctx: Mapping[str, Any]) -> str:
    """The whole allowed range of a field (``must be > 0 and < 1``), not just the bound hit."""
    parts: list[str] = []
    for item in info.metadata if info is not None else ():
        for attr, op in _BOUNDS:
            bound = getattr(item, attr, None)
            if bound is not None:
                parts.append(f"{op} {_fmt(bound)}")
    if not parts:  # constraint inside an Optional[...]: only the failed bound is known
        parts = [f"{op} {_fmt(ctx[attr])}" for attr, op in _BOUNDS if attr in ctx]
    return "must be " + " and ".join(parts)


def _suggest(name: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def _show_value(dotted: str, value: Any) -> str:
    base = re.sub(r"\[\d+\]$", "", dotted)
    if base in SECRET_KEYS:
        return "'***'"
    if isinstance(value, SecretStr):
        return "'***'"
    if isinstance(value, str) and ("://" in value or base in _URL_KEYS):
        return repr(redact_url(value))
    return _fmt(value)


def _dotted(prefix: tuple[str, ...], loc: tuple[int | str, ...]) -> str:
    text = ".".join(prefix)
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text = f"{text}.{part}" if text else str(part)
    return text


def _error_lines(
    exc: ValidationError,
    prefix: tuple[str, ...],
    model: type[BaseModel],
    sources: Mapping[str, str],
) -> list[str]:
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        dotted = _dotted(prefix, loc)
        field_name = loc[0] if loc and isinstance(loc[0], str) else None
        info = model.model_fields.get(field_name) if field_name else None
        source = sources.get(re.sub(r"\[\d+\]$", "", dotted))
        suffix = f" [from {source}]" if source else ""
        if kind == "extra_forbidden":
            candidates = list(model.model_fields)
            if not prefix and len(loc) == 1:
                candidates = [*SECTIONS, *_TOP_LEVEL]
            name = str(loc[-1]) if loc else ""
            lines.append(f"{dotted}: unknown key{_suggest(name, candidates)}{suffix}")
            continue
        if kind in _RANGE_TYPES:
            message = _range_text(info, err.get("ctx", {}))
        elif kind == "value_error":
            message = str(err.get("ctx", {}).get("error", err["msg"]))
        elif kind == "literal_error":
            message = "must be one of " + str(err.get("ctx", {}).get("expected", ""))
        else:
            message = _TYPE_MESSAGES.get(kind, err["msg"][:1].lower() + err["msg"][1:])
        if kind == "missing":
            lines.append(f"{dotted}: {message}{suffix}")
        else:
            lines.append(f"{dotted}={_show_value(dotted, err['input'])}: {message}{suffix}")
    return lines


# -- sources -----------------------------------------------------------------------------------

_ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "APCA_API_KEY_ID": ("api", "key_id"),
    "APCA_API_SECRET_KEY": ("api", "secret_key"),
    "APCA_API_BASE_URL": ("api", "base_url"),
    "APCA_API_DATA_URL": ("api", "data_url"),
    "TRADING_MODE": ("mode",),
    "TRADING_LIVE_ENABLED": ("live_trading_enabled",),
    "TRADING_PROFILE": ("profile",),
    "SMTP_PASSWORD": ("alerts", "smtp_password"),
    "TRADING_HTTP_TOKEN": ("http", "token"),
}
_ENV_PREFIX = "TRADING_"


def _field_allows_none(section: str, name: str) -> bool:
    model = SECTIONS.get(section)
    info = model.model_fields.get(name) if model else None
    if info is None:
        return False
    return info.default is None or "None" in str(info.annotation)


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and len(path) == 1 and key in SECTIONS:
            yield from _leaves(value, path)
        else:
            yield path


def _merge(base: dict[str, Any], layer: Mapping[str, Any]) -> None:
    """Deep-merge ``layer`` into ``base`` (section tables merge, values replace)."""
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif isinstance(value, Mapping):
            base[key] = {}
            _merge(base[key], value)
        else:
            base[key] = value


def _environment(
    environ: Mapping[str, str] | None, env_file: Path | None
) -> dict[str, str]:
    """``.env`` values under the real environment (the real environment wins)."""
    merged: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        text = _read_text(Path(env_file), "env_file")
        for key, value in dotenv_values(stream=io.StringIO(text)).items():
            if value is not None:
                merged[key] = value
    merged.update(os.environ if environ is None else environ)
    return merged


def _with_stored_credentials(env: dict[str, str], *, real_environment: bool, mode: Any) -> bool:
    """Add the Alpaca keys from the encrypted credential store (``python main.py credentials``)
    to ``env`` when neither the environment nor ``.env`` has any; True when it did.

    The store is ``TRADING_CREDENTIALS_FILE``, else ``data/credentials.enc`` (the latter only
    for the real process environment, so a test's own ``environ`` never picks up a developer's
    store). Skipped in sim mode, which needs no keys.
    """
    if env.get("APCA_API_KEY_ID") or env.get("APCA_API_SECRET_KEY"):
        return False
    if isinstance(mode, str) and mode.strip().lower() == "sim":
        return False
    from core.credentials import FILE_VAR, CredentialError, CredentialStore, passphrase_from, store_path

    if not real_environment and not env.get(FILE_VAR):
        return False
    store = CredentialStore(store_path(env))
    if not store.exists():
        return False
    try:
        credentials = store.load(passphrase_from(env))
    except CredentialError as exc:
        raise ConfigError([f"credentials {str(store.path)!r}: {exc}"]) from None
    env["APCA_API_KEY_ID"] = credentials.key_id
    env["APCA_API_SECRET_KEY"] = credentials.secret_key
    return True


def _env_layer(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Settings named by environment variables, and which variable set each dotted key."""
    layer: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for var, path in _ENV_ALIASES.items():
        if var in env:
            _set(layer, path, env[var])
            sources[".".join(path)] = var
    for var, raw in env.items():
        upper = var.upper()
        if not upper.startswith(_ENV_PREFIX) or "__" not in upper:
            continue
        parts = tuple(part.lower() for part in upper[len(_ENV_PREFIX) :].split("__"))
        value: Any = raw
        if len(parts) == 2 and raw.strip() == "" and _field_allows_none(*parts):
            value = None
        _set(layer, parts, value)
        sources[".".join(parts)] = var
    return layer, sources


def _read_text(path: Path, what: str) -> str:
    """A config file's text (UTF-8, a byte-order mark accepted), or one ConfigError line
    naming the file, the line of the first undecodable byte, and what is allowed."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{what}={str(path)!r}: file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{what}={str(path)!r}: is a directory, not a file"]) from None
    except OSError as exc:
        raise ConfigError([f"{what}={str(path)!r}: cannot read: {exc.strerror}"]) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            [f"{what}={str(path)!r}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 text; "
             "save the file as UTF-8"]
        ) from None


def _read_toml(path: Path) -> dict[str, Any]:
    text = _read_text(path, "config_file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config_file={str(path)!r}: invalid TOML: {exc}"]) from None


def _expand_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Nested or dotted (``"sim.days"``) keys; ``None`` values mean "flag not given"."""
    tree: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if v is not None}
            if not value:
                continue
        path = tuple(str(key).split("."))
        if isinstance(value, Mapping) and len(path) == 1:
            existing = tree.setdefault(path[0], {})
            if isinstance(existing, dict):
                _merge(existing, value)
                continue
        _set(tree, path, value)
    return tree


# -- the entry point --------------------------------------------------------------------------


def load_settings(
    *,
    config_file: Path | None = None,
    profile: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env_file: Path | None = Path(".env"),
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the validated settings from defaults, a profile, TOML, environment and overrides.

    ``environ`` replaces ``os.environ`` (tests); ``env_file=None`` skips ``.env``. Raises
    :class:`core.errors.ConfigError` listing every problem found, one line each.
    """
    env = _environment(environ, env_file)
    env_values, env_sources = _env_layer(env)
    override_values = _expand_overrides(overrides or {})

    path = config_file if config_file is not None else env.get("TRADING_CONFIG") or None
    file_values = _read_toml(Path(path)) if path is not None else {}
    mode = override_values.get("mode") or env_values.get("mode") or file_values.get("mode")
    if _with_stored_credentials(env, real_environment=environ is None, mode=mode):
        env_values, env_sources = _env_layer(env)

    chosen = (
        profile
        or override_values.get("profile")
        or env_values.get("profile")
        or file_values.get("profile")
        or "default"
    )
    if not isinstance(chosen, str) or chosen.strip().lower() not in PROFILES:
        raise ConfigError(
            [
                f"profile={_fmt(chosen)}: unknown profile; allowed: "
                + ", ".join(PROFILES)
            ]
        )
    chosen = chosen.strip().lower()

    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}  # dotted key -> where its value came from (for messages)
    layers: tuple[tuple[Mapping[str, Any], str | None], ...] = (
        (PROFILES[chosen], f"profile {chosen}"),
        (file_values, str(path) if path is not None else None),
        (env_values, None),
        (override_values, "overrides"),
    )
    for layer, label in layers:
        _merge(raw, layer)
        for leaf in _leaves(layer):
            dotted = ".".join(leaf)
            sources[dotted] = label if label is not None else env_sources.get(dotted, "env")
    raw["profile"] = chosen
    sources.pop("profile", None)

    problems = _validate(raw, sources)
    if problems:
        raise ConfigError(problems)
    return Settings.model_validate(raw)


def _validate(raw: dict[str, Any], sources: Mapping[str, str]) -> list[str]:
    """Every problem in ``raw``: unknown keys, per-field errors, then cross-field rules."""
    data = _derive_mode_and_urls(raw)
    problems: list[str] = []
    validated: dict[str, Any] = {}

    for key in data:
        if key not in SECTIONS and key not in _TOP_LEVEL:
            source = sources.get(str(key))
            suffix = f" [from {source}]" if source else ""
            problems.append(
                f"{key}: unknown key{_suggest(str(key), [*SECTIONS, *_TOP_LEVEL])}{suffix}"
            )

    top = {key: data[key] for key in _TOP_LEVEL if key in data}
    try:
        top_model = _TopLevel.model_validate(top)
        validated.update(top_model.model_dump())
    except ValidationError as exc:
        problems.extend(_error_lines(exc, (), _TopLevel, sources))

    for name, model in SECTIONS.items():
        try:
            validated[name] = model.model_validate(data.get(name, {}))
        except ValidationError as exc:
            problems.extend(_error_lines(exc, (name,), model, sources))
            if name == "api":
                validated[name] = _keys_only(data.get(name))

    problems.extend(_cross_field_problems(_PartialSettings(validated)))
    return problems


def revalidate(settings: Any) -> list[str]:
    """Every field and cross-field rule run again over the settings in effect, one line per
    problem (``diagnose`` uses it: a configuration changed in memory, or settings built
    without :func:`load_settings`, is caught before it trades)."""
    return _validate(settings.model_dump(), {})


def _keys_only(api: Any) -> ApiSettings | None:
    """The API keys alone, so key rules still run when another API field is wrong."""
    if not isinstance(api, Mapping):
        return None
    try:
        return ApiSettings.model_validate(
            {name: api.get(name) for name in ("key_id", "secret_key")}
        )
    except ValidationError:
        return None


class _TopLevel(BaseModel):
    """The top-level (non-section) fields, validated on their own for precise messages."""

    model_config = ConfigDict(extra="forbid")

    mode: Annotated[Literal["sim", "paper", "live"], BeforeValidator(_lower)] = "sim"
    live_trading_enabled: bool = False
    profile: str = "default"


def format_problems(err: ConfigError) -> str:
    """The problems as lines for stderr, one per problem (``main`` then exits 2)."""
    return "\n".join(f"config error: {problem}" for problem in err.problems)
