"""The daemon lives in the broker's time when the broker is a local simulator."""

from __future__ import annotations

import asyncio
import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from structlog.testing import capture_logs

from broker.broker_clock import BrokerClock
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


class ScriptedBroker:
    """A broker whose clock is a piecewise line in fake wall time: ``jump`` moves it at once,
    ``set_rate`` changes its speed; ``fail`` makes the next reads raise (an outage)."""

    def __init__(self, rate: float) -> None:
        self.wall = 0.0
        self.rate = rate
        self._anchor, self._anchor_wall = T0, 0.0
        self.reads = 0
        self.fail = False

    def broker_now(self) -> datetime:
        return self._anchor + timedelta(seconds=(self.wall - self._anchor_wall) * self.rate)

    def jump(self, seconds: float) -> None:
        self._anchor, self._anchor_wall = self.broker_now() + timedelta(seconds=seconds), self.wall

    def set_rate(self, rate: float) -> None:
        self._anchor, self._anchor_wall = self.broker_now(), self.wall
        self.rate = rate

    async def read_clock_once(self) -> SimpleNamespace:
        self.reads += 1
        if self.fail:
            raise ConnectionError("broker down")
        return SimpleNamespace(timestamp=self.broker_now())

    async def sleep(self, seconds: float) -> None:  # the clock's wall sleep: fake time moves
        self.wall += seconds
        await asyncio.sleep(0)


def scripted_clock(broker: ScriptedBroker, resync: float = 1.0) -> BrokerClock:
    return BrokerClock(broker, resync_seconds=resync, wall=lambda: broker.wall, sleep=broker.sleep)


async def calibrated(broker: ScriptedBroker) -> BrokerClock:
    clock = scripted_clock(broker)
    for _ in range(3):
        await clock.sync()
        broker.wall += 1.0
    await clock.sync()
    return clock


async def test_the_clock_reads_the_broker_once_per_sync_never_with_retries() -> None:
    broker = ScriptedBroker(rate=60)
    broker.fail = True
    clock = scripted_clock(broker)
    with pytest.raises(ConnectionError):
        await clock.sync()
    assert broker.reads == 1  # one attempt: the clock's own loop decides when to read again


async def test_a_jump_re_anchors_at_once_and_is_logged() -> None:
    broker = ScriptedBroker(rate=60)
    clock = await calibrated(broker)
    broker.jump(2000 * 60)  # python -m simulator advance 2000
    broker.wall += 0.5
    with capture_logs() as logs:
        await clock.sync()
    assert clock.now() == broker.broker_now()
    jumps = [e for e in logs if e["event"] == "broker_clock_jump"]
    assert len(jumps) == 1 and jumps[0]["offset_seconds"] == pytest.approx(120_000, rel=0.01)
    # the jump is not a speed: the clock keeps 60x and does not race ahead of the broker
    broker.wall += 1.0
    await clock.sync()
    assert clock.rate == pytest.approx(60)
    broker.wall += 0.5
    assert clock.now() == broker.broker_now()


async def test_a_night_crossed_in_a_second_is_not_taken_for_the_speed() -> None:
    """The simulator crosses a closed period in about one wall second; the clock that took
    that slope for its rate raced hours ahead of the broker ("closed until 03-10" at 03-05)."""
    broker = ScriptedBroker(rate=60)
    clock = await calibrated(broker)
    broker.set_rate(8 * 3600)  # eight hours of night in one wall second
    broker.wall += 1.0
    await clock.sync()
    broker.set_rate(60)  # pre-market again
    broker.wall += 1.0
    await clock.sync()
    assert clock.rate == pytest.approx(60)
    broker.wall += 1.0
    assert abs((clock.now() - broker.broker_now()).total_seconds()) < 1


async def test_a_speed_change_is_noticed_at_the_next_reading_and_adopted_soon() -> None:
    broker = ScriptedBroker(rate=60)
    clock = await calibrated(broker)
    broker.set_rate(1200)
    with capture_logs() as logs:
        for _ in range(3):
            broker.wall += 1.0
            await clock.sync()
            assert clock.now() == broker.broker_now()  # re-anchored at every reading
    assert clock.rate == pytest.approx(1200)
    assert [e["new_rate"] for e in logs if e["event"] == "broker_clock_rate_changed"] == [
        pytest.approx(1200)]
    assert any(e["event"] == "broker_clock_jump" for e in logs)
    broker.set_rate(60)  # slowing down is believed after two readings (running ahead costs)
    for _ in range(2):
        broker.wall += 1.0
        await clock.sync()
    assert clock.rate == pytest.approx(60)


async def test_sleep_re_reads_the_broker_every_chunk_and_ends_at_the_brokers_time() -> None:
    broker = ScriptedBroker(rate=60)
    clock = await calibrated(broker)
    target = broker.broker_now() + timedelta(hours=1)
    reads = broker.reads
    await clock.sleep(3600)  # one market hour at 60x: a minute of wall time in 1 s chunks
    assert broker.broker_now() >= target
    assert broker.broker_now() - target < timedelta(seconds=60)
    assert broker.reads - reads >= 55


async def test_sleep_returns_early_when_the_broker_jumps_so_the_caller_re_plans() -> None:
    broker = ScriptedBroker(rate=60)
    clock = await calibrated(broker)
    start = broker.wall

    async def advance_soon() -> None:
        while broker.wall - start < 3:
            await asyncio.sleep(0)
        broker.jump(2000 * 60)

    jumper = asyncio.ensure_future(advance_soon())
    await clock.sleep(6 * 3600)  # six market hours at 60x would be six wall minutes
    await jumper
    assert broker.wall - start <= 5  # woke within a chunk or two of the jump


async def test_sleep_speeding_up_mid_way_never_sleeps_through_the_session() -> None:
    """Planned at 1x, the broker switches to 1200x: the sleep must not last its planned
    wall time (30 s at 1x were ten market hours at 1200x)."""
    broker = ScriptedBroker(rate=1)
    clock = await calibrated(broker)
    broker.set_rate(1200)
    start_market = broker.broker_now()
    await clock.sleep(30)
    assert broker.broker_now() - start_market < timedelta(minutes=30)


async def test_sleep_keeps_its_wall_bound_while_the_broker_is_down() -> None:
    broker = ScriptedBroker(rate=60)
    clock = await calibrated(broker)
    broker.fail = True
    start = broker.wall
    await clock.sleep(600)  # ten market minutes at the last known 60x: ten wall seconds
    assert broker.wall - start == pytest.approx(10, abs=1.01)


def test_backoffs_and_pauses_never_use_a_clock_that_reads_the_broker() -> None:
    from core.clock import WallClock, pause_clock
    from main import BrokerClockProxy
    from simulator.clock import SimClock

    assert isinstance(pause_clock(BrokerClockProxy()), WallClock)
    assert isinstance(pause_clock(scripted_clock(ScriptedBroker(rate=60))), WallClock)
    sim = SimClock(start=T0, speed=None)
    assert pause_clock(sim) is sim  # the in-process simulator's time asks nobody


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
