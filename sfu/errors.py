"""One exception hierarchy for everything `sfu` raises on purpose.

Catch :class:`SfuError` to handle any of them; each message says what was
wrong and, where it helps, what to do instead.
"""

from __future__ import annotations


class SfuError(Exception):
    """Base class of every error raised by `sfu`."""


class InvalidOffer(SfuError, ValueError):
    """An SDP offer could not be parsed or cannot be answered."""


class NotAllowed(SfuError):
    """The caller is not permitted to do this (bad token, wrong role, banned)."""


class InvalidToken(NotAllowed):
    """The join token itself is bad: malformed, expired or not valid yet, not
    signed with the server's key. (No token where one is required, or a good
    token that does not grant what was asked, such as another room or a
    lesser role, is a plain :class:`NotAllowed`.) Over WHIP/WHEP it is 401
    with ``WWW-Authenticate: Bearer error="invalid_token"`` (RFC 6750 §3.1);
    no token is 401 with a bare ``Bearer`` challenge, the other refusals
    403."""


class RoomFull(SfuError):
    """The room has reached a capacity limit."""


class RoomClosed(SfuError):
    """The room (or the server owning it) is closed."""


class ServerClosed(RoomClosed):
    """The server is closed: no room or session can be created on it."""


class DuplicateIdentity(SfuError):
    """A participant with this identity is already in the room."""


class NotFound(SfuError, KeyError):
    """No participant with this identity is in the room (also a ``KeyError``,
    as ``room[identity]`` is a mapping lookup)."""

    def __str__(self) -> str:
        # KeyError would quote the message as a repr.
        return str(self.args[0]) if self.args else "not found"


class ParticipantClosed(SfuError):
    """The participant has left (or was removed, or its session ended): it can
    no longer act or be waited for."""


class InvalidSetting(SfuError, ValueError):
    """A configuration value is out of range or of the wrong type."""
