"""Fan-out of slot packets to receivers: the compiled :mod:`sfu._relay` when available.

``SFU_NO_EXTENSIONS`` set to anything but "" or "0" (or a missing or unusable
extension, e.g. an unsupported pylibsrtp version) selects the pure-Python
reference :mod:`sfu._relay_py`, which has the same API and sends the same
bytes. ``EXTENSION_LOADED`` tells which one is in use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._extensions import select

if TYPE_CHECKING:
    from ._relay_py import MAX_BATCH, MAX_PAYLOAD, FanOut

    EXTENSION_LOADED = False
else:
    _module, EXTENSION_LOADED = select("sfu._relay", "sfu._relay_py")
    MAX_BATCH = _module.MAX_BATCH
    MAX_PAYLOAD = _module.MAX_PAYLOAD
    FanOut = _module.FanOut

__all__ = ["EXTENSION_LOADED", "MAX_BATCH", "MAX_PAYLOAD", "FanOut"]
