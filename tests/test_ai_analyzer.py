"""The AI analyzer: pooled confidence, rejection, decay, fallback scoring, news sentiment and
the external model's second opinion (against real HTTP servers on 127.0.0.1)."""

from __future__ import annotations

import dataclasses

import asyncio
import math
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from structlog.testing import capture_logs

import ai_analyzer
import config
from ai_analyzer import AIAnalyzer, TradeIntent, extract_features
from ai.ai_model import FEATURE_NAMES, load_model
from ai.bracket_model import intent_probability
from market.market_data import BarSeries, MarketData, load_csv_bars
from ai.sentiment import NewsSentiment, load_lexicon, score_headlines
from strategies.base import Signal
from tests.conftest import ROOT, SHARED_DATA

SHIPPED_MODEL = ROOT / "models" / "confidence_model.json"
# 2023-06-01 15:00 UTC: 11:00 New York, a session under way.
NOW = datetime(2023, 6, 1, 15, 0, tzinfo=UTC)


class FixedClock:
    def __init__(self, now: datetime = NOW) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment

    async def sleep(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


def settings(**ai: Any) -> Any:
    ai.setdefault("model_path", str(SHIPPED_MODEL))
    if "min_confidence" in ai:  # these tests move the bar for whichever scoring applies
        ai.setdefault("calibrated_min_confidence", ai["min_confidence"])
        ai.setdefault("gate_mode", "flat")
    # The pooling arithmetic and the pinned decisions are those of the daily inputs alone; the
    # multi-timeframe shift on top is tested in tests/test_multi_timeframe.py.
    return config.load_settings(env_file=None, environ={}, overrides={"ai": ai, "multi_timeframe": {"enabled": False}})


def _until(series: BarSeries, moment: datetime) -> BarSeries:
    cut = int(np.searchsorted(series.ts, moment.timestamp(), side="right"))
    return BarSeries.from_arrays(
        series.ts[:cut], series.open[:cut], series.high[:cut], series.low[:cut],
        series.close[:cut], series.volume[:cut],
    )


@pytest.fixture(scope="module")
def spy() -> BarSeries:
    return _until(load_csv_bars(SHARED_DATA / "daily" / "SPY-1d-1993-01-29-2026-08-07.csv"), NOW)


@pytest.fixture(scope="module")
def msft() -> BarSeries:
    return _until(load_csv_bars(SHARED_DATA / "daily" / "MSFT-1d-2013-01-02-2023-12-29.csv"), NOW)


@pytest.fixture(scope="module")
def model():
    return load_model(SHIPPED_MODEL)


def market(bars: BarSeries, bench: BarSeries | None, news: list[str] | None = None, now: datetime = NOW) -> MarketData:
    return MarketData(
        symbol="MSFT", now=now, daily=bars, last_price=float(bars.close[-1]),
        benchmark=bench, news=list(news or []),
    )


def buy(**kw: Any) -> Signal:
    base = dict(symbol="MSFT", action="buy", confidence=0.7, reasoning="close above 20-day high",
                strategy="breakout")
    base.update(kw)
    return Signal(**base)


# -- the pooled confidence ------------------------------------------------------------------


async def test_approved_intent_pools_calibrated_components(msft, spy, model):
    analyzer = AIAnalyzer(settings(min_confidence=0.05), FixedClock(), model=model)
    with capture_logs() as logs:
        intent = await analyzer.analyze(buy(), market(msft, spy))
    assert isinstance(intent, TradeIntent)
    b = intent.confidence_breakdown
    assert b["method"] == "model" and b["calibrated"] is True
    for key in ("technical", "context", "sentiment"):
        assert 0.0 <= b[key] <= 1.0
    assert intent.confidence == pytest.approx(0.4 * b["technical"] + 0.3 * b["context"] + 0.3 * b["sentiment"], abs=1e-5)
    # The probability of the intent's own bracket (3% / 6%) and horizon (the model's 20 sessions).
    expected, _ = intent_probability(model.bracket_model, market(msft, spy), 0.03, 0.06, 20)
    assert b["model_probability"] == pytest.approx(expected, abs=1e-6)
    assert b["bracket_model"]["horizon_sessions"] == 20
    # No news: the sentiment component carries the technical probability unchanged.
    assert b["sentiment"] == b["technical"]
    assert b["regime"] in ("bull", "bear", "volatile", "range")
    # Default 3% / 6% bracket around the last price.
    entry = float(msft.close[-1])
    assert intent.entry_price == entry
    assert intent.stop_price == pytest.approx(entry * 0.97)
    assert intent.target_price == pytest.approx(entry * 1.06)
    assert intent.side == "buy" and intent.strategy == "breakout" and intent.symbol == "MSFT"
    assert intent.created_at == NOW
    assert intent.decays_at == NOW + timedelta(hours=4)
    assert intent.intent_id == "breakout-MSFT-20230601-001"
    decision = [e for e in logs if e["event"] == "ai_decision"]
    assert len(decision) == 1 and decision[0]["approved"] is True
    assert decision[0]["breakdown"]["weights"] == {"technical": 0.4, "market_context": 0.3, "sentiment": 0.3}
    assert "model P(+6.0% before -3.0%)" in decision[0]["reasoning"]
    # The sequence number makes each intent of the session unique and reproducible.
    again = await analyzer.analyze(buy(), market(msft, spy))
    assert again.intent_id == "breakout-MSFT-20230601-002"


async def test_below_threshold_is_rejected_and_logged(msft, spy, model):
    analyzer = AIAnalyzer(settings(min_confidence=0.99), FixedClock(), model=model)
    with capture_logs() as logs:
        assert await analyzer.analyze(buy(), market(msft, spy)) is None
    rejected = [e for e in logs if e["event"] == "ai_rejected"]
    assert len(rejected) == 1
    assert "below min_confidence 0.990" in rejected[0]["reason"]
    assert rejected[0]["breakdown"]["method"] == "model"
    assert {"technical", "context", "sentiment", "model_probability", "regime"} <= set(rejected[0]["breakdown"])
    assert [e["approved"] for e in logs if e["event"] == "ai_decision"] == [False]


async def test_hold_is_not_a_decision(msft, spy, model):
    analyzer = AIAnalyzer(settings(), FixedClock(), model=model)
    with capture_logs() as logs:
        hold = Signal(symbol="MSFT", action="hold", confidence=0.0, reasoning="nothing", strategy="breakout")
        assert await analyzer.analyze(hold, market(msft, spy)) is None
    assert logs == []


async def test_signal_levels_are_used_and_change_the_probability(msft, spy, model):
    analyzer = AIAnalyzer(settings(min_confidence=0.0), FixedClock(), model=model)
    entry = float(msft.close[-1])
    default = await analyzer.analyze(buy(), market(msft, spy))
    tight = await analyzer.analyze(buy(stop_price=entry * 0.98, target_price=entry * 1.06), market(msft, spy))
    assert tight.stop_price == pytest.approx(entry * 0.98)
    # A closer stop is hit more often: a lower chance to reach the same target first.
    assert tight.confidence_breakdown["technical"] < default.confidence_breakdown["technical"]
    # A stop on the wrong side of the entry is replaced by the configured 3%.
    wrong = await analyzer.analyze(buy(stop_price=entry * 1.01), market(msft, spy))
    assert wrong.stop_price == pytest.approx(entry * 0.97)


async def test_sell_signals_use_the_short_side_model(msft, spy, model):
    analyzer = AIAnalyzer(settings(min_confidence=0.0), FixedClock(), model=model)
    intent = await analyzer.analyze(buy(action="sell"), market(msft, spy))
    entry = float(msft.close[-1])
    assert intent.side == "sell"
    assert intent.stop_price == pytest.approx(entry * 1.03)
    assert intent.target_price == pytest.approx(entry * 0.94)
    features = extract_features(market(msft, spy))
    assert intent.confidence_breakdown["model_probability"] == pytest.approx(
        model.predict_proba(features, "short"), abs=1e-6
    )


# -- decay ----------------------------------------------------------------------------------


async def test_confidence_decays_linearly_to_zero(msft, spy, model):
    analyzer = AIAnalyzer(settings(min_confidence=0.0, confidence_decay_hours=2.0), FixedClock(), model=model)
    intent = await analyzer.analyze(buy(), market(msft, spy))
    c = intent.confidence
    assert intent.confidence_at(NOW) == c
    assert intent.confidence_at(NOW - timedelta(minutes=5)) == c
    assert intent.confidence_at(NOW + timedelta(hours=1)) == pytest.approx(c / 2)
    assert intent.confidence_at(NOW + timedelta(minutes=90)) == pytest.approx(c / 4)
    assert intent.confidence_at(NOW + timedelta(hours=2)) == 0.0
    assert not intent.is_expired(NOW + timedelta(minutes=119))
    assert intent.is_expired(NOW + timedelta(hours=2))
    with pytest.raises(ValueError, match="naive"):
        intent.confidence_at(datetime(2023, 6, 1, 16, 0))


# -- no model -------------------------------------------------------------------------------


async def test_missing_model_is_logged_once_and_transparent_scoring_used(msft, spy, tmp_path):
    absent = tmp_path / "nowhere" / "model.json"
    with capture_logs() as logs:
        first = AIAnalyzer(settings(model_path=str(absent), min_confidence=0.0), FixedClock())
        AIAnalyzer(settings(model_path=str(absent), min_confidence=0.0), FixedClock())
        intent = await first.analyze(buy(confidence=0.8), market(msft, spy))
    missing = [e for e in logs if e["event"] == "ai_model_missing"]
    assert len(missing) == 1
    assert missing[0]["path"] == str(absent)
    assert "python main.py train --data DIR" in missing[0]["how_to_train"]
    assert first.model is None
    b = intent.confidence_breakdown
    assert b["method"] == "transparent" and b["calibrated"] is False
    passed, failed = b["checks_passed"], b["checks_failed"]
    assert len(passed) + len(failed) == 5
    assert b["technical"] == pytest.approx(0.6 * 0.8 + 0.4 * len(passed) / 5)
    assert "transparent score" in intent.reasoning


async def test_invalid_model_file_is_reported_and_not_used(tmp_path, msft, spy):
    bad = tmp_path / "model.json"
    bad.write_text('{"format": "trading-daemon-confidence-model", "format_version": 0}')
    with capture_logs() as logs:
        analyzer = AIAnalyzer(settings(model_path=str(bad), min_confidence=0.0), FixedClock())
    assert analyzer.model is None
    invalid = [e for e in logs if e["event"] == "ai_model_invalid"]
    assert len(invalid) == 1 and "format_version=0" in invalid[0]["problem"]


async def test_short_history_falls_back_to_transparent_scoring(msft, spy, model):
    # A model file without the bracket model needs every feature: 40 bars are too few.
    old = dataclasses.replace(model, bracket_model=None)
    analyzer = AIAnalyzer(settings(min_confidence=0.0), FixedClock(), model=old)
    intent = await analyzer.analyze(buy(), market(msft.tail(40), spy))
    assert intent.confidence_breakdown["method"] == "transparent"
    assert "model not applicable" in intent.reasoning and "beta_60d" in intent.reasoning


async def test_the_probability_is_for_the_intents_own_bracket_and_horizon(msft, spy, model):
    analyzer = AIAnalyzer(settings(min_confidence=0.0), FixedClock(), model=model)
    md = lambda: market(msft, spy)  # noqa: E731
    entry = float(msft.close[-1])
    wide = await analyzer.analyze(buy(stop_price=entry * 0.955, target_price=entry * 1.09), md())
    narrow = await analyzer.analyze(buy(stop_price=entry * 0.985, target_price=entry * 1.03), md())
    short_hold = await analyzer.analyze(buy(max_hold_days=5), md())
    default = await analyzer.analyze(buy(), md())
    p = {name: i.confidence_breakdown["model_probability"]
         for name, i in (("wide", wide), ("narrow", narrow), ("short", short_hold), ("default", default))}
    assert len(set(p.values())) == 4, p  # 1.5%/3%, 3%/6% and 4.5%/9% differ; 5 sessions differ from 20
    assert p["short"] < p["default"]  # fewer sessions to reach the target
    assert short_hold.confidence_breakdown["bracket_model"]["horizon_sessions"] == 5


def test_transparent_scores_follow_the_documented_rules():
    features = {name: math.nan for name in FEATURE_NAMES}
    features.update(distance_ma20=0.02, macd_above_signal=1.0, rsi_14=75.0, volume_ratio_1d=1.4,
                    relative_strength_10d=-0.01)
    scores = ai_analyzer.transparent_scores(0.5, features, "bull", 0.5, "buy")
    assert scores.detail["checks_passed"] == ["distance_ma20", "macd_above_signal", "volume_ratio_1d"]
    assert scores.technical == pytest.approx(0.6 * 0.5 + 0.4 * 3 / 5)
    assert scores.context == pytest.approx(scores.technical + 0.05)
    assert scores.sentiment == pytest.approx(scores.technical + 0.05)
    bear = ai_analyzer.transparent_scores(0.5, features, "bear", -1.0, "buy")
    assert bear.context == pytest.approx(bear.technical - 0.10)
    assert bear.sentiment == pytest.approx(bear.technical - 0.10)


# -- features at inference --------------------------------------------------------------------


def test_partial_day_volume_is_projected_to_a_full_day(msft, spy):
    # NOW is 11:00 New York: the last daily bar is today's, about 29% of a day's volume.
    complete = market(msft, spy, now=NOW + timedelta(hours=8))
    partial = market(msft, spy)
    full = extract_features(complete)["volume_ratio_1d"]
    projected = extract_features(partial)["volume_ratio_1d"]
    assert projected == pytest.approx(full / partial.volume_progress)
    assert extract_features(market(msft, None))["beta_60d"] == 1.0


# -- sentiment ------------------------------------------------------------------------------


def test_headline_scores():
    assert load_lexicon() is True  # loaded ahead (as a backtest does), then used as it is
    assert score_headlines(["Microsoft beats estimates, record profit, shares surge"]) > 0.2
    assert score_headlines(["Microsoft hit by lawsuit and fraud probe; shares plunge"]) < -0.2
    assert score_headlines(["Microsoft to hold annual meeting on Tuesday"]) == 0.0
    assert score_headlines([]) == 0.0
    assert score_headlines(["", "   "]) == 0.0


async def test_news_moves_the_sentiment_component_by_side(msft, spy, model):
    analyzer = AIAnalyzer(settings(min_confidence=0.0), FixedClock(), model=model)
    good = ["Microsoft beats estimates, record profit, shares surge"]
    long_good = await analyzer.analyze(buy(), market(msft, spy, news=good))
    b = long_good.confidence_breakdown
    assert b["sentiment_score"] > 0.2 and b["headlines"] == 1
    assert b["sentiment"] > b["technical"]
    short_good = await analyzer.analyze(buy(action="sell"), market(msft, spy, news=good))
    assert short_good.confidence_breakdown["sentiment"] < short_good.confidence_breakdown["technical"]
    off = AIAnalyzer(settings(min_confidence=0.0, use_news_sentiment=False), FixedClock(), model=model)
    neutral = await off.analyze(buy(), market(msft, spy, news=good))
    assert neutral.confidence_breakdown["sentiment_score"] == 0.0


class FakeNewsGateway:
    """A broker double: answers get_news from a list, or fails when told to."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], datetime | None, int]] = []
        self.fail = False

    async def get_news(self, symbols, start=None, limit=50):
        self.calls.append((list(symbols), start, limit))
        if self.fail:
            raise ConnectionResetError("news feed down")
        articles = [
            {"headline": "Microsoft beats estimates, shares surge", "symbols": ["MSFT"]},
            {"headline": "Apple hit by fraud probe and terrible losses", "symbols": ["AAPL"]},
        ]
        return [a for a in articles if set(a["symbols"]) & set(symbols)]


async def test_news_sentiment_caches_and_fails_to_neutral_once():
    gateway = FakeNewsGateway()
    clock = FixedClock()
    news = NewsSentiment(gateway, clock=clock, ttl_seconds=600, failure_ttl_seconds=60)
    await news.prefetch(["MSFT", "AAPL"])
    msft_reading = await news.score("MSFT")
    aapl_reading = await news.score("aapl")
    assert msft_reading.score > 0 > aapl_reading.score
    assert len(gateway.calls) == 1  # one request for both symbols, then the cache
    assert gateway.calls[0][1] == NOW - timedelta(hours=24)
    clock.moment += timedelta(seconds=601)
    gateway.fail = True
    with capture_logs() as logs:
        assert (await news.score("MSFT")).score == 0.0
        clock.moment += timedelta(seconds=61)
        assert (await news.score("MSFT")).score == 0.0
    assert len(gateway.calls) == 3
    assert [e["event"] for e in logs] == ["news_sentiment_unavailable"]
    gateway.fail = False
    clock.moment += timedelta(seconds=61)
    with capture_logs() as logs:
        assert (await news.score("MSFT")).score > 0
    assert [e["event"] for e in logs] == ["news_sentiment_restored"]


async def test_analyzer_fetches_news_when_the_loop_gave_none(msft, spy, model):
    gateway = FakeNewsGateway()
    news = NewsSentiment(gateway, clock=FixedClock())
    analyzer = AIAnalyzer(settings(min_confidence=0.0), FixedClock(), model=model, news_source=news)
    intent = await analyzer.analyze(buy(), market(msft, spy))
    assert intent.confidence_breakdown["headlines"] == 1
    assert intent.confidence_breakdown["sentiment_score"] > 0


# -- the external model's second opinion ------------------------------------------------------


class ChatServer:
    """An OpenAI-compatible /chat/completions endpoint on 127.0.0.1 with a chosen behaviour."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.requests: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append({"headers": dict(request.headers), "body": await request.json()})
        if self.behaviour == "hang":
            await self.release.wait()
        if self.behaviour == "garbage":
            return web.Response(text="<html>502 bad gateway</html>", content_type="text/html")
        content = '{"confidence": 0.9, "reasoning": "strong earnings trend"}'
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": content}}]})

    async def __aenter__(self) -> ChatServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self.runner is not None
        await self.runner.cleanup()


async def test_endpoint_opinion_is_blended(msft, spy, model, monkeypatch):
    monkeypatch.setenv("AI_MODEL_API_KEY", "sk-test-secret-value-123")
    async with ChatServer("answer") as server:
        analyzer = AIAnalyzer(
            settings(min_confidence=0.0, model_endpoint=server.url, model_timeout_seconds=5.0),
            FixedClock(), model=model,
        )
        try:
            with capture_logs() as logs:
                intent = await analyzer.analyze(buy(), market(msft, spy))
        finally:
            await analyzer.close()
    b = intent.confidence_breakdown
    assert b["endpoint_confidence"] == 0.9 and b["endpoint_weight"] == 0.2
    assert intent.confidence == pytest.approx(0.8 * b["pooled"] + 0.2 * 0.9, abs=1e-5)
    assert "external model 0.900: strong earnings trend" in intent.reasoning
    sent = server.requests[0]
    assert sent["headers"]["Authorization"] == "Bearer sk-test-secret-value-123"
    assert sent["body"]["messages"][-1]["role"] == "user"
    assert "sk-test-secret-value-123" not in repr(logs)


async def test_hanging_endpoint_cannot_stall_the_decision(msft, spy, model):
    async with ChatServer("hang") as server:
        clock = FixedClock()
        analyzer = AIAnalyzer(
            settings(min_confidence=0.0, model_endpoint=server.url, model_timeout_seconds=0.2),
            clock, model=model,
        )
        try:
            with capture_logs() as logs:
                # The guard only fails a broken implementation; a correct one returns after ~0.2 s.
                intent = await asyncio.wait_for(analyzer.analyze(buy(), market(msft, spy)), 30)
                again = await asyncio.wait_for(analyzer.analyze(buy(), market(msft, spy)), 30)
                clock.moment += timedelta(seconds=61)
                await asyncio.wait_for(analyzer.analyze(buy(), market(msft, spy)), 30)
        finally:
            await analyzer.close()
    assert intent.confidence_breakdown["endpoint_confidence"] is None
    assert intent.confidence == pytest.approx(intent.confidence_breakdown["pooled"], abs=1e-6)
    assert again is not None
    unavailable = [e for e in logs if e["event"] == "ai_endpoint_unavailable"]
    # Three failures, logged at most once a minute: the first and the one 61 s later.
    assert len(unavailable) == 2
    assert unavailable[0]["reason"] == "timeout"
    assert len(server.requests) == 3


async def test_garbage_from_the_endpoint_is_ignored(msft, spy, model):
    async with ChatServer("garbage") as server:
        analyzer = AIAnalyzer(
            settings(min_confidence=0.0, model_endpoint=server.url, model_timeout_seconds=5.0),
            FixedClock(), model=model,
        )
        try:
            with capture_logs() as logs:
                intent = await analyzer.analyze(buy(), market(msft, spy))
        finally:
            await analyzer.close()
    assert intent.confidence_breakdown["endpoint_confidence"] is None
    unavailable = [e for e in logs if e["event"] == "ai_endpoint_unavailable"]
    assert len(unavailable) == 1 and "JSON" in unavailable[0]["reason"]


async def test_unreachable_endpoint_is_ignored(msft, spy, model):
    async with ChatServer("answer") as server:
        url = server.url  # the server is gone after the block: the port refuses connections
    analyzer = AIAnalyzer(
        settings(min_confidence=0.0, model_endpoint=url, model_timeout_seconds=5.0),
        FixedClock(), model=model,
    )
    try:
        with capture_logs() as logs:
            intent = await analyzer.analyze(buy(), market(msft, spy))
    finally:
        await analyzer.close()
    assert intent is not None
    assert [e["reason"] for e in logs if e["event"] == "ai_endpoint_unavailable"] == ["ClientConnectorError"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"confidence": 1.5}', "outside 0..1"),
        ('{"confidence": "high"}', "not a number"),
        ('["a"]', "not a JSON object"),
        ("I think it's good", "not a JSON object"),
    ],
)
def test_endpoint_answers_are_validated(content, problem):
    with pytest.raises(ai_analyzer.EndpointError, match=problem):
        ai_analyzer._parse_opinion({"choices": [{"message": {"content": content}}]})
    fenced = ai_analyzer._parse_opinion({"choices": [{"message": {"content": '```json\n{"confidence": 0.4}\n```'}}]})
    assert fenced.confidence == 0.4


