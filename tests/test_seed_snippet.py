"""The seed's "Verify Installation" snippet works as written (issue 18, item 7).

``ResilientAlpacaGateway()`` takes no arguments: it reads the configuration (environment,
``.env``, the credential store, ``TRADING_CONFIG``) and, with no keys, serves the embedded
simulator on loopback, exactly as ``python main.py`` would trade it. ``initialize()`` says
whether the broker answered; ``shutdown()`` closes everything it opened.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_e2e_safety_support import sim_stack

ROOT = Path(__file__).resolve().parent.parent

SNIPPET = """\
import asyncio
from api_gateway import ResilientAlpacaGateway

async def main():
    gateway = ResilientAlpacaGateway()
    await gateway.initialize()
    await gateway.shutdown()

asyncio.run(main())
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "TRADING_"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def test_the_snippet_as_written_runs_against_the_simulator_without_keys(tmp_path: Path) -> None:
    (tmp_path / "verify.py").write_text(SNIPPET, encoding="utf-8")
    done = subprocess.run([sys.executable, "verify.py"], cwd=tmp_path, env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert "gateway_initialized" in out and "mode=sim" in out
    assert "sim_server_stopped" in out, "shutdown stops the simulator it started"
    assert "Traceback" not in out


async def test_initialize_reads_keys_from_the_environment_and_reports_a_dead_broker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from api_gateway import ResilientAlpacaGateway

    monkeypatch.chdir(tmp_path)  # no .env here
    for name in list(os.environ):
        if name.startswith(("APCA_", "TRADING_")):
            monkeypatch.delenv(name)
    key, secret = "PKSNIPPETKEY00000001", "snippet-secret-never-logged-0001"
    async with sim_stack(tmp_path, start="2025-03-04T10:30:00", key_pair=(key, secret)) as stack:
        monkeypatch.setenv("APCA_API_KEY_ID", key)
        monkeypatch.setenv("APCA_API_SECRET_KEY", secret)
        monkeypatch.setenv("APCA_API_BASE_URL", stack.url)
        monkeypatch.setenv("APCA_API_DATA_URL", stack.url)
        gateway = ResilientAlpacaGateway()
        assert gateway.mode == "paper" and gateway.base_url == stack.url
        assert await gateway.initialize() is True
        account = await gateway.get_account()
        assert account.equity > 0
        await gateway.shutdown()
        assert secret not in repr(gateway)

    # the same keys against a port nobody serves: initialize says no, it does not raise
    monkeypatch.setenv("APCA_API_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("APCA_API_DATA_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("TRADING_API__MAX_RETRIES", "0")
    gateway = ResilientAlpacaGateway()
    assert await gateway.initialize() is False
    await gateway.shutdown()
