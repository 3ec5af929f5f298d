"""Fan-out of slot packets to receivers: the compiled :mod:`sfu._relay` when available.

``SFU_NO_EXTENSIONS`` set to anything but "" or "0" (or a missing or unusable
extension, e.g. an unsupported pylibsrtp version) selects the pure-Python
reference :mod:`sfu._relay_py`, which has the same API and sends the same
bytes. ``EXTENSION_LOADED`` tells which one is in use.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

NO_EXTENSIONS = os.environ.get("SFU_NO_EXTENSIONS", "") not in ("", "0")

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._relay_py import MAX_BATCH, MAX_PAYLOAD, FanOut

    EXTENSION_LOADED = False
else:
    try:
        from ._relay import MAX_BATCH, MAX_PAYLOAD, FanOut

        EXTENSION_LOADED = True
    except ImportError:  # pragma: no cover - depends on the build
        from ._relay_py import MAX_BATCH, MAX_PAYLOAD, FanOut

        EXTENSION_LOADED = False

__all__ = ["EXTENSION_LOADED", "MAX_BATCH", "MAX_PAYLOAD", "FanOut"]
