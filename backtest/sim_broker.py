"""``InProcessBroker``: the :class:`broker.interface.Broker` over the simulator core, without sockets.

A backtest must trade through exactly the code that trades live. So this adapter is the
HTTP gateway (:class:`api_gateway.ResilientAlpacaGateway`) with one thing replaced: its
:meth:`request` hands the call to the simulator core's route method (the same method the
simulator's HTTP server calls) instead of sending it over a socket. Everything above that
line is the gateway's own code, unchanged:

* query parameters are encoded by ``api_gateway.encode_params`` (the core receives the same
  strings it would receive over HTTP), order bodies by ``OrderRequest.to_payload``;
* answers are parsed by the gateway's typed methods into the same pydantic models
  (``models.Account``, ``Order``, ``Position`` ...), 207 answers by its multi-status parser;
* a refusal (``simulator.errors.SimApiError``) goes through the gateway's response builder
  and ``models.ApiResponse.error`` into the same ``core/errors.py`` exceptions
  (``InsufficientQuantity``, ``PatternDayTraderRejected``, ``NotFound`` ...), and idempotent
  submission, ``get_position`` -> None on 404, cancel-of-a-canceled-order handling all run as
  they do against Alpaca.

What is deliberately absent in-process: the network (no retries, no timeouts), the rate
limiter (it would otherwise sleep on the simulated clock and move market time) and JSON
serialisation of successful answers (plain dicts go straight to pydantic; error bodies are
serialised so that the gateway's own builder reads them). A bug inside the core is not
turned into an HTTP 500: it propagates, so a backtest never hides an engine failure.

``request_count`` counts every call, as the gateway counts HTTP requests. The core is
brought up to its clock (``core.sync()``) before every call, as the server does.

Commission (:class:`CommissionModel`, attached with :func:`attach_commission`): Alpaca charges
no commission on US equities, so the default is zero. A backtest may model a broker that
does: ``per_share`` dollars per share, at least ``minimum`` per execution, at most
``max_fraction`` of the execution's value (when set). Every execution (a partial fill is its
own execution) is charged in cash at the moment it fills, in the simulator's ledger, so
equity, buying power and the account history include it. Regulatory fees (SEC, FINRA TAF)
are not modelled. Slippage is the engine's (``slippage_bps`` on market and stop fills, on top
of the quoted spread): see ``simulator/engine.py``.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import structlog

from api_gateway import ResilientAlpacaGateway, encode_params
from broker.models import ApiResponse
from simulator.accounts import FillEffect, Ledger, LedgerEntry
from simulator.core import SimulatorCore
from simulator.errors import SimApiError
from simulator.wire import money

log = structlog.get_logger(__name__)

#: A loopback URL: the gateway's constructor insists on one without API keys. Never dialled.
IN_PROCESS_URL = "http://127.0.0.1"

Params = dict[str, str]
Handler = Callable[[SimulatorCore, "re.Match[str]", Params, Any], Any]

_NOT_FOUND = {"code": 40410000, "message": "endpoint not found"}
ZERO = Decimal(0)
CENT = Decimal("0.01")


# -- commission --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommissionModel:
    """What one execution costs: ``per_share x qty``, at least ``minimum``, at most
    ``max_fraction`` of ``qty x price`` (when given); rounded to the cent. Zero by default
    (Alpaca is commission-free for US equities)."""

    per_share: Decimal = ZERO
    minimum: Decimal = ZERO
    max_fraction: Decimal | None = None

    def __post_init__(self) -> None:
        for name in ("per_share", "minimum"):
            value = Decimal(str(getattr(self, name)))
            if not value.is_finite() or value < 0:
                raise ValueError(f"commission {name} must be a non-negative amount, got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        if self.max_fraction is not None:
            cap = Decimal(str(self.max_fraction))
            if not cap.is_finite() or not 0 < cap <= 1:
                raise ValueError(f"commission max_fraction must be in (0, 1], got {self.max_fraction!r}")
            object.__setattr__(self, "max_fraction", cap)

    @property
    def is_free(self) -> bool:
        return self.per_share == 0 and self.minimum == 0

    def fee(self, qty: Decimal, price: Decimal) -> Decimal:
        """The commission of one execution of ``qty`` shares at ``price``."""
        if self.is_free or qty <= 0:
            return ZERO
        fee = max(self.per_share * abs(qty), self.minimum)
        if self.max_fraction is not None:
            fee = min(fee, self.max_fraction * abs(qty) * price)
        return fee.quantize(CENT, rounding=ROUND_HALF_UP)

    def describe(self) -> str:
        if self.is_free:
            return "none (Alpaca: commission-free)"
        text = f"${self.per_share} per share, minimum ${self.minimum} per execution"
        if self.max_fraction is not None:
            text += f", at most {self.max_fraction * 100}% of the execution value"
        return text


@dataclass(frozen=True)
class Charge:
    """One commission charged: which execution (symbol, side, time, qty, price) and the fee."""

    symbol: str
    side: str
    at: datetime
    qty: Decimal
    price: Decimal
    fee: Decimal


@dataclass
class CommissionLedger(Ledger):
    """The simulator's ledger, charging :class:`CommissionModel` on every execution.

    The fee is booked as its own cash entry at the execution's time (quantity 0), so the
    account's equity history (``state_at``) includes it. ``charges`` lists every fee.
    """

    model: CommissionModel = field(default_factory=CommissionModel)
    charges: list[Charge] = field(default_factory=list)

    def apply_fill(self, symbol: str, side: str, qty: Decimal, price: Decimal, at: datetime) -> FillEffect:
        effect = super().apply_fill(symbol, side, qty, price, at)
        fee = self.model.fee(qty, price)
        if fee > 0:
            self.cash -= fee
            self._seq += 1
            bisect.insort(self.journal, LedgerEntry(at, self._seq, symbol, ZERO, -fee), key=lambda e: (e.time, e.seq))
            self.charges.append(Charge(symbol, side, at, qty, price, fee))
        return effect

    @property
    def total(self) -> Decimal:
        """Every fee charged so far."""
        return sum((c.fee for c in self.charges), ZERO)


def attach_commission(core: SimulatorCore, model: CommissionModel) -> CommissionLedger:
    """Make the core's broker charge ``model`` from now on; returns the ledger (for its
    ``charges``). Call before the first order: the ledger's cash and positions are kept."""
    old = core.broker.ledger
    ledger = CommissionLedger(cash=old.cash, initial_cash=old.initial_cash, positions=old.positions,
                              journal=old.journal, _seq=old._seq, model=model)
    core.broker.ledger = ledger
    return ledger


