"""The public API as a backend that type-checks its own code meets it.

``sfu`` ships ``py.typed``; these programs use it as such a backend would
and are checked with ``mypy --strict``, sfu's own modules treated as an
installed package's (their errors are ``mypy``'s run of the project, not a
user's). A value a caller handles must not be ``Any`` (``disallow-any-expr``
in the programs that say so), and a mistake the API's types can see (a room
setting misspelt or of the wrong type) must be an error: the lines that
carry one say so with a ``type: ignore[code]``, and ``--strict`` reports an
ignore that is not needed.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.compiled_and_python_alike  # see tests/alike.py

mypy_api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

CONFIG = """\
[mypy]
strict = True
python_version = 3.10
mypy_path = {root}
cache_dir = {cache}

[mypy-sfu.*]
ignore_errors = True

[mypy-aiortc.*,aioice.*,pylibsrtp.*,av.*,OpenSSL.*,gi.*]
ignore_missing_imports = True
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for the module's checks: sfu is analysed once, not per test."""
    return tmp_path_factory.mktemp("mypy_cache")


def mypy_strict(tmp_path: Path, cache: Path, programs: dict[str, str]) -> list[str]:
    """``mypy --strict``'s error lines for ``programs`` (module name -> source)."""
    config = tmp_path / "mypy.ini"
    config.write_text(CONFIG.format(root=ROOT, cache=cache))
    files = []
    for name, source in programs.items():
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        files.append(str(path))
    stdout, stderr, _ = mypy_api.run(["--config-file", str(config), *files])
    assert not stderr, stderr
    return [line for line in stdout.splitlines() if ": error:" in line or ": note:" in line]


STATS = """\
# mypy: disallow-any-expr
from __future__ import annotations

import sfu
from sfu.media.recorder import Recorder


def report(server: sfu.Server, member: sfu.Participant, recorder: Recorder) -> list[object]:
    totals = server.stats()
    drops: dict[str, int] = totals["drops"]
    rows: list[object] = [totals["packets_in"], totals["payload_bytes_out"], drops]
    stats = member.stats()
    role: sfu.auth.Role = stats["role"]
    rows += [role, stats["state"], stats["address"], stats["join_time"], stats["rtp_dropped"]]
    for slot in stats["slots"]:
        rtt: float | None = slot["round_trip_time"]
        rows += [slot["packets_sent"], slot["fraction_lost"], slot["jitter"], rtt]
    inbound = stats.get("inbound")
    if inbound is not None:
        level: int | None = inbound["audio_level"]
        rows += [inbound["ssrc"], inbound["packets_received"], level, inbound["muted"]]
    recording = recorder.stats()
    rows += [recording["duration"], recording["packets"]]
    for identity, file in recording["speakers"].items():
        rows += [identity, file["path"], file["duration"], file["silence_frames"]]
    return rows


def may_moderate(member: sfu.Participant, claims: sfu.auth.Claims) -> bool:
    grants: frozenset[sfu.auth.Grant] = member.grants | claims.grants
    return "moderate" in grants


def tokens(secret: str) -> list[str]:
    return [
        sfu.auth.issue_token(secret, room="hall", identity="ann", grants=["moderate"]),
        sfu.auth.issue_token(secret, room="hall", identity="bob", grants=["moderte"]),  # type: ignore[list-item]
    ]
"""


def test_stats_a_backend_reads_are_typed_not_any(tmp_path: Path, cache: Path) -> None:
    """``server.stats()``, ``participant.stats()`` and ``recorder.stats()``:
    every field the README lists has a type, not ``Any``; a member's and a
    token's grants are ``sfu.auth.Grant``s, so a misspelt grant is an error."""
    assert mypy_strict(tmp_path, cache, {"stats_program": STATS}) == []


SETTINGS = """\
from __future__ import annotations

from aiohttp import web

import sfu
from sfu.signaling.aiohttp import add_signaling, add_whip_whep, websocket_handler


def rooms(server: sfu.Server, app: web.Application) -> None:
    server.room("hall", slots=2, max_listeners=None, thresholds=(1.0, 2.0, 3.0))
    server.room("hall", close_when_empty=300)
    server.room("hall", slot=2)  # type: ignore[call-arg]
    server.room("hall", slots="2")  # type: ignore[arg-type]
    server.room("hall", close_when_empty="soon")  # type: ignore[arg-type]
    add_signaling(app, server, room_settings={"close_when_empty": 60})
    add_signaling(app, server, room_settings={"close_when_empty": "soon"})  # type: ignore[arg-type]
    add_whip_whep(app, server, room_settings={"slot": 2})  # type: ignore[arg-type]
    websocket_handler(server, room_settings={"private": 1})  # type: ignore[arg-type]
"""


