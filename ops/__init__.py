"""What the operator runs and reads besides the daemon itself: ``main.py status``
(``ops.status``) and ``main.py diagnose`` (``ops.diagnostics``); the HTTP server and dashboard
of issue 11 belong here too. (Logging is ``core.logging_setup``: every layer logs.)"""
