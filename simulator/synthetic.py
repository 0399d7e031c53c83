"""A seeded synthetic US-equity market, generated lazily per (symbol, session).

Model, in two layers:

1. **Daily skeleton** (per symbol, all calendar sessions 1990..2035, computed once per
   symbol and kept in a small LRU). A market factor follows a two-state regime chain (calm:
   about 0.75 %/day, volatile: about 1.8 %/day with a slight negative drift; calm->volatile
   2 %/day, volatile->calm 8 %/day). Each symbol's return is ``beta x market + idiosyncratic``
   (idiosyncratic volatility x1.5 in the volatile regime), split into an overnight part
   (a quarter of the variance, plus rare earnings-like jumps for single stocks) and an
   intraday part. Log prices mean-revert slowly (half-life one year) towards a realistic
   level per symbol (SPY about 590, QQQ 510, AAPL 230, MSFT 420, NVDA 135, TSLA 350;
   unknown symbols get a level, beta and volatility from a hash of their name). Catalyst
   days (one session in 12 for a stock, 1 in 40 for an ETF) add a 2-5 % trend to the
   session on heavy volume, as news days do. Daily volume rises in the volatile regime and
   on big moves. The overnight move is shared: 30 % of it
   happens in the previous evening's after-hours, the rest in the pre-market.
2. **Minute bars** of one session, seeded by (seed, symbol, session) only, so any date can
   be produced in any order with the same result: Brownian bridges on log price from
   the pre-market start to the open (04:00-open), from the open to the close (regular
   session, U-shaped volatility), and from the close to the after-hours end (close-20:00).
   Wicks are half-normal around each minute's open/close; prices are in cents. Regular
   volume is U-shaped (heavy at the open and the close) and sums to about the day's volume;
   extended-hours minutes are thin and some have no trade at all (then no bar). Trade
   counts ``n`` follow the symbol's average trade size; ``vw`` is the typical price.

The same seed gives the same market; another seed gives another market.
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, time

import numpy as np

from core.clock import EXCHANGE_TZ
from simulator.bars import DayArrays, SymbolProfile
from market.trading_calendar import FIRST_DATE, LAST_DATE, TradingCalendar

DEFAULT_SYMBOLS = ["SPY", "QQQ", "AAPL", "MSFT", "NVDA", "TSLA"]
TRADING_DAYS_PER_YEAR = 252
MEAN_REVERSION_PER_DAY = math.log(2.0) / TRADING_DAYS_PER_YEAR  # half-life: one year
OVERNIGHT_VARIANCE_SHARE = 0.25
AFTER_HOURS_SHARE_OF_OVERNIGHT = 0.30
SKELETON_CACHE_SYMBOLS = 64
CATALYST_PROB_STOCK = 1.0 / 12.0
CATALYST_PROB_ETF = 1.0 / 40.0


@dataclass(frozen=True)
class SyntheticProfile:
    """Parameters of one synthetic symbol."""

    symbol: str
    level: float  # the price the log price reverts to
    beta: float
    idio_vol: float  # annualised idiosyncratic volatility
    adv: float  # average daily regular-session volume, shares
    spread_bps: float  # half-spread in basis points of price, regular session
    extended_trade_prob: float  # chance that an extended-hours minute has a trade
    avg_trade_size: int
    tape: str
    exchange: str
    etf: bool


_KNOWN: dict[str, tuple[float, float, float, float, float, float, int, str, str, bool]] = {
    # symbol: level, beta, idio vol, ADV, half-spread bps, ext trade prob, trade size, tape, exchange, etf
    "SPY": (590.0, 1.00, 0.02, 60e6, 0.1, 0.97, 120, "B", "ARCA", True),
    "QQQ": (510.0, 1.15, 0.05, 35e6, 0.12, 0.95, 110, "C", "NASDAQ", True),
    "IWM": (225.0, 1.20, 0.08, 30e6, 0.25, 0.85, 110, "B", "ARCA", True),
    "DIA": (430.0, 0.90, 0.04, 3e6, 0.3, 0.7, 90, "B", "ARCA", True),
    "AAPL": (230.0, 1.10, 0.20, 50e6, 0.25, 0.92, 100, "C", "NASDAQ", False),
    "MSFT": (420.0, 1.00, 0.19, 20e6, 0.3, 0.9, 80, "C", "NASDAQ", False),
    "NVDA": (135.0, 1.70, 0.40, 250e6, 0.4, 0.95, 150, "C", "NASDAQ", False),
    "TSLA": (350.0, 1.80, 0.50, 90e6, 0.4, 0.95, 120, "C", "NASDAQ", False),
    "AMZN": (200.0, 1.20, 0.25, 40e6, 0.3, 0.9, 100, "C", "NASDAQ", False),
    "GOOGL": (170.0, 1.10, 0.24, 25e6, 0.3, 0.88, 100, "C", "NASDAQ", False),
    "META": (580.0, 1.30, 0.30, 14e6, 0.35, 0.85, 80, "C", "NASDAQ", False),
}


def _stable(*parts: object) -> int:
    return zlib.crc32("|".join(str(p) for p in parts).encode("utf-8"))


def synthetic_profile(symbol: str) -> SyntheticProfile:
    """The profile of ``symbol``: a known table entry, else one derived from its name."""
    known = _KNOWN.get(symbol)
    if known is not None:
        return SyntheticProfile(symbol, *known)
    rng = np.random.default_rng([_stable("profile", symbol)])
    return SyntheticProfile(
        symbol=symbol,
        level=float(round(math.exp(rng.uniform(math.log(15.0), math.log(400.0))), 2)),
        beta=float(round(rng.uniform(0.6, 1.6), 2)),
        idio_vol=float(round(rng.uniform(0.18, 0.45), 3)),
        adv=float(round(math.exp(rng.uniform(math.log(1e6), math.log(3e7))), -3)),
        spread_bps=float(round(rng.uniform(1.0, 6.0), 2)),
        extended_trade_prob=float(round(rng.uniform(0.3, 0.8), 2)),
        avg_trade_size=int(rng.integers(60, 160)),
        tape=str(rng.choice(["A", "C"])),
        exchange="NYSE" if rng.random() < 0.5 else "NASDAQ",
        etf=False,
    )


@dataclass(frozen=True)
class _MarketFactor:
    volatile: np.ndarray  # bool per session
    overnight: np.ndarray  # market log return, previous close -> open
    intraday: np.ndarray  # market log return, open -> close
    sigma: np.ndarray  # market daily volatility per session


@dataclass(frozen=True)
class _Skeleton:
    open: np.ndarray
    close: np.ndarray
    pre_start: np.ndarray
    post_end: np.ndarray
    volume: np.ndarray
    intraday_sigma: np.ndarray


class SyntheticSource:
    """The synthetic market as a :class:`simulator.market.MarketSource`."""

    def __init__(
        self,
        symbols: list[str] | None = None,
        seed: int = 42,
        calendar: TradingCalendar | None = None,
    ) -> None:
        chosen = list(symbols) if symbols else list(DEFAULT_SYMBOLS)
        problems = [s for s in chosen if not s or not s.replace(".", "").replace("-", "").isalnum()]
        if problems:
            raise ValueError(f"invalid symbol(s) {problems!r}: use ticker symbols such as SPY")
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"duplicate symbols in {chosen!r}")
        self.symbols = chosen
        self.seed = int(seed)
        self.calendar = calendar or TradingCalendar()
        self._sessions = self.calendar.sessions(FIRST_DATE, LAST_DATE)
        self._index = {d: i for i, d in enumerate(self._sessions)}
        self._profiles = {s: synthetic_profile(s) for s in chosen}
        self._factor: _MarketFactor | None = None
        self._skeletons: OrderedDict[str, _Skeleton] = OrderedDict()

    # -- MarketSource --------------------------------------------------------------------

    def sessions(self, start: date, end: date) -> list[date]:
        return self.calendar.sessions(max(start, FIRST_DATE), min(end, LAST_DATE))

    def profile(self, symbol: str) -> SymbolProfile:
        p = self._profiles[symbol]
        return SymbolProfile(symbol, p.spread_bps, p.avg_trade_size, p.tape, p.exchange)

    def volatile(self, symbol: str, session: date) -> bool:
        i = self._index.get(session)
        return bool(i is not None and self._market().volatile[i])

    def recorded_quote(
        self, symbol: str, epoch: float
    ) -> tuple[float, float, int, int, int] | None:
        """The synthetic market has no recorded quotes: quotes come from the spread model."""
        return None

    def day(self, symbol: str, session: date) -> DayArrays | None:
        i = self._index.get(session)
        if i is None or symbol not in self._profiles:
            return None
        return self._generate_day(symbol, session, i)

    # -- skeleton ------------------------------------------------------------------------

    def _market(self) -> _MarketFactor:
        if self._factor is not None:
            return self._factor
        n = len(self._sessions)
        rng = np.random.default_rng([self.seed, _stable("market-factor")])
        switch = rng.random(n)
        volatile = np.zeros(n, dtype=bool)
        state = False
        for i in range(n):
            if state:
                state = switch[i] >= 0.08
            else:
                state = switch[i] < 0.02
            volatile[i] = state
        sigma = np.where(volatile, 0.018, 0.0075)
        drift = np.where(volatile, -0.0006, 0.0004)
        overnight = sigma * math.sqrt(OVERNIGHT_VARIANCE_SHARE) * rng.standard_normal(n)
        intraday = drift + sigma * math.sqrt(1 - OVERNIGHT_VARIANCE_SHARE) * rng.standard_normal(n)
        self._factor = _MarketFactor(volatile, overnight, intraday, sigma)
        return self._factor

    def _skeleton(self, symbol: str) -> _Skeleton:
        cached = self._skeletons.get(symbol)
        if cached is not None:
            self._skeletons.move_to_end(symbol)
            return cached
        market = self._market()
        p = self._profiles[symbol]
        n = len(self._sessions)
        rng = np.random.default_rng([self.seed, _stable("skeleton", symbol)])
        idio = p.idio_vol / math.sqrt(TRADING_DAYS_PER_YEAR) * np.where(market.volatile, 1.5, 1.0)
        overnight = p.beta * market.overnight + idio * math.sqrt(
            OVERNIGHT_VARIANCE_SHARE
        ) * rng.standard_normal(n)
        if not p.etf:
            jumps = rng.random(n) < 1.0 / 63.0
            overnight = overnight + jumps * rng.normal(0.0, 0.045, n)
        intraday = p.beta * market.intraday + idio * math.sqrt(
            1 - OVERNIGHT_VARIANCE_SHARE
        ) * rng.standard_normal(n)
        # Catalyst days (news, analyst calls, sector rotation): a trend day of 2-5 % on heavy
        # volume, about one session in 12 for a single stock and one in 40 for an ETF.
        catalyst = rng.random(n) < (CATALYST_PROB_ETF if p.etf else CATALYST_PROB_STOCK)
        catalyst_move = np.where(rng.random(n) < 0.55, 1.0, -1.0) * rng.uniform(0.02, 0.05, n)
        intraday = intraday + catalyst * catalyst_move * (0.5 if p.etf else 1.0)
        mean = math.log(p.level)
        log_open = np.empty(n)
        log_close = np.empty(n)
        previous = mean
        k = MEAN_REVERSION_PER_DAY
        on_list = overnight.tolist()
        id_list = intraday.tolist()
        for i in range(n):
            o = previous + on_list[i] - k * (previous - mean)
            c = o + id_list[i]
            log_open[i] = o
            log_close[i] = c
            previous = c
        opened = np.round(np.exp(log_open), 2)
        closed = np.round(np.exp(log_close), 2)
        post_end = np.empty(n)
        post_end[:-1] = np.exp(
            log_close[:-1] + AFTER_HOURS_SHARE_OF_OVERNIGHT * (log_open[1:] - log_close[:-1])
        )
        post_end[-1] = math.exp(log_close[-1])
        pre_start = np.empty(n)
        pre_start[1:] = post_end[:-1]
        pre_start[0] = math.exp(log_open[0] - 0.7 * overnight[0])
        move = np.abs(np.log(closed / np.concatenate(([opened[0]], closed[:-1]))))
        volume = (
            p.adv
            * np.where(market.volatile, 1.6, 1.0)
            * np.exp(0.25 * rng.standard_normal(n) - 0.03)
            * (1.0 + 20.0 * move)
            * np.where(catalyst, 1.8, 1.0)
        )
        intraday_sigma = np.sqrt(
            (p.beta * market.sigma) ** 2 * (1 - OVERNIGHT_VARIANCE_SHARE)
            + idio**2 * (1 - OVERNIGHT_VARIANCE_SHARE)
        )
        skeleton = _Skeleton(
            opened, closed, np.round(pre_start, 2), np.round(post_end, 2), volume, intraday_sigma
        )
        self._skeletons[symbol] = skeleton
        if len(self._skeletons) > SKELETON_CACHE_SYMBOLS:
            self._skeletons.popitem(last=False)
        return skeleton

    # -- one day -------------------------------------------------------------------------

    def _generate_day(self, symbol: str, session: date, i: int) -> DayArrays:
        sk = self._skeleton(symbol)
        p = self._profiles[symbol]
        opened, closed = self.calendar.open_close(session)
        day_start = datetime.combine(session, time(4, 0), EXCHANGE_TZ).timestamp()
        day_end = datetime.combine(session, time(20, 0), EXCHANGE_TZ).timestamp()
        n_pre = int(round((opened.timestamp() - day_start) / 60))
        n_reg = int(round((closed.timestamp() - opened.timestamp()) / 60))
        n_post = int(round((day_end - closed.timestamp()) / 60))
        total = n_pre + n_reg + n_post
        rng = np.random.default_rng([self.seed, _stable("day", symbol), session.toordinal()])

        sigma_day = float(sk.intraday_sigma[i])
        x = (np.arange(n_reg) + 0.5) / n_reg
        shape = 1.0 + 1.6 * (2.0 * x - 1.0) ** 2
        reg_var = shape / shape.sum() * sigma_day**2
        ext_var_per_min = (sigma_day**2 / n_reg) * 0.06
        pre_var = np.full(n_pre, ext_var_per_min)
        post_var = np.full(n_post, ext_var_per_min)

        log_pre, log_open = math.log(sk.pre_start[i]), math.log(sk.open[i])
        log_close, log_post = math.log(sk.close[i]), math.log(sk.post_end[i])
        z = rng.standard_normal(total)
        pre = _bridge(log_pre, log_open, pre_var, z[:n_pre])
        reg = _bridge(log_open, log_close, reg_var, z[n_pre : n_pre + n_reg])
        post = _bridge(log_close, log_post, post_var, z[n_pre + n_reg :])
        points = np.concatenate(([log_pre], pre, reg, post))
        prices = np.round(np.exp(points), 2)
        # The regular open and close are exact (skeleton prices are already in cents).
        prices[n_pre] = sk.open[i]
        prices[n_pre + n_reg] = sk.close[i]

        o = prices[:-1]
        c = prices[1:]
        minute_sigma = np.sqrt(np.concatenate((pre_var, reg_var, post_var)))
        wick = np.abs(rng.standard_normal((2, total))) * minute_sigma * 0.6
        h = np.round(np.maximum(o, c) * (1.0 + wick[0]), 2)
        lo = np.round(np.minimum(o, c) * (1.0 - wick[1]), 2)
        h = np.maximum(h, np.maximum(o, c))
        lo = np.minimum(lo, np.minimum(o, c))

        adv_day = float(sk.volume[i])
        reg_weights = (1.0 + 2.8 * (2.0 * x - 1.0) ** 2) * np.exp(0.35 * rng.standard_normal(n_reg))
        reg_weights[-10:] *= 1.4
        reg_volume = np.maximum(100, np.floor(adv_day * reg_weights / reg_weights.sum()))
        ext_n = n_pre + n_post
        ext_volume = np.maximum(
            1, np.floor(adv_day * 0.00003 * np.exp(0.9 * rng.standard_normal(ext_n)))
        )
        volume = np.concatenate((ext_volume[:n_pre], reg_volume, ext_volume[n_pre:])).astype(np.int64)
        trade_size = p.avg_trade_size * np.exp(0.2 * rng.standard_normal(total))
        trades = np.maximum(1, np.round(volume / trade_size)).astype(np.int64)
        vw = np.clip(np.round((o + h + lo + 2.0 * c) / 5.0, 4), lo, h)
        ts = (int(day_start) + 60 * np.arange(total)).astype(np.int64)

        present = np.ones(total, dtype=bool)
        ext_present = rng.random(ext_n) < p.extended_trade_prob
        present[:n_pre] = ext_present[:n_pre]
        present[n_pre + n_reg :] = ext_present[n_pre:]
        if present.all():
            return DayArrays(session, ts, o.copy(), h, lo, c.copy(), volume, trades, vw)
        return DayArrays(
            session,
            ts[present],
            o[present],
            h[present],
            lo[present],
            c[present],
            volume[present],
            trades[present],
            vw[present],
        )


def _bridge(start: float, end: float, variances: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Points 1..K of a Brownian bridge from ``start`` to ``end`` with per-step variances."""
    if variances.size == 0:
        return np.empty(0)
    steps = z * np.sqrt(variances)
    walk = np.cumsum(steps)
    weight = np.cumsum(variances) / variances.sum()
    return start + walk - weight * (walk[-1] - (end - start))
