"""Where a resting order executes inside one minute bar, and at what price.

**OHLC path rule.** A minute bar only tells us four prices, so the engine assumes the price
travelled ``open -> low -> high -> close`` when the bar closed at or above its open
(``close >= open``), and ``open -> high -> low -> close`` otherwise, moving in straight
lines between those points. Positions along that path are floats from 0 (the open) to 3
(the close); when several orders of a symbol could execute in the same bar, the one whose
trigger comes first along the path executes first (that is how an OCO pair decides which
leg wins when a bar spans both prices).

**Gaps.** The open is a jump from the previous price, not a move through it, and so is a
shock in the middle of the session (:func:`match_jump`, met at the instant of the shock):

* a buy limit at 100 when the bar opens at 98 fills at 98 (the better price);
* a sell stop at 95 when the bar opens at 92 triggers at the open and fills at 92 (worse):
  a triggered stop is a market order and takes the first price there is after the gap;
* a sell stop-limit (stop 95, limit 94) when the price gaps to 92 triggers but does not
  fill: it rests as a limit at 94 and fills only if the price comes back to it;
* otherwise a limit fills exactly at its limit price and a stop triggers exactly at its
  stop price when the path crosses it.

**Slippage.** Anything that executes as a market order (market orders, triggered stops and
trailing stops) pays ``slippage_bps`` basis points on top of the reference price: buys
higher, sells lower, rounded to the tick (a cent at $1 and above, $0.0001 below).
Limit executions never get a price worse than their limit and pay no slippage.

**Trailing stops** keep a high-water mark (sell) or low-water mark (buy): at each path point
the order first checks whether the price reached the stop implied by the mark so far, then
moves the mark. The stop is ``mark - trail_price`` or ``mark * (1 - trail_percent/100)``
for sells (mirror for buys).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

ONE = Decimal(1)
BPS = Decimal(10_000)
CENT = Decimal("0.01")
SUB_CENT = Decimal("0.0001")


def round_price(price: Decimal) -> Decimal:
    """``price`` on the exchange tick: cents at $1 and above, $0.0001 below."""
    tick = CENT if abs(price) >= ONE else SUB_CENT
    return price.quantize(tick, rounding=ROUND_HALF_UP)


def to_decimal(value: float | int | Decimal) -> Decimal:
    """A market-data float as the Decimal it prints as (no binary noise)."""
    return value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else value)


def with_slippage(price: Decimal, side: str, slippage_bps: Decimal) -> Decimal:
    """A market execution price: ``slippage_bps`` worse than ``price`` for ``side``."""
    factor = ONE + slippage_bps / BPS if side == "buy" else ONE - slippage_bps / BPS
    return round_price(price * factor)


@dataclass(frozen=True)
class Touch:
    """The market at one instant for one symbol: best bid/ask and last trade (Decimal)."""

    bid: Decimal
    ask: Decimal
    last: Decimal
    bid_size: int
    ask_size: int


def quote_touch(market: Any, symbol: str, at: datetime) -> Touch | None:
    """The quote and last trade of ``symbol`` at ``at`` (a missing side falls back to the
    last trade, a missing last trade to the mid), or None when the market has neither."""
    quote = market.quote_at(symbol, at)
    last_float = market.price_at(symbol, at)
    last = to_decimal(last_float) if last_float is not None else None
    if quote is None and last is None:
        return None
    bid = to_decimal(quote.bid) if quote is not None and quote.bid > 0 else last
    ask = to_decimal(quote.ask) if quote is not None and quote.ask > 0 else last
    assert bid is not None and ask is not None
    if last is None:
        last = (bid + ask) / 2
    sizes = (int(quote.bid_size), int(quote.ask_size)) if quote is not None else (0, 0)
    return Touch(round_price(bid), round_price(ask), last, sizes[0], sizes[1])


def last_price(market: Any, symbol: str, at: datetime) -> Decimal | None:
    """The last trade price of ``symbol`` at ``at`` as a Decimal, or None when there is none."""
    price = market.price_at(symbol, at)
    return to_decimal(price) if price is not None else None


def bar_path(o: Decimal, h: Decimal, low: Decimal, c: Decimal) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """The four path points of a bar under the OHLC path rule (see the module docstring)."""
    return (o, low, h, c) if c >= o else (o, h, low, c)


@dataclass(frozen=True)
class Hit:
    """An order executes at ``position`` along the bar path (0 = open .. 3 = close)."""

    position: float
    price: Decimal
    at_market: bool  # executes as a market order: slippage applies


@dataclass
class OrderTerms:
    """What the matcher needs of an order; ``triggered`` and ``mark`` are updated in place."""

    side: str
    type: str
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    triggered: bool = False
    mark: Decimal | None = None  # trailing stop high-water (sell) / low-water (buy) mark


def trailing_stop_price(terms: OrderTerms) -> Decimal | None:
    """The stop implied by the trailing order's current mark, on the tick."""
    if terms.mark is None:
        return None
    if terms.trail_price is not None:
        offset = terms.trail_price
        stop = terms.mark - offset if terms.side == "sell" else terms.mark + offset
    else:
        pct = (terms.trail_percent or Decimal(0)) / Decimal(100)
        stop = terms.mark * (ONE - pct) if terms.side == "sell" else terms.mark * (ONE + pct)
    return round_price(stop)


def _limit_ok(side: str, price: Decimal, limit: Decimal) -> bool:
    return price <= limit if side == "buy" else price >= limit


def _stop_hit(side: str, price: Decimal, stop: Decimal) -> bool:
    return price >= stop if side == "buy" else price <= stop


