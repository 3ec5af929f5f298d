"""The active-speaker detector: the compiled :mod:`sfu._detector` when available.

``SFU_NO_EXTENSIONS=1`` (or a missing/broken extension) selects the
pure-Python reference :mod:`sfu._detector_py`, which has the same API.
``EXTENSION_LOADED`` tells which one is in use.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

NO_EXTENSIONS = os.environ.get("SFU_NO_EXTENSIONS", "") not in ("", "0")

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._detector_py import ActiveSpeakerDetector

    EXTENSION_LOADED = False
else:
    try:
        from ._detector import ActiveSpeakerDetector

        EXTENSION_LOADED = True
    except ImportError:  # pragma: no cover - depends on the build
        from ._detector_py import ActiveSpeakerDetector

        EXTENSION_LOADED = False

__all__ = ["EXTENSION_LOADED", "ActiveSpeakerDetector"]
