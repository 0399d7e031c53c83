"""logging_setup: JSON lines to file and stdout, UTC timestamps, contextvars, secret redaction."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from core import logging_setup
from config import load_settings
from core.logging_setup import MASK, add_secret, bind_run, configure, new_run_id, redact_secrets

SECRET = "sk-live-9f8e7d6c5b4a3210ZYXW"
KEY_ID = "PKLOGTESTKEY00000001"


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    structlog.contextvars.clear_contextvars()
    yield
    logging_setup.shutdown()
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def sinks(tmp_path: Path) -> tuple[Path, io.StringIO]:
    """Logging configured to a JSON file under a not-yet-existing directory and a buffer."""
    log_file = tmp_path / "nested" / "logs" / "trading.jsonl"
    stream = io.StringIO()
    configure(log_file=log_file, level="INFO", secrets=[SECRET, KEY_ID], stream=stream, json_console=True)
    return log_file, stream


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def both(sinks: tuple[Path, io.StringIO]) -> tuple[str, str]:
    log_file, stream = sinks
    return log_file.read_text(encoding="utf-8"), stream.getvalue()


# -- the redaction processor, directly -----------------------------------------------------------


def test_redactor_replaces_registered_secret_everywhere() -> None:
    add_secret(SECRET)
    event = {
        "event": f"connecting with {SECRET}",
        "headers": {"X-Trace": f"prefix-{SECRET}-suffix", "items": [SECRET, ("a", SECRET)]},
        "count": 3,
        "ok": True,
        "nothing": None,
    }
    out = redact_secrets(None, "info", event)
    assert SECRET not in repr(out)
    assert out["event"] == f"connecting with {MASK}"
    assert out["headers"]["X-Trace"] == f"prefix-{MASK}-suffix"
    assert out["headers"]["items"] == [MASK, ("a", MASK)]
    assert (out["count"], out["ok"], out["nothing"]) == (3, True, None)


def test_redactor_checks_the_text_of_arbitrary_objects() -> None:
    add_secret(SECRET)
    out = redact_secrets(None, "error", {"event": "failed", "error": RuntimeError(f"bad key {SECRET}")})
    assert out["error"] == f"bad key {MASK}"
    harmless = ValueError("nothing to hide")
    assert redact_secrets(None, "error", {"event": "x", "error": harmless})["error"] is harmless


@pytest.mark.parametrize(
    "key",
    [
        "secret",
        "api_secret",
        "client_secret_value",
        "password",
        "SMTP_PASSWORD",
        "api_key",
        "key_id",
        "Authorization",
        "APCA-API-KEY-ID",
        "apca-api-secret-key",
        "alpaca_api_key",
    ],
)
def test_redactor_masks_fields_named_like_secrets(key: str) -> None:
    out = redact_secrets(None, "info", {"event": "request", key: "unregistered-value", "nested": {key: "v"}})
    assert out[key] == MASK
    assert out["nested"][key] == MASK


@pytest.mark.parametrize("key", ["symbol", "qty", "client_order_id", "keyboard", "monkey_id"])
def test_redactor_leaves_ordinary_fields_alone(key: str) -> None:
    assert redact_secrets(None, "info", {"event": "e", key: "AAPL"})[key] == "AAPL"


def test_short_secret_is_masked_only_as_a_whole_value() -> None:
    add_secret("xyz")
    out = redact_secrets(None, "info", {"event": "xyzzy happened", "token_hint": "xyz"})
    assert out["event"] == "xyzzy happened"
    assert out["token_hint"] == MASK


# -- configured pipeline: both sinks -----------------------------------------------------------


def test_every_line_is_json_with_the_four_keys_and_a_utc_timestamp(sinks: tuple[Path, io.StringIO]) -> None:
    log = structlog.get_logger("tests.orders")
    log.info("order_submitted", symbol="AAPL", qty="10")
    log.warning("quote_stale", symbol="MSFT", age_seconds=950.5)
    file_text, console_text = both(sinks)
    for text in (file_text, console_text):
        records = json_lines(text)
        assert [r["event"] for r in records] == ["order_submitted", "quote_stale"]
        for record in records:
            assert list(record)[:4] == ["timestamp", "level", "logger", "event"]
            assert record["logger"] == "tests.orders"
            stamp = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
            assert stamp.utcoffset() == timedelta(0)
            assert record["timestamp"].endswith("Z")
        assert records[0]["level"] == "info" and records[1]["level"] == "warning"
        assert records[0]["symbol"] == "AAPL" and records[1]["age_seconds"] == 950.5


def test_the_file_is_flushed_after_every_line(sinks: tuple[Path, io.StringIO]) -> None:
    log_file, _ = sinks
    log = structlog.get_logger("tests.tail")
    for n in range(3):
        log.info("cycle_complete", cycle=n)
        # read while the handler is still open, as `tail -f` would
        assert len(log_file.read_text(encoding="utf-8").splitlines()) == n + 1


def test_level_filters_both_sinks(sinks: tuple[Path, io.StringIO]) -> None:
    log = structlog.get_logger("tests.level")
    log.debug("noise")
    log.info("signal")
    for text in both(sinks):
        assert [r["event"] for r in json_lines(text)] == ["signal"]


def test_bound_contextvars_appear_in_every_line(sinks: tuple[Path, io.StringIO]) -> None:
    run_id = new_run_id()
    bind_run(run_id)
    log = structlog.get_logger("tests.ctx")
    with structlog.contextvars.bound_contextvars(client_order_id="cid-abc-1"):
        log.info("order_submitted")
    log.info("cycle_complete")
    for text in both(sinks):
        first, second = json_lines(text)
        assert first["run_id"] == run_id == second["run_id"]
        assert first["client_order_id"] == "cid-abc-1"
        assert "client_order_id" not in second


def test_stdlib_loggers_go_through_the_same_pipeline(sinks: tuple[Path, io.StringIO]) -> None:
    bind_run("run-xyz")
    logging.getLogger("aiohttp.client").warning("retrying with header %s", SECRET)
    for text in both(sinks):
        (record,) = json_lines(text)
        assert record["logger"] == "aiohttp.client"
        assert record["level"] == "warning"
        assert record["run_id"] == "run-xyz"
        assert record["event"] == f"retrying with header {MASK}"
        assert record["timestamp"].endswith("Z")


def test_secrets_never_reach_either_sink(sinks: tuple[Path, io.StringIO]) -> None:
    log = structlog.get_logger("tests.secrets")
    log.info("as_field", key=SECRET)
    log.info("nested", request={"headers": {"APCA-API-KEY-ID": KEY_ID, "trace": [f"k={KEY_ID}"]}})
    log.info(f"in the message {SECRET}")
    log.info("named_field", secret_key="a-value-never-registered", password="hunter2-unregistered")
    try:
        raise ConnectionError(f"auth failed for {KEY_ID}:{SECRET}")
    except ConnectionError:
        log.exception("broker_error")
    log.error("as_object", error=PermissionError(f"denied {SECRET}"))
    for text in both(sinks):
        for secret in (SECRET, KEY_ID, "a-value-never-registered", "hunter2-unregistered"):
            assert secret not in text
        records = json_lines(text)
        assert len(records) == 6
        assert "ConnectionError" in records[4]["exception"]  # the traceback is kept, redacted
        assert MASK in records[4]["exception"]


def test_settings_secrets_registered_at_configure_are_redacted(tmp_path: Path) -> None:
    settings = load_settings(
        env_file=None,
        environ={"APCA_API_KEY_ID": "PKFROMSETTINGS000001", "APCA_API_SECRET_KEY": "secret-from-settings-42"},
    )
    stream = io.StringIO()
    configure(log_file=None, secrets=settings.secret_values(), stream=stream, json_console=True)
    structlog.get_logger("tests.settings").info(
        "startup", config=settings.redacted_dict(), raw=repr(settings), leak="secret-from-settings-42"
    )
    text = stream.getvalue()
    assert "PKFROMSETTINGS000001" not in text and "secret-from-settings-42" not in text
    (record,) = json_lines(text)
    assert record["config"]["api"]["key_id"] == MASK
    assert record["config"]["mode"] == "paper"


def test_add_secret_after_configure_takes_effect(sinks: tuple[Path, io.StringIO]) -> None:
    late = "late-registered-secret-0001"
    add_secret(late)
    structlog.get_logger("tests.late").info("rotated", detail=f"new {late}")
    for text in both(sinks):
        assert late not in text


def test_console_renderer_is_human_and_still_redacted(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure(log_file=tmp_path / "t.jsonl", secrets=[SECRET], stream=stream, json_console=False)
    structlog.get_logger("tests.console").info("order_filled", symbol="AAPL", note=SECRET)
    text = stream.getvalue()
    assert "order_filled" in text and "AAPL" in text
    assert SECRET not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])
    # the file stays JSON whatever the console does
    (record,) = json_lines((tmp_path / "t.jsonl").read_text(encoding="utf-8"))
    assert record["event"] == "order_filled"


def test_non_tty_console_defaults_to_json(tmp_path: Path) -> None:
    stream = io.StringIO()  # not a terminal
    configure(log_file=None, stream=stream)
    structlog.get_logger("tests.auto").info("hello")
    assert json_lines(stream.getvalue())[0]["event"] == "hello"


def test_reconfigure_replaces_handlers_instead_of_duplicating(tmp_path: Path) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure(log_file=tmp_path / "a.jsonl", stream=first, json_console=True)
    configure(log_file=tmp_path / "b.jsonl", stream=second, json_console=True, level="DEBUG")
    structlog.get_logger("tests.again").debug("once")
    assert first.getvalue() == ""
    assert len(json_lines(second.getvalue())) == 1
    assert (tmp_path / "a.jsonl").read_text(encoding="utf-8") == ""
    assert len(json_lines((tmp_path / "b.jsonl").read_text(encoding="utf-8"))) == 1


def test_shutdown_restores_the_root_logger(tmp_path: Path) -> None:
    root = logging.getLogger()
    level_before, handlers_before = root.level, list(root.handlers)
    configure(log_file=tmp_path / "x.jsonl", stream=io.StringIO(), level="DEBUG")
    logging_setup.shutdown()
    assert root.level == level_before
    assert root.handlers == handlers_before


def test_bad_level_is_refused() -> None:
    with pytest.raises(ValueError, match="LOUD"):
        configure(log_file=None, level="LOUD", stream=io.StringIO())


def test_capture_logs_still_works_for_component_tests(sinks: tuple[Path, io.StringIO]) -> None:
    with structlog.testing.capture_logs() as captured:
        structlog.get_logger("tests.capture").info("breaker_tripped", loss=0.051)
    assert captured == [{"event": "breaker_tripped", "loss": 0.051, "log_level": "info"}]


def test_run_ids_are_unique_and_sortable() -> None:
    ids = {new_run_id() for _ in range(200)}
    assert len(ids) == 200
    for run_id in ids:
        assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", run_id)
