"""Which of a compiled module and its pure-Python twin the package uses.

``SFU_NO_EXTENSIONS`` set to anything but "" or "0" selects the twin. So
does a compiled module that is missing (a build without a C compiler) or
refuses to load (``ImportError``, e.g. :mod:`sfu._relay` on a pylibsrtp
version it was not written for); that is logged, since the twin costs
more CPU per packet. The selectors (:mod:`sfu.relay`, :mod:`sfu.mix`,
:mod:`sfu.detector`, :mod:`sfu.audio_level`) say which one they use in
``EXTENSION_LOADED``.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

__all__ = ["NO_EXTENSIONS", "select"]

logger = logging.getLogger("sfu")

NO_EXTENSIONS = os.environ.get("SFU_NO_EXTENSIONS", "") not in ("", "0")


def select(compiled: str, twin: str) -> tuple[ModuleType, bool]:
    """The module to use of ``compiled`` and ``twin`` (full names), and whether it is the compiled one."""
    if not NO_EXTENSIONS:
        try:
            return importlib.import_module(compiled), True
        except ImportError as exc:
            logger.warning("%s did not load (%s); using the pure-Python %s", compiled, exc, twin)
    return importlib.import_module(twin), False
