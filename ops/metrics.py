"""The daemon's Prometheus metrics: one :class:`DaemonMetrics` per daemon, on its own registry.

Each daemon (and each test) owns a ``prometheus_client.CollectorRegistry`` instead of the
library's global one, so two daemons in one process (tests, the backtester) never share or
collide on a metric. The names are the operator's contract (``docs/grafana-dashboard.json``
graphs them); they are fed by :class:`ops.telemetry.Telemetry`, never by the loop directly.
"""

from __future__ import annotations

import re

from prometheus_client import (
    GCCollector,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "TRADING_STATES", "DaemonMetrics", "endpoint_label"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: ``trading_state`` as a number (a gauge graphs a number): the safety state machine's order.
TRADING_STATES = {"active": 0, "reducing": 1, "halted": 2, "liquidating": 3}
# A cycle is 10 ms (nothing to do) to many seconds (a slow broker, hundreds of symbols).
_CYCLE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A path segment naming one thing rather than a resource: a symbol (upper case), a number, or
# a long id with digits (order and client order ids). API versions (v2, v1beta3) stay.
# Labels must not grow with the orders placed.
_ID_SEGMENT = re.compile(r"[A-Z]|^\d+$|^(?=.*\d).{13,}$")


def endpoint_label(path: str) -> str:
    """The broker path as a bounded label: ``/v2/orders/8f1e...`` -> ``/v2/orders/{id}``,
    ``/v2/positions/AAPL`` -> ``/v2/positions/{id}``, query strings dropped."""
    path = path.split("?", 1)[0]
    parts = [("{id}" if _ID_SEGMENT.search(part) else part) for part in path.split("/")]
    return "/".join(parts) or "/"


class DaemonMetrics:
    """Every metric the daemon exports, registered on ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # memory, CPU and open files of a daemon that runs for weeks, and its garbage collector
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        self.info = Info("trading_daemon", "The running daemon: mode and run id", registry=r)
        self.equity = Gauge("trading_equity_dollars", "Account equity at the last cycle (USD)", registry=r)
        self.session_pnl = Gauge("trading_session_pnl_dollars",
                                 "Equity minus the session's starting equity (USD)", registry=r)
        self.drawdown = Gauge("trading_drawdown_ratio",
                              "Fall of equity from its peak in this run (0.02 = 2%)", registry=r)
        self.cycle_duration = Histogram("trading_cycle_duration_seconds", "Wall time of one trading cycle",
                                        buckets=_CYCLE_BUCKETS, registry=r)
        self.cycles = Counter("trading_cycles_total", "Trading cycles completed", registry=r)
        self.cycle_failures = Counter("trading_cycle_failures_total",
                                      "Cycles or steps that failed (broker or unexpected errors)",
                                      ["kind"], registry=r)
        self.last_cycle_age = Gauge("trading_last_cycle_age_seconds",
                                    "Wall seconds since the last completed cycle", registry=r)
        self.orders_submitted = Counter("trading_orders_submitted_total", "Orders accepted by the broker",
                                        ["side", "kind"], registry=r)
        self.orders_rejected = Counter("trading_orders_rejected_total", "Orders the broker refused",
                                       registry=r)
        self.fills = Counter("trading_fills_total", "Fills seen (complete and partial)", ["side"], registry=r)
        self.broker_requests = Counter("trading_broker_requests_total",
                                       "HTTP exchanges with the broker; status 0 = no answer",
                                       ["endpoint", "status"], registry=r)
        self.state = Gauge("trading_state", "Trading state: 0 ACTIVE, 1 REDUCING, 2 HALTED, 3 LIQUIDATING",
                           registry=r)
        self.breaker_latched = Gauge("trading_breaker_latched",
                                     "1 while the circuit breaker or an operator halt is latched", registry=r)
        self.positions = Gauge("trading_positions", "Open positions", registry=r)
        self.unprotected = Gauge("trading_unprotected_positions",
                                 "Positions without a working stop for their full quantity", registry=r)
        self.open_orders = Gauge("trading_open_orders", "Open orders at the broker", registry=r)
        self.rate_limit_remaining = Gauge(
            "trading_rate_limit_remaining",
            "Normal requests that may go now: the broker's X-RateLimit-Remaining when it sends one, "
            "else the client-side bucket above its emergency reserve", registry=r)
        self.alerts = Counter("trading_alerts_total", "Alerts raised (after throttling)", ["level"], registry=r)
        self.signals = Counter("trading_signals_total", "Strategy buy/sell signals", registry=r)
        self.risk_vetoes = Counter("trading_risk_vetoes_total", "Trade intents the risk manager vetoed",
                                   registry=r)
        self.data_rejections = Counter("trading_market_data_rejected_total",
                                       "Market data readings refused by the sanity checks", registry=r)
        self.emergency_exits = Counter("trading_emergency_exits_total", "Emergency liquidations started",
                                       registry=r)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
