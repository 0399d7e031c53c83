"""The plausibility rules for account readings and market prices (issue 13, item 3).

The end-to-end proof is in ``tests/test_sanity_e2e.py``; these pin each rule on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pytest

from engine.account_sanity import AccountSanity
from market.market_data import BarSeries, price_problem, series_problem

D = Decimal


@dataclass
class Acct:
    equity: Decimal
    cash: Decimal
    buying_power: Decimal = D(0)


@dataclass
class Pos:
    symbol: str
    qty: Decimal
    avg_entry_price: Decimal
    current_price: Decimal | None
    market_value: Decimal | None = None
    unrealized_pl: Decimal | None = None


def pos(symbol: str, qty: int, entry: str, mark: str) -> Pos:
    q, e, m = D(qty), D(entry), D(mark)
    return Pos(symbol, q, e, m, q * m, q * (m - e))


HELD = [pos("AAPL", 100, "200", "210"), pos("MSFT", 50, "400", "380")]  # 21000 + 19000


def test_a_consistent_reading_passes_and_a_genuine_loss_is_explained_by_the_marks() -> None:
    sanity = AccountSanity()
    assert sanity.problems(Acct(D(100000), D(60000)), HELD) == []
    sanity.accept(Acct(D(100000), D(60000)), HELD)
    crashed = [pos("AAPL", 100, "200", "150"), pos("MSFT", 50, "400", "300")]  # -11000
    assert sanity.problems(Acct(D(89000), D(60000)), crashed) == []


@pytest.mark.parametrize("equity", ["-50000", "0"])
def test_equity_not_positive_with_positions_held(equity: str) -> None:
    found = AccountSanity().problems(Acct(D(equity), D(60000)), HELD)
    assert any("not positive while 2 position(s)" in p for p in found)
    assert any("differs from cash" in p for p in found)


def test_a_flat_account_with_zero_equity_and_zero_cash_is_consistent() -> None:
    assert AccountSanity().problems(Acct(D(0), D(0)), []) == []


def test_cash_must_move_only_by_the_fills_since_the_last_reading() -> None:
    sanity = AccountSanity()
    sanity.accept(Acct(D(100000), D(60000)), HELD)
    sold = [HELD[1]]  # AAPL sold: 100 x 210 = 21000 more cash
    unexplained = sanity.problems(Acct(D(100000), D(81000)), sold)
    assert any("fills since explain" in p for p in unexplained)
    sanity.add_fill("sell", D(100), D(210))
    assert sanity.problems(Acct(D(100000), D(81000)), sold) == []


def test_a_mark_ten_times_off_or_an_inconsistent_position_is_not_believed() -> None:
    sanity = AccountSanity()
    sanity.accept(Acct(D(100000), D(60000)), HELD)
    wild = [pos("AAPL", 100, "200", "2200"), HELD[1]]
    assert any("AAPL: mark 2200" in p for p in sanity.problems(Acct(D(299000), D(60000)), wild))
    lying = [Pos("AAPL", D(100), D(200), D(210), D(21000), D(-90000)), HELD[1]]
    assert any("unrealized P&L" in p for p in sanity.problems(Acct(D(100000), D(60000)), lying))


def test_a_reread_confirms_only_when_it_says_the_same() -> None:
    sanity = AccountSanity()
    first = sanity.accept(Acct(D(-50000), D(60000)), HELD)
    assert sanity.confirms(first, sanity.accept(Acct(D(-50000), D(60000)), HELD))
    assert not sanity.confirms(first, sanity.accept(Acct(D(0), D(60000)), HELD))


@pytest.mark.parametrize(("value", "reference", "fragment"), [
    (math.nan, None, "not finite"), (math.inf, None, "not finite"), (0.0, None, "not positive"),
    (-1.0, None, "not positive"), (1e308, None, "absurd"), (D("1E+308"), None, "absurd"),
    (5000.0, 100.0, "50x the last close"), (2.0, 100.0, "0.02x"), ("abc", None, "not a number"),
])
def test_price_problem_names_what_is_wrong(value: object, reference: float | None, fragment: str) -> None:
    problem = price_problem(value, reference)
    assert problem is not None and fragment in problem


def test_ordinary_prices_and_big_moves_pass() -> None:
    assert price_problem(101.5, 100.0) is None
    assert price_problem(D("700000"), 690000.0) is None  # BRK.A
    assert price_problem(60.0, 100.0) is None  # a 40% crash is a market, not a feed error


def test_series_problem_finds_the_bad_bar() -> None:
    ts = np.arange(5) * 86400
    good = BarSeries.from_arrays(ts, [10] * 5, [11] * 5, [9] * 5, [10, 10.5, 10.2, 9.8, 10], [1000] * 5)
    assert series_problem(good) is None
    nan_close = BarSeries.from_arrays(ts, [10] * 5, [11] * 5, [9] * 5, [10, 10, math.nan, 10, 10], [1000] * 5)
    assert "bar 2: close" in (series_problem(nan_close) or "")
    jump = BarSeries.from_arrays(ts, [10] * 5, [600] * 5, [9] * 5, [10, 10, 10, 500, 10], [1000] * 5)
    assert "bar 3: close 500 is 50x" in (series_problem(jump) or "")