def test_calibrated_model_is_held_to_its_bracket_gate_not_a_flat_bar() -> None:
    """A trained model's probability is judged against its own bracket's gate (ai/gate.py),
    not the transparent scores' 65% and no longer a flat 0.40."""
    s = settings()
    assert s.ai.min_confidence == 0.65
    assert s.ai.gate_mode == "break_even" and s.ai.gate_margin == 0.03
    assert s.ai.calibrated_min_confidence == 0.0  # an optional floor only


# -- identity: thousands of real ideas, bit for bit ------------------------------------------
#
# The analyzer is tuned for speed (features at one row, cached per-session values, cached
# headline scores...). Every optimisation must leave each decision exactly as it was: the
# same intent (confidence to the last bit, breakdown and its key order, reasoning, times,
# ids), the same None, the same log events and fields. Bit for bit, each idea's features are
# compared with the straightforward path in the same run; ``IDENTITY_DIGESTS`` pin every
# outcome with floats to 9 significant digits (so that a last-bit change in a numpy or VADER
# release does not fail them). They were recorded from the tuned code after the bit-level
# digests of the straightforward implementation (before any tuning) had matched it. Beside
# them each idea's features are compared with the straightforward path
# (:func:`ai.ai_model.feature_matrix` rows), its headline score with VADER called directly and
# its model probability with the vectorised model.

