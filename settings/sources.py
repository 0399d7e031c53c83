"""Where settings come from, lowest precedence first: a named profile, a TOML file,
``.env`` under the real environment (with the encrypted credential store when neither has
Alpaca keys), and explicit overrides; each is read into a nested dict for
:func:`config.load_settings` to merge, remembering which source set each dotted key.
"""

from __future__ import annotations

import io
import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from core.errors import ConfigError
from settings.sections import SECTIONS

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    "conservative": {
        "trading": {
            "max_position_size": 0.05,
            "stop_loss": 0.02,
            "take_profit": 0.04,
            "max_positions": 3,
        },
        "risk": {
            "circuit_breaker_loss": 0.03,
            "max_daily_drawdown": 0.04,
            "max_portfolio_risk": 0.08,
            "max_drawdown_from_peak": 0.10,
        },
        "ai": {"min_confidence": 0.75, "gate_margin": 0.06},
    },
    "aggressive": {
        "trading": {
            "max_position_size": 0.15,
            # The seed's aggressive bracket and breaker: 5% stop, 10% target, 8% breaker.
            "stop_loss": 0.05,
            "take_profit": 0.10,
            "max_positions": 8,
            "position_sizing": "volatility",
        },
        "risk": {
            "circuit_breaker_loss": 0.08,
            "max_portfolio_risk": 0.18,
            "max_daily_drawdown": 0.08,
            "max_drawdown_from_peak": 0.20,
        },
        "ai": {"min_confidence": 0.60, "gate_margin": 0.01},
    },
}


_ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "APCA_API_KEY_ID": ("api", "key_id"),
    "APCA_API_SECRET_KEY": ("api", "secret_key"),
    "APCA_API_BASE_URL": ("api", "base_url"),
    "APCA_API_DATA_URL": ("api", "data_url"),
    "TRADING_MODE": ("mode",),
    "TRADING_LIVE_ENABLED": ("live_trading_enabled",),
    "TRADING_PROFILE": ("profile",),
    "SMTP_PASSWORD": ("alerts", "smtp_password"),
    "TRADING_HTTP_TOKEN": ("http", "token"),
}
_ENV_PREFIX = "TRADING_"


def _field_allows_none(section: str, name: str) -> bool:
    model = SECTIONS.get(section)
    info = model.model_fields.get(name) if model else None
    if info is None:
        return False
    return info.default is None or "None" in str(info.annotation)


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and len(path) == 1 and key in SECTIONS:
            yield from _leaves(value, path)
        else:
            yield path


def _merge(base: dict[str, Any], layer: Mapping[str, Any]) -> None:
    """Deep-merge ``layer`` into ``base`` (section tables merge, values replace)."""
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif isinstance(value, Mapping):
            base[key] = {}
            _merge(base[key], value)
        else:
            base[key] = value


def _environment(
    environ: Mapping[str, str] | None, env_file: Path | None
) -> dict[str, str]:
    """``.env`` values under the real environment (the real environment wins)."""
    merged: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        text = _read_text(Path(env_file), "env_file")
        for key, value in dotenv_values(stream=io.StringIO(text)).items():
            if value is not None:
                merged[key] = value
    merged.update(os.environ if environ is None else environ)
    return merged


def _with_stored_credentials(env: dict[str, str], *, real_environment: bool, mode: Any) -> bool:
    """Add the Alpaca keys from the encrypted credential store (``python main.py credentials``)
    to ``env`` when neither the environment nor ``.env`` has any; True when it did.

    The store is ``TRADING_CREDENTIALS_FILE``, else ``data/credentials.enc`` (the latter only
    for the real process environment, so a test's own ``environ`` never picks up a developer's
    store). Skipped in sim mode, which needs no keys.
    """
    if env.get("APCA_API_KEY_ID") or env.get("APCA_API_SECRET_KEY"):
        return False
    if isinstance(mode, str) and mode.strip().lower() == "sim":
        return False
    from core.credentials import FILE_VAR, CredentialError, CredentialStore, passphrase_from, store_path

    if not real_environment and not env.get(FILE_VAR):
        return False
    store = CredentialStore(store_path(env))
    if not store.exists():
        return False
    try:
        credentials = store.load(passphrase_from(env))
    except CredentialError as exc:
        raise ConfigError([f"credentials {str(store.path)!r}: {exc}"]) from None
    env["APCA_API_KEY_ID"] = credentials.key_id
    env["APCA_API_SECRET_KEY"] = credentials.secret_key
    return True


def _env_layer(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Settings named by environment variables, and which variable set each dotted key."""
    layer: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for var, path in _ENV_ALIASES.items():
        if var in env:
            _set(layer, path, env[var])
            sources[".".join(path)] = var
    for var, raw in env.items():
        upper = var.upper()
        if not upper.startswith(_ENV_PREFIX) or "__" not in upper:
            continue
        parts = tuple(part.lower() for part in upper[len(_ENV_PREFIX) :].split("__"))
        value: Any = raw
        if len(parts) == 2 and raw.strip() == "" and _field_allows_none(*parts):
            value = None
        _set(layer, parts, value)
        sources[".".join(parts)] = var
    return layer, sources


def _read_text(path: Path, what: str) -> str:
    """A config file's text (UTF-8, a byte-order mark accepted), or one ConfigError line
    naming the file, the line of the first undecodable byte, and what is allowed."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{what}={str(path)!r}: file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{what}={str(path)!r}: is a directory, not a file"]) from None
    except OSError as exc:
        raise ConfigError([f"{what}={str(path)!r}: cannot read: {exc.strerror}"]) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            [f"{what}={str(path)!r}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 text; "
             "save the file as UTF-8"]
        ) from None


def _read_toml(path: Path) -> dict[str, Any]:
    text = _read_text(path, "config_file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config_file={str(path)!r}: invalid TOML: {exc}"]) from None


def _expand_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Nested or dotted (``"sim.days"``) keys; ``None`` values mean "flag not given"."""
    tree: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if v is not None}
            if not value:
                continue
        path = tuple(str(key).split("."))
        if isinstance(value, Mapping) and len(path) == 1:
            existing = tree.setdefault(path[0], {})
            if isinstance(existing, dict):
                _merge(existing, value)
                continue
        _set(tree, path, value)
    return tree
