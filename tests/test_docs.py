"""The README's API table says what the code does: signatures and defaults.

A setting renamed or removed in the code (or a default changed) while the
README still shows the old one fails here, not in a user's first try.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import secrets
from pathlib import Path

import pytest

import sfu
from sfu.policy import RoomPolicy

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def documented_call(prefix: str) -> dict[str, object]:
    """``name: default`` of the README's ``prefix(...)`` table cell, defaults as Python values."""
    match = re.search(rf"\| `{re.escape(prefix)}\((.*?)\)` \|", README)
    assert match, f"the README's API table has no `{prefix}(...)` row"
    pairs = {}
    for part in match.group(1).split(", "):
        part = part.lstrip("*").strip()
        if "=" in part:
            name, default = part.split("=", 1)
            pairs[name] = ast.literal_eval(default)
    return pairs


@pytest.mark.compiled_and_python_alike
def test_server_signature_matches_the_readme() -> None:
    documented = documented_call("Server")
    parameters = inspect.signature(sfu.Server).parameters
    actual = {
        name: p.default
        for name, p in parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert documented == actual


@pytest.mark.compiled_and_python_alike
def test_room_settings_match_the_readme() -> None:
    documented = documented_call("server.room")
    actual = {field.name: field.default for field in dataclasses.fields(RoomPolicy)}
    assert documented == actual


@pytest.mark.compiled_and_python_alike
def test_ci_runs_the_readme_test_command() -> None:
    """`.ci/run` must run what the README tells a newcomer to run, nothing weaker."""
    block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert block, "the README opens with a sh block of its two commands"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    test_command = next(c for c in commands if c.endswith(" test"))
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    ci_commands = [line.split("#")[0].strip() for line in ci.splitlines()]
    assert test_command in ci_commands
    # Verbatim too: the line in .ci/run is the README's line, character for character.
    assert any(line == test_command for line in ci.splitlines())


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order."""
    return re.findall(r"```python\n(.*?)```", text, re.S)


async def test_quick_start_runs_and_prints_the_events_it_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Quick start, run as written with two aiortc peers on loopback: its
    event loop sees every event its comment names, ending with RoomClosed."""
    import asyncio
    import textwrap

    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from sfu import events

    block = python_blocks(README.split("## Quick start", 1)[1])[0]
    named = re.search(r"print\(event\)\s*#\s*(.*)", block)
    assert named, "the Quick start's print(event) line names the events it shows"
    expected = [name.strip() for name in named.group(1).split(",")]
    assert expected and all(isinstance(getattr(events, name), type) for name in expected)

    peers = {}
    for name, direction in (("alice", "sendrecv"), ("bob", "recvonly")):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        if direction == "sendrecv":
            from tests.clients import ToneTrack

            pc.addTransceiver(ToneTrack(), direction="sendrecv")
        else:
            pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        peers[name] = pc
    servers: list[sfu.Server] = []
    start = sfu.Server.start

    async def recording_start(self: sfu.Server) -> sfu.Server:
        servers.append(self)
        return await start(self)

    monkeypatch.setattr(sfu.Server, "start", recording_start)

    seen: list[object] = []
    pending: list[asyncio.Future[object]] = []

    def reply(pc: RTCPeerConnection, answer: str) -> None:
        description = RTCSessionDescription(answer, "answer")
        pending.append(asyncio.ensure_future(pc.setRemoteDescription(description)))

    def print_(event: object) -> None:
        seen.append(event)
        connected = {e.identity for e in seen if isinstance(e, events.ParticipantConnected)}
        room = servers[0].get_room("town-hall")
        if connected == {"alice", "bob"} and room is not None:
            pending.append(asyncio.ensure_future(room.close("done")))  # ends the loop

    namespace: dict[str, object] = {
        "offer_from_alice": peers["alice"].localDescription.sdp,
        "offer_from_bob": peers["bob"].localDescription.sdp,
        "alice": peers["alice"],
        "bob": peers["bob"],
        "reply": reply,
        "print": print_,
    }
    exec(
        compile("async def quick_start():\n" + textwrap.indent(block, "    "), "README", "exec"),
        namespace,
    )
    try:
        await asyncio.wait_for(namespace["quick_start"](), 20)  # type: ignore[operator]
        await asyncio.gather(*pending)
    finally:
        for pc in peers.values():
            await pc.close()
    names = [type(event).__name__ for event in seen]
    assert set(expected) <= set(names), f"the Quick start printed {names}"
    assert names[-1] == "RoomClosed"


def table_row(first_cell: str) -> str:
    """The README's API table row whose first cell starts with ``first_cell``."""
    match = re.search(rf"^\| {re.escape(first_cell)}.*$", README, re.M)
    assert match, f"the README's API table has no row for {first_cell}"
    return match.group(0)


def documented_calls(cell: str) -> list[tuple[str, list[str]]]:
    """``(name, [argument, ...])`` of every ``[await ][.]name(...)`` code span in ``cell``."""
    calls = []
    for span in re.findall(r"`([^`]*)`", cell):
        match = re.fullmatch(r"(?:await )?\.?([a-z_]+)\((.*)\)", span)
        if match:
            # ("*": the keyword-only marker, as in the signature.)
            arguments = [
                a.strip() for a in match.group(2).split(", ") if a.strip() not in ("", "*")
            ]
            calls.append((match.group(1), arguments))
    return calls


def check_call(owner: object, name: str, arguments: list[str]) -> None:
    """The README's ``name(arguments)`` is a call of ``owner.name`` as it is now:
    each named parameter exists, each default shown is the default, and no
    parameter the README leaves out is required."""
    function = getattr(owner, name, None)
    assert callable(function), f"README: {owner!r} has no {name}()"
    parameters = inspect.signature(function).parameters
    documented = set()
    for argument in arguments:
        if argument == "...":
            return  # "the same as the previous call"
        written, _, default = argument.partition("=")
        written = written.lstrip("*")
        documented.add(written)
        assert written in parameters, f"README: {name}() has no parameter {written!r}"
        if default:
            actual = parameters[written].default
            assert actual == ast.literal_eval(default), (
                f"README: {name}({written}={default}), the code's default is {actual!r}"
            )
    for parameter in parameters.values():
        if parameter.name in ("self", "cls") or parameter.kind in (
            parameter.VAR_POSITIONAL,
            parameter.VAR_KEYWORD,
        ):
            continue
        assert parameter.name in documented or parameter.default is not parameter.empty, (
            f"README: {name}() leaves out its required parameter {parameter.name!r}"
        )


async def test_room_methods_match_the_readme() -> None:
    cell = table_row("`Room`")
    calls = documented_calls(cell)
    assert len(calls) > 15
    for name, arguments in calls:
        check_call(sfu.Room, name, arguments)
    # The bare names (properties, attributes, also those set per room) exist too.
    parameters = {a.partition("=")[0] for _, arguments in calls for a in arguments}
    async with sfu.Server() as server:
        room = server.room("docs")
        for span in re.findall(r"`([a-z_]+)`", cell):
            assert hasattr(room, span) or span in parameters, f"README: Room has no {span!r}"


@pytest.mark.compiled_and_python_alike
def test_participant_api_matches_the_readme() -> None:
    cell = table_row("`Speaker`, `Listener`")
    for name, arguments in documented_calls(cell):
        check_call(sfu.Participant, name, arguments)
    for span in re.findall(r"`\.([a-z_]+)`", cell):
        assert hasattr(sfu.Participant, span), f"README: Participant has no .{span}"


@pytest.mark.compiled_and_python_alike
def test_auth_functions_match_the_readme() -> None:
    cell = table_row("`sfu.auth`")
    calls = documented_calls(cell)
    assert {name for name, _ in calls} == {"issue_token", "verify_token", "signed_identity"}
    for name, arguments in calls:
        check_call(sfu.auth, name, arguments)
    assert f"{sfu.auth.DEFAULT_LEEWAY:g} s clock-skew leeway" in cell
    assert f"({sfu.auth.SIGNED_KEPT:,} tokens)" in cell


@pytest.mark.compiled_and_python_alike
def test_every_event_is_in_the_readme_and_every_named_one_exists() -> None:
    cell = table_row("`room.events()`")
    listed = set(re.search(r"Events: (.*?)\. Each", cell).group(1).split("`")[1::2])  # type: ignore[union-attr]
    events = {
        name
        for name in sfu.events.__all__
        if isinstance(getattr(sfu.events, name), type)
        and issubclass(getattr(sfu.events, name), sfu.events.RoomEvent)
        and name != "RoomEvent"
    }
    assert events <= listed, f"events the README does not name: {sorted(events - listed)}"
    assert {name for name in listed if name[0].isupper()} <= events


@pytest.mark.compiled_and_python_alike
def test_error_hierarchy_matches_the_readme() -> None:
    cell = table_row("`sfu.errors`")
    named = set(re.findall(r"`([A-Z][A-Za-z]+)`", cell)) - {"KeyError"}
    errors = {
        name
        for name, value in vars(sfu.errors).items()
        if isinstance(value, type) and issubclass(value, sfu.errors.SfuError)
    }
    assert named == errors
    assert all(issubclass(getattr(sfu.errors, name), sfu.errors.SfuError) for name in named)
    assert issubclass(sfu.errors.ServerClosed, sfu.errors.RoomClosed)
    assert issubclass(sfu.errors.NotFound, KeyError)


@pytest.mark.compiled_and_python_alike
def test_dotted_names_in_the_readme_exist() -> None:
    """Every `sfu.module.NAME` the README names can be imported, and the
    constants it quotes have the values it gives."""
    names = set(re.findall(r"`(sfu(?:\.[A-Za-z_]\w*)+)`", README)) - {"sfu.js"}
    assert len(names) > 10
    for dotted in sorted(names):
        assert _named(dotted) is not _MISSING, f"README names {dotted}, which does not exist"
    assert (Path(sfu.__file__).parent / "signaling" / "static" / "sfu.js").is_file()
    room = importlib.import_module("sfu.room")
    session = importlib.import_module("sfu.transport.session")
    handshakes = importlib.import_module("sfu.transport.handshakes")
    flat = " ".join(README.split())  # the README's lines wrap anywhere
    quoted = {
        f"`sfu.room.MAX_BANS` = {room.MAX_BANS:,}": True,
        f"within {room.MODERATOR_REJOIN_GRACE:g} s (`sfu.room.MODERATOR_REJOIN_GRACE`)": True,
        f"for {room.DEMOTED_REJOIN_GRACE:g} s (`sfu.room.DEMOTED_REJOIN_GRACE`)": True,
        f"`sfu.transport.session.MAX_INBOUND_SSRCS` ({session.MAX_INBOUND_SSRCS}:": True,
        "`HANDSHAKES_PER_TURN` in `sfu.transport.handshakes`": hasattr(
            handshakes, "HANDSHAKES_PER_TURN"
        ),
    }
    for text, holds in quoted.items():
        assert holds and text in flat, f"the README no longer says {text!r}"


@pytest.mark.compiled_and_python_alike
def test_limits_the_readme_quotes_are_the_codes() -> None:
    """Each limit, rate and default the README quotes as a figure is the
    code's: the expected text is written from the constant, so a constant
    changed without the README (or the other way round) fails here."""
    from sfu import auth
    from sfu.media import livestream, recorder
    from sfu.signaling import aiohttp as adapter
    from sfu.signaling import protocol
    from sfu.transport import server, session

    flat = " ".join(README.split())
    rejoin = importlib.import_module("sfu.rejoin")
    moderation = importlib.import_module("sfu.moderation")
    streams = importlib.import_module("sfu.media.streams")
    live = inspect.signature(adapter.live_stream_handler).parameters
    quoted = [
        f"`sfu.room.MAX_DECISIONS` = {rejoin.MAX_DECISIONS:,} identities",
        f"at most {auth.MAX_NAME_LENGTH} characters (`sfu.auth.MAX_NAME_LENGTH`",
        f"one 20 ms silence frame per {streams.KEEP_IN_STEP:,} sequence numbers missed",
        f"checked once and remembered ({auth.SIGNED_KEPT:,} tokens)",
        f"{auth.DEFAULT_LEEWAY:g} s clock-skew leeway",
        f"`token_secret` (≥ {auth.MIN_SECRET_BYTES} bytes)",
        f"At most {recorder.MAX_SPEAKER_FILES} speakers get a file of their own",
        f"tried again after {recorder.RETRY_FIRST:g} s",
        f"at most every {recorder.RETRY_MAX:g} s (`RETRY_FIRST`, `RETRY_MAX`",
        f"`sfu.signaling.aiohttp.ANSWER_WAIT`, {adapter.ANSWER_WAIT:g} s",
        f"the oldest {moderation.MAX_HANDS_LISTED} and how many",
        f"4 already under way for the session, or past its rate "
        f"({session.SESSION_PROOFS_PER_SECOND:g} a second) or the server's "
        f"(`PROOFS_PER_SECOND`, {server.PROOFS_PER_SECOND:g})",
        f"at {session.SESSION_PROOFS_PER_SECOND:g} a second per session (bursts of "
        f"{session.SESSION_PROOF_BURST:g}) and {server.PROOFS_PER_SECOND:g} a second "
        f"server-wide (bursts of {server.PROOF_BURST:g})",
        f"re-sent once after {session.PROOF_RESEND:g} s",
        f"SRTCP is cut at {session.RTCP_PER_SECOND:g} packets a second (bursts of "
        f"{session.RTCP_BURST:g};",
        f"at most {streams.PACKET_RATE:g} packets a second (the most an Opus voice "
        f"sends; bursts of {streams.PACKET_BURST})",
        f"a frame to it has waited {protocol.SEND_TIMEOUT:g} s",
        f"has not joined {protocol.JOIN_DEADLINE:g} s after it opened is closed "
        f"({protocol.CLOSE_NO_JOIN})",
        f"`max_clients` ({live['max_clients'].default:,}) clients at once",
        f"`max_lag` ({live['max_lag'].default:g} s) behind",
        f"`max_skips` ({live['max_skips'].default}) times",
        f"`packets_per_page` ({live['packets_per_page'].default}) packets",
        f"`burst_bytes` ({live['burst_bytes'].default}, with the headers",
        f"never more than {livestream.MAX_BURST_SECONDS:g} s of audio",
        f"`sfu.transport.session.MAX_INBOUND_SSRCS` ({session.MAX_INBOUND_SSRCS}: "
        f"four offers' worth of {session.SSRCS_PER_OFFER - 3} receiving lines",
    ]
    for text in quoted:
        assert text in flat, f"the README no longer says {text!r}"


def signaling_section() -> str:
    return README.split("## Signaling, WHIP/WHEP and metrics", 1)[1].split("\n## ", 1)[0]


async def test_aiohttp_snippet_mounts_what_it_says() -> None:
    """The README's aiohttp lines, run on a real app: /ws, WHIP/WHEP and a
    /metrics that serves the Prometheus text the README describes."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    block = next(b for b in python_blocks(signaling_section()) if "add_signaling" in b)
    async with sfu.Server(token_secret=secrets.token_urlsafe(32)) as server:
        app = web.Application()
        exec(compile(block, "README", "exec"), {"app": app, "server": server})
        routes = {
            (route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.resource is not None
        }
        assert {
            ("GET", "/ws"),
            ("POST", "/rooms/{room}/whip"),
            ("POST", "/rooms/{room}/whep"),
            ("GET", "/metrics"),
        } <= routes
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            response = await client.get("/metrics")
            assert response.status == 200
            text = await response.text()
    for family in ("rooms", "participants"):
        assert f"# TYPE sfu_{family} gauge" in text, family
    for family in (
        "received_datagrams",
        "received_bytes",
        "sent_packets",
        "sent_payload_bytes",
        "drops",
        "handshakes_timed_out",
        "joins_refused",
    ):
        assert f"# TYPE sfu_{family}_total counter" in text, family
        assert f"`sfu_{family}_total" in README, family
    assert "# TYPE sfu_join_seconds histogram" in text
    for reason in ("not sent (socket, size or srtp)", "rtp not forwarded"):
        assert f'reason="{reason}"' in text and reason in README


async def test_starlette_snippet_serves_a_join(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's Starlette/FastAPI handler, with a stand-in for Starlette's
    WebSocket (same methods and ASGI messages; like Starlette's, a send or a
    close on a socket the client closed raises ``WebSocketDisconnect``): an
    aiortc listener joins a room the factory makes (closing when empty), and
    leaves when the socket closes, as a member whose socket closed, not as
    a failure of the session. The room's line about the join names the
    client's address."""
    import asyncio
    import json
    import logging
    import sys
    import types

    from aiortc import RTCConfiguration, RTCPeerConnection

    class WebSocketDisconnect(Exception):
        def __init__(self, code: int = 1000) -> None:
            super().__init__(code)
            self.code = code

    starlette = types.ModuleType("starlette")
    websockets = types.ModuleType("starlette.websockets")
    websockets.WebSocketDisconnect = WebSocketDisconnect  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "starlette", starlette)
    monkeypatch.setitem(sys.modules, "starlette.websockets", websockets)

    class WebSocket:
        def __init__(self) -> None:
            self.inbox: asyncio.Queue[dict[str, object]] = asyncio.Queue()
            self.sent: list[dict[str, object]] = []
            self.disconnected = False
            self.client = types.SimpleNamespace(host="127.0.0.9", port=50000)

        async def accept(self) -> None:
            pass

        async def send_text(self, text: str) -> None:
            if self.disconnected:
                raise WebSocketDisconnect(1006)
            self.sent.append(json.loads(text))

        async def close(self, code: int = 1000, reason: str | None = None) -> None:
            if self.disconnected:
                raise WebSocketDisconnect(1006)
            self.disconnected = True
            self.inbox.put_nowait({"type": "websocket.disconnect", "code": code})

        async def receive(self) -> dict[str, object]:
            return await self.inbox.get()

    handlers = {}

    class App:
        def websocket(self, path: str) -> object:
            def register(handler: object) -> object:
                handlers[path] = handler
                return handler

            return register

    block = next(b for b in python_blocks(signaling_section()) if "SignalingSession" in b)
    secret = "s" * 32
    caplog.set_level(logging.INFO, logger="sfu")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        for _ in range(3):
            pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with sfu.Server(token_secret=secret) as server:
            exec(
                compile(block, "README", "exec"),
                {"app": App(), "server": server, "WebSocket": WebSocket},
            )
            ws = WebSocket()
            serving = asyncio.ensure_future(handlers["/ws"](ws))  # type: ignore[operator]
            token = sfu.auth.issue_token(secret, room="hall", identity="bob")
            join = {
                "type": "join",
                "room": "hall",
                "token": token,
                "offer": pc.localDescription.sdp,
            }
            ws.inbox.put_nowait({"type": "websocket.receive", "text": json.dumps(join)})
            for _ in range(200):
                if ws.sent:
                    break
                await asyncio.sleep(0.01)
            assert ws.sent and ws.sent[0]["type"] == "joined", ws.sent
            room = server.get_room("hall")
            assert room is not None and room.policy.close_when_empty == 300
            assert [p.identity for p in room.listeners] == ["bob"]
            assert "bob joined room 'hall' as listener (3 slots) via WebSocket from 127.0.0.9" in [
                r.getMessage() for r in caplog.records if r.levelno == logging.INFO
            ]
            bob = room["bob"]
            ws.disconnected = True  # the client closed its socket
            ws.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
            await asyncio.wait_for(serving, 5)  # (a close raising here would fail the app)
            assert room.get("bob") is None  # the member left with its socket
            assert bob.close_reason == "signaling connection closed"
    finally:
        await pc.close()


