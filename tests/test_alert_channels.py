"""The alert-channel plug-in point (``alerts.channel.AlertChannel``): a channel passed to the
alerter gets the alerter's guarantees (scrubbing, throttle, timeout, background delivery)
without writing any of them, and a failing channel never stops the others."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from alerter import Alerter, AlertLevel
from alerts.channel import AlertChannel, DeliveryRefused
from alerts.types import Alert
from tests.test_alerter import API_KEY, FakeClock, alert_settings, events


class Pager:
    """A plug-in channel: pages CRITICAL and above, remembers what it was given."""

    inline = False

    def __init__(self, name: str = "pager", *, refuse: bool = False, hang: bool = False) -> None:
        self.name = name
        self.received: list[Alert] = []
        self.refuse, self.hang = refuse, hang

    def accepts(self, level: AlertLevel) -> bool:
        return level.rank >= AlertLevel.CRITICAL.rank

    async def deliver(self, alert: Alert) -> None:
        if self.hang:
            await asyncio.sleep(30)
        if self.refuse:
            raise DeliveryRefused("pager said no")
        self.received.append(alert)


def test_a_plugged_in_channel_meets_the_protocol_and_is_chosen_by_level() -> None:
    pager = Pager()
    assert isinstance(pager, AlertChannel)
    alerter = Alerter(alert_settings(console=False), FakeClock(), channels=[pager])
    assert alerter.channels_for(AlertLevel.WARNING) == []
    assert alerter.channels_for(AlertLevel.EMERGENCY) == ["pager"]


@pytest.mark.asyncio
async def test_a_plugged_in_channel_gets_scrubbed_throttled_alerts() -> None:
    pager, clock = Pager(), FakeClock()
    alerter = Alerter(alert_settings(console=False, throttle_seconds=60), clock, secrets=[API_KEY],
                      channels=[pager])
    first = await alerter.send(AlertLevel.CRITICAL, "Broker down", f"key {API_KEY} rejected",
                               fields={"api_key": API_KEY, "symbol": "AAPL"})
    assert first.sent == ["pager"]
    assert API_KEY not in pager.received[0].body and "***" in pager.received[0].body
    assert pager.received[0].fields == {"api_key": "***", "symbol": "AAPL"}
    repeat = await alerter.send(AlertLevel.CRITICAL, "Broker down", "again")
    assert repeat.throttled and len(pager.received) == 1
    clock.advance(61)
    await alerter.flush()
    assert len(pager.received) == 2 and "(suppressed 1 repeats)" in pager.received[1].body
    assert await alerter.send(AlertLevel.INFO, "fill", "quiet") and len(pager.received) == 2


@pytest.mark.asyncio
async def test_a_failing_or_hanging_plug_in_is_reported_and_bounded() -> None:
    alerter = Alerter(alert_settings(console=False), FakeClock(), channel_timeout=0.2,
                      channels=[Pager("pager", refuse=True), Pager("siren", hang=True), Pager("backup")])
    with structlog.testing.capture_logs() as logs:
        outcome = await alerter.send(AlertLevel.EMERGENCY, "Breaker", "tripped")
    assert outcome.failed == ["pager", "siren"] and outcome.sent == ["backup"]
    assert outcome.channels["siren"] == "failed: timed out after 0.2s"
    reasons = {e["channel"]: e["reason"] for e in events(logs, "alert_delivery_failed")}
    assert reasons["pager"] == "_DeliveryRefused: pager said no"


@pytest.mark.asyncio
async def test_a_plugged_in_channel_is_delivered_in_the_background_when_asked() -> None:
    pager = Pager()
    alerter = Alerter(alert_settings(console=False), FakeClock(), channels=[pager])
    alerter.deliver_in_background()
    outcome = await alerter.send(AlertLevel.EMERGENCY, "Breaker", "tripped")
    assert outcome.queued == ["pager"] and pager.received == []
    assert await alerter.drain(5) == 0
    assert [a.title for a in pager.received] == ["Breaker"]
    await alerter.aclose()
