"""The one exception tree of the trading daemon.

Broker errors are translated once, at the gateway boundary, into two families the loop
acts on without inspecting HTTP details:

* :class:`TemporaryError`: back off and carry on (timeouts, resets, 5xx, 429, malformed bodies).
* :class:`OperationalError`: stop trading and alert a human (bad keys, blocked account,
  refused live URL, a broker answer that makes no sense).

Definitive business rejections of an order are :class:`OrderRejected` (and subclasses the
executor acts on). An order whose fate is unknown is *not* a rejection: it is
:class:`OrderInFlight` until reconciled by ``client_order_id``.

No message in this tree ever contains an API key or secret: the gateway builds messages
from status, code and broker message only, and the log processor redacts anything else.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any


class TradingError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(TradingError):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems) or "invalid configuration")


class BrokerError(TradingError):
    """An error that came from (or on the way to) the broker."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        request_id: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.body = dict(body or {})
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.code is not None:
            parts.append(f"code={self.code}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)


# -- temporary: back off and carry on ------------------------------------------------------


class TemporaryError(BrokerError):
    """Retrying later may succeed: network failures, 5xx, 429, malformed responses."""


class BrokerUnavailable(TemporaryError):
    """Timeout, connection reset or refused, DNS failure: the broker could not be reached."""


class ServerError(TemporaryError):
    """The broker answered 5xx."""


class RateLimited(TemporaryError):
    """The broker answered 429 (or our own bucket is empty); ``retry_after`` in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class MalformedResponse(TemporaryError):
    """The broker's body was not the JSON we expected (bad JSON, missing required fields)."""


# -- operational: stop and alert -----------------------------------------------------------


class OperationalError(BrokerError):
    """Carrying on would be unsafe or pointless: a human must look."""


class AuthenticationFailed(OperationalError):
    """401/403 on authentication: wrong keys, or keys of the other environment."""


class AccountBlocked(OperationalError):
    """The account cannot trade (trading_blocked, account_blocked, suspended)."""


class UnsafeEndpoint(OperationalError):
    """Plain HTTP to a non-loopback host, or the live URL without the live opt-in."""


# -- definitive answers about one request --------------------------------------------------


class NotFound(BrokerError):
    """404: the order, position or asset does not exist."""


class OrderRejected(BrokerError):
    """The broker definitively refused an order (4xx business error). Nothing was created."""


class InsufficientQuantity(OrderRejected):
    """403 40310000 'insufficient qty available': open orders hold the shares."""

    @property
    def available(self) -> Decimal | None:
        return _decimal(self.body.get("available"))

    @property
    def held_for_orders(self) -> Decimal | None:
        return _decimal(self.body.get("held_for_orders"))


class InsufficientBuyingPower(OrderRejected):
    """403 40310000 'insufficient buying power' (or day-trading buying power)."""


class PatternDayTraderRejected(OrderRejected):
    """403 40310100: pattern-day-trading protection refused the order."""


class WashTradeRejected(OrderRejected):
    """An opposite-side order on the same symbol is resting."""


class DuplicateClientOrderId(OrderRejected):
    """422 'client_order_id must be unique': an order with this id already exists."""


class OrderNotCancelable(BrokerError):
    """422 on cancel: the order is already filled, canceled or expired."""


class OrderInFlight(TemporaryError):
    """A submission's outcome is unknown and could not yet be resolved by client_order_id.

    The order may exist at the broker. Never resubmit under a new id; reconcile first.
    """

    def __init__(self, message: str, *, client_order_id: str, **kw: Any) -> None:
        self.client_order_id = client_order_id
        super().__init__(message, **kw)


class DataQualityError(TradingError):
    """Market data failed a quality check (stale, crossed, zero)."""


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except (ArithmeticError, ValueError):
        return None
