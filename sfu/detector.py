"""The active-speaker detector: the compiled :mod:`sfu._detector` when available.

``SFU_NO_EXTENSIONS=1`` (or a missing or broken extension, see
:mod:`sfu._extensions`) selects the
pure-Python reference :mod:`sfu._detector_py`, which has the same API.
``EXTENSION_LOADED`` tells which one is in use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._extensions import select

if TYPE_CHECKING:
    from ._detector_py import ActiveSpeakerDetector

    EXTENSION_LOADED = False
else:
    _module, EXTENSION_LOADED = select("sfu._detector", "sfu._detector_py")
    ActiveSpeakerDetector = _module.ActiveSpeakerDetector

__all__ = ["EXTENSION_LOADED", "ActiveSpeakerDetector"]
