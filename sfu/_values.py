"""Checks shared by the validation of settings and arguments, the
token-bucket arithmetic the rate limits share, and how a log line shows a
name a user chose.

``bool`` is an ``int`` to Python, but ``True`` as a port or a timeout is
a mistake, so both checks refuse it.
"""

from __future__ import annotations

import math
import numbers

from .errors import InvalidSetting

__all__ = [
    "brief",
    "check_identity",
    "check_reason",
    "is_int",
    "is_number",
    "is_seconds",
    "refilled",
    "shown",
    "timeout_seconds",
]


def shown(name: str) -> str:
    """``name`` (an identity) as a log line shows it: as it is when every
    character prints, else quoted (``repr``), so that a newline, a carriage
    return or a terminal escape in it can neither forge a line nor hide one.
    A name that could read as another's quoted form or be taken for another
    (a quote or a backslash in it, a space at either end) is quoted too."""
    if (
        name.isprintable()
        and name.strip() == name
        and "'" not in name
        and '"' not in name
        and "\\" not in name
    ):
        return name
    return repr(name)


def brief(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for an error message about
    a bad argument: an int of more than 4,300 digits, whose repr raises
    ValueError, is told by its size."""
    try:
        text = repr(value)
    except ValueError:
        return f"an int of {value.bit_length()} bits" if isinstance(value, int) else "?"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_int(value: object) -> bool:
    """An int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite int or float, not a bool (nor an int too large for a float)."""
    return isinstance(value, (int, float)) and is_seconds(value)


def is_seconds(value: object, *, finite: bool = True) -> bool:
    """A number of seconds as a caller may hold one: any real number (an
    int, a float, a numpy scalar, a Fraction), not a bool and not NaN, and
    with ``finite`` not infinite either. ``math.inf`` as a timeout means
    "wait as long as it takes", as ``asyncio.wait_for`` reads it, so waits
    pass ``finite=False``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        seconds = float(value)
    except (OverflowError, ValueError, TypeError):  # an int past 1.8e308
        return False
    return not math.isnan(seconds) and (math.isfinite(seconds) or not finite)


def timeout_seconds(timeout: object) -> float | None:
    """A wait's ``timeout`` as ``asyncio.wait_for`` takes it: None (and
    ``math.inf``) wait as long as it takes, any other real number (see
    :func:`is_seconds`) is a float; InvalidSetting for anything else."""
    if timeout is None:
        return None
    if not is_seconds(timeout, finite=False):
        raise InvalidSetting(f"timeout must be None or a number of seconds, got {brief(timeout)}")
    seconds = float(timeout)  # type: ignore[arg-type]
    return None if seconds == math.inf else seconds


def check_identity(identity: object, name: str = "identity") -> None:
    """InvalidSetting for an identity that is not a str (a list would raise
    an unhelpful TypeError in a dict lookup, or pass silently)."""
    if not isinstance(identity, str):
        raise InvalidSetting(
            f"{name} must be a member's identity (str), got {type(identity).__name__}"
        )


def check_reason(reason: object) -> None:
    """InvalidSetting for a close or removal reason that is not a str: it goes
    into the events (and to the members' clients), whose readers expect text."""
    if not isinstance(reason, str):
        raise InvalidSetting(f"reason must be a str, got {type(reason).__name__}")


def refilled(tokens: float, since: float, now: float, rate: float, burst: float) -> float:
    """A token bucket's tokens at ``now``: ``tokens`` at ``since``, refilled
    at ``rate`` per second, never more than ``burst``."""
    return min(burst, tokens + (now - since) * rate)


def take_token(
    tokens: float, since: float, now: float, rate: float, burst: float, cost: float = 1.0
) -> tuple[bool, float]:
    """Take ``cost`` tokens from a bucket (see :func:`refilled`): whether there
    were as many, and the tokens left at ``now``."""
    tokens = refilled(tokens, since, now, rate, burst)
    return (True, tokens - cost) if tokens >= cost else (False, tokens)
