"""PDT manager: legacy PDT before 2026-06-04, intraday margin after, budget in both."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
import structlog

import config
from broker.models import Account
from pdt_manager import (
    FLAG_MAY_BE_FLAGGED,
    FLAG_OVER_BUDGET,
    AccountView,
    DayTrade,
    OrderCheck,
    PDTManager,
)
from market.trading_calendar import TradingCalendar

D = Decimal
CALENDAR = TradingCalendar()


def manager(**pdt: Any) -> PDTManager:
    s = config.load_settings(environ={}, env_file=None, overrides={"pdt": pdt} if pdt else None)
    return PDTManager(s, CALENDAR)


def close_today(symbol: str = "AAPL", *, risk_exit: bool = False, opens_today: bool = True) -> OrderCheck:
    return OrderCheck(symbol, "sell", D(10), D(100), is_closing=True, opens_today=opens_today, is_risk_exit=risk_exit)


def open_order(symbol: str = "AAPL", qty: int = 10, price: float = 100) -> OrderCheck:
    return OrderCheck(symbol, "buy", D(qty), D(str(price)), is_closing=False)


def account(equity: float = 20_000, **kw: Any) -> AccountView:
    return AccountView(equity=D(str(equity)), buying_power=D(str(equity)) * 2, **kw)


def with_trades(m: PDTManager, *days: date) -> PDTManager:
    for i, d in enumerate(days):
        m.record_day_trade(f"S{i}", d)
    return m


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


# -- the headline cases ----------------------------------------------------------------------


def test_fourth_day_trade_under_25k_blocked_on_a_2025_date() -> None:
    m = with_trades(manager(), date(2025, 3, 3), date(2025, 3, 4), date(2025, 3, 5))
    today = date(2025, 3, 6)
    assert m.regime_for(None, today) == "legacy"
    assert m.day_trades_in_window(today) == 3
    with structlog.testing.capture_logs() as logs:
        decision = m.check_order(close_today(), account(), today)
    assert not decision.allowed and decision.qty == 0
    assert decision.regime == "legacy" and decision.day_trade
    assert "day trade 4" in decision.reason
    blocked = events(logs, "pdt_blocked")
    assert blocked and blocked[0]["symbol"] == "AAPL" and blocked[0]["regime"] == "legacy"


def test_fourth_day_trade_allowed_on_a_2026_07_date() -> None:
    m = with_trades(manager(), date(2026, 7, 6), date(2026, 7, 7), date(2026, 7, 8))
    today = date(2026, 7, 9)
    assert m.regime_for(None, today) == "intraday_margin"
    decision = m.check_order(close_today(), account(), today)
    assert decision.allowed and decision.qty == D(10) and decision.warn_flag is None
    assert decision.regime == "intraday_margin"


@pytest.mark.parametrize(("today", "equity"), [(date(2025, 3, 6), 50_000), (date(2026, 7, 9), 20_000)])
def test_self_imposed_budget_blocks_in_both_regimes(today: date, equity: float) -> None:
    m = manager(max_day_trades=2)
    with_trades(m, m.calendar.business_days_back(today, 1), m.calendar.business_days_back(today, 2))
    with structlog.testing.capture_logs() as logs:
        decision = m.check_order(close_today(), account(equity), today)
    assert not decision.allowed
    assert "self-imposed budget" in decision.reason
    assert events(logs, "pdt_blocked")
    # Opening orders and overnight closes are not day trades: the budget does not apply.
    assert m.check_order(open_order(), account(equity), today).allowed
    assert m.check_order(close_today(opens_today=False), account(equity), today).allowed
    # A risk exit still goes, with the warning.
    risk = m.check_order(close_today(risk_exit=True), account(equity), today)
    assert risk.allowed and risk.warn_flag == FLAG_OVER_BUDGET


def test_risk_exit_goes_through_with_a_warning() -> None:
    m = with_trades(manager(), date(2025, 3, 3), date(2025, 3, 4), date(2025, 3, 5))
    with structlog.testing.capture_logs() as logs:
        decision = m.check_order(close_today(risk_exit=True), account(), date(2025, 3, 6))
    assert decision.allowed and decision.qty == D(10)
    assert decision.warn_flag == FLAG_MAY_BE_FLAGGED
    assert events(logs, "pdt_risk_exit_allowed")[0]["warn_flag"] == FLAG_MAY_BE_FLAGGED
    assert events(logs, "pdt_blocked") == []


def test_25k_exemption() -> None:
    m = with_trades(manager(), date(2025, 3, 3), date(2025, 3, 4), date(2025, 3, 5))
    assert m.check_order(close_today(), account(25_000), date(2025, 3, 6)).allowed
    assert not m.check_order(close_today(), account(24_999.99), date(2025, 3, 6)).allowed


def test_closing_yesterdays_position_is_not_a_day_trade() -> None:
    m = with_trades(manager(), date(2025, 3, 3), date(2025, 3, 4), date(2025, 3, 5))
    decision = m.check_order(close_today(opens_today=False), account(), date(2025, 3, 6))
    assert decision.allowed and not decision.day_trade


# -- the rolling window ------------------------------------------------------------------------


def test_window_is_five_nyse_sessions_across_the_july_4_holiday() -> None:
    # 2025-07-04 (Friday) was a holiday: the 5 sessions ending Wed 07-09 are
    # 07-02, 07-03, 07-07, 07-08, 07-09 (a weekday count would drop 07-02).
    m = with_trades(manager(), date(2025, 7, 1), date(2025, 7, 2), date(2025, 7, 3), date(2025, 7, 7))
    assert m.window_start(date(2025, 7, 9)) == date(2025, 7, 2)
    assert m.day_trades_in_window(date(2025, 7, 9)) == 3
    assert not m.check_order(close_today(), account(), date(2025, 7, 9)).allowed
    # Thursday 07-10: 07-02 has left the window.
    assert m.day_trades_in_window(date(2025, 7, 10)) == 2
    assert m.check_order(close_today(), account(), date(2025, 7, 10)).allowed
    # On the holiday itself the window is the 5 sessions before it.
    assert m.window_start(date(2025, 7, 4)) == date(2025, 6, 27)


def test_broker_count_wins_on_disagreement() -> None:
    m = manager()
    today = date(2025, 3, 6)
    # Journal says nothing, broker says 3: blocked.
    assert not m.check_order(close_today(), account(daytrade_count=3, pdt_fields_present=True), today).allowed
    # Journal says 3, broker says 1: allowed.
    with_trades(m, date(2025, 3, 3), date(2025, 3, 4), date(2025, 3, 5))
    assert m.check_order(close_today(), account(daytrade_count=1, pdt_fields_present=True), today).allowed
    with structlog.testing.capture_logs() as logs:
        assert m.reconcile_count(1, today) == 1
    assert events(logs, "pdt_count_reconciled")[0]["journal_count"] == 3
    assert m.day_trades_in_window(today) == 1
    # Day trades made after the reconciliation add to the broker's figure.
    m.record_day_trade("MSFT", today)
    assert m.day_trades_in_window(today) == 2
    # A stale reconciliation does not apply to another day.
    m.new_session(date(2025, 3, 7))
    assert m.day_trades_in_window(date(2025, 3, 7)) == 4


def test_load_day_trades_from_the_journal() -> None:
    m = manager()
    m.record_day_trade("OLD", date(2025, 3, 3))
    m.load_day_trades(
        [DayTrade("aapl", date(2025, 3, 3)), ("MSFT", date(2025, 3, 4)), {"symbol": "NVDA", "session_date": "2025-03-05"}]
    )
    assert m.day_trades_in_window(date(2025, 3, 6)) == 3
    assert not m.check_order(close_today(), account(), date(2025, 3, 6)).allowed


# -- symbol blocks -----------------------------------------------------------------------------


@pytest.mark.parametrize("today", [date(2025, 3, 6), date(2026, 7, 9)])
def test_40310100_blocks_the_symbol_until_the_next_session(today: date) -> None:
    m = manager()
    with structlog.testing.capture_logs() as logs:
        m.block_symbol("aapl", today)
    assert events(logs, "pdt_blocked")[0]["symbol"] == "AAPL"
    decision = m.check_order(open_order("AAPL"), account(50_000), today)
    assert not decision.allowed and "40310100" in decision.reason
    assert m.check_order(open_order("MSFT"), account(50_000), today).allowed
    assert m.status(today)["blocked_symbols"] == ["AAPL"]
    following = date(2025, 3, 7) if today.year == 2025 else date(2026, 7, 10)
    m.new_session(following)
    assert m.check_order(open_order("AAPL"), account(50_000), following).allowed
    assert m.blocked_symbols() == []


# -- intraday margin ---------------------------------------------------------------------------


def test_intraday_margin_reduces_an_oversized_opening_order() -> None:
    m = manager()
    today = date(2026, 7, 9)
    # equity $10,000 x 4 = $40,000; $30,000 already exposed; 200 x $100 asked -> 100 fit.
    with structlog.testing.capture_logs() as logs:
        decision = m.check_order(open_order(qty=200), account(10_000, intraday_exposure=D(30_000)), today)
    assert decision.allowed and decision.reduced and decision.qty == D(100)
    assert events(logs, "pdt_reduced")[0]["qty"] == "100"
    # Already at the limit: any opening order would deepen the deficit.
    blocked = m.check_order(open_order(qty=1), account(10_000, intraday_exposure=D(40_000)), today)
    assert not blocked.allowed and "deficit" in blocked.reason
    # Closing orders reduce exposure: never limited.
    assert m.check_order(close_today(), account(10_000, intraday_exposure=D(80_000)), today).allowed
    # A cash account (multiplier 1) gets 1x equity.
    cash = m.check_order(open_order(qty=50), account(10_000, intraday_exposure=D(6_000), multiplier=D(1)), today)
    assert cash.qty == D(40)


def test_legacy_regime_does_not_apply_intraday_margin() -> None:
    decision = manager().check_order(open_order(qty=200), account(10_000, intraday_exposure=D(40_000)), date(2025, 3, 6))
    assert decision.allowed and decision.qty == D(200)


# -- regime selection ----------------------------------------------------------------------------


def test_regime_from_payload_date_or_config() -> None:
    m = manager()
    with_pdt = {"equity": "20000", "daytrade_count": 2, "pattern_day_trader": False}
    without = {"equity": "20000"}
    dumped_without = {"equity": "20000", "daytrade_count": None, "pattern_day_trader": None}
    assert m.regime_for(with_pdt, date(2026, 8, 1)) == "legacy"  # broker still enforces it
    assert m.regime_for(without, date(2025, 3, 6)) == "intraday_margin"
    assert m.regime_for(dumped_without, date(2025, 3, 6)) == "intraday_margin"
    assert m.regime_for(None, date(2026, 6, 3)) == "legacy"
    assert m.regime_for(None, date(2026, 6, 4)) == "intraday_margin"
    assert manager(regime="legacy").regime_for(without, date(2026, 8, 1)) == "legacy"
    assert manager(regime="intraday_margin").regime_for(with_pdt, date(2025, 3, 6)) == "intraday_margin"


def test_account_view_from_the_broker_model() -> None:
    base = {"id": "a", "account_number": "PA1", "status": "ACTIVE", "cash": "20000", "equity": "20000",
            "buying_power": "40000", "multiplier": "2", "long_market_value": "30000", "short_market_value": "-5000"}
    legacy = AccountView.from_account(Account.model_validate({**base, "daytrade_count": 3, "pattern_day_trader": False}))
    assert legacy.daytrade_count == 3 and legacy.pdt_fields_present and legacy.multiplier == D(2)
    modern = AccountView.from_account(Account.model_validate(base))
    assert modern.daytrade_count is None and modern.pdt_fields_present is False
    assert modern.intraday_exposure == D(35_000)
    # 2x account: $40,000 of intraday room, $35,000 used -> 50 of 100 shares at $100.
    assert manager().check_order(open_order(qty=100), modern, date(2026, 7, 9)).qty == D(50)
    m = manager()
    # Payload decides over the date: a 2025 account without PDT fields is intraday margin.
    assert m.check_order(close_today(), modern, date(2025, 3, 6)).regime == "intraday_margin"
    assert not m.check_order(close_today(), legacy, date(2026, 8, 3)).allowed


def test_status_shows_regime_and_what_is_left() -> None:
    m = with_trades(manager(max_day_trades=2), date(2025, 3, 5))
    status = m.status(date(2025, 3, 6), account(20_000))
    assert status["regime"] == "legacy"
    assert status["day_trades_used"] == 1 and status["day_trades_left"] == 2
    assert status["budget_used"] == 1 and status["budget_left"] == 1
    assert status["exempt"] is False and status["blocked_symbols"] == []
    later = m.status(date(2026, 7, 9))
    assert later["regime"] == "intraday_margin" and later["day_trades_left"] is None


def test_bad_order_rejected_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="qty"):
        OrderCheck("AAPL", "buy", D(0), D(100), is_closing=False)
    with pytest.raises(ValueError, match="side"):
        OrderCheck("AAPL", "short", D(1), D(100), is_closing=False)  # type: ignore[arg-type]


def test_no_new_position_when_no_day_trade_is_left_under_the_legacy_rule() -> None:
    """With three day trades used under $25k, the broker would refuse a same-day exit and even
    the protective stop: a position opened now could not be protected, so it is not opened."""
    m = with_trades(manager(), date(2025, 3, 3), date(2025, 3, 4), date(2025, 3, 5))
    today = date(2025, 3, 6)
    with structlog.testing.capture_logs() as logs:
        decision = m.check_order(open_order(), account(), today)
    assert not decision.allowed and decision.qty == 0
    assert "could not be protected" in decision.reason
    assert events(logs, "pdt_blocked")
    # above $25k, or with a day trade left, or after the rule's retirement: allowed
    assert m.check_order(open_order(), account(equity=30_000), today).allowed
    assert with_trades(manager(), date(2025, 3, 4), date(2025, 3, 5)).check_order(open_order(), account(), today).allowed
    assert m.check_order(open_order(), account(), date(2026, 7, 9)).allowed
