"""sfu: live audio rooms for Python asyncio backends.

One :class:`Server` per process owns one UDP port; rooms, speakers and
listeners share it::

    async with sfu.Server(host="127.0.0.1", port=0) as server:
        room = server.room("town-hall", slots=3)
        speaker = await room.add_speaker(offer_sdp, identity="alice")
        send_to_client(speaker.answer)
"""

from __future__ import annotations

from . import errors, events
from .errors import (
    DuplicateIdentity,
    InvalidOffer,
    InvalidSetting,
    NotAllowed,
    RoomClosed,
    RoomFull,
    ServerClosed,
    SfuError,
)
from .events import ParticipantConnected, ParticipantJoined, ParticipantLeft, RoomEvent
from .participant import Listener, Participant, Speaker
from .room import Room
from .transport.server import Server

__version__ = "0.1.0"

__all__ = [
    "DuplicateIdentity",
    "InvalidOffer",
    "InvalidSetting",
    "Listener",
    "NotAllowed",
    "Participant",
    "ParticipantConnected",
    "ParticipantJoined",
    "ParticipantLeft",
    "Room",
    "RoomClosed",
    "RoomEvent",
    "RoomFull",
    "Server",
    "ServerClosed",
    "SfuError",
    "Speaker",
    "errors",
    "events",
]
