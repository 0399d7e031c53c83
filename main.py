"""The trading daemon's command line.

``python main.py`` trades: against the embedded simulator when no Alpaca keys are configured
(SIM mode), Alpaca paper with keys, live only with an explicit opt-in. Subcommands:
``diagnose``, ``status``, ``halt``, ``rearm``, ``train``, ``backtest``, ``report``.

Exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration or arguments (one line per
problem on stderr, before anything touches the broker), 3 ``diagnose`` found a problem.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import gc
import os
import signal
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Sequence
from urllib.parse import urlparse

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_UNHEALTHY = 0, 1, 2, 3

BANNER_SIM = """\
==============================================================================
  SIM MODE: trading the embedded Alpaca-compatible simulator at {url}
  Why: {why}
  Speed: {speed}   Symbols: {symbols}
  Nothing here touches a real broker. Set APCA_API_KEY_ID and APCA_API_SECRET_KEY
  (see .env.example) to paper trade on Alpaca.
=============================================================================="""


# The demo day: with the default seed and no --start, the synthetic market opens on a session
# in which the default universe trades within the first simulated hour (an entry a few
# seconds in, a strategy exit well within a minute at the default 300x), so a newcomer sees
# the whole cycle at once. The market is synthetic: the date is only a name for that day.
DEMO_SEED = 42
DEMO_START = "2026-11-25T10:55:00-05:00"


class ArgumentError(Exception):
    """A bad command line; the message is one line for stderr."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ArgumentError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="main.py", description="AI-driven trading daemon for US equities on Alpaca.")
    # SUPPRESS: a subcommand must not reset a flag given before it to None
    # (python main.py --state-db X status); the top-level parser supplies the None defaults.
    common = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--mode", choices=["sim", "paper", "live"], help="broker mode (default: sim without keys, paper with keys)")
    common.add_argument("--profile", choices=["default", "conservative", "aggressive"], help="risk profile")
    common.add_argument("--config", type=Path, help="TOML config file (default: $TRADING_CONFIG)")
    common.add_argument("--sim-days", type=int, help="stop after N simulated sessions and print a summary")
    common.add_argument("--speed", help="simulator speed: a factor (60 = a market minute per second) or 'max'")
    common.add_argument("--data", help="CSV data directory for the simulator or backtest (layout of shared/data)")
    common.add_argument("--symbols", help="comma-separated symbols to trade, e.g. SPY,AAPL")
    common.add_argument("--log-file", help="JSON-lines log file (default logs/trading.jsonl)")
    common.add_argument("--state-db", help="SQLite state file (default data/trading_state.db)")
    common.add_argument("--seed", type=int, help="simulator seed")
    common.add_argument("--start", help="simulated start (ISO-8601 or YYYY-MM-DD)")
    common.add_argument("--http", type=http_flag, metavar="PORT|HOST:PORT|off",
                        help="the /health, /metrics and dashboard endpoint (default 127.0.0.1:8686; "
                             "0 = any free port; off = none; a non-loopback HOST needs TRADING_HTTP_TOKEN)")
    parser.add_argument("--version", action="version", version="trading-daemon 0.1")
    sub = parser.add_subparsers(dest="command")
    for name, help_text in [
        ("run", "run the trading loop (the default)"),
        ("diagnose", "check configuration, broker, data and safety systems; exit 0 when healthy"),
        ("status", "equity, P&L, positions and protection, open orders, day trades, breaker state"),
    ]:
        sub.add_parser(name, parents=[common], help=help_text)
    for name, help_text in [("halt", "flatten and latch the running daemon within one cycle"),
                            ("rearm", "re-arm a tripped circuit breaker or an operator halt")]:
        p = sub.add_parser(name, parents=[common], help=help_text)
        p.add_argument("--reason", required=True, help="why (journaled)")
    p = sub.add_parser("train", parents=[common], help="train the AI confidence model on daily CSV bars")
    p.add_argument("--out", type=Path, help="model file (default: ai.model_path)")
    p = sub.add_parser("evaluate", parents=[common],
                       help="walk-forward out-of-sample probabilities, their calibration and skill (CSV + plot)")
    p.add_argument("--end", help="last decision date (YYYY-MM-DD)")
    p.add_argument("--population", choices=["proposals", "sessions"], default="proposals",
                   help="ideas the pipeline proposes (default) or every session with the default bracket")
    p.add_argument("--horizon", type=int, default=20, help="sessions an idea without its own holding time may take")
    p.add_argument("--out", type=Path, required=True, help="CSV of every idea and its probability")
    p = sub.add_parser("backtest", parents=[common], help="run the strategies over history")
    p.add_argument("--end", help="last date (YYYY-MM-DD)")
    p.add_argument("--strategies", help="comma-separated strategy names")
    p.add_argument("--report", type=Path, help="directory for the HTML and JSON report")
    p.add_argument("--no-fast-forward", action="store_true",
                   help="run the loop on every session, also where it provably has nothing to do")
    p = sub.add_parser("credentials", help="store, show (masked) or delete the Alpaca keys, encrypted")
    p.add_argument("action", choices=["set", "show", "delete"])
    p.add_argument("--file", type=Path, help="credentials file (default: $TRADING_CREDENTIALS_FILE or data/credentials.enc)")
    p.add_argument("--from-env", action="store_true",
                   help="set: take APCA_API_KEY_ID / APCA_API_SECRET_KEY from the environment or .env")
    p = sub.add_parser("report", parents=[common], help="performance report of a paper or live run from the journal")
    p.add_argument("--out", type=Path, default=Path("reports"), help="report directory")
    # flags also accepted before the subcommand (python main.py --sim-days 1)
    for action in common._actions:
        if action.option_strings and action.dest != "help":
            top_level = copy.copy(action)
            top_level.default = None
            parser._add_action(top_level)
    return parser