@pytest.mark.compiled_and_python_alike
def test_every_results_file_the_benchmark_docs_cite_exists() -> None:
    """bench/README.md and the README cite results by name (or, after a first
    full name, by ``…-HHMMSS.json``): each must be in bench/results."""
    root = Path(__file__).resolve().parent.parent
    results = {path.name for path in (root / "bench" / "results").glob("*.json")}
    text = README + (root / "bench" / "README.md").read_text()
    cited = set(re.findall(r"[a-z_0-9]+-\d{8}-\d{6}\.json", text))
    assert len(cited) > 40
    assert cited <= results, f"cited but not in bench/results: {sorted(cited - results)}"
    for time in re.findall(r"(?<![\w-])-(\d{6})\.json", text):
        assert [name for name in results if name.endswith(f"-{time}.json")], (
            f"bench/README.md cites …-{time}.json, which is not in bench/results"
        )
    for pattern in re.findall(r"`(?:results/)?([a-z_]+-[\d*-]*\*\.json)`", text):
        assert list((root / "bench" / "results").glob(pattern)), pattern


@pytest.mark.compiled_and_python_alike
def test_demo_options_in_the_readme_are_the_demo_servers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`./dev demo`'s options as the README lists them: each exists, and
    every option of examples/demo_server.py is listed (but --help)."""
    import argparse
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "examples" / "demo_server.py"
    spec = importlib.util.spec_from_file_location("demo_server_for_docs", path)
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    parser: argparse.ArgumentParser | None = None

    def keep(self: argparse.ArgumentParser, args: object = None, namespace: object = None) -> None:
        nonlocal parser
        parser = self
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", keep)
    with pytest.raises(SystemExit):
        demo._parse_args([])
    assert parser is not None
    options = {
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--")
    } - {"--help"}
    paragraph = README.split("`./dev demo` runs `examples/demo_server.py`", 1)[1].split("\n\n")[0]
    listed = set(re.findall(r"`(--[a-z-]+)", paragraph))
    assert listed == options


@pytest.mark.compiled_and_python_alike
def test_benchmark_commands_in_the_docs_exist_with_their_flags() -> None:
    """Each `python bench/X.py --flag ...` that bench/README.md or the README
    shows names a script of bench/ and options its parser defines (in the
    script or a bench module it imports), and each `loadgen.NAME`,
    `LoadGen.NAME` or `Peer.NAME` it names is in bench/loadgen.py."""
    root = Path(__file__).resolve().parent.parent
    bench = root / "bench"
    text = README + (bench / "README.md").read_text()
    commands = re.findall(r"python bench/(\w+)\.py([^`\n#|]*)", text)
    assert len(commands) > 15

    def sources(script: str) -> str:
        source = (bench / f"{script}.py").read_text()
        tree = ast.parse(source)
        imported = {
            name
            for node in ast.walk(tree)
            for name in (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
        }
        return source + "".join(
            (bench / f"{name}.py").read_text()
            for name in imported
            if (bench / f"{name}.py").is_file()
        )

    for script, arguments in commands:
        assert (bench / f"{script}.py").is_file(), f"no bench/{script}.py"
        known = sources(script)
        for flag in re.findall(r"(--[a-z][a-z0-9-]*)", arguments):
            assert f'"{flag}"' in known, f"bench/{script}.py has no {flag} option"
    loadgen = ast.parse((bench / "loadgen.py").read_text())
    top = {getattr(node, "name", None) for node in loadgen.body}
    methods = {
        (node.name, item.name)
        for node in loadgen.body
        if isinstance(node, ast.ClassDef)
        for item in node.body
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    for name in set(re.findall(r"`loadgen\.(\w+)`", text)) - {"py"}:
        assert name in top, f"bench/README names loadgen.{name}, which is not in loadgen.py"
    for owner, name in re.findall(r"`(LoadGen|Peer)\.(\w+)", text):
        assert (owner, name) in methods, f"bench/README names {owner}.{name}, not in loadgen.py"


ROOT = Path(__file__).resolve().parent.parent


def layout_table() -> list[str]:
    """The file names of the README's Layout table's first column, as paths under sfu/
    (a bare name after one with a folder is in that folder)."""
    section = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    paths = []
    for row in re.findall(r"^\| (`.*?) \|", section, re.M):
        folder = ""
        for name in re.findall(r"`([^`]+)`", row):
            if "/" in name:
                folder = name.rpartition("/")[0] + "/"
                paths.append(name)
            else:
                paths.append(folder + name)
    return paths


@pytest.mark.compiled_and_python_alike
def test_the_readme_layout_lists_every_module_and_only_those() -> None:
    """A module split, renamed or removed without the Layout table following fails here."""
    package = ROOT / "sfu"
    listed = layout_table()
    assert len(listed) > 40
    missing = [path for path in listed if not (package / path).is_file()]
    assert not missing, f"the README's Layout names modules that do not exist: {missing}"
    modules = {
        str(path.relative_to(package))
        for path in [*package.rglob("*.py"), *package.rglob("*.pyx")]
        if "build" not in path.relative_to(package).parts
        and not (path.name == "__init__.py" and path.parent != package)
    }
    assert modules <= set(listed), (
        f"modules the README's Layout leaves out: {sorted(modules - set(listed))}"
    )


def descriptive_docs() -> dict[str, str]:
    """The Markdown that describes the code as it is now: not bench/README.md's
    dated session records, which describe the code of their time."""
    bench = (ROOT / "bench" / "README.md").read_text()
    now = bench.split("## Results, session by session", 1)[0] + bench.split("## Commands", 1)[1]
    texts = {"README.md": README, "bench/README.md": now}
    for path in [*(ROOT / "docs").glob("*.md"), ROOT / "bench" / "DETECTOR.md"]:
        texts[str(path.relative_to(ROOT))] = path.read_text()
    return texts


@pytest.mark.compiled_and_python_alike
def test_files_and_dotted_names_the_docs_name_exist() -> None:
    """Every `sfu/...`, `tests/...`, `examples/...` or `bench/...` file and every
    `sfu.module.NAME` that the descriptive docs name is there."""
    checked = 0
    for doc, text in descriptive_docs().items():
        for path in re.findall(r"(?<![\w/.-])((?:sfu|tests|examples|bench|docs)/[\w/.-]*\w)", text):
            if "." in path.rpartition("/")[2]:
                checked += 1
                assert (ROOT / path).exists() or (ROOT / "bench" / path).exists(), (
                    f"{doc} names {path}, which does not exist"
                )
        for dotted in set(re.findall(r"`(sfu(?:\.[A-Za-z_]\w*)+)", text)) - {"sfu.js"}:
            checked += 1
            assert _named(dotted) is not _MISSING, f"{doc} names {dotted}, which does not exist"
    assert checked > 30


_ROLE = re.compile(
    r":(?:mod|func|class|meth|data|attr|exc|obj):`(?:[^`<]*<)?~?\.?([\w.]+?)(?:\(\))?>?`"
)


_MISSING = object()


def _named(dotted: str) -> object:
    """What ``dotted`` names: its longest importable prefix, then attributes;
    ``_MISSING`` when there is none."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value: object = importlib.import_module(".".join(parts[:cut]))
        except (ImportError, TypeError, ValueError):
            continue
        for attribute in parts[cut:]:
            if not hasattr(value, attribute):
                return _MISSING
            value = getattr(value, attribute)
        return value
    return _MISSING


