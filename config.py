"""Every setting of the trading daemon: seed defaults, profiles, validation, secrets.

Build the configuration with :func:`load_settings`. Sources, lowest to highest precedence:

1. seed defaults (the values in the section models below);
2. a named profile (``default``, ``conservative``, ``aggressive``; see :data:`PROFILES`);
3. a TOML file (``config_file`` argument, else ``TRADING_CONFIG``), sections as tables;
4. the environment, over ``.env`` (python-dotenv syntax; a real variable beats the file):
   ``APCA_API_KEY_ID``, ``APCA_API_SECRET_KEY``, ``APCA_API_BASE_URL``, ``APCA_API_DATA_URL``,
   ``TRADING_MODE``, ``TRADING_LIVE_ENABLED``, ``TRADING_PROFILE``, ``TRADING_CONFIG``,
   ``SMTP_PASSWORD`` and ``TRADING_<SECTION>__<FIELD>`` for any field (lists comma-separated);
   when neither has Alpaca keys, the encrypted store of ``python main.py credentials set``
   (``TRADING_CREDENTIALS_FILE``, default ``data/credentials.enc``; see :mod:`core.credentials`);
5. explicit ``overrides`` (a nested dict, typically from command-line flags).

Whatever is wrong is reported at once: :class:`core.errors.ConfigError` carries one line per
problem, each naming the dotted key, the offending value and what is allowed. Secret values
(API key id, API secret, SMTP password, webhook URL) never appear in those lines, in
``repr(settings)`` or in :meth:`Settings.redacted_dict`.

The trading mode defaults to ``sim`` (the embedded simulator) without Alpaca keys and to
``paper`` with both keys; ``live`` needs the explicit opt-in ``TRADING_LIVE_ENABLED=true``.

This module is the face: :class:`Settings`, :func:`load_settings` and the collection of every
problem. Its parts live in ``settings/``: the section models (``settings.sections``, where a
new key goes), value types (``settings.values``), the derived mode (``settings.modes``),
cross-field rules (``settings.rules``), problem lines (``settings.problems``) and the sources
(``settings.sources``); URL and host checks in :mod:`core.urls`. Import them from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from core.errors import ConfigError
from core.urls import has_url_credentials, is_loopback_host, normalise_host, redact_url
from settings.modes import _derive_mode_and_urls
from settings.problems import _error_lines, _fmt, _suggest
from settings.rules import _cross_field_problems, _PartialSettings
from settings.sections import (
    _TOP_LEVEL,
    ROTATION_REGIMES,
    SECRET_KEYS,
    SECTIONS,
    TIMEFRAME_NAMES,
    AiSettings,
    AlertSettings,
    ApiSettings,
    DataQualitySettings,
    DefensiveSettings,
    GapRiskSettings,
    HttpSettings,
    MeanReversionSettings,
    MultiTimeframeSettings,
    PdtSettings,
    RateLimitSettings,
    RiskSettings,
    ScanningSettings,
    Section,
    SimSettings,
    StorageSettings,
    StreamSettings,
    StrategyRotationSettings,
    StrategySettings,
    TradingSettings,
    _TopLevel,
)
from settings.sources import (
    PROFILES,
    _env_layer,
    _environment,
    _expand_overrides,
    _leaves,
    _merge,
    _read_toml,
    _with_stored_credentials,
)
from settings.values import DATA_URL, LIVE_BASE_URL, MAX_SIM_SPEED, PAPER_BASE_URL, SYMBOL_PATTERN, _lower

# The names other modules and tests import. The section models, value types and URL checks
# live in settings/ and core/urls.py; this module is the one place to import them from.
__all__ = [
    "PROFILES",
    "PAPER_BASE_URL",
    "LIVE_BASE_URL",
    "DATA_URL",
    "Settings",
    "load_settings",
    "format_problems",
    "is_loopback_host",
    "normalise_host",
    "redact_url",
    "has_url_credentials",
    "ConfigError",
    "SECTIONS",
    "SECRET_KEYS",
    "TIMEFRAME_NAMES",
    "ROTATION_REGIMES",
    "MAX_SIM_SPEED",
    "SYMBOL_PATTERN",
    "Section",
    "ApiSettings",
    "TradingSettings",
    "RiskSettings",
    "ScanningSettings",
    "RateLimitSettings",
    "DataQualitySettings",
    "StrategySettings",
    "AiSettings",
    "MeanReversionSettings",
    "DefensiveSettings",
    "MultiTimeframeSettings",
    "StrategyRotationSettings",
    "PdtSettings",
    "GapRiskSettings",
    "AlertSettings",
    "StorageSettings",
    "SimSettings",
    "StreamSettings",
    "HttpSettings",
]

# -- the settings object ----------------------------------------------------------------------


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`.

    ``Settings()`` alone gives the seed defaults (mode ``sim``) and reads nothing from the
    environment: every outside source goes through :func:`load_settings`, so one place
    decides precedence and reports problems.
    """

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)

    mode: Annotated[Literal["sim", "paper", "live"], BeforeValidator(_lower)] = "sim"
    live_trading_enabled: bool = False
    profile: str = "default"

    api: ApiSettings = Field(default_factory=ApiSettings)
    trading: TradingSettings = Field(default_factory=TradingSettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    scanning: ScanningSettings = Field(default_factory=ScanningSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    data_quality: DataQualitySettings = Field(default_factory=DataQualitySettings)
    strategy: StrategySettings = Field(default_factory=StrategySettings)
    ai: AiSettings = Field(default_factory=AiSettings)
    mean_reversion: MeanReversionSettings = Field(default_factory=MeanReversionSettings)
    defensive: DefensiveSettings = Field(default_factory=DefensiveSettings)
    multi_timeframe: MultiTimeframeSettings = Field(default_factory=MultiTimeframeSettings)
    strategy_rotation: StrategyRotationSettings = Field(default_factory=StrategyRotationSettings)
    pdt: PdtSettings = Field(default_factory=PdtSettings)
    gap_risk: GapRiskSettings = Field(default_factory=GapRiskSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    sim: SimSettings = Field(default_factory=SimSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only explicit values: load_settings() layers profiles, TOML, .env and environment.
        return (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _derive(cls, data: Any) -> Any:
        return _derive_mode_and_urls(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        problems = _cross_field_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def redacted_dict(self) -> dict[str, Any]:
        """Every setting as JSON-safe data, secrets shown as ``"***"`` (safe to log)."""
        data = self.model_dump(mode="json")
        for dotted in SECRET_KEYS:
            section, key = dotted.split(".")
            if data[section].get(key) is not None:
                data[section][key] = "***"
        return data

    def secret_values(self) -> list[str]:
        """The raw secret strings, for registering with the log redactor."""
        values = [
            self.api.key_id.get_secret_value() if self.api.key_id else None,
            self.api.secret_key.get_secret_value() if self.api.secret_key else None,
            self.alerts.smtp_password.get_secret_value() if self.alerts.smtp_password else None,
            self.alerts.webhook_url,
            self.http.token.get_secret_value() if self.http.token else None,
        ]
        return [value for value in values if value]

    @property
    def has_api_keys(self) -> bool:
        """True when both the Alpaca key id and secret are configured."""
        return self.api.key_id is not None and self.api.secret_key is not None


# -- the entry point --------------------------------------------------------------------------


def load_settings(
    *,
    config_file: Path | None = None,
    profile: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env_file: Path | None = Path(".env"),
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the validated settings from defaults, a profile, TOML, environment and overrides.

    ``environ`` replaces ``os.environ`` (tests); ``env_file=None`` skips ``.env``. Raises
    :class:`core.errors.ConfigError` listing every problem found, one line each.
    """
    env = _environment(environ, env_file)
    env_values, env_sources = _env_layer(env)
    override_values = _expand_overrides(overrides or {})

    path = config_file if config_file is not None else env.get("TRADING_CONFIG") or None
    file_values = _read_toml(Path(path)) if path is not None else {}
    mode = override_values.get("mode") or env_values.get("mode") or file_values.get("mode")
    if _with_stored_credentials(env, real_environment=environ is None, mode=mode):
        env_values, env_sources = _env_layer(env)

    chosen = (
        profile
        or override_values.get("profile")
        or env_values.get("profile")
        or file_values.get("profile")
        or "default"
    )
    if not isinstance(chosen, str) or chosen.strip().lower() not in PROFILES:
        raise ConfigError(
            [
                f"profile={_fmt(chosen)}: unknown profile; allowed: "
                + ", ".join(PROFILES)
            ]
        )
    chosen = chosen.strip().lower()

    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}  # dotted key -> where its value came from (for messages)
    layers: tuple[tuple[Mapping[str, Any], str | None], ...] = (
        (PROFILES[chosen], f"profile {chosen}"),
        (file_values, str(path) if path is not None else None),
        (env_values, None),
        (override_values, "overrides"),
    )
    for layer, label in layers:
        _merge(raw, layer)
        for leaf in _leaves(layer):
            dotted = ".".join(leaf)
            sources[dotted] = label if label is not None else env_sources.get(dotted, "env")
    raw["profile"] = chosen
    sources.pop("profile", None)

    problems = _validate(raw, sources)
    if problems:
        raise ConfigError(problems)
    return Settings.model_validate(raw)


def _validate(raw: dict[str, Any], sources: Mapping[str, str]) -> list[str]:
    """Every problem in ``raw``: unknown keys, per-field errors, then cross-field rules."""
    data = _derive_mode_and_urls(raw)
    problems: list[str] = []
    validated: dict[str, Any] = {}

    for key in data:
        if key not in SECTIONS and key not in _TOP_LEVEL:
            source = sources.get(str(key))
            suffix = f" [from {source}]" if source else ""
            problems.append(
                f"{key}: unknown key{_suggest(str(key), [*SECTIONS, *_TOP_LEVEL])}{suffix}"
            )

    top = {key: data[key] for key in _TOP_LEVEL if key in data}
    try:
        top_model = _TopLevel.model_validate(top)
        validated.update(top_model.model_dump())
    except ValidationError as exc:
        problems.extend(_error_lines(exc, (), _TopLevel, sources))

    for name, model in SECTIONS.items():
        try:
            validated[name] = model.model_validate(data.get(name, {}))
        except ValidationError as exc:
            problems.extend(_error_lines(exc, (name,), model, sources))
            if name == "api":
                validated[name] = _keys_only(data.get(name))

    problems.extend(_cross_field_problems(_PartialSettings(validated)))
    return problems


def revalidate(settings: Any) -> list[str]:
    """Every field and cross-field rule run again over the settings in effect, one line per
    problem (``diagnose`` uses it: a configuration changed in memory, or settings built
    without :func:`load_settings`, is caught before it trades)."""
    return _validate(settings.model_dump(), {})


def _keys_only(api: Any) -> ApiSettings | None:
    """The API keys alone, so key rules still run when another API field is wrong."""
    if not isinstance(api, Mapping):
        return None
    try:
        return ApiSettings.model_validate(
            {name: api.get(name) for name in ("key_id", "secret_key")}
        )
    except ValidationError:
        return None


def format_problems(err: ConfigError) -> str:
    """The problems as lines for stderr, one per problem (``main`` then exits 2)."""
    return "\n".join(f"config error: {problem}" for problem in err.problems)
