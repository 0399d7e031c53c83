"""A short's protective stop fills before its target on a daily bar that reaches both.

The labelling rule (:mod:`market.bracket_labels`) counts a daily bar touching both legs of a
bracket as a stop: a daily bar cannot say which came first. The simulator expands a daily
row into one minute path per symbol and session, ``open -> low -> high -> close``
(:func:`market.bracket_labels.daily_path_order`), shared by every order on the symbol. That
path reaches a long's stop (below) before its target (above), as the rule says; a short's
target (a buy limit below) it reaches first, against the rule.

So the fill engine is side-aware for the protective pair of a short position (an OCO group:
a bracket's legs or an ``oco`` order, a buy limit with a buy stop): on a session expanded
from a daily row, when the take-profit would fill on a bar and the rest of the session, from
that bar on, reaches the stop, the take-profit does not fill; the stop then fills where the
path reaches it, at its stop price (a market order: slippage applies), and cancels the
take-profit as Alpaca's OCO does (only one leg ever fills). A session opening above the stop
fills the stop at the open already (a gap, :mod:`simulator.matching`).

Unchanged: longs (their path order is the rule), orders that are not an OCO pair's legs,
recorded minute bars and the synthetic market (a path that is really there), and a price
already through the target when the take-profit first meets a bar of the session (the open
gapped through it: it fills at that price, as a long's take-profit does on a gap up).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from simulator.book import OrderBook
from simulator.matching import Hit, to_decimal
from simulator.orders import SimOrder
from simulator.wire import et_date, floor_minute

_STOP_TYPES = frozenset({"stop", "stop_limit"})


def waits_for_stop(order: SimOrder, hit: Hit, book: OrderBook, market: Any, minute: datetime) -> bool:
    """Whether ``order``, a short's take-profit that ``hit`` would fill on the bar of
    ``minute``, must not fill there because its OCO stop is reached later the same session
    on a daily row's expansion (see the module docstring)."""
    if order.oco_group is None or order.side != "buy" or order.type != "limit":
        return False
    stops = [
        s for s in book.siblings(order)
        if s.side == "buy" and s.type in _STOP_TYPES and s.is_working and not s.triggered and s.stop_price is not None
    ]
    expanded = getattr(market, "expanded_day", None)
    if not stops or expanded is None:
        return False
    day = expanded(order.symbol, et_date(minute))
    if day is None or len(day) == 0:
        return False
    epoch = int(floor_minute(minute).timestamp())
    i = int(np.searchsorted(day.ts, epoch))
    if i >= len(day) or int(day.ts[i]) != epoch:
        return False
    first_bar = max(int(floor_minute(order.eligible_from).timestamp()), int(day.ts[0]))
    if hit.position == 0.0 and epoch <= first_bar:
        return False  # through the target before it could trade: the gap fills it
    return any(_reached_from(day, max(i, _index_at(day, stop.eligible_from)), stop) for stop in stops)


def _index_at(day: Any, moment: datetime) -> int:
    """The index of the first bar of ``day`` starting at or after ``moment``'s minute."""
    return int(np.searchsorted(day.ts, int(floor_minute(moment).timestamp())))


def _reached_from(day: Any, start: int, stop: SimOrder) -> bool:
    """Whether a bar of ``day`` from index ``start`` on reaches ``stop``'s buy stop price
    (compared as the matcher compares a bar's high with it)."""
    if start >= len(day):
        return False
    assert stop.stop_price is not None
    return to_decimal(float(day.h[start:].max())) >= stop.stop_price
