"""sfu: live audio rooms for Python asyncio backends.

One :class:`Server` per process owns one UDP port; rooms, speakers and
listeners share it::

    async with sfu.Server(host="127.0.0.1", port=0) as server:
        room = server.room("town-hall", slots=3)
        speaker = await room.add_speaker(offer_sdp, identity="alice")
        send_to_client(speaker.answer)
"""

from __future__ import annotations

from . import auth, errors, events
from .errors import (
    DuplicateIdentity,
    InvalidOffer,
    InvalidSetting,
    InvalidToken,
    NotAllowed,
    NotFound,
    ParticipantClosed,
    RoomClosed,
    RoomFull,
    ServerClosed,
    SfuError,
)
from .events import (
    ActiveSpeakersChanged,
    DominantSpeakerChanged,
    EventStream,
    HandLowered,
    HandRaised,
    HandsChanged,
    MixerFailed,
    MuteChanged,
    ParticipantConnected,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantRemoved,
    RoleChanged,
    RoomEvent,
    RosterChanged,
    SlotInfo,
)
from .participant import Listener, Participant, Speaker
from .policy import RoomPolicy
from .room import Room
from .transport.server import Server

__version__ = "0.1.0"

__all__ = [
    "ActiveSpeakersChanged",
    "DominantSpeakerChanged",
    "SlotInfo",
    "DuplicateIdentity",
    "EventStream",
    "HandLowered",
    "HandRaised",
    "HandsChanged",
    "MixerFailed",
    "MuteChanged",
    "ParticipantRemoved",
    "RoleChanged",
    "RoomPolicy",
    "RosterChanged",
    "auth",
    "InvalidOffer",
    "InvalidSetting",
    "InvalidToken",
    "Listener",
    "NotAllowed",
    "NotFound",
    "Participant",
    "ParticipantClosed",
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
