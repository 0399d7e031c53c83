"""Fault injection for rehearsing a misbehaving broker.

A :class:`FaultConfig` says how often each kind of failure happens; a :class:`FaultInjector`
draws from a seeded RNG per request and counts what it injected. The HTTP server applies the
decision as middleware on Alpaca paths only (never on the ``/_sim/`` control API).

Spec syntax (``--faults`` and ``POST /_sim/v1/faults {"spec": ...}``), comma separated::

    error_rate=0.05,latency_ms=50-400,rate_limit=0.02,timeout=0.01,reset=0.01,
    malformed=0.01,accept_then_timeout=0.01,timeout_s=30,endpoints=/v2/orders*|/v2/positions*

Kinds (probabilities are per request, drawn once; their sum must not exceed 1):

* ``error_rate``: answer 500 or 503 with an Alpaca-style body, without processing.
* ``rate_limit``: answer 429 ``{"code":42910000,"message":"rate limit exceeded"}`` with
  Alpaca's ``X-RateLimit-*`` headers (no ``Retry-After``: Alpaca sends none), without
  processing.
* ``timeout``: hold the request ``timeout_s`` seconds (longer than a client's timeout), without
  processing, then drop the connection.
* ``reset``: close the connection abruptly, without processing and without a response.
* ``malformed``: process the request, then answer 200 with the body truncated mid-JSON.
* ``accept_then_timeout``: only on ``POST /v2/orders``: process the order (it exists at the
  broker), then hold ``timeout_s`` and drop the connection, so the client never sees the answer.
* ``latency_ms``: an extra uniform delay ``lo-hi`` milliseconds (or a fixed ``N``) on every
  matching request, independent of the kinds above.
* ``race``: only on ``DELETE /v2/orders/{id}`` and ``PATCH /v2/orders/{id}``, drawn on its
  own RNG (independent of the kinds above, so adding it does not move their draws): with
  this probability the market beats the client. Just before the request is processed the
  open order is filled (a limit or stop-limit at its limit price, any other type at the
  current quote) or canceled by the broker, so the cancel or replace meets Alpaca's 422
  42210000 ``order is already in "filled" state`` (or ``"canceled"``). What happens is
  ``race_mode``: ``fill`` (default; canceled instead when it cannot trade now: market
  closed, no price), ``cancel``, or ``mixed`` (a seeded coin). A ``held`` bracket leg, an
  order already final and an unknown id are left alone. ``DELETE /v2/orders`` (cancel all:
  the halt's and the breaker's liquidation) draws the race once per open order, as that
  order's own cancel would; each order the market beat is answered in the 207 body with
  Alpaca's 422 item for it.
* ``stream_drop``: the probability, per second of wall time, that every open stream
  connection (``/stream`` and the market-data streams, :class:`simulator.stream_hub.StreamHub`)
  is closed at once (``1001 going away``), as ``POST /_sim/v1/streams/drop`` does; drawn on
  its own RNG about four times a second while a stream is open, so it moves no draw of the
  kinds above. ``stream_drop=0.05`` drops them about every 20 seconds. Counted as
  ``stream_drop`` (one per drop, however many connections it closed).
* ``endpoints``: ``|``-separated globs on the request path (``fnmatch``); default: every path.
* ``seed``: the RNG seed (default: the simulator's ``--seed``, else 42), so a rehearsal
  replays the same faults.
"""

from __future__ import annotations

import fnmatch
import random
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

#: Kinds drawn per request, in the order their probability intervals are laid out.
FAULT_KINDS: tuple[str, ...] = (
    "error_rate",
    "rate_limit",
    "timeout",
    "reset",
    "malformed",
    "accept_then_timeout",
)
RACE_MODES = ("fill", "cancel", "mixed")
_ALLOWED_KEYS = (*FAULT_KINDS, "race", "race_mode", "stream_drop", "latency_ms", "timeout_s", "endpoints",
                 "seed")
