"""What a run says after the fact, computed from fills and equity: round-trip trades from
fills (``analytics.trade_ledger``), the performance metrics (``analytics.performance``) and
the offline HTML/JSON report (``analytics.reporting``). Pure arithmetic over explicit inputs;
the live loop, the backtester and ``main.py report`` share it."""
