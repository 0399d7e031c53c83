"""Each closed trade of a backtest with what it was entered with: its bracket's stop and
target and the AI's probability at entry, found through the entry fill's order.

The journal's trade rows say what happened (prices, P&L, exit reason); ``trades.csv`` and
the random-entry comparison also need what was planned. The entry fill (same symbol, buy,
at the trade's entry instant) names its order; the order's payload holds the bracket and
its intent the probability.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

UTC = timezone.utc


def _utc(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.astimezone(UTC)


def _bracket(payload: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    payload = payload or {}
    stop = (payload.get("stop_loss") or {}).get("stop_price")
    target = (payload.get("take_profit") or {}).get("limit_price")
    return (str(stop) if stop is not None else None, str(target) if target is not None else None)


def with_entry_details(trades: Sequence[Mapping[str, Any]], fills: Sequence[Mapping[str, Any]],
                       orders: Sequence[Mapping[str, Any]],
                       intents: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``trades`` with ``stop_price``, ``target_price``, ``probability`` and
    ``entry_order`` added (None where the entry order carried no bracket or intent)."""
    entry_orders: dict[tuple[str, datetime], str] = {}
    for fill in fills:
        if fill.get("side") == "buy" and fill.get("client_order_id"):
            entry_orders.setdefault((str(fill["symbol"]), _utc(fill["at"])), str(fill["client_order_id"]))
    by_cid = {str(o["client_order_id"]): o for o in orders}
    confidence = {str(i["client_order_id"]): i.get("confidence") for i in intents if i.get("client_order_id")}
    out = []
    for trade in trades:
        cid = entry_orders.get((str(trade["symbol"]), _utc(trade["entry_at"])))
        order = by_cid.get(cid) if cid else None
        stop, target = _bracket(order.get("payload") if order else None)
        probability = confidence.get(cid) if cid else None
        out.append(dict(trade, stop_price=stop, target_price=target, entry_order=cid,
                        probability=float(probability) if probability is not None else None))
    return out
