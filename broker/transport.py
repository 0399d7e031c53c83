"""HttpTransport: one Alpaca API call over HTTP, retried, rate-limited, capped and redacted.

One job: send a request and hand back an :class:`broker.models.ApiResponse`, never an
exception, whatever HTTP, the network or the body does. What that takes lives here so the
gateway (:class:`api_gateway.ResilientAlpacaGateway`, which owns one transport) can be about
the broker's operations instead:

* the aiohttp session (created and closed here unless one is injected), with aiohttp's own
  silent resend switched off, so every resend is decided here and counted in
  :attr:`HttpTransport.request_count`;
* retries: 429 always, connection failures before sending, and, for idempotent calls,
  timeouts, resets, 408 and 5xx, with exponential backoff and jitter; ``Retry-After`` (seconds
  or an HTTP date) and ``X-RateLimit-Reset`` are honoured, read against the wall clock as the
  broker stamps them; every wait is on the injected ``sleep`` (wall time), never on a clock
  that asks the broker, so a retry can never nest inside another retry;
* the rate limiter: every attempt passes it, a 429 pauses it, and ``X-RateLimit-Remaining``
  and ``-Reset`` hand it the broker's own count (trading and market data separately);
* the response size cap (:data:`MAX_RESPONSE_BYTES`): a bigger body is refused unread;
* turning status and body into an ApiResponse (2xx success, 204 empty, 207 parsed item by item,
  3xx refused, 4xx/5xx carrying Alpaca's code for :mod:`broker.broker_errors` to map);
* redaction: the API keys never appear in a message or an error body handed upwards.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import structlog
from pydantic import SecretStr

from broker.models import ApiResponse, MultiStatusItem
from broker.parsing import TolerantParser
from broker.rate_limit import RateLimiter
from core import clock as clock_module

log = structlog.get_logger(__name__)

MAX_RATE_LIMIT_WAIT = 120.0
#: Largest response body read (16 MiB; Alpaca's biggest pages are a few MiB). A bigger one is
#: refused unread, past the cap, as a malformed answer: a broker (or a proxy) sending
#: hundreds of MiB must not take the daemon's memory with it.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_READ_CHUNK = 64 * 1024
_REDACTED = "[REDACTED]"
#: Paths of the market data API (its rate budget is counted apart from trading's).
_DATA_PATHS = ("/v2/stocks", "/v1beta1/", "/v1beta3/", "/v2/options")


class HttpTransport:
    """Sends API calls for one gateway: retries, rate limit, size cap, response building.

    ``parser`` reads the items of a 207 answer (and counts the ones it drops); ``sleep`` is
    the backoff wait (wall time, injectable so tests never wait); ``wall_time`` (UNIX
    seconds) dates the broker's ``X-RateLimit-Reset`` and ``Retry-After``.
    """

    def __init__(
        self,
        *,
        base_url: str,
        data_url: str,
        key_id: SecretStr | None,
        secret_key: SecretStr | None,
        timeout: float,
        max_retries: int,
        backoff_base: float,
        backoff_max: float,
        limiter: RateLimiter,
        parser: TolerantParser,
        session: aiohttp.ClientSession | None,
        sleep: Callable[[float], Awaitable[None]],
        wall_time: Callable[[], float],
    ) -> None:
        self.base_url = base_url
        self.data_url = data_url
        self._key_id = key_id
        self._secret_key = secret_key
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self._backoff_base = float(backoff_base)
        self._backoff_max = float(backoff_max)
        self.limiter = limiter
        self._parser = parser
        self._session = session
        self._owns_session = session is None
        self._sleep = sleep
        self._wall_time = wall_time
        self.request_count = 0
        #: Told of every exchange as (method, path, status, response headers); status 0 when
        #: nothing answered. The daemon's metrics (ops.telemetry) count requests with it.
        self.observer: Callable[[str, str, int, Mapping[str, str]], None] | None = None

    # -- session ---------------------------------------------------------------------------

    def ensure_session(self) -> aiohttp.ClientSession:
        """The session, created (and owned) here when none was injected or ours was closed."""
        if self._session is None or (self._owns_session and self._session.closed):
            session = aiohttp.ClientSession()
            # aiohttp silently resends GET/PUT/DELETE once when the server drops the
            # connection. The transport decides about every resend itself (a partial close
            # must never be sent twice, and request_count must count what was sent), so
            # switch that off on the session it owns. aiohttp's own test client does the same.
            if hasattr(session, "_retry_connection"):
                session._retry_connection = False
            self._session = session
            self._owns_session = True
        return self._session

    async def close(self) -> None:
        """Close the HTTP session if this transport created it (an injected one is left open)."""
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()

    # -- the call, with retries ------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        json: Any,
        data_api: bool,
        emergency: bool,
        idempotent: bool,
        max_retries: int | None,
    ) -> ApiResponse:
        """Send one API call (``params`` already encoded) with retries; never raises for
        HTTP, network or JSON problems (see :meth:`api_gateway.ResilientAlpacaGateway.request`)."""
        method = method.upper()
        url = (self.data_url if data_api else self.base_url) + path
        query = dict(params) if params else None
        retries = self.max_retries if max_retries is None else max(0, int(max_retries))
        api = "data" if data_api else "trading"
        attempt = 0
        while True:
            attempt += 1
            await self.limiter.acquire(emergency=emergency, api=api)
            response, sent = await self._send_once(method, url, path, query, json)
            if response.success:
                return response
            if response.status == 429:
                self.limiter.note_rate_limited(response.retry_after)
            delay = self._retry_delay(response, attempt, idempotent, sent)
            if delay is None:
                return response
            if attempt > retries:
                log.warning(
                    "broker_request_failed",
                    method=method,
                    path=path,
                    status=response.status,
                    attempts=attempt,
                    reason=response.message,
                )
                return response
            log.warning(
                "broker_retry",
                attempt=attempt,
                status=response.status,
                delay=round(delay, 3),
                method=method,
                path=path,
                reason=response.message,
            )
            await self._sleep(delay)

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: between half and all of base x 2^(attempt-1)."""
        ceiling = min(self._backoff_max, self._backoff_base * (2 ** max(attempt - 1, 0)))
        return ceiling * (0.5 + random.random() / 2)

    def _retry_delay(
        self, response: ApiResponse, attempt: int, idempotent: bool, sent: bool
    ) -> float | None:
        if response.status == 429:
            return response.retry_after if response.retry_after is not None else self.backoff(attempt)
        if response.error_type == "network":
            return self.backoff(attempt) if (idempotent or not sent) else None
        if response.error_type == "http" and (response.status >= 500 or response.status == 408):
            return self.backoff(attempt) if idempotent else None
        return None

    # -- one exchange ----------------------------------------------------------------------

    def credentials(self) -> tuple[str, str] | None:
        """The key pair, for a stream's in-band authentication (None when none is set)."""
        if self._key_id is None or self._secret_key is None:
            return None
        return self._key_id.get_secret_value(), self._secret_key.get_secret_value()

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._key_id is not None and self._secret_key is not None:
            headers["APCA-API-KEY-ID"] = self._key_id.get_secret_value()
            headers["APCA-API-SECRET-KEY"] = self._secret_key.get_secret_value()
        return headers

    async def _send_once(
        self,
        method: str,
        url: str,
        path: str,
        query: dict[str, str] | None,
        body: Any,
    ) -> tuple[ApiResponse, bool]:
        """One HTTP exchange; returns (response, whether the request may have been sent)."""
        session = self.ensure_session()
        if session.closed:
            return self._failure(method, path, "closed", "HTTP session is closed", False), False
        self.request_count += 1
        answered = False
        try:
            async with session.request(
                method,
                url,
                params=query,
                json=body,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as resp:
                answered = True
                self._observe(method, path, resp.status, resp.headers)
                payload = await _read_capped(resp)
                if payload is None:
                    return self._too_large(method, path, resp), True
                return self.build_response(method, path, resp.status, resp.headers, payload), True
        except aiohttp.ClientConnectorError as exc:
            self._observe(method, path, 0, {})
            message = f"cannot connect: {type(exc).__name__}: {exc}"
            return self._failure(method, path, "network", message, False), False
        except (asyncio.TimeoutError, TimeoutError):
            if not answered:
                self._observe(method, path, 0, {})
            message = f"no response within {self.timeout:g}s"
            return self._failure(method, path, "network", message, True), True
        except (aiohttp.ClientError, OSError) as exc:
            if not answered:
                self._observe(method, path, 0, {})
            message = f"{type(exc).__name__}: {exc}".rstrip(": ")
            return self._failure(method, path, "network", message, True), True

    def _observe(self, method: str, path: str, status: int, headers: Mapping[str, str]) -> None:
        if self.observer is None:
            return
        try:
            self.observer(method, path, status, headers)
        except Exception as exc:  # counting requests must never cost one
            log.warning("broker_observer_failed", error=repr(exc))

    def _too_large(self, method: str, path: str, resp: aiohttp.ClientResponse) -> ApiResponse:
        status = resp.status
        log.warning("broker_response_too_large", method=method, path=path, status=status,
                    declared_bytes=resp.content_length, limit_bytes=MAX_RESPONSE_BYTES)
        return ApiResponse(
            success=False, status=status, error_type="malformed",
            # a 2xx or 5xx body we could not read: the broker may have acted
            outcome_unknown=not 400 <= status < 500, method=method, path=path,
            request_id=resp.headers.get("X-Request-ID"),
            message=f"HTTP {status} response body larger than the {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB "
                    "limit; refused unread",
        )

    def _failure(
        self, method: str, path: str, kind: str, message: str, outcome_unknown: bool
    ) -> ApiResponse:
        return ApiResponse(
            success=False,
            status=0,
            error_type=kind,
            message=self.redact(message),
            outcome_unknown=outcome_unknown,
            method=method,
            path=path,
        )

    # -- status and body to ApiResponse ----------------------------------------------------

    def build_response(
        self, method: str, path: str, status: int, headers: Mapping[str, str], payload: bytes
    ) -> ApiResponse:
        """The ApiResponse for one answer (status, headers, raw body); also hands the
        answer's rate budget to the limiter."""
        self._note_rate_budget(path, headers)
        request_id = headers.get("X-Request-ID") or headers.get("x-request-id")
        base: dict[str, Any] = {"status": status, "request_id": request_id, "method": method,
                                "path": path}
        if 200 <= status < 300:
            if not payload.strip():
                return ApiResponse(success=True, data=None, **base)
            try:
                data = jsonlib.loads(payload)
            except ValueError:
                return ApiResponse(
                    success=False, error_type="malformed", outcome_unknown=True,
                    message=f"HTTP {status} with a body that is not JSON", **base,
                )
            if status == 207:
                return self.multi_status(self._redact_json(data), base)
            return ApiResponse(success=True, data=data, **base)
        if 300 <= status < 400:
            return ApiResponse(
                success=False, error_type="redirect",
                message=f"unexpected redirect (HTTP {status}); check the API URL", **base,
            )
        return self._error_response(status, headers, payload, base)

    def _error_response(
        self, status: int, headers: Mapping[str, str], payload: bytes, base: dict[str, Any]
    ) -> ApiResponse:
        """A 4xx/5xx: Alpaca's ``code`` and ``message`` kept (redacted) for the error mapping."""
        data: Any = None
        try:
            data = jsonlib.loads(payload) if payload.strip() else None
        except ValueError:
            data = None
        data = self._redact_json(data)
        if isinstance(data, dict):
            error = data
            code = error.get("code")
            code = code if isinstance(code, int) and not isinstance(code, bool) else None
            message = str(error.get("message") or error.get("msg") or f"HTTP {status}")
        else:
            code = None
            snippet = payload[:200].decode("utf-8", errors="replace").strip()
            message = f"HTTP {status}" + (f": {snippet}" if snippet else "")
        return ApiResponse(
            success=False,
            error_type="http",
            data=data,
            error_code=code,
            message=self.redact(message),
            retry_after=self._retry_after(headers) if status == 429 else None,
            outcome_unknown=status >= 500 or status == 408,
            **base,
        )

    def multi_status(self, data: Any, base: dict[str, Any]) -> ApiResponse:
        """A 207 body (already decoded): one :class:`MultiStatusItem` per readable item."""
        if not isinstance(data, list):
            return ApiResponse(
                success=False, error_type="malformed", outcome_unknown=True,
                message="HTTP 207 body is not a list", **base,
            )
        where = f"{base.get('method', '')} {base.get('path', '')} (207)".strip()
        parsed = (self._parser.parse_item(MultiStatusItem, raw, where, index) for index, raw in enumerate(data))
        items = [item for item in parsed if item is not None]
        if data and not items:
            return ApiResponse(
                success=False, error_type="malformed", outcome_unknown=True, data=data,
                message="HTTP 207: no item could be read", **base,
            )
        return ApiResponse(success=True, data=items, **base)

    # -- rate-limit headers ----------------------------------------------------------------

    def _note_rate_budget(self, path: str, headers: Mapping[str, str]) -> None:
        """Hand the broker's ``X-RateLimit-Remaining``/``-Reset`` to the rate limiter (for
        the API this response came from: trading and market data count separately)."""
        remaining, reset = headers.get("X-RateLimit-Remaining"), headers.get("X-RateLimit-Reset")
        if remaining is None or reset is None:
            return
        try:
            left, reset_at = int(remaining), float(reset)
        except ValueError:
            return
        if reset_at != reset_at:  # NaN
            return
        api = "data" if path.startswith(_DATA_PATHS) else "trading"
        self.limiter.note_budget(left, reset_at - self._wall_time(), api=api)

    def _retry_after(self, headers: Mapping[str, str]) -> float | None:
        """Seconds to wait from ``Retry-After`` (seconds or HTTP date) or ``X-RateLimit-Reset``.

        Both are wall-clock statements by the broker, so they are read against the wall
        clock (never the market clock, which may be a simulator's 2025 running at 600x)."""
        now = datetime.fromtimestamp(self._wall_time(), clock_module.UTC)
        seconds: float | None = None
        raw = headers.get("Retry-After")
        if raw:
            try:
                seconds = float(raw)
            except ValueError:
                try:
                    seconds = (parsedate_to_datetime(raw) - now).total_seconds()
                except (TypeError, ValueError):
                    seconds = None
        if seconds is None:
            reset = headers.get("X-RateLimit-Reset")
            if reset:
                try:
                    seconds = float(reset) - now.timestamp()
                except ValueError:
                    seconds = None
        if seconds is None or seconds != seconds:  # missing or NaN
            return None
        return min(max(seconds, 0.0), MAX_RATE_LIMIT_WAIT)

    # -- redaction -------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """``text`` with the API keys replaced (a broker or proxy may echo them back)."""
        for secret in (self._key_id, self._secret_key):
            if secret is not None and secret.get_secret_value():
                text = text.replace(secret.get_secret_value(), _REDACTED)
        return text

    def _redact_json(self, value: Any) -> Any:
        """``value`` (parsed JSON) with every string scrubbed of the keys."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list):
            return [self._redact_json(item) for item in value]
        if isinstance(value, dict):
            return {key: self._redact_json(item) for key, item in value.items()}
        return value


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes | None:
    """The body, or None (connection dropped) once it is known to exceed
    :data:`MAX_RESPONSE_BYTES`: by its Content-Length before reading, else by counting
    the (decompressed) bytes as they arrive, so at most the cap is ever held."""
    declared = resp.content_length
    if declared is not None and declared > MAX_RESPONSE_BYTES:
        resp.close()
        return None
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(_READ_CHUNK):
        total += len(chunk)
        if total > MAX_RESPONSE_BYTES:
            chunks.clear()
            resp.close()
            return None
        chunks.append(chunk)
    return b"".join(chunks)


__all__ = ["MAX_RATE_LIMIT_WAIT", "MAX_RESPONSE_BYTES", "HttpTransport"]