def _resolves(dotted: str) -> bool:
    """``dotted`` names a module, or an attribute of one (an instance attribute
    counts when its class assigns ``self.<name>``)."""
    if _named(dotted) is not _MISSING:
        return True
    owner, _, attribute = dotted.rpartition(".")
    cls = _named(owner) if owner else _MISSING
    if not isinstance(cls, type):
        return False
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return False
    return re.search(rf"self\.{attribute}\b\s*(?::[^=\n]*)?=", source) is not None


@pytest.mark.compiled_and_python_alike
def test_every_sphinx_reference_in_the_package_resolves() -> None:
    """Each :mod:/:class:/:func:/:meth:/:data:/:attr: reference in sfu's
    docstrings names something that exists: absolute, or relative to its
    module, its class, its package, or (in a .pyx) its Python twin. A name
    moved to another module while a docstring still points at the old place
    fails here."""
    package = ROOT / "sfu"
    unresolved = []
    checked = 0
    for path in sorted([*package.rglob("*.py"), *package.rglob("*.pyx")]):
        relative = path.relative_to(ROOT)
        if "build" in relative.parts:
            continue
        module = ".".join(relative.with_suffix("").parts)
        module = module.removesuffix(".__init__")
        text = path.read_text()
        scopes = [module, module.rpartition(".")[0]]
        if path.suffix == ".pyx":
            scopes.insert(0, module + "_py")
        classes: list[tuple[int, int, str]] = []
        if path.suffix == ".py":
            classes = [
                (node.lineno, node.end_lineno or node.lineno, node.name)
                for node in ast.walk(ast.parse(text))
                if isinstance(node, ast.ClassDef)
            ]
        else:
            starts = [
                (text[: m.start()].count("\n") + 1, m.group(1))
                for m in re.finditer(r"^(?:cdef )?class (\w+)", text, re.M)
            ]
            classes = [
                (line, (starts[i + 1][0] if i + 1 < len(starts) else 10**9), name)
                for i, (line, name) in enumerate(starts)
            ]
        for match in _ROLE.finditer(text):
            checked += 1
            name = match.group(1)
            line = text[: match.start()].count("\n") + 1
            owners = [
                f"{scope}.{cls}"
                for start, end, cls in classes
                if start <= line <= end
                for scope in scopes
            ]
            candidates = [name, *(f"{scope}.{name}" for scope in [*owners, *scopes])]
            if not any(_resolves(candidate) for candidate in candidates):
                unresolved.append(f"{relative}:{line}: {match.group(0)}")
    assert checked > 200
    assert not unresolved, "references that name nothing:\n" + "\n".join(unresolved)


