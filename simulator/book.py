"""``OrderBook``: every order of the simulated broker, the open ones, and their JSON views.

The book only stores and finds orders (by id, by client order id, open ones in submission
order, OCO siblings) and answers ``GET /v2/orders``; what happens to an order (submission,
matching, fills, cancels, replaces) is the engine's (:class:`simulator.engine.SimBroker`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from simulator.errors import malformed_order_id, not_found, validation_error
from simulator.matching import trailing_stop_price
from simulator.orders import SimOrder
from simulator.reference import asset_id
from simulator.wire import parse_bool, parse_int, parse_time

ORDER_LIST_DEFAULT = 50
ORDER_LIST_MAX = 500


def _is_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID as Alpaca spells order ids (hex with or without dashes)."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class OrderBook:
    """The orders, by id (:attr:`orders`), the open ones (:attr:`open`) and by client order
    id (:attr:`by_client_id`). ``new_id`` makes every new id (seeded by the engine)."""

    def __init__(self, new_id: Callable[[], str]) -> None:
        self._new_id = new_id
        self.orders: dict[str, SimOrder] = {}
        self.open: dict[str, SimOrder] = {}
        self.by_client_id: dict[str, SimOrder] = {}
        self._seq = 0

    def client_id_taken(self, client_order_id: str) -> bool:
        """Whether an order already uses ``client_order_id``."""
        return client_order_id in self.by_client_id

    def by_client_json(self, client_order_id: str) -> dict[str, Any]:
        """The order with ``client_order_id`` (legs nested); 404 when unknown."""
        order = self.by_client_id.get(client_order_id)
        if order is None:
            raise not_found("order not found")
        return self.order_json(order, nested=True)

    def new_order(
        self, *, symbol: str, side: str, kind: str, tif: str, qty: Decimal | None, notional: Decimal | None,
        limit_price: Decimal | None, stop_price: Decimal | None, trail_price: Decimal | None,
        trail_percent: Decimal | None, extended: bool, order_class: str, intent: str, status: str,
        now: datetime, session: date, expires_at: datetime | None, client_order_id: str | None,
        parent_id: str | None = None,
    ) -> SimOrder:
        """Create an order (a new UUID; a client order id unless given) and book it as open."""
        self._seq += 1
        order = SimOrder(
            id=self._new_id(),
            client_order_id=client_order_id or self._new_id(),
            seq=self._seq,
            symbol=symbol,
            asset_id=asset_id(symbol),
            side=side,
            type=kind,
            time_in_force=tif,
            qty=qty,
            notional=notional,
            limit_price=limit_price,
            stop_price=stop_price,
            trail_price=trail_price,
            trail_percent=trail_percent,
            extended_hours=extended,
            order_class=order_class,
            position_intent=intent,
            status=status,
            created_at=now,
            submitted_at=now,
            updated_at=now,
            eligible_from=now,
            session=session,
            expires_at=expires_at,
            parent_id=parent_id,
        )
        self.orders[order.id] = order
        self.by_client_id[order.client_order_id] = order
        self.open[order.id] = order
        return order

    def find(self, order_id: str) -> SimOrder:
        """The order with this id: 422 40010001 when the id is not a UUID, 404 when unknown."""
        order = self.orders.get(str(order_id))
        if order is None:
            if not _is_uuid(str(order_id)):
                raise malformed_order_id()
            raise not_found("order not found")
        return order

    def open_orders(self) -> list[SimOrder]:
        """The open orders in submission order."""
        return sorted(self.open.values(), key=lambda o: o.seq)

    def siblings(self, order: SimOrder) -> list[SimOrder]:
        """The other open orders of ``order``'s OCO group."""
        return [
            other for other in self.open.values()
            if other.oco_group == order.oco_group and other.id != order.id
        ]

    def list_json(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``GET /v2/orders`` with status, limit, after/until, direction, nested, symbols, side.

        With ``nested=true`` legs are rolled into their parent's ``legs`` and a parent is
        listed when it or any of its legs matches ``status`` (so a filled bracket entry still
        shows its open protective legs under ``status=open``).
        """
        status = str(params.get("status") or "open").lower()
        if status not in ("open", "closed", "all"):
            raise validation_error(f"invalid status: {status!r} (allowed: open, closed, all)")
        limit = parse_int(params.get("limit", ORDER_LIST_DEFAULT), "limit", low=1, high=ORDER_LIST_MAX)
        after = parse_time(params["after"], "after") if params.get("after") else None
        until = parse_time(params["until"], "until") if params.get("until") else None
        direction = str(params.get("direction") or "desc").lower()
        if direction not in ("asc", "desc"):
            raise validation_error(f"invalid direction: {direction!r}")
        nested = parse_bool(params.get("nested", False), "nested")
        symbols = {s.strip() for s in str(params.get("symbols") or "").split(",") if s.strip()}
        side = params.get("side")
        if side is not None and side not in ("buy", "sell"):
            raise validation_error(f"invalid side: {side!r}")

        def matches(order: SimOrder) -> bool:
            return status == "all" or (order.is_open if status == "open" else not order.is_open)

        selected: list[SimOrder] = []
        candidates = self.open_candidates(nested) if status == "open" else self.orders.values()
        for order in candidates:
            if nested and order.parent_id is not None:
                continue
            family = [order] + ([self.orders[i] for i in order.leg_ids] if nested else [])
            if not any(matches(member) for member in family):
                continue
            if symbols and order.symbol not in symbols:
                continue
            if side is not None and order.side != side:
                continue
            submitted = order.submitted_at or order.created_at
            if after is not None and not submitted > after:
                continue
            if until is not None and not submitted < until:
                continue
            selected.append(order)
        selected.sort(key=lambda o: (o.submitted_at or o.created_at, o.seq), reverse=direction == "desc")
        return [self.order_json(order, nested=nested) for order in selected[:limit]]

    def open_candidates(self, nested: bool) -> list[SimOrder]:
        """Every order ``status=open`` can list, without walking the whole order history:
        the open orders and, nested, the parents of open legs together with the orders
        those parents replaced (a replaced parent keeps its legs' ids)."""
        if not nested:
            return list(self.open.values())
        found: dict[str, SimOrder] = {}
        for order in self.open.values():
            if order.parent_id is None:
                found.setdefault(order.id, order)
                continue
            parent = self.orders.get(order.parent_id)
            while parent is not None:
                found.setdefault(parent.id, parent)
                parent = self.orders.get(parent.replaces) if parent.replaces else None
        return list(found.values())

    def order_json(self, order: SimOrder, *, nested: bool) -> dict[str, Any]:
        """Alpaca's Order object; ``nested``: with its legs under ``legs``."""
        legs = None
        if nested and order.leg_ids:
            legs = [self.order_json(self.orders[i], nested=False) for i in order.leg_ids]
        stop = None
        if order.type == "trailing_stop":
            stop = trailing_stop_price(order.terms())
        return order.to_json(legs, stop_price=stop)