IDENTITY_FILES = (
    "AAPL-1d-2013-01-02-2023-12-29.csv", "AMZN-1d-2013-01-02-2023-12-29.csv",
    "GOOGL-1d-2013-01-02-2023-12-29.csv", "MSFT-1d-2013-01-02-2023-12-29.csv",
    "NVDA-1d-2013-01-02-2023-12-29.csv", "TSLA-1d-2010-06-29-2026-08-07.csv",
    "QQQ-1d-1999-03-10-2026-08-07.csv", "IWM-1d-2000-05-26-2021-03-31.csv",
    "ORCL-1d-1995-01-03-2014-12-31.csv", "YHOO-1d-1996-04-12-2015-12-31.csv",
)
IDENTITY_IDEAS_PER_FILE = 320
HEADLINE_SETS: tuple[tuple[str, ...], ...] = (
    (),
    ("Shares surge after record profit and strong guidance",),
    ("Company hit by fraud probe; shares plunge", "Analysts cut targets after weak quarter"),
    ("Annual meeting on Tuesday", "Annual meeting on Tuesday", "  ", ""),
    ("Upgrade: buy rating, great growth ahead", " Shares surge after record profit and strong guidance "),
)
IDENTITY_DIGESTS: dict[str, str] = {
    "AAPL": "5e35b4ed1263c969c53ec58f2df7209d787958b1b0714dbab4a242a1f99cd437",
    "AMZN": "76d96685a753d96ead8cf0fb0c92e1df75fe58b387485ceb8f0f8cfaaf6041b2",
    "GOOGL": "916304a364d68b13c8fe976429897055bb99a305665e9d7773632fc21f8fef84",
    "MSFT": "d60974e900f249301d6f678d1597bbe03dea9b317a288139bdd5ed4272daf7e0",
    "NVDA": "c19e982befdfece839275255c51eaea82b2bbe141c6c1b8ec6c90bb561c45a5f",
    "TSLA": "bbb6bbc5a69915675baf1ac3e120c2c17b77040d8daccef0f6c2d2ccc7e642ae",
    "QQQ": "179d1277f7bbeb00a2a41b03977a2595af6ba53adcfa2491dc76c71021a19d25",
    "IWM": "d9aadc8b47f2977788b6aa74858e2f1b67ac36442df0cca6bf48a035ae116e3a",
    "ORCL": "11aaef0b32fbbaf66171c35b0f8870ebab8a30043944769359d4360a73e5879d",
    "YHOO": "7305a0bec041b473012f69068a0ef10956d00b5adf3cd7c8bf0854b339dd6584",
}
#: Set to a file path to write every idea's record there (to diff two implementations).
IDENTITY_DUMP_ENV = "AI_IDENTITY_DUMP"


