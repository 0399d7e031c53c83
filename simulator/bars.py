"""What a market source hands the simulated market: minute bars as arrays, and symbol profiles.

:class:`DayArrays` (every minute bar of one symbol on one session), :class:`DailySummary`
(a session that is the expansion of one daily row), :class:`SymbolProfile` (spread and trade
size of a symbol), the :class:`MarketSource` protocol that ``simulator.csv_source`` and
``simulator.synthetic`` implement, and the one-bar and one-quote tuples the market answers
with. Plain data: the market (``simulator.market``) and its sources both import these, and
nothing here imports either of them, so the sources no longer import the market that builds
them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import NamedTuple, Protocol

import numpy as np

UTC = timezone.utc


class MinuteBar(NamedTuple):
    """One bar: ``t`` is the start of the interval (aware UTC); prices float; volume int."""

    t: datetime
    o: float
    h: float
    l: float  # noqa: E741 - Alpaca's field letter
    c: float
    v: int
    n: int
    vw: float


class SimQuote(NamedTuple):
    """Best bid and offer at ``t`` (sizes in shares)."""

    bid: float
    ask: float
    bid_size: int
    ask_size: int
    t: datetime


class DayArrays(NamedTuple):
    """Every minute bar of one symbol on one session, as numpy arrays (oldest first).

    ``ts`` holds bar start times as int64 epoch seconds (UTC); ``o/h/l/c/vw`` float64;
    ``v`` and ``n`` int64. Minutes without trades have no entry.
    """

    session: date
    ts: np.ndarray
    o: np.ndarray
    h: np.ndarray
    l: np.ndarray  # noqa: E741
    c: np.ndarray
    v: np.ndarray
    n: np.ndarray
    vw: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def bar(self, i: int) -> MinuteBar:
        """Bar ``i`` as a :class:`MinuteBar`."""
        return MinuteBar(
            datetime.fromtimestamp(int(self.ts[i]), UTC),
            float(self.o[i]),
            float(self.h[i]),
            float(self.l[i]),
            float(self.c[i]),
            int(self.v[i]),
            int(self.n[i]),
            float(self.vw[i]),
        )


class DailySummary(NamedTuple):
    """A session whose minute bars are the expansion of one daily row (CSV daily data).

    ``o/h/l/c`` are the row's prices: the first bar opens at ``o``, the last closes at ``c``
    and every price of every bar lies in ``[l, h]``. The bars start at ``start``,
    ``start + 60``, ... ``end - 60`` (epoch seconds), one per regular-session minute.
    """

    o: float
    h: float
    l: float  # noqa: E741
    c: float
    start: int
    end: int


@dataclass(frozen=True)
class SymbolProfile:
    """What the quote model and the data API need to know about a symbol."""

    symbol: str
    spread_bps: float  # half the typical regular-session spread, in basis points of price
    avg_trade_size: int  # shares per trade, to derive trade counts and trade sizes
    tape: str  # "A" NYSE, "B" Arca/other, "C" Nasdaq
    exchange: str  # listing exchange, Alpaca's asset enum


class MarketSource(Protocol):
    """Where a :class:`Market` gets its unshocked minute data from."""

    symbols: list[str]

    def day(self, symbol: str, session: date) -> DayArrays | None:
        """All minute bars of ``symbol`` on ``session``, or None when there are none."""
        ...

    def sessions(self, start: date, end: date) -> list[date]:
        """Sessions in ``start..end`` for which any symbol has data, oldest first."""
        ...

    def profile(self, symbol: str) -> SymbolProfile:
        """The symbol's quote/trade profile."""
        ...

    def volatile(self, symbol: str, session: date) -> bool:
        """Whether ``session`` is in a volatile regime for ``symbol`` (wider spreads)."""
        ...

    def recorded_quote(
        self, symbol: str, epoch: float
    ) -> tuple[float, float, int, int, int] | None:
        """(bid, ask, bid size, ask size, minute start) of a recorded quote in effect at
        ``epoch`` on its exchange day, when the source has recorded quotes; else None."""
        ...


# Optional source methods (the CSV source has them; a source without them is always read
# through :meth:`MarketSource.day`):
#
# * ``daily_summary(symbol, session) -> DailySummary | None``: the session's daily row when
#   ``day()`` would expand it, without expanding it; None otherwise;
# * ``has_day(symbol, session) -> bool``: whether ``day()`` has bars, without building them;
# * ``session_range(symbol, session) -> (low, high) | None``: bounds of every price of every
#   bar ``day()`` gives, without expanding a daily row; ``(inf, -inf)`` for no bars.
