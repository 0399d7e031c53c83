"""``python main.py credentials set|show|delete``: the operator's side of the credential store.

``set`` asks for the key id and the secret (the secret without echo), or with ``--from-env``
takes ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY`` from the environment or ``.env`` (moving
keys out of a clear-text ``.env``), then for the passphrase (or reads
``TRADING_CREDENTIALS_PASSPHRASE``), and writes the encrypted file. ``show`` decrypts it to
prove the passphrase and prints the key id masked and the secret as its length only.
``delete`` removes the file. Nothing printed, on success or failure, contains a secret.

Runs before the settings are loaded (loading them may itself need the store), so it depends
on the environment and ``.env`` only.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from dotenv import dotenv_values

from core.credentials import (
    CredentialError,
    Credentials,
    CredentialStore,
    mask_key_id,
    mask_secret,
    passphrase_from,
    store_path,
)

EXIT_OK, EXIT_CONFIG = 0, 2


def environment(env_file: Path = Path(".env")) -> dict[str, str]:
    """``.env`` under the real environment (the environment wins), as the settings read them."""
    merged: dict[str, str] = {}
    if env_file.is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ)
    return merged


def run(action: str, *, file: Path | None = None, from_env: bool = False,
        env: Mapping[str, str] | None = None, out: TextIO | None = None, err: TextIO | None = None,
        ask: Callable[[str], str] | None = None, ask_secret: Callable[[str], str] | None = None,
        interactive: bool | None = None) -> int:
    """Carry out ``action``; the exit code (2 with one line on ``err`` when it cannot)."""
    env = dict(environment() if env is None else env)
    out = out or sys.stdout
    err = err or sys.stderr
    store = CredentialStore(file if file is not None else store_path(env))
    try:
        if action == "set":
            return _set(store, env, out, from_env=from_env, ask=ask, ask_secret=ask_secret, interactive=interactive)
        if action == "show":
            return _show(store, env, out, ask_secret=ask_secret, interactive=interactive)
        if action == "delete":
            if store.delete():
                print(f"deleted the stored credentials {store.path}", file=out)
            else:
                print(f"no credentials stored at {store.path}; nothing to delete", file=out)
            return EXIT_OK
    except CredentialError as exc:
        print(f"credentials: {exc}", file=err)
        return EXIT_CONFIG
    except (EOFError, KeyboardInterrupt):
        print("credentials: cancelled; nothing was changed", file=err)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"credentials: {store.path}: {exc.strerror or type(exc).__name__}", file=err)
        return EXIT_CONFIG
    print(f"credentials: unknown action {action!r}; use set, show or delete", file=err)
    return EXIT_CONFIG


def _set(store: CredentialStore, env: Mapping[str, str], out: TextIO, *, from_env: bool,
         ask: Callable[[str], str] | None, ask_secret: Callable[[str], str] | None,
         interactive: bool | None) -> int:
    if from_env:
        key_id, secret = env.get("APCA_API_KEY_ID", "").strip(), env.get("APCA_API_SECRET_KEY", "").strip()
        if not key_id or not secret:
            raise CredentialError("--from-env needs APCA_API_KEY_ID and APCA_API_SECRET_KEY in the environment or .env")
    else:
        if interactive is None:
            interactive = sys.stdin.isatty()
        if not interactive:
            raise CredentialError("not a terminal: use --from-env with APCA_API_KEY_ID and APCA_API_SECRET_KEY set")
        key_id = (ask or input)("Alpaca API key id: ").strip()
        secret = (ask_secret or _getpass)("Alpaca API secret key: ").strip()
    credentials = Credentials(key_id, secret)
    passphrase = passphrase_from(env, confirm=True, prompt=ask_secret, interactive=interactive)
    store.save(credentials, passphrase)
    print(f"stored the Alpaca keys encrypted in {store.path} (owner-only, {_mode(store.path)})", file=out)
    print(f"  key id      {mask_key_id(key_id)}", file=out)
    print("The daemon reads them when APCA_API_KEY_ID / APCA_API_SECRET_KEY are not set; give it the "
          "passphrase in TRADING_CREDENTIALS_PASSPHRASE, or it asks on a terminal. "
          "Remove the keys from .env now.", file=out)
    return EXIT_OK


def _show(store: CredentialStore, env: Mapping[str, str], out: TextIO, *,
          ask_secret: Callable[[str], str] | None, interactive: bool | None) -> int:
    if not store.exists():
        raise CredentialError(f"no credentials stored at {store.path}; store them with: main.py credentials set")
    credentials = store.load(passphrase_from(env, prompt=ask_secret, interactive=interactive))
    print(f"credentials file  {store.path} ({_mode(store.path)}, encrypted: Fernet, key from scrypt)", file=out)
    print(f"  key id          {mask_key_id(credentials.key_id)}", file=out)
    print(f"  secret key      {mask_secret(credentials.secret_key)}", file=out)
    shadowed = [v for v in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY") if env.get(v)]
    if shadowed:
        print(f"  note            {', '.join(shadowed)} set in the environment or .env: those win", file=out)
    return EXIT_OK


def _mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))[2:].rjust(4, "0")


def _getpass(prompt: str) -> str:
    import getpass

    return getpass.getpass(prompt)