class _IdentityNewsGateway:
    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.calls = 0

    async def get_news(self, symbols, start=None, limit=50):
        self.calls += 1
        k = self.calls
        articles = [
            {"headline": HEADLINE_SETS[(k + j) % len(HEADLINE_SETS)][0] if HEADLINE_SETS[(k + j) % len(HEADLINE_SETS)] else "",
             "symbols": [self.symbol] if j % 2 == 0 else ["OTHER"]}
            for j in range(k % 4)
        ]
        return articles


def _canonical(value: Any, float_text: Callable[[float], str] = float.hex) -> str:
    """repr with floats written by ``float_text``: in hex by default, so that equal strings
    mean bit-identical values."""
    if isinstance(value, float):
        return float_text(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_canonical(v, float_text)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_canonical(v, float_text) for v in value)
        return ("[" + inner + "]") if isinstance(value, list) else ("(" + inner + ")")
    return repr(value)


def _pinned(value: Any) -> str:
    """:func:`_canonical` with floats to 9 significant digits: what the recorded digests pin.
    Bit-level identity is checked against the straightforward paths in the same run; the
    digests pin the outcomes across versions without failing on a last-bit change in numpy
    or VADER."""
    return _canonical(value, lambda number: format(number, ".9g"))


def _intent_fields(intent: TradeIntent | None) -> Any:
    if intent is None:
        return None
    return {name: getattr(intent, name) for name in TradeIntent.__dataclass_fields__}


