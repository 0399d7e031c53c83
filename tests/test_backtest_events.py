"""The backtest rides the live event core (issue 14, items 5 and 6).

A backtest's loop keeps its orders, fills and positions from the simulator engine's own
``trade_updates`` events, applied by the live stream's handlers (``engine.order_events``)
through ``backtest.event_feed.InProcessTradeEvents``: its cycles list no positions, no open
orders and no activities, fills are journaled from their events (``order_filled`` with
``"source": "stream"``), and its decisions, trades and equity are exactly those of the same
loop polling the broker every cycle, as it did before.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import structlog

import config
from backtest import runner
from backtest.options import BacktestOptions, BacktestResult
from backtest.runner import run_backtest
from backtest.sim_broker import InProcessBroker
from tests.conftest import copy_daily_files

DAILY_FILES = ("SPY-1d-1993-01-29-2026-08-07.csv", "AAPL-1d-2013-01-02-2023-12-29.csv",
               "NVDA-1d-2013-01-02-2023-12-29.csv")
SYMBOLS = ["SPY", "AAPL", "NVDA"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_daily_files(tmp_path_factory.mktemp("evdata"), DAILY_FILES)


def _settings() -> Any:
    # the reference strategy as bench/bench_backtest.py runs it: every idea scored, none vetoed
    return config.load_settings(env_file=None, overrides={
        "scanning.symbols": SYMBOLS, "strategy.enabled": ["sma_crossover"], "ai.min_confidence": 0.0,
        "ai.calibrated_min_confidence": 0.0, "ai.gate_mode": "flat", "trading.position_sizing": "fixed"})


def _options(data_dir: Path) -> BacktestOptions:
    return BacktestOptions(data_dir=data_dir, symbols=tuple(SYMBOLS), start=date(2017, 1, 3),
                           end=date(2018, 6, 29), progress=False)


def _run_counting(monkeypatch: pytest.MonkeyPatch, data_dir: Path, *, events: bool
                  ) -> tuple[BacktestResult, Counter[tuple[str, str]], list[dict[str, Any]]]:
    calls: Counter[tuple[str, str]] = Counter()
    real_request = InProcessBroker.request

    async def request(self: InProcessBroker, method: str, path: str, **kwargs: Any) -> Any:
        calls[(method.upper(), "/v2/orders/{id}" if path.startswith("/v2/orders/") else path)] += 1
        return await real_request(self, method, path, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(InProcessBroker, "request", request)
        if not events:  # the loop as it was: the disabled feed, polling REST every cycle
            patch.setattr(runner, "InProcessTradeEvents", lambda loop, broker: loop.trade_events)
        with structlog.testing.capture_logs() as logs:
            result = run_backtest(_settings(), _options(data_dir))
    return result, calls, logs


def _decisions(result: BacktestResult) -> list[tuple[Any, ...]]:
    # not the journaled status: polling never learned that a bracket leg was canceled when its
    # sibling filled (the journal kept "new"); the events say so
    return [(o["client_order_id"], o["symbol"], o["side"], o["qty"], json.dumps(o["payload"], default=str))
            for o in result.orders]


def test_the_backtest_is_fed_by_events_and_decides_as_the_polling_loop(monkeypatch: pytest.MonkeyPatch,
                                                                        data_dir: Path) -> None:
    fed, calls, logs = _run_counting(monkeypatch, data_dir, events=True)
    polled, polled_calls, _ = _run_counting(monkeypatch, data_dir, events=False)
    assert fed.trades, "the reference strategy trades in this range"
    # the same decisions, fills, trades and equity as the loop polling REST every cycle
    assert _decisions(fed) == _decisions(polled)
    assert [(i["intent_id"], i["confidence"]) for i in fed.intents] == \
        [(i["intent_id"], i["confidence"]) for i in polled.intents]
    # a trade's id is its entry fill's execution id: the event's, where the activity's is
    # "<time>::<the same id>"
    assert [{**t, "trade_id": t["trade_id"].split("::")[-1]} for t in fed.trades] == \
        [{**t, "trade_id": t["trade_id"].split("::")[-1]} for t in polled.trades]
    assert fed.equity_curve == polled.equity_curve
    assert fed.final_state == polled.final_state
    # a cycle lists no positions and no activities: positions are listed by the start-up
    # catch-up, for each session's closing snapshot (gap risk) and at shutdown, activities by the catch-up
    # (twice: one moment) and the start-up reconciliation; polling read both every cycle
    run = len(fed.sessions) - fed.fast_forwarded
    assert calls[("GET", "/v2/positions")] == 1 + run + 1  # the catch-up, each close, the shutdown
    assert calls[("GET", "/v2/account/activities")] == 3
    assert polled_calls[("GET", "/v2/account/activities")] > 100
    # open orders are listed when an event names an order the book cannot place (a bracket
    # parent arrives without its legs) and by the executor's exits: not every cycle
    assert calls[("GET", "/v2/orders")] <= 2 * calls[("POST", "/v2/orders")] + 1
    assert calls[("GET", "/v2/orders")] * 10 < polled_calls[("GET", "/v2/orders")]
    assert fed.requests < polled.requests
    # the event-fed journal knows how every order ended; the polled one left some "new"
    changed = {o["client_order_id"]: o["status"] for o in fed.orders}.items() - \
        {o["client_order_id"]: o["status"] for o in polled.orders}.items()
    assert {status for _, status in changed} <= {"canceled", "expired", "filled"}
    # every order is logged filled once, from its event: Alpaca answers a submission with the
    # order as accepted, so even a market entry's fill arrives on the stream; never from polling
    filled = [e for e in logs if e["event"] == "order_filled"]
    assert {e["source"] for e in filled} == {"stream"}
    ids = [e["broker_order_id"] for e in filled]
    assert len(ids) == len(set(ids))
    assert not [e for e in logs if e["event"] in ("stream_event_failed", "stream_catchup_failed")]
