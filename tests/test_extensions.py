"""sfu._extensions.select: the compiled module, or its twin with a warning saying why."""

from __future__ import annotations

import logging

import pytest

import sfu._extensions
import sfu._mix_py

from .twins import NO_EXTENSIONS, compiled


def test_a_compiled_module_that_does_not_load_falls_back_to_its_twin_and_says_so(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sfu._extensions, "NO_EXTENSIONS", False)
    with caplog.at_level(logging.WARNING, logger="sfu"):
        module, loaded = sfu._extensions.select("sfu._no_such_extension", "sfu._mix_py")
    assert module is sfu._mix_py and loaded is False
    assert "sfu._no_such_extension did not load" in caplog.text
    assert "sfu._mix_py" in caplog.text


def test_no_extensions_selects_the_twin_without_trying_the_compiled_module(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sfu._extensions, "NO_EXTENSIONS", True)
    with caplog.at_level(logging.WARNING, logger="sfu"):
        module, loaded = sfu._extensions.select("sfu._no_such_extension", "sfu._mix_py")
    assert module is sfu._mix_py and loaded is False
    assert not caplog.records, "an explicit choice is not a warning"


def test_a_compiled_module_that_loads_is_the_one_selected() -> None:
    expected = compiled("_mix")  # skips, saying so, when SFU_NO_EXTENSIONS is set
    assert not NO_EXTENSIONS
    module, loaded = sfu._extensions.select("sfu._mix", "sfu._mix_py")
    assert module is expected and loaded is True
