"""Slices of an order's cumulative filled quantity, and what an order's fills already count.

A fill row remembers which slice ``[lo, hi)`` of its order's cumulative quantity it accounts
for (``segments``), so a real fill arriving after a synthetic one for the same shares (from a
cumulative ``filled_qty``) is remembered without being counted twice. The arithmetic on those
slices is pure; :func:`coverage` and :func:`counted` read them from the ``fills`` table.
Shared by :mod:`journal.fills` and :mod:`journal.orders`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from decimal import Decimal

ZERO = Decimal(0)

Segment = tuple[Decimal, Decimal]


def _merge(segments: Sequence[Segment]) -> list[Segment]:
    merged: list[Segment] = []
    for lo, hi in sorted(s for s in segments if s[1] > s[0]):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _subtract(segment: Segment, cover: Sequence[Segment]) -> list[Segment]:
    """The parts of ``segment`` not inside ``cover`` (merged, sorted)."""
    pieces: list[Segment] = []
    lo, hi = segment
    for c_lo, c_hi in _merge(cover):
        if c_hi <= lo or c_lo >= hi:
            continue
        if c_lo > lo:
            pieces.append((lo, c_lo))
        lo = max(lo, c_hi)
        if lo >= hi:
            break
    if lo < hi:
        pieces.append((lo, hi))
    return pieces


def _measure(segments: Sequence[Segment]) -> Decimal:
    return sum((hi - lo for lo, hi in segments), ZERO)


def _top(segments: Sequence[Segment], qty: Decimal) -> list[Segment]:
    """The highest ``qty`` worth of ``segments``."""
    out: list[Segment] = []
    for lo, hi in sorted(segments, reverse=True):
        if qty <= ZERO:
            break
        take = min(hi - lo, qty)
        out.append((hi - take, hi))
        qty -= take
    return sorted(out)


def _segments_text(segments: Sequence[Segment]) -> str:
    return json.dumps([[str(lo), str(hi)] for lo, hi in segments])


def _parse_segments(text: str | None) -> list[Segment] | None:
    if text is None:
        return None
    return [(Decimal(lo), Decimal(hi)) for lo, hi in json.loads(text)]


def coverage(conn: sqlite3.Connection, broker_order_id: str) -> tuple[list[Segment], Decimal]:
    """Known slices of the order's cumulative quantity, and the quantity of unknown place."""
    cover: list[Segment] = []
    unknown = ZERO
    for row in conn.execute(
        "SELECT qty, applied_qty, segments FROM fills WHERE broker_order_id = ?", (broker_order_id,)
    ):
        segments = _parse_segments(row["segments"])
        if segments is None:
            unknown += Decimal(row["applied_qty"] or row["qty"])
        else:
            cover.extend(segments)
    return _merge(cover), unknown


def counted(conn: sqlite3.Connection, broker_order_id: str) -> Decimal:
    """The quantity of an order its recorded fills count."""
    return sum(
        (
            Decimal(row["applied_qty"] or row["qty"])
            for row in conn.execute(
                "SELECT qty, applied_qty FROM fills WHERE broker_order_id = ?", (broker_order_id,)
            )
        ),
        ZERO,
    )
