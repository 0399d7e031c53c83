"""Backtesting: the daemon's loop over replayed history (``backtest.loop``), the run around
it (``backtest.runner``: assembly, sessions, results; ``backtest.options``: what is asked and
what came out), walk-forward (``backtest.walk_forward``), replayed history and data-directory
discovery (``backtest.data``), the comparison with buy-and-hold, SPY and random entries
(``backtest.benchmarks``), each trade's bracket and probability at entry
(``backtest.trade_details``), the report files and the terminal summary (``backtest.reports``),
the progress bar (``backtest.progress``), the command line (``backtest.cli``: ``python main.py
backtest`` / ``python -m backtest``, and ``python main.py report``), the per-strategy signal
masks that let a daily backtest skip evaluations that can only hold (``backtest.prefilter``),
and the in-process broker over the simulator core (``backtest.sim_broker``): the HTTP
gateway's own code with the socket replaced, so a backtest trades through the code that
trades live."""
