"""The one labelling rule (market/bracket_labels.py), pinned on hand-made bars and on real ones."""

from __future__ import annotations

import numpy as np
import pytest

from market.bracket_labels import bracket_outcomes, daily_path_order, label_one
from market.market_data import load_csv_bars
from tests.conftest import SHARED_DATA


def bars(rows: list[tuple[float, float, float, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    o, h, lo, _ = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
    return o, h, lo


def test_entry_is_next_open_and_a_session_touching_both_is_a_stop() -> None:
    # decision on day 0; entry at day 1's open 100: stop 97, target 106
    o, h, lo = bars([(50, 51, 49, 50), (100, 107, 96, 100), (100, 101, 99, 100)])
    out = bracket_outcomes(o, h, lo, 0.03, 0.06, 1)
    assert out.entry_price[0] == 100.0 and out.stop_price[0] == pytest.approx(97.0)
    assert out.target_price[0] == pytest.approx(106.0)
    assert out.label[0] == 0.0  # both touched on the entry session: stop first
    assert out.settled[0] == 1


def test_a_session_opening_below_the_stop_is_a_stop_and_a_later_target_a_win() -> None:
    o, h, lo = bars([(50, 51, 49, 50), (100, 101, 99, 100), (90, 110, 89, 95), (100, 101, 99, 100)])
    assert bracket_outcomes(o, h, lo, 0.03, 0.06, 2).label[0] == 0.0
    o, h, lo = bars([(50, 51, 49, 50), (100, 101, 99, 100), (100, 106, 98, 105), (100, 101, 99, 100)])
    assert bracket_outcomes(o, h, lo, 0.03, 0.06, 2).label[0] == 1.0


def test_neither_by_the_horizon_is_a_loss_and_a_horizon_past_the_data_is_blank() -> None:
    o, h, lo = bars([(50, 51, 49, 50), (100, 101, 99, 100), (100, 102, 98, 100), (100, 120, 80, 100)])
    out = bracket_outcomes(o, h, lo, 0.03, 0.06, 2)
    assert out.label[0] == 0.0  # sessions 1 and 2 touch nothing; session 3 is past the horizon
    assert out.horizon[0] == 2
    assert out.label[1] == 0.0  # sessions 2 and 3: the stop on session 3
    assert np.isnan(out.label[2])  # 2 + 2 > last index 3: blank
    assert out.known[2] == 0.0 and out.settled[2] == 3  # ... though the data already shows its stop


def test_the_horizon_and_the_bracket_change_the_label() -> None:
    o, h, lo = bars([(50, 51, 49, 50), (100, 101, 99, 100), (100, 102, 99, 100), (100, 104, 99, 100),
                     (100, 107, 99, 100), (100, 100, 100, 100)])
    assert bracket_outcomes(o, h, lo, 0.03, 0.06, 3).label[0] == 0.0  # target on the 4th session
    assert bracket_outcomes(o, h, lo, 0.03, 0.06, 4).label[0] == 1.0
    assert bracket_outcomes(o, h, lo, 0.015, 0.03, 3).label[0] == 1.0  # 103 reached on session 3


def test_short_brackets_mirror() -> None:
    o, h, lo = bars([(50, 51, 49, 50), (100, 101, 93, 100), (100, 101, 99, 100)])
    assert bracket_outcomes(o, h, lo, 0.03, 0.06, 1, side="short").label[0] == 1.0
    o, h, lo = bars([(50, 51, 49, 50), (100, 104, 93, 100), (100, 101, 99, 100)])
    assert bracket_outcomes(o, h, lo, 0.03, 0.06, 1, side="short").label[0] == 0.0


@pytest.mark.skipif(not (SHARED_DATA / "daily").is_dir(), reason="shared/data/daily is not present")
def test_vectorised_rule_equals_the_loop_on_real_bars() -> None:
    series = load_csv_bars(SHARED_DATA / "daily" / "NVDA-1d-2013-01-02-2023-12-29.csv")
    o, h, lo = (np.asarray(a, float) for a in (series.open, series.high, series.low))
    rng = np.random.default_rng(3)
    for stop, target, horizon in ((0.03, 0.06, 20), (0.015, 0.03, 5), (0.045, 0.09, 10)):
        out = bracket_outcomes(o, h, lo, stop, target, horizon)
        for i in rng.choice(len(o) - 1, 300, replace=False).tolist() + [len(o) - 2, len(o) - 1 - horizon]:
            expected = label_one(o, h, lo, i, stop, target, horizon)
            got = out.label[i]
            assert (np.isnan(expected) and np.isnan(got)) or expected == got, (i, stop, target, horizon)


def test_the_simulator_walks_a_daily_bar_low_first() -> None:
    # a falling bar (close < open) used to walk open -> high -> low -> close: target first
    assert daily_path_order(100.0, 107.0, 96.0, 98.0) == (100.0, 96.0, 107.0, 98.0)


def test_the_simulator_fills_the_stop_of_a_long_bracket_on_a_falling_bar_touching_both(tmp_path) -> None:
    from datetime import date, timedelta

    from simulator.core import SimulatorCore

    rows = ["timestamp,open,high,low,close,volume"]
    day = date(2016, 2, 1)
    sessions = []
    while len(sessions) < 30:
        if day.weekday() < 5 and day != date(2016, 2, 15):  # Presidents' Day
            sessions.append(day)
        day += timedelta(days=1)
    for d in sessions[:-1]:
        rows.append(f"{d.isoformat()},100,100.5,99.5,100,1000000")
    entry_day = sessions[-2]
    # The entry session itself: opens at 100, rallies to 107 and falls to 96, closes 98 (red).
    rows[-1] = f"{entry_day.isoformat()},100,107,96,98,1000000"
    rows.append(f"{sessions[-1].isoformat()},98,99,97.5,98,1000000")
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / f"TEST-1d-{sessions[0]}-{sessions[-1]}.csv").write_text("\n".join(rows) + "\n")
    core = SimulatorCore.create(data_dir=folder, symbols=["TEST"], start=f"{entry_day.isoformat()}T09:30:00-05:00",
                                speed=None, cash=1_000_000, slippage_bps=0.0)
    broker = core.broker
    broker.submit_order({"symbol": "TEST", "qty": "10", "side": "buy", "type": "market", "time_in_force": "day",
                         "order_class": "bracket", "take_profit": {"limit_price": "106.00"},
                         "stop_loss": {"stop_price": "97.00"}})
    closed = core.calendar.open_close(entry_day)[1]
    core.clock.set_time(closed + timedelta(minutes=5))
    legs = {o["type"]: o for o in broker.list_orders({"status": "all", "nested": "false"}) if o["side"] == "sell"}
    assert legs["stop"]["status"] == "filled", legs
    assert legs["limit"]["status"] == "canceled"
    o, h, lo = (np.array(c) for c in ([100.0, 100.0, 98.0], [100.5, 107.0, 99.0], [99.5, 96.0, 97.5]))
    assert bracket_outcomes(o, h, lo, 0.03, 0.06, 1).label[0] == 0.0  # the label agrees: a stop
