"""Bad input, one rule: whatever a user gets wrong ends with exit status 2 and one line per
problem on stderr, naming the file (and line where there is one), the value and what is
allowed; never a traceback.

The whole table runs through ``main.main()`` in-process (cheap); the cases marked
``subprocess`` also run as ``python main.py ...`` exactly as a user types it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pytest

import main
from market.market_data import load_csv_bars
from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parent.parent
AAPL = SHARED_DATA / "daily" / "AAPL-1d-2013-01-02-2023-12-29.csv"
SPY = SHARED_DATA / "daily" / "SPY-1d-1993-01-29-2026-08-07.csv"
KEY, SECRET = "AKBADINPUTKEY12345", "badInputSecret/abcdefghijklmnop12345"
RUN = ["--sim-days", "1", "--speed", "max", "--symbols", "SPY"]


def _daily(folder: Path, source: Path, first: date, last: date, symbol: str,
           edit: Callable[[list[str]], list[str]] = lambda rows: rows, prefix: bytes = b"",
           encoding: str = "utf-8") -> Path:
    """``folder/daily/SYMBOL-1d-FIRST-LAST.csv`` holding ``source``'s rows dated first..last."""
    lines = source.read_text(encoding="utf-8").splitlines()
    kept = [row for row in lines[1:] if first <= date.fromisoformat(row[:10]) <= last]
    rows = edit([lines[0], *kept])
    target = folder / "daily" / f"{symbol}-1d-{kept[0][:10]}-{kept[-1][:10]}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(prefix + ("\n".join(rows) + "\n").encode(encoding))
    return target


def _data(root: Path, name: str, edit: Callable[[list[str]], list[str]] = lambda rows: rows,
          prefix: bytes = b"", encoding: str = "utf-8") -> Path:
    """A data folder with SPY (2012-2014) and AAPL (2013), AAPL's rows changed by ``edit``."""
    folder = root / name
    _daily(folder, SPY, date(2012, 1, 3), date(2014, 12, 31), "SPY")
    _daily(folder, AAPL, date(2013, 1, 2), date(2013, 12, 31), "AAPL", edit, prefix, encoding)
    return folder


def _set_row(index: int, text: str) -> Callable[[list[str]], list[str]]:
    def edit(rows: list[str]) -> list[str]:
        rows[index] = text
        return rows
    return edit


def _price(index: int, value: str) -> Callable[[list[str]], list[str]]:
    def edit(rows: list[str]) -> list[str]:
        cells = rows[index].split(",")
        cells[1:5] = [value] * 4
        rows[index] = ",".join(cells)
        return rows
    return edit


def _volume(index: int, value: str) -> Callable[[list[str]], list[str]]:
    def edit(rows: list[str]) -> list[str]:
        cells = rows[index].split(",")
        cells[5] = value
        rows[index] = ",".join(cells)
        return rows
    return edit


def _ohlc(index: int, *, high: str | None = None, low: str | None = None) -> Callable[[list[str]], list[str]]:
    """Row ``index`` with its high or low replaced: a bar that contradicts its own open and close."""
    def edit(rows: list[str]) -> list[str]:
        cells = rows[index].split(",")
        if high is not None:
            cells[2] = high
        if low is not None:
            cells[3] = low
        rows[index] = ",".join(cells)
        return rows
    return edit


def _rename_day(old: str, new: str) -> Callable[[list[str]], list[str]]:
    def edit(rows: list[str]) -> list[str]:
        return [new + row[len(old):] if row.startswith(old + ",") else row for row in rows]
    return edit


@dataclass
class Case:
    """One bad input: how to make it in ``tmp``, the argv, and what the line must name."""

    name: str
    make: Callable[[Path], tuple[list[str], dict[str, str]]]
    expect: Callable[[Path], list[str]]
    subprocess: bool = False
    secrets: list[str] = field(default_factory=list)


def _plain(argv: list[str]) -> Callable[[Path], tuple[list[str], dict[str, str]]]:
    return lambda tmp: (argv, {})


def _toml(tmp: Path) -> tuple[list[str], dict[str, str]]:
    (tmp / "bad.toml").write_bytes(b'mode = "sim"\n# caf\xe9 in Latin-1\n')
    return ["--config", str(tmp / "bad.toml"), *RUN], {}


def _env_file(tmp: Path) -> tuple[list[str], dict[str, str]]:
    (tmp / ".env").write_bytes(b"TRADING_MODE=sim\nNOTE=caf\xe9\n")
    return RUN, {}


def _corrupt_db(tmp: Path) -> tuple[list[str], dict[str, str]]:
    (tmp / "state.db").write_bytes(b"this is no database" + bytes(range(256)) * 20)
    return ["--state-db", str(tmp / "state.db"), "status"], {}


