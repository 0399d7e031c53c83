"""The trading loop and what it keeps between cycles: the loop and its steps
(``engine.trading_system``), the safety state machine with its persisted latch
(``engine.trading_state``), the believability check of an account reading
(``engine.account_sanity``) and the entry locks after bad trades (``engine.protections``).
The seed's components at the top are its parts; nothing below the top imports this package
except the backtester, which runs this same loop."""