def documented_drop_reasons() -> set[str]:
    """The reasons in the first column of the README's table of `sfu_drops_total`."""
    table = README.split("The reasons of `sfu_drops_total`", 1)[1].split("\n\n", 2)[1]
    reasons: set[str] = set()
    for row in table.splitlines()[2:]:
        reasons.update(re.findall(r"`([^`]+)`", row.split(" | ", 1)[0]))
    return reasons


@pytest.mark.compiled_and_python_alike
def test_every_drop_reason_counted_is_in_the_readme() -> None:
    """Each reason the code counts in ``server.drops`` (an f-string's fields
    stand for any value) or the collector adds is a row of the README's table,
    and the table names no reason the code no longer counts."""
    package = Path(sfu.__file__).parent
    documented = documented_drop_reasons()
    counted: list[str] = []
    for path in sorted(package.rglob("*.py")):
        source = path.read_text()
        counted += re.findall(r'drops\[(f?"[^"]+")\]', source)
        if path.name == "metrics.py":
            counted += re.findall(r'drops\.add_metric\(\[("[^"]+")\]', source)
    assert len(counted) > 20, counted
    patterns = [
        re.compile(re.sub(r"\\\{\w+\\\}", ".+", re.escape(ast.literal_eval(text.lstrip("f")))))
        for text in counted
    ]
    for text, pattern in zip(counted, patterns, strict=True):
        assert any(pattern.fullmatch(reason) for reason in documented), (
            f"drop reason {text} is not in the README's table"
        )
    for reason in documented:
        assert any(pattern.fullmatch(reason) for pattern in patterns), (
            f"the README lists {reason!r}, which nothing counts"
        )