def _endpoint(method: str, pattern: str, handler: Handler, status: int = 200) -> tuple[str, re.Pattern[str], Handler, int]:
    return method, re.compile(f"^{pattern}$"), handler, status


def _data(name: str, single: bool) -> Handler:
    if single:
        return lambda core, m, params, body: getattr(core.data, name)(m["symbol"], params)
    return lambda core, m, params, body: getattr(core.data, name)(params)


def _activities_of_type(core: SimulatorCore, m: re.Match[str], params: Params, body: Any) -> Any:
    return core.broker.activities({**params, "activity_types": m["kind"]})


_SYMBOL = r"(?P<symbol>[^/]+)"
_ORDER_ID = r"(?P<order_id>[^/:]+)"

#: (method, path pattern, core call, success status): the simulator server's route table.
ROUTES: tuple[tuple[str, re.Pattern[str], Handler, int], ...] = (
    _endpoint("GET", "/v2/account", lambda c, m, p, b: c.broker.get_account()),
    _endpoint("GET", "/v2/account/configurations", lambda c, m, p, b: c.broker.get_account_configurations()),
    _endpoint("PATCH", "/v2/account/configurations", lambda c, m, p, b: c.broker.patch_account_configurations(b)),
    _endpoint("GET", "/v2/account/activities", lambda c, m, p, b: c.broker.activities(p)),
    _endpoint("GET", r"/v2/account/activities/(?P<kind>[^/]+)", _activities_of_type),
    _endpoint("GET", "/v2/account/portfolio/history", lambda c, m, p, b: c.broker.portfolio_history(p)),
    _endpoint("GET", "/v2/clock", lambda c, m, p, b: c.broker.clock_json()),
    # Looked up on the class: the instance keeps its TradingCalendar under the same name.
    _endpoint("GET", "/v2/calendar", lambda c, m, p, b: type(c.broker).calendar(c.broker, p)),
    _endpoint("GET", "/v2/assets", lambda c, m, p, b: c.broker.assets(p)),
    _endpoint("GET", f"/v2/assets/{_SYMBOL}", lambda c, m, p, b: c.broker.asset(m["symbol"])),
    _endpoint("GET", "/v2/orders", lambda c, m, p, b: c.broker.list_orders(p)),
    _endpoint("POST", "/v2/orders", lambda c, m, p, b: c.broker.submit_order(b)),
    _endpoint("DELETE", "/v2/orders", lambda c, m, p, b: c.broker.cancel_all(), 207),
    _endpoint("GET", "/v2/orders:by_client_order_id", lambda c, m, p, b: c.broker.get_order_by_client_id(p)),
    _endpoint("GET", f"/v2/orders/{_ORDER_ID}", lambda c, m, p, b: c.broker.get_order(m["order_id"], p)),
    _endpoint("PATCH", f"/v2/orders/{_ORDER_ID}", lambda c, m, p, b: c.broker.replace_order(m["order_id"], b)),
    _endpoint("DELETE", f"/v2/orders/{_ORDER_ID}", lambda c, m, p, b: c.broker.cancel_order(m["order_id"]), 204),
    _endpoint("GET", "/v2/positions", lambda c, m, p, b: c.broker.list_positions()),
    _endpoint("DELETE", "/v2/positions", lambda c, m, p, b: c.broker.close_all(p), 207),
    _endpoint("GET", f"/v2/positions/{_SYMBOL}", lambda c, m, p, b: c.broker.get_position(m["symbol"])),
    _endpoint("DELETE", f"/v2/positions/{_SYMBOL}", lambda c, m, p, b: c.broker.close_position(m["symbol"], p)),
    _endpoint("GET", "/v2/stocks/bars", _data("bars", False)),
    _endpoint("GET", "/v2/stocks/bars/latest", _data("latest_bars", False)),
    _endpoint("GET", "/v2/stocks/quotes/latest", _data("latest_quotes", False)),
    _endpoint("GET", "/v2/stocks/trades/latest", _data("latest_trades", False)),
    _endpoint("GET", "/v2/stocks/snapshots", _data("snapshots", False)),
    _endpoint("GET", f"/v2/stocks/{_SYMBOL}/bars", _data("symbol_bars", True)),
    _endpoint("GET", f"/v2/stocks/{_SYMBOL}/bars/latest", _data("symbol_latest_bar", True)),
    _endpoint("GET", f"/v2/stocks/{_SYMBOL}/quotes/latest", _data("symbol_latest_quote", True)),
    _endpoint("GET", f"/v2/stocks/{_SYMBOL}/trades/latest", _data("symbol_latest_trade", True)),
    _endpoint("GET", f"/v2/stocks/{_SYMBOL}/snapshot", _data("symbol_snapshot", True)),
    _endpoint("GET", "/v1beta1/news", _data("news", False)),
)


