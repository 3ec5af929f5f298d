"""Type checks shared by the validation of settings and arguments.

``bool`` is an ``int`` to Python, but ``True`` as a port or a timeout is
a mistake, so both checks refuse it.
"""

from __future__ import annotations

import math

__all__ = ["is_int", "is_number"]


def is_int(value: object) -> bool:
    """An int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite int or float, not a bool (nor an int too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past 1.8e308
        return False
