"""Which daily-backtest evaluations can only return hold: per-strategy signal masks.

In a backtest on daily bars, every session ``i`` hands each strategy a
:class:`market.market_data.MarketData` whose ``daily`` is a trailing window of the COMPLETED bars
before ``i`` (so the snapshot's ``price`` is ``close[i - 1]``, its volume ratio is that of bar
``i - 1`` and ``volume_progress`` is 1.0) and whose ``last_price`` is ``open[i]``. Nearly
always the answer is hold. For the built-in strategies this module computes, for a symbol's
whole replay history at once (numpy, no per-session Python), two boolean arrays over the
session index ``i``:

* ``may_buy[i]``: ``evaluate_opportunity`` at session ``i``'s open COULD return "buy";
* ``may_sell[i]``: it COULD return "sell".

Where a mask is False the strategy provably answers something else, for any bars (not just
the shared data): each mask is a conjunction of NECESSARY conditions of the strategy's
signal that only read the last few bars (simple moving averages, rolling max/min, the last
bar's volume over the 20 before it, the 1-day move, Bollinger bands, the open against the
last close's levels), each computed here in another summation order than the strategy's
``math.fsum`` and therefore compared with a conservative relative margin (:data:`EPS`):
a comparison ``a > b`` is taken as "may hold" when ``a - b > -EPS * (|a| + |b|)``.
Recursive indicators (EMA, MACD, Wilder RSI and ATR), whose value depends on where the
window starts, are never used: a signal condition that needs one is simply left out (the
mask is looser, still correct). The market regime is the same for every symbol of a
session and is by default not an input: every mask is the union over all regimes (the
one exact regime veto, momentum's "no buy in a bear regime", applies when the caller passes
the sessions' regimes).

Preconditions (all true in ``backtest.BacktestLoop._daily_market_data``): the window of
session ``i`` is a contiguous run of bars ending at bar ``i - 1`` (any start), ``last_price``
is ``open[i]`` and the window's last bar is a completed session (volume not projected).
A window may be shorter than the ``i`` bars before session ``i``: a mask stays correct,
because the strategies hold on short windows and every condition used here reads no more
bars than the strategy itself requires (or only widens the mask).

``masks_for`` returns None for a strategy it does not know (a user strategy, a subclass of
a built-in one, ``macd_crossover``, whose every condition is a recursive MACD value), so
callers fall back to evaluating every session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from strategies.breakout import LOOKBACK as BREAKOUT_LOOKBACK
from strategies.breakout import Breakout
from strategies.defensive import Defensive
from strategies.enhanced_momentum import EnhancedMomentum
from strategies.mean_reversion import MeanReversion
from strategies.sma_crossover import FAST as SMA_FAST
from strategies.sma_crossover import SLOW as SMA_SLOW
from strategies.sma_crossover import SmaCrossover

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Relative margin of every comparison: the strategies sum with ``math.fsum`` (exactly
#: rounded), this module with numpy's summation, whose error over at most a few hundred
#: positive terms is below 1e-13 of the sum; 1e-9 covers it (and the strategies' own
#: roundings) ten-thousandfold while costing nothing measurable in selectivity.
EPS = 1e-9

#: Bars of the snapshot's volume base (the 20 before the last) and of its Bollinger bands.
VOLUME_BASE_BARS = 20
BOLLINGER_BARS = 20


@dataclass(frozen=True)
class SignalMasks:
    """Where one strategy could signal, per session index of a symbol's history.

    ``may_buy[i]`` / ``may_sell[i]``: a "buy" / "sell" from ``evaluate_opportunity`` at
    session ``i``'s open is possible (False: provably not). ``conditions`` names the
    necessary conditions each mask is built from.
    """

    strategy: str
    may_buy: BoolArray
    may_sell: BoolArray
    conditions: Mapping[str, tuple[str, ...]]

    @property
    def may_signal(self) -> BoolArray:
        """Sessions where the strategy could return anything but hold."""
        return self.may_buy | self.may_sell

    def selectivity(self) -> dict[str, float]:
        """Fraction of sessions where each mask is True (buy, sell, either)."""
        n = max(len(self.may_buy), 1)
        return {
            "buy": float(self.may_buy.sum()) / n,
            "sell": float(self.may_sell.sum()) / n,
            "any": float(self.may_signal.sum()) / n,
        }


# -- margin-aware comparisons ("could a > b hold, given the summation-order error?") -------


# The margin is relative to the magnitude of the compared values; ``unit`` adds the scale of
# a dimensionless quantity computed as ``x / y - 1`` (its error is relative to ``x / y``,
# about 1, not to the difference itself).


def _may_gt(a: Any, b: Any, unit: float = 0.0) -> BoolArray:
    with np.errstate(invalid="ignore"):
        return np.asarray(a - b > -EPS * (np.abs(a) + np.abs(b) + unit))


def _may_ge(a: Any, b: Any, unit: float = 0.0) -> BoolArray:
    with np.errstate(invalid="ignore"):
        return np.asarray(a - b >= -EPS * (np.abs(a) + np.abs(b) + unit))


def _may_lt(a: Any, b: Any, unit: float = 0.0) -> BoolArray:
    return _may_gt(b, a, unit)


def _may_le(a: Any, b: Any, unit: float = 0.0) -> BoolArray:
    return _may_ge(b, a, unit)


# -- rolling quantities, indexed by the bar they end at ------------------------------------


def _rolling(x: FloatArray, n: int, reduce: Callable[..., FloatArray]) -> FloatArray:
    """``out[j] = reduce(x[j - n + 1 : j + 1])``; NaN where fewer than ``n`` bars exist."""
    out = np.full(len(x), np.nan)
    if 1 <= n <= len(x):
        out[n - 1 :] = reduce(sliding_window_view(x, n), axis=1)
    return out


def _mean(x: FloatArray, n: int) -> FloatArray:
    return _rolling(x, n, np.mean)


def _shift(x: npt.NDArray[Any], k: int) -> npt.NDArray[Any]:
    """``out[i] = x[i - k]`` (``k >= 0``); NaN (False for booleans) where ``i < k``."""
    if x.dtype == np.bool_:
        out = np.zeros(len(x), dtype=bool)
    else:
        out = np.full(len(x), np.nan)
    if k == 0:
        return x.copy()
    if k < len(x):
        out[k:] = x[:-k]
    return out


def _enough(n_bars: int, needed: int) -> BoolArray:
    """Sessions whose window can hold ``needed`` bars (there are ``i`` bars before ``i``)."""
    return np.arange(n_bars) >= needed


@dataclass(frozen=True)
class _Bars:
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    def __len__(self) -> int:
        return len(self.close)

    def last(self, column: str) -> FloatArray:
        """At session i, the window's last bar (bar ``i - 1``) of ``column``."""
        return _shift(getattr(self, column), 1)

    def sma_last(self, n: int) -> FloatArray:
        """At session i, the mean of the ``n`` closes ending at bar ``i - 1`` (the snapshot's SMA)."""
        return _shift(_mean(self.close, n), 1)

    def volume_possible(self, ratio: float, *, strict: bool) -> BoolArray:
        """At session i: could volume[i-1] / mean(volume[i-21 .. i-2]) exceed (``strict``) or
        reach ``ratio``? (The snapshot's volume ratio with progress 1.0; NaN when the base is
        not positive, which holds: True here is conservative.)"""
        base = _shift(_mean(self.volume, VOLUME_BASE_BARS), 2)
        compare = _may_gt if strict else _may_ge
        return compare(self.last("volume"), ratio * base)

    def entry(self) -> FloatArray:
        """``BaseStrategy.entry_price``: the last completed close (the decision's), else the
        session's open (issue 15: a decision does not read the entry session's open)."""
        last = self.last("close")
        with np.errstate(invalid="ignore"):
            usable = np.isfinite(last) & (last > 0.0)
        return np.where(usable, last, self.open)

    def bollinger_touch(self, *, lower: bool) -> BoolArray:
        """Could bar i-1's low reach the lower band (``lower``) / its high the upper band of
        the 20 closes ending at bar i-1 (mid +- 2 population standard deviations)?

        Compared without the square root: ``low <= mid - 2 sd`` implies ``d = mid - low >= 0``
        and ``d**2 >= 4 var``, both checked with margins on ``d`` and on ``var``.
        """
        n = BOLLINGER_BARS
        mid = np.full(len(self), np.nan)
        var = np.full(len(self), np.nan)
        if len(self) >= n:
            window = sliding_window_view(self.close, n)
            mid[n - 1 :] = window.mean(axis=1)
            var[n - 1 :] = ((window - mid[n - 1 :, None]) ** 2).mean(axis=1)
        mid, var = _shift(mid, 1), _shift(var, 1)
        extreme = self.last("low") if lower else self.last("high")
        scale = np.abs(mid) + np.abs(extreme)
        distance = (mid - extreme) if lower else (extreme - mid)
        with np.errstate(invalid="ignore"):
            reach = distance + EPS * scale
            return np.asarray((reach >= 0.0) & (reach * reach >= 4.0 * var - EPS * scale * scale))