def http_flag(value: str) -> dict[str, Any]:
    """``--http``: ``off``, ``PORT`` or ``HOST:PORT`` as ``http.*`` overrides."""
    text = value.strip()
    if text.lower() == "off":
        return {"http.enabled": False}
    host, sep, port = text.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535 or (sep and not host.strip("[]")):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a port (0-65535), HOST:PORT or 'off' (e.g. --http 8686, --http off)")
    out: dict[str, Any] = {"http.enabled": True, "http.port": int(port)}
    if sep:
        out["http.host"] = host.strip("[]")
    return out


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as config overrides (None: flag not given)."""
    out: dict[str, Any] = {
        "mode": args.mode,
        "sim.days": args.sim_days,
        "sim.speed": args.speed,
        "sim.data_dir": args.data,
        "sim.seed": args.seed,
        "sim.start": args.start,
        "storage.log_file": args.log_file,
        "storage.state_db": args.state_db,
    }
    if getattr(args, "http", None):
        out.update(args.http)
    if args.symbols:
        out["scanning.symbols"] = [s.strip() for s in args.symbols.split(",") if s.strip()]
    elif args.data and (getattr(args, "command", None) or "run") == "run":
        out["scanning.symbols"] = data_dir_symbols(args.data)
    return {k: v for k, v in out.items() if v is not None}


def data_dir_symbols(data_dir: str) -> list[str] | None:
    """``--data DIR`` without ``--symbols``: every symbol DIR holds bars of, as ``backtest``
    does (the default universe is rarely what a folder of CSVs holds); None when DIR holds
    none (or is no folder: that gets its own line later)."""
    from backtest.data import symbols_in_dir

    folder = Path(data_dir)
    return (symbols_in_dir(folder) or None) if folder.is_dir() else None


def load(args: argparse.Namespace) -> Any:
    import config

    return config.load_settings(config_file=args.config, profile=args.profile,
                                overrides=overrides_from_args(args))


def main(argv: Sequence[str] | None = None) -> int:
    """The entry point. Every file and folder the run creates is owner-only (umask 077: state
    DB and its -wal/-shm, logs, reports, key files); the umask is restored on return."""
    from core.private_files import owner_only_umask

    previous = owner_only_umask()
    try:
        return _main(argv)
    finally:
        os.umask(previous)


def _main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except ArgumentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    command = args.command or "run"
    if command == "credentials":  # before the settings: loading them may need the store
        from ops.credentials import run as run_credentials

        return run_credentials(args.action, file=args.file, from_env=args.from_env)
    import config
    from core.errors import ConfigError, OperationalError

    try:
        settings = load(args)
    except ConfigError as exc:
        print(config.format_problems(exc), file=sys.stderr)
        return EXIT_CONFIG
    fresh_sim_state = use_mode_state_db(settings)
    if command in ("status", "halt", "rearm"):
        # before logging is set up: a mistyped --state-db must leave nothing behind
        problem = operator_command_problem(settings, command, getattr(args, "reason", None))
        if problem is not None:
            print(problem, file=sys.stderr)
            return EXIT_CONFIG
    problems = path_problems(settings, command, args)
    if problems:
        print(config.format_problems(ConfigError(problems)), file=sys.stderr)
        return EXIT_CONFIG
    from core import logging_setup

    try:
        logging_setup.configure(log_file=settings.storage.log_file, level=settings.storage.log_level,
                                secrets=settings.secret_values())
    except OSError as exc:
        print(f"config error: storage.log_file={settings.storage.log_file!r}: cannot open it "
              f"({exc.strerror or exc}); give --log-file a file path in a writable folder", file=sys.stderr)
        return EXIT_CONFIG
    run_id = logging_setup.new_run_id()
    logging_setup.bind_run(run_id)
    try:
        if command == "run":
            return asyncio.run(run_daemon(settings, run_id, fresh_state=fresh_sim_state))
        if command == "diagnose":
            return asyncio.run(run_diagnose(settings))
        if command == "status":
            return asyncio.run(run_status(settings))
        if command in ("halt", "rearm"):
            return queue_operator_command(settings, command, args.reason)
        if command == "train":
            return run_train(settings, args)
        if command == "evaluate":
            return run_evaluate(settings, args)
        if command == "backtest":
            return run_backtest(settings, args)
        if command == "report":
            return run_report(settings, args)
    except ConfigError as exc:
        print(config.format_problems(exc), file=sys.stderr)
        return EXIT_CONFIG
    except OperationalError as exc:
        # the broker refuses us for good (bad keys, blocked account): one line, not a traceback
        import structlog

        structlog.get_logger("main").critical("operational_error", error=str(exc), code=exc.code,
                                              status=exc.status)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        logging_setup.shutdown()
    return EXIT_OK


# -- paths the user named ------------------------------------------------------------------


def path_problems(settings: Any, command: str, args: argparse.Namespace) -> list[str]:
    """One line per file or folder argument that cannot be used, before anything runs (a
    training run must not spend minutes and then fail to write its model)."""
    checks: list[tuple[str, Path, bool]] = [
        ("storage.state_db", Path(settings.storage.state_db), False),
        ("storage.log_file", Path(settings.storage.log_file), False),
    ]
    if command == "report":
        checks.append(("report --out", Path(args.out), True))
    if command == "backtest" and getattr(args, "report", None) is not None:
        checks.append(("backtest --report", Path(args.report), True))
    if command == "train":
        checks.append(("train --out", Path(args.out or settings.ai.model_path), False))
    if command == "evaluate":
        checks.append(("evaluate --out", Path(args.out), False))
    problems = []
    data_dir = settings.sim.data_dir
    if data_dir and not Path(data_dir).is_dir():
        problems.append(f"sim.data_dir={data_dir!r} (--data): no such directory; give a folder of "
                        "CSV bars (daily/SYMBOL-1d-*.csv, intraday/SYMBOL-1m-*.csv)")
    for what, path, is_dir in checks:
        problem = _path_problem(path, is_dir)
        if problem is not None:
            problems.append(f"{what}={str(path)!r}: {problem}")
    return problems


def _path_problem(path: Path, is_dir: bool) -> str | None:
    """Why ``path`` cannot be used as a directory (``is_dir``) or a file, or None."""
    if is_dir and path.exists() and not path.is_dir():
        return "is a file; give a directory (it is created if missing)"
    if not is_dir and path.is_dir():
        return "is a directory; give a file path"
    for parent in (path if is_dir else path.parent, *(path if is_dir else path.parent).parents):
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, so no folder can be made there; give another path"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"folder {parent} is not writable; give another path"
            return None
    return None


# -- broker wiring -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_broker(settings: Any, *, announce: bool = True) -> AsyncIterator[tuple[Any, Any, str]]:
    """The broker gateway and clock for the configured mode: (gateway, clock, base_url).

    In SIM mode the simulator is started in this process on a free loopback port and
    the gateway talks to it over real HTTP, exactly as it would to Alpaca.
    """
    from api_gateway import ResilientAlpacaGateway
    from core.clock import WallClock, pause_clock
    from config import is_loopback_host
    from core.errors import ConfigError
    from broker.rate_limit import RateLimiter

    server = None
    if settings.mode == "sim":
        from simulator.core import SimulatorCore
        from simulator.server import start_server

        sim = settings.sim
        start = sim.start
        if start is None and sim.data_dir is None and sim.seed == DEMO_SEED:
            start = DEMO_START
        try:
            core = SimulatorCore.create(data_dir=sim.data_dir, symbols=list(settings.scanning.symbols),
                                        seed=sim.seed, start=start, speed=sim.speed, cash=sim.cash,
                                        faults=sim.faults)
        except ValueError as exc:  # a bad data file (CsvDataError names file and line), no data
            raise ConfigError([f"simulator: {exc}"]) from None
        # A key pair made for this run: the embedded simulator's trading and control APIs
        # answer only the daemon, not any other local process or web page that finds the port.
        key, secret = embedded_sim_keys()
        server = await start_server(core, host="127.0.0.1", port=0, rate_limit_per_minute=None,
                                    key=key, secret=secret)
        base_url = data_url = server.base_url
        clock = core.clock
        if announce:
            print(BANNER_SIM.format(
                url=base_url,
                why="no Alpaca API keys are configured" if not settings.has_api_keys else "--mode sim was chosen",
                speed="max" if sim.speed is None else f"{sim.speed:g}x",
                symbols=",".join(settings.scanning.symbols)), flush=True)
        limiter = RateLimiter(max_per_minute=settings.rate_limit.max_requests_per_minute,
                              buffer=settings.rate_limit.rate_limit_buffer,
                              burst_allowance=settings.rate_limit.burst_allowance,
                              cooldown_seconds=settings.rate_limit.cooldown_seconds,
                              monotonic=lambda: clock.now().timestamp(), sleep=clock.sleep)
    else:
        base_url, data_url = settings.api.base_url, settings.api.data_url
        follow_broker = settings.api.clock == "broker" or (
            settings.api.clock == "auto" and is_loopback_host(urlparse(base_url or "").hostname))
        clock = BrokerClockProxy() if follow_broker else WallClock()
        limiter = RateLimiter(max_per_minute=settings.rate_limit.max_requests_per_minute,
                              buffer=settings.rate_limit.rate_limit_buffer,
                              burst_allowance=settings.rate_limit.burst_allowance,
                              cooldown_seconds=settings.rate_limit.cooldown_seconds)
        key = settings.api.key_id.get_secret_value() if settings.api.key_id else None
        secret = settings.api.secret_key.get_secret_value() if settings.api.secret_key else None
    gateway = ResilientAlpacaGateway(
        base_url=base_url, data_url=data_url, key_id=key, secret_key=secret, mode=settings.mode,
        live_enabled=settings.live_trading_enabled, timeout=settings.api.timeout_seconds,
        max_retries=settings.api.max_retries, backoff_base=settings.api.backoff_base_seconds,
        backoff_max=settings.api.backoff_max_seconds, rate_limiter=limiter,
        max_quote_age=settings.data_quality.max_quote_age_seconds, data_feed=settings.api.data_feed,
        # backoffs wait in wall time (or the in-process simulator's own time), never on the
        # broker-following clock: its every read is a request that could retry in turn
        clock=clock, sleep=pause_clock(clock).sleep,
    )
    try:
        async with gateway:
            if isinstance(clock, BrokerClockProxy):
                await clock.attach(gateway)
            yield gateway, clock, base_url
    finally:
        if server is not None:
            await server.stop()


def embedded_sim_keys() -> tuple[str, str]:
    """A fresh random key pair for the embedded simulator, registered with the log redactor."""
    import secrets

    from core import logging_setup

    key, secret = "SIM" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
    logging_setup.add_secret(key)
    logging_setup.add_secret(secret)
    return key, secret


class BrokerClockProxy:
    """A :class:`broker.broker_clock.BrokerClock` that can be handed out before the gateway exists
    (the gateway needs a clock; the clock needs the gateway). Until the broker's clock has
    been read once it tells wall time, and keeps trying to read it.

    ``attach`` reads the broker's clock twice, a moment apart, so that the first sleep is
    planned at the broker's measured speed (assuming 1x made the first 30 s sleep ten market
    hours at 1200x); it gives up after ``ATTACH_SECONDS`` of wall time (a broker that hangs
    must not hold up start-up, ``diagnose`` or a shutdown)."""

    follows_broker = True  # backoffs use the wall clock (clock.pause_clock)
    ATTACH_SECONDS = 3.0
    CALIBRATION_SECONDS = 0.3
    UNSYNCED_CHUNK_SECONDS = 1.0

    def __init__(self) -> None:
        self._clock: Any = None
        self._synced = False

    async def attach(self, gateway: Any) -> None:
        from broker.broker_clock import BrokerClock

        self._clock = BrokerClock(gateway, read=gateway.read_clock_once)
        try:
            async with asyncio.timeout(self.ATTACH_SECONDS):
                if await self._try_sync():
                    while not self._clock.rate_measured:
                        await asyncio.sleep(self.CALIBRATION_SECONDS)
                        await self._clock.try_sync()
        except TimeoutError:
            import structlog

            if self._synced:  # it answered, but its time did not move (a replayed or frozen clock)
                structlog.get_logger("main").warning(
                    "broker_clock_rate_unmeasured",
                    reason=f"the broker's clock did not advance within {self.ATTACH_SECONDS:g}s; rate 1 assumed")
            else:
                structlog.get_logger("main").warning(
                    "broker_clock_unavailable", error=f"no answer within {self.ATTACH_SECONDS:g}s")

    async def _try_sync(self) -> bool:
        try:
            await self._clock.sync()
            self._synced = True
        except Exception as exc:  # any failure to read: keep wall time, try again later
            import structlog

            structlog.get_logger("main").warning("broker_clock_unavailable", error=str(exc))
        return self._synced

    @property
    def rate(self) -> float:
        return self._clock.rate if self._synced else 1.0

    def now(self) -> datetime:
        if not self._synced:
            return datetime.now(timezone.utc)
        return self._clock.now()

    async def sleep(self, seconds: float) -> None:
        if self._synced:
            await self._clock.sleep(seconds)
            return
        # Not synced yet: wall time, in short chunks, trying the broker's clock after each;
        # once it answers, return so that the caller re-plans in the broker's time.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, seconds)
        while True:
            if self._clock is not None and await self._try_sync():
                return
            left = deadline - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, self.UNSYNCED_CHUNK_SECONDS))


# -- run -----------------------------------------------------------------------------------


DEFAULT_STATE_DB = "data/trading_state.db"
SIM_STATE_DB = "data/sim_state.db"


def use_mode_state_db(settings: Any) -> bool:
    """Keep simulated runs out of the paper/live journal.

    In SIM mode without an explicit ``--state-db`` the journal is ``data/sim_state.db``,
    started afresh by each run (the embedded broker starts afresh too; the previous file is
    kept as ``sim_state.prev.db``). Returns True when the run should start it afresh.
    """
    if settings.mode != "sim" or settings.storage.state_db != DEFAULT_STATE_DB:
        return False
    settings.storage.state_db = SIM_STATE_DB
    return True


def _start_fresh(path: Path) -> None:
    if not path.exists():
        return
    previous = path.with_name(path.stem + ".prev" + path.suffix)
    for suffix in ("", "-wal", "-shm"):
        old = Path(str(path) + suffix)
        if old.exists():
            old.replace(Path(str(previous) + suffix))


def check_journal_owner(journal: Any, settings: Any) -> str | None:
    """A journal belongs to one mode: a paper journal is never reused live, nor sim for paper."""
    owner = journal.get_state("owner")
    if owner is None:
        journal.set_state("owner", {"mode": settings.mode})
        return None
    if owner.get("mode") != settings.mode:
        return (f"state database {settings.storage.state_db} belongs to a {owner.get('mode')} run, not "
                f"{settings.mode}; give this mode its own --state-db")
    return None


async def run_daemon(settings: Any, run_id: str, *, fresh_state: bool = False) -> int:
    import structlog

    from journal.state_lock import StateDbInUse, StateDbLock

    log = structlog.get_logger("main")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = SignalStop(stop, asyncio.current_task(), log)
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, signals.on_signal, signum)
    Path(settings.storage.state_db).parent.mkdir(parents=True, exist_ok=True)
    # One daemon per state database, held until this function returns; taken before the
    # file is touched (a SIM run would otherwise move a running daemon's journal aside).
    db_lock = StateDbLock(settings.storage.state_db)
    try:
        db_lock.acquire()
    except StateDbInUse as exc:
        log.error("state_db_in_use", state_db=str(settings.storage.state_db), holder_pid=exc.holder_pid)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:  # e.g. a read-only folder: the lock file cannot be created
        print(f"error: cannot lock the state database {settings.storage.state_db}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_CONFIG
    try:
        return await _run_locked_daemon(settings, run_id, stop, log, signals, fresh_state=fresh_state)
    finally:
        db_lock.release()


async def _run_locked_daemon(settings: Any, run_id: str, stop: asyncio.Event, log: Any,
                             signals: SignalStop, *, fresh_state: bool) -> int:
    """The daemon's life once it holds the state database's lock."""
    from alerter import Alerter
    from core.errors import ConfigError
    from journal.journal import Journal
    from engine.trading_system import TradingSystem
    from ops.daemon_http import start_endpoint

    if fresh_state:
        _start_fresh(Path(settings.storage.state_db))
    journal = Journal(settings.storage.state_db)
    problem = check_journal_owner(journal, settings)
    if problem is not None:
        journal.close()
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    system = None
    try:
        http = await start_endpoint(settings.http)
    except ConfigError as exc:
        journal.close()
        print(f"error: {exc.problems[0]}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        async with open_broker(settings) as (gateway, clock, _url):
            # Alerts go to the daemon's console (stdout, beside the log); stderr is kept for the
            # one line that explains why the program stopped.
            alerter = Alerter(settings.alerts, clock, secrets=settings.secret_values(), stream=sys.stdout)
            alerter.attach_journal(journal)
            system = TradingSystem(settings, gateway, clock, journal=journal, alerter=alerter,
                                   run_id=run_id, sim_days=settings.sim.days, stop_event=stop,
                                   regime_by_date=settings.mode == "sim")
            if http is not None:
                http.telemetry.attach(system)
            # The objects alive now (imported libraries, settings, calendar: ~100k) live as long
            # as the daemon. Frozen out of the cyclic garbage collector, its full collections
            # no longer walk them all inside whichever trading cycle triggers one
            # (bench/bench_cycle.py: p95 CPU per cycle at 500 symbols 134 -> 82 ms).
            gc.collect()
            gc.freeze()
            try:
                summary = await system.run()
            finally:
                gc.unfreeze()
            await alerter.aclose() if hasattr(alerter, "aclose") else None
        if settings.sim.days is not None or settings.mode == "sim":
            print(summary.render(), flush=True)
    except asyncio.CancelledError:
        if not signals.cancelled:
            raise
        # A signal's grace period ran out while the broker kept the daemon waiting: the
        # in-flight work was cancelled (TradingSystem.run's shutdown still ran and logged).
        current = asyncio.current_task()
        while current is not None and current.cancelling():
            current.uncancel()
        if system is None:
            log.info("system_shutdown", run_id=run_id, reason="signal before start-up completed")
    finally:
        if http is not None:
            await http.close()
        journal.close()
    if system is not None and system.fatal_error is not None:
        print(f"error: trading stopped: {system.fatal_error}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


class SignalStop:
    """SIGTERM/SIGINT: stop within ``STOP_GRACE_SECONDS`` + ``SHUTDOWN_SECONDS`` whatever the
    broker does.

    The first signal sets the stop event (every wait in the daemon wakes on it, a cycle in
    progress finishes). If the daemon is still busy after the grace period (a broker whose
    sockets hang, a retry in progress), the daemon's task is cancelled: the in-flight broker
    I/O ends at once and ``TradingSystem.run`` shuts down with its own broker calls bounded.
    Should even that not finish, it is cancelled again. A second signal skips the grace.
    """

    STOP_GRACE_SECONDS = 3.0
    SHUTDOWN_SECONDS = 3.0

    def __init__(self, stop: asyncio.Event, task: asyncio.Task[Any] | None, log: Any) -> None:
        self.stop, self.task, self.log = stop, task, log
        self.signals = 0
        self.cancelled = False
        self._timers: list[asyncio.TimerHandle] = []

    def on_signal(self, signum: int) -> None:
        self.signals += 1
        self.log.info("shutdown_requested", signal=signal.Signals(signum).name, count=self.signals)
        self.stop.set()
        loop = asyncio.get_running_loop()
        if self.signals == 1:
            self._timers.append(loop.call_later(self.STOP_GRACE_SECONDS, self.cancel_in_flight))
            self._timers.append(loop.call_later(self.STOP_GRACE_SECONDS + self.SHUTDOWN_SECONDS,
                                                self.cancel_in_flight))
        else:
            self.cancel_in_flight()

    def cancel_in_flight(self) -> None:
        if self.task is None or self.task.done():
            return
        self.log.warning("shutdown_cancelling_in_flight",
                         reason="the broker kept the daemon busy past the stop grace period")
        self.cancelled = True
        self.task.cancel()


# -- diagnose ------------------------------------------------------------------------------


async def run_diagnose(settings: Any) -> int:
    """The seed's full diagnostic as a readable report."""
    from ops.diagnostics import diagnose

    async with open_broker(settings, announce=False) as (gateway, clock, url):
        report = await diagnose(settings, gateway, clock, url)
    print(report.render())
    return EXIT_OK if report.healthy else EXIT_UNHEALTHY


