"""Safety paths proven by making them fire against the simulator over HTTP (issue 5, item 12).

Each test runs the daemon's own ``TradingSystem`` (real gateway, journal, alerter, executor,
risk/PDT/gap managers) against a simulator served on 127.0.0.1 at ``--speed max``, and moves
the market with the simulator's control API (``/_sim/v1/shock``, ``/_sim/v1/gap``), so a
cycle is one exact step and "within one cycle" can be asserted. What is asserted is what a
user sees: the broker's positions and orders, the journal, alerts and log events.
"""

from __future__ import annotations

import email.policy
import socket
import subprocess
from decimal import Decimal
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest
from aiosmtpd.controller import Controller
from structlog.testing import capture_logs

from tests.e2e_helpers import daemon_env
from tests.test_e2e_safety_support import (
    FAKE_KEY,
    FAKE_SECRET,
    PYTHON,
    ROOT,
    WIDE_STOPS,
    AlwaysBuy,
    AlwaysSell,
    PassThroughAnalyzer,
    SimStack,
    buy_by_hand,
    cycle,
    et,
    events,
    sim_stack,
    sleep_until,
    unprotected,
)
from engine.trading_state import TradingState
from engine.trading_system import TradingSystem

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

# Tuesday 2025-03-04, an hour into the session.
SESSION_START = "2025-03-04T10:30:00"
BREAKER_POSITIONS = {"SPY": 0.21, "QQQ": 0.21, "AAPL": 0.21, "MSFT": 0.21}


async def _held_and_protected(stack: SimStack, system: TradingSystem) -> dict[str, Decimal]:
    """Positions bought by hand, given protective stops by the daemon's start-up."""
    bought = await buy_by_hand(stack, BREAKER_POSITIONS)
    await system.startup()
    await cycle(system, minutes=1)
    positions, orders = await stack.positions(), await stack.open_orders()
    assert {p.symbol: p.qty for p in positions} == bought
    assert unprotected(positions, orders) == {}, "start-up must protect every position"
    return bought


