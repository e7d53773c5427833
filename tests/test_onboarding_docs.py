"""Every onboarding command is in the department's guide, and its help speaks Chinese beside English."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from gateway.cli.main import app

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "connector-guide.md"
GROUPS = ("keys", "keyring", "admin-key", "endpoints", "connectors", "rules")
SINGLE = (("catalog",), ("connector", "init"), ("approve",))
_CJK = re.compile(r"[\u4e00-\u9fff]")


def _commands() -> list[tuple[tuple[str, ...], Any]]:
    """(path, command) of every onboarding command, from the real `fedgate` command tree."""
    root: Any = typer.main.get_command(app)
    found: list[tuple[tuple[str, ...], Any]] = []
    for group in GROUPS:
        found += [((group, name), cmd) for name, cmd in root.commands[group].commands.items()]
    for path in SINGLE:
        cmd = root
        for part in path:
            cmd = cmd.commands[part]
        found.append((path, cmd))
    return found


def test_every_onboarding_command_is_in_the_guide() -> None:
    lines = GUIDE.read_text(encoding="utf-8").splitlines()
    missing = []
    for path, _cmd in _commands():
        head, last = " ".join(path[:-1]), path[-1]
        prefix = f"fedgate {head} " if head else "fedgate "
        named = [
            ln
            for ln in lines
            if prefix + last in ln or (head and prefix in ln and last in re.split(r"[\s|`]", ln))
        ]
        if not named:
            missing.append(" ".join(path))
    assert missing == []


def test_onboarding_help_is_in_chinese_and_english() -> None:
    for path, cmd in _commands():
        assert cmd.help and _CJK.search(cmd.help), " ".join(path)
        assert re.search(r"[A-Za-z]{4,}", cmd.help), " ".join(path)
