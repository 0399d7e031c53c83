"""The ground every other module stands on: the time seam (``core.clock``), the one
exception tree (``core.errors``) and structured logging with secrets redacted
(``core.logging_setup``). Nothing here imports any other module of the project, so anything
may import these."""
