"""What the daemon's HTTP endpoint knows, gathered with almost no wiring in the loop.

:class:`Telemetry` learns from three places, none of which needs the loop to call it:

* the log events the loop already writes (``cycle_complete``, ``order_submitted``,
  ``order_filled``, ``signal``, ``trade_intent``, ``risk_veto``, ``alert``, ...), through a
  structlog processor (:func:`install_log_tap`) placed *first* in the chain, so it sees them
  whatever the configured log level;
* every HTTP exchange with the broker, through the transport's ``observer`` hook
  (:meth:`on_broker_exchange`: endpoint, status, rate-limit headers);
* the state the loop keeps, read when someone asks (:meth:`refresh`): the safety state
  machine, the journal's last cycle (equity, positions with protection, open orders, the
  same figures ``main.py status`` shows) and the market status.

``/health`` (:mod:`ops.health`), ``/metrics`` (:mod:`ops.metrics`) and the dashboard's
stream (:mod:`ops.http_server`) all read from here, so the dashboard and ``/metrics`` can
never disagree on the equity.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from core.logging_setup import redact_secrets
from ops.metrics import TRADING_STATES, DaemonMetrics, endpoint_label

__all__ = ["Telemetry", "install_log_tap"]

log = structlog.get_logger(__name__)

#: Loop events that are a failed attempt (the loop backs off after them, up to 300 s).
FAILURE_EVENTS = frozenset({"broker_unavailable", "operational_error", "cycle_failed",
                            "startup_broker_unavailable", "startup_deferred"})
_DECISION_EVENTS = frozenset({"signal", "trade_intent", "risk_veto", "risk_reduced", "risk_approved", "pdt_blocked",
                              "order_submitted", "order_rejected", "strategy_exit", "exit_deferred"})
_NEW_YORK = ZoneInfo("America/New_York")
_CURVE_POINTS = 2000
_DECISIONS_KEPT = 40
_ALERTS_KEPT = 25


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _scrubbed(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with every registered secret masked (the tap runs before the log's redactor)."""
    return redact_secrets(None, "", {k: v for k, v in fields.items() if not str(k).startswith("_")})