@pytest.mark.compiled_and_python_alike
def test_every_public_call_says_what_it_raises() -> None:
    """``help()`` of each public method of Server, Room, Participant and
    EventStream, and of each function of ``sfu.auth``, names what it raises
    (an exception's name after "raise"/"Raises"), or says that it never
    raises: a caller reads there which errors to handle."""
    import sfu.auth

    says = re.compile(r"\b(?:[Rr]aises?|[Nn]ever raises)\b")
    owners: list[object] = [sfu.Server, sfu.Room, sfu.Participant, sfu.EventStream]
    silent = []
    for owner in owners:
        assert isinstance(owner, type)
        for name, value in vars(owner).items():
            if name.startswith("_") or not inspect.isfunction(value):
                continue
            if name.startswith("session_"):  # the Session's callbacks, not the user's
                continue
            if not says.search(inspect.getdoc(value) or ""):
                silent.append(f"{owner.__name__}.{name}")
    for name in sfu.auth.__all__:
        value = getattr(sfu.auth, name)
        if inspect.isfunction(value) and not says.search(inspect.getdoc(value) or ""):
            silent.append(f"sfu.auth.{name}")
    assert not silent, f"public calls whose docstring does not say what they raise: {silent}"


def test_the_figures_and_codes_docs_signaling_quotes_are_the_codes() -> None:
    """docs/signaling.md, the protocol's reference for client authors: every
    error code the signaling can send is listed there, and each limit it
    quotes is the constant's, so a change on either side fails here."""
    from sfu.signaling import messages, protocol

    text = (Path(__file__).resolve().parent.parent / "docs" / "signaling.md").read_text()
    flat = " ".join(text.split())
    sources = Path(protocol.__file__).read_text() + Path(messages.__file__).read_text()
    sent = set(re.findall(r'(?:_error|ProtocolError|error_message)\(\s*"([a-z_]+)"', sources))
    sent |= {code for _kind, code in messages._ERROR_CODES}
    assert {"rate_limited", "bad_message", "session_ended", "room_full"} <= sent  # the scan works
    assert [code for code in sorted(sent) if f"`{code}`" not in flat] == []
    quoted = [
        f"Messages larger than {messages.MAX_MESSAGE // 1024} KiB",
        f"more than {protocol.COMMAND_BURST} commands that every member",
        f"or {protocol.COMMAND_RATE:g} per second after it",
        f"more than {protocol.FRAME_BURST} messages of any kind in a burst, or "
        f"{protocol.FRAME_RATE:g} per second after it, on one connection",
        f"refused {protocol.FRAME_BURST} more before it has been quiet for two seconds is "
        f"closed with {protocol.CLOSE_FLOOD}",
        f"has waited {protocol.SEND_TIMEOUT:g} s to be sent",
        f"has not joined {protocol.JOIN_DEADLINE:g} s after it opened is closed with "
        f"{protocol.CLOSE_NO_JOIN}",
        f"({protocol.COMMAND_BURST} commands, then {protocol.COMMAND_RATE:g} a second)",
        f"(a burst of {protocol.FRAME_BURST}, then {protocol.FRAME_RATE:g} a second)",
    ]
    assert [q for q in quoted if q not in flat] == []
    for code in (
        protocol.CLOSE_REMOVED,
        protocol.CLOSE_ROOM_CLOSED,
        protocol.CLOSE_SESSION_ENDED,
        protocol.CLOSE_REPLACED,
        protocol.CLOSE_INTERNAL_ERROR,
        protocol.CLOSE_GOING_AWAY,
    ):
        assert str(code) in flat, code
