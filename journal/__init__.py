"""The state database: the SQLite journal written before a decision is acted on, with its
schema, migrations and records (``journal.journal``), the reconciliation that makes it agree
with the broker (``journal.reconciliation``), how values are stored as text
(``journal.codec``), and the OS lock that keeps one daemon per database
(``journal.state_lock``)."""
