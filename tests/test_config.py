"""config.load_settings: defaults, precedence, profiles, modes, validation messages, secrets."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import config
from config import PROFILES, SECTIONS, Settings, format_problems, load_settings
from core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
KEY_ID = "PKTESTKEYID0123456789"
SECRET = "tEsTsEcReT0123456789abcdefghijklmnopqrstuv"
SMTP_PW = "smtp-pass-0987654321"
KEYS = {"APCA_API_KEY_ID": KEY_ID, "APCA_API_SECRET_KEY": SECRET}


def load(environ: dict[str, str] | None = None, **kw: Any) -> Settings:
    """Settings from an explicit environment only (no .env, no os.environ)."""
    kw.setdefault("env_file", None)
    return load_settings(environ=environ or {}, **kw)


def problems_of(environ: dict[str, str] | None = None, **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(environ, **kw)
    return info.value.problems


def write_toml(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- defaults and modes ---------------------------------------------------------------------


def test_seed_defaults_without_keys_run_the_simulator() -> None:
    settings = load()
    assert settings.mode == "sim"
    assert settings.api.base_url is None and settings.api.data_url is None
    assert settings.profile == "default"
    assert settings.trading.max_position_size == 0.10
    assert settings.trading.stop_loss == 0.03
    assert settings.risk.circuit_breaker_loss == 0.05
    assert settings.scanning.symbols == ["SPY", "QQQ", "AAPL", "MSFT", "NVDA", "TSLA"]
    assert settings.pdt.retirement_date.isoformat() == "2026-06-04"
    assert settings.sim.speed == 300.0  # demo speed: a session in about 80 s
    assert settings.storage.log_level == "INFO"
    assert settings.live_trading_enabled is False


def test_both_keys_default_to_paper_with_alpaca_paper_endpoints() -> None:
    settings = load(KEYS)
    assert settings.mode == "paper"
    assert settings.api.base_url == "https://paper-api.alpaca.markets"
    assert settings.api.data_url == "https://data.alpaca.markets"
    assert settings.has_api_keys


def test_live_with_opt_in_uses_the_live_endpoint() -> None:
    settings = load({**KEYS, "TRADING_MODE": "live", "TRADING_LIVE_ENABLED": "true"})
    assert settings.mode == "live"
    assert settings.api.base_url == "https://api.alpaca.markets"
    assert settings.api.data_url == "https://data.alpaca.markets"


def test_live_opt_in_can_come_from_overrides() -> None:
    settings = load(KEYS, overrides={"mode": "live", "live_trading_enabled": True})
    assert settings.mode == "live"


def test_sim_mode_never_keeps_a_remote_endpoint_but_keeps_loopback() -> None:
    remote = load({"TRADING_MODE": "sim", "APCA_API_BASE_URL": "https://paper-api.alpaca.markets"})
    assert remote.api.base_url is None
    local = load({"APCA_API_BASE_URL": "http://127.0.0.1:8765/"})
    assert local.mode == "sim"
    assert local.api.base_url == "http://127.0.0.1:8765"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9000", "http://localhost:9000", "http://[::1]:9000", "http://127.8.0.2"]
)
def test_plain_http_is_allowed_to_loopback_in_paper_mode(url: str) -> None:
    settings = load({**KEYS, "APCA_API_BASE_URL": url})
    assert settings.api.base_url == url


def test_version_suffix_in_base_url_is_dropped() -> None:
    settings = load({**KEYS, "APCA_API_BASE_URL": "https://paper-api.alpaca.markets/v2"})
    assert settings.api.base_url == "https://paper-api.alpaca.markets"


def test_settings_constructor_alone_gives_defaults_and_reads_no_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRADING_TRADING__STOP_LOSS", "0.01")
    monkeypatch.setenv("APCA_API_KEY_ID", KEY_ID)
    settings = Settings()
    assert settings.trading.stop_loss == 0.03
    assert settings.mode == "sim"


def test_settings_constructor_derives_mode_and_endpoints_too() -> None:
    settings = Settings(api={"key_id": KEY_ID, "secret_key": SECRET})
    assert settings.mode == "paper"
    assert settings.api.base_url == "https://paper-api.alpaca.markets"
    live = Settings(mode="live", live_trading_enabled=True, api={"key_id": KEY_ID, "secret_key": SECRET})
    assert live.api.base_url == "https://api.alpaca.markets"


def test_assigning_an_unsafe_endpoint_later_is_refused() -> None:
    settings = load()
    settings.api.base_url = "http://127.0.0.1:40123"  # main.py: the embedded simulator
    assert settings.api.base_url == "http://127.0.0.1:40123"
    with pytest.raises(ValidationError, match="loopback"):
        settings.api.base_url = "http://example.com"


def test_settings_constructor_still_checks_cross_field_rules() -> None:
    with pytest.raises(ValidationError, match="take_profit"):
        Settings(trading={"stop_loss": 0.07, "take_profit": 0.06})


# -- one clear line per problem -------------------------------------------------------------

BAD_INPUTS = [
    pytest.param({"TRADING_TRADING__STOP_LOSS": "-0.03"}, None, "trading.stop_loss=", "-0.03", id="negative-stop"),
    pytest.param({"TRADING_AI__MIN_CONFIDENCE": "1.5"}, None, "ai.min_confidence=", "1.5", id="confidence-1.5"),
    pytest.param(
        {"TRADING_TRADING__MAX_POSITION_SIZE": "0.5", "TRADING_TRADING__STOP_LOSS": "0.2",
         "TRADING_TRADING__TAKE_PROFIT": "0.4", "TRADING_RISK__EMERGENCY_EXIT_LOSS": "0.5"},
        None, "trading.stop_loss=", "circuit_breaker_loss", id="stop-wider-than-breaker",
    ),
    pytest.param({}, "[trading]\nmax_positon_size = 0.1\n", "trading.max_positon_size:",
                 "did you mean max_position_size", id="unknown-toml-key"),
    pytest.param({}, "[tradng]\nstop_loss = 0.1\n", "tradng:", "did you mean trading", id="unknown-toml-section"),
    pytest.param({"TRADING_SCANNING__SYMBOLS": "SPY,$SPY"}, None, "scanning.symbols[1]=", "'$SPY'", id="symbol-dollar"),
    pytest.param({"TRADING_SCANNING__SYMBOLS": "sp y"}, None, "scanning.symbols[0]=", "'sp y'", id="symbol-space"),
    pytest.param({"TRADING_MODE": "real"}, None, "mode=", "sim", id="bad-mode"),
    pytest.param({"APCA_API_KEY_ID": KEY_ID}, None, "api.secret_key:", "APCA_API_SECRET_KEY", id="key-without-secret"),
    pytest.param({"APCA_API_SECRET_KEY": SECRET}, None, "api.key_id:", "APCA_API_KEY_ID", id="secret-without-key"),
    pytest.param({**KEYS, "APCA_API_BASE_URL": "http://paper-api.alpaca.markets"}, None, "api.base_url=",
                 "loopback", id="http-non-loopback"),
    pytest.param({**KEYS, "TRADING_MODE": "live"}, None, "mode='live'", "TRADING_LIVE_ENABLED=true", id="live-no-opt-in"),
    pytest.param({**KEYS, "APCA_API_BASE_URL": "https://api.alpaca.markets"}, None, "api.base_url=",
                 "paper mode", id="live-url-in-paper"),
    pytest.param({"TRADING_PROFILE": "yolo"}, None, "profile='yolo'", "conservative", id="bad-profile"),
    pytest.param({"TRADING_MODE": "paper"}, None, "mode='paper'", "APCA_API_KEY_ID", id="paper-without-keys"),
    pytest.param({"TRADING_AI__SENTIMENT_WEIGHT": "0.5"}, None, "ai.technical_weight+", "sum to 1", id="weights"),
    pytest.param({"TRADING_TRADING__MAX_POSITIONS": "0"}, None, "trading.max_positions=0", ">= 1", id="max-positions"),
    pytest.param({"TRADING_RATE_LIMIT__RATE_LIMIT_BUFFER": "1.5"}, None, "rate_limit.rate_limit_buffer=",
                 "<= 1", id="rate-buffer"),
    pytest.param({"TRADING_RATE_LIMIT__BURST_ALLOWANCE": "200"}, None, "rate_limit.burst_allowance=200",
                 "max_requests_per_minute", id="burst"),
    pytest.param({"TRADING_MEAN_REVERSION__MAX_HOLD_DAYS": "0"}, None, "mean_reversion.max_hold_days=0",
                 ">= 1", id="hold-days"),
    pytest.param({"TRADING_RISK__EMERGENCY_EXIT_LOSS": "0.02"}, None, "risk.emergency_exit_loss=0.02",
                 "trading.stop_loss", id="emergency-below-stop"),
    pytest.param({"TRADING_PDT__REGIME": "sometimes"}, None, "pdt.regime=", "intraday_margin", id="pdt-regime"),
    pytest.param({"TRADING_SIM__SPEED": "0"}, None, "sim.speed=", "> 0", id="sim-speed"),
    pytest.param({"TRADING_STORAGE__LOG_LEVEL": "LOUD"}, None, "storage.log_level=", "DEBUG", id="log-level"),
    pytest.param({"TRADING_TRADING__STOP_LOSS": "0.07"}, None, "trading.stop_loss=0.07", "take_profit",
                 id="stop-above-take"),
    pytest.param({"TRADING_TRADING__MAX_POSITONS": "3"}, None, "trading.max_positons:",
                 "TRADING_TRADING__MAX_POSITONS", id="unknown-env-var"),
]


@pytest.mark.parametrize(("environ", "toml", "line_start", "mentions"), BAD_INPUTS)
def test_each_problem_names_its_key_value_and_what_is_allowed(
    tmp_path: Path, environ: dict[str, str], toml: str | None, line_start: str, mentions: str
) -> None:
    config_file = write_toml(tmp_path, toml) if toml is not None else None
    problems = problems_of(environ, config_file=config_file)
    matching = [line for line in problems if line.startswith(line_start)]
    assert matching, problems
    assert mentions in matching[0]
    assert all("\n" not in line for line in problems)
    for line in problems:  # secrets are never echoed back
        assert KEY_ID not in line and SECRET not in line


def test_negative_stop_message_gives_the_whole_allowed_range() -> None:
    problems = problems_of({"TRADING_TRADING__STOP_LOSS": "-0.03"})
    assert problems == [
        "trading.stop_loss=-0.03: must be > 0 and < 1 [from TRADING_TRADING__STOP_LOSS]"
    ]


def test_toml_problem_names_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[risk]\ncircuit_breaker_loss = -0.03\n")
    assert problems_of(config_file=path) == [
        f"risk.circuit_breaker_loss=-0.03: must be > 0 and < 1 [from {path}]"
    ]


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        "[trading]\nstop_loss = -0.03\nmax_positon_size = 0.2\n"
        "[ai]\nmin_confidence = 1.5\n[scanning]\nsymbols = ['$SPY']\n",
    )
    environ = {
        "APCA_API_KEY_ID": KEY_ID,  # secret missing
        "TRADING_RATE_LIMIT__BURST_ALLOWANCE": "500",  # cross-field rule
        "TRADING_AI__SENTIMENT_WEIGHT": "0.9",  # weights no longer sum to 1 (ai also has a field error)
    }
    problems = problems_of(environ, config_file=path)
    keys = [re.split(r"[=:]", line, maxsplit=1)[0] for line in problems]
    for expected in (
        "trading.stop_loss",
        "trading.max_positon_size",
        "ai.min_confidence",
        "scanning.symbols[0]",
        "api.secret_key",
        "rate_limit.burst_allowance",
    ):
        assert expected in keys, problems
    assert len(problems) == len(set(problems))


def test_format_problems_prints_one_line_per_problem() -> None:
    with pytest.raises(ConfigError) as info:
        load({"TRADING_TRADING__STOP_LOSS": "-1", "TRADING_AI__MIN_CONFIDENCE": "2"})
    text = format_problems(info.value)
    lines = text.splitlines()
    assert len(lines) == len(info.value.problems) == 2
    assert all(line.startswith("config error: ") for line in lines)


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    problems = problems_of(config_file=tmp_path / "nope.toml")
    assert problems[0].startswith("config_file=") and "not found" in problems[0]


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    problems = problems_of(config_file=write_toml(tmp_path, "[trading\nstop_loss = \n"))
    assert "invalid TOML" in problems[0]


# -- precedence -----------------------------------------------------------------------------


def test_precedence_profile_then_file_then_env_then_overrides(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[trading]\nstop_loss = 0.025\ntake_profit = 0.05\nmax_positions = 4\n")
    environ = {"TRADING_TRADING__STOP_LOSS": "0.015", "TRADING_TRADING__MAX_POSITIONS": "6"}
    only_profile = load(profile="conservative")
    assert only_profile.trading.stop_loss == 0.02
    with_file = load(profile="conservative", config_file=path)
    assert (with_file.trading.stop_loss, with_file.trading.max_positions) == (0.025, 4)
    assert with_file.trading.max_position_size == 0.05  # from the profile, untouched by the file
    with_env = load(environ, profile="conservative", config_file=path)
    assert (with_env.trading.stop_loss, with_env.trading.max_positions) == (0.015, 6)
    with_overrides = load(
        environ, profile="conservative", config_file=path, overrides={"trading": {"max_positions": 2}}
    )
    assert with_overrides.trading.max_positions == 2
    assert with_overrides.trading.stop_loss == 0.015


def test_config_file_from_trading_config_env_and_argument_wins(tmp_path: Path) -> None:
    from_env = write_toml(tmp_path, "[trading]\nmax_positions = 7\n", "env.toml")
    from_arg = write_toml(tmp_path, "[trading]\nmax_positions = 2\n", "arg.toml")
    assert load({"TRADING_CONFIG": str(from_env)}).trading.max_positions == 7
    assert load({"TRADING_CONFIG": str(from_env)}, config_file=from_arg).trading.max_positions == 2


def test_env_lists_are_comma_separated_and_symbols_normalised() -> None:
    settings = load(
        {
            "TRADING_SCANNING__SYMBOLS": "spy, qqq,BRK.B,spy",
            "TRADING_STRATEGY__ENABLED": "breakout,defensive",
            "TRADING_ALERTS__EMAIL_TO": "a@example.com, b@example.com",
        }
    )
    assert settings.scanning.symbols == ["SPY", "QQQ", "BRK.B"]
    assert settings.strategy.enabled == ["breakout", "defensive"]
    assert settings.alerts.email_to == ["a@example.com", "b@example.com"]


def test_env_values_are_typed_and_empty_means_unset() -> None:
    settings = load(
        {
            "TRADING_TRADING__EXTENDED_HOURS": "true",
            "TRADING_PDT__MAX_DAY_TRADES": "2",
            "TRADING_SIM__DAYS": "",
            "TRADING_PDT__RETIREMENT_DATE": "2026-07-01",
        }
    )
    assert settings.trading.extended_hours is True
    assert settings.pdt.max_day_trades == 2
    assert settings.sim.days is None
    assert settings.pdt.retirement_date.isoformat() == "2026-07-01"


@pytest.mark.parametrize("speed", ["max", "MAX"])
def test_sim_speed_max_means_none(speed: str) -> None:
    assert load({"TRADING_SIM__SPEED": speed}).sim.speed is None
    assert load(overrides={"sim": {"speed": speed}}).sim.speed is None


def test_overrides_accept_dotted_keys_and_ignore_unset_flags() -> None:
    settings = load(
        {"TRADING_SIM__DAYS": "3"},
        overrides={"sim.days": None, "sim.seed": 7, "storage": {"log_file": "x.jsonl", "state_db": None}},
    )
    assert settings.sim.days == 3  # a None override (flag not given) changes nothing
    assert settings.sim.seed == 7
    assert settings.storage.log_file == "x.jsonl"
    assert settings.storage.state_db == "data/trading_state.db"


def test_unknown_override_key_is_reported() -> None:
    problems = problems_of(overrides={"sim": {"dayz": 3}})
    assert problems == ["sim.dayz: unknown key (did you mean days?) [from overrides]"]


# -- .env -------------------------------------------------------------------------------------


def test_dotenv_is_loaded_and_the_real_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"APCA_API_KEY_ID={KEY_ID}\n"
        f"APCA_API_SECRET_KEY='{SECRET}'\n"
        "# a comment\n"
        "TRADING_TRADING__MAX_POSITIONS=4\n"
        "export TRADING_AI__MIN_CONFIDENCE=0.7\n",
        encoding="utf-8",
    )
    settings = load_settings(env_file=env_file, environ={"TRADING_TRADING__MAX_POSITIONS": "2"})
    assert settings.mode == "paper"
    assert settings.api.secret_key is not None
    assert settings.api.secret_key.get_secret_value() == SECRET
    assert settings.trading.max_positions == 2
    assert settings.ai.min_confidence == 0.7


def test_missing_dotenv_file_is_fine(tmp_path: Path) -> None:
    assert load_settings(env_file=tmp_path / ".env", environ={}).mode == "sim"


def test_dotenv_can_name_the_config_file_and_profile(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "[trading]\nmax_positions = 2\n")
    env_file = tmp_path / ".env"
    env_file.write_text(f"TRADING_CONFIG={toml}\nTRADING_PROFILE=aggressive\n", encoding="utf-8")
    settings = load_settings(env_file=env_file, environ={})
    assert settings.profile == "aggressive"
    assert settings.trading.max_positions == 2
    assert settings.trading.stop_loss == 0.05  # the aggressive profile (seed: 5%)


# -- profiles ---------------------------------------------------------------------------------


def test_conservative_profile_values() -> None:
    s = load(profile="conservative")
    assert (s.trading.max_position_size, s.trading.stop_loss, s.trading.take_profit) == (0.05, 0.02, 0.04)
    assert s.trading.max_positions == 3
    assert (s.risk.circuit_breaker_loss, s.risk.max_daily_drawdown, s.risk.max_portfolio_risk) == (
        0.03,
        0.04,
        0.08,
    )
    assert s.ai.min_confidence == 0.75
    assert s.profile == "conservative"


def test_aggressive_profile_values() -> None:
    s = load(profile="aggressive")
    assert (s.trading.max_position_size, s.trading.stop_loss, s.trading.take_profit) == (0.15, 0.05, 0.10)
    assert s.trading.max_positions == 8
    assert (s.risk.max_portfolio_risk, s.risk.max_daily_drawdown) == (0.18, 0.08)
    # The seed's aggressive stop / target / breaker: 5% / 10% / 8%.
    assert s.risk.circuit_breaker_loss == 0.08
    assert s.risk.max_drawdown_from_peak == 0.20
    assert s.ai.min_confidence == 0.60
    assert s.trading.position_sizing == "volatility"


def test_profile_argument_beats_env_and_env_beats_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'profile = "aggressive"\n')
    assert load(config_file=path).profile == "aggressive"
    assert load({"TRADING_PROFILE": "conservative"}, config_file=path).profile == "conservative"
    assert load({"TRADING_PROFILE": "conservative"}, profile="default").profile == "default"


def test_unknown_profile_names_the_allowed_ones() -> None:
    problems = problems_of(profile="yolo")
    assert problems == ["profile='yolo': unknown profile; allowed: default, conservative, aggressive"]


def test_every_profile_is_valid_with_and_without_keys() -> None:
    for name in PROFILES:
        assert load(profile=name).profile == name
        assert load(KEYS, profile=name).mode == "paper"


# -- secrets ------------------------------------------------------------------------------------


def secret_settings() -> Settings:
    return load(
        {
            **KEYS,
            "SMTP_PASSWORD": SMTP_PW,
            "TRADING_ALERTS__WEBHOOK_URL": "https://hooks.example.com/T000/B000/tokentokentoken",
        }
    )


def test_secrets_are_absent_from_repr_str_and_redacted_dict() -> None:
    settings = secret_settings()
    secrets = [KEY_ID, SECRET, SMTP_PW, "tokentokentoken"]
    dumped = str(settings.redacted_dict())
    for text in (repr(settings), str(settings), dumped, repr(settings.api), str(settings.alerts)):
        for secret in secrets:
            assert secret not in text
    redacted = settings.redacted_dict()
    assert redacted["api"]["key_id"] == "***"
    assert redacted["api"]["secret_key"] == "***"
    assert redacted["alerts"]["smtp_password"] == "***"
    assert redacted["alerts"]["webhook_url"] == "***"
    assert redacted["trading"]["stop_loss"] == 0.03


def test_secret_values_lists_the_raw_secrets_for_the_log_redactor() -> None:
    values = secret_settings().secret_values()
    assert set(values) == {KEY_ID, SECRET, SMTP_PW, "https://hooks.example.com/T000/B000/tokentokentoken"}
    assert load().secret_values() == []


def test_a_secret_given_with_the_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[api]\nkey_id = 123456789\n")
    problems = problems_of(config_file=path)
    assert any(line.startswith("api.key_id='***'") for line in problems), problems
    assert not any("123456789" in line for line in problems)


# -- the example files ------------------------------------------------------------------------


def test_config_example_toml_loads_to_exactly_the_defaults() -> None:
    settings = load(config_file=ROOT / "config.example.toml")
    assert settings.model_dump() == Settings().model_dump()


def test_config_example_toml_shows_every_field_of_every_section() -> None:
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    for section, model in SECTIONS.items():
        assert f"[{section}]" in text
        for field in model.model_fields:
            if field in data.get(section, {}):
                continue
            assert re.search(rf"^#\s*{field}\b", text, re.MULTILINE), f"{section}.{field} undocumented"


def test_env_example_documents_every_variable_with_placeholders_only() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    for name in (
        "APCA_API_KEY_ID",
        "APCA_API_SECRET_KEY",
        "APCA_API_BASE_URL",
        "APCA_API_DATA_URL",
        "TRADING_MODE",
        "TRADING_LIVE_ENABLED",
        "TRADING_PROFILE",
        "TRADING_CONFIG",
        "SMTP_PASSWORD",
        "TRADING_<SECTION>__<FIELD>",
    ):
        assert name in text, name
    assignments = dict(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", text, re.MULTILINE)
    )
    for name in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "SMTP_PASSWORD"):
        assert assignments[name].startswith("your-"), name
    # Every TRADING_<SECTION>__<FIELD> example names a real field.
    for name in assignments:
        if name.startswith("TRADING_") and "__" in name:
            section, field = name[len("TRADING_") :].lower().split("__")
            assert field in SECTIONS[section].model_fields, name


def test_env_example_values_load_cleanly(tmp_path: Path) -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    uncommented = "\n".join(
        line.lstrip("# ") for line in text.splitlines() if re.match(r"^#?\s*[A-Z][A-Z0-9_]*=", line)
    )
    uncommented = re.sub(r"^TRADING_(CONFIG|MODE)=.*$", "", uncommented, flags=re.MULTILINE)
    env_file = tmp_path / ".env"
    env_file.write_text(uncommented, encoding="utf-8")
    settings = load_settings(env_file=env_file, environ={})
    assert settings.mode == "paper"
    assert settings.alerts.email_enabled is True


def test_public_constants_match_the_documented_endpoints() -> None:
    assert config.PAPER_BASE_URL == "https://paper-api.alpaca.markets"
    assert config.LIVE_BASE_URL == "https://api.alpaca.markets"
    assert config.DATA_URL == "https://data.alpaca.markets"
