"""Equity snapshots: one per cycle, the curve drawdown, reports and ``status`` read."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from journal.codec import _dec_text, _ts
from journal.store import Store


class EquityRepository:
    """The ``equity_snapshots`` table."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def record(
        self, at: datetime, equity: Decimal, cash: Decimal, positions_value: Decimal
    ) -> None:
        """An equity snapshot (one per cycle)."""
        values = (
            _ts(at, "at"), _dec_text(equity, "equity"), _dec_text(cash, "cash"),
            _dec_text(positions_value, "positions_value"),
        )
        with self._store.tx() as conn:
            conn.execute(
                "INSERT INTO equity_snapshots (at, equity, cash, positions_value) VALUES (?, ?, ?, ?)",
                values,
            )

    def curve(self, since: datetime | None = None) -> list[tuple[datetime, Decimal]]:
        """(time, equity) snapshots at or after ``since``, oldest first."""
        if since is None:
            rows = self._store.read("SELECT at, equity FROM equity_snapshots ORDER BY at, id")
        else:
            rows = self._store.read(
                "SELECT at, equity FROM equity_snapshots WHERE at >= ? ORDER BY at, id",
                (_ts(since, "since"),),
            )
        return [(datetime.fromisoformat(r["at"]), Decimal(r["equity"])) for r in rows]

    def raw_rows(self) -> list[dict[str, Any]]:
        """Every equity snapshot as stored (text, unparsed; ``id``, ``at``, ``equity``), for
        readers that must survive a row that does not parse (``python main.py report``)."""
        return [dict(r) for r in self._store.read("SELECT id, at, equity FROM equity_snapshots ORDER BY at, id")]
