"""The encrypted credential store, the settings reading it, the ``credentials`` command, and
owner-only files (issue 18, item 6). The daemon end to end: ``tests/test_e2e_credentials.py``."""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

import config
import main
from core import logging_setup
from core.credentials import CredentialError, Credentials, CredentialStore, passphrase_from
from core.errors import ConfigError

KEY_ID = "PKUNITSTOREKEY000007"
SECRET = "unit-store-secret-Hh3-0007"
PASSPHRASE = "unit passphrase 0007"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def wide_umask() -> Iterator[None]:
    """The usual 022: modes below must come from the code, not from the test's umask."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    yield
    logging_setup.shutdown()


def stored(tmp_path: Path) -> Path:
    path = tmp_path / "secrets" / "nested" / "credentials.enc"
    CredentialStore(path).save(Credentials(KEY_ID, SECRET), PASSPHRASE)
    return path


# -- the store ------------------------------------------------------------------------------


def test_round_trip_encrypted_owner_only(tmp_path: Path, wide_umask: None) -> None:
    tmp_path.chmod(0o755)
    path = stored(tmp_path)
    data = path.read_bytes()
    assert KEY_ID.encode() not in data and SECRET.encode() not in data and PASSPHRASE.encode() not in data
    document = json.loads(data)
    assert document["cipher"] == "fernet" and document["kdf"]["name"] == "scrypt"
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700 and _mode(path.parent.parent) == 0o700
    assert _mode(tmp_path) == 0o755, "a folder the store did not make keeps its mode"
    loaded = CredentialStore(path).load(PASSPHRASE)
    assert (loaded.key_id, loaded.secret_key) == (KEY_ID, SECRET)
    assert SECRET not in repr(loaded) and KEY_ID not in repr(loaded)


def test_wrong_passphrase_and_tampering_are_refused_without_secrets(tmp_path: Path) -> None:
    path = stored(tmp_path)
    with pytest.raises(CredentialError) as wrong:
        CredentialStore(path).load("not it")
    assert "wrong passphrase" in str(wrong.value)
    document = json.loads(path.read_text())
    token = document["token"]
    document["token"] = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    path.write_text(json.dumps(document))
    with pytest.raises(CredentialError) as changed:
        CredentialStore(path).load(PASSPHRASE)
    path.write_text("{not json")
    with pytest.raises(CredentialError) as damaged:
        CredentialStore(path).load(PASSPHRASE)
    for err in (wrong, changed, damaged):
        text = str(err.value)
        assert SECRET not in text and KEY_ID not in text and PASSPHRASE not in text


def test_passphrase_from_env_prompt_or_a_clear_refusal() -> None:
    assert passphrase_from({"TRADING_CREDENTIALS_PASSPHRASE": "from-env-xyz"}) == "from-env-xyz"
    answers = iter(["typed passphrase", "typed passphrase"])
    assert passphrase_from({}, confirm=True, prompt=lambda _: next(answers), interactive=True) == "typed passphrase"
    with pytest.raises(CredentialError, match="TRADING_CREDENTIALS_PASSPHRASE"):
        passphrase_from({}, interactive=False)
    answers = iter(["one passphrase", "another one"])
    with pytest.raises(CredentialError, match="differ"):
        passphrase_from({}, confirm=True, prompt=lambda _: next(answers), interactive=True)
    with pytest.raises(CredentialError, match="too short"):
        passphrase_from({"TRADING_CREDENTIALS_PASSPHRASE": "short"}, confirm=True)


# -- the settings read it --------------------------------------------------------------------


def test_settings_take_the_keys_from_the_store_when_the_environment_has_none(tmp_path: Path) -> None:
    path = stored(tmp_path)
    env = {"TRADING_CREDENTIALS_FILE": str(path), "TRADING_CREDENTIALS_PASSPHRASE": PASSPHRASE}
    s = config.load_settings(environ=env, env_file=None)
    assert s.mode == "paper" and s.has_api_keys
    assert s.api.key_id.get_secret_value() == KEY_ID and s.api.secret_key.get_secret_value() == SECRET
    assert KEY_ID in s.secret_values() and SECRET in s.secret_values()
    # explicit sim needs no keys: the store is not even opened (a wrong passphrase is fine)
    sim = config.load_settings(environ={**env, "TRADING_MODE": "sim",
                                        "TRADING_CREDENTIALS_PASSPHRASE": "wrong"}, env_file=None)
    assert sim.mode == "sim"


def test_the_environment_and_dotenv_still_win(tmp_path: Path) -> None:
    path = stored(tmp_path)
    env = {"TRADING_CREDENTIALS_FILE": str(path), "TRADING_CREDENTIALS_PASSPHRASE": "wrong, never used",
           "APCA_API_KEY_ID": "PKFROMENV00000000001", "APCA_API_SECRET_KEY": "env-secret"}
    assert config.load_settings(environ=env, env_file=None).api.key_id.get_secret_value() == "PKFROMENV00000000001"
    dotenv = tmp_path / ".env"
    dotenv.write_text("APCA_API_KEY_ID=PKFROMDOTENV00000001\nAPCA_API_SECRET_KEY=dotenv-secret\n")
    s = config.load_settings(environ={"TRADING_CREDENTIALS_FILE": str(path)}, env_file=dotenv)
    assert s.api.key_id.get_secret_value() == "PKFROMDOTENV00000001"


def test_a_store_without_its_passphrase_is_one_config_line_without_secrets(tmp_path: Path) -> None:
    path = stored(tmp_path)
    for env in ({"TRADING_CREDENTIALS_FILE": str(path)},
                {"TRADING_CREDENTIALS_FILE": str(path), "TRADING_CREDENTIALS_PASSPHRASE": "wrong one"}):
        with pytest.raises(ConfigError) as err:
            config.load_settings(environ=env, env_file=None)
        (line,) = err.value.problems
        assert str(path) in line
        assert SECRET not in line and KEY_ID not in line and PASSPHRASE not in line


def test_a_test_environment_never_reads_the_default_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    CredentialStore(Path("data/credentials.enc")).save(Credentials(KEY_ID, SECRET), PASSPHRASE)
    assert config.load_settings(environ={}, env_file=None).mode == "sim"


# -- the command -----------------------------------------------------------------------------


def test_credentials_command_set_show_delete_never_prints_a_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("APCA_", "TRADING_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TRADING_CREDENTIALS_PASSPHRASE", PASSPHRASE)
    (tmp_path / ".env").write_text(f"APCA_API_KEY_ID={KEY_ID}\nAPCA_API_SECRET_KEY={SECRET}\n")
    assert main.main(["credentials", "set", "--from-env"]) == 0
    path = tmp_path / "data" / "credentials.enc"
    assert path.is_file() and _mode(path) == 0o600
    (tmp_path / ".env").unlink()
    assert main.main(["credentials", "show"]) == 0
    shown = capsys.readouterr()
    assert "PKUN" in shown.out and f"({len(SECRET)} characters)" in shown.out
    monkeypatch.setenv("TRADING_CREDENTIALS_PASSPHRASE", "wrong passphrase")
    assert main.main(["credentials", "show"]) == 2
    wrong = capsys.readouterr()
    assert wrong.err.startswith("credentials: cannot decrypt") and len(wrong.err.strip().splitlines()) == 1
    # the store is what the daemon's settings read now
    monkeypatch.setenv("TRADING_CREDENTIALS_PASSPHRASE", PASSPHRASE)
    assert main.load(main.build_parser().parse_args(["status"])).mode == "paper"
    assert main.main(["credentials", "delete"]) == 0
    assert not path.exists()
    assert main.main(["credentials", "show"]) == 2
    rest = capsys.readouterr()
    for text in (shown.out, shown.err, wrong.out, wrong.err, rest.out, rest.err):
        assert SECRET not in text and KEY_ID not in text and PASSPHRASE not in text


def test_secrets_from_the_store_never_reach_the_logs(tmp_path: Path) -> None:
    path = stored(tmp_path)
    s = config.load_settings(environ={"TRADING_CREDENTIALS_FILE": str(path),
                                      "TRADING_CREDENTIALS_PASSPHRASE": PASSPHRASE}, env_file=None)
    log_file = tmp_path / "logs" / "trading.jsonl"
    stream = io.StringIO()
    logging_setup.configure(log_file=log_file, secrets=s.secret_values(), stream=stream, json_console=True)
    log = structlog.get_logger("tests.credentials")
    log.info("unlocked", detail=f"{KEY_ID}:{SECRET} with {PASSPHRASE}", config=s.redacted_dict())
    try:
        CredentialStore(path).load("definitely wrong")
    except CredentialError as exc:
        log.error("credentials_failed", error=str(exc), passphrase_used=PASSPHRASE)
    logging_setup.shutdown()
    for text in (log_file.read_text(), stream.getvalue()):
        assert "unlocked" in text and "credentials_failed" in text
        assert SECRET not in text and KEY_ID not in text and PASSPHRASE not in text


# -- owner-only files ------------------------------------------------------------------------


def test_state_db_wal_shm_log_and_report_are_owner_only(tmp_path: Path, wide_umask: None) -> None:
    from analytics.performance import compute_performance
    from analytics.reporting import write_report
    from journal.journal import Journal

    db = tmp_path / "state" / "trading_state.db"
    journal = Journal(db)
    journal.set_state("probe", {"ok": True})
    sidecars = [Path(f"{db}-wal"), Path(f"{db}-shm")]
    assert all(p.exists() for p in sidecars)
    assert [oct(_mode(p)) for p in (db, *sidecars)] == ["0o600"] * 3
    assert _mode(db.parent) == 0o700
    journal.close()

    log_file = tmp_path / "logs" / "deep" / "trading.jsonl"
    logging_setup.configure(log_file=log_file, stream=io.StringIO(), json_console=True)
    structlog.get_logger("tests.modes").info("hello")
    logging_setup.shutdown()
    assert _mode(log_file) == 0o600 and _mode(log_file.parent) == 0o700

    from datetime import datetime, timedelta, timezone

    t0 = datetime(2025, 3, 3, 21, tzinfo=timezone.utc)
    curve = [(t0 + timedelta(days=i), 100_000 + 100 * i) for i in range(5)]
    report = compute_performance(curve, [])
    html, summary = write_report(tmp_path / "reports" / "run1", report=report, equity_curve=curve, trades=[],
                                 title="t", meta={})
    assert _mode(html) == 0o600 and _mode(summary) == 0o600 and _mode(html.parent) == 0o700

    loose = tmp_path / "old.db"
    loose.write_text("")
    loose.chmod(0o644)
    Journal(loose).close()
    assert _mode(loose) == 0o600, "a state DB left readable by an older version is tightened"


def test_main_runs_under_umask_077_and_gives_the_old_one_back(tmp_path: Path, wide_umask: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def probe(*args: object, **kw: object) -> int:
        current = os.umask(0)
        os.umask(current)
        seen.append(current)
        return 0

    monkeypatch.setattr(main, "_main", probe)
    assert main.main(["status"]) == 0
    assert seen == [0o077]
    current = os.umask(0o022)
    assert current == 0o022


def test_set_asks_on_a_terminal_without_echoing_the_secret(tmp_path: Path) -> None:
    from ops.credentials import run

    asked: list[str] = []
    secret_answers = iter([SECRET, PASSPHRASE, PASSPHRASE])

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return KEY_ID

    def ask_secret(prompt: str) -> str:  # getpass in real use: nothing echoed
        asked.append(prompt)
        return next(secret_answers)

    out, err = io.StringIO(), io.StringIO()
    path = tmp_path / "creds.enc"
    assert run("set", file=path, env={}, out=out, err=err, ask=ask, ask_secret=ask_secret, interactive=True) == 0
    assert asked == ["Alpaca API key id: ", "Alpaca API secret key: ", "Credentials passphrase: ",
                     "Repeat the passphrase: "]
    assert CredentialStore(path).load(PASSPHRASE) == Credentials(KEY_ID, SECRET)
    text = out.getvalue() + err.getvalue()
    assert SECRET not in text and KEY_ID not in text and PASSPHRASE not in text
