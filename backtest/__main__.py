"""``python -m backtest``: the backtest command line (the same as ``python main.py backtest``)."""

import sys

from backtest.cli import cli

sys.exit(cli())
