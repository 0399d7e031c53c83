"""A loopback HTTP proxy in front of the simulator that rewrites chosen answers.

The simulator answers sanely; a real broker sometimes does not (an account reading of equity
-50000, a quote of 1e308 or NaN). :class:`TamperProxy` forwards every request to the
simulator unchanged and, for the rules a test installs, rewrites the JSON body of the
answer before the daemon's gateway reads it, so the daemon's own HTTP, parsing and
validation code sees exactly the bytes a misbehaving broker would send.

No test in this module; pytest collects it only for its name.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from typing import Any, Callable

import aiohttp
from aiohttp import web

Rewrite = Callable[[Any], Any]
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


@dataclass
class Rule:
    """Rewrite the JSON answer of ``method path`` (``fnmatch`` glob) ``times`` times (None: always)."""

    method: str
    path: str
    rewrite: Rewrite
    times: int | None = None
    applied: int = 0

    def matches(self, method: str, path: str) -> bool:
        live = self.times is None or self.applied < self.times
        return live and method == self.method and fnmatch.fnmatchcase(path, self.path)


class TamperProxy:
    """``async with TamperProxy(sim_url) as proxy``: ``proxy.url`` serves the simulator's API."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    def rewrite(self, method: str, path: str, rewrite: Rewrite, *, times: int | None = None) -> Rule:
        """Install a rule; the newest matching rule wins."""
        rule = Rule(method, path, rewrite, times)
        self.rules.insert(0, rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    async def __aenter__(self) -> TamperProxy:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        self.requests.append((request.method, request.path))
        async with self._session.request(request.method, f"{self.target}{request.path_qs}",
                                         data=body or None, headers=headers) as upstream:
            payload = await upstream.read()
            status = upstream.status
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
        rule = next((r for r in self.rules if r.matches(request.method, request.path)), None)
        if rule is not None and 200 <= status < 300 and payload.strip():
            rule.applied += 1
            payload = json.dumps(rule.rewrite(json.loads(payload))).encode()  # NaN/Infinity as Python writes them
        return web.Response(body=payload, status=status, headers=out_headers)