def test_room_settings_are_checked_by_name_and_type(tmp_path: Path, cache: Path) -> None:
    """``server.room(name, **settings)`` and the adapters' ``room_settings``
    take :class:`sfu.RoomPolicy`'s fields: a misspelt or mistyped setting is
    a type error, not a surprise at run time."""
    assert mypy_strict(tmp_path, cache, {"settings_program": SETTINGS}) == []


def test_readme_python_blocks_type_check(tmp_path: Path, cache: Path) -> None:
    """The Quick start and the aiohttp lines of the README, as they are,
    under ``--strict`` (with the names they leave to the reader declared)."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    quick_start = next(block for block in blocks if "sfu.Server(" in block)
    aiohttp_lines = next(block for block in blocks if "add_signaling(app, server" in block)
    program = (
        "from __future__ import annotations\n"
        "from aiohttp import web\n"
        "import sfu\n\n"
        "offer_from_alice = offer_from_bob = ''\n"
        "alice = bob = object()\n\n"
        "def reply(peer: object, answer: str) -> None: ...\n\n"
        "async def quick_start() -> None:\n"
        + textwrap.indent(quick_start, "    ")
        + "\n\ndef mount(app: web.Application, server: sfu.Server) -> None:\n"
        + textwrap.indent(aiohttp_lines, "    ")
    )
    assert mypy_strict(tmp_path, cache, {"readme_program": program}) == []


def test_room_settings_type_is_room_policys_fields() -> None:
    """:class:`sfu.policy.RoomSettings` (what a type checker sees of
    ``server.room(name, **settings)``) names every :class:`sfu.RoomPolicy`
    field with the same type, and the README shows them keyword-only, as
    the call takes them."""
    import dataclasses
    import inspect

    import sfu
    from sfu.policy import RoomPolicy, RoomSettings

    fields = {field.name: str(field.type) for field in dataclasses.fields(RoomPolicy)}
    settings = {
        name: getattr(annotation, "__forward_arg__", annotation)
        for name, annotation in RoomSettings.__annotations__.items()
    }
    assert settings == fields
    assert RoomSettings.__required_keys__ == frozenset()
    parameters = list(inspect.signature(sfu.Server.room).parameters.values())
    assert [p.kind for p in parameters[1:]] == [
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.VAR_KEYWORD,
    ]
    assert "| `server.room(name, *, slots=3," in README


EVENTS = """\
from __future__ import annotations

from typing import NoReturn

from sfu import EventStream, events


def assert_never(value: NoReturn) -> NoReturn:  # typing.assert_never from Python 3.11
    raise AssertionError(value)


async def follow(stream: EventStream) -> list[str]:
    seen: list[str] = []
    async for event in stream:
        match event:
            case events.ParticipantJoined(identity=who) | events.ParticipantConnected(identity=who):
                seen.append(who)
            case events.ParticipantLeft() | events.ParticipantRemoved() | events.RoleChanged() | events.MuteChanged():
                seen.append(event.identity)
            case events.HandRaised() | events.HandLowered() | events.HandsChanged() | events.RosterChanged():
                pass
            case events.ActiveSpeakersChanged() | events.DominantSpeakerChanged() | events.MixerFailed():
                pass
            case events.RoomClosed():
                break
            case _:
                assert_never(event)
    return seen
"""


def test_a_match_over_the_events_is_checked_for_exhaustiveness(tmp_path: Path, cache: Path) -> None:
    """A stream yields ``sfu.events.Event``, the union of the event classes:
    a ``match`` that handles each passes ``assert_never``, and one that
    forgets a class is an error (a new event kind shows in the backend's
    type check, not at run time)."""
    assert mypy_strict(tmp_path, cache, {"events_program": EVENTS}) == []
    forgetful = EVENTS.replace("            case events.RoomClosed():\n                break\n", "")
    errors = mypy_strict(tmp_path, cache, {"events_forgetful": forgetful})
    assert any("assert_never" in line and "RoomClosed" in line for line in errors), errors


def test_the_event_union_names_every_event_class() -> None:
    """``sfu.events.Event`` is every class a stream can yield: one left out
    would be hidden from a backend's exhaustive ``match`` (the stream casts
    what it holds to the union)."""
    import typing

    from sfu import events

    def subclasses(cls: type) -> set[type]:
        found: set[type] = set(cls.__subclasses__())
        for sub in list(found):
            found |= subclasses(sub)
        return found

    assert set(typing.get_args(events.Event)) == subclasses(events.RoomEvent)
