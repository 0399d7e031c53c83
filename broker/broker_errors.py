"""The one error taxonomy: Alpaca's (HTTP status, ``code``, request) -> what the caller does.

Every broker error answer passes :func:`classify` exactly once (``models.ApiResponse.error``
calls it), and the result is one of the exception classes of :mod:`core.errors`, whose
``category`` tells the caller what to do:

* ``temporary``: back off and retry within the rate budget (429, 408, 5xx; network failures
  and unreadable bodies are classified before this table, by ``ApiResponse``);
* ``outcome``: a fact about the order or position, not a failure (a cancel of an order that
  is already final, an id the broker does not know): re-read and go on from the true state;
* ``rejection``: the intent is refused and nothing was created: log it, veto it, maybe block
  the symbol (PDT);
* ``operational``: bad keys, an unknown answer: skip the action, log the raw status, code and
  message at ERROR, alert; a run of them reduces trading (never ends the daemon).

Why the request is part of the key: Alpaca reuses codes. ``42210000`` is "order is already in
\\"filled\\" state" on ``DELETE /v2/orders/{id}`` but a business-rule refusal (sub-penny price,
wash trade, bracket rules) on ``POST /v2/orders``; ``40010001`` is "client_order_id must be
unique" or any validation error on a POST, and "order_id is missing" (a malformed id) on a
request addressed to one order; ``404`` after a cancel is an outcome, on a submit it refuses
the intent. So :func:`request_kind` names the request from its method and path, and the rule
for (status, code, request kind) decides.

Message text never decides the category. It is read in exactly one place,
:func:`refine_rejection`, and only to pick *which* :class:`core.errors.OrderRejected` subclass a
rejection is, where Alpaca gives several rejections one (status, code): ``403 40310000``
(insufficient quantity, buying power, wash trade, shorting ...), ``422 42210000`` (wash trade
or an order rule) and ``422 40010001`` (duplicate ``client_order_id`` or validation). The
body's own context fields (``held_for_orders``/``available``, ``buying_power``/``cost_basis``)
are preferred to the text. Whatever the text says, the answer stays a rejection: a subclass
only steers logging and the executor's next step (free the shares, look the order up by
``client_order_id``). Messages are otherwise kept for logs only. (One more reader of text
lives outside this table: the market data API answers a free plan's SIP request with a
code-less 403 "subscription does not permit ...", which the gateway answers by retrying on
IEX once; the 403 itself is classified here like any other.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from core import errors

ANY: Final = -1  # a status or code wildcard in RULES

CODE_VALIDATION: Final = 40010001
CODE_UNAUTHORIZED: Final = 40110000
CODE_FORBIDDEN: Final = 40310000
CODE_PDT: Final = 40310100
CODE_NOT_FOUND: Final = 40410000
CODE_UNPROCESSABLE: Final = 42210000
NO_CODE: Final = None  # the body carries no ``code`` (market data API, some gateway errors)


class RequestKind(str, Enum):
    """What a request was trying to do, from its method and path (:func:`request_kind`)."""

    SUBMIT = "submit"  # POST /v2/orders
    REPLACE = "replace"  # PATCH /v2/orders/{id}
    CANCEL = "cancel"  # DELETE /v2/orders/{id}, DELETE /v2/orders
    CLOSE = "close"  # DELETE /v2/positions/{symbol}, DELETE /v2/positions
    ORDER_READ = "order_read"  # GET /v2/orders/{id}, GET /v2/orders:by_client_order_id
    READ = "read"  # any other trading API read (account, positions, order lists, clock ...)
    DATA = "data"  # the market data API


ORDER_CHANGES: Final = frozenset({RequestKind.SUBMIT, RequestKind.REPLACE, RequestKind.CLOSE})
ONE_ORDER: Final = frozenset({RequestKind.CANCEL, RequestKind.REPLACE, RequestKind.ORDER_READ})
EVERY: Final = frozenset(RequestKind)
TRADING: Final = EVERY - {RequestKind.DATA}

_ORDER_ID_PATH = re.compile(r"^/v2/orders/[^/]+$")
_POSITION_PATH = re.compile(r"^/v2/positions(/[^/]+)?$")
_DATA_PREFIXES = ("/v2/stocks", "/v1beta1", "/v1beta3", "/v2/options", "/v1/")


def request_kind(method: str, path: str, *, for_order: bool = False) -> RequestKind:
    """The kind of request ``method path`` is. An unknown request (no path) is a READ, or a
    SUBMIT when the caller says it would have created or changed an order (``for_order``)."""
    method = method.upper()
    path = path.split("?", 1)[0]
    if path.startswith(_DATA_PREFIXES):
        return RequestKind.DATA
    if path == "/v2/orders":
        if method == "POST":
            return RequestKind.SUBMIT
        if method == "DELETE":
            return RequestKind.CANCEL
    if _ORDER_ID_PATH.match(path) and not path.startswith("/v2/orders:"):
        if method == "DELETE":
            return RequestKind.CANCEL
        if method == "PATCH":
            return RequestKind.REPLACE
        return RequestKind.ORDER_READ
    if path.startswith("/v2/orders:by_client_order_id"):
        return RequestKind.ORDER_READ
    if _POSITION_PATH.match(path) and method == "DELETE":
        return RequestKind.CLOSE
    if not path and for_order:
        return RequestKind.SUBMIT
    return RequestKind.READ


@dataclass(frozen=True)
class Rule:
    """One row of the taxonomy: (status, code, request kinds) -> exception class.

    ``status`` and ``code`` are exact values, ``ANY``, or (status only) a ``range``; ``code``
    may be ``NO_CODE`` for a body without one. ``refine``: the row is one of Alpaca's shared
    rejection codes whose subclass :func:`refine_rejection` picks (see the module docstring).
    """

    name: str
    status: int | range
    code: int | None
    kinds: frozenset[RequestKind]
    error: type[errors.BrokerError]
    meaning: str
    refine: bool = False

    def matches(self, status: int, code: int | None, kind: RequestKind) -> bool:
        if kind not in self.kinds:
            return False
        if isinstance(self.status, range):
            if status not in self.status:
                return False
        elif self.status != ANY and self.status != status:
            return False
        return self.code == ANY or self.code == code

    @property
    def category(self) -> errors.ErrorCategory:
        return self.error.category


# First match wins. Bodies: shared/reference/alpaca-api.md section 1.4 and tests/test_error_taxonomy.py.
RULES: Final[tuple[Rule, ...]] = (
    # temporary ---------------------------------------------------------------------------
    Rule("rate_limited", 429, ANY, EVERY, errors.RateLimited,
         "429 rate limit exceeded (Retry-After / X-RateLimit-Reset honoured)"),
    Rule("request_timeout", 408, ANY, EVERY, errors.ServerError, "408: the broker timed out"),
    Rule("server_error", range(500, 600), ANY, EVERY, errors.ServerError, "5xx internal error"),
    # operational: the keys ----------------------------------------------------------------
    Rule("unauthorized", 401, ANY, EVERY, errors.AuthenticationFailed,
         "401 40110000 request is not authorized (wrong keys or environment)"),
    Rule("unauthorized_code", ANY, CODE_UNAUTHORIZED, EVERY, errors.AuthenticationFailed,
         "40110000 under another status"),
    Rule("forbidden_data", 403, NO_CODE, frozenset({RequestKind.DATA}), errors.AuthenticationFailed,
         "403 without code from the data API: the subscription does not permit it "
         "(the gateway first falls back from SIP to IEX)"),
    Rule("forbidden", 403, NO_CODE, TRADING, errors.AuthenticationFailed,
         '403 {"message": "forbidden."}: the keys may not use this endpoint'),
    # outcomes: facts about an order or position --------------------------------------------
    Rule("already_final", 422, CODE_UNPROCESSABLE, frozenset({RequestKind.CANCEL}),
         errors.OrderNotCancelable, 'cancel: order is already in "filled" (canceled, expired ...) state'),
    Rule("not_found", 404, ANY, EVERY - {RequestKind.SUBMIT}, errors.NotFound,
         "404 40410000 order not found / position does not exist / asset not found"),
    Rule("malformed_order_id", 422, CODE_VALIDATION, ONE_ORDER, errors.NotFound,
         "422 40010001 order_id is missing: a malformed id names no order"),
    # rejections: the intent is refused ----------------------------------------------------
    Rule("pdt", 403, CODE_PDT, ORDER_CHANGES, errors.PatternDayTraderRejected,
         "403 40310100 trade denied due to pattern day trading protection"),
    Rule("forbidden_order", 403, CODE_FORBIDDEN, ORDER_CHANGES, errors.OrderRejected,
         "403 40310000 insufficient qty / buying power, wash trade, shorting not allowed, "
         "account not authorized to trade", refine=True),
    Rule("order_rule", 422, CODE_UNPROCESSABLE, frozenset({RequestKind.SUBMIT, RequestKind.REPLACE}),
         errors.OrderRejected, "422 42210000 wash trade, sub-penny price, bracket rules, not tradable",
         refine=True),
    Rule("order_validation", 422, CODE_VALIDATION, frozenset({RequestKind.SUBMIT}), errors.OrderRejected,
         "422 40010001 client_order_id must be unique, or another validation error", refine=True),
    Rule("submit_not_found", 404, ANY, frozenset({RequestKind.SUBMIT}), errors.OrderRejected,
         "404 on a submit (asset not found): the intent is refused"),
    Rule("bad_order_request", 400, ANY, ORDER_CHANGES, errors.OrderRejected,
         "400 one of the request parameters is invalid"),
    Rule("other_order_refusal", range(400, 500), ANY, ORDER_CHANGES, errors.OrderRejected,
         "any other 4xx to an order request: refused, nothing created (logged raw)"),
)

UNKNOWN = Rule("unknown", ANY, ANY, EVERY, errors.UnclassifiedBrokerError,
               "a (status, code) not known for this request: skip the action, log it raw, alert")


def rule_for(status: int, code: int | None, kind: RequestKind) -> Rule:
    """The first rule of :data:`RULES` that matches, else :data:`UNKNOWN`."""
    for rule in RULES:
        if rule.matches(status, code, kind):
            return rule
    return UNKNOWN


def refine_rejection(body: Mapping[str, Any] | None, message: str) -> type[errors.OrderRejected]:
    """Which rejection a shared rejection code means: body fields first, then the text.

    Only ever called for a rule with ``refine=True``; it cannot change the category.
    """
    fields = body or {}
    if "held_for_orders" in fields or "available" in fields:
        return errors.InsufficientQuantity
    if "buying_power" in fields or "cost_basis" in fields:
        return errors.InsufficientBuyingPower
    text = message.lower()
    if "insufficient qty" in text:
        return errors.InsufficientQuantity
    if "buying power" in text:
        return errors.InsufficientBuyingPower
    if "wash trade" in text:
        return errors.WashTradeRejected
    if "client_order_id must be unique" in text:
        return errors.DuplicateClientOrderId
    return errors.OrderRejected


def classify(
    status: int, code: int | None, kind: RequestKind, body: Mapping[str, Any] | None = None,
    message: str = "",
) -> tuple[Rule, type[errors.BrokerError]]:
    """The rule an HTTP error answer falls under and the exception class it becomes."""
    rule = rule_for(status, code, kind)
    if rule.refine:
        return rule, refine_rejection(body, message)
    return rule, rule.error


def exception_for(
    status: int,
    code: int | None,
    kind: RequestKind,
    *,
    body: Mapping[str, Any] | None,
    broker_message: str,
    message: str,
    kw: dict[str, Any],
    retry_after: float | None = None,
) -> errors.BrokerError:
    """The :mod:`core.errors` exception for an HTTP error answer (``kw``: status, code, request_id,
    body for the exception; ``message``: the text it carries, for logs)."""
    _, error = classify(status, code, kind, body, broker_message)
    if error is errors.RateLimited:
        return errors.RateLimited(message, retry_after=retry_after, **kw)
    return error(message, **kw)


__all__ = [
    "ANY", "NO_CODE", "RULES", "UNKNOWN", "RequestKind", "Rule", "classify", "exception_for",
    "refine_rejection", "request_kind", "rule_for",
]
