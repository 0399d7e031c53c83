"""Trade ledger: FIFO round trips from fills, long and short, partials, persistence."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from analytics.trade_ledger import ClosedTrade, FillRecord, TradeLedger, is_day_trade
from market.trading_calendar import TradingCalendar

D = Decimal
T0 = datetime(2025, 3, 3, 15, 0, tzinfo=timezone.utc)  # 10:00 ET, Monday


def fill(side: str, qty: str, price: str, minutes: float = 0, *, symbol: str = "AAPL",
         strategy: str | None = "momentum", eid: str | None = None, reason: str | None = None,
         at: datetime | None = None) -> FillRecord:
    moment = at or T0 + timedelta(minutes=minutes)
    return FillRecord(symbol, side, D(qty), D(price), moment, strategy,
                      eid or f"{side}-{qty}-{price}-{moment.isoformat()}", reason)


def test_scale_in_then_partial_exits_match_fifo_with_exact_pnl() -> None:
    ledger = TradeLedger()
    assert ledger.apply(fill("buy", "10", "100", 0)) == []
    assert ledger.apply(fill("buy", "5", "110", 1)) == []
    assert ledger.position("AAPL") == D(15)

    (first,) = ledger.apply(fill("sell", "12", "120", 30, reason="take_profit"))
    # 10 @ 100 and 2 @ 110 closed: cost 1220, proceeds 1440.
    assert first.qty == D(12)
    assert first.side == "long"
    assert first.pnl == D(220)
    assert first.entry_price * 12 == D(1220)
    assert first.exit_price == D(120)
    assert first.return_pct == D(220) / D(1220)
    assert first.entry_at == T0
    assert first.holding_seconds == 30 * 60
    assert first.exit_reason == "take_profit"
    assert first.strategy == "momentum"
    lots = ledger.open_lots("AAPL")
    assert [(lot.qty, lot.price) for lot in lots] == [(D(3), D(110))]

    (second,) = ledger.apply(fill("sell", "3", "105", 40, reason="stop_loss"))
    assert second.pnl == D(-15)  # (105 - 110) * 3
    assert second.entry_price == D(110)
    assert ledger.open_lots("AAPL") == []
    assert ledger.position("AAPL") == 0


def test_an_exit_filled_in_partials_gives_one_trade_per_partial_and_sums_right() -> None:
    ledger = TradeLedger()
    ledger.apply(fill("buy", "100", "50.25", 0))
    trades: list[ClosedTrade] = []
    for i, (qty, price) in enumerate([("30", "51.00"), ("30", "51.10"), ("40", "50.90")]):
        trades += ledger.apply(fill("sell", qty, price, 10 + i))
    assert [t.qty for t in trades] == [D(30), D(30), D(40)]
    total = sum((t.pnl for t in trades), D(0))
    assert total == D("30") * D("0.75") + D("30") * D("0.85") + D("40") * D("0.65")
    assert total == D("74.00")


def test_short_trades_profit_when_price_falls() -> None:
    ledger = TradeLedger()
    ledger.apply(fill("sell", "10", "50", 0, symbol="TSLA"))
    assert ledger.position("TSLA") == D(-10)
    (cover,) = ledger.apply(fill("buy", "4", "45", 5, symbol="TSLA"))
    assert cover.side == "short"
    assert cover.pnl == D(20)  # (50 - 45) * 4
    assert cover.return_pct == D(20) / D(200)
    (rest,) = ledger.apply(fill("buy", "6", "55", 6, symbol="TSLA"))
    assert rest.pnl == D(-30)  # (50 - 55) * 6
    assert ledger.position("TSLA") == 0


def test_a_fill_larger_than_the_position_closes_it_and_opens_the_other_side() -> None:
    ledger = TradeLedger()
    ledger.apply(fill("buy", "5", "10", 0))
    (trade,) = ledger.apply(fill("sell", "8", "12", 1))
    assert trade.qty == D(5) and trade.pnl == D(10)
    assert ledger.position("AAPL") == D(-3)
    (cover,) = ledger.apply(fill("buy", "3", "11", 2))
    assert cover.side == "short" and cover.pnl == D(3)


def test_lots_of_different_strategies_or_days_close_as_separate_trades() -> None:
    ledger = TradeLedger()
    ledger.apply(fill("buy", "10", "100", 0, strategy="breakout"))
    ledger.apply(fill("buy", "10", "102", 1, strategy="momentum"))
    trades = ledger.apply(fill("sell", "20", "101", 2))
    assert [(t.strategy, t.qty, t.pnl) for t in trades] == [("breakout", D(10), D(10)), ("momentum", D(10), D(-10))]
    assert len({t.trade_id for t in trades}) == 2

    ledger = TradeLedger()
    yesterday = T0 - timedelta(days=1)
    ledger.apply(fill("buy", "10", "100", at=yesterday))
    ledger.apply(fill("buy", "10", "100", 0))
    overnight, today = ledger.apply(fill("sell", "20", "101", 60))
    assert not is_day_trade(overnight)
    assert is_day_trade(today)


def test_day_trades_use_the_exchange_date_not_utc() -> None:
    ledger = TradeLedger()
    ledger.apply(fill("buy", "1", "10", at=datetime(2025, 3, 3, 14, 45, tzinfo=timezone.utc)))
    # 01:00 UTC on the 4th is 20:00 ET on the 3rd: same session date.
    (trade,) = ledger.apply(fill("sell", "1", "11", at=datetime(2025, 3, 4, 1, 0, tzinfo=timezone.utc)))
    assert is_day_trade(trade)
    ledger.apply(fill("buy", "1", "10", at=datetime(2025, 3, 4, 1, 30, tzinfo=timezone.utc)))
    (trade,) = ledger.apply(fill("sell", "1", "11", at=datetime(2025, 3, 4, 14, 35, tzinfo=timezone.utc)))
    assert not is_day_trade(trade)


def test_a_repeated_execution_id_is_ignored() -> None:
    ledger = TradeLedger()
    entry = fill("buy", "10", "100", 0, eid="e1")
    exit_ = fill("sell", "10", "101", 1, eid="e2")
    ledger.apply(entry)
    assert ledger.apply(entry) == []
    assert ledger.position("AAPL") == D(10)
    assert len(ledger.apply(exit_)) == 1
    assert ledger.apply(exit_) == []


def test_persistence_roundtrip_continues_exactly_as_without_a_restart() -> None:
    fills = [
        fill("buy", "10", "100.10", 0), fill("buy", "7.5", "101.37", 1),
        fill("sell", "4", "50", 2, symbol="TSLA", strategy="mean_reversion"),
        fill("sell", "12", "103", 3),
    ]
    later = [fill("sell", "5.5", "99.99", 4), fill("buy", "4", "48.5", 5, symbol="TSLA"),
             fill("buy", "4", "48.5", 5, symbol="TSLA")]  # the repeat must stay ignored

    straight = TradeLedger()
    straight.apply_all(fills)
    expected = straight.apply_all(later[:2])

    interrupted = TradeLedger()
    interrupted.apply_all(fills)
    snapshot = json.loads(json.dumps(interrupted.to_dict()))
    restored = TradeLedger.from_dict(snapshot)
    assert restored.to_dict() == interrupted.to_dict()
    assert restored.apply(fills[0]) == []  # seen before the restart
    assert restored.apply_all(later) == expected
    assert restored.open_lots("AAPL") == straight.open_lots("AAPL") == []


def test_malformed_snapshots_and_fills_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="version"):
        TradeLedger.from_dict({"lots": {}})
    with pytest.raises(ValueError, match="long and short"):
        TradeLedger.from_dict({"version": 1, "lots": {"AAPL": [
            {"side": "buy", "qty": "1", "price": "1", "at": T0.isoformat(), "execution_id": "a"},
            {"side": "sell", "qty": "1", "price": "1", "at": T0.isoformat(), "execution_id": "b"},
        ]}})
    with pytest.raises(ValueError, match="timezone-aware"):
        FillRecord("AAPL", "buy", D(1), D(1), datetime(2025, 1, 2, 15), None, "x")
    with pytest.raises(ValueError, match="qty must be positive"):
        FillRecord("AAPL", "buy", D(0), D(1), T0, None, "x")
    with pytest.raises(ValueError, match="side"):
        FillRecord("AAPL", "short", D(1), D(1), T0, None, "x")


def test_holding_sessions_counts_trading_days_since_the_oldest_open_lot() -> None:
    calendar = TradingCalendar()
    ledger = TradeLedger()
    assert ledger.holding_sessions("AAPL", T0, calendar) is None
    ledger.apply(fill("buy", "1", "10", at=datetime(2025, 2, 28, 15, tzinfo=timezone.utc)))  # Friday
    assert ledger.holding_sessions("AAPL", datetime(2025, 2, 28, 20, tzinfo=timezone.utc), calendar) == 0
    assert ledger.holding_sessions("AAPL", T0, calendar) == 1  # Monday: one session later
    assert ledger.holding_sessions("AAPL", T0 + timedelta(days=2), calendar) == 3