def _dir_db(tmp: Path) -> tuple[list[str], dict[str, str]]:
    (tmp / "state.db").mkdir()
    return ["--state-db", str(tmp / "state.db"), "status"], {}


def _newer_db(tmp: Path, command: list[str]) -> tuple[list[str], dict[str, str]]:
    conn = sqlite3.connect(tmp / "state.db")
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (999, 'from the future')")
    conn.commit()
    conn.close()
    return ["--state-db", str(tmp / "state.db"), *command], {}


def _file_in_the_way(tmp: Path, argv: list[str]) -> tuple[list[str], dict[str, str]]:
    (tmp / "afile").write_text("not a folder\n")
    return [part.replace("AFILE", str(tmp / "afile")) for part in argv], {}


def _with_data(name: str, edit: Callable[[list[str]], list[str]], argv: list[str], prefix: bytes = b"",
               encoding: str = "utf-8") -> Callable[[Path], tuple[list[str], dict[str, str]]]:
    def make(tmp: Path) -> tuple[list[str], dict[str, str]]:
        folder = _data(tmp, name, edit, prefix, encoding)
        return [part.replace("DATA", str(folder)).replace("TMP", str(tmp)) for part in argv], {}
    return make


BACKTEST = ["backtest", "--data", "DATA", "--symbols", "AAPL", "--start", "2013-01-02", "--end", "2013-03-29",
            "--report", "TMP/report"]
TRAIN = ["train", "--data", "DATA", "--symbols", "SPY,AAPL", "--out", "TMP/model.json"]
SIM_ON_DATA = ["--data", "DATA", "--symbols", "AAPL", "--start", "2013-01-02", "--sim-days", "1", "--speed", "max"]
AAPL_FILE = "AAPL-1d-2013-01-02-2013-12-31.csv"
EVALUATE = ["evaluate", "--data", "DATA", "--population", "sessions", "--out", "TMP/eval.csv"]


