"""Guards at the broker boundary: the live endpoint recognised however its host is spelled,
no secret from a URL echoed in an error, and response bodies capped in size.

The oversized bodies come from a real aiohttp server on 127.0.0.1 that streams them.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from structlog.testing import capture_logs

from core import errors
from api_gateway import ResilientAlpacaGateway
from broker.transport import MAX_RESPONSE_BYTES
from config import load_settings, normalise_host, redact_url

REPO = Path(__file__).resolve().parent.parent
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
    f"{KEY}:{SECRET}@paper-api.alpaca.markets",  # no scheme at all
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


# -- the simulator's control API and its keys ------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "TRADING_", "PYTEST_"))}
    return env | {"PYTHONUNBUFFERED": "1"} | extra


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simulator", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def env_keyed_simulator() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``python -m simulator`` given its keys by environment only (nothing in argv)."""
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "--port", "0", "--speed", "max"], cwd=REPO,
                            env=_env(APCA_API_KEY_ID=KEY, APCA_API_SECRET_KEY=SECRET),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        assert "listening on " in line, line
        yield line.split("listening on ", 1)[1].strip(), proc
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        if proc.stdout is not None:
            proc.stdout.close()


def _get(url: str, headers: dict[str, str] | None = None, body: dict[str, Any] | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})},
                                     method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # loopback only
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_simulator_takes_its_keys_from_the_environment_and_guards_the_control_api(
        env_keyed_simulator: tuple[str, subprocess.Popen[str]]) -> None:
    url, proc = env_keyed_simulator
    assert KEY not in " ".join(map(str, proc.args)) and SECRET not in " ".join(map(str, proc.args))
    auth = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
    assert _get(f"{url}/v2/account") == 401
    assert _get(f"{url}/v2/account", auth) == 200
    # what a web page in a local browser could send: no keys, so no shock
    assert _get(f"{url}/_sim/v1/shock", body={"symbols": "*", "pct": -50}) == 401
    assert _get(f"{url}/_sim/v1/state") == 401
    assert _get(f"{url}/_sim/v1/state", auth) == 200


def test_control_cli_sends_the_keys_from_the_environment(
        env_keyed_simulator: tuple[str, subprocess.Popen[str]]) -> None:
    url, _ = env_keyed_simulator
    without = _cli("state", "--url", url, env=_env())
    assert without.returncode == 1 and "401" in without.stderr and "APCA_API_KEY_ID" in without.stderr
    wrong = _cli("state", "--url", url, env=_env(APCA_API_KEY_ID=KEY, APCA_API_SECRET_KEY="wrong-secret"))
    assert wrong.returncode == 1 and "not the simulator's keys" in wrong.stderr
    keyed = _env(APCA_API_KEY_ID=KEY, APCA_API_SECRET_KEY=SECRET)
    state = _cli("state", "--url", url, env=keyed)
    assert state.returncode == 0, state.stderr
    shock = _cli("shock", "--url", url, "SPY", "-5", env=keyed)
    assert shock.returncode == 0, shock.stderr
    for result in (without, wrong, state, shock):
        assert SECRET not in result.stdout + result.stderr


def test_one_key_alone_in_the_environment_is_one_line_and_exit_2() -> None:
    result = _cli("--port", "0", env=_env(APCA_API_KEY_ID=KEY))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "APCA_API_SECRET_KEY" in lines[0]


async def test_the_daemons_embedded_simulator_answers_only_the_daemon(tmp_path: Path) -> None:
    import main

    settings = load_settings(environ={}, env_file=None,
                             overrides={"sim.speed": "max", "storage.state_db": str(tmp_path / "s.db"),
                                        "scanning.symbols": ["SPY"]})
    async with main.open_broker(settings, announce=False) as (gateway, _clock, url):
        account = await gateway.get_account()
        assert account.equity > 0
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, _get, f"{url}/_sim/v1/state") == 401
        assert await loop.run_in_executor(None, _get, f"{url}/v2/account") == 401


# -- SMTP: no password without TLS unless allowed ----------------------------------------------

SMTP_PASSWORD = "smtp-Pass-word-77x"


def test_config_refuses_a_plaintext_smtp_login_with_one_line() -> None:
    alerts = {"email_enabled": True, "smtp_starttls": False, "smtp_user": "bot", "email_from": "bot@example.com",
              "email_to": ["ops@example.com"]}
    with pytest.raises(errors.ConfigError) as caught:
        load_settings(environ={"SMTP_PASSWORD": SMTP_PASSWORD}, env_file=None, overrides={"alerts": alerts})
    (line,) = [p for p in caught.value.problems if "smtp" in p]
    assert line.startswith("alerts.smtp_starttls=false") and "allow_plaintext_auth = true" in line
    assert SMTP_PASSWORD not in "\n".join(caught.value.problems)
    allowed = load_settings(environ={"SMTP_PASSWORD": SMTP_PASSWORD}, env_file=None,
                            overrides={"alerts": alerts | {"allow_plaintext_auth": True}})
    assert allowed.alerts.allow_plaintext_auth


async def test_alerter_never_sends_the_password_in_clear_without_the_opt_in() -> None:
    from aiosmtpd.controller import Controller

    from alerter import AlertLevel, Alerter
    from config import AlertSettings
    from tests.test_alerter import FakeClock, Inbox, free_port

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=inbox.authenticate,
                            auth_require_tls=False)
    controller.start()
    try:
        # built past load_settings (which already refuses it): the alerter holds the line too
        settings = AlertSettings.model_construct(
            **(AlertSettings().model_dump() | {
                "console": False, "email_enabled": True, "smtp_host": "127.0.0.1", "smtp_port": port,
                "smtp_starttls": False, "smtp_user": "bot", "smtp_password": SecretStr(SMTP_PASSWORD),
                "email_from": "bot@example.com", "email_to": ["ops@example.com"]}),
        )
        alerter = Alerter(settings, FakeClock(), channel_timeout=5)
        try:
            with capture_logs() as logs:
                outcome = await alerter.send(AlertLevel.CRITICAL, "Daily drawdown", "down 6%")
        finally:
            await alerter.aclose()
    finally:
        controller.stop()
    assert outcome.failed == ["email"] and inbox.logins == [] and inbox.messages == []
    (failure,) = [e for e in logs if e["event"] == "alert_delivery_failed"]
    assert "without TLS" in failure["reason"]
    assert SMTP_PASSWORD not in json.dumps(logs, default=str)


def test_control_cli_never_echoes_keys_put_in_its_url() -> None:
    result = _cli("state", "--url", f"http://{KEY}:{SECRET}@127.0.0.1:1/?secret={SECRET}", "--timeout", "2",
                  env=_env())
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "user:password@" in result.stderr and "APCA_API_KEY_ID" in result.stderr
    assert KEY not in result.stderr and SECRET not in result.stderr and "***@" in result.stderr
    odd = _cli("state", "--url", "http://127.0.0.1:notaport/", "--timeout", "2", env=_env())
    assert odd.returncode == 1 and "Traceback" not in odd.stderr
