"""The RFC 6464 level of an RTP packet: the compiled :mod:`sfu._audio_level` when available.

``SFU_NO_EXTENSIONS=1`` (or a missing/broken extension) selects the
pure-Python reference :mod:`sfu._audio_level_py`, which has the same API.
``EXTENSION_LOADED`` tells which one is in use.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

NO_EXTENSIONS = os.environ.get("SFU_NO_EXTENSIONS", "") not in ("", "0")

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._audio_level_py import NO_LEVEL, read_audio_level

    EXTENSION_LOADED = False
else:
    try:
        from ._audio_level import NO_LEVEL, read_audio_level

        EXTENSION_LOADED = True
    except ImportError:  # pragma: no cover - depends on the build
        from ._audio_level_py import NO_LEVEL, read_audio_level

        EXTENSION_LOADED = False

__all__ = ["EXTENSION_LOADED", "NO_LEVEL", "read_audio_level"]
