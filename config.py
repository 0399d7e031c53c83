"""The face of the configuration (moved to settings/; this commit only renames)."""

from __future__ import annotations

from settings.sections import (  # noqa: F401  (re-exported: the names other modules import)
    DATA_URL,
    LIVE_BASE_URL,
    PAPER_BASE_URL,
    PROFILES,
    SECTIONS,
    AlertSettings,
    ConfigError,
    Settings,
    format_problems,
    has_url_credentials,
    is_loopback_host,
    load_settings,
    normalise_host,
    redact_url,
)
