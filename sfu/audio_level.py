"""The RFC 6464 level of an RTP packet: the compiled :mod:`sfu._audio_level` when available.

``SFU_NO_EXTENSIONS=1`` (or a missing or broken extension, see
:mod:`sfu._extensions`) selects the
pure-Python reference :mod:`sfu._audio_level_py`, which has the same API.
``EXTENSION_LOADED`` tells which one is in use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._extensions import select

if TYPE_CHECKING:
    from ._audio_level_py import NO_LEVEL, read_audio_level

    EXTENSION_LOADED = False
else:
    _module, EXTENSION_LOADED = select("sfu._audio_level", "sfu._audio_level_py")
    NO_LEVEL = _module.NO_LEVEL
    read_audio_level = _module.read_audio_level

__all__ = ["EXTENSION_LOADED", "NO_LEVEL", "read_audio_level"]
