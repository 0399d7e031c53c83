"""prefilter: the signal masks never miss a signal of the strategy they stand for.

* Every daily file of ``shared/data/daily``, every session with at least 30 bars of history,
  windows, benchmark and regime built as ``backtest.BacktestLoop._daily_market_data`` builds
  them, ``defensive`` False and True: wherever a strategy returns buy (sell), ``may_buy``
  (``may_sell``) is True, and the masks are selective (the table is printed; ``-s`` shows it).
* Random walks with jumps and volume spikes, windows starting anywhere, any regime.
* Crafted series that make each strategy signal both ways.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

import config
from market import indicators
from backtest import prefilter
from ai_analyzer import AIAnalyzer
from backtest.data import DailyHistory
from backtest.loop import PRIME_SESSIONS
from core.clock import EXCHANGE_TZ
from market.market_data import BarSeries, MarketData, day_timestamp, load_csv_bars
from strategies import BUILT_IN
from strategies.base import BaseStrategy, Signal
from strategies.macd_crossover import MACDCrossover
from strategies.mean_reversion import MeanReversion
from strategies.sma_crossover import SmaCrossover
from tests.conftest import SHARED_DATA
from market.trading_calendar import TradingCalendar

STRATEGY_CLASSES: tuple[type[BaseStrategy], ...] = (SmaCrossover, *BUILT_IN)
MIN_BARS = 30  # _daily_market_data skips a symbol with fewer completed bars
NOW = datetime(2024, 1, 2, 14, 30, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def settings() -> Any:
    return config.load_settings(env_file=None)


def run(coroutine: Any) -> Signal:
    """Drive a strategy's coroutine: the built-in ones never suspend."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coroutine.close()
    raise AssertionError("a strategy awaited something")


@dataclass
class Tally:
    sessions: int = 0
    may_buy: int = 0
    may_sell: int = 0
    buys: int = 0
    sells: int = 0


def check(
    strategies: list[BaseStrategy],
    masks: dict[tuple[str, bool], prefilter.SignalMasks],
    md: MarketData,
    i: int,
    tallies: dict[tuple[str, bool], Tally],
    misses: list[str],
) -> dict[tuple[str, bool], str]:
    """Evaluate every strategy on ``md`` (session ``i``) for both defensive values."""
    answers = {}
    for defensive in (False, True):
        md.defensive = defensive
        for strategy in strategies:
            key = (strategy.name, defensive)
            mask = masks[key]
            tally = tallies.setdefault(key, Tally())
            tally.sessions += 1
            tally.may_buy += bool(mask.may_buy[i])
            tally.may_sell += bool(mask.may_sell[i])
            action = answers[key] = run(strategy.evaluate_opportunity(md.symbol, md)).action
            if action == "buy":
                tally.buys += 1
                if not mask.may_buy[i]:
                    misses.append(f"{key} {md.symbol} bar {i} ({md.now.date()}): buy not in may_buy")
            elif action == "sell":
                tally.sells += 1
                if not mask.may_sell[i]:
                    misses.append(f"{key} {md.symbol} bar {i} ({md.now.date()}): sell not in may_sell")
    return answers


def all_masks(
    strategies: list[BaseStrategy], history: Any, settings: Any, symbol: str | None = None
) -> dict[tuple[str, bool], prefilter.SignalMasks]:
    out = {}
    for strategy in strategies:
        for defensive in (False, True):
            masks = prefilter.masks_for(strategy, history, settings, defensive=defensive, symbol=symbol)
            assert masks is not None, strategy.name
            assert masks.may_buy.dtype == bool and masks.may_buy.shape == (len(history.close),)
            assert masks.may_sell.dtype == bool and masks.may_sell.shape == (len(history.close),)
            out[(strategy.name, defensive)] = masks
    return out


# -- the real daily bars ---------------------------------------------------------------------------


