"""The README is the new user's manual: every subcommand and flag ``python main.py --help``
lists, every ``[stream]`` setting and the simulator's stream controls are documented there
(the acceptance walk of issues 14-18 found the trade stream missing from it)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import main
from config import Settings

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def _parser_options() -> tuple[list[str], dict[str, list[str]]]:
    parser = main.build_parser()
    top = [opt for action in parser._actions for opt in action.option_strings if opt.startswith("--")]
    subs: dict[str, list[str]] = {}
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for name, sub in action.choices.items():
            if name not in subs:
                subs[name] = [opt for a in sub._actions for opt in a.option_strings if opt.startswith("--")]
    return top, subs


def test_every_subcommand_and_top_level_flag_is_in_the_readme() -> None:
    top, subs = _parser_options()
    for name in subs:
        assert re.search(rf"python main\.py \[?{name}\b", README), f"subcommand {name} not in the README"
    for flag in top:
        if flag in ("--help", "--version"):
            continue
        assert flag in README, f"{flag} not in the README"


def test_the_subcommands_own_flags_are_in_the_readme() -> None:
    _, subs = _parser_options()
    for name, flags in subs.items():
        for flag in flags:
            if flag == "--help":
                continue
            assert flag in README, f"{name} {flag} not in the README"


def test_the_trade_stream_and_its_settings_are_documented() -> None:
    for needle in ("trade_updates", "`[stream]`", '"source": "stream"', '"source": "rest_catchup"',
                   "stream_reconnected", "/_sim/v1/streams/drop", "stream_drop", "ws://HOST:PORT/stream"):
        assert needle in README, needle
    for field in Settings.model_fields["stream"].annotation.model_fields:  # type: ignore[union-attr]
        assert f"stream.{field}" in README or field in (REPO / "config.example.toml").read_text(), field