# -- status, halt, rearm -------------------------------------------------------------------


def operator_command_problem(settings: Any, command: str, reason: str | None) -> str | None:
    """The one-line refusal of ``status``/``halt``/``rearm`` (None when it may go ahead)."""
    if command in ("halt", "rearm") and not (reason or "").strip():
        return f"error: {command} needs a non-empty --reason"
    return missing_state_db(settings)


def missing_state_db(settings: Any) -> str | None:
    """The one-line refusal when the state database does not exist (None when it does).

    ``status``, ``halt`` and ``rearm`` talk to a daemon through its state database; on a
    mistyped ``--state-db`` they must say so and create nothing, not queue a command for a
    database no daemon will ever read."""
    db = Path(settings.storage.state_db)
    if db.is_file():
        return None
    if db.is_dir():
        return (f"error: state database {db} is a directory, not a state database file "
                "(give --state-db the database file's path)")
    return f"error: no state database at {db} (check --state-db; the daemon creates it when it first runs)"


async def run_status(settings: Any) -> int:
    from ops.status import render_status

    problem = missing_state_db(settings)
    if problem is not None:
        print(problem, file=sys.stderr)
        return EXIT_CONFIG
    text = await render_status(settings)
    print(text)
    return EXIT_OK


def queue_operator_command(settings: Any, kind: str, reason: str) -> int:
    """Queue ``halt``/``rearm`` for the daemon and say when it takes effect.

    Commands are appended to the journal in order (the journal's sequence decides, not a
    clock), and the daemon applies them in that order: a ``halt`` queued after a ``rearm``
    wins. A daemon holding the state database's lock applies a command at its next cycle;
    with no daemon running it is applied when one next starts on this database.
    """
    from journal.journal import Journal
    from journal.state_lock import lock_holder

    if not reason.strip():
        print(f"error: {kind} needs a non-empty --reason", file=sys.stderr)
        return EXIT_CONFIG
    problem = missing_state_db(settings)
    if problem is not None:
        print(problem, file=sys.stderr)
        return EXIT_CONFIG
    journal = Journal(settings.storage.state_db)
    try:
        command = journal.queue_operator_command(kind, reason, datetime.now(timezone.utc))
    finally:
        journal.close()
    holder = lock_holder(settings.storage.state_db)
    if holder is not None:
        who = f"pid {holder.pid}" if holder.pid is not None else "pid unknown"
        when = f"the running daemon ({who}) applies it at its next cycle"
    else:
        when = "no daemon is running on this state database: it is applied when the daemon next starts"
    print(f"{kind} queued (#{command['seq']}): {when} (reason: {reason})")
    return EXIT_OK


