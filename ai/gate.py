"""The entry gate: the least probability of reaching the target at which an intent pays.

A calibrated probability ``p`` is the chance that the intent's own bracket reaches its target
(within its horizon) before its stop. Everything else ends below the target: the stop, a
timeout at the horizon, or the strategy's own exit (mean reversion leaves after a few
sessions). Where such a trade ends between the stop and the target is not known when deciding,
so the gate counts every one of them as the bracket's worst planned outcome, the stop. With
the stop ``s`` and target ``t`` as fractions of the entry and the round-trip cost ``c`` (the
quoted spread, paid half on the way in and half on the way out, plus the commission on both
sides)::

    win:  +t - c        miss: -s - c
    E[return] = p (t - c) - (1 - p)(s + c) >= 0   <=>   p >= (s + c) / (s + t)

and the gate is that break-even plus a stated margin (``ai.gate_margin``, in probability
points), never below ``ai.calibrated_min_confidence`` (an optional floor, 0 by default). So
a 1.5 %/3 % bracket, whose target is small against the spread, needs more than a 4.5 %/9 %
bracket of the same 1:2 shape, and a mean-reversion bracket with its target as near as its
stop needs more than one half.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

#: Spread assumed when the intent has no two-sided quote (fraction of the mid price).
DEFAULT_SPREAD = 0.001


@dataclass(frozen=True)
class Gate:
    """One intent's gate and how it was reached (logged with ``ai_decision``/``ai_rejected``)."""

    min_probability: float
    breakeven: float  # s / (s + t): no costs, no margin
    breakeven_with_costs: float  # (s + c) / (s + t)
    cost: float  # c: round-trip cost as a fraction of the entry
    spread: float
    spread_source: str  # "quote" or "assumed"
    commission: float  # per side, fraction of the notional
    margin: float
    floor: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def entry_gate(
    stop_fraction: float,
    target_fraction: float,
    *,
    spread: float | None,
    commission: float,
    margin: float,
    floor: float = 0.0,
    assumed_spread: float = DEFAULT_SPREAD,
) -> Gate:
    """The gate for a bracket ``stop_fraction``/``target_fraction`` (both > 0) with the
    quoted ``spread`` (None or not finite: ``assumed_spread``), ``commission`` per side, a
    ``margin`` in probability points and an absolute ``floor``. Capped at 1 (a bracket whose
    costs eat the whole target can never pass)."""
    if not (stop_fraction > 0 and target_fraction > 0):
        raise ValueError(f"a bracket needs a positive stop and target, got {stop_fraction}/{target_fraction}")
    quoted = spread is not None and math.isfinite(spread) and spread >= 0
    used_spread = float(spread) if quoted else float(assumed_spread)
    cost = used_spread + 2.0 * float(commission)
    width = stop_fraction + target_fraction
    plain = stop_fraction / width
    with_costs = (stop_fraction + cost) / width
    needed = min(max(with_costs + float(margin), float(floor)), 1.0)
    return Gate(
        min_probability=needed, breakeven=plain, breakeven_with_costs=with_costs, cost=cost,
        spread=used_spread, spread_source="quote" if quoted else "assumed",
        commission=float(commission), margin=float(margin), floor=float(floor),
    )


def gate_for(ai_settings: Any, stop_fraction: float, target_fraction: float, spread: float | None) -> Gate:
    """:func:`entry_gate` with the ``[ai]`` settings (``gate_margin``, ``gate_commission``,
    ``gate_assumed_spread``, ``calibrated_min_confidence`` as the floor)."""
    return entry_gate(
        stop_fraction, target_fraction, spread=spread,
        commission=float(getattr(ai_settings, "gate_commission", 0.0)),
        margin=float(getattr(ai_settings, "gate_margin", 0.0)),
        floor=float(getattr(ai_settings, "calibrated_min_confidence", 0.0)),
        assumed_spread=float(getattr(ai_settings, "gate_assumed_spread", DEFAULT_SPREAD)),
    )