def _route(method: str, path: str) -> tuple[Handler, int, re.Match[str]] | None:
    key = (method, path)
    found = _ROUTED.get(key)
    if found is None and key not in _ROUTED:
        for verb, pattern, handler, status in ROUTES:
            if verb != method:
                continue
            match = pattern.match(path)
            if match is not None:
                found = handler, status, match
                break
        if len(_ROUTED) >= _ROUTED_LIMIT:  # paths with order ids and symbols: keep it bounded
            _ROUTED.clear()
        _ROUTED[key] = found
    return found


#: (method, path) -> what :func:`_route` found (a backtest asks the same few paths all run).
_ROUTED: dict[tuple[str, str], tuple[Handler, int, re.Match[str]] | None] = {}
_ROUTED_LIMIT = 4096


@dataclass(frozen=True)
class BookState:
    """The simulated book at one moment (read from the core, for backtest shortcuts)."""

    positions: dict[str, Decimal]
    open_order_ids: frozenset[str]
    last_fill_at: datetime | None
    cash: Decimal

    def fills_recorded(self, recorded_until: datetime | None) -> bool:
        """Whether every fill happened no later than ``recorded_until`` (a fill cursor)."""
        return self.last_fill_at is None or (recorded_until is not None and self.last_fill_at <= recorded_until)


