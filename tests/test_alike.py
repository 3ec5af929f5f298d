"""The guard behind ``compiled_and_python_alike`` (tests/alike.py) sees what
it must: a test it lets through reaches nothing SFU_NO_EXTENSIONS selects."""

from __future__ import annotations

import importlib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import sfu
import sfu.media.router
import sfu.relay
from sfu import _mix_py
from sfu.policy import RoomPolicy

from . import alike, twins

PACKAGE = Path(__file__).resolve().parent.parent / "sfu"


def test_every_selector_is_watched() -> None:
    """Each compiled extension's selector, and nothing else, is in the guard's list."""
    selectors = {f"sfu.{path.stem.removeprefix('_')}" for path in PACKAGE.glob("_*.pyx")}
    assert set(alike.SELECTORS) == selectors
    for name in alike.SELECTORS:
        module = importlib.import_module(name)
        assert module._module.__name__ in alike.IMPLEMENTATIONS


def test_a_selected_class_used_through_another_module_is_named_and_put_back() -> None:
    fan_out = sfu.relay.FanOut
    with alike.guard() as uses, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert sfu.media.router.FanOut is not fan_out  # the router's own reference too
        made = sfu.media.router.FanOut(sock)
        assert isinstance(made, fan_out) and isinstance(made, sfu.relay.FanOut)
        made.close()
    assert uses.found == ["sfu.relay.FanOut"]
    assert sfu.relay.FanOut is fan_out and sfu.media.router.FanOut is fan_out


def test_a_rooms_settings_check_is_a_use() -> None:
    """RoomPolicy tries its detector settings on the selected detector."""
    with alike.guard() as uses:
        RoomPolicy(slots=2)
    assert uses.found == ["sfu.detector.ActiveSpeakerDetector"]
    message = alike.violation(uses)
    assert message is not None and "sfu.detector.ActiveSpeakerDetector" in message


def test_a_selected_constant_and_the_flags_are_uses() -> None:
    with alike.guard() as uses:
        assert sfu.media.router.MAX_PAYLOAD > 0
        bool(twins.NO_EXTENSIONS)
    assert uses.found == ["sfu.relay.MAX_PAYLOAD", "tests.twins.NO_EXTENSIONS"]


def test_a_twin_named_on_purpose_and_other_processes_are_not_uses() -> None:
    with alike.guard() as uses:
        accumulator = bytearray(4)
        _mix_py.mix_add(accumulator, b"\x01\x00")
        subprocess.run(["true"], check=True)
        sfu.Server  # noqa: B018 - the package, not what SFU_NO_EXTENSIONS selects
    assert uses.found == []
    assert alike.violation(uses) is None


def test_a_python_process_is_a_use() -> None:
    with alike.guard() as uses:
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert len(uses.found) == 1 and uses.found[0].startswith("a Python process")


@pytest.mark.compiled_and_python_alike
def test_a_marked_test_that_uses_nothing_selected_passes() -> None:
    """This test itself runs under the guard (and only in the compiled run)."""
    assert _mix_py.soft_clip(0) == 0
