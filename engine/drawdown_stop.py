"""The cumulative loss stop: a maximum drawdown from the equity high-water mark, across sessions.

The circuit breaker and the daily loss limit both measure from the *session's* starting
equity, so a run of losing days that each stay under the daily limit never stops anything.
:class:`PeakDrawdownStop` keeps the highest equity ever seen (the high-water mark) for as
long as the journal keeps the trading state, and answers whether the equity has fallen
``risk.max_drawdown_from_peak`` (a fraction) or more below it.

It only measures. :class:`engine.trading_state.SafetyStateMachine` owns one and, when it
fires, latches exactly like the breaker (latch kind ``max_drawdown``: cancel, liquidate,
alert, re-arm only by the operator). The machine's ``to_dict``/``from_dict`` carry the
high-water mark through the journal, so a restart cannot reset the reference. After a
re-arm the mark is rebased to the equity at the re-arm (or the next cycle's), otherwise the
same loss would trip the stop again at once.

Nothing here reads the clock, the broker or the disk.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping

from broker.models import to_decimal
from engine.portfolio import loss_fraction

ZERO = Decimal(0)

#: How each latch kind reads in ``status``, ``diagnose`` and alerts.
LATCH_LABELS: dict[str, str] = {
    "circuit_breaker": "circuit breaker",
    "halt": "operator halt",
    "max_drawdown": "maximum drawdown stop",
}


def latch_label(kind: object) -> str:
    """A person's name for a latch kind (unknown kinds read as an operator halt, as before)."""
    return LATCH_LABELS.get(str(kind), "operator halt")


class PeakDrawdownStop:
    """High-water mark of equity and the drawdown from it; ``limit`` None disables the stop."""

    def __init__(self, limit: Decimal | float | None) -> None:
        self.limit: Decimal | None = None if limit is None else to_decimal(limit, "risk.max_drawdown_from_peak")
        self.high_water_mark: Decimal | None = None
        self.rebase_pending = False

    @property
    def enabled(self) -> bool:
        return self.limit is not None and self.limit > ZERO

    def observe(self, equity: Decimal) -> Decimal:
        """Raise the mark to ``equity`` if higher (or rebase after a re-arm); return the drawdown."""
        if equity <= ZERO:
            return self.drawdown(equity)
        if self.rebase_pending or self.high_water_mark is None:
            self.high_water_mark = equity
            self.rebase_pending = False
        elif equity > self.high_water_mark:
            self.high_water_mark = equity
        return self.drawdown(equity)

    def drawdown(self, equity: Decimal) -> Decimal:
        """The fall from the high-water mark at ``equity``, as a fraction (0 without a mark)."""
        if self.high_water_mark is None:
            return ZERO
        return loss_fraction(self.high_water_mark, equity)

    def breached(self, equity: Decimal) -> bool:
        """True when the stop is enabled and ``equity`` is at least ``limit`` below the mark."""
        return self.enabled and self.limit is not None and self.drawdown(equity) >= self.limit

    def rebase(self, equity: Decimal | None) -> None:
        """After a re-arm: the mark becomes ``equity``, or the next observed equity when None."""
        if equity is not None and equity > ZERO:
            self.high_water_mark = equity
            self.rebase_pending = False
        else:
            self.rebase_pending = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "high_water_mark": None if self.high_water_mark is None else str(self.high_water_mark),
            "rebase_pending": self.rebase_pending,
        }

    def restore(self, data: Mapping[str, Any] | None) -> None:
        """Take the mark back from :meth:`to_dict`'s snapshot (missing: an older journal)."""
        if not data:
            return
        mark = data.get("high_water_mark")
        self.high_water_mark = None if mark is None else to_decimal(mark, "high_water_mark")
        self.rebase_pending = bool(data.get("rebase_pending", False))
