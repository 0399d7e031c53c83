"""The mode and the Alpaca endpoints the given keys imply (before validation)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from core.urls import is_loopback_host
from settings.values import DATA_URL, LIVE_BASE_URL, PAPER_BASE_URL, _url_host


def _present(value: Any) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return isinstance(value, str) and bool(value.strip())


def _derive_mode_and_urls(data: dict[str, Any]) -> dict[str, Any]:
    """Fill in the default mode and the Alpaca endpoints it implies (pure; input untouched).

    No mode: ``paper`` with both keys, else ``sim``. Sim mode keeps an endpoint only if it is
    on loopback (an external simulator): it never talks to Alpaca, whatever the environment
    says. Paper and live get Alpaca's URLs unless the user named others.
    """
    data = dict(data)
    api = data.get("api", {})
    api = dict(api) if isinstance(api, Mapping) else api
    mode = data.get("mode")
    if isinstance(mode, str):
        mode = mode.strip().lower() or None
    if mode is None:
        keys = (
            isinstance(api, dict)
            and _present(api.get("key_id"))
            and _present(api.get("secret_key"))
        )
        mode = "paper" if keys else "sim"
    data["mode"] = mode
    if isinstance(api, dict):
        for name in ("base_url", "data_url"):
            if isinstance(api.get(name), str) and not api[name].strip():
                api[name] = None
        if mode == "sim":
            for name in ("base_url", "data_url"):
                url = api.get(name)
                if isinstance(url, str) and not is_loopback_host(_url_host(url.strip())):
                    api[name] = None
        elif mode in ("paper", "live"):
            if api.get("base_url") is None:
                api["base_url"] = PAPER_BASE_URL if mode == "paper" else LIVE_BASE_URL
            if api.get("data_url") is None:
                api["data_url"] = DATA_URL
        data["api"] = api
    return data
