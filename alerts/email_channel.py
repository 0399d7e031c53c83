"""The e-mail channel: SMTP to ``smtp_host:smtp_port``, STARTTLS when ``smtp_starttls``, a
login when a user and password are set (never without TLS unless ``allow_plaintext_auth``),
sent from a daemon thread so a stalled SMTP server holds up neither the loop nor the exit."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import threading
from collections.abc import Callable
from datetime import timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Protocol

from alerts.channel import AlertSettings, DeliveryRefused
from alerts.types import Alert, AlertLevel, field_text

PLAINTEXT_AUTH_REFUSED = (
    "refusing to send the SMTP password without TLS (alerts.smtp_starttls is false); enable "
    "smtp_starttls, or set alerts.allow_plaintext_auth = true for a relay you trust"
)


class SmtpClient(Protocol):
    """The part of :class:`smtplib.SMTP` the alerter uses (for a test double)."""

    def ehlo(self, name: str = ...) -> Any: ...
    def starttls(self, *, context: ssl.SSLContext | None = ...) -> Any: ...
    def login(self, user: str, password: str) -> Any: ...
    def send_message(self, msg: EmailMessage) -> Any: ...
    def quit(self) -> Any: ...
    def close(self) -> None: ...


SmtpFactory = Callable[[str, int, float], SmtpClient]


def default_smtp_factory(host: str, port: int, timeout: float) -> SmtpClient:
    return smtplib.SMTP(host, port, timeout=timeout)


def email_floor(settings: Any) -> AlertLevel:
    """The lowest level e-mailed (``email_min_level``; CRITICAL for settings without it)."""
    try:
        return AlertLevel(str(getattr(settings, "email_min_level", "critical")).lower())
    except ValueError:
        return AlertLevel.CRITICAL


class EmailChannel:
    """Alerts at or above ``email_min_level`` when ``email_enabled``."""

    name = "email"
    inline = False

    def __init__(self, settings: AlertSettings, password: str | None, smtp_factory: SmtpFactory | None,
                 timeout: float) -> None:
        self._settings = settings
        self._password = password
        self._smtp_factory = smtp_factory or default_smtp_factory
        self._timeout = timeout

    def accepts(self, level: AlertLevel) -> bool:
        s = self._settings
        return bool(s.email_enabled) and level.rank >= email_floor(s).rank

    async def deliver(self, alert: Alert) -> None:
        s = self._settings
        if not s.email_from or not s.email_to:
            raise DeliveryRefused("email_from and email_to must be configured")
        if self._plaintext_login():
            raise DeliveryRefused(PLAINTEXT_AUTH_REFUSED)
        level, now = alert.level, alert.at
        msg = EmailMessage()
        msg["Subject"] = f"[{level.value.upper()}] {alert.title}"
        msg["From"] = s.email_from
        msg["To"] = ", ".join(s.email_to)
        msg["Date"] = format_datetime(now.astimezone(timezone.utc))
        msg["Message-ID"] = make_msgid(domain="trading-daemon.local")
        lines = [alert.body, ""] if alert.body else []
        lines += [f"{name}: {field_text(value)}" for name, value in alert.fields.items()]
        lines += ["", f"Level {level.value.upper()} at {now.astimezone(timezone.utc).isoformat()} (UTC)."]
        msg.set_content("\n".join(lines).strip() + "\n")
        await in_daemon_thread(self._smtp_send, msg)

    def _plaintext_login(self) -> bool:
        """Whether sending would log in without TLS and the config does not allow it."""
        s = self._settings
        return bool(s.smtp_user and self._password and not s.smtp_starttls
                    and not getattr(s, "allow_plaintext_auth", False))

    def _smtp_send(self, msg: EmailMessage) -> None:
        s = self._settings
        if self._plaintext_login():  # checked again where the password would leave
            raise DeliveryRefused(PLAINTEXT_AUTH_REFUSED)
        smtp = self._smtp_factory(s.smtp_host, s.smtp_port, self._timeout)
        try:
            smtp.ehlo()
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if s.smtp_user and self._password:
                smtp.login(s.smtp_user, self._password)
            smtp.send_message(msg)
        finally:
            try:
                smtp.quit()
            except Exception:
                smtp.close()


async def in_daemon_thread(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a daemon thread, awaited. Unlike ``asyncio.to_thread`` (the
    default executor, which the interpreter joins at exit), a thread stuck on a stalled SMTP
    server can neither delay shutdown nor outlive its timeout in anyone's wait."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = function(*args), None
        except BaseException as exc:  # handed to the awaiting coroutine
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass

    threading.Thread(target=run, name="alert-smtp", daemon=True).start()
    return await future
