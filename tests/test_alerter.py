"""Alerter: real SMTP and webhook deliveries on loopback, SMS gating, throttling, failures, secrets."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

import config
from alerter import Alerter, AlertLevel
from journal.journal import Journal, ReconciliationReport

T0 = datetime(2025, 3, 3, 15, 0, tzinfo=timezone.utc)
SMTP_PASSWORD = "smtp-pass-9f8e7d6c"
API_KEY = "PKFAKEKEY1234567890"
HOOK_TOKEN = "XyZ0123456789abcdefTOKEN"


class FakeClock:
    def __init__(self) -> None:
        self.t = T0

    def now(self) -> datetime:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


def alert_settings(**alerts: Any) -> Any:
    environ = {"SMTP_PASSWORD": alerts.pop("password")} if "password" in alerts else {}
    return config.load_settings(environ=environ, env_file=None, overrides={"alerts": alerts}).alerts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


# -- local servers ------------------------------------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[Any] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword):
            self.logins.append((data.login, data.password))
            ok = data.login == b"bot" and data.password == SMTP_PASSWORD.encode()
            return AuthResult(success=ok)
        return AuthResult(success=False)


@pytest.fixture()
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port,
                            authenticator=inbox.authenticate, auth_require_tls=False)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


class Hooks:
    def __init__(self) -> None:
        self.webhook: list[dict[str, Any]] = []
        self.sms: list[dict[str, Any]] = []
        self.delay = 0.0
        self.status = 200


@pytest.fixture()
async def http_server() -> AsyncIterator[tuple[Hooks, str]]:
    hooks = Hooks()

    async def webhook(request: web.Request) -> web.Response:
        await asyncio.sleep(hooks.delay)
        hooks.webhook.append(await request.json())
        return web.Response(status=hooks.status, text="ok")

    async def sms(request: web.Request) -> web.Response:
        hooks.sms.append(await request.json())
        return web.json_response({"queued": True})

    app = web.Application()
    app.router.add_post(f"/hooks/T000/B000/{HOOK_TOKEN}", webhook)
    app.router.add_post("/sms", sms)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield hooks, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# -- deliveries -------------------------------------------------------------------------


async def test_critical_alert_email_arrives_at_a_real_smtp_server_with_login_and_no_secrets(
    smtp_server: tuple[Inbox, int], tmp_path: Path
) -> None:
    inbox, port = smtp_server
    settings = alert_settings(
        console=False, email_enabled=True, smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False, allow_plaintext_auth=True,
        smtp_user="bot", password=SMTP_PASSWORD, email_from="bot@example.com",
        email_to=["ops@example.com", "cto@example.com"],
    )
    alerter = Alerter(settings, FakeClock(), secrets=[API_KEY], channel_timeout=5)
    journal = Journal(tmp_path / "state.db")
    alerter.attach_journal(journal)
    with structlog.testing.capture_logs() as logs:
        outcome = await alerter.send(
            AlertLevel.CRITICAL, "Daily drawdown limit reached",
            f"Down 6.1% today. key={API_KEY} pw={SMTP_PASSWORD}",
            fields={"equity": Decimal("93900.00"), "api": API_KEY},
        )
    assert outcome.sent == ["email"] and outcome.delivered
    assert inbox.logins == [(b"bot", SMTP_PASSWORD.encode())]
    (mail,) = inbox.messages
    assert mail["Subject"] == "[CRITICAL] Daily drawdown limit reached"
    assert mail["From"] == "bot@example.com"
    assert sorted(inbox.envelopes[0].rcpt_tos) == ["cto@example.com", "ops@example.com"]
    body = mail.get_payload(decode=True).decode()
    assert "Down 6.1% today" in body and "equity: 93900.00" in body
    assert API_KEY not in body and SMTP_PASSWORD not in body and "***" in body
    (alert,) = events(logs, "alert")
    assert alert["alert_level"] == "critical" and alert["channels"] == ["email"]
    assert API_KEY not in json.dumps(logs) and SMTP_PASSWORD not in json.dumps(logs)
    (recorded,) = journal.alerts()
    assert recorded["level"] == "critical" and API_KEY not in recorded["message"]
    journal.close()


async def test_warning_does_not_email_but_emergency_does() -> None:
    calls: list[str] = []

    class FakeSmtp:
        def ehlo(self, name: str = "") -> None:
            calls.append("ehlo")

        def starttls(self, *, context: ssl.SSLContext | None = None) -> None:
            assert isinstance(context, ssl.SSLContext)
            calls.append("starttls")

        def login(self, user: str, password: str) -> None:
            calls.append(f"login {user} {password}")

        def send_message(self, msg: Any) -> None:
            calls.append(f"send {msg['Subject']}")

        def quit(self) -> None:
            calls.append("quit")

        def close(self) -> None:
            calls.append("close")

    def factory(host: str, port: int, timeout: float) -> FakeSmtp:
        calls.append(f"connect {host}:{port} timeout={timeout:g}")
        return FakeSmtp()

    settings = alert_settings(console=False, email_enabled=True, smtp_host="mail.example.com", smtp_port=587,
                              smtp_starttls=True, smtp_user="bot", password=SMTP_PASSWORD,
                              email_from="bot@example.com", email_to=["ops@example.com"])
    alerter = Alerter(settings, FakeClock(), smtp_factory=factory, channel_timeout=3)
    assert (await alerter.send(AlertLevel.WARNING, "PDT block", "blocked")).channels == {}
    assert calls == []
    outcome = await alerter.send(AlertLevel.EMERGENCY, "CIRCUIT BREAKER TRIPPED", "flattening")
    assert outcome.sent == ["email"]
    assert calls == [
        "connect mail.example.com:587 timeout=3", "ehlo", "starttls", "ehlo",
        f"login bot {SMTP_PASSWORD}", "send [EMERGENCY] CIRCUIT BREAKER TRIPPED", "quit",
    ]


async def test_webhook_receives_slack_and_discord_compatible_json_without_the_token(
    http_server: tuple[Hooks, str],
) -> None:
    hooks, base = http_server
    url = f"{base}/hooks/T000/B000/{HOOK_TOKEN}"
    settings = alert_settings(console=False, webhook_url=url)
    alerter = Alerter(settings, FakeClock(), secrets=[API_KEY])
    try:
        with structlog.testing.capture_logs() as logs:
            outcome = await alerter.send(
                AlertLevel.WARNING, "Gap risk HIGH: AAPL", f"AAPL gapped -4.2% (posted to {url})",
                fields={"symbol": "AAPL", "gap": "-4.20%", "secret_key": API_KEY},
            )
    finally:
        await alerter.aclose()
    assert outcome.sent == ["webhook"]
    (payload,) = hooks.webhook
    assert payload["text"].startswith("[WARNING] Gap risk HIGH: AAPL")  # Slack
    assert payload["content"] == payload["text"]  # Discord
    assert payload["blocks"][0]["type"] == "section"
    (embed,) = payload["embeds"]
    assert embed["title"] == "Gap risk HIGH: AAPL"
    assert {f["name"]: f["value"] for f in embed["fields"]}["symbol"] == "AAPL"
    assert payload["fields"] == {"symbol": "AAPL", "gap": "-4.20%", "secret_key": "***"}
    assert payload["level"] == "warning"
    text = json.dumps(payload)
    assert HOOK_TOKEN not in text and API_KEY not in text
    assert HOOK_TOKEN not in json.dumps(logs)


async def test_sms_goes_out_for_emergencies_only(http_server: tuple[Hooks, str]) -> None:
    hooks, base = http_server
    settings = alert_settings(console=False, sms_endpoint=f"{base}/sms", sms_to="+15551234567")
    alerter = Alerter(settings, FakeClock())
    try:
        for level in (AlertLevel.INFO, AlertLevel.WARNING, AlertLevel.CRITICAL):
            assert (await alerter.send(level, f"{level.value} alert", "x")).channels == {}
        outcome = await alerter.emergency_stop_failed(symbol="TSLA", reason="insufficient qty", attempts=5)
    finally:
        await alerter.aclose()
    assert outcome.sent == ["sms"]
    assert hooks.sms == [{"to": "+15551234567",
                          "message": "[EMERGENCY] EMERGENCY STOP FAILED: TSLA: Could not flatten TSLA after 5 "
                                     "attempts: insufficient qty. Close it by hand."}]


async def test_a_flapping_condition_is_delivered_once_then_summarised(http_server: tuple[Hooks, str]) -> None:
    hooks, base = http_server
    clock = FakeClock()
    settings = alert_settings(console=False, webhook_url=f"{base}/hooks/T000/B000/{HOOK_TOKEN}",
                              throttle_seconds=300)
    alerter = Alerter(settings, clock)
    try:
        outcomes = []
        for _ in range(100):
            outcomes.append(await alerter.send(AlertLevel.CRITICAL, "Broker unreachable", "timeout"))
            clock.advance(1)
        assert len(hooks.webhook) == 1
        assert sum(o.throttled for o in outcomes) == 99
        assert alerter.pending_repeats("critical:Broker unreachable") == 99
        # a different condition, or the same title at a higher level, is not held back
        assert (await alerter.send(AlertLevel.EMERGENCY, "Broker unreachable", "still")).delivered
        assert (await alerter.send(AlertLevel.CRITICAL, "Other", "x", key="other")).delivered
        assert len(hooks.webhook) == 3

        assert await alerter.flush() == []  # quiet period not over yet
        clock.advance(300)
        (summary,) = await alerter.flush()
        assert summary.suppressed_repeats == 99
        assert hooks.webhook[-1]["message"] == "timeout\n(suppressed 99 repeats)"
        assert await alerter.flush() == []
        # the next repeat after the window goes out at once, with nothing to summarise
        clock.advance(301)
        again = await alerter.send(AlertLevel.CRITICAL, "Broker unreachable", "timeout")
        assert again.delivered and again.suppressed_repeats == 0
    finally:
        await alerter.aclose()


async def test_failed_deliveries_never_raise_and_are_logged_without_secrets(
    http_server: tuple[Hooks, str],
) -> None:
    hooks, base = http_server
    closed_port = free_port()  # nothing listens here: connection refused
    settings = alert_settings(
        console=False, email_enabled=True, smtp_host="127.0.0.1", smtp_port=closed_port,
        smtp_starttls=False, allow_plaintext_auth=True, smtp_user="bot", password=SMTP_PASSWORD, email_from="bot@example.com",
        email_to=["ops@example.com"], webhook_url=f"http://127.0.0.1:{closed_port}/hooks/{HOOK_TOKEN}",
        sms_endpoint=f"{base}/missing", sms_to="+15551234567",
    )
    alerter = Alerter(settings, FakeClock(), channel_timeout=2)
    try:
        with structlog.testing.capture_logs() as logs:
            outcome = await alerter.send(AlertLevel.EMERGENCY, "CIRCUIT BREAKER TRIPPED", "flatten")
    finally:
        await alerter.aclose()
    assert not outcome.delivered
    assert sorted(outcome.failed) == ["email", "sms", "webhook"]
    failures = {e["channel"]: e["reason"] for e in events(logs, "alert_delivery_failed")}
    assert set(failures) == {"email", "sms", "webhook"}
    assert "ConnectionRefusedError" in failures["email"]
    assert "HTTP 404" in failures["sms"]
    assert HOOK_TOKEN not in json.dumps(logs) and SMTP_PASSWORD not in json.dumps(logs)
    assert events(logs, "alert")[0]["failed"] == ["webhook", "email", "sms"]


async def test_channels_that_hang_time_out_without_holding_up_the_caller(http_server: tuple[Hooks, str]) -> None:
    hooks, base = http_server
    hooks.delay = 1.5
    silent = socket.socket()  # accepts connections (backlog) but never greets: SMTP hangs
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)
    settings = alert_settings(
        console=False, email_enabled=True, smtp_host="127.0.0.1", smtp_port=silent.getsockname()[1],
        smtp_starttls=False, email_from="bot@example.com", email_to=["ops@example.com"],
        webhook_url=f"{base}/hooks/T000/B000/{HOOK_TOKEN}",
    )
    alerter = Alerter(settings, FakeClock(), channel_timeout=0.3)
    try:
        with structlog.testing.capture_logs() as logs:
            outcome = await alerter.send(AlertLevel.CRITICAL, "Broker unreachable", "no answer")
    finally:
        await alerter.aclose()
        silent.close()
    assert outcome.channels["webhook"] == "failed: timed out after 0.3s"
    # SMTP's own socket timeout (the same bound) may fire first on a loaded machine: either
    # way the channel failed on a timeout, within the bound, and said so.
    assert outcome.channels["email"].startswith("failed:") and "timed out" in outcome.channels["email"]
    assert set(outcome.channels) == {"webhook", "email"}
    assert len(events(logs, "alert_delivery_failed")) == 2


async def test_console_is_coloured_on_a_terminal_and_plain_otherwise() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, plain = Tty(), io.StringIO()
    for stream in (tty, plain):
        alerter = Alerter(alert_settings(), FakeClock(), stream=stream, secrets=[API_KEY])
        outcome = await alerter.send(AlertLevel.EMERGENCY, "EMERGENCY LIQUIDATION", f"closing all {API_KEY}",
                                     fields={"symbols": ["AAPL", "TSLA"]})
        assert outcome.sent == ["console"]
    assert "\033[" in tty.getvalue() and "\033[" not in plain.getvalue()
    assert plain.getvalue() == (
        "2025-03-03T15:00:00Z [EMERGENCY] EMERGENCY LIQUIDATION\n"
        "    closing all ***\n"
        '    symbols: ["AAPL", "TSLA"]\n'
    )
    quiet = io.StringIO()
    alerter = Alerter(alert_settings(console=False), FakeClock(), stream=quiet)
    assert (await alerter.send(AlertLevel.INFO, "hello", "world")).channels == {}
    assert quiet.getvalue() == ""


async def test_a_broken_journal_or_an_unknown_level_does_not_raise() -> None:
    class BrokenJournal:
        def record_alert(self, *args: Any) -> None:
            raise OSError("disk full")

    stream = io.StringIO()
    alerter = Alerter(alert_settings(), FakeClock(), stream=stream)
    alerter.attach_journal(BrokenJournal())
    with structlog.testing.capture_logs() as logs:
        outcome = await alerter.send("panic", "Odd level", "still delivered")
    assert outcome.level is AlertLevel.CRITICAL and outcome.sent == ["console"]
    assert [e["event"] for e in logs if e["event"].startswith("alert_")] == [
        "alert_invalid_level", "alert_journal_failed"]


# -- the daemon's triggers ----------------------------------------------------------------


async def test_trigger_helpers_build_the_seed_alerts() -> None:
    stream = io.StringIO()
    alerter = Alerter(alert_settings(), FakeClock(), stream=stream)
    startup = await alerter.startup_unprotected([
        {"symbol": "AAPL", "qty": Decimal("10"), "unrealized_pl": Decimal("-12.50"), "market_value": Decimal("1875")},
    ])
    assert startup is not None and startup.level is AlertLevel.CRITICAL
    assert "STARTUP ALERT" in stream.getvalue() and "AAPL: qty 10, P&L -12.50, value 1875" in stream.getvalue()
    assert await alerter.startup_unprotected([]) is None

    breaker = await alerter.circuit_breaker_tripped(loss=Decimal("0.052"), equity=Decimal("94800"),
                                                    baseline=Decimal("100000"))
    assert breaker.level is AlertLevel.EMERGENCY and "5.20%" in stream.getvalue()
    assert (await alerter.daily_drawdown_limit(drawdown=0.061, limit=0.06, equity=Decimal(93900))).level \
        is AlertLevel.CRITICAL
    assert (await alerter.pdt_blocked(symbol="AAPL", reason="4th day trade")).level is AlertLevel.WARNING
    assert (await alerter.account_may_be_flagged(symbol="AAPL", reason="stop")).level is AlertLevel.CRITICAL
    assert (await alerter.broker_unreachable(error="timeout")).level is AlertLevel.CRITICAL
    assert (await alerter.emergency_liquidation(reason="halt", symbols=["AAPL"])).level is AlertLevel.EMERGENCY
    levels = {}
    for name in ("low", "moderate", "high", "extreme"):
        outcome = await alerter.gap_risk(level=name, gap_pct=Decimal("-0.03"), dollar_impact=Decimal("-300"),
                                         symbol="AAPL")
        levels[name] = outcome.level if outcome else None
    assert levels == {"low": None, "moderate": AlertLevel.INFO, "high": AlertLevel.WARNING,
                      "extreme": AlertLevel.CRITICAL}
    state = await alerter.trading_state_changed(from_state="active", to_state="reducing", reason="drawdown")
    assert state.level is AlertLevel.WARNING and state.title == "Trading state ACTIVE -> REDUCING"

    clean = ReconciliationReport(at=T0)
    assert await alerter.reconciliation_discrepancies(clean) is None
    flagged = ReconciliationReport(at=T0, position_mismatches=[{"symbol": "MSFT", "journal_qty": Decimal(0),
                                                                "broker_qty": Decimal(5), "difference": Decimal(5)}])
    outcome = await alerter.reconciliation_discrepancies(flagged)
    assert outcome is not None and outcome.level is AlertLevel.WARNING
    assert "position_mismatch: MSFT" in stream.getvalue()
