"""The snapshot strategies read: the latest value of every indicator for one symbol's bars,
computed over plain floats with caches so that a cycle over hundreds of symbols stays cheap.

:func:`compute_snapshot` gives an :class:`IndicatorSnapshot`; :func:`prime_snapshots` computes
the recursion states of many histories at once (the backtest's batch path). Both give the
values of the vectorized functions in :mod:`market.vectorized` (tests check it).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from market.market_data import BarSeries
from market.vectorized import FloatArray, atr, macd, rsi, true_range, volume_ratio

# compute_snapshot looks at this many most recent bars at most: the seed of any EMA/Wilder
# recursion used here has decayed below 1e-13 after 500 bars.
SNAPSHOT_BARS = 500
TRADING_DAYS_PER_YEAR = 252


@dataclass(frozen=True)
class IndicatorSnapshot:
    """The latest value of every indicator the strategies use (floats; NaN if not enough bars).

    Changes are fractions (0.02 = +2%); ``bb_position`` is %b (0 at the lower band, 1 at
    the upper); ``volume_ratio`` is the last bar's volume over the mean of the 20 before it
    (not adjusted for a partial day: see ``MarketData.volume_progress``);
    ``volatility_20d`` is the annualised sample standard deviation of the last 20 daily
    log returns.
    """

    bars: int
    price: float
    sma_short: float
    sma_medium: float
    sma_long: float
    ema12: float
    ema26: float
    rsi: float
    macd: float
    macd_signal: float
    macd_hist: float
    macd_hist_prev: float
    bb_mid: float
    bb_upper: float
    bb_lower: float
    bb_position: float
    atr: float
    atr_pct: float
    volume_ratio: float
    support: float
    resistance: float
    change_1d: float
    change_5d: float
    change_10d: float
    volatility_20d: float

    def as_dict(self) -> dict[str, float]:
        """The snapshot as a plain dict (for logs and features)."""
        return {name: float(getattr(self, name)) for name in self.__dataclass_fields__}


# The snapshot needs only the latest values, and the loop computes one per symbol per cycle
# (500 symbols in well under the cycle's CPU budget), so it runs the same recursions over
# plain Python floats instead of allocating a dozen numpy arrays for 60 bars. Tests check
# it against the vectorized functions above.


def _smoothed(values: list[float], alpha: float, seed_n: int) -> list[float]:
    """The recursion of :func:`_smooth` from its seed on: ``[seed, y1, y2, ...]`` (or [])."""
    if len(values) < seed_n:
        return []
    y = math.fsum(values[:seed_n]) / seed_n
    out = [y]
    append = out.append
    for v in values[seed_n:]:
        y = y + alpha * (v - y)
        append(y)
    return out


@dataclass(frozen=True, slots=True)
class _Recursions:
    """The EMA/Wilder states at one bar, and the MACD histogram one bar earlier."""

    fast: float
    slow: float
    signal: float
    gain: float
    loss: float
    atr: float
    close: float
    hist_prev: float

    @property
    def line(self) -> float:
        return self.fast - self.slow

    @property
    def hist(self) -> float:
        return self.line - self.signal

    @property
    def rsi(self) -> float:
        total = self.gain + self.loss
        if math.isnan(total):
            return math.nan
        return 100.0 * self.gain / total if total > 0.0 else 50.0

    def step(self, close: float, high: float, low: float, rsi_n: int) -> _Recursions:
        """The states one bar later: the same arithmetic, in the same order, as a full pass."""
        fast = self.fast + (2.0 / 13.0) * (close - self.fast)
        slow = self.slow + (2.0 / 27.0) * (close - self.slow)
        signal = self.signal + (2.0 / 10.0) * ((fast - slow) - self.signal)
        alpha = 1.0 / rsi_n
        change = close - self.close
        if change > 0.0:
            gain = self.gain + alpha * (change - self.gain)
            loss = self.loss + alpha * (0.0 - self.loss)
        else:
            gain = self.gain + alpha * (0.0 - self.gain)
            loss = self.loss + alpha * ((-change if change < 0.0 else 0.0) - self.loss)
        true_range = max(high - low, abs(high - self.close), abs(low - self.close))
        atr = self.atr + (1.0 / 14.0) * (true_range - self.atr)
        return _Recursions(fast, slow, signal, gain, loss, atr, close, self.hist)


def _full_recursions(close: FloatArray, high: FloatArray, low: FloatArray, rsi_n: int) -> _Recursions:
    """Every recursion over the whole history (NaN where it has not been seeded yet)."""
    closes = close.tolist()
    fast = _smoothed(closes, 2.0 / 13.0, 12)
    slow = _smoothed(closes, 2.0 / 27.0, 26)
    line = [f - s for f, s in zip(fast[len(fast) - len(slow) :], slow)]
    signal = _smoothed(line, 2.0 / 10.0, 9)
    hist = [m - s for m, s in zip(line[len(line) - len(signal) :], signal)]

    gain = loss = math.nan
    if len(closes) > rsi_n:
        changes = np.diff(close).tolist()
        first = changes[:rsi_n]
        gain = math.fsum(c for c in first if c > 0.0) / rsi_n
        loss = math.fsum(-c for c in first if c < 0.0) / rsi_n
        alpha = 1.0 / rsi_n
        for c in changes[rsi_n:]:
            if c > 0.0:
                gain = gain + alpha * (c - gain)
                loss = loss + alpha * (0.0 - loss)
            else:
                gain = gain + alpha * (0.0 - gain)
                loss = loss + alpha * ((-c if c < 0.0 else 0.0) - loss)

    average_range = math.nan
    if len(closes) >= 14:
        ranges = high - low
        previous = close[:-1]
        ranges[1:] = np.maximum(
            ranges[1:], np.maximum(np.abs(high[1:] - previous), np.abs(low[1:] - previous))
        )
        average_range = _smoothed(ranges.tolist(), 1.0 / 14.0, 14)[-1]

    return _Recursions(
        fast=fast[-1] if fast else math.nan,
        slow=slow[-1] if slow else math.nan,
        signal=signal[-1] if signal else math.nan,
        gain=gain,
        loss=loss,
        atr=average_range,
        close=closes[-1] if closes else math.nan,
        hist_prev=hist[-2] if len(hist) >= 2 else math.nan,
    )


@dataclass(frozen=True, slots=True)
class _History:
    """What a snapshot needs from the completed bars (all but the last, still-forming one).

    ``closes`` holds the last ``keep - 1`` completed closes; ``support``/``resistance`` are
    the extremes of the last 20 completed lows/highs and ``volume_base`` the mean of their
    volumes: exactly the values :func:`compute_snapshot` would compute from the full series.
    """

    state: _Recursions
    keep: int
    closes: list[float]
    support: float
    resistance: float
    volume_base: float
    lowest_close: float  # min() of the last 20 completed closes
    logs: list[float]  # their logs, when lowest_close > 0 (else empty)
    returns: list[float]  # the 19 log returns between them (else empty)


def _history(series: BarSeries, prefix: int, keep: int, state: _Recursions) -> _History:
    """The completed-bar parts of ``series`` (its first ``prefix`` bars; ``prefix >= 20``)."""
    closes = series.close[max(0, prefix - (keep - 1)) : prefix].tolist()
    last20 = closes[-20:]
    lowest = min(last20)
    logs = [math.log(x) for x in last20] if lowest > 0.0 else []
    return _History(
        state=state,
        keep=keep,
        closes=closes,
        lowest_close=lowest,
        logs=logs,
        returns=[b - a for a, b in zip(logs, logs[1:])],
        support=min(series.low[prefix - 20 : prefix].tolist()),
        resistance=max(series.high[prefix - 20 : prefix].tolist()),
        volume_base=math.fsum(series.volume[prefix - 20 : prefix].tolist()) / 20.0,
    )


# Recursion states and completed-bar parts of recent histories, so that a cycle that only
# changed today's partial bar costs one step per symbol instead of a pass over the history.
# Keyed by the history's length, end timestamps and column sums: a corrected or re-adjusted
# history misses.
_PREFIX_CACHE: OrderedDict[tuple[Any, ...], _History] = OrderedDict()
_PREFIX_CACHE_SIZE = 4096
_SEEDED_BARS = 34  # the MACD signal, the slowest recursion, is seeded at bar 34


def _prefix_key(series: BarSeries, prefix: int, rsi_n: int) -> tuple[Any, ...]:
    memo = series.prefix_memo(prefix)
    if memo is None:
        return _computed_prefix_key(series, prefix, rsi_n)
    # The bars before the last are those of the series this one was appended to (today's
    # bar onto the session's history): their key is computed once for that series.
    name = ("prefix_key", prefix, rsi_n)
    key = memo.get(name)
    if key is None:
        key = memo[name] = _computed_prefix_key(series, prefix, rsi_n)
    return key  # type: ignore[no-any-return]


def _computed_prefix_key(series: BarSeries, prefix: int, rsi_n: int) -> tuple[Any, ...]:
    close, high, low = series.close, series.high, series.low
    return (
        prefix,
        rsi_n,
        int(series.ts[0]),
        int(series.ts[prefix - 1]),
        float(close[:prefix].sum()),
        float(high[:prefix].sum()),
        float(low[:prefix].sum()),
    )


def _cached_history(series: BarSeries, rsi_n: int, keep: int) -> _History | None:
    """The cached completed-bar parts of ``series``, or None when it is too short to cache."""
    prefix = len(series) - 1
    if prefix < max(_SEEDED_BARS, rsi_n + 1):
        return None
    key = _prefix_key(series, prefix, rsi_n)
    history = _PREFIX_CACHE.get(key)
    if history is None:
        state = _PRIMED.get(key)
        if state is None:
            state = _full_recursions(series.close[:prefix], series.high[:prefix], series.low[:prefix], rsi_n)
        history = _history(series, prefix, keep, state)
        _PREFIX_CACHE[key] = history
        if len(_PREFIX_CACHE) > _PREFIX_CACHE_SIZE:
            _PREFIX_CACHE.popitem(last=False)
    else:
        if history.keep != keep:  # other moving-average periods: same state, other closes
            history = _history(series, prefix, keep, history.state)
            _PREFIX_CACHE[key] = history
        _PREFIX_CACHE.move_to_end(key)
    return history


def _recursions(series: BarSeries, rsi_n: int) -> _Recursions:
    """The recursion states at the last bar of ``series``."""
    history = _cached_history(series, rsi_n, 22)
    if history is None:
        return _full_recursions(series.close, series.high, series.low, rsi_n)
    return history.state.step(float(series.close[-1]), float(series.high[-1]), float(series.low[-1]), rsi_n)


# States computed ahead by prime_snapshots (replaced by each call), looked up after the cache.
_PRIMED: dict[tuple[Any, ...], _Recursions] = {}


def prime_snapshots(histories: Sequence[BarSeries], rsi_n: int) -> int:
    """Compute ahead, in one vectorized pass, what :func:`compute_snapshot` will need for
    each of ``histories`` (exactly as it will be called with them), so that each of those
    calls then costs a lookup instead of a pass over its bars.

    For callers that know their histories in advance: a backtest on daily bars, where each
    session's history is a different window of the same arrays (its first bar moves too, so
    the cache of the previous session's state cannot serve it). The states are the same
    arithmetic, in the same order, as the bar-by-bar pass (IEEE operations on float64, the
    seeds summed with ``math.fsum``), so the snapshots are identical. Replaces whatever an
    earlier call primed; histories too short to cache, or holding a non-finite price, are
    left to the ordinary path. Returns how many states were primed.
    """
    _PRIMED.clear()
    need = max(_SEEDED_BARS, rsi_n + 1)
    keys: list[tuple[Any, ...]] = []
    rows: list[tuple[FloatArray, FloatArray, FloatArray]] = []
    seen: set[tuple[Any, ...]] = set()
    for bars in histories:
        series = bars.tail(SNAPSHOT_BARS) if len(bars) > SNAPSHOT_BARS else bars
        prefix = len(series) - 1
        if prefix < need:
            continue
        key = _prefix_key(series, prefix, rsi_n)
        # A sum is finite only when every price in it is: the key's sums check the prices.
        if key in seen or key in _PREFIX_CACHE or not math.isfinite(key[4] + key[5] + key[6]):
            continue
        seen.add(key)
        keys.append(key)
        rows.append((series.close[:prefix], series.high[:prefix], series.low[:prefix]))
    if not keys:
        return 0
    for key, state in zip(keys, _batch_recursions(rows, rsi_n), strict=True):
        _PRIMED[key] = state
    return len(keys)


def _column_fsum(block: FloatArray) -> FloatArray:
    """``math.fsum`` down each column of ``block`` (one exactly rounded sum per window)."""
    return np.array([math.fsum(column) for column in block.T.tolist()], dtype=np.float64)


def _batch_recursions(rows: list[tuple[FloatArray, FloatArray, FloatArray]], rsi_n: int) -> list[_Recursions]:
    """:func:`_full_recursions` of many (close, high, low) histories at once.

    Bar ``j`` of every history is one column of a (bars x histories) matrix, so one numpy
    operation advances every history by one bar (the five EMA/Wilder recursions stacked);
    a history shorter than the longest keeps its values after its own last bar. Every
    history holds at least :data:`_SEEDED_BARS` and ``rsi_n + 1`` bars.
    """
    width = len(rows)
    lengths = np.array([len(c) for c, _, _ in rows], dtype=np.int64)
    depth = int(lengths.max())
    shortest = int(lengths.min())
    close = np.empty((depth, width))
    high = np.empty((depth, width))
    low = np.empty((depth, width))
    for w, (c, h, lo) in enumerate(rows):
        n = len(c)
        close[:n, w], high[:n, w], low[:n, w] = c, h, lo
        close[n:, w], high[n:, w], low[n:, w] = c[-1], h[-1], lo[-1]  # padding, never read
    changes = close[1:] - close[:-1]
    ranges = high - low
    ranges[1:] = np.maximum(ranges[1:], np.maximum(np.abs(high[1:] - close[:-1]), np.abs(low[1:] - close[:-1])))

    # The five recursions as rows: EMA(12) and EMA(26) of the close, Wilder's averages of
    # gains and losses (RSI), Wilder's average true range (ATR 14); inputs[j] is what bar j
    # feeds them, starts[r] the first bar recursion r steps on (its seed is the bar before).
    inputs = np.zeros((depth, 5, width))
    inputs[:, 0] = close
    inputs[:, 1] = close
    inputs[1:, 2] = np.where(changes > 0.0, changes, 0.0)
    inputs[1:, 3] = np.where(changes < 0.0, -changes, 0.0)
    inputs[:, 4] = ranges
    alphas = np.array([[2.0 / 13.0], [2.0 / 27.0], [1.0 / rsi_n], [1.0 / rsi_n], [1.0 / 14.0]])
    starts = np.array([[12], [26], [rsi_n + 1], [rsi_n + 1], [14]])
    state = np.empty((5, width))
    state[0] = _column_fsum(close[:12]) / 12
    state[1] = _column_fsum(close[:26]) / 26
    first = changes[:rsi_n].T.tolist()
    state[2] = [math.fsum(c for c in col if c > 0.0) / rsi_n for col in first]
    state[3] = [math.fsum(-c for c in col if c < 0.0) / rsi_n for col in first]
    state[4] = _column_fsum(ranges[:14]) / 14
    all_started = int(starts.max())

    a_signal = 2.0 / 10.0
    step = np.empty((5, width))
    lines: list[FloatArray] = []
    signal = np.full(width, np.nan)
    hist = np.full(width, np.nan)
    hist_prev = np.full(width, np.nan)
    for j in range(int(starts.min()), depth):
        np.subtract(inputs[j], state, out=step)
        step *= alphas
        step += state  # state + alpha * (input - state), as the bar-by-bar pass computes it
        if all_started <= j < shortest:
            state, step = step, state
        else:
            np.copyto(state, step, where=(starts <= j) & (j < lengths))
        if j < 25:
            continue
        line = state[0] - state[1]  # the MACD line exists from bar 25, the slow EMA's seed
        if j < 33:
            lines.append(line)
            continue
        if j == 33:
            lines.append(line)
            signal = _column_fsum(np.array(lines)) / 9
        else:
            new_signal = signal + a_signal * (line - signal)
            if j < shortest:
                signal = new_signal
            else:
                np.copyto(signal, new_signal, where=j < lengths)
        if j < shortest:
            hist_prev, hist = hist, line - signal
        else:
            active = j < lengths
            np.copyto(hist_prev, hist, where=active)
            np.copyto(hist, line - signal, where=active)

    last_close = close[lengths - 1, np.arange(width)]
    return [
        _Recursions(f, s, g, up, down, r, c, hp)
        for f, s, g, up, down, r, c, hp in zip(
            state[0].tolist(), state[1].tolist(), signal.tolist(), state[2].tolist(), state[3].tolist(),
            state[4].tolist(), last_close.tolist(), hist_prev.tolist(), strict=True,
        )
    ]


def _mean_of_last(values: list[float], n: int) -> float:
    return math.fsum(values[-n:]) / n if len(values) >= n else math.nan


def _change(closes: list[float], n: int) -> float:
    if len(closes) <= n or closes[-1 - n] <= 0.0:
        return math.nan
    return closes[-1] / closes[-1 - n] - 1.0


def compute_snapshot(bars: BarSeries, settings: Any) -> IndicatorSnapshot:
    """Latest indicator values of ``bars`` (daily bars, oldest first).

    Periods come from ``settings.strategy`` (``ma_short/medium/long``, ``rsi_period``);
    MACD is (12, 26, 9), Bollinger (20, 2), ATR 14, volume ratio and levels over the 20
    bars before the last. Only the last :data:`SNAPSHOT_BARS` bars are read. The recursion
    states of the history before the last bar are cached, so the next cycle, where only
    today's partial bar changed, costs one step per recursion.
    """
    cfg = settings.strategy
    series = bars.tail(SNAPSHOT_BARS)
    size = len(series)
    # The averages, bands, changes and volatility below read at most this many last closes.
    keep = max(cfg.ma_short, cfg.ma_medium, cfg.ma_long, 21) + 1

    history = _cached_history(series, cfg.rsi_period, keep)
    if history is None:
        closes = series.close[-keep:].tolist()
        state = _full_recursions(series.close, series.high, series.low, cfg.rsi_period)
    else:
        last_close = float(series.close[-1])
        closes = history.closes + [last_close]
        state = history.state.step(last_close, float(series.high[-1]), float(series.low[-1]), cfg.rsi_period)
    price = closes[-1] if closes else math.nan

    mid = upper = lower = bb_position = math.nan
    if size >= 20:
        window = closes[-20:]
        mid = math.fsum(window) / 20.0
        spread = 2.0 * math.sqrt(math.fsum((x - mid) ** 2 for x in window) / 20.0)
        upper, lower = mid + spread, mid - spread
        bb_position = (price - lower) / (upper - lower) if spread > 0.0 else 0.5
    average_range = state.atr

    support = resistance = ratio = volatility = math.nan
    if size > 20:
        if history is None:
            support = min(series.low[-21:-1].tolist())
            resistance = max(series.high[-21:-1].tolist())
            base = math.fsum(series.volume[-21:-1].tolist()) / 20.0
        else:
            support, resistance, base = history.support, history.resistance, history.volume_base
        ratio = float(series.volume[-1]) / base if base > 0.0 else math.nan
        if history is None:
            window = closes[-21:]
            lowest = min(window)
            if lowest > 0.0:
                logs = [math.log(x) for x in window]
                returns = [b - a for a, b in zip(logs, logs[1:])]
        else:  # min() of the 21 closes, as the sequential scan finds it, then one more return
            lowest = price if price < history.lowest_close else history.lowest_close
            if lowest > 0.0:
                returns = history.returns + [math.log(price) - history.logs[-1]]
        if lowest > 0.0:
            average = math.fsum(returns) / 20.0
            variance = math.fsum((r - average) ** 2 for r in returns) / 19.0
            volatility = math.sqrt(variance * TRADING_DAYS_PER_YEAR)

    # A frozen dataclass sets its 25 fields one object.__setattr__ at a time: fill the
    # instance dict in one step instead (the same instance, a fifth of the cost).
    snapshot: IndicatorSnapshot = object.__new__(IndicatorSnapshot)
    snapshot.__dict__.update(
        bars=size,
        price=price,
        sma_short=_mean_of_last(closes, cfg.ma_short),
        sma_medium=_mean_of_last(closes, cfg.ma_medium),
        sma_long=_mean_of_last(closes, cfg.ma_long),
        ema12=state.fast,
        ema26=state.slow,
        rsi=state.rsi,
        macd=state.line,
        macd_signal=state.signal,
        macd_hist=state.hist,
        macd_hist_prev=state.hist_prev,
        bb_mid=mid,
        bb_upper=upper,
        bb_lower=lower,
        bb_position=bb_position,
        atr=average_range,
        atr_pct=average_range / price if price > 0.0 else math.nan,
        volume_ratio=ratio,
        support=support,
        resistance=resistance,
        change_1d=_change(closes, 1),
        change_5d=_change(closes, 5),
        change_10d=_change(closes, 10),
        volatility_20d=volatility,
    )
    return snapshot
