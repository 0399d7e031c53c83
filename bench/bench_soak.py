"""Benchmark: memory over a soak of many simulated sessions at ``--speed max``.

Runs ``python main.py --sim-days N --speed max`` (embedded simulator, SIM mode, a temporary
state database and log file) as a child process and samples its resident set size (RSS) with
psutil every ``--interval`` seconds. Session boundaries come from the daemon's own
``session_complete`` log events (the JSON-lines log file is followed while it grows).

Printed: RSS when each session completes, RSS after the warm-up (when session
``--warmup`` completes, default 2), RSS at the last session, growth between the two in %
(target: under 5%), the least-squares slope over the sessions after warm-up, the peak RSS,
wall time, the run summary (from the ``system_shutdown`` event), and the sizes of the state
database and log file. The RSS covers the daemon and the embedded simulator (one process).

``--tracemalloc`` runs the daemon in this process instead, with :mod:`tracemalloc` tracing
(several times slower), and prints the source lines whose live allocations grew most between
the warm-up and the end: use it to find what grows when the RSS does.

Usage::

    .venv/bin/python bench/bench_soak.py [--sessions 20] [--warmup 2] [--interval 1]
        [--symbols SPY,QQQ,...] [--seed 42] [--tracemalloc]

Nothing here asserts a figure; it prints them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GROWTH_TARGET_PCT = 5.0
MIB = 1024 * 1024


@dataclass
class Soak:
    """What the sampler saw."""

    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, RSS bytes)
    sessions: list[tuple[int, float, int]] = field(default_factory=list)  # (session, seconds, RSS)
    shutdown: dict[str, Any] | None = None
    wall: float = 0.0
    exit_code: int | None = None
    snapshots: dict[str, tracemalloc.Snapshot] = field(default_factory=dict)


class LogFollower:
    """Reads new complete lines of a JSON-lines file as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def events(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        out = []
        for line in lines:
            if b"session_complete" in line or b"system_shutdown" in line:
                with contextlib.suppress(json.JSONDecodeError):
                    out.append(json.loads(line))
        return out


def sample_until(done: Callable[[], bool], process: psutil.Process, log_file: Path, interval: float,
                 soak: Soak, started: float, on_session: Callable[[int], None] | None = None) -> None:
    """Sample RSS every ``interval`` s and note each ``session_complete`` until ``done()``."""
    follower = LogFollower(log_file)
    while True:
        finished = done()
        now = time.perf_counter() - started
        try:
            rss = process.memory_info().rss
            soak.samples.append((now, rss))
        except psutil.NoSuchProcess:  # exited (a zombie until reaped): read the last events
            finished = True
            rss = soak.samples[-1][1] if soak.samples else 0
        for event in follower.events():
            if event.get("event") == "session_complete":
                session = int(event.get("sessions", len(soak.sessions) + 1))
                soak.sessions.append((session, now, rss))
                if on_session is not None:
                    on_session(session)
            elif event.get("event") == "system_shutdown":
                soak.shutdown = event
        if finished:
            break
        time.sleep(interval)


def daemon_args(args: argparse.Namespace, workdir: Path) -> list[str]:
    out = ["--sim-days", str(args.sessions), "--speed", "max", "--state-db", str(workdir / "state.db"),
           "--log-file", str(workdir / "trading.jsonl"), "--seed", str(args.seed)]
    if args.symbols:
        out += ["--symbols", args.symbols]
    if args.start:
        out += ["--start", args.start]
    return out


def soak_subprocess(args: argparse.Namespace, workdir: Path) -> Soak:
    """``python main.py`` as a child process, its RSS sampled from here."""
    soak = Soak()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APCA_")}
    env["TRADING_MODE"] = "sim"
    cmd = [sys.executable, str(ROOT / "main.py"), *daemon_args(args, workdir)]
    started = time.perf_counter()
    with open(workdir / "stdout.txt", "w") as out:
        child = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
        sample_until(lambda: child.poll() is not None, psutil.Process(child.pid), workdir / "trading.jsonl",
                     args.interval, soak, started)
        soak.exit_code = child.wait()
    soak.wall = time.perf_counter() - started
    return soak


def soak_in_process(args: argparse.Namespace, workdir: Path) -> Soak:
    """The daemon in this process under tracemalloc; snapshots after warm-up and at the end."""
    import main as daemon

    soak = Soak()
    finished = threading.Event()

    def on_session(session: int) -> None:
        if session == args.warmup:
            soak.snapshots["warmup"] = tracemalloc.take_snapshot()

    os.environ.pop("APCA_API_KEY_ID", None)
    os.environ.pop("APCA_API_SECRET_KEY", None)
    os.environ["TRADING_MODE"] = "sim"
    cwd = os.getcwd()
    os.chdir(workdir)
    tracemalloc.start(10)
    started = time.perf_counter()
    # The daemon stays in the main thread (it installs signal handlers); the sampler runs beside it.
    sampler = threading.Thread(
        target=sample_until, name="rss-sampler",
        args=(finished.is_set, psutil.Process(), workdir / "trading.jsonl", args.interval, soak, started,
              on_session))
    sampler.start()
    result: list[int] = []
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            result.append(daemon.main(daemon_args(args, workdir)))
    finally:
        finished.set()
        sampler.join()
        soak.snapshots["end"] = tracemalloc.take_snapshot()
        tracemalloc.stop()
        os.chdir(cwd)
    soak.wall = time.perf_counter() - started
    soak.exit_code = result[0] if result else 1
    return soak


def slope_per_session(points: list[tuple[int, float, int]]) -> float:
    """Least-squares RSS growth per session (bytes), 0 with fewer than two points."""
    if len(points) < 2:
        return 0.0
    xs = [float(p[0]) for p in points]
    ys = [float(p[2]) for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def report(soak: Soak, args: argparse.Namespace, workdir: Path) -> None:
    print()
    print(f"Soak: {args.sessions} simulated sessions at --speed max "
          f"({'in-process, tracemalloc on' if args.tracemalloc else 'child process'}), "
          f"exit code {soak.exit_code}, wall {soak.wall:.1f} s "
          f"({soak.wall / max(1, len(soak.sessions)):.1f} s per session)")
    print(f"RSS samples: {len(soak.samples)} (every {args.interval:g} s)")
    print()
    print(f"{'session':>7} {'at (s)':>8} {'RSS (MiB)':>10}")
    for session, at, rss in soak.sessions:
        print(f"{session:>7} {at:>8.1f} {rss / MIB:>10.1f}")
    if soak.samples:
        print(f"first sample RSS {soak.samples[0][1] / MIB:.1f} MiB, "
              f"peak RSS {max(r for _, r in soak.samples) / MIB:.1f} MiB")
    warm = next((s for s in soak.sessions if s[0] == args.warmup), None)
    if warm is None or not soak.sessions or soak.sessions[-1][0] <= args.warmup:
        print(f"not enough sessions completed to compare with the warm-up (session {args.warmup})")
    else:
        last = soak.sessions[-1]
        growth = (last[2] - warm[2]) / warm[2] * 100
        after = [s for s in soak.sessions if s[0] >= args.warmup]
        slope = slope_per_session(after)
        verdict = "meets" if growth < GROWTH_TARGET_PCT else "MISSES"
        print()
        print(f"RSS after warm-up (session {warm[0]}): {warm[2] / MIB:.1f} MiB")
        print(f"RSS at the end    (session {last[0]}): {last[2] / MIB:.1f} MiB")
        print(f"growth after warm-up: {growth:+.2f}% -> {verdict} the {GROWTH_TARGET_PCT:g}% target")
        print(f"trend after warm-up (least squares): {slope / 1024:+.1f} KiB per session")
    if soak.shutdown:
        keys = ("sessions", "cycles", "trades", "wins", "losses", "pnl", "max_drawdown_pct",
                "orders_submitted", "open_positions", "protected_positions", "state")
        print("run summary: " + ", ".join(f"{k}={soak.shutdown.get(k)}" for k in keys))
    for name in ("state.db", "trading.jsonl"):
        path = workdir / name
        if path.exists():
            print(f"{name}: {path.stat().st_size / MIB:.1f} MiB at the end")
    if "warmup" in soak.snapshots and "end" in soak.snapshots:
        print()
        print("tracemalloc: source lines whose live allocations grew most after warm-up")
        print("  (the RSS figures above include tracemalloc's own bookkeeping, which grows with every")
        print("  traced allocation; judge leaks by the traced growth below, RSS by a run without it)")
        stats = soak.snapshots["end"].compare_to(soak.snapshots["warmup"], "lineno")
        total = sum(s.size_diff for s in stats)
        print(f"  total traced growth {total / 1024:+.1f} KiB")
        for stat in stats[: args.top]:
            frame = stat.traceback[0]
            print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  "
                  f"{frame.filename}:{frame.lineno}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sessions", type=int, default=20, help="simulated sessions (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="session after which RSS is the baseline (default 2)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between RSS samples (default 1)")
    parser.add_argument("--symbols", help="comma-separated symbols (default: the daemon's default universe)")
    parser.add_argument("--seed", type=int, default=42, help="simulator seed (default 42)")
    parser.add_argument("--start", help="simulated start (ISO-8601 or YYYY-MM-DD; default: the simulator's)")
    parser.add_argument("--tracemalloc", action="store_true", help="run in-process and attribute growth")
    parser.add_argument("--top", type=int, default=15, help="tracemalloc lines to print (default 15)")
    parser.add_argument("--keep", type=Path, help="keep the state database, log and stdout in this directory")
    args = parser.parse_args(argv)
    if args.sessions < 1 or not 1 <= args.warmup < args.sessions or args.interval <= 0:
        parser.error("needs --sessions >= 2, 1 <= --warmup < --sessions and --interval > 0")
    with tempfile.TemporaryDirectory(prefix="bench_soak_") as tmp:
        workdir = args.keep if args.keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        soak = soak_in_process(args, workdir) if args.tracemalloc else soak_subprocess(args, workdir)
        report(soak, args, workdir)
        if soak.exit_code != 0:
            stdout = workdir / "stdout.txt"
            if stdout.exists():
                print("daemon output (last lines):")
                print("\n".join(stdout.read_text(errors="replace").splitlines()[-20:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
