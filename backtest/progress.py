"""The backtest's progress bar: sessions done, the session and equity, time left.

Drawn with ``tqdm`` on ``stream`` (stderr by default) and only when that stream is a
terminal: a backtest piped into a file or run by CI shows its summary and nothing else.
Log lines never share the terminal with it (they go to the log file, see
:func:`backtest.cli.configure_logging`), so the bar stays one line.
"""

from __future__ import annotations

import shutil
import sys
from typing import TextIO

from tqdm import tqdm

#: How often (wall seconds) the bar is redrawn at most.
PROGRESS_INTERVAL = 0.1


class Progress:
    """Sessions done out of ``total``; ``update`` takes the count done so far and a label."""

    def __init__(self, total: int, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = enabled and bool(isatty and isatty())
        self._bar: tqdm | None = None
        self._done = 0

    def update(self, done: int, label: str = "") -> None:
        """Move the bar to ``done`` sessions (never backwards) and show ``label`` beside it."""
        if not self.enabled:
            return
        if self._bar is None:
            # a terminal that reports no width (0 columns: some ptys) gets 100, not an empty bar
            width = shutil.get_terminal_size((100, 20)).columns or 100
            self._bar = tqdm(total=self.total, file=_Writer(self.stream), unit="session", mininterval=PROGRESS_INTERVAL,
                             ncols=min(width, 140), leave=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} "
                             "[{elapsed}<{remaining}] {postfix}")
        step = min(done, self.total) - self._done
        if label:
            self._bar.set_postfix_str(label, refresh=False)
        if step > 0:
            self._bar.update(step)
            self._done += step

    def finish(self) -> None:
        """Close the bar (its last state stays on the terminal, followed by a newline)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _Writer:
    """``stream`` seen only through ``write`` and ``flush``: tqdm then draws plain ASCII and
    writes text as it is (handed the real ``sys.stderr`` of a pty, it drew nothing at all)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()
