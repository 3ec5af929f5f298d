"""The README's API table says what the code does: signatures and defaults.

A setting renamed or removed in the code (or a default changed) while the
README still shows the old one fails here, not in a user's first try.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import sfu
from sfu.policy import RoomPolicy

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def documented_call(prefix: str) -> dict[str, object]:
    """``name: default`` of the README's ``prefix(...)`` table cell, defaults as Python values."""
    match = re.search(rf"\| `{re.escape(prefix)}\((.*?)\)` \|", README)
    assert match, f"the README's API table has no `{prefix}(...)` row"
    pairs = {}
    for part in match.group(1).split(", "):
        part = part.lstrip("*").strip()
        if "=" in part:
            name, default = part.split("=", 1)
            pairs[name] = ast.literal_eval(default)
    return pairs


def test_server_signature_matches_the_readme() -> None:
    documented = documented_call("Server")
    parameters = inspect.signature(sfu.Server).parameters
    actual = {
        name: p.default
        for name, p in parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert documented == actual


def test_room_settings_match_the_readme() -> None:
    documented = documented_call("server.room")
    actual = {field.name: field.default for field in dataclasses.fields(RoomPolicy)}
    assert documented == actual


def test_ci_runs_the_readme_test_command() -> None:
    """`.ci/run` must run what the README tells a newcomer to run, nothing weaker."""
    block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert block, "the README opens with a sh block of its two commands"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    test_command = next(c for c in commands if c.endswith(" test"))
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    ci_commands = [line.split("#")[0].strip() for line in ci.splitlines()]
    assert test_command in ci_commands
    # Verbatim too: the line in .ci/run is the README's line, character for character.
    assert any(line == test_command for line in ci.splitlines())
