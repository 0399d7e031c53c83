"""The one exception tree of the trading daemon.

Broker errors are translated once, at the gateway boundary, by one table keyed by HTTP
status, Alpaca's ``code`` and the request (:mod:`broker.broker_errors`), into four categories the
loop acts on without inspecting HTTP details (``exc.category``):

* ``temporary`` (:class:`TemporaryError`): back off and carry on (timeouts, resets, 5xx, 429,
  malformed bodies).
* ``outcome`` (:class:`OrderOutcome`): the answer is a fact about the order or position, not a
  failure: already filled / canceled / expired on a cancel (:class:`OrderNotCancelable`), not
  found (:class:`NotFound`). The caller re-reads the order and the position and goes on from
  their true state.
* ``rejection`` (:class:`OrderRejected` and subclasses the executor acts on): the intent is
  refused; nothing was created.
* ``operational`` (:class:`OperationalError`): bad keys, a blocked account, a refused URL, or a
  broker answer nobody classified. During trading it never ends the daemon: the action (or
  cycle) is skipped, logged at ERROR with the raw status, code and message, and alerted; a run
  of them moves the trading state to REDUCING. Only at start-up is a refusal of the keys a
  configuration error that ends it.

An order whose fate is unknown is *not* a rejection: it is :class:`OrderInFlight` until
reconciled by ``client_order_id``.

No message in this tree ever contains an API key or secret: the gateway builds messages
from status, code and broker message only, and the log processor redacts anything else.
"""

from __future__ import annotations

from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar


class ErrorCategory(str, Enum):
    """What the caller does with a broker answer (see the module docstring)."""

    TEMPORARY = "temporary"
    OUTCOME = "outcome"
    REJECTION = "rejection"
    OPERATIONAL = "operational"


class TradingError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(TradingError):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems) or "invalid configuration")


class BrokerError(TradingError):
    """An error that came from (or on the way to) the broker.

    ``message`` keeps the broker's own text for logs; no decision may depend on it beyond
    what :mod:`broker.broker_errors` documents.
    """

    category: ClassVar[ErrorCategory] = ErrorCategory.OPERATIONAL

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

    category = ErrorCategory.TEMPORARY


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


# -- operational: skip, alert, and after a run of them reduce ------------------------------


class OperationalError(BrokerError):
    """A human must look: the action is skipped and alerted (never ends trading by itself)."""

    category = ErrorCategory.OPERATIONAL


class UnclassifiedBrokerError(OperationalError):
    """A (status, code) the taxonomy does not know for this request: skip it, log it raw."""


class AuthenticationFailed(OperationalError):
    """401/403 on authentication: wrong keys, or keys of the other environment."""


class AccountBlocked(OperationalError):
    """The account cannot trade (trading_blocked, account_blocked, suspended)."""


class UnsafeEndpoint(OperationalError):
    """Plain HTTP to a non-loopback host, or the live URL without the live opt-in."""


# -- definitive answers about one request --------------------------------------------------


class OrderOutcome(BrokerError):
    """The answer is a fact about the order or position, not a failure (already filled,
    canceled, expired, or gone): re-read the order and the position and go on from there."""

    category = ErrorCategory.OUTCOME


class NotFound(OrderOutcome):
    """404 (or a malformed id): the order, position or asset does not exist."""


class OrderRejected(BrokerError):
    """The broker definitively refused an order (4xx business error). Nothing was created."""

    category = ErrorCategory.REJECTION


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


class OrderNotCancelable(OrderOutcome):
    """422 42210000 on a cancel: the order is already in a final state (filled, canceled,
    expired, ...). ``order`` is the order as re-read after the answer, when that read worked."""

    order: Any = None  # a broker.models.Order, or None (core imports nothing of the project)


class OrderNotReplaceable(OrderOutcome):
    """A replace (PATCH) refused because the order is already final (the same race as a
    cancel): ``order`` is the order as re-read after the answer."""

    order: Any = None  # a broker.models.Order, or None (core imports nothing of the project)


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
