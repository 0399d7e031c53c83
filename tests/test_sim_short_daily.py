"""A short's protective stop fills before its target on a daily bar reaching both
(simulator/adverse_first.py), as the labelling rule (market/bracket_labels.py) counts it;
longs, orders outside an OCO pair and recorded minute bars keep the path order."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from market.bracket_labels import bracket_outcomes
from simulator.core import SimulatorCore

UTC = timezone.utc
QUIET = "100,100.5,99.5,100,1000000"


def _sessions(count: int) -> list[date]:
    day, out = date(2016, 2, 1), []
    while len(out) < count:
        if day.weekday() < 5 and day != date(2016, 2, 15):  # Presidents' Day
            out.append(day)
        day += timedelta(days=1)
    return out


def _core(tmp_path: Path, last_bars: list[str], start_on: int) -> tuple[SimulatorCore, list[date]]:
    """A TEST symbol with 20 quiet sessions, then ``last_bars`` (``open,high,low,close,volume``);
    the clock starts at the open of session ``start_on`` (negative: from the end)."""
    sessions = _sessions(20 + len(last_bars))
    rows = ["timestamp,open,high,low,close,volume"]
    rows += [f"{d.isoformat()},{QUIET}" for d in sessions[:20]]
    rows += [f"{d.isoformat()},{bar}" for d, bar in zip(sessions[20:], last_bars)]
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / f"TEST-1d-{sessions[0]}-{sessions[-1]}.csv").write_text("\n".join(rows) + "\n")
    day = sessions[start_on]
    opened = SimulatorCore.create(data_dir=folder, symbols=["TEST"], start=f"{day.isoformat()}T09:30:00-05:00",
                                  speed=None, cash=1_000_000, slippage_bps=0.0)
    return opened, sessions


def _bracket(core: SimulatorCore, side: str, target: str, stop: str) -> dict[str, Any]:
    return core.broker.submit_order({
        "symbol": "TEST", "qty": "10", "side": side, "type": "market", "time_in_force": "gtc",
        "order_class": "bracket", "take_profit": {"limit_price": target}, "stop_loss": {"stop_price": stop}})


def _legs(core: SimulatorCore, side: str) -> dict[str, dict[str, Any]]:
    """The exit legs by type (``limit``: take-profit, ``stop``) on ``side``."""
    return {o["type"]: o for o in core.broker.list_orders({"status": "all", "nested": "false"})
            if o["side"] == side and o["order_class"] == "bracket" and o["type"] != "market"}


def _after_close(core: SimulatorCore, session: date) -> None:
    core.clock.set_time(core.calendar.open_close(session)[1] + timedelta(minutes=5))
    core.sync()


def _position_qty(core: SimulatorCore) -> Decimal:
    found = [p for p in core.broker.list_positions() if p["symbol"] == "TEST"]
    return Decimal(found[0]["qty"]) if found else Decimal(0)


@pytest.mark.parametrize("fast_paths", [True, False])
def test_short_bracket_on_a_daily_bar_touching_both_fills_its_stop_and_cancels_the_target(
    tmp_path: Path, fast_paths: bool
) -> None:
    # Enter short at the open (100); the day falls to 93 (target 94) before it rallies to 104
    # (stop 103): the expansion reaches the low first, the rule says stop. The same with the
    # market's daily fast paths off (every answer read from the minute bars).
    core, sessions = _core(tmp_path, ["100,104,93,98,1000000"], -1)
    core.market.fast_paths = fast_paths
    _bracket(core, "sell", target="94.00", stop="103.00")
    _after_close(core, sessions[-1])
    legs = _legs(core, "buy")
    assert legs["stop"]["status"] == "filled", legs
    assert Decimal(legs["stop"]["filled_avg_price"]) == Decimal("103.00")
    assert legs["limit"]["status"] == "canceled"
    assert legs["limit"]["filled_qty"] == "0"
    assert _position_qty(core) == 0
    # The path did reach the target first (the take-profit waited, it was not out of reach).
    day = core.market.minute_arrays("TEST", sessions[-1])
    assert day is not None
    first_low = int(np.argmax(day.l <= 94.0))
    first_stop = int(np.argmax(day.h >= 103.0))
    assert first_low < first_stop
    # ... and the label agrees: a short bracket of 3% / 6% touching both in its entry session is a stop.
    o, h, lo = (np.array(c) for c in ([100.0, 100.0], [100.5, 104.0], [99.5, 93.0]))
    assert bracket_outcomes(o, h, lo, 0.03, 0.06, 1, side="short").label[0] == 0.0


def test_short_bracket_gapping_above_its_stop_fills_at_the_open(tmp_path: Path) -> None:
    # Short at 100 on a quiet session; the next session opens at 106, above the 103 stop, and
    # also falls to 93 below the target: the stop fills at the open.
    core, sessions = _core(tmp_path, ["100,100.5,99.5,100,1000000", "106,107,93,95,1000000"], -2)
    _bracket(core, "sell", target="94.00", stop="103.00")
    _after_close(core, sessions[-2])
    assert _position_qty(core) == Decimal(-10)
    _after_close(core, sessions[-1])
    legs = _legs(core, "buy")
    assert legs["stop"]["status"] == "filled", legs
    assert Decimal(legs["stop"]["filled_avg_price"]) == Decimal("106.00")
    opened = core.calendar.open_close(sessions[-1])[0]
    assert datetime.fromisoformat(legs["stop"]["filled_at"].replace("Z", "+00:00")) == opened
    assert legs["limit"]["status"] == "canceled"


def test_short_bracket_touching_only_its_target_fills_the_target(tmp_path: Path) -> None:
    core, sessions = _core(tmp_path, ["100,102,93,98,1000000"], -1)
    _bracket(core, "sell", target="94.00", stop="103.00")
    _after_close(core, sessions[-1])
    legs = _legs(core, "buy")
    assert legs["limit"]["status"] == "filled", legs
    assert Decimal(legs["limit"]["filled_avg_price"]) == Decimal("94.00")
    assert legs["stop"]["status"] == "canceled"
    assert _position_qty(core) == 0


def test_short_bracket_gapping_below_its_target_fills_the_target_at_the_open_as_a_long_does(tmp_path: Path) -> None:
    # A gap through the target is a fill at the open on either side (a long's take-profit
    # fills at a gap up the same way), even though the day later reaches the stop.
    core, sessions = _core(tmp_path, ["100,100.5,99.5,100,1000000", "92,104,91,98,1000000"], -2)
    _bracket(core, "sell", target="94.00", stop="103.00")
    _after_close(core, sessions[-1])
    legs = _legs(core, "buy")
    assert legs["limit"]["status"] == "filled", legs
    assert Decimal(legs["limit"]["filled_avg_price"]) == Decimal("92.00")
    assert legs["stop"]["status"] == "canceled"


def test_long_bracket_on_the_same_kind_of_bar_still_fills_its_stop_first(tmp_path: Path) -> None:
    core, sessions = _core(tmp_path, ["100,107,96,98,1000000"], -1)
    _bracket(core, "buy", target="106.00", stop="97.00")
    _after_close(core, sessions[-1])
    legs = _legs(core, "sell")
    assert legs["stop"]["status"] == "filled", legs
    assert Decimal(legs["stop"]["filled_avg_price"]) == Decimal("97.00")
    assert legs["limit"]["status"] == "canceled"


def test_an_oco_exit_of_a_short_also_fills_its_stop_first(tmp_path: Path) -> None:
    core, sessions = _core(tmp_path, ["100,100.5,99.5,100,1000000", "100,104,93,98,1000000"], -2)
    core.broker.submit_order({"symbol": "TEST", "qty": "10", "side": "sell", "type": "market", "time_in_force": "day"})
    _after_close(core, sessions[-2])
    core.broker.submit_order({"symbol": "TEST", "qty": "10", "side": "buy", "type": "limit", "time_in_force": "gtc",
                              "order_class": "oco", "take_profit": {"limit_price": "94.00"},
                              "stop_loss": {"stop_price": "103.00"}})
    _after_close(core, sessions[-1])
    exits = {o["type"]: o for o in core.broker.list_orders({"status": "all", "nested": "false"})
             if o["order_class"] == "oco"}
    assert exits["stop"]["status"] == "filled", exits
    assert Decimal(exits["stop"]["filled_avg_price"]) == Decimal("103.00")
    assert exits["limit"]["status"] == "canceled"


def test_orders_outside_an_oco_pair_keep_the_path_order(tmp_path: Path) -> None:
    # A simple buy limit below and a simple buy stop above, each covering half a short: both
    # fill, the limit first (the path reaches the low first).
    core, sessions = _core(tmp_path, ["100,100.5,99.5,100,1000000", "100,104,93,98,1000000"], -2)
    core.broker.submit_order({"symbol": "TEST", "qty": "10", "side": "sell", "type": "market", "time_in_force": "day"})
    _after_close(core, sessions[-2])
    limit = core.broker.submit_order({"symbol": "TEST", "qty": "5", "side": "buy", "type": "limit",
                                      "limit_price": "94.00", "time_in_force": "day"})
    stop = core.broker.submit_order({"symbol": "TEST", "qty": "5", "side": "buy", "type": "stop",
                                     "stop_price": "103.00", "time_in_force": "day"})
    _after_close(core, sessions[-1])
    limit_now, stop_now = core.broker.get_order(limit["id"]), core.broker.get_order(stop["id"])
    assert limit_now["status"] == stop_now["status"] == "filled"
    assert limit_now["filled_at"] < stop_now["filled_at"]
    assert _position_qty(core) == 0


def test_recorded_minute_bars_keep_the_path_order_for_a_short(tmp_path: Path) -> None:
    # Intraday mode: the minute bars say the low came first, so the target fills.
    folder = tmp_path / "minutes"
    folder.mkdir()
    session = date(2016, 2, 29)
    opened = datetime(2016, 2, 29, 14, 30, tzinfo=UTC)
    prices = [(100, 100.2, 99.8, 100), (100, 100, 96, 96), (96, 96, 93, 93.5), (93.5, 100, 93.5, 100),
              (100, 104, 100, 103.5), (103.5, 103.6, 102, 102)]
    rows = ["timestamp,open,high,low,close,volume"]
    for k, (o, h, lo, c) in enumerate(prices * 3):
        rows.append(f"{(opened + timedelta(minutes=k)).isoformat()},{o},{h},{lo},{c},10000")
    (folder / f"TEST-1m-{session}-{session}.csv").write_text("\n".join(rows) + "\n")
    core = SimulatorCore.create(data_dir=folder, symbols=["TEST"], start=opened.isoformat(), speed=None,
                                cash=1_000_000, slippage_bps=0.0)
    assert core.market.expanded_day("TEST", session) is None
    _bracket(core, "sell", target="94.00", stop="103.00")
    core.clock.set_time(opened + timedelta(minutes=len(prices) * 3 + 1))
    core.sync()
    legs = _legs(core, "buy")
    assert legs["limit"]["status"] == "filled", legs
    assert Decimal(legs["limit"]["filled_avg_price"]) == Decimal("94.00")
    assert legs["stop"]["status"] == "canceled"
