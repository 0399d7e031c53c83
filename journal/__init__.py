"""The state database: the SQLite journal written before a decision is acted on
(``journal.journal``) and the OS lock that keeps one daemon per database
(``journal.state_lock``)."""
