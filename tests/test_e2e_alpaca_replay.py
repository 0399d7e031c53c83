"""Real Alpaca payloads through ``python main.py diagnose``, the daemon and ``status`` (issue 12,
items 3 and 6, and its acceptance check).

An Alpaca-like server on 127.0.0.1: :class:`tests.tamper_proxy.TamperProxy` in front of a
keyed ``python -m simulator`` that answers the endpoints below with the bodies of the fixture
corpus (``tests/fixtures/alpaca``: Alpaca's documentation, its SDK's tests, public bug
reports), whatever the simulator said; everything else (orders placed, the clock and calendar
the daemon runs on) stays the simulator's. The daemon and ``diagnose`` are subprocesses in
paper mode pointed at the proxy, as a user points them at Alpaca.

What must hold: every payload is accepted (no ``broker_item_dropped``, no malformed-response
error, no traceback), the values come out as sent (the fixture account's equity, its AAPL
position and bracket legs in ``status``), ``diagnose`` exits 0 (its only warnings are real
findings about old quotes and a closed market), and the daemon keeps cycling until SIGTERM.

The replayed state does not move: the bracket's legs stay listed whatever the daemon cancels
(the simulator answers 404 for ids it never issued), so the daemon reports, every cycle, that
the fixture's 5 AAPL shares, of which the legs cover 2, could not be protected. That is the
right reading of what it is shown, and no payload is refused for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from tests.e2e_helpers import (  # noqa: F401  (run_dir is a fixture)
    MAIN,
    PYTHON,
    Simulator,
    daemon_env,
    make_run_paths,
    named,
    read_events,
    run_dir,
)
from tests.tamper_proxy import TamperProxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

CORPUS = Path(__file__).parent / "fixtures" / "alpaca"
KEY, SECRET = "PKREPLAYKEY0001", "replay-secret-0001"
SYMBOLS = "AAPL,TSLA"

# (method, path glob) -> fixture whose body answers it.
TRADING_STATE = {
    ("GET", "/v2/account"): "trading/account_docs_v2.json",
    ("GET", "/v2/positions"): "trading/positions_alpaca_py.json",
    ("GET", "/v2/orders"): "trading/orders_bracket_filled_open_exits.json",
    ("GET", "/v2/account/activities*"): "trading/activities_fill_reference.json",
    ("GET", "/v2/assets"): "trading/assets_alpaca_py.json",
    ("GET", "/v2/assets/*"): "trading/asset_docs_single.json",
    ("GET", "/v2/stocks/quotes/latest"): "data/latest_quotes_multi_docs.json",
    ("GET", "/v2/stocks/trades/latest"): "data/latest_trades_multi_docs.json",
    ("GET", "/v2/stocks/snapshots"): "data/snapshots_multi_docs.json",
    ("GET", "/v2/stocks/bars"): "data/bars_multi_alpaca_py.json",
}
MARKET_CLOCK = {
    ("GET", "/v2/clock"): "trading/clock_alpaca_py.json",
    ("GET", "/v2/calendar"): "trading/calendar_alpaca_py.json",
}
BAD_EVENTS = ("broker_item_dropped", "cycle_failed", "malformed_response", "response_malformed",
              "broker_response_malformed")


def fixture_body(name: str) -> Any:
    return json.loads((CORPUS / name).read_text(encoding="utf-8"))["body"]


def substitute(proxy: TamperProxy, table: dict[tuple[str, str], str]) -> None:
    for (method, path), name in table.items():
        body = fixture_body(name)
        proxy.rewrite(method, path, lambda _answer, body=body: body)


def paper_env(url: str) -> dict[str, str]:
    return {"APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET, "APCA_API_BASE_URL": url,
            "APCA_API_DATA_URL": url, "TRADING_SCANNING__SYMBOLS": SYMBOLS}


async def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> tuple[int, str, str]:
    """``python main.py ARGS`` to completion, while this loop keeps serving the proxy."""
    proc = await asyncio.create_subprocess_exec(
        PYTHON, str(MAIN), *args, cwd=cwd, env=daemon_env(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def problems(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Log events saying a payload was refused."""
    return [e for e in events if e.get("event") in BAD_EVENTS
            or "Malformed" in str(e.get("error_type", "")) or "Malformed" in str(e.get("error", ""))]


@contextlib.asynccontextmanager
async def alpaca_like(workdir: Path) -> AsyncIterator[TamperProxy]:
    sim = Simulator(workdir, ["--key", KEY, "--secret", SECRET, "--speed", "60", "--symbols", SYMBOLS,
                              "--start", "2025-03-04T10:30:00-05:00", "--seed", "7"])
    try:
        async with TamperProxy(sim.url) as proxy:
            yield proxy
    finally:
        sim.stop()


async def test_diagnose_accepts_every_real_payload(run_dir: Path) -> None:
    paths = make_run_paths(run_dir, "diagnose")
    async with alpaca_like(run_dir) as proxy:
        substitute(proxy, {**TRADING_STATE, **MARKET_CLOCK})
        code, out, err = await run_cli(["diagnose", "--mode", "paper", *paths.flags()], paper_env(proxy.url),
                                       paths.workdir)
        served = {(m, p) for m, p in proxy.requests}
    assert "Traceback" not in err, err[-3000:]
    assert code == 0, out + err[-2000:]
    assert ("GET", "/v2/clock") in served and ("GET", "/v2/account") in served
    assert "broker clock 2022-05-16" in out  # the fixture's clock, read as sent
    assert "equity 103820.56" in out and "buying power 262113.632" in out
    assert "1 open orders listed" in out or "open orders listed" in out
    events = read_events(paths.log_file)
    assert problems(events) == []
    # The replayed clock answers but never moves: said as such, not as "no answer".
    assert not named(events, "broker_clock_unavailable")
    assert named(events, "broker_clock_rate_unmeasured")


async def test_the_daemon_and_status_accept_every_real_payload(run_dir: Path) -> None:
    paths = make_run_paths(run_dir, "daemon")
    async with alpaca_like(run_dir) as proxy:
        substitute(proxy, TRADING_STATE)
        proc = await asyncio.create_subprocess_exec(
            PYTHON, str(MAIN), "--mode", "paper", *paths.flags(), cwd=paths.workdir,
            env=daemon_env(paper_env(proxy.url)), stdout=subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while len(named(read_events(paths.log_file), "cycle_complete")) < 3:
                assert proc.returncode is None, "the daemon stopped"
                assert time.monotonic() < deadline, "no three cycles within 60 s"
                await asyncio.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            _, err_bytes = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        code, out, status_err = await run_cli(["status", *paths.flags()], {}, paths.workdir)
        served = {(m, p) for m, p in proxy.requests}
    err = err_bytes.decode()
    assert "Traceback" not in err, err[-3000:]
    assert proc.returncode == 0, err[-2000:]
    assert {("GET", "/v2/account"), ("GET", "/v2/positions"), ("GET", "/v2/orders")} <= served
    events = read_events(paths.log_file)
    assert problems(events) == [], problems(events)[:3]
    assert "system_shutdown" in {e["event"] for e in events}
    assert code == 0, status_err
    assert "Traceback" not in status_err
    assert "AAPL" in out and "103820.56" in out, out
