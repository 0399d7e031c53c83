"""``python -m simulator``: run the Alpaca-compatible paper broker, or control a running one.

Serve (the default command)::

    python -m simulator [serve] --host 127.0.0.1 --port 8765 [--data DIR] [--symbols A,B]
        [--speed X|max] [--seed N] [--start ISO-8601|YYYY-MM-DD] [--cash 100000]
        [--faults SPEC] [--key K --secret S] [--partial-fills] [--slippage-bps 1.0]
        [--no-rate-limit] [--allow-remote] [--sip] [--stream-connections N]

The key pair (required on the trading, data and control APIs when set) comes from
``--key``/``--secret`` or, better (not visible in ``ps``), from ``APCA_API_KEY_ID`` and
``APCA_API_SECRET_KEY``; without either the simulator accepts any key.

Besides the REST paths it serves Alpaca's market-data websockets ``ws://HOST:PORT/v2/iex``,
``/v2/sip`` (with ``--sip``; otherwise 409 as on the free plan) and ``/v2/test`` (FAKEPACA),
at most ``--stream-connections`` (default 1) per key and endpoint, and Alpaca's trading stream
at ``ws://HOST:PORT/stream`` (``trade_updates``, see :mod:`simulator.trade_stream`);
``POST /_sim/v1/streams/drop`` closes every stream and ``--faults stream_drop=P`` drops them
at random.

It prints one line, ``simulator listening on http://HOST:PORT``, on stdout (logs go to stderr as
JSON lines) and runs until SIGINT or SIGTERM, then exits 0. ``--port 0`` picks a free port.
A non-loopback ``--host`` is refused unless ``--allow-remote``. ``--start`` with a date alone
means that day's pre-market.

Control a running simulator: ``state``, ``shock``, ``gap``, ``advance``, ``speed``, ``faults``
(see :mod:`simulator.control_cli`). Bad arguments: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import sys
from decimal import Decimal
from pathlib import Path
from typing import Sequence

import structlog

from simulator import control_cli
from simulator.control_cli import KEY_ENV, SECRET_ENV, OneLineArgumentParser, is_loopback
from simulator.faults import FaultConfig

# The core and the server (numpy, pandas, exchange_calendars, aiohttp) are imported only
# when serving, so control commands and argument errors answer at once.

DEFAULT_PORT = 8765
_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speed must be a positive number or 'max', got {text!r}") from None
    if not 0 < value <= control_cli.MAX_SPEED:
        raise argparse.ArgumentTypeError(
            f"--speed must be a number > 0 and <= {control_cli.MAX_SPEED:g}, or 'max', got {text!r}")
    return value


def _symbols(text: str) -> list[str]:
    symbols = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in symbols if not _SYMBOL.match(s)]
    if not symbols or bad:
        shown = bad[0] if bad else text
        raise argparse.ArgumentTypeError(
            f"--symbols needs comma-separated upper-case tickers (e.g. SPY,AAPL), got {shown!r}"
        )
    if len(set(symbols)) != len(symbols):
        raise argparse.ArgumentTypeError(f"--symbols lists a ticker twice: {text!r}")
    return symbols


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port must be an integer 0-65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"--port must be an integer 0-65535, got {text!r}")
    return value


def _cash(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise argparse.ArgumentTypeError(f"--cash must be a positive amount, got {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"--cash must be a positive amount, got {text!r}")
    return value


def _connections(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--stream-connections must be an integer >= 1, got {text!r}")
    return value


def _faults(text: str) -> str:
    """The ``--faults`` spec, checked now; parsed again at start-up with ``--seed`` as the
    seed it falls back on (a spec's own ``seed=`` wins)."""
    try:
        FaultConfig.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--faults: {exc}") from None
    return text


def _start(text: str) -> str:
    from simulator.clock import parse_start

    try:
        parse_start(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--start: {exc}") from None
    return text


def _slippage(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--slippage-bps must be a number >= 0, got {text!r}") from None
    if not 0 <= value < 10_000:
        raise argparse.ArgumentTypeError(f"--slippage-bps must be a number >= 0, got {text!r}")
    return value


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m simulator",
        description="Alpaca-compatible paper broker (Trading API v2 + Market Data API v2).",
        epilog="Control a running simulator: python -m simulator {state,shock,gap,advance,speed,faults} --help",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free port)")
    parser.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback --host")
    parser.add_argument("--data", type=Path, help="directory of CSV bars to replay (default: synthetic market)")
    parser.add_argument("--symbols", type=_symbols, help="comma-separated tickers (default: SPY,QQQ,AAPL,MSFT,NVDA,TSLA)")
    parser.add_argument("--speed", type=_speed, default=60.0, help="simulated seconds per wall second, or 'max' (default 60)")
    parser.add_argument("--seed", type=int, default=42, help="market and fault RNG seed (default 42)")
    parser.add_argument("--start", type=_start, help="simulated start, ISO-8601 or YYYY-MM-DD (that day's pre-market)")
    parser.add_argument("--cash", type=_cash, default=Decimal("100000"), help="starting cash (default 100000)")
    parser.add_argument("--faults", type=_faults, help='e.g. "error_rate=0.05,latency_ms=50-400,reset=0.01,race=0.2,stream_drop=0.05" '
                             '(stream_drop: per second, every stream connection closed at once)')
    parser.add_argument("--key", help=f"require this APCA-API-KEY-ID (with --secret; default ${KEY_ENV})")
    parser.add_argument("--secret", help=f"require this APCA-API-SECRET-KEY (with --key; default ${SECRET_ENV}, "
                                         "which keeps it out of the process list)")
    parser.add_argument("--partial-fills", action="store_true", help="fill large orders in volume-limited parts")
    parser.add_argument("--slippage-bps", type=_slippage, default=1.0, help="market-order slippage in basis points (default 1)")
    parser.add_argument("--no-rate-limit", action="store_true", help="disable the 200 requests/minute limit")
    parser.add_argument("--sip", action="store_true",
                        help="a SIP data plan: recent feed=sip data and the /v2/sip stream "
                             "(default: the free plan, which refuses both, 403 and 409)")
    parser.add_argument("--stream-connections", type=_connections, default=1,
                        help="market-data stream connections per key and endpoint (default 1, as Alpaca; "
                             "more answer 406)")
    return parser


def parse_serve_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse and cross-check the serve options; exits 2 with one line on bad input."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.key is None and args.secret is None:
        args.key, args.secret = control_cli.keys_from_env(parser.error)
    if (args.key is None) != (args.secret is None):
        parser.error("--key and --secret must be given together")
    if args.key is not None and (not args.key or not args.secret):
        parser.error("--key and --secret must not be empty")
    if not args.allow_remote and not is_loopback(args.host):
        parser.error(f"--host {args.host} is not a loopback address; add --allow-remote to expose the simulator")
    if args.data is not None and not args.data.is_dir():
        parser.error(f"--data {args.data}: no such directory")
    return args


def _configure_logging() -> None:
    """JSON log lines on stderr, so stdout carries only the listening line."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


async def serve(args: argparse.Namespace) -> int:
    """Build the core, serve it until SIGINT/SIGTERM; returns the exit status."""
    from simulator.core import SimulatorCore
    from simulator.server import start_server

    try:
        core = SimulatorCore.create(
            data_dir=args.data,
            symbols=args.symbols,
            seed=args.seed,
            start=args.start,
            speed=args.speed,
            cash=args.cash,
            partial_fills=args.partial_fills,
            slippage_bps=args.slippage_bps,
        )
    except ValueError as exc:
        print(f"python -m simulator: error: {exc}", file=sys.stderr)
        return 2
    core.data.sip_enabled = args.sip
    try:
        server = await start_server(
            core,
            host=args.host,
            port=args.port,
            allow_remote=args.allow_remote,
            key=args.key,
            secret=args.secret,
            faults=None if args.faults is None else FaultConfig.parse(args.faults, default_seed=args.seed),
            rate_limit_per_minute=None if args.no_rate_limit else 200,
            stream_connections=args.stream_connections,
        )
    except OSError as exc:
        print(f"python -m simulator: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"simulator listening on {server.base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m simulator``; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in control_cli.COMMANDS:
        return control_cli.main(args_list)
    if args_list and args_list[0] == "serve":
        args_list = args_list[1:]
    args = parse_serve_args(args_list)
    _configure_logging()
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
