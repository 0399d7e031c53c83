"""The journal's free-form records: events (halt, rearm, reconciliation results, ...) and
alerts as delivered (after secret scrubbing)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from journal.codec import _json, _parse_ts, _text, _ts
from journal.store import Store


class EventRepository:
    """The ``events`` table (operator commands live there too: see :mod:`journal.operator`)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def log(self, kind: str, payload: dict[str, Any], at: datetime) -> None:
        """A journaled event (rearm, halt, reconciliation result, ...)."""
        values = (_text(kind, "event kind"), _json(payload, f"event {kind!r}"), _ts(at, "at"))
        with self._store.tx() as conn:
            conn.execute("INSERT INTO events (kind, payload, at) VALUES (?, ?, ?)", values)

    def select(self, kind: str | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
        """Journaled events, oldest first: ``{"kind", "payload", "at"}``."""
        sql, params = "SELECT kind, payload, at FROM events WHERE at >= ?", [
            _ts(since, "since") if since else ""
        ]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        rows = self._store.read(sql + " ORDER BY at, id", params)
        return [
            {"kind": r["kind"], "payload": json.loads(r["payload"]), "at": _parse_ts(r["at"])}
            for r in rows
        ]


class AlertRepository:
    """The ``alerts`` table."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def record(self, level: str, title: str, message: str, at: datetime) -> None:
        """An alert as delivered (after secret scrubbing)."""
        values = (str(level), str(title), str(message), _ts(at, "at"))
        with self._store.tx() as conn:
            conn.execute("INSERT INTO alerts (level, title, message, at) VALUES (?, ?, ?, ?)", values)

    def select(self, since: datetime | None = None) -> list[dict[str, Any]]:
        rows = self._store.read(
            "SELECT level, title, message, at FROM alerts WHERE at >= ? ORDER BY at, id",
            (_ts(since, "since") if since else "",),
        )
        return [{**dict(r), "at": _parse_ts(r["at"])} for r in rows]
