"""Step 5 of the loop: market data for the universe, checked, and the defensive mode.

:class:`MarketDataStep` is what :meth:`engine.trading_system.TradingSystem.refresh_market_data`
runs: one batched ``get_snapshots`` request for the universe and the benchmark (daily history
once a session, through the loop's ``_load_history``, which a backtest overrides), each
snapshot checked against its history (``market_data_rejected``), the regime from the
benchmark, the defensive mode (``defensive_mode``), the intraday timeframes, and one
:class:`market.market_data.MarketData` per symbol. The parts that need no loop are in
:mod:`engine.market_step`.

It holds a reference to the loop rather than copies of its parts: the backtest overrides
``_load_history`` and sets ``_history`` on the loop, tests replace its ``analyzer``, and a
benchmark times the loop's ``_with_today``; the step calls them on the loop.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import structlog

from broker.models import Snapshot
from engine.market_step import completed_history, snapshot_problem
from engine.opportunities import snapshot_price_time
from market.market_data import BarSeries, MarketData
from market_status_manager import MarketStatus

# The loop's own logger name: the log lines read as before the step moved out of the loop.
log = structlog.get_logger("engine.trading_system")

#: The benchmark whose daily bars give the regime and the defensive mode's volatility.
BENCHMARK = "SPY"


class MarketDataStep:
    """Market data for the loop ``system`` (a TradingSystem; typed loosely because importing
    it here would make a circle)."""

    def __init__(self, system: Any) -> None:
        self.system = system

    async def refresh_market_data(self, status: MarketStatus) -> dict[str, MarketData]:
        """One batched snapshot request for the universe (daily history once a session), each
        symbol's data checked, into one :class:`market.market_data.MarketData` per symbol."""
        system = self.system
        symbols = system.universe()
        wanted = list(dict.fromkeys(symbols + [BENCHMARK]))
        if system._history.session != status.session:
            await system._load_history(wanted, status)
        snapshots = await system.broker.get_snapshots(wanted)
        system.trade_events.mark_snapshots(snapshots)
        if system.trader_alerts:
            await system.alert_rules.stale_data(snapshots, system.clock.now())
        rejected = {**system._history.rejected, **dict(getattr(system.broker, "data_rejections", None) or {})}
        for symbol in wanted:
            if symbol not in rejected and symbol in snapshots:
                problem = snapshot_problem(snapshots[symbol], system._history.bars.get(symbol))
                if problem is not None:
                    rejected[symbol] = problem
                    log.warning("market_data_rejected", symbol=symbol, reason=problem, source="snapshot")
        await system._data_rejections.track(wanted, rejected)
        system.reconciler.observe_prices({s: v for s, v in snapshots.items() if s not in rejected})  # MFE/MAE
        now = system.clock.now()
        benchmark = None if BENCHMARK in rejected else system._with_today(BENCHMARK, snapshots.get(BENCHMARK))
        regime = system.analyzer.detect_regime(benchmark) if benchmark is not None and len(benchmark) >= 60 else None
        defensive = self.defensive_active(status, system._last_equity, benchmark)
        frames = await system.timeframe_bars.refresh(system.broker, [s for s in symbols if s not in rejected], now,
                                                     snapshots)
        data: dict[str, MarketData] = {}
        for symbol in symbols:
            snap = snapshots.get(symbol)
            if symbol in rejected:
                continue
            daily = system._with_today(symbol, snap)
            if snap is None or daily is None or len(daily) < 30:
                continue
            last = _last_price(snap)
            if last is None:
                continue
            quote = snap.latest_quote
            bid = float(quote.bp) if quote is not None and quote.bp else None
            ask = float(quote.ap) if quote is not None and quote.ap else None
            prev_close = float(snap.prev_daily_bar.c) if snap.prev_daily_bar is not None else float(daily.close[-2])
            data[symbol] = MarketData(
                symbol=symbol, now=now, daily=daily, intraday=None, last_price=last, bid=bid, ask=ask,
                prev_close=prev_close, benchmark=benchmark, regime=regime, defensive=defensive, news=[],
                last_price_at=snapshot_price_time(snap), timeframes=frames.get(symbol, {}),
            )
        return data

    def defensive_active(self, status: MarketStatus, equity: Decimal | None = None,
                         benchmark: BarSeries | None = None, *, baseline: Decimal | None = None) -> bool:
        """Defensive mode: near the breaker, in drawdown, in high volatility or after a gap.

        The day's loss is measured from ``baseline`` (default: the session's starting equity)."""
        system = self.system
        d = system.settings.defensive
        reasons: list[str] = []
        state = system._gap_defensive  # kept in memory; journaled when set (no read per cycle)
        if state.get("active") and status.session and state.get("session") == status.session.isoformat():
            reasons.append(str(state.get("reason", "gap risk")))
        if baseline is None:
            baseline = system.safety.session_start_equity
        if equity is not None and baseline:
            day_loss = float((baseline - equity) / baseline)
            near = float(system.settings.risk.circuit_breaker_loss) * float(d.activation_breaker_fraction)
            if day_loss >= near:
                reasons.append(f"day loss {day_loss:.2%} is within reach of the breaker")
        if equity is not None and system._peak_equity:
            drawdown = float((system._peak_equity - equity) / system._peak_equity)
            if drawdown >= float(d.drawdown_threshold):
                reasons.append(f"drawdown {drawdown:.2%} from the peak")
        if benchmark is not None and len(benchmark) >= 21:
            closes = benchmark.close[-21:]
            vol = float(np.std(np.diff(np.log(closes)), ddof=1))
            if vol >= float(d.volatility_threshold):
                reasons.append(f"benchmark daily volatility {vol:.2%}")
        active = bool(reasons)
        if active != system._defensive:
            system._defensive = active
            log.info("defensive_mode", active=active, reasons=reasons)
        return active

    async def load_history(self, symbols: list[str], status: MarketStatus) -> None:
        """The daily bars of the completed sessions, once per session (``history_loaded``)."""
        system = self.system
        now = system.clock.now()
        lookback = max(int(system.settings.strategy.lookback_days) * 2, 300)
        start = now - timedelta(days=lookback)
        bars = await system.broker.get_bars(symbols, timeframe="1Day", start=start, end=now)
        rejected = dict(getattr(system.broker, "data_rejections", None) or {})
        system._history = completed_history(bars, status.session, rejected)
        today = status.session
        log.info("history_loaded", symbols=len(system._history.bars), session=today.isoformat() if today else None)


def _last_price(snap: Snapshot) -> float | None:
    if snap.latest_trade is not None and snap.latest_trade.p:
        return float(snap.latest_trade.p)
    if snap.minute_bar is not None:
        return float(snap.minute_bar.c)
    if snap.daily_bar is not None:
        return float(snap.daily_bar.c)
    return None
