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
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp
import numpy as np
import structlog

from ai import ai_model, multi_timeframe
from ai.ai_model import FEATURE_NAMES, MIN_HISTORY_BARS, ConfidenceModel, ModelFileError, Regime
from ai.gate import Gate, gate_for
from core.clock import Clock, to_exchange_time, utc
from market.market_data import BarSeries, MarketData
from ai.sentiment import score_headlines
from ai.bracket_model import intent_probability

log = structlog.get_logger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent
#: Bars of daily history used for features (the EMA recursions have converged long before).
FEATURE_WINDOW_BARS = 500
#: Bars of benchmark history used for the regime (MA200 plus the 20-day windows).
REGIME_WINDOW_BARS = ai_model.REGIME_LONG_MA + 60
#: Log-odds shift of the sentiment component for a news score of +/-1.
SENTIMENT_LOGIT_SCALE = 0.5
#: Weight of the external model's opinion when it answers.
ENDPOINT_WEIGHT = 0.2
#: At most one ``ai_endpoint_unavailable`` line per this many seconds.
ENDPOINT_LOG_INTERVAL_SECONDS = 60.0
#: A partial day with less than this share of its usual volume is read as a normal day.
MIN_VOLUME_PROGRESS = 0.10
#: Where the features are cached in ``MarketData.derived`` for the rest of the cycle.
FEATURES_CACHE_KEY = "ai_features"
#: Environment variable holding the external model's API key (never logged).
ENDPOINT_KEY_ENV = "AI_MODEL_API_KEY"
#: Environment variable naming the external model (``model`` of the chat request).
ENDPOINT_MODEL_ENV = "AI_MODEL_NAME"

Side = Literal["buy", "sell"]
_warned_model_paths: set[str] = set()


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


# -- features and regime -----------------------------------------------------------------------


def extract_features(market_data: MarketData) -> dict[str, float]:
    """The model's features (:data:`ai.ai_model.FEATURE_NAMES`) at the last daily bar.

    Uses only bars up to and including the last one (today's partial bar while a session is
    under way, whose volume is projected to a full day with ``market_data.volume_progress``;
    before about 10% of a day's volume has traded, today's volume is read as a normal day's).
    Beta and relative strength use ``market_data.benchmark`` (SPY); without one they are
    neutral (1.0 and 0.0). Features that need more history than given are NaN (a symbol
    needs :data:`ai.ai_model.MIN_HISTORY_BARS` daily bars).
    """
    daily = market_data.daily.tail(FEATURE_WINDOW_BARS)
    if len(daily) == 0:
        return {name: math.nan for name in FEATURE_NAMES}
    volume = np.array(daily.volume, dtype=float)
    progress = market_data.volume_progress
    if progress < 1.0 and len(volume) > 1:
        if progress >= MIN_VOLUME_PROGRESS:
            volume[-1] = volume[-1] / progress
        else:
            previous = volume[-21:-1]
            volume[-1] = float(previous.mean())
    bench_close = None
    if market_data.benchmark is not None and len(market_data.benchmark):
        bench = market_data.benchmark.tail(FEATURE_WINDOW_BARS + 50)
        bench_close = ai_model.align_benchmark(daily.ts, bench.ts, bench.close)
    return ai_model.feature_row(daily.high, daily.low, daily.close, volume, bench_close)


