"""The Mixer's arithmetic (sum, soft limiter): the compiled :mod:`sfu._mix` when available.

``SFU_NO_EXTENSIONS=1`` (or a missing or broken extension, see
:mod:`sfu._extensions`) selects the
pure-Python reference :mod:`sfu._mix_py`, which has the same API.
``EXTENSION_LOADED`` tells which one is in use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._extensions import select

if TYPE_CHECKING:
    from ._mix_py import LIMIT_CEILING, LIMIT_KNEE, mix_add, mix_limit, soft_clip

    EXTENSION_LOADED = False
else:
    _module, EXTENSION_LOADED = select("sfu._mix", "sfu._mix_py")
    LIMIT_CEILING = _module.LIMIT_CEILING
    LIMIT_KNEE = _module.LIMIT_KNEE
    mix_add = _module.mix_add
    mix_limit = _module.mix_limit
    soft_clip = _module.soft_clip

__all__ = ["EXTENSION_LOADED", "LIMIT_CEILING", "LIMIT_KNEE", "mix_add", "mix_limit", "soft_clip"]