def daily_histories(calendar: TradingCalendar) -> list[DailyHistory]:
    """One DailyHistory per daily file (a symbol with several files gives several histories)."""
    out = []
    for path in sorted((SHARED_DATA / "daily").glob("*.csv")):
        bars = load_csv_bars(path)
        days = [datetime.fromtimestamp(int(t), EXCHANGE_TZ).date() for t in bars.ts]
        keep = [k for k, day in enumerate(days) if calendar.is_session(day)]  # as load_history
        symbol = path.name.split("-")[0]
        out.append(DailyHistory(
            symbol, tuple(days[k] for k in keep), bars.ts[keep], bars.open[keep], bars.high[keep],
            bars.low[keep], bars.close[keep], bars.volume[keep],
        ))
    return out


def test_masks_cover_every_signal_on_the_real_daily_bars(settings: Any) -> None:
    calendar = TradingCalendar()
    histories = daily_histories(calendar)
    assert len({h.symbol for h in histories}) >= 10
    spy = next(h for h in histories if h.symbol == "SPY")
    lookback = timedelta(days=max(int(settings.strategy.lookback_days) * 2, 300))  # BacktestLoop._lookback
    strategies = [cls(settings) for cls in STRATEGY_CLASSES]
    sessions: dict[date, tuple[datetime, float, int, BarSeries | None, str | None]] = {}

    def session(day: date) -> tuple[datetime, float, int, BarSeries | None, str | None]:
        if day not in sessions:  # what _daily_market_data reads at the session's open
            now = calendar.open_close(day)[0]
            since, before = (now - lookback).timestamp(), day_timestamp(day)
            benchmark = spy.window(since, before)
            regime = (AIAnalyzer.detect_regime(benchmark)
                      if benchmark is not None and len(benchmark) >= 60 else None)
            sessions[day] = (now, since, before, benchmark, regime)
        return sessions[day]

    tallies: dict[tuple[str, bool], Tally] = {}
    misses: list[str] = []
    with_regime = Tally()
    union: list[int] = [0, 0]  # sessions, sessions where a default strategy may signal
    for history in histories:
        masks = all_masks(strategies, history, settings)
        default = [masks[(s.name, False)].may_signal for s in strategies
                   if s.name in settings.strategy.enabled]
        regimes = [session(day)[4] for day in history.days]
        momentum = prefilter.masks_for("enhanced_momentum", history, settings, defensive=False, regimes=regimes)
        assert momentum is not None
        todo: list[tuple[int, date, str | None, MarketData]] = []
        for i, day in enumerate(history.days):
            now, since, before, benchmark, regime = session(day)
            daily = history.window(since, before)
            if daily is None or len(daily) < MIN_BARS:
                continue
            todo.append((i, day, regime, MarketData(
                symbol=history.symbol, now=now, daily=daily, intraday=None,
                last_price=float(history.open[i]), bid=None, ask=None,
                prev_close=float(daily.close[-1]), benchmark=benchmark, regime=regime,
                defensive=False, news=[],
            )))
        for k, (i, day, regime, md) in enumerate(todo):
            if k % PRIME_SESSIONS == 0:  # as BacktestLoop._prime_snapshots: states computed ahead
                indicators.prime_snapshots([item[3].daily for item in todo[k : k + PRIME_SESSIONS]],
                                           int(settings.strategy.rsi_period))
            answers = check(strategies, masks, md, i, tallies, misses)
            with_regime.may_buy += bool(momentum.may_buy[i])
            if answers[("enhanced_momentum", False)] == "buy" and not momentum.may_buy[i]:
                misses.append(f"enhanced_momentum {history.symbol} {day} ({regime}): buy not in the regime-aware may_buy")
            union[0] += 1
            union[1] += any(bool(m[i]) for m in default)

    print(f"\nprefilter selectivity over {union[0]} symbol-sessions "
          f"({len(histories)} daily files); signals = what the strategy returned")
    for (name, defensive), t in sorted(tallies.items()):
        print(f"  {name:18s} defensive={defensive!s:5s}  may_buy {t.may_buy / t.sessions:6.2%} "
              f"(buys {t.buys / t.sessions:6.2%})  may_sell {t.may_sell / t.sessions:6.2%} "
              f"(sells {t.sells / t.sessions:6.2%})")
    print(f"  enhanced_momentum given the sessions' regimes: may_buy {with_regime.may_buy / union[0]:6.2%}")
    print(f"  any of {settings.strategy.enabled} (defensive=False): {union[1] / union[0]:.2%}")

    assert not misses, "\n".join(misses[:20])
    assert union[0] > 50_000
    for (name, defensive), t in tallies.items():
        if name != "defensive":  # in defensive mode it signals on a fifth of its symbols' sessions
            assert t.may_buy / t.sessions < 0.10 and t.may_sell / t.sessions < 0.10, (name, t)
        assert t.buys and t.sells or (name == "defensive" and not defensive), (name, defensive, t)


