"""Command-line client for a running simulator's control API (``/_sim/v1/``).

Used through ``python -m simulator``::

    python -m simulator state   --url http://127.0.0.1:8765
    python -m simulator shock   --url http://127.0.0.1:8765 SPY -6       # or '*' or SPY,QQQ
    python -m simulator gap     --url http://127.0.0.1:8765 SPY 3        # at the next open
    python -m simulator advance --url http://127.0.0.1:8765 30           # minutes
    python -m simulator speed   --url http://127.0.0.1:8765 max          # or a factor
    python -m simulator faults  --url http://127.0.0.1:8765 "error_rate=0.1"   # or --clear

When the simulator requires keys, set ``APCA_API_KEY_ID`` and ``APCA_API_SECRET_KEY`` (the
same variables the simulator and the daemon read): they are sent as Alpaca's headers.

Prints the simulator's JSON answer on stdout. Exit codes: 0 done, 1 the simulator refused or
could not be reached (one line on stderr), 2 bad arguments (one line on stderr).
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any, NoReturn, Sequence

DEFAULT_URL = "http://127.0.0.1:8765"
KEY_ENV, SECRET_ENV = "APCA_API_KEY_ID", "APCA_API_SECRET_KEY"
#: Fastest speed factor besides 'max': beyond it a millisecond of wall time is over a market
#: minute and the clock races past the calendar's end ('max' is the way to go fast).
MAX_SPEED = 100_000.0
COMMANDS = ("state", "shock", "gap", "advance", "speed", "faults")


def keys_from_env(error: Any) -> tuple[str | None, str | None]:
    """The key pair from ``APCA_API_KEY_ID``/``APCA_API_SECRET_KEY`` (blank = unset), or
    ``error(message)`` when only one of them is set."""
    key = os.environ.get(KEY_ENV, "").strip() or None
    secret = os.environ.get(SECRET_ENV, "").strip() or None
    if (key is None) != (secret is None):
        present, missing = (KEY_ENV, SECRET_ENV) if key else (SECRET_ENV, KEY_ENV)
        error(f"{present} is set but {missing} is not: set both or neither")
    return key, secret


def is_loopback(host: str) -> bool:
    """Whether ``host`` names the local machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OneLineArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _pct(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"percent must be a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"percent must be finite, got {text!r}")
    if value <= -100:
        raise argparse.ArgumentTypeError(f"percent must be above -100, got {text!r}")
    return value


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"minutes must be a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"minutes must be a non-negative number, got {text!r}")
    return value


def _speed(text: str) -> float | str:
    if text == "max":
        return "max"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"speed must be a positive number or 'max', got {text!r}") from None
    if not 0 < value <= MAX_SPEED:
        raise argparse.ArgumentTypeError(f"speed must be a number > 0 and <= {MAX_SPEED:g}, or 'max', got {text!r}")
    return value


def _symbols(text: str) -> list[str] | str:
    if text == "*":
        return "*"
    symbols = [s.strip() for s in text.split(",") if s.strip()]
    if not symbols:
        raise argparse.ArgumentTypeError(f"symbols must be SYM, SYM,SYM or '*', got {text!r}")
    return symbols


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m simulator", description="Control a running simulator."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--url", default=DEFAULT_URL, help=f"simulator base URL (default {DEFAULT_URL})")
        sub.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")
        return sub

    command("state", "print the simulator's state")
    shock = command("shock", "move prices at once; the market continues from there")
    shock.add_argument("symbols", type=_symbols, help="SYM, SYM,SYM or '*'")
    shock.add_argument("pct", type=_pct, help="percent move, e.g. -6")
    gap = command("gap", "gap prices at the next open")
    gap.add_argument("symbols", type=_symbols, help="SYM, SYM,SYM or '*'")
    gap.add_argument("pct", type=_pct, help="percent gap, e.g. 3")
    advance = command("advance", "advance simulated time")
    advance.add_argument("minutes", type=_minutes, help="minutes of market time")
    speed = command("speed", "set the clock's speed factor")
    speed.add_argument("speed", type=_speed, help="a factor (60 = a market minute per second) or 'max'")
    faults = command("faults", "set or clear fault injection")
    group = faults.add_mutually_exclusive_group(required=True)
    group.add_argument("spec", nargs="?", help='e.g. "error_rate=0.05,latency_ms=50-400"')
    group.add_argument("--clear", action="store_true", help="stop injecting faults")
    return parser


def request_for(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    """(method, control path, JSON body) for the parsed command."""
    if args.command == "state":
        return "GET", "/_sim/v1/state", None
    if args.command in ("shock", "gap"):
        return "POST", f"/_sim/v1/{args.command}", {"symbols": args.symbols, "pct": args.pct}
    if args.command == "advance":
        return "POST", "/_sim/v1/clock", {"advance_minutes": args.minutes}
    if args.command == "speed":
        return "POST", "/_sim/v1/clock", {"speed": args.speed}
    if args.clear:
        return "POST", "/_sim/v1/faults", {"clear": True}
    return "POST", "/_sim/v1/faults", {"spec": args.spec}


def main(argv: Sequence[str]) -> int:
    """Run one control command; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if not args.url.startswith(("http://", "https://")):
        print(f"python -m simulator: error: --url must start with http://, got {_shown(args.url)!r}", file=sys.stderr)
        return 2
    if "@" in args.url.partition("?")[0]:
        print(f"python -m simulator: error: --url {_shown(args.url)!r} must not contain user:password@; "
              f"set {KEY_ENV} and {SECRET_ENV} instead", file=sys.stderr)
        return 2
    key, secret = keys_from_env(parser.error)
    method, path, body = request_for(args)
    url = args.url.rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if key is not None and secret is not None:
        headers |= {"APCA-API-KEY-ID": key, "APCA-API-SECRET-KEY": secret}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            answer = json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        hint = ""
        if exc.code == 401:
            hint = (f" (set {KEY_ENV} and {SECRET_ENV} to the simulator's keys)" if key is None
                    else f" ({KEY_ENV}/{SECRET_ENV} are not the simulator's keys)")
        print(f"simulator refused {args.command}: {_message(exc)}{hint}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"cannot reach the simulator at {_shown(args.url)}: {reason}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2, sort_keys=True))
    return 0


def _shown(url: str) -> str:
    """``url`` for a message: user info and query (where keys get pasted) hidden."""
    head, _, _ = url.partition("?")
    scheme, sep, rest = head.partition("://")
    if sep and "@" in rest:  # a key may hold '/', so everything up to the last '@' goes
        rest = "***@" + rest.rsplit("@", 1)[1]
    return (scheme + sep + rest if sep else head) + ("?***" if "?" in url else "")


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
    except ValueError:
        return f"HTTP {exc.code}"
    if isinstance(body, dict) and "message" in body:
        return f"HTTP {exc.code}: {body['message']}"
    return f"HTTP {exc.code}"