# -- train, backtest, report ---------------------------------------------------------------


def log_to_file_only(settings: Any) -> None:
    """The terminal (or a pipe) gets a command's results alone, as for backtest and report:
    the structured log goes to ``storage.log_file`` only."""
    from core import logging_setup

    logging_setup.configure(log_file=settings.storage.log_file, level=settings.storage.log_level,
                            secrets=settings.secret_values(), console=False)


def run_train(settings: Any, args: argparse.Namespace) -> int:
    from ai.ai_model import train_model

    log_to_file_only(settings)

    if not args.data:
        print("error: train needs --data DIR (a directory with daily/SYMBOL-1d-*.csv files)", file=sys.stderr)
        return EXIT_CONFIG
    out = args.out or Path(settings.ai.model_path)
    symbols = [s for s in args.symbols.split(",") if s.strip()] if args.symbols else None
    report = train_model(Path(args.data), out, symbols=symbols, stop=settings.trading.stop_loss,
                         target=settings.trading.take_profit)
    print(report.render() if hasattr(report, "render") else report)
    return EXIT_OK


def run_evaluate(settings: Any, args: argparse.Namespace) -> int:
    from ai.evaluate import run as evaluate_run
    from ai.ideas import DefaultBracket
    from backtest.proposals import pipeline_proposer

    log_to_file_only(settings)

    if not args.data:
        print("error: evaluate needs --data DIR (a directory with daily/SYMBOL-1d-*.csv files)", file=sys.stderr)
        return EXIT_CONFIG
    window_problem = evaluate_window_problem(args.start, args.end)
    if window_problem is None and args.horizon < 1:
        window_problem = f"--horizon {args.horizon}: must be at least 1 session"
    if window_problem is not None:
        print(f"error: {window_problem}", file=sys.stderr)
        return EXIT_CONFIG
    default = DefaultBracket(stop=float(settings.trading.stop_loss), target=float(settings.trading.take_profit),
                             horizon=int(args.horizon))
    proposer = pipeline_proposer(settings, default.horizon) if args.population == "proposals" else None
    symbols = args.symbols.split(",") if args.symbols else None
    text, _ = evaluate_run(Path(args.data), Path(args.out), symbols=symbols, start=args.start, end=args.end,
                           population=args.population, default=default, proposer=proposer)
    print(text)
    return EXIT_OK


def evaluate_window_problem(start: str | None, end: str | None) -> str | None:
    """Why ``evaluate``'s ``--start``/``--end`` cannot select decision dates, or None: a date
    that is not one (a traceback otherwise) or a window that ends before it starts (which
    would walk the whole data to score nothing)."""
    parsed: dict[str, date] = {}
    for flag, text in (("--start", start), ("--end", end)):
        if not text:
            continue
        try:
            parsed[flag] = date.fromisoformat(str(text)[:10])
        except ValueError:
            return f"{flag} {text!r} is not a date (YYYY-MM-DD)"
    if "--start" in parsed and "--end" in parsed and parsed["--end"] < parsed["--start"]:
        return f"--end {end} is before --start {start}"
    return None


def run_backtest(settings: Any, args: argparse.Namespace) -> int:
    from backtest.cli import main as backtest_main

    return backtest_main(settings, args)


def run_report(settings: Any, args: argparse.Namespace) -> int:
    from backtest.cli import report_command

    return report_command(settings, args)


if __name__ == "__main__":
    status = main()
    # The interpreter's last garbage collection walks every object the daemon ever loaded
    # (1-2 s of a stop under load, inside the 10 s a signal may take); frozen, it skips them.
    gc.freeze()
    sys.exit(status)
