"""Closed round trips (the trade ledger's output) and the day trades the PDT rule counts.

Both are idempotent on an id (a trade's ``trade_id``, a day trade's ``ref``), so rebuilding
the ledger from the fills after a restart records nothing twice.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from analytics.trade_ledger import ClosedTrade
from journal.codec import _dec_text, _opt_dec_text, _parse_dec, _parse_ts, _text, _ts
from journal.store import Store


class TradeRepository:
    """The ``trades`` and ``day_trades`` tables."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def record(
        self,
        symbol: str,
        strategy: str | None,
        entry_at: datetime,
        exit_at: datetime,
        qty: Decimal,
        entry_price: Decimal,
        exit_price: Decimal,
        pnl: Decimal,
        exit_reason: str | None,
        *,
        side: str = "long",
        return_pct: Decimal | None = None,
        trade_id: str | None = None,
        mfe_pct: Decimal | None = None,
        mae_pct: Decimal | None = None,
    ) -> bool:
        """Record a closed round trip; False when ``trade_id`` was already recorded.

        ``mfe_pct``/``mae_pct``: the trade's maximum favourable / adverse excursion
        (:mod:`analytics.excursions`), None when no price was seen while it was open."""
        if side not in ("long", "short"):
            raise ValueError(f"trade side must be 'long' or 'short', got {side!r}")
        values = (
            _text(symbol, "symbol"), strategy, side, _dec_text(qty, "qty"),
            _ts(entry_at, "entry_at"), _ts(exit_at, "exit_at"), _dec_text(entry_price, "entry_price"),
            _dec_text(exit_price, "exit_price"), _dec_text(pnl, "pnl"),
            _opt_dec_text(return_pct, "return_pct"), exit_reason or None, trade_id,
            _opt_dec_text(mfe_pct, "mfe_pct"), _opt_dec_text(mae_pct, "mae_pct"),
        )
        with self._store.tx() as conn:
            return bool(
                conn.execute(
                    "INSERT OR IGNORE INTO trades (symbol, strategy, side, qty, entry_at, exit_at, "
                    "entry_price, exit_price, pnl, return_pct, exit_reason, trade_id, mfe_pct, mae_pct) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                ).rowcount
            )

    def record_closed(self, trade: ClosedTrade) -> bool:
        """Record a :class:`~analytics.trade_ledger.ClosedTrade` (idempotent on its ``trade_id``)."""
        return self.record(
            trade.symbol, trade.strategy, trade.entry_at, trade.exit_at, trade.qty,
            trade.entry_price, trade.exit_price, trade.pnl, trade.exit_reason,
            side=trade.side, return_pct=trade.return_pct, trade_id=trade.trade_id or None,
            mfe_pct=trade.mfe_pct, mae_pct=trade.mae_pct,
        )

    def select(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Closed trades (exit at or after ``since``), oldest exit first."""
        if since is None:
            rows = self._store.read("SELECT * FROM trades ORDER BY exit_at, id")
        else:
            rows = self._store.read(
                "SELECT * FROM trades WHERE exit_at >= ? ORDER BY exit_at, id", (_ts(since, "since"),)
            )
        out = []
        for row in rows:
            item = dict(row)
            for key in ("qty", "entry_price", "exit_price", "pnl", "return_pct", "mfe_pct", "mae_pct"):
                item[key] = _parse_dec(item.get(key))
            for key in ("entry_at", "exit_at"):
                item[key] = _parse_ts(item[key])
            out.append(item)
        return out

    def record_day_trade(self, symbol: str, session_date: date, *, ref: str | None = None) -> bool:
        """Record a day trade; with ``ref`` (e.g. the trade id) a repeat is ignored (False)."""
        if not isinstance(session_date, date) or isinstance(session_date, datetime):
            raise ValueError(f"session_date must be a date, got {session_date!r}")
        with self._store.tx() as conn:
            return bool(
                conn.execute(
                    "INSERT OR IGNORE INTO day_trades (symbol, session_date, ref) VALUES (?, ?, ?)",
                    (_text(symbol, "symbol"), session_date.isoformat(), ref),
                ).rowcount
            )

    def day_trades(self, since: date) -> list[tuple[str, date]]:
        """Day trades on or after ``since``: (symbol, session date), oldest first."""
        rows = self._store.read(
            "SELECT symbol, session_date FROM day_trades WHERE session_date >= ? ORDER BY session_date, id",
            (since.isoformat(),),
        )
        return [(row["symbol"], date.fromisoformat(row["session_date"])) for row in rows]

    def raw_rows(self) -> list[dict[str, Any]]:
        """Every closed trade as stored (text, unparsed), oldest exit first; see
        :meth:`journal.equity.EquityRepository.raw_rows`."""
        return [dict(r) for r in self._store.read("SELECT * FROM trades ORDER BY exit_at, id")]
