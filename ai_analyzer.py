"""From a strategy's signal to a trade intent with a confidence that means what it says.

The confidence of a :class:`TradeIntent` is a probability: the chance that its bracket order
(entry now, stop, target) reaches the target before the stop. It pools three estimates of
that same probability with the configured weights (seed: 0.4 / 0.3 / 0.3)::

    confidence = technical_weight * technical
               + market_context_weight * context
               + sentiment_weight * sentiment

* ``technical``: the trained model's calibrated probability for this symbol's features
  (see :mod:`ai.ai_model`), adjusted to the intent's bracket when it differs from the bracket
  the model was trained on (a gambler's-ruin shift of the log-odds by
  ``logit(s'/(s'+t')) - logit(s/(s+t))``, ``s``/``t`` the stop and target distances).
* ``context``: the hit rate, on recent held-out history, of ideas taken in the same market
  regime (bull / bear / volatile / range, from SPY) with the same sign of relative strength
  vs SPY; shifted to the bracket like ``technical``. Without a benchmark it equals
  ``technical`` (no extra information).
* ``sentiment``: ``technical`` with its log-odds moved by ``0.5 x`` the news score in
  [-1, 1] (towards the target for good news on a long, bad news on a short). No news, or
  sentiment disabled, leaves it equal to ``technical``. This shift is a prior, not fitted:
  there is no news history to calibrate it on.

A weighted average of probabilities of one event is itself a probability of that event, so
with neutral news the pooled number is as calibrated as its parts (the model file reports
the pooled Brier score and ECE on its test split). With a 3% stop and a 6% target a long
idea breaks even at a hit rate of 1/3; ``expected_return`` in the breakdown states the edge.

Without a trained model (no file at ``ai.model_path``) the analyzer logs
``ai_model_missing`` once and scores transparently (see :func:`transparent_scores`); those
numbers are plain scores, not calibrated probabilities, and the breakdown says so.

An optional external model (``ai.model_endpoint``, an OpenAI-compatible chat API) may add a
second opinion, weighted :data:`ENDPOINT_WEIGHT`; it runs under ``ai.model_timeout_seconds``
and any failure is ignored (``ai_endpoint_unavailable``, at most once a minute).

A calibrated probability must clear its own bracket's gate (:mod:`ai.gate`: the break-even
``(s + costs) / (s + t)`` plus ``ai.gate_margin``); transparent scores must clear
``ai.min_confidence``. Ideas below are dropped (``ai_rejected``, with the gate applied); every
decision logs ``ai_decision`` with the full breakdown (``gate`` included) and the reasoning.

This module is the face (the analyzer, the intent it returns, the decision); its parts live in
``ai/``: :mod:`ai.live_features` (features and regime at the last bar), :mod:`ai.scoring`
(model and transparent scores), :mod:`ai.reasoning` (the breakdown and the reasoning text),
:mod:`ai.second_opinion` (the external model) and :mod:`ai.model_choice` (which model file).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from ai import ai_model, multi_timeframe
from ai.ai_model import ConfidenceModel, Regime
from ai.bracket_model import intent_probability
from ai.gate import Gate, gate_for
from ai.live_features import (
    FEATURE_WINDOW_BARS,
    FEATURES_CACHE_KEY,
    MIN_VOLUME_PROGRESS,
    REGIME_WINDOW_BARS,
    detect_regime,
    extract_features,
)
from ai.model_choice import PROJECT_ROOT, configured_model, resolve_model_path
from ai.reasoning import build_breakdown, reasoning_text
from ai.scoring import (
    SENTIMENT_LOGIT_SCALE,
    Scores,
    Side,
    bracket_shift,
    clip,
    model_scores,
    sentiment_shift,
    transparent_scores,
)
from ai.second_opinion import (
    ENDPOINT_KEY_ENV,
    ENDPOINT_LOG_INTERVAL_SECONDS,
    ENDPOINT_MODEL_ENV,
    ENDPOINT_WEIGHT,
    EndpointAdvisor,
    EndpointError,
    SecondOpinion,
    SecondOpinions,
    register_endpoint_secret,
)
from ai.second_opinion import parse_opinion as _parse_opinion
from ai.sentiment import score_headlines
from core.clock import Clock, to_exchange_time, utc
from market.market_data import BarSeries, MarketData

#: Names importers read from this face (the parts live in ai/; see the module docstring).
__all__ = [
    "ENDPOINT_KEY_ENV", "ENDPOINT_LOG_INTERVAL_SECONDS", "ENDPOINT_MODEL_ENV", "ENDPOINT_WEIGHT",
    "FEATURE_WINDOW_BARS", "FEATURES_CACHE_KEY", "MIN_VOLUME_PROGRESS", "PROJECT_ROOT", "REGIME_WINDOW_BARS",
    "SENTIMENT_LOGIT_SCALE", "AIAnalyzer", "EndpointAdvisor", "EndpointError", "NewsSource", "Scores",
    "SecondOpinion", "SignalLike", "Side", "TradeIntent", "bracket_shift", "detect_regime", "extract_features",
    "model_scores", "resolve_model_path", "sentiment_shift", "transparent_scores", "_parse_opinion",
]

log = structlog.get_logger(__name__)


# -- the trade intent --------------------------------------------------------------------------


@dataclass(frozen=True)
class TradeIntent:
    """A trade the analyzer believes in, with the probability it works and why.

    ``confidence`` is the pooled probability that the bracket hits ``target_price`` before
    ``stop_price``; ``confidence_breakdown`` holds each component and the inputs.
    The idea loses value with time: :meth:`confidence_at` decays linearly to 0 at
    ``decays_at`` (``created_at + ai.confidence_decay_hours``).
    """

    intent_id: str
    symbol: str
    side: Side
    confidence: float
    confidence_breakdown: dict[str, Any]
    reasoning: str
    strategy: str
    entry_price: float
    stop_price: float
    target_price: float
    created_at: datetime
    decays_at: datetime
    max_hold_days: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def confidence_at(self, moment: datetime) -> float:
        """The confidence at ``moment``: full until ``created_at``, then linear to 0 at ``decays_at``."""
        moment = utc(moment)
        if moment <= self.created_at:
            return self.confidence
        if moment >= self.decays_at:
            return 0.0
        life = (self.decays_at - self.created_at).total_seconds()
        left = (self.decays_at - moment).total_seconds()
        return self.confidence * left / life

    def is_expired(self, moment: datetime) -> bool:
        """True from ``decays_at`` on: the idea is stale and must not be traded."""
        return utc(moment) >= self.decays_at


class SignalLike(Protocol):
    """What the analyzer reads of a ``strategies.base.Signal``."""

    symbol: str
    action: str
    confidence: float
    reasoning: str
    strategy: str
    stop_price: float | None
    target_price: float | None
    max_hold_days: int | None
    metadata: dict[str, Any]


class NewsSource(Protocol):
    """Anything with ``async headlines(symbol)`` (``sentiment.NewsSentiment``)."""

    async def headlines(self, symbol: str) -> tuple[str, ...]: ...


# -- the analyzer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scored:
    """What :meth:`AIAnalyzer.analyze` decides on (``AIAnalyzer._score``)."""

    side: Side
    symbol: str
    strategy: str
    now: datetime
    entry: float | None  # None: no usable price for the entry (then nothing else is scored)
    stop: float
    target: float
    confidence: float
    features: Mapping[str, float]
    regime: Regime | None
    scores: Scores | None
    opinion: SecondOpinion | None
    breakdown: dict[str, Any]
    notes: list[str]
    gate: Gate | None = None  # the entry gate of a calibrated probability (ai/gate.py)


class AIAnalyzer:
    """Scores strategy signals into trade intents (see the module docstring)."""

    def __init__(
        self,
        settings: Any,
        clock: Clock,
        *,
        model: ConfidenceModel | None = None,
        news_source: NewsSource | None = None,
        http_session: Any = None,
        synthetic_market: bool = False,
    ) -> None:
        self._ai = settings.ai
        self._trading = settings.trading
        self._timeframes = getattr(settings, "multi_timeframe", None)
        self._clock = clock
        self._news = news_source
        self._model = model if model is not None else configured_model(self._ai, synthetic_market)
        self._opinions = (
            SecondOpinions(self._ai, clock, http_session) if self._ai.model_endpoint else None
        )
        self._sequence: dict[tuple[str, str, str], int] = {}
        register_endpoint_secret()

    @staticmethod
    def detect_regime(benchmark: BarSeries) -> Regime:
        """The module's :func:`detect_regime`, for callers holding an analyzer."""
        return detect_regime(benchmark)

    @property
    def model(self) -> ConfidenceModel | None:
        """The calibrated model in use, or None when scoring transparently."""
        return self._model

    async def close(self) -> None:
        """Release the HTTP session this analyzer opened for the external model, if any."""
        if self._opinions is not None:
            await self._opinions.close()

    # -- the decision --------------------------------------------------------------------

    async def analyze(self, signal: SignalLike, market_data: MarketData) -> TradeIntent | None:
        """A :class:`TradeIntent` for a buy/sell signal, or None (hold, or below threshold)."""
        scored = await self._score(signal, market_data)
        if scored is None:
            return None
        side, symbol, strategy, now = scored.side, scored.symbol, scored.strategy, scored.now
        if scored.entry is None:
            return self._reject(symbol, strategy, side, scored.breakdown, "no usable price for the entry", now)
        assert scored.scores is not None
        entry, stop, target = scored.entry, scored.stop, scored.target
        features, regime, opinion, notes = scored.features, scored.regime, scored.opinion, scored.notes
        scores, breakdown, confidence = scored.scores, scored.breakdown, scored.confidence
        reasoning = reasoning_text(signal, scores, breakdown, regime, opinion, notes, features)
        threshold = self._threshold(scored)
        approved = confidence >= threshold
        log.info(
            "ai_decision",
            symbol=symbol,
            strategy=strategy,
            side=side,
            approved=approved,
            confidence=round(confidence, 6),
            min_confidence=threshold,
            breakdown=breakdown,
            features={k: (round(v, 6) if math.isfinite(v) else None) for k, v in features.items()},
            reasoning=reasoning,
        )
        if not approved:
            return self._reject(
                symbol, strategy, side, breakdown,
                f"confidence {confidence:.3f} below min_confidence {threshold:.3f}", now,
                threshold=threshold,
            )
        created = now
        decays = created + timedelta(hours=float(self._ai.confidence_decay_hours))
        return TradeIntent(
            intent_id=self._next_intent_id(strategy, symbol, created),
            symbol=symbol,
            side=side,
            confidence=confidence,
            confidence_breakdown=breakdown,
            reasoning=reasoning,
            strategy=strategy,
            entry_price=entry,
            stop_price=stop,
            target_price=target,
            created_at=created,
            decays_at=decays,
            max_hold_days=getattr(signal, "max_hold_days", None),
            metadata=dict(getattr(signal, "metadata", None) or {}),
        )

    async def would_enter(self, signal: SignalLike, market_data: MarketData) -> bool:
        """Whether :meth:`analyze` would turn ``signal`` into an intent now, found the same way
        but without logging the decision or numbering an intent (a backtest looks ahead with it
        to skip a session that would enter nothing). True when an external model endpoint is
        configured: its answer is not known without asking it."""
        if self._opinions is not None:
            return True
        scored = await self._score(signal, market_data)
        if scored is None or scored.entry is None or scored.scores is None:
            return False
        return scored.confidence >= self._threshold(scored)

    def _threshold(self, scored: _Scored) -> float:
        """A calibrated probability is held to its own bracket's gate (:mod:`ai.gate`:
        break-even after costs plus ``ai.gate_margin``), or to ``calibrated_min_confidence``
        alone with ``ai.gate_mode = "flat"``; the seed's 65% applies to transparent scores,
        which are no probabilities (see config.AiSettings)."""
        if scored.scores is None or scored.scores.method != "model":
            return float(self._ai.min_confidence)
        if getattr(self._ai, "gate_mode", "break_even") == "flat" or scored.gate is None:
            return float(self._ai.calibrated_min_confidence)
        return scored.gate.min_probability

    async def _score(self, signal: SignalLike, market_data: MarketData) -> _Scored | None:
        """Everything :meth:`analyze` decides on (None for a hold): prices, features, scores,
        the pooled confidence and its breakdown."""
        action = str(signal.action).lower()
        if action not in ("buy", "sell"):
            return None
        side: Side = "buy" if action == "buy" else "sell"
        symbol = str(signal.symbol).upper()
        strategy = str(signal.strategy)
        now = utc(self._clock.now())

        entry = _entry_price(market_data)
        if entry is None:
            return _Scored(side, symbol, strategy, now, entry=None, stop=0.0, target=0.0, confidence=0.0,
                           features={}, regime=None, scores=None, opinion=None, breakdown={"method": "none"},
                           notes=[])
        stop, target = self._bracket(signal, side, entry)
        stop_fraction = abs(entry - stop) / entry
        target_fraction = abs(target - entry) / entry

        features = market_data.derived.get(FEATURES_CACHE_KEY)
        if features is None:  # several strategies may signal on one symbol in a cycle
            features = extract_features(market_data)
            market_data.derived[FEATURES_CACHE_KEY] = features
        regime = self._regime(market_data)
        sentiment_score, headlines = await self._sentiment(symbol, market_data)
        notes: list[str] = []
        scores: Scores | None = None
        if self._model is not None:
            try:
                scores = model_scores(
                    self._model, features, regime, sentiment_score, side,
                    stop_fraction, target_fraction,
                    self._bracket_probability(signal, side, market_data, stop_fraction, target_fraction),
                )
            except ValueError as exc:
                notes.append(f"model not applicable ({exc}); transparent scoring")
        if scores is None:
            scores = transparent_scores(
                float(signal.confidence), features, regime, sentiment_score, side
            )
        if market_data.benchmark is None or not len(market_data.benchmark):
            notes.append("no benchmark: beta 1, relative strength 0, no regime")
        shift, timeframes = multi_timeframe.analyse(market_data, self._timeframes, side,
                                                    calibrated=scores.method == "model")
        if shift:
            scores = replace(scores, technical=multi_timeframe.shifted(scores.technical, shift),
                             context=multi_timeframe.shifted(scores.context, shift),
                             sentiment=multi_timeframe.shifted(scores.sentiment, shift))

        weights = {
            "technical": float(self._ai.technical_weight),
            "market_context": float(self._ai.market_context_weight),
            "sentiment": float(self._ai.sentiment_weight),
        }
        pooled = clip(
            weights["technical"] * scores.technical
            + weights["market_context"] * scores.context
            + weights["sentiment"] * scores.sentiment
        )
        opinion = None if self._opinions is None else await self._opinions.ask(
            symbol, side, signal, entry, stop, target, features, regime, scores.method, pooled)
        confidence = pooled if opinion is None else clip(
            (1 - ENDPOINT_WEIGHT) * pooled + ENDPOINT_WEIGHT * opinion.confidence
        )

        breakdown = build_breakdown(
            scores=scores, pooled=pooled, confidence=confidence, weights=weights, regime=regime,
            sentiment_score=sentiment_score, headlines=len(headlines),
            strategy_confidence=float(signal.confidence), opinion=opinion,
            stop_fraction=stop_fraction, target_fraction=target_fraction,
        )
        if timeframes is not None:
            breakdown["multi_timeframe"] = timeframes
        gate = None
        if scores.method == "model" and getattr(self._ai, "gate_mode", "break_even") != "flat":
            gate = gate_for(self._ai, stop_fraction, target_fraction, market_data.spread_pct)
            breakdown["gate"] = gate.to_dict()
        return _Scored(side, symbol, strategy, now, entry=entry, stop=stop, target=target, confidence=confidence,
                       features=features, regime=regime, scores=scores, opinion=opinion, breakdown=breakdown,
                       notes=notes, gate=gate)

    # -- parts ---------------------------------------------------------------------------

    def _bracket_probability(
        self, signal: SignalLike, side: Side, market_data: MarketData, stop: float, target: float,
    ) -> tuple[float, dict[str, Any]] | None:
        """The model's probability for this long intent's own bracket and holding horizon
        (``max_hold_days``, else the model's horizon); None for shorts or an older model file."""
        bracket_model = getattr(self._model, "bracket_model", None)
        if bracket_model is None or side != "buy":
            return None
        horizon = int(getattr(signal, "max_hold_days", None) or bracket_model.default.horizon)
        try:
            p, parts = intent_probability(bracket_model, market_data, stop, target, horizon)
        except ValueError:  # too little history: the 15-feature model decides alone
            return None
        return p, {**parts, "horizon_sessions": horizon}

    def _bracket(self, signal: SignalLike, side: Side, entry: float) -> tuple[float, float]:
        """The signal's stop/target when they sit on the right sides of the entry, else the
        configured ``trading.stop_loss`` / ``trading.take_profit`` around it."""
        stop = _finite(getattr(signal, "stop_price", None))
        target = _finite(getattr(signal, "target_price", None))
        stop_loss = float(self._trading.stop_loss)
        take_profit = float(self._trading.take_profit)
        if side == "buy":
            if stop is None or not 0 < stop < entry:
                stop = entry * (1 - stop_loss)
            if target is None or not target > entry:
                target = entry * (1 + take_profit)
        else:
            if stop is None or not stop > entry:
                stop = entry * (1 + stop_loss)
            if target is None or not 0 < target < entry:
                target = entry * (1 - take_profit)
        return stop, target

    def _regime(self, market_data: MarketData) -> Regime | None:
        if market_data.regime in ai_model.REGIMES:
            return market_data.regime  # type: ignore[return-value]
        if market_data.benchmark is not None and len(market_data.benchmark):
            return detect_regime(market_data.benchmark)
        return None

    async def _sentiment(self, symbol: str, market_data: MarketData) -> tuple[float, tuple[str, ...]]:
        if not self._ai.use_news_sentiment:
            return 0.0, ()
        headlines: tuple[str, ...] = tuple(market_data.news or ())
        if not headlines and self._news is not None:
            timeout = float(self._ai.model_timeout_seconds)
            try:
                if timeout > 0:  # in this task: no task of its own for a cached answer
                    async with asyncio.timeout(timeout):
                        headlines = tuple(await self._news.headlines(symbol))
                else:
                    headlines = tuple(await asyncio.wait_for(self._news.headlines(symbol), timeout))
            except Exception as exc:  # news is optional: neutral on failure (timeouts too)
                log.debug("news_headlines_skipped", symbol=symbol, error=exc.__class__.__name__)
                headlines = ()
        return score_headlines(list(headlines)), headlines

    def _reject(
        self,
        symbol: str,
        strategy: str,
        side: Side,
        breakdown: Mapping[str, Any],
        reason: str,
        now: datetime,
        threshold: float | None = None,
    ) -> None:
        log.info(
            "ai_rejected",
            symbol=symbol,
            strategy=strategy,
            side=side,
            reason=reason,
            confidence=breakdown.get("confidence"),
            # the gate actually applied (None: rejected before any gate, e.g. no price)
            min_confidence=threshold,
            gate=breakdown.get("gate"),
            breakdown=dict(breakdown),
            at=now.isoformat(),
        )
        return None

    def _next_intent_id(self, strategy: str, symbol: str, created: datetime) -> str:
        """``<strategy>-<symbol>-<YYYYMMDD session date, New York>-<sequence>``."""
        day = to_exchange_time(created).strftime("%Y%m%d")
        key = (strategy, symbol, day)
        self._sequence[key] = self._sequence.get(key, 0) + 1
        clean = re.sub(r"[^A-Za-z0-9_]", "_", strategy)[:20]
        return f"{clean}-{symbol}-{day}-{self._sequence[key]:03d}"


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _entry_price(market_data: MarketData) -> float | None:
    for candidate in (market_data.last_price, market_data.daily.close[-1] if len(market_data.daily) else None):
        value = _finite(candidate)
        if value is not None and value > 0:
            return value
    return None
