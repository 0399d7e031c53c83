"""The section models: one pydantic model per ``[table]`` of the configuration file.

Each section rejects unknown keys and validates assignments; its defaults are the seed's.
:data:`SECTIONS` names them by table, :data:`SECRET_KEYS` the values never shown. A new key
goes in its section here, with a default and a line in ``config.example.toml``.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator, model_validator

from settings.values import (
    _EMAIL,
    _STRATEGY_NAME,
    MAX_SIM_SPEED,
    Fraction,
    Positive,
    Probability,
    StringList,
    SymbolList,
    _broker_url,
    _http_url,
    _lower,
    _speed,
    _upper,
)


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


class _TopLevel(BaseModel):
    """The top-level (non-section) fields, validated on their own for precise messages."""

    model_config = ConfigDict(extra="forbid")

    mode: Annotated[Literal["sim", "paper", "live"], BeforeValidator(_lower)] = "sim"
    live_trading_enabled: bool = False
    profile: str = "default"