class InProcessBroker(ResilientAlpacaGateway):
    """The broker interface over a :class:`simulator.core.SimulatorCore` in this process.

    ``InProcessBroker(core)``; use it like the gateway (``async with`` is accepted and
    harmless). ``max_quote_age`` and ``data_feed`` mean what they mean for the gateway.
    """

    def __init__(self, core: SimulatorCore, *, max_quote_age: float = 900, data_feed: str | None = "iex") -> None:
        super().__init__(
            base_url=IN_PROCESS_URL,
            data_url=IN_PROCESS_URL,
            key_id=None,
            secret_key=None,
            mode="backtest",
            max_retries=0,
            max_quote_age=max_quote_age,
            data_feed=data_feed,
            clock=core.clock,
            sleep=core.clock.sleep,
        )
        self.core = core

    def __repr__(self) -> str:
        return f"InProcessBroker(now={self.core.clock.now().isoformat()}, request_count={self.request_count})"

    # -- lifecycle: nothing to open or close --------------------------------------------------

    async def __aenter__(self) -> InProcessBroker:
        return self

    async def close(self) -> None:
        """Nothing to release: there is no HTTP session."""

    # -- the one replaced method ----------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,  # noqa: A002 - the gateway's parameter name
        data_api: bool = False,
        emergency: bool = False,
        idempotent: bool = True,
    ) -> ApiResponse:
        """Answer one API call from the core; same contract as the gateway's (never raises
        for a broker refusal: the answer carries it)."""
        method = method.upper()
        self.request_count += 1
        query = encode_params(params) if params else {}
        found = _route(method, path)
        if found is None:
            return self._error(method, path, 404, dict(_NOT_FOUND))
        handler, status, match = found
        self.core.sync()
        try:
            payload = handler(self.core, match, query, json if json is not None else {})
        except SimApiError as exc:
            return self._error(method, path, exc.status, exc.body)
        base: dict[str, Any] = {"status": status, "request_id": None, "method": method, "path": path}
        if status == 207:
            return self._multi_status(payload, base)
        if status == 204 or payload is None:
            return ApiResponse(success=True, data=None, **{**base, "status": 204})
        return ApiResponse(success=True, data=payload, **base)

    # -- what a backtest reads of the book directly (not requests: not counted) -------------

    def book(self) -> BookState:
        """The simulated book as it is: positions, open order ids, the last fill's time."""
        broker = self.core.broker
        entries = broker.ledger.journal
        return BookState(
            positions={symbol: p.qty for symbol, p in broker.ledger.positions.items()},
            open_order_ids=frozenset(broker._open),  # the engine's open-order book
            last_fill_at=entries[-1].time if entries else None,
            cash=broker.ledger.cash,
        )

    def book_can_change(self, until: datetime) -> bool:
        """:meth:`simulator.engine.SimBroker.book_can_change`: whether moving the book on to
        ``until`` might change any order or position (conservative)."""
        return bool(self.core.broker.book_can_change(until))

    def session_range(self, symbol: str, session: date) -> tuple[float, float] | None:
        """(low, high) bounding every price of ``symbol`` on ``session``, when known without
        expanding minute bars (:meth:`simulator.market.Market.session_range`)."""
        return self.core.market.session_range(symbol, session)

    def last_trade_price(self, symbol: str) -> float | None:
        """The latest trade's price now, as ``GET /v2/stocks/trades/latest`` serves it."""
        self.core.sync()
        return self.core.market.price_at(symbol, self.core.clock.now())

    def equity_now(self) -> Decimal:
        """The account's ``equity`` now, exactly as ``GET /v2/account`` reports it (to the
        cent), without building the rest of the account."""
        now = self.core.broker._sync()
        return Decimal(money(self.core.broker.account.summary(now).equity))

    def positions_now(self) -> list[dict[str, Any]]:
        """``GET /v2/positions`` as the core answers it (plain dicts, not parsed)."""
        self.core.sync()
        return self.core.broker.list_positions()

    def _error(self, method: str, path: str, status: int, body: dict[str, Any]) -> ApiResponse:
        """A refusal, read by the gateway's own response builder (so it maps identically)."""
        payload = json.dumps(body, separators=(",", ":"), default=str).encode()
        return self._build_response(method, path, status, {}, payload)
