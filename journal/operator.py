"""What the operator's commands exchange with the daemon through the journal.

``python main.py halt``/``rearm`` queue a command (an ``operator_command`` event, ordered by
the journal's own insertion sequence, whatever the clocks of the processes said); the daemon
applies each once and remembers that it did. The daemon remembers its latest cycle, and
``python main.py status`` reads :meth:`OperatorRepository.status_summary`.
"""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timedelta
from typing import Any

from journal.codec import _json, _jsonable, _parse_ts, _text, _ts
from journal.orders import OrderRepository
from journal.store import Store
from journal.trades import TradeRepository

#: What ``python main.py halt``/``rearm`` queue for the daemon.
OPERATOR_COMMANDS = frozenset({"halt", "rearm"})


class OperatorRepository:
    """Operator commands (rows of ``events``), the last cycle and the status summary (``state``)."""

    def __init__(self, store: Store, orders: OrderRepository, trades: TradeRepository) -> None:
        self._store = store
        self._orders = orders
        self._trades = trades

    def queue(self, kind: str, reason: str, at: datetime) -> dict[str, Any]:
        """Append an operator command (``halt``/``rearm``) for the daemon; return it with its
        ``seq``: the journal's own insertion sequence, which orders commands whatever the
        clocks of the processes that queued them said (a ``halt`` queued after a ``rearm``
        always comes after it)."""
        if kind not in OPERATOR_COMMANDS:
            raise ValueError(f"operator command must be one of {sorted(OPERATOR_COMMANDS)}, got {kind!r}")
        payload = {"id": uuid.uuid4().hex, "kind": kind, "reason": _text(reason, "reason"),
                   "at": _ts(at, "at")}
        with self._store.tx() as conn:
            seq = conn.execute(
                "INSERT INTO events (kind, payload, at) VALUES (?, ?, ?)",
                ("operator_command", _json(payload, "operator command"), payload["at"]),
            ).lastrowid
        return {**payload, "seq": int(seq or 0)}

    def commands(self, *, pending: bool = False) -> list[dict[str, Any]]:
        """Operator commands in the order they were queued (by ``seq``), each with its
        ``seq``; ``pending``: only those the daemon has not applied yet."""
        rows = self._store.read("SELECT id, payload FROM events WHERE kind = 'operator_command' ORDER BY id")
        commands = [{**json.loads(r["payload"]), "seq": int(r["id"])} for r in rows]
        if not pending:
            return commands
        applied = set((self._store.get_state("operator_commands_applied") or {}).get("ids", []))
        return [c for c in commands if c.get("id") not in applied]

    def mark_applied(self, command_id: str) -> None:
        """Remember that the daemon applied (or deliberately ignored) this command."""
        with self._store.tx():
            applied = set((self._store.get_state("operator_commands_applied") or {}).get("ids", []))
            applied.add(_text(command_id, "command id"))
            self._store.set_state("operator_commands_applied", {"ids": sorted(applied)})

    def last_seq(self) -> int:
        """The ``seq`` of the newest operator command queued so far (0: none)."""
        row = self._store.read("SELECT MAX(id) FROM events WHERE kind = 'operator_command'")
        return int(row[0][0] or 0)

    def last_cycle(self, at: datetime, data: dict[str, Any]) -> None:
        """Remember the latest completed cycle (for ``python main.py status``)."""
        self._store.set_state("last_cycle", {"at": _ts(at, "at"), "data": data})

    def get_last_cycle(self) -> dict[str, Any] | None:
        """``{"at": datetime, "data": {...}}`` of the latest cycle, or None."""
        value = self._store.get_state("last_cycle")
        if value is None:
            return None
        return {"at": _parse_ts(value.get("at")), "data": value.get("data", {})}

    def status_summary(self, *, day_trades_since: date | None = None) -> dict[str, Any]:
        """What ``python main.py status`` shows from the journal (JSON-friendly).

        Last cycle, every latched state (breaker, trading state, ...), open submissions,
        recent day trades (default: the 14 days before the last cycle), the latest equity
        snapshot and the latest reconciliation.
        """
        last = self.get_last_cycle()
        if day_trades_since is None:
            anchor = last["at"].date() if last and last["at"] else date.min + timedelta(days=14)
            day_trades_since = anchor - timedelta(days=14)
        state = {
            r["key"]: json.loads(r["value"])
            for r in self._store.read("SELECT key, value FROM state WHERE key != 'last_cycle' ORDER BY key")
        }
        equity = self._store.read("SELECT at, equity, cash, positions_value FROM equity_snapshots ORDER BY at DESC, id DESC LIMIT 1")
        reconciliation = self._store.read(
            "SELECT payload, at FROM events WHERE kind = 'reconciliation' ORDER BY at DESC, id DESC LIMIT 1"
        )
        return _jsonable(
            {
                "schema_version": self._store.schema_version,
                "last_cycle": last,
                "state": state,
                "open_submissions": [
                    {k: o[k] for k in ("client_order_id", "broker_order_id", "symbol", "side", "qty",
                                       "order_type", "status", "submitted_at")}
                    for o in self._orders.open_submissions()
                ],
                "day_trades": [
                    {"symbol": s, "session_date": d} for s, d in self._trades.day_trades(day_trades_since)
                ],
                "last_equity": dict(equity[0]) if equity else None,
                "last_reconciliation": (
                    {"at": reconciliation[0]["at"], **json.loads(reconciliation[0]["payload"])}
                    if reconciliation else None
                ),
            }
        )
