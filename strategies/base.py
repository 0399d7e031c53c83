"""What every strategy is and returns: :class:`BaseStrategy` and its :class:`Signal`.

A strategy looks at one symbol's :class:`market.market_data.MarketData` and answers buy, sell or
hold with a confidence in [0, 1], a reasoning a person can check (the numbers that decided
it), and for buys a suggested stop and target. We trade long only by default, so "sell"
means "exit a held position"; the loop ignores it for symbols it does not hold.

Confidence is a transparent score: each strategy starts from a base for its trigger and
adds fixed points per confirmation (see :class:`Scorecard` and each strategy's docstring);
the AI analyzer later combines it with market context and sentiment.

A subclass that sets ``name`` in its class body registers itself in
:data:`AVAILABLE_STRATEGIES`, so a user strategy is a file in ``strategies/`` with one
subclass, named in ``[strategy] enabled``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from market.indicators import IndicatorSnapshot, compute_snapshot
from market.market_data import MarketData

Action = Literal["buy", "sell", "hold"]
ACTIONS: tuple[str, ...] = ("buy", "sell", "hold")

# Partial-day volume is projected to a full day with the typical intraday profile, but no
# further than this share: in the first minutes of a session the projection would be noise.
MIN_VOLUME_PROGRESS = 0.10

AVAILABLE_STRATEGIES: dict[str, type[BaseStrategy]] = {}
"""Strategy name -> class, filled as strategy modules are imported."""


@dataclass(frozen=True)
class Signal:
    """A strategy's answer for one symbol (``action`` "buy", "sell" or "hold")."""

    symbol: str
    action: Action
    confidence: float
    reasoning: str
    strategy: str
    stop_price: float | None = None
    target_price: float | None = None
    max_hold_days: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"Signal.action must be one of {ACTIONS}, got {self.action!r}")
        if not (math.isfinite(self.confidence) and 0.0 <= self.confidence <= 1.0):
            raise ValueError(f"Signal.confidence must be within [0, 1], got {self.confidence!r}")
        if not self.reasoning.strip():
            raise ValueError("Signal.reasoning must say why")
        for name in ("stop_price", "target_price"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"Signal.{name} must be a positive price, got {value!r}")
        if (
            self.action == "buy"
            and self.stop_price is not None
            and self.target_price is not None
            and not self.stop_price < self.target_price
        ):
            raise ValueError(
                f"buy signal with stop {self.stop_price} not below target {self.target_price}"
            )

    @property
    def is_actionable(self) -> bool:
        """True for buy and sell, False for hold."""
        return self.action != "hold"

    # A hold built by BaseStrategy.hold with a callable keeps the callable instead of the
    # text (nearly every symbol holds every cycle, and the loop reads a hold's reasoning
    # only when something asks for it). The first read of ``reasoning`` formats and keeps it.

    def __getattr__(self, name: str) -> Any:
        # Reached only when ``name`` is not in the instance dict.
        if name == "reasoning":
            build = self.__dict__.get("_build_reasoning")
            if build is not None:
                text = build()
                if not text.strip():
                    raise ValueError("Signal.reasoning must say why")
                object.__setattr__(self, "reasoning", text)
                del self.__dict__["_build_reasoning"]
                return text
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> dict[str, Any]:
        self.reasoning  # noqa: B018 - formats a lazy reasoning, so the state is plain data
        return self.__dict__


_HOLD_BASE = {"action": "hold", "confidence": 0.0}
_HOLD_TAIL = {"stop_price": None, "target_price": None, "max_hold_days": None}


def _hold_signal(symbol: str, reason: str | Callable[[], str], strategy: str,
                 metadata: dict[str, Any]) -> Signal:
    """``Signal(symbol, "hold", 0.0, reason, strategy, metadata=metadata)``, built directly:
    a hold has nothing else to check than a non-empty reason (a callable's text is checked
    when it is first read)."""
    signal: Signal = object.__new__(Signal)
    fields = signal.__dict__
    fields["symbol"] = symbol
    fields.update(_HOLD_BASE)
    if isinstance(reason, str):
        if not reason.strip():
            raise ValueError("Signal.reasoning must say why")
        fields["reasoning"] = reason
    else:
        fields["_build_reasoning"] = reason
    fields["strategy"] = strategy
    fields.update(_HOLD_TAIL)
    fields["metadata"] = metadata
    return signal


@dataclass
class Scorecard:
    """Transparent confidence: a base for the trigger plus fixed points per confirmation.

    Each check is written into the reasoning as ``"<what> yes (+0.15)"`` or
    ``"<what> no"``, and multipliers (regime) as ``"regime volatile x0.80"``, so a reader
    can recompute the confidence by hand.
    """

    base: float
    lines: list[str] = field(default_factory=list)
    points: float = 0.0
    factor: float = 1.0
    passed: int = 0
    failed: list[str] = field(default_factory=list)

    def check(self, passed: bool, weight: float, text: str) -> bool:
        if passed:
            self.points += weight
            self.passed += 1
            self.lines.append(f"{text} yes (+{weight:.2f})")
        else:
            self.failed.append(text)
            self.lines.append(f"{text} no")
        return passed

    def scale(self, factor: float, text: str) -> None:
        self.factor *= factor
        self.lines.append(f"{text} x{factor:.2f}")

    @property
    def confidence(self) -> float:
        return max(0.0, min(1.0, (self.base + self.points) * self.factor))

    def summary(self) -> str:
        parts = [f"base {self.base:.2f}", *self.lines]
        return "; ".join(parts) + f"; score {self.confidence:.2f}"


