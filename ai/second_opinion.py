"""An optional second opinion from an external model (``ai.model_endpoint``, an
OpenAI-compatible chat API): asked under ``ai.model_timeout_seconds``, weighted
:data:`ENDPOINT_WEIGHT` when it answers, and ignored on any failure (``ai_endpoint_unavailable``,
at most once a minute). The API key (``AI_MODEL_API_KEY``) is never logged."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import structlog

from ai.ai_model import Regime
from core.clock import Clock, utc

log = structlog.get_logger(__name__)

#: Weight of the external model's opinion when it answers.
ENDPOINT_WEIGHT = 0.2
#: At most one ``ai_endpoint_unavailable`` line per this many seconds.
ENDPOINT_LOG_INTERVAL_SECONDS = 60.0
#: Environment variable holding the external model's API key (never logged).
ENDPOINT_KEY_ENV = "AI_MODEL_API_KEY"
#: Environment variable naming the external model (``model`` of the chat request).
ENDPOINT_MODEL_ENV = "AI_MODEL_NAME"


class EndpointError(Exception):
    """The external model did not give a usable answer (the reason, never a key)."""


@dataclass(frozen=True)
class SecondOpinion:
    confidence: float
    reasoning: str


class EndpointAdvisor:
    """Asks an OpenAI-compatible chat endpoint for ``{"confidence": 0..1, "reasoning": str}``."""

    def __init__(self, endpoint: str, timeout_seconds: float, session: Any = None) -> None:
        self._url = endpoint.rstrip("/") + "/chat/completions"
        self._timeout = float(timeout_seconds)
        self._session = session
        self._owns_session = session is None

    async def ask(self, prompt: dict[str, Any]) -> SecondOpinion:
        """One request; raises :class:`EndpointError` (or ``TimeoutError``) when unusable."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout)
            )
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(ENDPOINT_KEY_ENV)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        body = {
            "model": os.environ.get(ENDPOINT_MODEL_ENV, "default"),
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": [
                {
                    "role": "system",
                    "content": (
                        "You review stock trade ideas. Answer only with a JSON object "
                        '{"confidence": <probability 0..1 that the bracket order reaches its '
                        'target before its stop>, "reasoning": "<one sentence>"}.'
                    ),
                },
                {"role": "user", "content": json.dumps(prompt, sort_keys=True)},
            ],
        }
        try:
            async with self._session.post(self._url, json=body, headers=headers) as response:
                if response.status != 200:
                    raise EndpointError(f"HTTP {response.status}")
                payload = await response.json(content_type=None)
        except aiohttp.ClientError as exc:
            raise EndpointError(exc.__class__.__name__) from None
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            raise EndpointError("response body is not JSON") from None
        return parse_opinion(payload)

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None


def parse_opinion(payload: Any) -> SecondOpinion:
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError("no choices[0].message.content in the response") from None
    if not isinstance(content, str):
        raise EndpointError("message content is not text")
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", content.strip())
    try:
        answer = json.loads(text)
    except json.JSONDecodeError:
        raise EndpointError("message content is not a JSON object") from None
    if not isinstance(answer, dict):
        raise EndpointError("message content is not a JSON object")
    value = answer.get("confidence")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EndpointError("confidence is missing or not a number")
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise EndpointError("confidence is outside 0..1")
    reasoning = answer.get("reasoning")
    return SecondOpinion(value, reasoning[:500] if isinstance(reasoning, str) else "")


def register_endpoint_secret() -> None:
    """Keep the external model's API key (``AI_MODEL_API_KEY``) out of every log line."""
    key = os.environ.get(ENDPOINT_KEY_ENV)
    if not key:
        return
    try:
        from core import logging_setup

        logging_setup.add_secret(key)
    except (ImportError, AttributeError):
        return


class SecondOpinions:
    """The analyzer's side of the external model: builds the prompt, bounds the wait, and
    turns any failure into None with a rate-limited ``ai_endpoint_unavailable`` line."""

    def __init__(self, ai_settings: Any, clock: Clock, http_session: Any = None) -> None:
        self._ai = ai_settings
        self._clock = clock
        self._advisor = EndpointAdvisor(ai_settings.model_endpoint, ai_settings.model_timeout_seconds, http_session)
        self._logged_at: datetime | None = None

    async def close(self) -> None:
        await self._advisor.close()

    async def ask(
        self,
        symbol: str,
        side: str,
        signal: Any,
        entry: float,
        stop: float,
        target: float,
        features: Mapping[str, float],
        regime: Regime | None,
        method: str,
        pooled: float,
    ) -> SecondOpinion | None:
        prompt = {
            "symbol": symbol,
            "side": side,
            "strategy": str(signal.strategy),
            "strategy_reasoning": str(signal.reasoning)[:500],
            "entry": round(entry, 4),
            "stop": round(stop, 4),
            "target": round(target, 4),
            "regime": regime,
            "features": {k: round(v, 5) for k, v in features.items() if math.isfinite(v)},
            "our_confidence": round(pooled, 4),
            "our_method": method,
        }
        timeout = float(self._ai.model_timeout_seconds)
        try:
            return await asyncio.wait_for(self._advisor.ask(prompt), timeout)
        except (TimeoutError, EndpointError) as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else str(exc)
        except Exception as exc:  # an external opinion must never break a decision
            reason = exc.__class__.__name__
        now = utc(self._clock.now())
        last = self._logged_at
        if last is None or (now - last).total_seconds() >= ENDPOINT_LOG_INTERVAL_SECONDS:
            self._logged_at = now
            log.warning(
                "ai_endpoint_unavailable",
                endpoint=self._url(),
                reason=reason,
                timeout_seconds=timeout,
                effect="decision made without the second opinion",
            )
        return None

    def _url(self) -> str:
        endpoint = str(self._ai.model_endpoint or "")
        return re.sub(r"//[^/@]*@", "//***@", endpoint)  # no credentials embedded in a URL