_ORDER_SUBMIT_PATH = "/v2/orders"
_ORDER_PATH = re.compile(r"^/v2/orders/[^/]+$")
_RACE_METHODS = ("DELETE", "PATCH")


@dataclass(frozen=True)
class FaultConfig:
    """How often each fault happens. All probabilities default to 0 (no faults)."""

    error_rate: float = 0.0
    rate_limit: float = 0.0
    timeout: float = 0.0
    reset: float = 0.0
    malformed: float = 0.0
    accept_then_timeout: float = 0.0
    race: float = 0.0
    race_mode: str = "fill"
    stream_drop: float = 0.0
    latency_ms: tuple[float, float] | None = None
    timeout_s: float = 30.0
    endpoints: tuple[str, ...] = ()
    seed: int = 42

    def __post_init__(self) -> None:
        for kind in FAULT_KINDS:
            value = getattr(self, kind)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault {kind}={value!r}: must be a probability between 0 and 1")
        total = sum(getattr(self, kind) for kind in FAULT_KINDS)
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"fault probabilities add up to {total:g}: "
                f"{', '.join(FAULT_KINDS)} must sum to at most 1"
            )
        if not 0.0 <= self.race <= 1.0:
            raise ValueError(f"fault race={self.race!r}: must be a probability between 0 and 1")
        if not 0.0 <= self.stream_drop <= 1.0:
            raise ValueError(f"fault stream_drop={self.stream_drop!r}: must be a probability per second between 0 and 1")
        if self.race_mode not in RACE_MODES:
            raise ValueError(f"fault race_mode={self.race_mode!r}: must be one of {', '.join(RACE_MODES)}")
        if self.latency_ms is not None:
            low, high = self.latency_ms
            if low < 0 or high < low:
                raise ValueError(
                    f"fault latency_ms={low:g}-{high:g}: must be 0 <= low <= high milliseconds"
                )
        if self.timeout_s <= 0:
            raise ValueError(f"fault timeout_s={self.timeout_s!r}: must be a positive number of seconds")

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def parse(cls, spec: str, *, default_seed: int | None = None) -> FaultConfig:
        """Parse ``key=value,key=value``; an empty spec means no faults.

        ``default_seed`` is the seed when the spec names none (the simulator's ``--seed``).
        Raises ``ValueError`` naming the offending key and what is allowed.
        """
        values: dict[str, str] = {}
        for raw in spec.split(","):
            item = raw.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not value.strip():
                raise ValueError(
                    f"fault spec item {item!r}: expected key=value with key one of "
                    f"{', '.join(_ALLOWED_KEYS)}"
                )
            if key in values:
                raise ValueError(f"fault {key} given twice")
            values[key] = value.strip()
        if default_seed is not None:
            values.setdefault("seed", str(default_seed))
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> FaultConfig:
        """Build from a JSON object or parsed spec; values may be numbers or strings."""
        unknown = [key for key in values if key not in _ALLOWED_KEYS]
        if unknown:
            raise ValueError(
                f"unknown fault {unknown[0]!r}: allowed keys are {', '.join(_ALLOWED_KEYS)}"
            )
        kwargs: dict[str, Any] = {}
        for kind in FAULT_KINDS:
            if kind in values:
                kwargs[kind] = _probability(kind, values[kind])
        if "race" in values:
            kwargs["race"] = _probability("race", values["race"])
        if "stream_drop" in values:
            kwargs["stream_drop"] = _probability("stream_drop", values["stream_drop"])
        if "race_mode" in values:
            mode = str(values["race_mode"]).strip()
            if mode not in RACE_MODES:
                raise ValueError(f"fault race_mode={values['race_mode']!r}: must be one of {', '.join(RACE_MODES)}")
            kwargs["race_mode"] = mode
        if "latency_ms" in values:
            kwargs["latency_ms"] = _latency(values["latency_ms"])
        if "timeout_s" in values:
            kwargs["timeout_s"] = _positive_float("timeout_s", values["timeout_s"])
        if "endpoints" in values:
            kwargs["endpoints"] = _endpoints(values["endpoints"])
        if "seed" in values:
            kwargs["seed"] = _integer("seed", values["seed"])
        return cls(**kwargs)

    # -- use -------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether any request fault can fire (``stream_drop`` is drawn by the stream server
        on its own, so it alone does not route requests through the fault middleware)."""
        return self.latency_ms is not None or self.race > 0 or any(getattr(self, k) > 0 for k in FAULT_KINDS)

    def applies_to(self, path: str) -> bool:
        """Whether requests to ``path`` are subject to faults (the ``endpoints`` filter)."""
        if not self.endpoints:
            return True
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.endpoints)

    def to_spec(self) -> str:
        """The spec string that parses back to this configuration."""
        parts = [f"{kind}={getattr(self, kind):g}" for kind in FAULT_KINDS if getattr(self, kind)]
        if self.race:
            parts.append(f"race={self.race:g}")
        defaults = FaultConfig()
        if self.stream_drop:
            parts.append(f"stream_drop={self.stream_drop:g}")
        if self.race_mode != defaults.race_mode:
            parts.append(f"race_mode={self.race_mode}")
        if self.latency_ms is not None:
            parts.append(f"latency_ms={self.latency_ms[0]:g}-{self.latency_ms[1]:g}")
        if self.timeout_s != defaults.timeout_s:
            parts.append(f"timeout_s={self.timeout_s:g}")
        if self.endpoints:
            parts.append("endpoints=" + "|".join(self.endpoints))
        if self.seed != defaults.seed:
            parts.append(f"seed={self.seed}")
        return ",".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (for ``/_sim/v1/state``)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["latency_ms"] = list(self.latency_ms) if self.latency_ms is not None else None
        out["endpoints"] = list(self.endpoints)
        out["spec"] = self.to_spec()
        return out


@dataclass
class FaultInjector:
    """Draws faults for requests from a seeded RNG and counts each one injected.

    ``counts`` is shared with the simulator core so ``state()["faults"]`` reports it.
    Replace the configuration at run time with :meth:`configure`.
    """

    config: FaultConfig = field(default_factory=FaultConfig)
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.config.seed)
        self._race_rng = _race_rng(self.config.seed)
        self._stream_rng = _stream_rng(self.config.seed)
        self.active = self.config.active
        for kind in (*FAULT_KINDS, "latency_ms", "race", "stream_drop"):
            self.counts.setdefault(kind, 0)

    def configure(self, config: FaultConfig) -> None:
        """Switch to ``config`` (reseeding the RNGs); counts keep accumulating."""
        self.config = config
        self._rng = random.Random(config.seed)
        self._race_rng = _race_rng(config.seed)
        self._stream_rng = _stream_rng(config.seed)
        self.active = config.active

    def clear(self) -> None:
        """Stop injecting faults."""
        self.configure(replace(FaultConfig(), seed=self.config.seed))

    def choose(self, method: str, path: str) -> str | None:
        """The fault kind to inject into this request, or None; counts it when chosen."""
        config = self.config
        if not self.active or not config.applies_to(path):
            return None
        draw = self._rng.random()
        upper = 0.0
        for kind in FAULT_KINDS:
            probability = getattr(config, kind)
            if probability <= 0.0:
                continue
            upper += probability
            if draw < upper:
                if kind == "accept_then_timeout" and not _is_order_submit(method, path):
                    return None
                self.counts[kind] += 1
                return kind
        return None

    def choose_race(self, method: str, path: str) -> str | None:
        """``"fill"`` or ``"cancel"`` when the market should beat this cancel/replace, else None.

        Drawn only for ``DELETE``/``PATCH /v2/orders/{id}`` (one draw per such request, on the
        race RNG). Counting is the caller's (:meth:`note_race`): an order already final is
        not raced.
        """
        config = self.config
        if config.race <= 0.0 or method not in _RACE_METHODS or not _ORDER_PATH.match(path):
            return None
        if not config.applies_to(path):
            return None
        if self._race_rng.random() >= config.race:
            return None
        if config.race_mode == "mixed":
            return "fill" if self._race_rng.random() < 0.5 else "cancel"
        return config.race_mode

    def draw_stream_drop(self, seconds: float) -> bool:
        """Whether the open streams are dropped now, ``seconds`` after the last draw (the
        ``stream_drop`` fault, a probability per second); counts it when drawn."""
        rate = self.config.stream_drop
        if rate <= 0.0 or seconds <= 0.0:
            return False
        chance = 1.0 if rate >= 1.0 else 1.0 - (1.0 - rate) ** seconds
        if self._stream_rng.random() >= chance:
            return False
        self.counts["stream_drop"] += 1
        return True

    def note_race(self) -> None:
        """Count one race the broker actually ran."""
        self.counts["race"] += 1

    def latency_seconds(self, path: str) -> float:
        """The extra delay for this request, in seconds (0 when latency is off); counts it."""
        config = self.config
        if config.latency_ms is None or not config.applies_to(path):
            return 0.0
        low, high = config.latency_ms
        self.counts["latency_ms"] += 1
        return self._rng.uniform(low, high) / 1000.0

    def status_for_error(self) -> int:
        """500 or 503, chosen by the RNG, for an ``error_rate`` fault."""
        return 503 if self._rng.random() < 0.3 else 500


def _race_rng(seed: int) -> random.Random:
    """The race's own RNG: seeded from ``seed`` but apart from the per-request draws."""
    return random.Random(f"race:{seed}")


