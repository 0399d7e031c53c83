"""The daemon lives in the broker's time when the broker is a local simulator."""

from __future__ import annotations

import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from broker_clock import BrokerClock
from tests.e2e_helpers import Daemon, Simulator, make_run_paths, run_dir  # noqa: F401  (fixture)

T0 = datetime(2025, 3, 3, 15, 0, tzinfo=timezone.utc)


class FakeBroker:
    """A broker whose clock runs at ``rate`` x a fake wall clock."""

    def __init__(self, wall: list[float], rate: float) -> None:
        self.wall, self.rate = wall, rate

    async def get_clock(self) -> SimpleNamespace:
        return SimpleNamespace(timestamp=T0 + timedelta(seconds=self.wall[0] * self.rate))


async def test_clock_follows_the_broker_and_measures_its_rate() -> None:
    wall = [0.0]
    clock = BrokerClock(FakeBroker(wall, rate=60.0), wall=lambda: wall[0])
    with pytest.raises(RuntimeError):
        clock.now()
    assert await clock.sync() == T0
    wall[0] = 2.0
    assert clock.now() == T0 + timedelta(seconds=2)  # rate unknown yet: 1x
    await clock.sync()
    assert clock.rate == pytest.approx(60.0)
    wall[0] = 3.0
    assert clock.now() == T0 + timedelta(seconds=180)  # extrapolated at 60x


@pytest.mark.e2e
def test_paper_mode_against_a_local_simulator_uses_the_simulators_time(run_dir: Path) -> None:  # noqa: F811
    """``APCA_API_BASE_URL`` on loopback: the daemon's cycles carry the simulator's 2025 dates."""
    with Simulator(run_dir, ["--speed", "600", "--start", "2025-03-03T10:00:00-05:00",
                             "--symbols", "SPY,AAPL", "--no-rate-limit"]) as sim:
        env = {"APCA_API_KEY_ID": "PKTESTKEY0000", "APCA_API_SECRET_KEY": "testsecret0000",
               "APCA_API_BASE_URL": sim.url, "APCA_API_DATA_URL": sim.url,
               "TRADING_SCANNING__SYMBOLS": "SPY,AAPL"}
        with Daemon(["--mode", "paper"], make_run_paths(run_dir, "paper"), env=env) as daemon:
            cycle = daemon.wait_for("cycle_complete", lambda e: True, timeout=60)
            assert daemon.stop(signal.SIGTERM) == 0
    market_time = datetime.fromisoformat(cycle["market_time"])
    assert market_time.date().isoformat() == "2025-03-03", cycle
