"""Cross-field rules: settings that are each valid but wrong together, one line per
broken rule (stop below target, the worst trade below the breaker, keys for paper/live...).

A rule reads sections by attribute; when :func:`config.load_settings` collects problems, a
section that failed its own validation is unavailable and the rules needing it are skipped.
A new rule is a ``_rules_*`` generator listed in :data:`_RULES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from core.urls import is_loopback_host, redact_url
from settings.problems import _fmt
from settings.values import (
    _LIVE_HOST,
    _PAPER_HOST,
    _WEIGHT_TOLERANCE,
    LIVE_BASE_URL,
    PAPER_BASE_URL,
    _url_host,
)


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
