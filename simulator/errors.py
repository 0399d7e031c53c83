"""The one error the simulator core raises: an Alpaca HTTP error, status and body.

Every core method (trading and market data) reports a refusal by raising
:class:`SimApiError`; the HTTP server turns it into a response with ``status`` and the JSON
``body`` unchanged, and the in-process backtest broker maps it exactly as the gateway maps a
real Alpaca answer. Bodies follow Alpaca's shape ``{"code": <8-digit int>, "message": str}``
plus the context fields Alpaca adds to some rejections (``available``, ``held_for_orders``,
``buying_power``, ...). The helpers below build the bodies whose wording matters to clients.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

# Alpaca's 8-digit codes (reference section 1.4).
CODE_VALIDATION = 40010001
CODE_UNAUTHORIZED = 40110000
CODE_FORBIDDEN = 40310000
CODE_PDT = 40310100
CODE_NOT_FOUND = 40410000
CODE_UNPROCESSABLE = 42210000
CODE_RATE_LIMITED = 42910000


class SimApiError(Exception):
    """An Alpaca error answer: HTTP ``status`` and the JSON ``body`` to send."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = dict(body)
        super().__init__(f"{status} {self.body.get('code', '')} {self.body.get('message', '')}".strip())

    def __repr__(self) -> str:
        return f"SimApiError(status={self.status!r}, body={self.body!r})"


def _num(value: Decimal) -> str:
    """A quantity or amount as Alpaca writes it: plain decimal, no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def validation_error(message: str) -> SimApiError:
    """422 40010001: the request itself is malformed (missing/invalid field)."""
    return SimApiError(422, {"code": CODE_VALIDATION, "message": message})


def unprocessable(message: str) -> SimApiError:
    """422 42210000: well-formed but refused by an order rule (sub-penny, bracket prices, ...)."""
    return SimApiError(422, {"code": CODE_UNPROCESSABLE, "message": message})


def forbidden(message: str, **extra: Any) -> SimApiError:
    """403 40310000: refused by an account rule (shorting, suspended, fractional)."""
    return SimApiError(403, {"code": CODE_FORBIDDEN, "message": message, **extra})


def not_found(message: str) -> SimApiError:
    """404 40410000: unknown order, position or asset."""
    return SimApiError(404, {"code": CODE_NOT_FOUND, "message": message})


def insufficient_qty(
    *,
    symbol: str,
    requested: Decimal,
    available: Decimal,
    existing: Decimal,
    held: Decimal,
    related_orders: list[str] | None = None,
) -> SimApiError:
    """403 40310000 'insufficient qty available for order' with Alpaca's context fields.

    ``related_orders`` are the ids of the open orders holding the shares: a client reads
    them to cancel exactly those before it sells (Alpaca sends the list, empty when no
    order holds anything).
    """
    return SimApiError(
        403,
        {
            "code": CODE_FORBIDDEN,
            "message": (
                f"insufficient qty available for order (requested: {_num(requested)}, "
                f"available: {_num(available)})"
            ),
            "available": _num(available),
            "existing_qty": _num(existing),
            "held_for_orders": _num(held),
            "related_orders": list(related_orders or []),
            "symbol": symbol,
        },
    )


def insufficient_buying_power(*, buying_power: Decimal, cost_basis: Decimal) -> SimApiError:
    """403 40310000 'insufficient buying power' with the two amounts Alpaca sends."""
    return SimApiError(
        403,
        {
            "code": CODE_FORBIDDEN,
            "message": "insufficient buying power",
            "buying_power": _num(buying_power.quantize(Decimal("0.01"))),
            "cost_basis": _num(cost_basis.quantize(Decimal("0.01"))),
        },
    )


def pdt_denied() -> SimApiError:
    """403 40310100: the order would be a 4th day trade in 5 business days under $25,000."""
    return SimApiError(
        403, {"code": CODE_PDT, "message": "trade denied due to pattern day trading protection"}
    )


def wash_trade() -> SimApiError:
    """422 42210000: an opposite-side order on the same symbol is resting.

    Status and code as captured from Alpaca (Petersoj/alpaca-java #145, 2024).
    """
    return unprocessable("potential wash trade detected. use complex orders")


def already_final(status: str) -> SimApiError:
    """422 42210000 'order is already in "<status>" state': DELETE or PATCH of an order
    that already reached a final state (filled, canceled, expired, replaced, rejected).

    Alpaca's wording, naming the state (bennycode/trading-signals #1079). A client must act
    on the status and code, never on this text.
    """
    return unprocessable(f'order is already in "{status}" state')


def malformed_order_id() -> SimApiError:
    """422 40010001 'order_id is missing': the ``{order_id}`` path segment is not a UUID.

    Alpaca's answer to a malformed id (alpacahq/Alpaca-API #135); an unknown but
    well-formed UUID gets 404 40410000 'order not found' instead.
    """
    return validation_error("order_id is missing")


def rate_limited() -> SimApiError:
    """429 42910000 'rate limit exceeded'."""
    return SimApiError(429, {"code": CODE_RATE_LIMITED, "message": "rate limit exceeded"})