def detect_regime(benchmark: BarSeries) -> Regime:
    """The market regime at the benchmark's last bar: bull, bear, volatile or range.

    Thresholds (see :func:`ai.ai_model.regime_series`): volatile when the annualised volatility
    of the last 20 daily returns exceeds 30%; bull when the close is above its 50-day average,
    that average above the 200-day one (or the mean of all bars when fewer) and the 20-day
    return above +2%; bear when the close is below its 50-day average and the 20-day return
    below -2%; range otherwise, and with fewer than 51 bars.
    """
    # A function of the series' bars, which never change: every symbol of a cycle shares
    # one benchmark series, so it is computed once per series.
    memo = benchmark.memo() if isinstance(benchmark, BarSeries) else None
    key = ("ai_regime", REGIME_WINDOW_BARS)
    if memo is not None:
        cached = memo.get(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
    close = np.asarray(benchmark.tail(REGIME_WINDOW_BARS).close, dtype=float)
    regime: Regime = "range" if len(close) == 0 else ai_model.latest_regime(close)
    if memo is not None:
        memo[key] = regime
    return regime


# -- scoring -----------------------------------------------------------------------------------


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def bracket_shift(model_stop: float, model_target: float, stop: float, target: float) -> float:
    """Log-odds shift from the model's bracket to another (gambler's-ruin approximation)."""
    if math.isclose(model_stop, stop, abs_tol=1e-6) and math.isclose(model_target, target, abs_tol=1e-6):
        return 0.0
    return _logit(stop / (stop + target)) - _logit(model_stop / (model_stop + model_target))


def sentiment_shift(probability: float, score: float, side: Side) -> float:
    """``probability`` with its log-odds moved by ``0.5 x score`` in the trade's favour."""
    direction = 1.0 if side == "buy" else -1.0
    return _sigmoid(_logit(probability) + direction * SENTIMENT_LOGIT_SCALE * score)


@dataclass(frozen=True)
class Scores:
    """The three components (each in [0, 1]) and how they were obtained."""

    technical: float
    context: float
    sentiment: float
    method: Literal["model", "transparent"]
    detail: dict[str, Any]


def transparent_scores(
    signal_confidence: float,
    features: Mapping[str, float],
    regime: Regime | None,
    sentiment_score: float,
    side: Side,
) -> Scores:
    """The documented fallback when no trained model is available (scores, not probabilities).

    * technical = 0.6 x the strategy's confidence + 0.4 x the share of passed checks among
      those the history allows: close above its 20-day average (below, for a sell), MACD line
      above its signal (below), RSI under 70 (over 30), today's volume at least the 20-day
      mean, relative strength vs SPY above 0 (below); 0.5 when no check can be evaluated;
    * context = technical + 0.05 in a regime that favours the side (bull for buys, bear for
      sells), - 0.10 in the opposite one, - 0.05 when volatile, unchanged in a range;
    * sentiment = technical + 0.10 x the news score (minus for a sell).

    Each is clipped to [0, 1].
    """
    long = side == "buy"

    def check(name: str, passes: bool) -> tuple[str, bool] | None:
        return None if not math.isfinite(features.get(name, math.nan)) else (name, passes)

    f = {k: features.get(k, math.nan) for k in FEATURE_NAMES}
    results = [
        check("distance_ma20", f["distance_ma20"] > 0 if long else f["distance_ma20"] < 0),
        check(
            "macd_above_signal",
            f["macd_above_signal"] >= 0.5 if long else f["macd_above_signal"] < 0.5,
        ),
        check("rsi_14", f["rsi_14"] < 70 if long else f["rsi_14"] > 30),
        check("volume_ratio_1d", f["volume_ratio_1d"] >= 1.0),
        check(
            "relative_strength_10d",
            f["relative_strength_10d"] > 0 if long else f["relative_strength_10d"] < 0,
        ),
    ]
    evaluated = [r for r in results if r is not None]
    passed = [name for name, ok in evaluated if ok]
    share = len(passed) / len(evaluated) if evaluated else 0.5
    technical = _clip(0.6 * _clip(signal_confidence) + 0.4 * share)
    favoured, opposed = ("bull", "bear") if long else ("bear", "bull")
    adjustment = {favoured: 0.05, opposed: -0.10, "volatile": -0.05}.get(regime or "range", 0.0)
    context = _clip(technical + adjustment)
    sentiment = _clip(technical + (0.10 if long else -0.10) * sentiment_score)
    return Scores(
        technical=technical,
        context=context,
        sentiment=sentiment,
        method="transparent",
        detail={
            "checks_passed": passed,
            "checks_failed": [name for name, ok in evaluated if not ok],
            "check_share": round(share, 4),
            "regime_adjustment": adjustment,
            "calibrated": False,
        },
    )


def model_scores(
    model: ConfidenceModel,
    features: Mapping[str, float],
    regime: Regime | None,
    sentiment_score: float,
    side: Side,
    stop_fraction: float,
    target_fraction: float,
    bracket_probability: tuple[float, dict[str, Any]] | None = None,
) -> Scores:
    """The three components from the calibrated model (see the module docstring).

    ``bracket_probability`` (from :func:`ai.bracket_model.intent_probability`) is the
    probability of the intent's own bracket and holding horizon; when given it is both the
    technical and the context component (the context table knows only the model's 3%/6%/20
    bracket). Raises ``ValueError`` when a feature is missing or not finite.
    """
    model_side: ai_model.Side = "long" if side == "buy" else "short"
    if bracket_probability is not None:
        p, parts = bracket_probability
        sentiment = sentiment_shift(p, sentiment_score, side) if sentiment_score else p
        return Scores(technical=p, context=p, sentiment=sentiment, method="model", detail={
            "model_probability": round(p, 6), "bracket_model": parts, "context_hit_rate": None,
            "base_rate": round(model.base_rate(model_side), 6), "model_created_at": model.created_at,
            "calibrated": True,
        })
    probability = model.predict_proba(features, model_side)
    shift = bracket_shift(model.bracket.stop, model.bracket.target, stop_fraction, target_fraction)
    technical = _sigmoid(_logit(probability) + shift) if shift else probability
    if regime is None:
        context_rate = None
        context = technical
    else:
        context_rate = model.context_probability(
            model_side, regime, float(features["relative_strength_10d"])
        )
        context = _sigmoid(_logit(context_rate) + shift) if shift else context_rate
    sentiment = sentiment_shift(technical, sentiment_score, side) if sentiment_score else technical
    return Scores(
        technical=technical,
        context=context,
        sentiment=sentiment,
        method="model",
        detail={
            "model_probability": round(probability, 6),
            "bracket_logit_shift": round(shift, 6),
            "context_hit_rate": None if context_rate is None else round(context_rate, 6),
            "base_rate": round(model.base_rate(model_side), 6),
            "model_bracket": {
                "stop": model.bracket.stop,
                "target": model.bracket.target,
                "horizon_days": model.bracket.horizon_days,
            },
            "model_created_at": model.created_at,
            "calibrated": True,
        },
    )


def _clip(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


# -- the external second opinion ---------------------------------------------------------------


class EndpointError(Exception):
    """The external model did not give a usable answer (the reason, never a key)."""


@dataclass(frozen=True)
class SecondOpinion:
    confidence: float
    reasoning: str


class EndpointAdvisor:
    """Asks an OpenAI-compatible chat endpoint for ``{"confidence": 0..1, "reasoning": str}``."""

    def __init__(self, endpoint: str, timeout_seconds: float, session: Any = None) -> None:
        self._url = endpoint.rstrip("/") + "/chat/completions"
        self._timeout = float(timeout_seconds)
        self._session = session
        self._owns_session = session is None

    async def ask(self, prompt: dict[str, Any]) -> SecondOpinion:
        """One request; raises :class:`EndpointError` (or ``TimeoutError``) when unusable."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout)
            )
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(ENDPOINT_KEY_ENV)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        body = {
            "model": os.environ.get(ENDPOINT_MODEL_ENV, "default"),
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": [
                {
                    "role": "system",
                    "content": (
                        "You review stock trade ideas. Answer only with a JSON object "
                        '{"confidence": <probability 0..1 that the bracket order reaches its '
                        'target before its stop>, "reasoning": "<one sentence>"}.'
                    ),
                },
                {"role": "user", "content": json.dumps(prompt, sort_keys=True)},
            ],
        }
        try:
            async with self._session.post(self._url, json=body, headers=headers) as response:
                if response.status != 200:
                    raise EndpointError(f"HTTP {response.status}")
                payload = await response.json(content_type=None)
        except aiohttp.ClientError as exc:
            raise EndpointError(exc.__class__.__name__) from None
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            raise EndpointError("response body is not JSON") from None
        return _parse_opinion(payload)

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None


def _parse_opinion(payload: Any) -> SecondOpinion:
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError("no choices[0].message.content in the response") from None
    if not isinstance(content, str):
        raise EndpointError("message content is not text")
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", content.strip())
    try:
        answer = json.loads(text)
    except json.JSONDecodeError:
        raise EndpointError("message content is not a JSON object") from None
    if not isinstance(answer, dict):
        raise EndpointError("message content is not a JSON object")
    value = answer.get("confidence")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EndpointError("confidence is missing or not a number")
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise EndpointError("confidence is outside 0..1")
    reasoning = answer.get("reasoning")
    return SecondOpinion(value, reasoning[:500] if isinstance(reasoning, str) else "")


# -- the analyzer ------------------------------------------------------------------------------


def resolve_model_path(configured: str | Path) -> Path:
    """Where ``ai.model_path`` points: absolute as given; a relative path is looked up in
    the working directory first, then beside this program (where the shipped model lives)."""
    path = Path(configured).expanduser()
    if path.is_absolute():
        return path
    in_cwd = Path.cwd() / path
    return in_cwd if in_cwd.exists() else PROJECT_ROOT / path


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
        self._model = model if model is not None else self._configured_model(synthetic_market)
        self._advisor = (
            EndpointAdvisor(self._ai.model_endpoint, self._ai.model_timeout_seconds, http_session)
            if self._ai.model_endpoint
            else None
        )
        self._endpoint_logged_at: datetime | None = None
        self._sequence: dict[tuple[str, str, str], int] = {}
        self._register_endpoint_secret()

    def _configured_model(self, synthetic_market: bool) -> ConfidenceModel | None:
        """The model ``ai.use_model`` asks for.

        ``auto`` uses the trained model except on the simulator's synthetic market: a model
        calibrated on real history says nothing calibrated about a made-up market, so there
        the analyzer scores transparently (and says so once). ``always``/``never`` force it.
        """
        choice = getattr(self._ai, "use_model", "auto")
        if choice == "never" or (choice == "auto" and synthetic_market):
            if not _warned_model_paths.__contains__("__not_applicable__"):
                _warned_model_paths.add("__not_applicable__")
                log.info(
                    "ai_model_not_applicable",
                    reason="ai.use_model=never" if choice == "never" else
                    "the synthetic simulator market is not the history the model was calibrated on",
                    scoring="transparent (uncalibrated); threshold ai.min_confidence",
                )
            return None
        return self._load_configured_model()

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
        if self._advisor is not None:
            await self._advisor.close()

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
        reasoning = self._reasoning(signal, scores, breakdown, regime, opinion, notes, features)
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
        if self._advisor is not None:
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
        shift, timeframes = multi_timeframe.analyse(market_data, self._timeframes, side)
        if shift and scores.method == "model" and not getattr(self._timeframes, "shift_calibrated", False):
            shift = 0.0  # logged, not applied: a calibrated probability moves only by measured skill
            if timeframes is not None:
                timeframes["applied"] = False
        if shift:
            scores = replace(scores, technical=multi_timeframe.shifted(scores.technical, shift),
                             context=multi_timeframe.shifted(scores.context, shift),
                             sentiment=multi_timeframe.shifted(scores.sentiment, shift))

        weights = {
            "technical": float(self._ai.technical_weight),
            "market_context": float(self._ai.market_context_weight),
            "sentiment": float(self._ai.sentiment_weight),
        }
        pooled = _clip(
            weights["technical"] * scores.technical
            + weights["market_context"] * scores.context
            + weights["sentiment"] * scores.sentiment
        )
        opinion = await self._second_opinion(symbol, side, signal, entry, stop, target, features, regime, scores, pooled)
        confidence = pooled if opinion is None else _clip(
            (1 - ENDPOINT_WEIGHT) * pooled + ENDPOINT_WEIGHT * opinion.confidence
        )

        breakdown: dict[str, Any] = {
            "method": scores.method,
            "technical": round(scores.technical, 6),
            "context": round(scores.context, 6),
            "sentiment": round(scores.sentiment, 6),
            "pooled": round(pooled, 6),
            "confidence": round(confidence, 6),
            "weights": weights,
            "regime": regime,
            "sentiment_score": round(sentiment_score, 4),
            "headlines": len(headlines),
            "strategy_confidence": round(float(signal.confidence), 6),
            "endpoint_confidence": None if opinion is None else round(opinion.confidence, 6),
            "endpoint_weight": 0.0 if opinion is None else ENDPOINT_WEIGHT,
            "stop_fraction": round(stop_fraction, 6),
            "target_fraction": round(target_fraction, 6),
            "breakeven_probability": round(stop_fraction / (stop_fraction + target_fraction), 6),
            "expected_return": round(confidence * target_fraction - (1 - confidence) * stop_fraction, 6),
            **scores.detail,
        }
        breakdown.setdefault("model_probability", None)
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

    def _load_configured_model(self) -> ConfidenceModel | None:
        path = resolve_model_path(self._ai.model_path)
        try:
            return ai_model.load_model(path)
        except ModelFileError as exc:
            key = str(path)
            if key not in _warned_model_paths:
                _warned_model_paths.add(key)
                if path.exists():
                    log.error(
                        "ai_model_invalid",
                        path=key,
                        problem=str(exc),
                        scoring="transparent (uncalibrated) until a valid model is trained",
                        how_to_train="python main.py train --data DIR",
                    )
                else:
                    log.warning(
                        "ai_model_missing",
                        path=key,
                        scoring="transparent (uncalibrated) until a model is trained",
                        how_to_train="python main.py train --data DIR",
                    )
            return None

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

    async def _second_opinion(
        self,
        symbol: str,
        side: Side,
        signal: SignalLike,
        entry: float,
        stop: float,
        target: float,
        features: Mapping[str, float],
        regime: Regime | None,
        scores: Scores,
        pooled: float,
    ) -> SecondOpinion | None:
        if self._advisor is None:
            return None
        prompt = {
            "symbol": symbol,
            "side": side,
            "strategy": str(signal.strategy),
            "strategy_reasoning": str(signal.reasoning)[:500],
            "entry": round(entry, 4),
            "stop": round(stop, 4),
            "target": round(target, 4),
            "regime": regime,
            "features": {k: round(v, 5) for k, v in features.items() if math.isfinite(v)},
            "our_confidence": round(pooled, 4),
            "our_method": scores.method,
        }
        timeout = float(self._ai.model_timeout_seconds)
        try:
            return await asyncio.wait_for(self._advisor.ask(prompt), timeout)
        except (TimeoutError, EndpointError) as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else str(exc)
        except Exception as exc:  # an external opinion must never break a decision
            reason = exc.__class__.__name__
        now = utc(self._clock.now())
        last = self._endpoint_logged_at
        if last is None or (now - last).total_seconds() >= ENDPOINT_LOG_INTERVAL_SECONDS:
            self._endpoint_logged_at = now
            log.warning(
                "ai_endpoint_unavailable",
                endpoint=self._advisor_url(),
                reason=reason,
                timeout_seconds=timeout,
                effect="decision made without the second opinion",
            )
        return None

    def _advisor_url(self) -> str:
        endpoint = str(self._ai.model_endpoint or "")
        return re.sub(r"//[^/@]*@", "//***@", endpoint)  # no credentials embedded in a URL

    def _reasoning(
        self,
        signal: SignalLike,
        scores: Scores,
        breakdown: Mapping[str, Any],
        regime: Regime | None,
        opinion: SecondOpinion | None,
        notes: list[str],
        features: Mapping[str, float],
    ) -> str:
        parts = [f"{signal.strategy}: {signal.reasoning}".strip()]
        stop_pct = breakdown["stop_fraction"] * 100
        target_pct = breakdown["target_fraction"] * 100
        if scores.method == "model":
            parts.append(
                f"model P(+{target_pct:.1f}% before -{stop_pct:.1f}%) = {scores.technical:.3f} "
                f"(recent base rate {breakdown['base_rate']:.3f})"
            )
            rs = features.get("relative_strength_10d", math.nan)
            context = (
                f"regime {regime}, 10-day relative strength {rs * 100:+.1f}% vs SPY"
                if regime and math.isfinite(rs)
                else "no market context"
            )
            parts.append(f"{context} -> context {scores.context:.3f}")
        else:
            parts.append(
                f"transparent score {scores.technical:.3f} (strategy {float(signal.confidence):.2f}, "
                f"checks passed: {', '.join(scores.detail['checks_passed']) or 'none'}); "
                f"regime {regime or 'unknown'} -> context {scores.context:.3f}"
            )
        parts.append(
            f"news {breakdown['sentiment_score']:+.2f} from {breakdown['headlines']} headline(s) "
            f"-> sentiment {scores.sentiment:.3f}"
        )
        if opinion is not None:
            parts.append(f"external model {opinion.confidence:.3f}: {opinion.reasoning}".rstrip(": "))
        parts.append(
            f"confidence {breakdown['confidence']:.3f} (break-even {breakdown['breakeven_probability']:.3f})"
        )
        parts.extend(notes)
        return "; ".join(p for p in parts if p)

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

    @staticmethod
    def _register_endpoint_secret() -> None:
        key = os.environ.get(ENDPOINT_KEY_ENV)
        if not key:
            return
        try:
            from core import logging_setup

            logging_setup.add_secret(key)
        except (ImportError, AttributeError):
            return


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
