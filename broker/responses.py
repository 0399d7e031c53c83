"""What a broker call answered: Alpaca's error body, one item of a multi-status answer
(DELETE /v2/orders, DELETE /v2/positions) and :class:`ApiResponse`, which maps a failed
answer onto the ``core.errors`` taxonomy through ``broker.broker_errors``.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    field_validator,
    model_validator,
)

from broker import broker_errors
from broker.trading_models import Order
from broker.wire import BrokerModel, report_dropped
from core import errors

# -- responses -----------------------------------------------------------------------------


class ErrorBody(BrokerModel):
    """An error body: trading API ``{"code", "message", ...}``; data API only ``message``.

    Context fields (``available``, ``held_for_orders``, ``buying_power`` ...) are kept.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    code: int | None = None
    message: str = ""

    @field_validator("code", mode="before")
    @classmethod
    def _lenient_code(cls, value: Any) -> Any:
        if isinstance(value, str):
            return int(value) if value.strip().isdigit() else None
        return value

    @field_validator("message", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return "" if value is None else str(value)


class MultiStatusItem(BrokerModel):
    """One item of a 207 Multi-Status body (cancel-all: ``id``; close-all: ``symbol``)."""

    id: str | None = None
    symbol: str | None = None
    status: int
    body: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _names_something(self) -> MultiStatusItem:
        if not self.id and not self.symbol:
            raise ValueError("multi-status item has neither id nor symbol")
        return self

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def order(self) -> Order | None:
        """The order in a successful item's body (close-all), if the body is a usable order.

        An unreadable order is reported (ERROR ``broker_item_dropped``) and read as None.
        """
        if not self.ok or not self.body or "client_order_id" not in self.body:
            return None
        try:
            return Order.model_validate(self.body)
        except ValidationError as exc:
            report_dropped("Order", f"207 item {self.symbol or self.id}", None, self.body, exc)
            return None

    @property
    def error(self) -> ErrorBody | None:
        if self.ok:
            return None
        return ErrorBody.model_validate(self.body or {})


class ApiResponse(BaseModel):
    """What :meth:`api_gateway.ResilientAlpacaGateway.request` returns; it never raises.

    ``status`` is the HTTP status, or 0 when no response arrived. ``error_type`` says what
    went wrong: ``"http"`` (an error status), ``"network"`` (timeout, reset, refused),
    ``"malformed"`` (a body that is not the expected JSON), ``"redirect"`` (3xx), ``"closed"``
    (the HTTP session was already closed).
    ``outcome_unknown`` is True when the broker may have acted on the request anyway
    (timeout or reset after sending, 5xx, unreadable 2xx).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    success: bool
    status: int
    data: Any = None
    error_code: int | None = None
    message: str = ""
    request_id: str | None = None
    error_type: str | None = None
    retry_after: float | None = None
    outcome_unknown: bool = False
    method: str = ""
    path: str = ""

    @property
    def error_body(self) -> ErrorBody:
        return ErrorBody.model_validate(self.data if isinstance(self.data, dict) else {})

    def error(self, *, for_order: bool = False) -> errors.BrokerError | None:
        """The core/errors.py exception this response stands for, or None on success.

        HTTP errors are classified by :mod:`broker.broker_errors` from the status, Alpaca's ``code``
        and the request (``method`` and ``path``); never by the message text.
        ``for_order``: a response without a path came from a request that would have created
        or changed an order (an otherwise unclassified 4xx is then a rejection).
        """
        if self.success:
            return None
        where = f"{self.method} {self.path}".strip()
        text = self.message or "broker error"
        message = f"{where}: {text}" if where else text
        body = self.data if isinstance(self.data, dict) else None
        kw: dict[str, Any] = {
            "status": self.status or None,
            "code": self.error_code,
            "request_id": self.request_id,
            "body": body,
        }
        if self.error_type == "network":
            return errors.BrokerUnavailable(message, **kw)
        if self.error_type == "malformed":
            return errors.MalformedResponse(message, **kw)
        if self.error_type in ("redirect", "closed"):
            return errors.OperationalError(message, **kw)
        kind = broker_errors.request_kind(self.method, self.path, for_order=for_order)
        return broker_errors.exception_for(
            self.status, self.error_code, kind, body=body, broker_message=self.message,
            message=message, kw=kw, retry_after=self.retry_after,
        )

    def raise_for_error(self, *, for_order: bool = False) -> ApiResponse:
        """Raise the matching core/errors.py exception unless successful; returns self for chaining."""
        problem = self.error(for_order=for_order)
        if problem is not None:
            raise problem
        return self


PDT_CODE = broker_errors.CODE_PDT