class Telemetry:
    """The daemon's live picture for ``/health``, ``/metrics`` and the dashboard.

    ``wall`` (monotonic seconds) is injectable so health tests never wait.
    """

    def __init__(self, *, metrics: DaemonMetrics | None = None,
                 wall: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics or DaemonMetrics()
        self.wall = wall
        self.started_wall = wall()
        self.system: Any = None
        self.version = 0  # bumped by every change the dashboard shows
        self.last_cycle_wall: float | None = None
        self.last_activity_wall = self.started_wall
        self.last_activity: str = "startup"
        self.sleeping_until: datetime | None = None
        self.broker_last_status: int | None = None
        self.broker_last_ok_wall: float | None = None
        self.broker_remaining: int | None = None
        self.equity: Decimal | None = None
        self.session_start_equity: Decimal | None = None
        self.peak_equity: Decimal | None = None
        self.cycle: dict[str, Any] = {}
        self.market: dict[str, Any] = {}
        self.safety: dict[str, Any] = {"state": "active", "latched": False}
        self.curve: deque[tuple[str, str]] = deque(maxlen=_CURVE_POINTS)
        self.curve_session: str | None = None
        self.decisions: deque[dict[str, Any]] = deque(maxlen=_DECISIONS_KEPT)
        self.alerts: deque[dict[str, Any]] = deque(maxlen=_ALERTS_KEPT)
        self.unprotected_count = 0
        self.read_error: str | None = None
        self.counts: dict[str, int] = {"cycles": 0, "orders_submitted": 0, "fills": 0, "alerts": 0}
        self._stream_status: Callable[[], str] = lambda: "polling"

    # -- wiring ----------------------------------------------------------------------------

    def attach(self, system: Any) -> None:
        """Read state from ``system`` (a TradingSystem) and count its broker's exchanges."""
        self.system = system
        settings = getattr(system, "settings", None)
        self.metrics.info.info({"mode": str(getattr(settings, "mode", "")), "run_id": str(getattr(system, "run_id", ""))})
        transport = getattr(getattr(system, "broker", None), "transport", None)
        if transport is not None and hasattr(transport, "observer"):
            transport.observer = self.on_broker_exchange
        self._find_stream_reporter(system)
        self._backfill_curve(system)
        self.refresh()

    def _find_stream_reporter(self, system: Any) -> None:
        """A ``stream_status`` (method or attribute) on the loop or its broker reports the
        trade-update stream to ``/health``; without one the daemon polls by REST."""
        for owner in (system, getattr(system, "broker", None)):
            if owner is not None and hasattr(owner, "stream_status"):
                value = getattr(owner, "stream_status")
                self.set_stream_status(value if callable(value) else (lambda o=owner: getattr(o, "stream_status")))
                return

    def _backfill_curve(self, system: Any) -> None:
        """The session's curve so far from the journal (a restart mid-session keeps it)."""
        try:
            since = system.clock.now() - timedelta(hours=24)
            for at, equity in system.journal.equity_curve(since=since):
                self._note_equity(Decimal(equity), at.isoformat())
        except Exception as exc:  # a curve is a nicety; the endpoint must come up regardless
            log.warning("dashboard_curve_unavailable", error=repr(exc))

    def set_stream_status(self, source: Callable[[], str]) -> None:
        """Where ``/health``'s ``stream`` comes from (the trade-update stream's own report,
        e.g. ``"connected"``, ``"reconnecting"``); until one is set it says ``"polling"``:
        account, orders and positions are read by REST every cycle."""
        self._stream_status = source

    def stream_status(self) -> str:
        try:
            status = self._stream_status()
            return str(getattr(status, "value", status))  # an Enum reads as its value
        except Exception:  # a broken reporter must not break /health
            return "unknown"

    # -- the log tap -----------------------------------------------------------------------

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        """structlog processor: learn from the event, pass it on unchanged; never raises."""
        try:
            self.on_event(str(event_dict.get("event")), method_name, event_dict)
        except Exception:  # telemetry must never cost a log line, let alone the loop
            pass
        return event_dict

    def on_event(self, name: str, level: str, fields: Mapping[str, Any]) -> None:
        """One log event of the loop (see the module docstring for the ones that count)."""
        m = self.metrics
        now = self.wall()
        if name == "cycle_complete":
            self._on_cycle(fields, now)
        elif name in FAILURE_EVENTS:
            self.last_activity_wall, self.last_activity, self.sleeping_until = now, name, None
            m.cycle_failures.labels(kind=name).inc()
        elif name == "market_countdown":
            self.last_activity_wall, self.last_activity = now, name
            self.sleeping_until = _parse_time(fields.get("target"))
            self.market["waiting_for"] = fields.get("waiting_for")
            self.market["next_event"] = fields.get("target")
            self.market["phase"] = "closed"
        elif name == "order_submitted":
            kind = "emergency" if fields.get("emergency") else str(fields.get("order_class") or fields.get("type") or "order")
            m.orders_submitted.labels(side=str(fields.get("side")), kind=kind).inc()
            self.counts["orders_submitted"] += 1
        elif name == "order_rejected":
            m.orders_rejected.inc()
        elif name in ("order_filled", "order_partially_filled"):
            m.fills.labels(side=str(fields.get("side"))).inc()
            self.counts["fills"] += 1
        elif name == "alert" and not fields.get("throttled"):
            self._on_alert(fields)
        elif name == "signal" and fields.get("action") in ("buy", "sell"):
            m.signals.inc()
        elif name == "risk_veto":
            m.risk_vetoes.inc()
        elif name == "market_data_rejected":
            m.data_rejections.inc()
        elif name == "emergency_liquidation":
            m.emergency_exits.inc()
        if name in _DECISION_EVENTS and not (name == "signal" and fields.get("action") == "hold"):
            self._on_decision(name, fields)
        self.version += 1

    def _on_cycle(self, fields: Mapping[str, Any], now: float) -> None:
        m = self.metrics
        self.last_cycle_wall = self.last_activity_wall = now
        self.last_activity, self.sleeping_until = "cycle_complete", None
        self.counts["cycles"] += 1
        m.cycles.inc()
        if fields.get("duration_ms") is not None:
            m.cycle_duration.observe(float(fields["duration_ms"]) / 1000.0)
        self.cycle = {k: fields.get(k) for k in ("market_time", "phase", "positions", "open_orders",
                                                 "unprotected", "state", "equity")}
        self.market["phase"] = fields.get("phase")
        equity = _decimal(fields.get("equity"))
        if equity is not None:
            self._note_equity(equity, str(fields.get("market_time")))

    def _note_equity(self, equity: Decimal, at: str) -> None:
        self.equity = equity
        self.peak_equity = equity if self.peak_equity is None else max(self.peak_equity, equity)
        session = _new_york_day(at)
        if session != self.curve_session:  # the curve is the session's (New York's trading day)
            self.curve.clear()
            self.curve_session = session
        if not self.curve or self.curve[-1] != (at, str(equity)):
            self.curve.append((at, str(equity)))

    def _on_alert(self, fields: Mapping[str, Any]) -> None:
        level = str(fields.get("alert_level") or "info")
        self.metrics.alerts.labels(level=level).inc()
        self.counts["alerts"] += 1
        clean = _scrubbed({"title": fields.get("title"), "message": fields.get("message")})
        self.alerts.appendleft({"at": self._market_now(), "level": level, **clean})

    def _on_decision(self, name: str, fields: Mapping[str, Any]) -> None:
        keep = ("symbol", "side", "action", "strategy", "confidence", "reason", "reasoning", "check",
                "qty", "status", "intent_id", "emergency", "code")
        entry = _scrubbed({k: fields[k] for k in keep if fields.get(k) is not None})
        stage = {"signal": "signal", "trade_intent": "ai", "risk_veto": "risk", "risk_reduced": "risk",
                 "risk_approved": "risk",
                 "pdt_blocked": "pdt", "strategy_exit": "exit", "exit_deferred": "exit"}.get(name, "order")
        self.decisions.appendleft({"at": self._market_now(), "stage": stage, "event": name, **entry})

    # -- the broker's answers --------------------------------------------------------------

    def on_broker_exchange(self, method: str, path: str, status: int, headers: Mapping[str, str]) -> None:
        """The transport's observer: one HTTP exchange (status 0: no answer); never raises."""
        try:
            self.metrics.broker_requests.labels(endpoint=endpoint_label(path), status=str(status)).inc()
            self.broker_last_status = status
            if 0 < status < 500 and status != 429:
                self.broker_last_ok_wall = self.wall()
            remaining = headers.get("X-RateLimit-Remaining") if headers else None
            if remaining is not None and not path.startswith(("/v2/stocks", "/v1beta")):
                self.broker_remaining = int(remaining)
        except Exception:
            pass

    # -- reading the loop's state ----------------------------------------------------------

    def refresh(self) -> None:
        """Read the loop's state into the gauges and the dashboard's picture (cheap: one
        journal read); called before every ``/metrics`` scrape and dashboard update."""
        system = self.system
        m = self.metrics
        if system is not None:
            try:
                self._read_safety(system)
                self._read_last_cycle(system)
                self._read_market(system)
                self._read_rate_limit(system)
                self.read_error = None
            except Exception as exc:  # the endpoint still answers (degraded, with the reason)
                self.read_error = f"cannot read the loop's state: {exc!r}"
        m.state.set(TRADING_STATES.get(str(self.safety.get("state")).lower(), -1))
        m.breaker_latched.set(1 if self.safety.get("latched") else 0)
        if self.equity is not None:
            m.equity.set(float(self.equity))
            if self.session_start_equity is not None:
                m.session_pnl.set(float(self.equity - self.session_start_equity))
            if self.peak_equity:
                m.drawdown.set(float((self.peak_equity - self.equity) / self.peak_equity))
        positions = self.cycle.get("position_details") or []
        m.positions.set(len(positions) if positions else int(self.cycle.get("positions") or 0))
        self.unprotected_count = (sum(1 for p in positions if not p.get("protected")) if positions
                                  else len(self.cycle.get("unprotected") or []))
        m.unprotected.set(self.unprotected_count)
        m.open_orders.set(len(self.cycle.get("order_details") or []) or int(self.cycle.get("open_orders") or 0))
        if self.last_cycle_wall is not None:
            m.last_cycle_age.set(self.wall() - self.last_cycle_wall)

    def _read_safety(self, system: Any) -> None:
        safety = system.safety
        self.safety = {"state": safety.state.value, "reason": safety.state_reason,
                       "latched": safety.latched, "latch_kind": safety.latch_kind,
                       "latch_reason": safety.latch_reason}
        self.session_start_equity = safety.session_start_equity

    def _read_last_cycle(self, system: Any) -> None:
        last = system.journal.get_last_cycle() or {}
        data = last.get("data", last) if isinstance(last, dict) else {}
        if not data:
            return
        self.cycle.update(data)
        equity = _decimal(data.get("equity"))
        if equity is not None and equity != self.equity:
            self._note_equity(equity, str(data.get("at")))

    def _read_market(self, system: Any) -> None:
        status = getattr(system.market_status, "current", None)
        self.market["now"] = system.clock.now().isoformat()
        if status is not None and self.sleeping_until is None:
            self.market.update(phase=status.phase, next_event=status.next_event.isoformat(),
                               waiting_for=status.next_event_phase,
                               session=status.session.isoformat() if status.session else None)

    def _read_rate_limit(self, system: Any) -> None:
        limiter = getattr(system.broker, "rate_limiter", None)
        if self.broker_remaining is not None:
            self.metrics.rate_limit_remaining.set(self.broker_remaining)
        elif limiter is not None:
            self.metrics.rate_limit_remaining.set(max(0, int(limiter.tokens - limiter.reserve)))

    def _market_now(self) -> str:
        clock = getattr(self.system, "clock", None)
        now = clock.now() if clock is not None else datetime.now(timezone.utc)
        return now.isoformat()


def _new_york_day(at: str) -> str:
    moment = _parse_time(at)
    if moment is None or moment.tzinfo is None:
        return at[:10]
    return moment.astimezone(_NEW_YORK).date().isoformat()


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def install_log_tap(telemetry: Telemetry) -> Callable[[], None]:
    """Put ``telemetry`` first in structlog's processor chain (before the level filter, so it
    sees the events it counts at any log level); returns the function that takes it out."""
    processors = list(structlog.get_config()["processors"])
    structlog.configure(processors=[telemetry, *processors])

    def remove() -> None:
        current = [p for p in structlog.get_config()["processors"] if p is not telemetry]
        structlog.configure(processors=current)

    return remove