# -- random series, windows starting anywhere -------------------------------------------------------


@dataclass(frozen=True)
class Arrays:
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


def bar_series(a: Arrays, lo: int, hi: int) -> BarSeries:
    ts = [day_timestamp(date(2000, 1, 3)) + 86_400 * k for k in range(lo, hi)]
    return BarSeries.from_arrays(ts, a.open[lo:hi], a.high[lo:hi], a.low[lo:hi], a.close[lo:hi], a.volume[lo:hi])


def random_walk(rng: np.random.Generator, n: int) -> Arrays:
    returns = rng.normal(0.0, 0.015, n) + np.where(rng.random(n) < 0.05, rng.normal(0.0, 0.08, n), 0.0)
    trend = np.repeat(rng.normal(0.0, 0.004, n // 40 + 1), 40)[:n]  # regimes of 40 bars
    close = 50.0 * np.exp(np.cumsum(returns + trend))
    gap = np.exp(rng.normal(0.0, 0.01, n))
    open_ = np.concatenate([[close[0]], close[:-1]]) * gap
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.01, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.01, n)))
    volume = 1e6 * np.exp(rng.normal(0.0, 0.3, n)) * np.where(rng.random(n) < 0.1, rng.uniform(1.5, 5.0, n), 1.0)
    return Arrays(open_, high, low, close, np.round(volume))


REGIMES = ("bull", "bear", "range", "volatile", None)


def walk_sessions(
    a: Arrays, rng: np.random.Generator, symbol: str, regimes: list[str | None]
) -> Iterator[tuple[int, MarketData]]:
    for i in range(MIN_BARS, len(a.close)):
        lo = int(rng.integers(0, i - MIN_BARS + 1))  # any window start, at least 30 bars
        md = MarketData(symbol=symbol, now=NOW, daily=bar_series(a, lo, i), last_price=float(a.open[i]),
                        prev_close=float(a.close[i - 1]), regime=regimes[i])
        yield i, md


def test_masks_cover_every_signal_on_random_walks_with_any_window_start(settings: Any) -> None:
    strategies = [cls(settings) for cls in STRATEGY_CLASSES]
    tallies: dict[tuple[str, bool], Tally] = {}
    misses: list[str] = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        arrays = random_walk(rng, 700)
        masks = all_masks(strategies, arrays, settings, symbol="SPY")
        regimes = [REGIMES[k] for k in rng.integers(0, len(REGIMES), len(arrays.close))]
        momentum = prefilter.masks_for("enhanced_momentum", arrays, settings, defensive=False, regimes=regimes)
        assert momentum is not None
        for i, md in walk_sessions(arrays, rng, "SPY", regimes):
            answers = check(strategies, masks, md, i, tallies, misses)
            if answers[("enhanced_momentum", False)] == "buy" and not momentum.may_buy[i]:
                misses.append(f"enhanced_momentum seed {seed} bar {i} ({regimes[i]}): regime-aware mask")
    assert not misses, "\n".join(misses[:20])
    for (name, defensive), t in tallies.items():
        assert t.buys and t.sells or (name == "defensive" and not defensive), (name, defensive, t)


# -- crafted series -----------------------------------------------------------------------------------


def crafted(closes: list[float], volumes: list[float] | None = None, *, wick: float = 0.004) -> Arrays:
    close = np.asarray(closes, dtype=float)
    open_ = np.concatenate([[close[0]], close[:-1]])  # opens at the previous close
    high = np.maximum(open_, close) * (1.0 + wick)
    low = np.minimum(open_, close) * (1.0 - wick)
    volume = np.asarray(volumes if volumes is not None else [1e6] * len(close), dtype=float)
    return Arrays(open_, high, low, close, volume)