def _bars(history: Any) -> _Bars:
    def column(name: str) -> FloatArray:
        value = history[name] if isinstance(history, Mapping) else getattr(history, name)
        return np.asarray(value, dtype=np.float64)

    bars = _Bars(*(column(name) for name in ("open", "high", "low", "close", "volume")))
    lengths = {len(bars.open), len(bars.high), len(bars.low), len(bars.close), len(bars.volume)}
    if len(lengths) != 1:
        raise ValueError(f"history columns differ in length: {sorted(lengths)}")
    return bars


# -- one function per strategy -------------------------------------------------------------


def sma_crossover_masks(bars: _Bars, settings: Any, *, defensive: bool) -> SignalMasks:
    """10/30 SMA crossover: exact but for the summation margin (it reads 31 closes)."""
    fast_now, slow_now = bars.sma_last(SMA_FAST), bars.sma_last(SMA_SLOW)
    fast_before, slow_before = _shift(fast_now, 1), _shift(slow_now, 1)
    enough = _enough(len(bars), SMA_SLOW + 1)
    buy = enough & _may_le(fast_before, slow_before) & _may_gt(fast_now, slow_now)
    sell = enough & _may_ge(fast_before, slow_before) & _may_lt(fast_now, slow_now)
    return SignalMasks(
        SmaCrossover.name, buy, sell,
        {
            "buy": (f">= {SMA_SLOW + 1} bars", f"SMA{SMA_FAST} <= SMA{SMA_SLOW} at bar i-2",
                    f"SMA{SMA_FAST} > SMA{SMA_SLOW} at bar i-1"),
            "sell": (f">= {SMA_SLOW + 1} bars", f"SMA{SMA_FAST} >= SMA{SMA_SLOW} at bar i-2",
                     f"SMA{SMA_FAST} < SMA{SMA_SLOW} at bar i-1"),
        },
    )


