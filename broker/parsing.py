"""Tolerant parsing of broker answers into :mod:`broker.models`, with the dropped items counted.

One job: turn the JSON a broker sent into models, deciding what an unusable piece costs.
An object a call cannot do without (the account, the order just submitted) that does not
parse is :class:`core.errors.MalformedResponse`; one unusable item of a list or a symbol map
(an order, a position, a bar, a symbol's quote ...) is dropped with an ERROR
``broker_item_dropped`` (:func:`broker.models.report_dropped`) and the rest stands. Every
dropped item, including an order's unusable leg dropped deep inside a model, is counted in
:attr:`TolerantParser.dropped_items` and handed to :attr:`TolerantParser.on_item_dropped`
(the loop's alert hook), so bad data the daemon kept going past is never silent.

The gateway (:class:`api_gateway.ResilientAlpacaGateway`) owns one parser and exposes its
count and hook as its own ``dropped_items`` and ``on_item_dropped``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel, ValidationError

from broker.models import (
    Bar,
    DroppedItem,
    Quote,
    Snapshot,
    Trade,
    collect_dropped,
    parse_bar,
    parse_quote,
    parse_snapshot,
    parse_trade,
    report_dropped,
)
from core import errors

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=BaseModel)

#: Market data models with a fast path for their common shape (same results as
#: model_validate, which they fall back to for anything else; see models.parse_snapshot).
FAST_PARSERS: dict[type[BaseModel], Callable[[Any], Any]] = {
    Bar: parse_bar, Quote: parse_quote, Trade: parse_trade, Snapshot: parse_snapshot,
}


def summarise(exc: ValidationError) -> str:
    """The first few problems of a validation error, one line (for an exception message)."""
    parts = []
    for item in exc.errors()[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


class TolerantParser:
    """Parses broker JSON into models; counts and reports every item it had to drop."""

    def __init__(self) -> None:
        # Unusable broker items dropped from lists (and order legs) since start: the loop
        # compares it between cycles, and on_item_dropped (if set) hears of each one.
        self.dropped_items = 0
        self.last_dropped: DroppedItem | None = None
        self.on_item_dropped: Callable[[DroppedItem], None] | None = None

    def parse(self, model: type[M], data: Any, where: str) -> M:
        """One object the call cannot do without: unusable means MalformedResponse."""
        parse = FAST_PARSERS.get(model, model.model_validate)
        with collect_dropped() as dropped:
            try:
                return parse(data)  # type: ignore[no-any-return]
            except ValidationError as exc:
                raise errors.MalformedResponse(
                    f"{where}: unexpected {model.__name__}: {summarise(exc)}"
                ) from None
            finally:
                self._count_dropped(dropped)

    def parse_item(self, model: type[M], data: Any, where: str, index: int | None) -> M | None:
        """One item of a list or symbol map: unusable means dropped (reported), not an error."""
        parse = FAST_PARSERS.get(model, model.model_validate)
        with collect_dropped() as dropped:
            try:
                return parse(data)  # type: ignore[no-any-return]
            except ValidationError as exc:
                report_dropped(model.__name__, where, index, data, exc)
                return None
            finally:
                self._count_dropped(dropped)

    def parse_list(self, model: type[M], data: Any, where: str) -> list[M]:
        """Every usable item of a list, in order; an unusable one is dropped and reported."""
        if data is None:
            return []
        if not isinstance(data, list):
            raise errors.MalformedResponse(f"{where}: expected a list of {model.__name__}")
        parsed = (self.parse_item(model, item, where, index) for index, item in enumerate(data))
        return [item for item in parsed if item is not None]

    def _count_dropped(self, dropped: list[DroppedItem]) -> None:
        """Count what parsing dropped and tell the alert hook (its failure never spreads)."""
        for item in dropped:
            self.dropped_items += 1
            self.last_dropped = item
            if self.on_item_dropped is None:
                continue
            try:
                self.on_item_dropped(item)
            except Exception as exc:  # noqa: BLE001 - an alert hook must not fail a parse
                log.error("item_dropped_hook_failed", error=repr(exc), model=item.model)


def mapping(data: Any, key: str | None, where: str) -> dict[str, Any]:
    """The object under ``key`` of a body (the body itself when ``key`` is None); absent is
    empty, anything but an object is MalformedResponse."""
    value = data.get(key) if (key is not None and isinstance(data, dict)) else data
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.MalformedResponse(f"{where}: expected an object under {key or 'the body'}")
    return value


__all__ = ["FAST_PARSERS", "TolerantParser", "mapping", "summarise"]