def _stream_rng(seed: int) -> random.Random:
    """The ``stream_drop`` fault's own RNG (apart from the per-request and race draws)."""
    return random.Random(f"stream:{seed}")


def _is_order_submit(method: str, path: str) -> bool:
    return method == "POST" and path == _ORDER_SUBMIT_PATH


def _probability(key: str, value: Any) -> float:
    number = _float(key, value, "a probability between 0 and 1")
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"fault {key}={value!r}: must be a probability between 0 and 1")
    return number


def _positive_float(key: str, value: Any) -> float:
    number = _float(key, value, "a positive number of seconds")
    if number <= 0:
        raise ValueError(f"fault {key}={value!r}: must be a positive number of seconds")
    return number


def _float(key: str, value: Any, allowed: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"fault {key}={value!r}: must be {allowed}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"fault {key}={value!r}: must be {allowed}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"fault {key}={value!r}: must be {allowed}")
    return number


def _integer(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"fault {key}={value!r}: must be an integer")
    try:
        return int(str(value))
    except ValueError:
        raise ValueError(f"fault {key}={value!r}: must be an integer") from None


def _latency(value: Any) -> tuple[float, float]:
    allowed = "milliseconds as N or LOW-HIGH (e.g. 50-400)"
    if isinstance(value, (list, tuple)) and len(value) == 2:
        low = _float("latency_ms", value[0], allowed)
        high = _float("latency_ms", value[1], allowed)
    elif isinstance(value, str) and "-" in value.strip().lstrip("-"):
        low_text, _, high_text = value.strip().partition("-")
        low = _float("latency_ms", low_text, allowed)
        high = _float("latency_ms", high_text, allowed)
    else:
        low = high = _float("latency_ms", value, allowed)
    if low < 0 or high < low:
        raise ValueError(f"fault latency_ms={value!r}: must be 0 <= LOW <= HIGH milliseconds")
    return (low, high)


def _endpoints(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        patterns = [p.strip() for p in value.split("|")]
    elif isinstance(value, (list, tuple)) and all(isinstance(p, str) for p in value):
        patterns = [p.strip() for p in value]
    else:
        raise ValueError(
            f"fault endpoints={value!r}: must be path globs separated by '|' (or a JSON list)"
        )
    patterns = [p for p in patterns if p]
    for pattern in patterns:
        if not pattern.startswith("/"):
            raise ValueError(
                f"fault endpoints pattern {pattern!r}: must be a path glob starting with '/'"
            )
    return tuple(patterns)