def _identity_cases(bars: BarSeries, bench_all: BarSeries, symbol: str):
    """(index, MarketData, Signal, analyzer key) for ideas spread over the file's history."""
    n = len(bars)
    first = 30
    step = max(1, (n - first) // IDENTITY_IDEAS_PER_FILE)
    for k, i in enumerate(range(first, n, step)):
        day_ts = int(bars.ts[i])
        live = k % 3 == 0  # today's partial bar is the last row (intraday), else backtest-like
        if live:
            daily = bars.slice(max(0, i - 600), i + 1)
            now = datetime.fromtimestamp(day_ts, UTC).replace(hour=14 + k % 6, minute=(7 * k) % 60)
            last_price = float(bars.close[i]) * (1.0 + ((k % 7) - 3) * 0.001)
        else:
            daily = bars.slice(max(0, i - 300 - k % 250), i)
            now = datetime.fromtimestamp(day_ts, UTC).replace(hour=14, minute=30)
            last_price = float(bars.open[i]) if k % 19 else math.nan
        if k % 23 == 5:  # a damaged bar inside the window: the feature fallback path
            volume = np.array(daily.volume, dtype=float)
            volume[len(volume) // 2] = math.nan
            daily = BarSeries.from_arrays(daily.ts, daily.open, daily.high, daily.low, daily.close, volume)
        bench = None
        if k % 7 != 3:
            cut = int(np.searchsorted(bench_all.ts, daily.ts[-1], side="right"))
            bench = bench_all.slice(max(0, cut - 600 + k % 90), cut)
        regime = None
        if bench is not None and k % 2 == 0 and len(bench) >= 60:
            regime = AIAnalyzer.detect_regime(bench)
        side = "sell" if k % 3 == 1 else "buy"
        stop = target = None
        ref = last_price if math.isfinite(last_price) else float(daily.close[-1])
        if k % 4 == 0:
            stop, target = (ref * 0.95, ref * 1.12) if side == "buy" else (ref * 1.04, ref * 0.9)
        elif k % 4 == 1:
            stop, target = ref * 1.01, ref * 0.99  # wrong sides for a buy: configured bracket
        signal = SimpleNamespace(  # a Signal would refuse the wrong-side levels
            symbol=symbol.lower() if k % 5 == 0 else symbol, action=side, confidence=(k % 10) / 10 + 0.05,
            reasoning=f"idea {k}", strategy=("breakout", "mean_reversion", "enhanced_momentum")[k % 3],
            stop_price=stop, target_price=target, max_hold_days=(None, 5, 20)[k % 3],
            metadata={"k": k} if k % 2 else {},
        )
        news = list(HEADLINE_SETS[k % len(HEADLINE_SETS)]) if k % 6 else []
        md = MarketData(symbol=symbol, now=now, daily=daily, last_price=last_price,
                        benchmark=bench, regime=regime, news=news)
        key = ("transparent" if k % 11 == 0 else "news" if k % 6 == 0 else
               "open" if k % 5 == 2 else "default")
        yield i, md, signal, key


def _identity_analyzers(symbol: str, clock: FixedClock, model) -> dict[str, AIAnalyzer]:
    news = NewsSentiment(_IdentityNewsGateway(symbol), clock=clock, ttl_seconds=60)
    return {
        "default": AIAnalyzer(settings(), clock, model=model),
        "open": AIAnalyzer(settings(min_confidence=0.0), clock, model=model),
        "news": AIAnalyzer(settings(min_confidence=0.2), clock, model=model, news_source=news),
        "transparent": AIAnalyzer(settings(min_confidence=0.5, use_model="never"), clock),
    }


async def test_analyzer_decisions_are_identical_on_thousands_of_real_ideas(model):
    import hashlib

    from ai import ai_model
    from ai_analyzer import FEATURE_WINDOW_BARS

    vader = __import__("vaderSentiment.vaderSentiment", fromlist=["x"]).SentimentIntensityAnalyzer()
    bench_all = load_csv_bars(SHARED_DATA / "daily" / "SPY-1d-1993-01-29-2026-08-07.csv")
    digests: dict[str, str] = {}
    dump_path = os.environ.get(IDENTITY_DUMP_ENV)
    dump = open(dump_path, "w", encoding="utf-8") if dump_path else None  # noqa: SIM115
    counts = {"ideas": 0, "intents": 0, "model": 0}
    for name in IDENTITY_FILES:
        symbol = name.split("-")[0]
        bars = load_csv_bars(SHARED_DATA / "daily" / name)
        clock = FixedClock()
        analyzers = _identity_analyzers(symbol, clock, model)
        digest = hashlib.sha256()
        for i, md, signal, key in _identity_cases(bars, bench_all, symbol):
            clock.moment = md.now
            with capture_logs() as logs:
                intent = await analyzers[key].analyze(signal, md)
            record = _pinned([i, key, _intent_fields(intent), logs])
            digest.update(record.encode())
            if dump is not None:
                dump.write(record + "\n")
            counts["ideas"] += 1
            counts["intents"] += intent is not None
            # The straightforward paths, idea by idea.
            features = md.derived.get(ai_analyzer.FEATURES_CACHE_KEY)
            if features is not None:
                daily = md.daily.tail(FEATURE_WINDOW_BARS)
                volume = np.array(daily.volume, dtype=float)
                progress = md.volume_progress
                if progress < 1.0 and len(volume) > 1:
                    volume[-1] = volume[-1] / progress if progress >= 0.1 else float(volume[-21:-1].mean())
                bench_close = None
                if md.benchmark is not None and len(md.benchmark):
                    b = md.benchmark.tail(FEATURE_WINDOW_BARS + 50)
                    bench_close = ai_model.align_benchmark(daily.ts, b.ts, b.close)
                matrix = ai_model.feature_matrix(daily.high, daily.low, daily.close, volume, bench_close)
                expected = {f: float(matrix[f][-1]) for f in FEATURE_NAMES}
                assert _canonical(features) == _canonical(expected), (symbol, i)
                if all(math.isfinite(v) for v in features.values()) and key != "transparent":
                    side = "long" if signal.action == "buy" else "short"
                    row = np.array([[features[f] for f in FEATURE_NAMES]])
                    p = float(model.sides[side].probabilities(row)[0])
                    assert model.predict_proba(features, side) == p
                    counts["model"] += 1
            if md.news:
                distinct = list(dict.fromkeys(h.strip() for h in md.news if h and h.strip()))
                if distinct:
                    raw = sum(float(vader.polarity_scores(h)["compound"]) for h in distinct) / len(distinct)
                    assert score_headlines(md.news) == max(-1.0, min(1.0, raw))
        digests[symbol] = digest.hexdigest()
    if dump is not None:
        dump.close()
    assert counts["ideas"] > 3000 and counts["intents"] > 500 and counts["model"] > 2000, counts
    assert digests == IDENTITY_DIGESTS