def enhanced_momentum_masks(
    bars: _Bars, settings: Any, *, defensive: bool, regimes: npt.NDArray[Any] | None = None
) -> SignalMasks:
    """The screen (1-day move and volume); the confirmations need RSI/MACD (recursive) and
    the price-above-SMAs one alone is not required. With ``regimes`` known, no buy in "bear"."""
    cfg = settings.strategy
    needed = max(cfg.ma_medium, cfg.ma_short, cfg.rsi_period + 1, 35, 21)
    last, before = bars.last("close"), _shift(bars.close, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        move = np.where(before > 0.0, last / before - 1.0, np.nan)  # snapshot.change_1d
    base = _enough(len(bars), needed) & _may_gt(last, 0.0)
    volume = bars.volume_possible(cfg.momentum_volume_ratio, strict=True)
    buy = base & volume & _may_gt(move, cfg.momentum_min_move, 1.0)
    sell = base & volume & _may_lt(move, -cfg.momentum_min_move, 1.0)
    screen = (f">= {needed} bars", f"volume[i-1] > {cfg.momentum_volume_ratio:g}x mean of the 20 before")
    buy_conditions: tuple[str, ...] = (*screen, f"close[i-1]/close[i-2] - 1 > {cfg.momentum_min_move:g}")
    if regimes is not None:
        buy &= regimes != "bear"
        buy_conditions += ('regime != "bear"',)
    return SignalMasks(
        EnhancedMomentum.name, buy, sell,
        {"buy": buy_conditions, "sell": (*screen, f"close[i-1]/close[i-2] - 1 < -{cfg.momentum_min_move:g}")},
    )


def mean_reversion_masks(bars: _Bars, settings: Any, *, defensive: bool) -> SignalMasks:
    """Triggers without RSI (deviation from the averages, Bollinger touch), the volume
    confirmation, and for buys the reward check (target min(SMA medium, entry + take_profit)
    at least the stop distance away). A sell also needs the buy's deviation trigger off."""
    mr, strategy, trading = settings.mean_reversion, settings.strategy, settings.trading
    needed = max(strategy.ma_medium, strategy.rsi_period + 1, 21)
    price = bars.last("close")
    medium, long_ = bars.sma_last(strategy.ma_medium), bars.sma_last(strategy.ma_long)
    with np.errstate(invalid="ignore", divide="ignore"):
        dev_medium = price / medium - 1.0
        dev_long = price / long_ - 1.0  # NaN while fewer than ma_long bars: never True below
    threshold = mr.deviation_threshold
    base = _enough(len(bars), needed) & _may_gt(price, 0.0)
    volume = bars.volume_possible(mr.volume_confirmation, strict=False)

    # low_dev = min over the finite deviations <= dev_medium; the SMA-long one counts only
    # when the window holds ma_long bars, so OR-ing it in can only widen the buy trigger.
    oversold = (_may_le(dev_medium, -threshold, 1.0) | _may_le(dev_long, -threshold, 1.0)
                | bars.bollinger_touch(lower=True))
    entry = bars.entry()
    risk = entry - entry * (1.0 - trading.stop_loss)
    # reward = min(SMA medium, entry x (1 + take_profit)) - entry >= risk, in price terms
    reward_ok = _may_ge(medium, entry + risk) & _may_ge(entry * (1.0 + trading.take_profit), entry + risk)
    buy = base & volume & oversold & reward_ok

    # action "sell" needs the buy triggers off: in particular low_dev > -threshold, and
    # low_dev <= dev_medium whatever the window.
    overbought = (_may_ge(dev_medium, threshold, 1.0) | _may_ge(dev_long, threshold, 1.0)
                  | bars.bollinger_touch(lower=False))
    sell = base & volume & overbought & _may_gt(dev_medium, -threshold, 1.0)
    vol = f"volume[i-1] >= {mr.volume_confirmation:g}x mean of the 20 before"
    return SignalMasks(
        MeanReversion.name, buy, sell,
        {
            "buy": (f">= {needed} bars", vol,
                    f"close[i-1] <= (1-{threshold:g}) x SMA{strategy.ma_medium} or SMA{strategy.ma_long}, "
                    "or low[i-1] <= lower Bollinger(20, 2)",
                    f"SMA{strategy.ma_medium} - close[i-1] >= {trading.stop_loss:g} x close[i-1] (reward >= risk)"),
            "sell": (f">= {needed} bars", vol,
                     f"close[i-1] >= (1+{threshold:g}) x SMA{strategy.ma_medium} or SMA{strategy.ma_long}, "
                     "or high[i-1] >= upper Bollinger(20, 2)",
                     f"close[i-1] > (1-{threshold:g}) x SMA{strategy.ma_medium} (not a buy setup)"),
        },
    )


def breakout_masks(bars: _Bars, settings: Any, *, defensive: bool) -> SignalMasks:
    """Exact range break and volume screen; for buys also the entry above the stop level."""
    cfg = settings.strategy
    needed = max(BREAKOUT_LOOKBACK + 1, cfg.ma_medium, cfg.rsi_period + 1)
    price = bars.last("close")
    # snapshot.resistance/support: extremes of the 20 bars before the window's last one.
    resistance = _shift(_rolling(bars.high, BREAKOUT_LOOKBACK, np.max), 2)
    support = _shift(_rolling(bars.low, BREAKOUT_LOOKBACK, np.min), 2)
    buffer = cfg.breakout_buffer
    base = _enough(len(bars), needed) & _may_gt(price, 0.0)
    volume = bars.volume_possible(cfg.breakout_volume_ratio, strict=False)
    entry = bars.entry()
    buy = (base & volume & _may_gt(price, resistance * (1.0 + buffer))
           & _may_lt(resistance * (1.0 - buffer), entry)
           & _may_lt(entry * (1.0 - settings.trading.stop_loss), entry))
    sell = base & volume & _may_lt(price, support * (1.0 - buffer))
    vol = f"volume[i-1] >= {cfg.breakout_volume_ratio:g}x mean of the 20 before"
    return SignalMasks(
        Breakout.name, buy, sell,
        {
            "buy": (f">= {needed} bars", vol,
                    f"close[i-1] > (1+{buffer:g}) x max(high[i-21..i-2])",
                    f"close[i-1] > (1-{buffer:g}) x max(high[i-21..i-2]) (stop below entry)"),
            "sell": (f">= {needed} bars", vol, f"close[i-1] < (1-{buffer:g}) x min(low[i-21..i-2])"),
        },
    )


def defensive_masks(bars: _Bars, settings: Any, *, defensive: bool, symbol: str | None = None) -> SignalMasks:
    """Inactive unless ``defensive`` (and the symbol, when given, is a defensive symbol);
    then buys need price > SMA medium > SMA long, sells price <= SMA medium (the branch);
    the confidence floor depends on RSI/MACD/ATR (recursive) and the regime: not used."""
    cfg, strategy = settings.defensive, settings.strategy
    n = len(bars)
    listed = symbol is None or symbol in cfg.symbols
    if not (defensive and listed):
        off = np.zeros(n, dtype=bool)
        why = ("defensive mode inactive",) if not defensive else (f"{symbol} not in defensive.symbols",)
        return SignalMasks(Defensive.name, off, off.copy(), {"buy": why, "sell": why})
    needed = max(strategy.ma_long, strategy.ma_medium, 35, strategy.rsi_period + 1)
    price = bars.last("close")
    medium, long_ = bars.sma_last(strategy.ma_medium), bars.sma_last(strategy.ma_long)
    base = _enough(n, needed) & _may_gt(price, 0.0)
    buy = base & _may_gt(price, medium) & _may_gt(medium, long_)
    sell = base & _may_le(price, medium)
    return SignalMasks(
        Defensive.name, buy, sell,
        {
            "buy": ("defensive", f">= {needed} bars",
                    f"close[i-1] > SMA{strategy.ma_medium} > SMA{strategy.ma_long}"),
            "sell": ("defensive", f">= {needed} bars", f"close[i-1] <= SMA{strategy.ma_medium}"),
        },
    )


_BUILDERS: dict[type, Callable[..., SignalMasks]] = {
    SmaCrossover: sma_crossover_masks,
    EnhancedMomentum: enhanced_momentum_masks,
    MeanReversion: mean_reversion_masks,
    Breakout: breakout_masks,
    Defensive: defensive_masks,
}

#: Strategy names :func:`masks_for` knows.
KNOWN_STRATEGIES: tuple[str, ...] = tuple(cls.name for cls in _BUILDERS)


def _strategy_class(strategy: Any) -> type | None:
    if isinstance(strategy, str):
        from strategies.base import AVAILABLE_STRATEGIES

        return AVAILABLE_STRATEGIES.get(strategy)
    return strategy if isinstance(strategy, type) else type(strategy)


def masks_for(
    strategy: Any,
    history_arrays: Any,
    settings: Any,
    *,
    defensive: bool,
    symbol: str | None = None,
    regimes: str | Sequence[str | None] | None = None,
) -> SignalMasks | None:
    """The signal masks of ``strategy`` over ``history_arrays``, or None when unknown.

    ``strategy``: a strategy instance, class or registered name. Only the built-in classes
    themselves are known (a subclass may override ``evaluate_opportunity``: None).
    ``history_arrays``: anything with ``open, high, low, close, volume`` (attributes, e.g.
    ``backtest.DailyHistory`` or ``market_data.BarSeries``, or mapping keys), oldest first;
    index ``i`` of the masks is the session of bar ``i``. ``settings``: the settings object
    the strategy reads (``strategy.settings``). ``defensive``: the ``MarketData.defensive``
    value the masks are for (compute both when the loop may set either). ``symbol``: for the
    defensive strategy's symbol list (default: the history's ``symbol`` attribute if any,
    else every symbol is assumed listed). ``regimes``: None (default) for masks valid in
    every regime (the union), or the ``MarketData.regime`` of every session (one value for
    all, or one per bar); only exact regime vetoes are applied (enhanced momentum: no buy in
    "bear"), the other strategies' regime effects are on confidence without a floor, or on
    a floor that other points can still reach.
    """
    builder = _BUILDERS.get(_strategy_class(strategy))  # type: ignore[arg-type]
    if builder is None:
        return None
    bars = _bars(history_arrays)
    if builder is defensive_masks:
        if symbol is None:
            symbol = getattr(history_arrays, "symbol", None)
        masks = defensive_masks(bars, settings, defensive=defensive, symbol=symbol)
        if not masks.may_signal.any():
            return masks  # inactive or not a defensive symbol: holds whatever the bars
    elif builder is enhanced_momentum_masks and regimes is not None:
        per_bar = np.full(len(bars), regimes, dtype=object) if isinstance(regimes, str) else np.array(
            list(regimes), dtype=object)
        if per_bar.shape != (len(bars),):
            raise ValueError(f"regimes: expected one per bar ({len(bars)}), got {per_bar.shape[0]}")
        masks = enhanced_momentum_masks(bars, settings, defensive=defensive, regimes=per_bar)
    else:
        masks = builder(bars, settings, defensive=defensive)
    return _unknown_where_not_finite(masks, bars, settings)


def _unknown_where_not_finite(masks: SignalMasks, bars: _Bars, settings: Any) -> SignalMasks:
    """Both masks True for sessions whose recent bars hold a non-finite value.

    The strategies' Python (``max``/``min`` over a list with a NaN, ``math.fsum``) and numpy
    disagree on NaN and infinity, so no claim is made there. Bars read by any condition
    above: the last ``max(MA periods, 31) + 1`` before the session. (Bars loaded by
    :func:`market.market_data.load_csv_bars` are always finite.)
    """
    cfg = settings.strategy
    reach = max(cfg.ma_short, cfg.ma_medium, cfg.ma_long, SMA_SLOW + 1, BREAKOUT_LOOKBACK + 2) + 1
    finite = np.ones(len(bars), dtype=bool)
    for column in (bars.open, bars.high, bars.low, bars.close, bars.volume):
        finite &= np.isfinite(column)
    if finite.all():
        return masks
    bad = np.concatenate([[0], np.cumsum(~finite)])  # bad[i]: non-finite bars before bar i
    start = np.maximum(np.arange(len(bars)) - reach, 0)
    unknown = bad[np.arange(len(bars))] > bad[start]
    return SignalMasks(
        masks.strategy, masks.may_buy | unknown, masks.may_sell | unknown,
        {side: (*why, "or a non-finite value in the last bars") for side, why in masks.conditions.items()},
    )


__all__ = [
    "EPS",
    "KNOWN_STRATEGIES",
    "SignalMasks",
    "breakout_masks",
    "defensive_masks",
    "enhanced_momentum_masks",
    "masks_for",
    "mean_reversion_masks",
    "sma_crossover_masks",
]