def _crossing(a: Decimal, b: Decimal, level: Decimal) -> float | None:
    """Fraction of the straight move a -> b at which the price equals ``level``."""
    if a == b:
        return 0.0 if a == level else None
    lo, hi = (a, b) if a < b else (b, a)
    if not lo <= level <= hi:
        return None
    return float((level - a) / (b - a))


def _first_limit(side: str, limit: Decimal, path: tuple[Decimal, ...], start: float, start_price: Decimal) -> Hit | None:
    """First point at/after ``start`` where a resting limit executes."""
    if _limit_ok(side, start_price, limit):
        return Hit(start, start_price, False)
    segment = int(start)
    current = start_price
    for index in range(segment, len(path) - 1):
        end = path[index + 1]
        fraction = _crossing(current, end, limit)
        if fraction is not None:
            begin = start if index == segment else float(index)
            position = begin + (index + 1 - begin) * fraction
            return Hit(position, limit, False)
        current = end
    return None


def _first_stop(side: str, stop: Decimal, path: tuple[Decimal, ...]) -> tuple[float, Decimal] | None:
    """Where a stop triggers along the path: (position, trigger price)."""
    if _stop_hit(side, path[0], stop):
        return 0.0, path[0]
    for index in range(len(path) - 1):
        fraction = _crossing(path[index], path[index + 1], stop)
        if fraction is not None:
            return index + fraction, stop
    return None


def _trailing(terms: OrderTerms, path: tuple[Decimal, ...]) -> Hit | None:
    sell = terms.side == "sell"
    if terms.mark is None:
        terms.mark = path[0]
    previous = path[0]
    for index, point in enumerate(path):
        stop = trailing_stop_price(terms)
        assert stop is not None
        if index == 0:
            if _stop_hit(terms.side, point, stop):
                return Hit(0.0, point, True)
        else:
            moving_against = point < previous if sell else point > previous
            if moving_against:
                fraction = _crossing(previous, point, stop)
                if fraction is not None or _stop_hit(terms.side, point, stop):
                    where = fraction if fraction is not None else 1.0
                    return Hit(index - 1 + where, stop, True)
        terms.mark = max(terms.mark, point) if sell else min(terms.mark, point)
        previous = point
    return None


def match_bar(terms: OrderTerms, path: tuple[Decimal, ...]) -> Hit | None:
    """Where (if anywhere) the order executes along ``path``.

    Mutates ``terms``: a stop-limit's ``triggered`` flag once its stop is crossed (it then
    rests as a limit), and a trailing stop's ``mark``.
    """
    kind = terms.type
    if kind == "market":
        return Hit(0.0, path[0], True)
    if kind == "limit":
        assert terms.limit_price is not None
        return _first_limit(terms.side, terms.limit_price, path, 0.0, path[0])
    if kind == "stop":
        assert terms.stop_price is not None
        trigger = _first_stop(terms.side, terms.stop_price, path)
        return Hit(trigger[0], trigger[1], True) if trigger else None
    if kind == "stop_limit":
        assert terms.limit_price is not None and terms.stop_price is not None
        if terms.triggered:
            return _first_limit(terms.side, terms.limit_price, path, 0.0, path[0])
        trigger = _first_stop(terms.side, terms.stop_price, path)
        if trigger is None:
            return None
        terms.triggered = True
        return _first_limit(terms.side, terms.limit_price, path, trigger[0], trigger[1])
    if kind == "trailing_stop":
        return _trailing(terms, path)
    raise ValueError(f"unknown order type {kind!r}")


def match_quote(terms: OrderTerms, bid: Decimal, ask: Decimal, last: Decimal) -> Hit | None:
    """Whether the order executes right now against the quote (at submission or activation).

    Market orders take the ask (buy) or bid (sell); a marketable limit takes the quote (a
    better price than its limit); a stop whose price the last trade already crossed executes
    as a market order; a stop-limit then rests as a limit. Trailing stops only start their
    mark here.
    """
    touch = ask if terms.side == "buy" else bid
    kind = terms.type
    if kind == "market":
        return Hit(0.0, touch, True)
    if kind == "limit":
        assert terms.limit_price is not None
        return Hit(0.0, touch, False) if _limit_ok(terms.side, touch, terms.limit_price) else None
    if kind == "stop":
        assert terms.stop_price is not None
        return Hit(0.0, touch, True) if _stop_hit(terms.side, last, terms.stop_price) else None
    if kind == "stop_limit":
        assert terms.limit_price is not None and terms.stop_price is not None
        if not terms.triggered and _stop_hit(terms.side, last, terms.stop_price):
            terms.triggered = True
        if terms.triggered and _limit_ok(terms.side, touch, terms.limit_price):
            return Hit(0.0, touch, False)
        return None
    if kind == "trailing_stop":
        if terms.mark is None:
            terms.mark = last
        return None
    raise ValueError(f"unknown order type {kind!r}")


def match_jump(terms: OrderTerms, bid: Decimal, ask: Decimal, last: Decimal) -> Hit | None:
    """Whether a resting order executes when the price jumps to ``last`` (a shock): a gap.

    As :func:`match_quote` (a stop the jump crossed executes at the quote after the jump,
    never at its stop price; a stop-limit whose limit the jump also crossed rests as a
    limit; a limit the jump made marketable fills at the better quote), and a trailing stop
    triggers when the jump crosses the stop implied by its mark, else its mark moves.
    """
    if terms.type != "trailing_stop":
        return match_quote(terms, bid, ask, last)
    if terms.mark is None:
        terms.mark = last
        return None
    stop = trailing_stop_price(terms)
    assert stop is not None
    if _stop_hit(terms.side, last, stop):
        return Hit(0.0, ask if terms.side == "buy" else bid, True)
    terms.mark = max(terms.mark, last) if terms.side == "sell" else min(terms.mark, last)
    return None