def _empty_dir(tmp: Path, argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """A ``--data`` folder that exists but holds no bar file."""
    (tmp / "empty").mkdir()
    return [part.replace("DATA", str(tmp / "empty")).replace("TMP", str(tmp)) for part in argv], {}

CASES = [
    Case("toml_not_utf8", _toml, lambda t: ["bad.toml", "line 2", "0xe9", "UTF-8"], subprocess=True),
    Case("env_file_not_utf8", _env_file, lambda t: [".env", "line 2", "0xe9", "UTF-8"], subprocess=True),
    Case("state_db_corrupt", _corrupt_db, lambda t: [str(t / "state.db"), "not a usable journal"],
         subprocess=True),
    Case("state_db_is_a_directory", _dir_db, lambda t: [str(t / "state.db"), "is a directory"]),
    Case("state_db_newer_schema_status", lambda t: _newer_db(t, ["status"]),
         lambda t: [str(t / "state.db"), "schema version 999", "up to"]),
    Case("state_db_newer_schema_run", lambda t: _newer_db(t, RUN),
         lambda t: [str(t / "state.db"), "schema version 999", "up to"], subprocess=True),
    Case("log_folder_is_a_file", lambda t: _file_in_the_way(t, ["--log-file", "AFILE/x.jsonl", *RUN]),
         lambda t: ["storage.log_file", str(t / "afile"), "is a file"], subprocess=True),
    Case("state_db_folder_is_a_file", lambda t: _file_in_the_way(t, ["--state-db", "AFILE/s.db", *RUN]),
         lambda t: ["storage.state_db", str(t / "afile"), "is a file"]),
    Case("speed_1e12", _plain(["--speed", "1e12", "--sim-days", "1"]), lambda t: ["sim.speed", "1e12", "100000"],
         subprocess=True),
    Case("speed_nan", _plain(["--speed", "nan", "--sim-days", "1"]), lambda t: ["sim.speed", "100000"]),
    Case("start_1800", _plain(["--start", "1800-01-01", "--sim-days", "1"]),
         lambda t: ["sim.start", "1800-01-01", "1990-01-01"], subprocess=True),
    Case("start_after_the_calendar", _plain(["--start", "2036-01-02", "--sim-days", "1"]),
         lambda t: ["sim.start", "2036-01-02", "2035-"]),
    Case("report_out_is_a_file", lambda t: _file_in_the_way(t, ["report", "--out", "AFILE"]),
         lambda t: ["report --out", str(t / "afile"), "is a file"], subprocess=True),
    Case("backtest_report_is_a_file", lambda t: _file_in_the_way(
        t, ["backtest", "--data", str(t), "--report", "AFILE"]), lambda t: ["backtest --report", "is a file"]),
    Case("train_out_is_a_directory", _with_data("ok", lambda r: r, [*TRAIN[:-1], "TMP"]),
         lambda t: ["train --out", str(t), "is a directory"]),
    Case("train_price_1e300", _with_data("huge", _price(40, "1e300"), TRAIN),
         lambda t: [AAPL_FILE, ":41:", "1e300", "10,000,000"], subprocess=True),
    Case("train_not_utf8", _with_data("latin", _set_row(20, "2013-01-31,1\xe9,2,3,4,5"), TRAIN,
                                            encoding="latin-1"),
         lambda t: [AAPL_FILE, ":21:", "UTF-8"]),
    Case("train_saturday", _with_data("sat", _rename_day("2013-01-04", "2013-01-05"), TRAIN),
         lambda t: [AAPL_FILE, ":4:", "2013-01-05", "Saturday"]),
    Case("backtest_price_1e300", _with_data("huge", _price(40, "1e300"), BACKTEST),
         lambda t: [AAPL_FILE, "line 41", "1e300", "10,000,000"]),
    Case("backtest_volume_1e300", _with_data("vol", _volume(40, "1e300"), BACKTEST),
         lambda t: [AAPL_FILE, "line 41", "volume", "1e300"]),
    Case("train_volume_1e300", _with_data("vol", _volume(40, "1e300"), TRAIN),
         lambda t: [AAPL_FILE, ":41:", "volume", "1e300"]),
    Case("backtest_saturday", _with_data("sat", _rename_day("2013-01-04", "2013-01-05"), BACKTEST),
         lambda t: [AAPL_FILE, "line 4", "2013-01-05", "Saturday"], subprocess=True),
    Case("backtest_holiday", _with_data("hol", _rename_day("2013-07-03", "2013-07-04"), BACKTEST),
         lambda t: [AAPL_FILE, "2013-07-04", "holiday"]),
    Case("backtest_not_utf8", _with_data("latin", _set_row(20, "2013-01-31,1\xe9,2,3,4,5"), BACKTEST,
                                               encoding="latin-1"),
         lambda t: [AAPL_FILE, "line 21", "UTF-8"]),
    Case("sim_data_saturday", _with_data("sat", _rename_day("2013-01-04", "2013-01-05"), SIM_ON_DATA),
         lambda t: [AAPL_FILE, ":4:", "Saturday"]),
    Case("sim_data_missing", _plain(["--data", "/nonexistent/bars", *RUN]),
         lambda t: ["sim.data_dir", "/nonexistent/bars", "no such directory"]),
    Case("sim_faults_bad", _plain(["--sim-days", "1"]), lambda t: ["sim.faults", "error_rate", "between 0 and 1"]),
    Case("base_url_with_keys", lambda t: (RUN, {
        "APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET,
        "APCA_API_BASE_URL": f"https://{KEY}:{SECRET}@paper-api.alpaca.markets"}),
         lambda t: ["api.base_url", "user:password@"], subprocess=True, secrets=[KEY, SECRET]),
    # the acceptance walk of issues 15 and 16: evaluate and backtest as a new user mistypes them
    Case("evaluate_bad_row", _with_data("badrow", _price(40, "abc"), EVALUATE),
         lambda t: [AAPL_FILE, "41", "abc"], subprocess=True),
    Case("evaluate_high_below_close", _with_data("hilo", _ohlc(40, high="1.0"), EVALUATE),
         lambda t: [AAPL_FILE, ":41:", "high 1 is below"], subprocess=True),
    Case("train_low_above_open", _with_data("lohi", _ohlc(40, low="9999"), TRAIN),
         lambda t: [AAPL_FILE, ":41:", "low 9999 is above"]),
    Case("evaluate_unknown_symbol", _with_data("ok", lambda r: r, [*EVALUATE, "--symbols", "NOPE"]),
         lambda t: ["NOPE"]),
    Case("evaluate_empty_data_dir", lambda t: _empty_dir(t, EVALUATE), lambda t: [str(t / "empty")]),
    Case("backtest_empty_data_dir", lambda t: _empty_dir(t, ["backtest", "--data", "DATA"]),
         lambda t: [str(t / "empty"), "no bar files"]),
    Case("backtest_unknown_symbol", _with_data("ok", lambda r: r, ["backtest", "--data", "DATA", "--symbols", "NOPE"]),
         lambda t: ["NOPE", "available: AAPL, SPY"]),
    Case("evaluate_start_after_end", _with_data("ok", lambda r: r, [*EVALUATE, "--start", "2013-06-03",
                                                                    "--end", "2013-03-01"]),
         lambda t: ["--end 2013-03-01", "before", "--start 2013-06-03"], subprocess=True),
    Case("evaluate_end_not_a_date", _with_data("ok", lambda r: r, [*EVALUATE, "--end", "bogus"]),
         lambda t: ["--end", "bogus", "YYYY-MM-DD"], subprocess=True),
    Case("http_bad_value", _plain(["--http", "abc", *RUN]), lambda t: ["--http", "abc", "off"], subprocess=True),
    Case("smtp_password_in_clear", lambda t: (RUN, {
        "TRADING_ALERTS__EMAIL_ENABLED": "true", "TRADING_ALERTS__SMTP_STARTTLS": "false",
        "TRADING_ALERTS__SMTP_USER": "bot", "SMTP_PASSWORD": "smtp-Secret-Pass-1",
        "TRADING_ALERTS__EMAIL_FROM": "bot@example.com", "TRADING_ALERTS__EMAIL_TO": "ops@example.com"}),
         lambda t: ["alerts.smtp_starttls", "allow_plaintext_auth"], secrets=["smtp-Secret-Pass-1"]),
]
# sim_faults_bad: the fault spec comes from the environment
_FAULTS_ENV = {"TRADING_SIM__FAULTS": "error_rate=7"}


def _environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "TRADING_", "SMTP_", "PYTEST_"))}
    return env | {"PYTHONDONTWRITEBYTECODE": "1"} | extra


