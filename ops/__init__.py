"""What the operator runs and reads: structured JSON logging with secrets redacted
(``ops.logging_setup``), ``main.py status`` (``ops.status``) and ``main.py diagnose``
(``ops.diagnostics``)."""
