"""Guards at the broker boundary: the live endpoint recognised however its host is spelled,
no secret from a URL echoed in an error, and response bodies capped in size.

The oversized bodies come from a real aiohttp server on 127.0.0.1 that streams them.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

import errors
from api_gateway import MAX_RESPONSE_BYTES, ResilientAlpacaGateway
from config import load_settings, normalise_host, redact_url

KEY = "AKGUARDKEY1234567"
SECRET = "guardSecretValue/1234567890abcdefghijk"

LIVE_SPELLINGS = [
    "https://api.alpaca.markets.",
    "HTTPS://API.ALPACA.MARKETS:443/",
    "https://Api.Alpaca.Markets../v2",
    "https://api.alpaca.markets:443",
]


# -- the live-URL guard ------------------------------------------------------------------------


@pytest.mark.parametrize("url", LIVE_SPELLINGS)
def test_gateway_refuses_every_spelling_of_the_live_host_outside_live_mode(url: str) -> None:
    with pytest.raises(errors.UnsafeEndpoint, match="LIVE trading host"):
        ResilientAlpacaGateway(base_url=url, data_url="https://data.alpaca.markets",
                               key_id=KEY, secret_key=SECRET, mode="paper")


@pytest.mark.parametrize("url", LIVE_SPELLINGS)
def test_gateway_accepts_the_live_host_only_with_the_opt_in(url: str) -> None:
    gateway = ResilientAlpacaGateway(base_url=url, data_url="https://data.alpaca.markets",
                                     key_id=KEY, secret_key=SECRET, mode="live", live_enabled=True)
    assert normalise_host(gateway.base_url.split("//")[1].split(":")[0].split("/")[0]) == "api.alpaca.markets"


@pytest.mark.parametrize("url", LIVE_SPELLINGS)
def test_config_refuses_the_live_host_in_paper_mode_however_spelled(url: str) -> None:
    env = {"APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET, "APCA_API_BASE_URL": url}
    with pytest.raises(errors.ConfigError) as caught:
        load_settings(environ=env, env_file=None)
    assert any("live endpoint is not allowed in paper mode" in p for p in caught.value.problems)


def test_loopback_with_a_trailing_dot_is_still_loopback_and_plain_http_elsewhere_is_refused() -> None:
    gateway = ResilientAlpacaGateway(base_url="http://LOCALHOST.:8765", data_url="http://127.0.0.1:8765",
                                     key_id=None, secret_key=None, mode="sim")
    assert gateway.base_url == "http://localhost.:8765"
    with pytest.raises(errors.UnsafeEndpoint, match="plain HTTP"):
        ResilientAlpacaGateway(base_url="http://example.com.", data_url="https://data.alpaca.markets",
                               key_id=KEY, secret_key=SECRET, mode="paper")


# -- secrets inside URLs ------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    f"https://{KEY}:{SECRET}@paper-api.alpaca.markets",
    f"https://paper-api.alpaca.markets/?key={KEY}&secret={SECRET}",
    f"http://{KEY}:{SECRET}@example.com",
    f"ftp://example.com/?secret={SECRET}",
])
def test_keys_pasted_into_the_base_url_are_refused_and_never_echoed(url: str) -> None:
    env = {"APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET, "APCA_API_BASE_URL": url}
    with pytest.raises(errors.ConfigError) as caught:
        load_settings(environ=env, env_file=None)
    text = "\n".join(caught.value.problems)
    assert "api.base_url" in text
    assert KEY not in text and SECRET not in text


def test_gateway_messages_never_echo_a_query_string() -> None:
    with pytest.raises(errors.UnsafeEndpoint) as caught:
        ResilientAlpacaGateway(base_url=f"http://example.com/?secret={SECRET}", data_url="https://data.alpaca.markets",
                               key_id=KEY, secret_key=SECRET, mode="paper")
    assert SECRET not in str(caught.value)
    with pytest.raises(errors.UnsafeEndpoint) as caught:
        ResilientAlpacaGateway(base_url=f"https://{KEY}:{SECRET}@paper-api.alpaca.markets",
                               data_url="https://data.alpaca.markets", key_id=KEY, secret_key=SECRET, mode="paper")
    assert SECRET not in str(caught.value) and KEY not in str(caught.value)


def test_redact_url_keeps_where_and_drops_what_is_secret() -> None:
    assert redact_url(f"https://u:{SECRET}@host.example:8443/v2?k={SECRET}") == "https://***@host.example:8443/v2?***"
    assert redact_url("https://paper-api.alpaca.markets") == "https://paper-api.alpaca.markets"


# -- the response size cap ------------------------------------------------------------------------

MIB = 1024 * 1024
CHUNK = b" " * MIB  # one buffer written over and over: the server itself allocates nothing


async def _stream(request: web.Request, size: int, *, declare: bool) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    if declare:
        response.content_length = size
    await response.prepare(request)
    sent = 0
    try:
        while sent < size:
            part = CHUNK[: min(MIB, size - sent)]
            await response.write(part)
            sent += len(part)
    except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
        pass  # the client hung up: exactly what the cap does
    return response


@pytest.fixture
async def big_server() -> AsyncIterator[str]:
    async def huge(request: web.Request) -> web.StreamResponse:
        return await _stream(request, 300 * MIB, declare=False)

    async def declared(request: web.Request) -> web.StreamResponse:
        return await _stream(request, 300 * MIB, declare=True)

    async def under(request: web.Request) -> web.StreamResponse:
        body = b'{"pad": "' + b"x" * (2 * MIB) + b'", "ok": true}'
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v2/huge", huge)
    app.router.add_get("/v2/declared", declared)
    app.router.add_get("/v2/under", under)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def _gateway(url: str) -> ResilientAlpacaGateway:
    async def no_sleep(_: float) -> None:
        await asyncio.sleep(0)

    return ResilientAlpacaGateway(base_url=url, data_url=url, key_id=KEY, secret_key=SECRET, mode="sim",
                                  timeout=60, max_retries=2, sleep=no_sleep)


async def test_a_300_mib_streamed_body_is_refused_as_a_broker_error_holding_at_most_the_cap(big_server: str) -> None:
    tracemalloc.start()
    try:
        async with _gateway(big_server) as gateway:
            with capture_logs() as logs:
                response = await gateway.request("GET", "/v2/huge")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not response.success
    assert response.error_type == "malformed" and response.outcome_unknown
    assert "larger than the 16 MiB limit" in response.message
    assert isinstance(response.error(), errors.MalformedResponse)
    assert isinstance(response.error(), errors.TemporaryError)
    assert gateway.request_count == 1  # a refused body is not fetched again
    assert peak < MAX_RESPONSE_BYTES + 8 * MIB  # never the 300 MiB
    assert any(e["event"] == "broker_response_too_large" for e in logs)


async def test_a_declared_oversize_body_is_refused_before_reading(big_server: str) -> None:
    async with _gateway(big_server) as gateway:
        with pytest.raises(errors.MalformedResponse, match="16 MiB"):
            await gateway._call("GET", "/v2/declared")


async def test_a_body_under_the_cap_is_read_whole(big_server: str) -> None:
    async with _gateway(big_server) as gateway:
        data: Any = await gateway._call("GET", "/v2/under")
    assert data["ok"] is True and len(data["pad"]) == 2 * MIB


def test_the_cap_is_sixteen_mib() -> None:
    assert MAX_RESPONSE_BYTES == 16 * MIB