async def test_circuit_breaker_flattens_within_one_cycle_and_latches_until_rearm(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start=SESSION_START, overrides=WIDE_STOPS) as stack:
        system = stack.new_system()
        await _held_and_protected(stack, system)
        stops = {leg.symbol: leg.stop_price for o in await stack.open_orders() for leg in [o, *(o.legs or [])]
                 if leg.type == "stop"}

        # An 8% drop everywhere: about 6.7% of equity, past the 5% breaker, yet far above
        # every protective stop, so the broker itself closes nothing.
        shocked = await stack.control("shock", {"symbols": "*", "pct": -8})
        assert all(Decimal(str(shocked["prices"][s])) > stops[s] for s in BREAKER_POSITIONS)
        assert len(await stack.positions()) == 4, "the stops must not have fired"

        with capture_logs() as logs:
            await cycle(system, minutes=1)

        # Within that one cycle: tripped, liquidated, halted; nothing left at the broker.
        assert await stack.positions() == []
        assert await stack.open_orders() == []
        tripped = events(logs, "circuit_breaker_triggered")
        assert len(tripped) == 1 and Decimal(tripped[0]["equity"]) < Decimal("95000")
        moves = [(e["from_state"], e["to_state"]) for e in events(logs, "trading_state_changed")]
        assert moves == [("active", "liquidating"), ("liquidating", "halted")]
        emergency = [e for e in events(logs, "alert") if e["alert_level"] == "emergency"]
        assert emergency and "CIRCUIT BREAKER" in emergency[0]["title"]
        assert events(logs, "emergency_liquidation")
        assert system.safety.state is TradingState.HALTED
        assert any(a["level"] == "emergency" and "CIRCUIT BREAKER" in a["title"] for a in stack.journal.alerts())
        saved = stack.journal.get_state("safety")
        assert saved is not None and saved["latched"] and saved["state"] == "halted"
        tripped_at = stack.clock.now()

        # Restart (new process state, same state db) the next session: still HALTED, and a
        # strategy that would buy everything enters nothing.
        stack.reopen_journal()
        await sleep_until(system, et("2025-03-05T10:00"))
        restarted = stack.new_system(analyzer=PassThroughAnalyzer(stack.clock))
        restarted.strategies = [AlwaysBuy(stack.settings)]
        assert restarted.safety.state is TradingState.HALTED
        with capture_logs() as logs:
            await restarted.startup()
            for _ in range(3):
                await cycle(restarted, minutes=1)
        assert restarted.safety.state is TradingState.HALTED
        assert not events(logs, "order_submitted") and not events(logs, "trade_intent")
        entries_after_trip = [o for o in await stack.all_orders()
                              if o.side == "buy" and o.submitted_at and o.submitted_at >= tripped_at]
        assert entries_after_trip == []

        # Only the operator re-arms it: `python main.py rearm --reason ...` (journaled).
        result = subprocess.run(
            [PYTHON, "main.py", "rearm", "--reason", "e2e: loss reviewed", "--state-db",
             stack.settings.storage.state_db, "--log-file", str(tmp_path / "cli.jsonl")],
            cwd=ROOT, env=daemon_env(), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        with capture_logs() as logs:
            await cycle(restarted, minutes=1)
        assert [e["reason"] for e in events(logs, "rearmed")] == ["e2e: loss reviewed"]
        assert restarted.safety.state is TradingState.ACTIVE
        applied = stack.journal.events(kind="rearm_applied")
        assert [e["payload"]["reason"] for e in applied] == ["e2e: loss reviewed"]
        # ... and the same strategy now enters (the latch, nothing else, was blocking it).
        assert events(logs, "order_submitted"), "entries must resume after the re-arm"


# -- alerts by e-mail -------------------------------------------------------------------------


class _Inbox:
    """An SMTP server's mailbox (aiosmtpd handler)."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        return [message_from_bytes(e.content, policy=email.policy.default) for e in self.envelopes]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_inbox() -> Iterator[tuple[_Inbox, int]]:
    inbox, port = _Inbox(), _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


async def test_breaker_alert_email_reaches_a_real_smtp_server_without_secrets(
        tmp_path: Path, smtp_inbox: tuple[_Inbox, int]) -> None:
    inbox, port = smtp_inbox
    environ = {  # configured the way a user does it: through the environment
        "APCA_API_KEY_ID": FAKE_KEY, "APCA_API_SECRET_KEY": FAKE_SECRET, "TRADING_MODE": "sim",
        "TRADING_ALERTS__EMAIL_ENABLED": "true", "TRADING_ALERTS__SMTP_HOST": "127.0.0.1",
        "TRADING_ALERTS__SMTP_PORT": str(port), "TRADING_ALERTS__SMTP_STARTTLS": "false",
        "TRADING_ALERTS__EMAIL_FROM": "daemon@example.test",
        "TRADING_ALERTS__EMAIL_TO": "oncall@example.test",
    }
    async with sim_stack(tmp_path, start=SESSION_START, overrides=WIDE_STOPS, environ=environ,
                         key_pair=(FAKE_KEY, FAKE_SECRET)) as stack:
        assert stack.settings.alerts.email_enabled and stack.settings.has_api_keys
        system = stack.new_system()
        await _held_and_protected(stack, system)
        await stack.control("shock", {"symbols": "*", "pct": -8})
        await cycle(system, minutes=1)
        assert system.safety.state is TradingState.HALTED and await stack.positions() == []

    messages = inbox.messages()
    subjects = [m["Subject"] for m in messages]
    emergency = [m for m in messages if m["Subject"].startswith("[EMERGENCY]")]
    assert len(emergency) == 1, subjects
    mail = emergency[0]
    assert "CIRCUIT BREAKER" in mail["Subject"]
    assert mail["From"] == "daemon@example.test" and mail["To"] == "oncall@example.test"
    body = mail.get_content()
    assert "circuit breaker" in body.lower() and "Level EMERGENCY" in body
    # CRITICAL is mailed too: the start-up alert listed the unprotected positions it found.
    startup = [m for m in messages if m["Subject"] == "[CRITICAL] STARTUP ALERT: unprotected positions"]
    assert len(startup) == 1 and all(s in startup[0].get_content() for s in BREAKER_POSITIONS)
    # Below CRITICAL nothing is mailed (liquidating -> halted is a WARNING).
    assert all(s.startswith(("[EMERGENCY]", "[CRITICAL]")) for s in subjects), subjects
    for envelope in inbox.envelopes:
        raw = envelope.content.decode("utf-8", "replace")
        assert FAKE_KEY not in raw and FAKE_SECRET not in raw


# -- overnight gaps -------------------------------------------------------------------------


async def _hold_overnight_then_gap(stack: SimStack, system: TradingSystem, pct: float) -> list[Mapping[str, Any]]:
    """Hold AAPL and MSFT through the close, make AAPL's next open gap ``pct`` percent, and
    run the loop through the next pre-market and open. Returns the captured log events."""
    await buy_by_hand(stack, {"AAPL": 0.2, "MSFT": 0.2})
    await system.startup()
    await cycle(system, minutes=1)
    await sleep_until(system, et("2025-03-04T16:01"))
    await cycle(system, minutes=0)  # the first cycle after the close records the closing snapshot
    assert stack.journal.get_state("closing_snapshot")["session_date"] == "2025-03-04"
    scheduled = await stack.control("gap", {"symbols": ["AAPL"], "pct": pct})
    assert scheduled["open"].startswith("2025-03-05T14:30")
    with capture_logs() as logs:
        await sleep_until(system, et("2025-03-05T09:00"))
        pre = await cycle(system, minutes=0)
        assert pre.phase == "pre"
        await sleep_until(system, et("2025-03-05T09:31"))
        opened = await cycle(system, minutes=0)
        assert opened.phase == "regular"
    return logs


@pytest.mark.parametrize(("pct", "level", "alerted"), [(-3, "moderate", True), (-1, "low", False)])
async def test_gap_at_the_open_gets_its_level_and_an_alert_above_two_percent(
        tmp_path: Path, pct: float, level: str, alerted: bool) -> None:
    async with sim_stack(tmp_path, start=SESSION_START, overrides=WIDE_STOPS) as stack:
        system = stack.new_system()
        logs = await _hold_overnight_then_gap(stack, system, pct)
        assert {p.symbol for p in await stack.positions()} == {"AAPL", "MSFT"}, "wide stops hold"

    # Assessed at the pre-market and again at the open, each time against the close.
    assessed = {e["phase"]: e for e in events(logs, "gap_risk_assessed")}
    assert set(assessed) == {"pre", "regular"}
    for phase, report in assessed.items():
        assert report["level"] == level, (phase, report)
        aapl = [i for i in report["items"] if i["symbol"] == "AAPL"][0]
        assert abs(Decimal(str(aapl["gap_pct"])) - Decimal(pct) / 100) < Decimal("0.006")
    gaps = [e for e in events(logs, "gap_risk") if e["symbol"] == "AAPL"]
    alerts = [e for e in events(logs, "alert") if "Gap risk" in e["title"]]
    if alerted:
        assert {e["phase"] for e in gaps} == {"pre", "regular"}
        assert all(e["level"] == level and Decimal(e["dollar_impact"]) < 0 for e in gaps)
        assert alerts and all(a["alert_level"] == "warning" and level in a["title"].lower() for a in alerts)
    else:
        assert gaps == [] and alerts == [], "below the 2% alert threshold nothing is raised"
    assert not [e for e in events(logs, "defensive_mode") if e["active"]], "only HIGH turns defensive"


async def test_high_gap_switches_on_defensive_mode(tmp_path: Path) -> None:
    async with sim_stack(tmp_path, start=SESSION_START, overrides=WIDE_STOPS) as stack:
        system = stack.new_system()
        logs = await _hold_overnight_then_gap(stack, system, -5)
        defensive = stack.journal.get_state("defensive")

    gaps = [e for e in events(logs, "gap_risk") if e["symbol"] == "AAPL"]
    assert gaps and gaps[0]["level"] == "high"
    alerts = [e for e in events(logs, "alert") if "Gap risk" in e["title"]]
    assert alerts and alerts[0]["alert_level"] == "critical"
    assert defensive is not None and defensive["active"] and defensive["session"] == "2025-03-05"
    switched = [e for e in events(logs, "defensive_mode") if e["active"]]
    assert switched and any("gap" in r for r in switched[0]["reasons"])


# -- day trading ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "budget", "blocked", "regime"),
    [
        ("2025-03-04T10:00:00", None, True, "legacy"),            # the PDT rule: 4th day trade under $25k
        ("2026-07-07T10:00:00", None, False, "intraday_margin"),  # rule retired 2026-06-04
        ("2026-07-07T10:00:00", 3, True, "intraday_margin"),      # unless the self-imposed budget says no
    ],
    ids=["2025-legacy-blocked", "2026-07-allowed", "2026-07-budget-blocked"],
)
async def test_fourth_day_trade_under_25k(tmp_path: Path, start: str, budget: int | None,
                                          blocked: bool, regime: str) -> None:
    environ = {"TRADING_PDT__MAX_DAY_TRADES": str(budget)} if budget is not None else {}
    async with sim_stack(tmp_path, start=start, cash=20000, environ=environ) as stack:
        assert stack.settings.pdt.max_day_trades == budget
        system = stack.new_system()
        system.strategies = [AlwaysSell(stack.settings)]  # every held position gets a strategy exit
        await system.startup()
        await cycle(system, minutes=1)

        # Three day trades: bought (by hand) and sold by the loop's strategy exit the same session.
        for symbol in ("AAPL", "MSFT", "QQQ"):
            await buy_by_hand(stack, {symbol: 0.1}, prefix=f"dt-{symbol}")
            await cycle(system, minutes=1)
            await cycle(system, minutes=1)
            assert await stack.positions() == [], f"the exit of {symbol} went through"
        session = system.safety.session_date
        assert len([d for d in stack.journal.day_trades(since=session) if d[1] == session]) == 3
        account = await stack.gateway.get_account()
        assert account.equity < 25000
        if regime == "legacy":
            assert account.daytrade_count == 3, "the broker counts the same three"
        else:
            assert account.daytrade_count is None, "no PDT fields after the rule's retirement"

        # The fourth.
        await buy_by_hand(stack, {"SPY": 0.1}, prefix="dt-SPY")
        with capture_logs() as logs:
            await cycle(system, minutes=1)
            await cycle(system, minutes=1)
        held = {p.symbol for p in await stack.positions()}
        # The daemon's own PDT check (the broker's 40310100 refusals carry no regime).
        pdt_blocks = [e for e in events(logs, "pdt_blocked") if e["symbol"] == "SPY" and "regime" in e]
        exits = [e for e in events(logs, "order_submitted")
                 if e["side"] == "sell" and e.get("strategy") != "protection"]
        if blocked:
            assert held == {"SPY"}, "the 4th day trade must not be sent"
            assert pdt_blocks and all(e["regime"] == regime and e["day_trade"] for e in pdt_blocks)
            expected = "self-imposed budget" if budget is not None else "would be day trade 4"
            assert expected in pdt_blocks[0]["reason"]
            assert events(logs, "exit_deferred")
            assert exits == []
        else:
            assert held == set(), "after 2026-06-04 the 4th day trade goes through"
            assert pdt_blocks == [] and len(exits) == 1
