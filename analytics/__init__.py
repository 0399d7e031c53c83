"""What a run says after the fact, computed from fills and equity: round-trip trades from
fills (``analytics.trade_ledger``), the performance metrics (``analytics.performance``, a face
over ``performance_inputs``, ``performance_report``, ``curve_metrics``, ``trade_stats`` and
``trade_groups``) and
the offline HTML/JSON report (``analytics.reporting``). Pure arithmetic over explicit inputs;
the live loop, the backtester and ``main.py report`` share it."""
