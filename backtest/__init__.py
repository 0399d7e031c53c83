"""Backtesting: the runner, walk-forward and the CLI (``backtest.backtest``; run it as
``python main.py backtest`` or ``python -m backtest``), the per-strategy signal masks that let a
daily backtest skip evaluations that can only hold (``backtest.prefilter``), and the
in-process broker over the simulator core (``backtest.sim_broker``): the HTTP gateway's own
code with the socket replaced, so a backtest trades through the code that trades live."""