def zigzag(n: int, level: float = 100.0, amplitude: float = 0.01, drift: float = 0.0) -> list[float]:
    return [level * (1.0 + drift * k) * (1.0 + amplitude * (1 if k % 2 else -1)) for k in range(n)]


def actions(strategy: BaseStrategy, a: Arrays, *, defensive: bool, regime: str | None, symbol: str = "SPY") -> list[str]:
    out = ["hold"] * MIN_BARS
    for i in range(MIN_BARS, len(a.close)):
        md = MarketData(symbol=symbol, now=NOW, daily=bar_series(a, 0, i), last_price=float(a.open[i]),
                        prev_close=float(a.close[i - 1]), regime=regime, defensive=defensive)
        out.append(run(strategy.evaluate_opportunity(symbol, md)).action)
    return out


def jump(base: list[float], factor: float, volume_factor: float, tail: int = 3) -> Arrays:
    """``base``, then one bar at ``factor`` x the last close on ``volume_factor`` x volume."""
    closes = base + [base[-1] * factor] + [base[-1] * factor] * tail
    volumes = [1e6] * len(base) + [1e6 * volume_factor] + [1e6] * tail
    return crafted(closes, volumes)


CRAFTED: dict[str, dict[str, tuple[Arrays, bool, str | None]]] = {
    "sma_crossover": {
        "buy": (crafted([100.0 - 0.5 * k for k in range(40)] + [80.0 + 1.5 * k for k in range(30)]), False, None),
        "sell": (crafted([100.0 + 0.5 * k for k in range(40)] + [120.0 - 1.5 * k for k in range(30)]), False, None),
    },
    "enhanced_momentum": {
        "buy": (jump(zigzag(80, drift=0.0005), 1.04, 3.0), False, "bull"),
        "sell": (jump(zigzag(80, drift=-0.0005), 0.96, 3.0), False, "bull"),
    },
    "mean_reversion": {
        "buy": (crafted(zigzag(60) + [97.0, 93.0, 88.0, 82.0, 80.0, 80.0], [1e6] * 64 + [3e6, 1e6]), False, "range"),
        "sell": (crafted(zigzag(60) + [104.0, 109.0, 114.0, 119.0, 121.0, 121.0], [1e6] * 64 + [3e6, 1e6]), False, "range"),
    },
    "breakout": {
        "buy": (jump(zigzag(60), 1.05, 3.0), False, "bull"),
        "sell": (jump(zigzag(60), 0.95, 3.0), False, "bull"),
    },
    "defensive": {
        "buy": (crafted(zigzag(120, amplitude=0.006, drift=0.002)), True, "bull"),
        "sell": (crafted(zigzag(120, amplitude=0.006, drift=-0.002)), True, "bear"),
    },
}


@pytest.mark.parametrize("name,side", [(name, side) for name in CRAFTED for side in ("buy", "sell")])
def test_crafted_series_signal_and_the_mask_covers_it(settings: Any, name: str, side: str) -> None:
    arrays, defensive, regime = CRAFTED[name][side]
    strategy = next(cls for cls in STRATEGY_CLASSES if cls.name == name)(settings)
    got = actions(strategy, arrays, defensive=defensive, regime=regime)
    assert side in got, f"the crafted series should make {name} {side}"
    masks = prefilter.masks_for(strategy, arrays, settings, defensive=defensive, symbol="SPY")
    assert masks is not None
    for i, action in enumerate(got):
        if action == "buy":
            assert masks.may_buy[i], (name, i)
        if action == "sell":
            assert masks.may_sell[i], (name, i)
    # and the masks are not trivially all True
    assert not masks.may_buy.all() and not masks.may_sell.all()


# -- the API --------------------------------------------------------------------------------------------