def _check(case: Case, tmp: Path, code: int, stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert code == 2, f"exit {code}\n{stderr}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr  # each table row holds exactly one problem
    line = lines[0]
    assert line.startswith(("config error: ", "error: ")), line
    for needle in case.expect(tmp):
        assert needle in line, f"{needle!r} not in {line!r}"
    for secret in case.secrets:
        assert secret not in stderr


def _prepare(case: Case, tmp: Path) -> tuple[list[str], dict[str, str]]:
    argv, env = case.make(tmp)
    if case.name == "sim_faults_bad":
        env = env | _FAULTS_ENV
    return argv, env


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_in_process(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    argv, env = _prepare(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("APCA_", "TRADING_", "SMTP_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main.main(argv)
    _check(case, tmp_path, code, capsys.readouterr().err)


SUBPROCESS_CASES = [c for c in CASES if c.subprocess]


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[c.name for c in SUBPROCESS_CASES])
def test_bad_input_as_a_user_runs_it(case: Case, tmp_path: Path) -> None:
    argv, env = _prepare(case, tmp_path)
    result = subprocess.run([sys.executable, str(REPO / "main.py"), *argv], cwd=tmp_path,
                            env=_environment(env), capture_output=True, text=True, timeout=120)
    _check(case, tmp_path, result.returncode, result.stderr)


# -- what is accepted ---------------------------------------------------------------------------


def test_a_csv_with_a_utf8_byte_order_mark_is_accepted_by_backtest_and_train_readers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _data(tmp_path, "bom", prefix=b"\xef\xbb\xbf")
    bars = load_csv_bars(folder / "daily" / AAPL_FILE)
    assert len(bars) == 252
    monkeypatch.chdir(tmp_path)
    argv = [part.replace("DATA", str(folder)).replace("TMP", str(tmp_path)) for part in BACKTEST]
    code = main.main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (tmp_path / "report" / "summary.json").is_file()


def test_clean_shared_data_has_only_session_dates_and_sane_prices(tmp_path: Path) -> None:
    """The new checks reject nothing in the real data the project ships with its tests."""
    for name in ("SPY-1d-1993-01-29-2026-08-07.csv", "AAPL-1d-1998-01-02-2021-03-31.csv"):
        shutil.copy(SHARED_DATA / "daily" / name, tmp_path / name)
        assert len(load_csv_bars(tmp_path / name)) > 5000


def test_a_minute_bar_on_a_holiday_names_its_line(tmp_path: Path) -> None:
    from simulator.csv_files import CsvDataError, read_minute_file

    path = tmp_path / "SPY-1m-2013-07-03-2013-07-04.csv"
    path.write_text("timestamp,open,high,low,close,volume\n"
                    "2013-07-03T14:30:00+00:00,160,161,159,160.5,1000\n"
                    "2013-07-03T14:31:00+00:00,160,161,159,160.5,1000\n"
                    "2013-07-04T14:30:00+00:00,160,161,159,160.5,1000\n")
    with pytest.raises(CsvDataError) as caught:
        read_minute_file(path)
    assert caught.value.line == 4 and "2013-07-04 is an NYSE holiday" in str(caught.value)
