"""The encrypted credential store: Alpaca keys at rest, readable only with a passphrase.

``python main.py credentials set`` writes the key id and secret into one file (default
``data/credentials.enc``, or ``TRADING_CREDENTIALS_FILE``), encrypted with Fernet (AES-128-CBC
plus HMAC-SHA256, from the ``cryptography`` package) under a key derived from the passphrase
by scrypt (n=2^15, r=8, p=1, a random 16-byte salt per file). The file is ``0600`` in a
``0700`` folder the store creates; a wrong passphrase or a changed byte is refused as such
(Fernet authenticates), never half-read.

The passphrase comes from ``TRADING_CREDENTIALS_PASSPHRASE`` (non-interactive use: a service
manager's secret, a CI variable) or, on a terminal, from a prompt that does not echo. Every
secret this module touches (passphrase, key id, secret) is registered with the log redactor
before anything could log it, and no error message here contains one.

Why a passphrase file rather than the OS keyring: the daemon runs on servers, which rarely have
a keyring service (Secret Service, Keychain) unlocked; a file encrypted under a passphrase
works the same on a laptop and a headless box, and moves with the state directory.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from core import logging_setup
from core.private_files import FILE_MODE, private_dir

DEFAULT_FILE = Path("data/credentials.enc")
FILE_VAR = "TRADING_CREDENTIALS_FILE"
PASSPHRASE_VAR = "TRADING_CREDENTIALS_PASSPHRASE"
MIN_PASSPHRASE = 8
FORMAT = "trading-daemon-credentials"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


class CredentialError(Exception):
    """The store cannot be used (no passphrase, wrong passphrase, damaged file). Never holds a secret."""


@dataclass(frozen=True)
class Credentials:
    """An Alpaca key pair. ``repr`` shows neither value."""

    key_id: str
    secret_key: str

    def __repr__(self) -> str:
        return f"Credentials(key_id={mask_key_id(self.key_id)!r}, secret_key='***')"


def mask_key_id(key_id: str) -> str:
    """The first 4 characters, the rest starred: enough to tell two accounts' keys apart."""
    return key_id[:4] + "*" * max(len(key_id) - 4, 4)


def mask_secret(secret: str) -> str:
    """Nothing of the secret but its length."""
    return f"******** ({len(secret)} characters)"


def store_path(env: Mapping[str, str]) -> Path:
    """``TRADING_CREDENTIALS_FILE`` when set, else ``data/credentials.enc``."""
    named = (env.get(FILE_VAR) or "").strip()
    return Path(named) if named else DEFAULT_FILE


def passphrase_from(env: Mapping[str, str], *, confirm: bool = False,
                    prompt: Callable[[str], str] | None = None, interactive: bool | None = None) -> str:
    """The passphrase: ``TRADING_CREDENTIALS_PASSPHRASE``, else a prompt on a terminal.

    ``confirm`` (when setting) asks twice and enforces a minimum length. Raises
    :class:`CredentialError` when there is no passphrase to be had.
    """
    value = env.get(PASSPHRASE_VAR)
    if not value:
        if interactive is None:
            interactive = sys.stdin.isatty()
        if not interactive:
            raise CredentialError(
                f"no passphrase: set {PASSPHRASE_VAR} (non-interactive use) or run on a terminal to be asked")
        ask = prompt or getpass.getpass
        value = ask("Credentials passphrase: ")
        if confirm and ask("Repeat the passphrase: ") != value:
            raise CredentialError("the two passphrases differ; nothing was stored")
    logging_setup.add_secret(value)
    if confirm and len(value) < MIN_PASSPHRASE:
        raise CredentialError(f"the passphrase is too short: use at least {MIN_PASSPHRASE} characters")
    return value


def _fernet(passphrase: str, salt: bytes) -> Fernet:
    return _fernet_with(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)


class CredentialStore:
    """One encrypted file holding one key pair."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, credentials: Credentials, passphrase: str) -> None:
        """Encrypt and write atomically (``0600``; missing folders ``0700``), replacing any old file."""
        if not credentials.key_id.strip() or not credentials.secret_key.strip():
            raise CredentialError("both the key id and the secret key are needed")
        logging_setup.add_secret(credentials.key_id)
        logging_setup.add_secret(credentials.secret_key)
        salt = os.urandom(16)
        plain = json.dumps({"key_id": credentials.key_id, "secret_key": credentials.secret_key}).encode("utf-8")
        document = {
            "format": FORMAT, "version": 1,
            "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                    "salt": base64.b64encode(salt).decode("ascii")},
            "cipher": "fernet",
            "token": _fernet(passphrase, salt).encrypt(plain).decode("ascii"),
        }
        private_dir(self.path.parent)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(document, stream, indent=2)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temporary, FILE_MODE)
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def load(self, passphrase: str) -> Credentials:
        """Decrypt the key pair; :class:`CredentialError` for a wrong passphrase or a damaged file."""
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CredentialError(f"no credentials stored at {self.path}") from None
        except (OSError, ValueError) as exc:
            raise CredentialError(f"{self.path} is not a credentials file ({type(exc).__name__})") from None
        try:
            if document.get("format") != FORMAT or document.get("version") != 1:
                raise CredentialError(f"{self.path} is not a version-1 credentials file")
            kdf = document["kdf"]
            if kdf.get("name") != "scrypt":
                raise CredentialError(f"{self.path}: unknown key derivation {kdf.get('name')!r}")
            salt = base64.b64decode(kdf["salt"])
            fernet = _fernet_with(passphrase, salt, int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
            plain = json.loads(fernet.decrypt(str(document["token"]).encode("ascii")))
            credentials = Credentials(str(plain["key_id"]), str(plain["secret_key"]))
        except InvalidToken:
            raise CredentialError(
                f"cannot decrypt {self.path}: wrong passphrase, or the file was changed") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CredentialError(f"{self.path} is damaged ({type(exc).__name__})") from None
        logging_setup.add_secret(credentials.key_id)
        logging_setup.add_secret(credentials.secret_key)
        return credentials

    def delete(self) -> bool:
        """Remove the file; False when there was none."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


def _fernet_with(passphrase: str, salt: bytes, n: int, r: int, p: int) -> Fernet:
    if not (2 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16):  # a file cannot make us spin
        raise ValueError("scrypt parameters out of range")
    kdf = Scrypt(salt=salt, length=32, n=n, r=r, p=p)
    return Fernet(base64.urlsafe_b64encode(kdf.derive(passphrase.encode("utf-8"))))
