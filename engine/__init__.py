"""The trading loop and what it keeps between cycles: the loop and its steps
(``engine.trading_system``), the portfolio snapshot the risk checks read, as plain data
(``engine.portfolio``), the safety state machine with its persisted latch
(``engine.trading_state``), the believability check of an account reading
(``engine.account_sanity``) and the entry locks after bad trades (``engine.protections``).
The seed's components at the top are the loop's parts; they import ``engine.portfolio`` and
nothing else of this package, and only ``main.py`` and the backtester import the loop."""
