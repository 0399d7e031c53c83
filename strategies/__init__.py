"""Trading strategies and the registry the config enables them from.

Built-in strategies register themselves on import (a :class:`BaseStrategy` subclass that
sets ``name``). :func:`load_enabled` builds the ones named in ``settings.strategy.enabled``;
a name that is not registered is imported as ``strategies/<name>.py``, which is how a user
adds a strategy: drop the file in this folder and name it in the config (see
``strategies/macd_crossover.py``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType
from typing import Any

import structlog

from core.errors import ConfigError
from strategies.base import AVAILABLE_STRATEGIES, BaseStrategy, Scorecard, Signal
from strategies.breakout import Breakout
from strategies.defensive import Defensive
from strategies.enhanced_momentum import EnhancedMomentum
from strategies.mean_reversion import MeanReversion

log = structlog.get_logger(__name__)

BUILT_IN: tuple[type[BaseStrategy], ...] = (EnhancedMomentum, MeanReversion, Breakout, Defensive)
_NOT_STRATEGIES = {"base"}


def available_names() -> list[str]:
    """Registered strategy names plus strategy modules present in this folder."""
    files = {
        module.name
        for module in pkgutil.iter_modules(__path__)
        if module.name not in _NOT_STRATEGIES and not module.name.startswith("_")
    }
    return sorted(set(AVAILABLE_STRATEGIES) | files)


def strategy_class(name: str) -> type[BaseStrategy]:
    """The class for a config name: the registry, else ``strategies/<name>.py``.

    Raises :class:`core.errors.ConfigError` naming the strategy and what is available.
    """
    if name in AVAILABLE_STRATEGIES:
        return AVAILABLE_STRATEGIES[name]
    if not name.isidentifier():
        raise ConfigError([f"strategy.enabled: {name!r} is not a valid strategy module name"])
    module_name = f"{__name__}.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise ConfigError(
                [f"strategy.enabled: strategies/{name}.py failed to import: {exc}"]
            ) from exc
        raise ConfigError(
            [
                f"strategy.enabled: unknown strategy {name!r}; available: "
                f"{', '.join(available_names())} (or add strategies/{name}.py)"
            ]
        ) from None
    except Exception as exc:  # a user's module may fail in any way; report it, do not crash
        raise ConfigError(
            [f"strategy.enabled: strategies/{name}.py failed to import: {type(exc).__name__}: {exc}"]
        ) from exc
    if name in AVAILABLE_STRATEGIES:
        return AVAILABLE_STRATEGIES[name]
    return _only_strategy_in(module, name)


def _only_strategy_in(module: ModuleType, name: str) -> type[BaseStrategy]:
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, BaseStrategy)
        and obj.__module__ == module.__name__
        and not inspect.isabstract(obj)
    ]
    if len(found) == 1:
        cls = found[0]
        if not cls.name:  # a user class that did not set its name takes the file's
            cls.name = name
            AVAILABLE_STRATEGIES[name] = cls
        return cls
    if not found:
        raise ConfigError(
            [f"strategy.enabled: strategies/{name}.py defines no BaseStrategy subclass"]
        )
    names = ", ".join(sorted(cls.__name__ for cls in found))
    raise ConfigError(
        [
            f"strategy.enabled: strategies/{name}.py defines several strategies ({names}); "
            f'set name = "{name}" on the one to use'
        ]
    )


def load_enabled(settings: Any) -> list[BaseStrategy]:
    """Instances of the strategies named in ``settings.strategy.enabled``, in that order.

    Every unknown or broken name is reported at once in one :class:`core.errors.ConfigError`.
    """
    problems: list[str] = []
    classes: list[type[BaseStrategy]] = []
    for name in dict.fromkeys(settings.strategy.enabled):
        try:
            classes.append(strategy_class(name))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    strategies = [cls(settings) for cls in classes]
    log.info("strategies_loaded", strategies=[s.name for s in strategies])
    return strategies


__all__ = [
    "AVAILABLE_STRATEGIES",
    "BUILT_IN",
    "BaseStrategy",
    "Scorecard",
    "Signal",
    "available_names",
    "load_enabled",
    "strategy_class",
]