def test_unknown_strategies_give_none_and_known_ones_are_found_by_name(settings: Any) -> None:
    arrays = crafted(zigzag(80))

    class Custom(BaseStrategy):
        async def evaluate_opportunity(self, symbol: str, market_data: MarketData) -> Signal:
            return self.signal(symbol, "buy", 1.0, "always")

    class TunedReversion(MeanReversion):  # a subclass may change the signal: not known
        pass

    for unknown in (MACDCrossover(settings), Custom(settings), TunedReversion(settings), "no_such_strategy"):
        assert prefilter.masks_for(unknown, arrays, settings, defensive=False) is None
    by_name = prefilter.masks_for("mean_reversion", arrays, settings, defensive=False)
    by_instance = prefilter.masks_for(MeanReversion(settings), arrays, settings, defensive=False)
    assert by_name is not None and by_instance is not None
    assert (by_name.may_buy == by_instance.may_buy).all() and (by_name.may_sell == by_instance.may_sell).all()
    assert set(prefilter.KNOWN_STRATEGIES) == {cls.name for cls in STRATEGY_CLASSES}
    mapping = {"open": arrays.open, "high": arrays.high, "low": arrays.low, "close": arrays.close,
               "volume": arrays.volume}
    from_mapping = prefilter.masks_for(MeanReversion, mapping, settings, defensive=False)
    assert from_mapping is not None and (from_mapping.may_buy == by_name.may_buy).all()
    assert set(by_name.selectivity()) == {"buy", "sell", "any"} and by_name.conditions["buy"]


def test_defensive_masks_are_empty_when_inactive_or_for_an_unlisted_symbol(settings: Any) -> None:
    arrays = crafted(zigzag(120, amplitude=0.006, drift=0.002))
    active = prefilter.masks_for("defensive", arrays, settings, defensive=True, symbol="SPY")
    assert active is not None and active.may_buy.any()
    for masks in (
        prefilter.masks_for("defensive", arrays, settings, defensive=False, symbol="SPY"),
        prefilter.masks_for("defensive", arrays, settings, defensive=True, symbol="ZZZZ"),
    ):
        assert masks is not None and not masks.may_signal.any()


def test_short_histories_give_empty_masks(settings: Any) -> None:
    arrays = crafted(zigzag(20))
    for name in prefilter.KNOWN_STRATEGIES:
        for defensive in (False, True):
            masks = prefilter.masks_for(name, arrays, settings, defensive=defensive, symbol="SPY")
            assert masks is not None and not masks.may_signal.any(), name
    empty = Arrays(*(np.empty(0) for _ in range(5)))
    masks = prefilter.masks_for("breakout", empty, settings, defensive=False)
    assert masks is not None and len(masks.may_buy) == 0


def test_known_regimes_only_veto_momentum_buys_in_a_bear_market(settings: Any) -> None:
    arrays = random_walk(np.random.default_rng(7), 400)
    union = prefilter.masks_for("enhanced_momentum", arrays, settings, defensive=False)
    bear = prefilter.masks_for("enhanced_momentum", arrays, settings, defensive=False, regimes="bear")
    bull = prefilter.masks_for("enhanced_momentum", arrays, settings, defensive=False, regimes=["bull"] * 400)
    assert union is not None and bear is not None and bull is not None
    assert union.may_buy.any() and not bear.may_buy.any()
    assert (bull.may_buy == union.may_buy).all() and (bear.may_sell == union.may_sell).all()
    for name in ("mean_reversion", "breakout", "sma_crossover"):  # regimes change no answer of theirs
        plain = prefilter.masks_for(name, arrays, settings, defensive=False)
        given = prefilter.masks_for(name, arrays, settings, defensive=False, regimes="bear")
        assert plain is not None and given is not None and (plain.may_buy == given.may_buy).all()
    with pytest.raises(ValueError, match="one per bar"):
        prefilter.masks_for("enhanced_momentum", arrays, settings, defensive=False, regimes=["bull"] * 3)


def test_sessions_after_a_non_finite_bar_are_not_filtered(settings: Any) -> None:
    arrays = random_walk(np.random.default_rng(3), 300)
    high = arrays.high.copy()
    high[150] = np.nan
    broken = Arrays(arrays.open, high, arrays.low, arrays.close, arrays.volume)
    for name in ("sma_crossover", "enhanced_momentum", "mean_reversion", "breakout"):
        clean = prefilter.masks_for(name, arrays, settings, defensive=False)
        masks = prefilter.masks_for(name, broken, settings, defensive=True, symbol="SPY")
        assert clean is not None and masks is not None
        assert masks.may_buy[151:200].all() and masks.may_sell[151:200].all(), name
        assert (masks.may_buy[:151] == clean.may_buy[:151]).all(), name