class BaseStrategy(ABC):
    """A trading strategy: ``await evaluate_opportunity(symbol, market_data) -> Signal``.

    Subclasses set ``name`` (their config name) and implement :meth:`evaluate_opportunity`.
    ``settings`` is the daemon's ``config.Settings``; strategies read ``settings.strategy``,
    their own section and ``settings.trading`` for default stops and targets.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if not name:
            return
        existing = AVAILABLE_STRATEGIES.get(name)
        if existing is not None and (existing.__module__, existing.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise TypeError(
                f"strategy name {name!r} of {cls.__module__}.{cls.__qualname__} is already "
                f"used by {existing.__module__}.{existing.__qualname__}"
            )
        AVAILABLE_STRATEGIES[name] = cls

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    @abstractmethod
    async def evaluate_opportunity(self, symbol: str, market_data: MarketData) -> Signal:
        """Buy, sell or hold ``symbol`` given what this cycle knows about it."""

    # -- helpers for subclasses ---------------------------------------------------------

    def hold(self, symbol: str, reason: str | Callable[[], str], **metadata: Any) -> Signal:
        """A hold signal (confidence 0) saying why nothing is done.

        ``reason`` is the text, or a callable returning it: then it is formatted when
        ``reasoning`` is first read (the callable must only use values that do not change).
        """
        return _hold_signal(symbol, reason, self.name, metadata)

    def signal(
        self,
        symbol: str,
        action: Action,
        confidence: float,
        reasoning: str,
        *,
        stop: float | None = None,
        target: float | None = None,
        max_hold_days: int | None = None,
        **metadata: Any,
    ) -> Signal:
        """A buy or sell signal from this strategy (confidence clipped to [0, 1])."""
        return Signal(
            symbol,
            action,
            max(0.0, min(1.0, confidence)),
            reasoning,
            self.name,
            stop_price=stop,
            target_price=target,
            max_hold_days=max_hold_days,
            metadata=dict(metadata),
        )

    def snapshot(self, market_data: MarketData) -> IndicatorSnapshot:
        """Indicators of the daily bars, computed once per MarketData and shared."""
        cfg = self.settings.strategy
        key = ("snapshot", cfg.ma_short, cfg.ma_medium, cfg.ma_long, cfg.rsi_period)
        cached = market_data.derived.get(key)
        if cached is None or cached[0] is not market_data.daily:
            cached = (market_data.daily, compute_snapshot(market_data.daily, self.settings))
            market_data.derived[key] = cached
        snapshot: IndicatorSnapshot = cached[1]
        return snapshot

    @staticmethod
    def volume_ratio(snapshot: IndicatorSnapshot, market_data: MarketData) -> float:
        """Today's volume over the 20-day average, projected to a full day while trading.

        With a partial daily bar (mid-session), the raw ratio is divided by the share of
        a day's volume that typically trades by now (at least
        :data:`MIN_VOLUME_PROGRESS`), so a stock that has already done half its usual
        volume by 11:00 reads as heavy volume, not light.
        """
        progress = max(MIN_VOLUME_PROGRESS, market_data.volume_progress)
        return snapshot.volume_ratio / progress

    @staticmethod
    def entry_price(snapshot: IndicatorSnapshot, market_data: MarketData) -> float:
        """The price a decision is based on: the last daily bar's close (live, today's partial
        bar: the latest trade), else the last trade.

        Not ``market_data.last_price`` first: in a daily backtest that is the *entry*
        session's opening print, which a decision taken at the previous close cannot know
        (issue 15: no strategy reads the entry session's data when it decides). The order
        still fills at the market; the analyzer and the labels apply the bracket to it.
        """
        price = snapshot.price
        if math.isfinite(price) and price > 0.0:
            return price
        last = market_data.last_price
        return last if math.isfinite(last) and last > 0.0 else price

    def default_stop(self, price: float, fraction: float | None = None) -> float:
        """Stop for a long entry at ``price``: ``fraction`` (default trading.stop_loss) below."""
        loss = self.settings.trading.stop_loss if fraction is None else fraction
        return price * (1.0 - loss)

    def default_target(self, price: float, fraction: float | None = None) -> float:
        """Target for a long entry: ``fraction`` (default trading.take_profit) above."""
        gain = self.settings.trading.take_profit if fraction is None else fraction
        return price * (1.0 + gain)

    def reward_to_risk(self) -> float:
        """The configured target/stop ratio (2.0 with the seed's 6% / 3%)."""
        return self.settings.trading.take_profit / self.settings.trading.stop_loss

    @staticmethod
    def missing_history(snapshot: IndicatorSnapshot, needed: int) -> str | None:
        """A hold reason when there are fewer than ``needed`` daily bars, else None."""
        if snapshot.bars < needed:
            return f"insufficient history: {snapshot.bars} daily bars, need {needed}"
        if not snapshot.price > 0.0:
            return f"no valid last price ({snapshot.price})"
        return None
