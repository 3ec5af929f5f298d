"""The signaling messages without a connection: client frames read, server frames built."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from sfu import errors
from sfu.events import (
    ActiveSpeakersChanged,
    HandLowered,
    HandRaised,
    HandsChanged,
    ParticipantLeft,
    RoleChanged,
    RosterChanged,
    SlotInfo,
)
from sfu.signaling.messages import (
    MAX_MESSAGE,
    Json,
    ProtocolError,
    RoomFrames,
    encode,
    error_code,
    event_message,
    field,
    parse_command,
)

pytestmark = pytest.mark.compiled_and_python_alike  # see tests/alike.py


def refused(text: str) -> tuple[str, str]:
    with pytest.raises(ProtocolError) as caught:
        parse_command(text)
    return caught.value.code, str(caught.value)


def test_a_frame_is_measured_in_utf8_bytes() -> None:
    def frame(pad: str) -> str:
        return json.dumps({"type": "ping", "pad": pad}, separators=(",", ":"), ensure_ascii=False)

    padding = MAX_MESSAGE - len(frame(""))
    assert len(frame("x" * padding)) == MAX_MESSAGE
    assert parse_command(frame("x" * padding))["type"] == "ping"
    # As many characters, but "é" is two bytes of UTF-8.
    code, message = refused(frame("é" * padding))
    assert code == "too_large" and str(MAX_MESSAGE) in message


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{oops", "bad_json"),
        ('{"type":"ping","id":NaN}', "bad_json"),
        ('{"type":"ping","id":-Infinity}', "bad_json"),
        ('{"type":"ping","id":1e400}', "bad_json"),
        ("[" * 60_000, "bad_json"),  # nesting past the recursion limit, within the size
        ('["ping"]', "bad_message"),
        ('{"type":"ping","id":{"a":1}}', "bad_message"),
        ('{"type":"ping","id":[1]}', "bad_message"),
    ],
)
def test_frames_that_are_no_command_are_refused_with_their_code(text: str, code: str) -> None:
    assert refused(text)[0] == code


def test_a_command_keeps_its_id_and_fields() -> None:
    assert parse_command('{"type":"mute","muted":true,"id":"7"}') == {
        "type": "mute",
        "muted": True,
        "id": "7",
    }
    assert parse_command('{"type":"ping","id":2.5}')["id"] == 2.5


def test_field_checks_presence_and_type() -> None:
    message: dict[str, Any] = {"type": "promote", "identity": "bob", "count": True, "muted": 1}
    assert field(message, "identity", str) == "bob"
    assert field(message, "role", str, required=False, default="speaker") == "speaker"
    with pytest.raises(ProtocolError, match="'promote' needs a 'role' field"):
        field(message, "role", str)
    with pytest.raises(ProtocolError, match="'count' must be a int"):
        field(message, "count", int)  # JSON true is no number here
    with pytest.raises(ProtocolError, match="'muted' must be a bool"):
        field(message, "muted", bool)  # nor is 1 a bool


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidOffer("x"), "invalid_offer"),
        (errors.NotAllowed("x"), "not_allowed"),
        (errors.RoomFull("x"), "room_full"),
        (errors.DuplicateIdentity("x"), "duplicate_identity"),
        (errors.ServerClosed("x"), "room_closed"),
        (errors.InvalidSetting("x"), "bad_message"),
        (errors.NotFound("x"), "not_found"),
        (errors.ParticipantClosed("x"), "session_ended"),
        (errors.SfuError("x"), "bad_message"),
    ],
)
def test_each_error_of_the_room_has_its_code(error: errors.SfuError, code: str) -> None:
    assert error_code(error) == code


def test_a_role_change_carries_grants_only_to_the_member_it_is_about() -> None:
    bob: Any = SimpleNamespace(identity="bob", grants={"speak", "listen"})
    about_bob = RoleChanged("hall", "bob", "speaker", "alice", True, moderates=False)
    about_carol = RoleChanged("hall", "carol", "speaker", "alice", False, moderates=True)
    assert event_message(about_bob, bob) == {
        "type": "role_changed",
        "identity": "bob",
        "role": "speaker",
        "by": "alice",
        "renegotiate": True,
        "moderates": False,
        "grants": ["listen", "speak"],
    }
    told = event_message(about_carol, bob)
    assert told is not None and "grants" not in told and told["moderates"] is True


def test_the_stage_lists_each_slot() -> None:
    anyone: Any = SimpleNamespace(identity="bob")
    event = ActiveSpeakersChanged("hall", (SlotInfo("alice", 1234, 30), None), "alice")
    assert event_message(event, anyone) == {
        "type": "active_speakers",
        "slots": [{"identity": "alice", "csrc": 1234, "level": 30}, None],
        "dominant": "alice",
    }


def test_events_that_end_the_connection_are_not_built_here() -> None:
    anyone: Any = SimpleNamespace(identity="bob")
    assert event_message(ParticipantLeft("hall", "bob", "left"), anyone) is None


def test_an_encoded_value_goes_in_as_it_is() -> None:
    roster = Json('[{"identity":"bob"}]')
    assert json.loads(encode({"type": "joined", "roster": roster, "slots": 3})) == {
        "type": "joined",
        "roster": [{"identity": "bob"}],
        "slots": 3,
    }
    assert json.loads(encode({"roster": roster})) == {"roster": [{"identity": "bob"}]}
    assert encode({"type": "ok"}) == '{"type":"ok"}'


def test_hands_are_one_list_for_all_and_a_member_is_told_of_its_own_hand() -> None:
    """Others' hands come batched (HandsChanged, one text for every member);
    a member's own HandRaised/HandLowered (its stream has no others') is a
    `hand` message to it alone."""
    room = SimpleNamespace()
    alice, carol = (
        SimpleNamespace(room=room, identity="alice"),
        SimpleNamespace(room=room, identity="carol"),
    )
    frames = RoomFrames()
    listed = HandsChanged("hall", ("alice", "bob"), 250)
    text = frames.event_text(listed, alice)  # type: ignore[arg-type]
    assert json.loads(text or "") == {"type": "hands", "hands": ["alice", "bob"], "total": 250}
    assert frames.event_text(listed, carol) is text  # type: ignore[arg-type]
    own = frames.event_text(HandRaised("hall", "alice"), alice)  # type: ignore[arg-type]
    assert json.loads(own or "") == {"type": "hand", "raised": True, "by": None}
    lowered = HandLowered("hall", "alice", "mod")
    assert json.loads(frames.event_text(lowered, alice) or "") == {  # type: ignore[arg-type]
        "type": "hand",
        "raised": False,
        "by": "mod",
    }
    assert frames.event_text(HandRaised("hall", "alice"), carol) is None  # type: ignore[arg-type]


def test_an_event_s_text_is_shared_by_object_not_by_value() -> None:
    """Two equal RosterChanged are two moments: the second is built afresh,
    with the members as they are then; one event's text is the same for all."""
    bob = SimpleNamespace(muted=False, moderator_muted=False, can_speak=True, is_moderator=False)
    room = SimpleNamespace(get={"bob": bob}.get)
    alice, carol = (
        SimpleNamespace(room=room, identity="alice"),
        SimpleNamespace(room=room, identity="carol"),
    )
    frames = RoomFrames()
    first = RosterChanged("hall", joined=(("bob", "listener"),), left=(), updated=(), size=3)

    def bob_muted(text: str | None) -> bool:
        assert text is not None
        return bool(json.loads(text)["joined"][0]["muted"])

    assert not bob_muted(frames.event_text(first, alice))  # type: ignore[arg-type]
    bob.muted = True
    assert not bob_muted(frames.event_text(first, carol))  # type: ignore[arg-type]
    again = RosterChanged("hall", joined=(("bob", "listener"),), left=(), updated=(), size=3)
    assert again == first
    assert bob_muted(frames.event_text(again, carol))  # type: ignore[arg-type]
    # A role change carries grants to the member it is about: never shared with it.
    change = RoleChanged("hall", "alice", "speaker", None, False, moderates=False)
    alice.grants = frozenset({"speak"})
    assert "grants" not in json.loads(frames.event_text(change, carol))  # type: ignore[arg-type]
    assert json.loads(frames.event_text(change, alice))["grants"] == ["speak"]  # type: ignore[arg-type]
