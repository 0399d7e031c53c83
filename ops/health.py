"""``GET /health``: is the loop alive, and is it trading normally?

``stale`` (HTTP 503, what a watchdog restarts on) means the loop stopped turning: its last
sign of life (a completed cycle, a failed attempt it will retry, or the countdown while it
sleeps through a closed market) is older than the loop's own cadence allows:

* after a cycle: ``max(stale_after_seconds, 3 x cycle_interval)`` wall seconds, the interval
  converted from market time at the clock's speed (the simulator runs 300x by default);
* after a failed attempt: that plus the loop's longest backoff (300 s), because the loop
  waits that long on purpose before trying the broker again;
* while sleeping until the next session event (market closed): never, until the event is
  more than three intervals in the past on the daemon's own clock.

``degraded`` (HTTP 200) means alive but not trading normally: the broker did not answer
the last request, the trading state is not ACTIVE (breaker, halt, REDUCING), positions are
unprotected, or the trade stream says it is down. ``reasons`` lists why.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ops.telemetry import FAILURE_EVENTS, Telemetry

__all__ = ["LOOP_MAX_BACKOFF_SECONDS", "health"]

#: The loop's longest pause after failures (engine.fault_policy.FaultPolicy.failure_backoff's cap).
LOOP_MAX_BACKOFF_SECONDS = 300.0
_DOWN_STREAM = ("disconnected", "down", "failed", "reconnecting")


def _clock_speed(clock: Any) -> float | None:
    """Market seconds per wall second (None: as fast as possible, no wall cadence)."""
    if clock is None:
        return 1.0
    if hasattr(clock, "speed"):
        speed = clock.speed
        return None if speed is None else float(speed)
    rate = getattr(clock, "rate", 1.0)
    return float(rate) if rate else 1.0


def stale_after(telemetry: Telemetry, floor_seconds: float) -> float:
    """Wall seconds without a sign of life after which the loop counts as stale."""
    system = telemetry.system
    interval = float(system.settings.trading.cycle_interval_seconds) if system is not None else 60.0
    speed = _clock_speed(getattr(system, "clock", None))
    wall_interval = 0.0 if speed is None else interval / speed
    allowed = max(floor_seconds, 3.0 * wall_interval)
    if telemetry.last_activity in FAILURE_EVENTS or telemetry.last_activity == "startup":
        allowed += LOOP_MAX_BACKOFF_SECONDS
    return allowed


def _is_stale(telemetry: Telemetry, floor_seconds: float) -> bool:
    system = telemetry.system
    if telemetry.sleeping_until is not None and system is not None:
        interval = float(system.settings.trading.cycle_interval_seconds)
        overdue = telemetry.sleeping_until + timedelta(seconds=3 * interval)
        return system.clock.now() > overdue
    return telemetry.wall() - telemetry.last_activity_wall > stale_after(telemetry, floor_seconds)


def _broker_state(telemetry: Telemetry) -> str:
    status = telemetry.broker_last_status
    if status is None:
        return "unknown"
    if status == 0:
        return "unreachable"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "error"
    return "ok"


def health(telemetry: Telemetry, *, stale_after_seconds: float = 30.0) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of ``/health``."""
    telemetry.refresh()
    age = None if telemetry.last_cycle_wall is None else round(telemetry.wall() - telemetry.last_cycle_wall, 3)
    broker = _broker_state(telemetry)
    stream = telemetry.stream_status()
    state = str(telemetry.safety.get("state"))
    reasons: list[str] = []
    if broker in ("unreachable", "error", "rate_limited"):
        reasons.append(f"broker {broker}")
    if telemetry.last_activity in FAILURE_EVENTS:
        reasons.append(f"last loop attempt failed ({telemetry.last_activity})")
    if state.lower() != "active":
        reasons.append(f"trading state {state}")
    if telemetry.safety.get("latched"):
        reasons.append(f"latched: {telemetry.safety.get('latch_reason')}")
    unprotected = telemetry.unprotected_count
    if unprotected:
        reasons.append(f"{unprotected} unprotected position(s)")
    if telemetry.read_error is not None:
        reasons.append(telemetry.read_error)
    if stream in _DOWN_STREAM:
        reasons.append(f"stream {stream}")
    if _is_stale(telemetry, stale_after_seconds):
        status = "stale"
        reasons.insert(0, f"no sign of life from the loop for {telemetry.wall() - telemetry.last_activity_wall:.0f}s "
                          f"(last: {telemetry.last_activity})")
    else:
        status = "degraded" if reasons else "ok"
    body = {"status": status, "trading_state": state, "last_cycle_age_s": age, "broker": broker,
            "stream": stream, "sleeping_until": telemetry.sleeping_until.isoformat()
            if telemetry.sleeping_until else None, "reasons": reasons}
    return (503 if status == "stale" else 200), body
