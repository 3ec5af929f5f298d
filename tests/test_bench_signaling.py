"""Smoke test of the load generator's joins over the product's signaling WebSocket.

``join_storm.py --signaling websocket``: listeners open WebSockets to
``bench/serve.py``'s ``/ws`` (``sfu.signaling``) first, then join over them
with a token; the answer comes in the ``joined`` reply. 20 listeners and one
synthetic speaker (which joins through ``POST /offer``) over loopback: every
listener must get exactly the packets the speaker sent, and each must have
joined over its own socket, kept open. Also the hand-written WebSocket
client (``bench/ws_client.py``) alone against an aiohttp server: frames of
7, 16 and 64-bit lengths, deflated or not, its own frames read by aiohttp,
ping and close.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import random
import subprocess
import sys
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from .sites import start_site

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)

# The benchmarks are this repository's own code: a missing or broken one
# fails here, it is not skipped.
harness = importlib.import_module("harness")
loadgen = importlib.import_module("loadgen")  # builds bench/_sink on first import
ws_client = importlib.import_module("ws_client")

pytestmark = pytest.mark.allow_leftover_tasks  # asyncio subprocess transports close lazily

LISTENERS = 20


def compact(message: dict[str, object]) -> str:
    return json.dumps(message, separators=(",", ":"))


@pytest.mark.parametrize("deflate", [True, False])
async def test_websocket_client_against_aiohttp(deflate: bool) -> None:
    """Messages of 10 B, 300 B and 200 KB (7, 16 and 64-bit lengths, deflated
    or not) arrive whole; aiohttp reads the client's masked (and compressed)
    request; a ping is answered with its payload; the server's close code is kept."""
    blob = random.Random(1).randbytes(100_000).hex()  # 200 KB that deflates to > 64 KiB
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        seen["extension"] = request.headers.get("Sec-WebSocket-Extensions")
        request_message = json.loads((await ws.receive()).data)
        # Compact, as the server's frames: counted by type without parsing.
        for size in (10, 300, len(blob)):
            await ws.send_str(compact({"type": "blob", "data": blob[:size]}))
        await ws.send_str(
            compact({"type": "echo", "id": request_message["id"], "got": request_message})
        )
        await ws.ping(b"still there?")
        pong = await ws.receive()
        seen["pong"] = (pong.type, bytes(pong.data))
        await ws.close(code=4003, message=b"session ended")
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner, port = await start_site(app)
    try:
        client = await ws_client.WebSocketClient.open(port, "/ws", deflate=deflate, timeout=5)
        assert client.deflate is deflate
        text = "é" * 5000
        reply = await asyncio.wait_for(client.send_request({"type": "hello", "text": text}), 5)
        await asyncio.wait_for(client.lost, 5)
    finally:
        await runner.cleanup()
    assert reply["type"] == "echo" and reply["got"]["text"] == text
    assert seen["pong"] == (WSMsgType.PONG, b"still there?")
    assert ("permessage-deflate" in str(seen["extension"])) is deflate
    assert client.types == {"blob": 3, "echo": 1}
    assert client.frames == 6  # 4 messages, the ping, the close
    assert client.close_code == 4003 and client.closed_by_server
    assert client.failure == ""
    inflated = client.message_bytes
    assert inflated > len(blob) + 300
    # Deflated, the hex travels in fewer bytes than it has; plain, in more (headers).
    assert (client.wire_bytes < inflated * 0.7) if deflate else (client.wire_bytes > inflated)


@pytest.mark.parametrize("deflate", [True, False])
async def test_listeners_join_over_the_signaling_websocket(deflate: bool) -> None:
    """The listeners offer permessage-deflate, as browsers do; the server agrees
    only when told to (sfu.signaling's default declines it)."""
    extra = ["--signaling-compress"] if deflate else []
    async with harness.ServerProcess(cpu=None, max_seconds=120, extra=extra) as server:
        async with loadgen.LoadGen(
            server.control, capacity=32, sample_every=4, join_timeout=20
        ) as gen:
            await gen.add_speaker()
            await gen.open_signaling_connections(
                LISTENERS,
                server.info["token_secret"],
                path=server.info["signaling"],
                deflate=True,
                concurrency=8,
            )
            before = await gen.server_stats()
            joins = await gen.add_listeners(LISTENERS)
            assert joins["joined"] == LISTENERS, joins
            window = await gen.measure(2.0)
            stats = await gen.server_stats()
            received = ws_client.received_summary([p.signaling for p in gen.listeners])
            clients = [peer.signaling for peer in gen.listeners]
            open_during = [not client.closed for client in clients]
            sink = gen.sink
            for peer in gen.listeners:
                # The join's clock: frame written, answer read, DTLS done, audio.
                assert 0 < peer.offer_ns < peer.answer_ns < peer.connected_ns
                assert sink.first_ns[peer.index] > peer.offer_ns
        # Closed by the load generator at the end, not before.
        assert all(client.closed and not client.closed_by_server for client in clients)

    assert window.expected >= 80  # 50 packets/s for 2 s, give or take the loop
    # Exact counts: every listener got every packet the speaker sent, once.
    assert (window.received == window.expected).all(), window.received
    # The listeners joined over the WebSocket, not POST /offer (the speaker did).
    assert before["signaling_sessions"] == LISTENERS and before["offers"] == 1
    assert stats["offers"] == 1 and stats["offer_errors"] == 0
    assert stats["signaling_sessions"] == LISTENERS
    room = stats["rooms"]["bench"]
    assert room["members"] == room["connected"] == LISTENERS + 1
    # Each on its own socket, open for its life, with its joined reply.
    assert len({id(client) for client in clients}) == LISTENERS and all(open_during)
    assert all(client.types["joined"] == 1 for client in clients)
    assert all(client.deflate is deflate for client in clients)
    assert received["connections"] == LISTENERS
    assert received["closed_by_server"] == 0 and received["failures"] == []
    assert received["messages_per_listener_by_type"]["joined"] == 1.0
    # The roster of the room reached the members in batches (at least the first
    # joiners heard of the later ones), and the replies name every member.
    assert received["messages_per_listener_by_type"].get("roster", 0) > 0
    assert received["joined_reply_bytes"]["max"] > received["joined_reply_bytes"]["p50"] > 0
    wire, inflated = (
        received["wire_bytes_per_listener"]["mean"],
        received["message_bytes_per_listener"]["mean"],
    )
    assert (wire < inflated) if deflate else (wire > inflated)


#: A short idle_cost run: 12 listeners, each holding its signaling WebSocket.
IDLE_OVER_WEBSOCKET = (
    "--listeners 12 --seconds 1 --baseline-seconds 0.5 --settle 0.5 --signaling websocket"
)


def test_idle_cost_over_the_signaling_websocket(tmp_path: Any) -> None:
    """``idle_cost.py --signaling websocket``: every listener joined over a
    WebSocket of its own, still open through the idle window, and the
    result says so beside its per-listener figures."""
    results = tmp_path / "results"
    completed = subprocess.run(
        [sys.executable, os.path.join(BENCH, "idle_cost.py"), *IDLE_OVER_WEBSOCKET.split()],
        env={**os.environ, "SFU_BENCH_RESULTS": str(results)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    (written,) = results.glob("idle_cost-*.json")
    result = json.loads(written.read_text())
    assert result["signaling"] == "websocket" and result["listeners"] == 12
    assert result["baseline"]["signaling_sessions"] == 0
    assert result["loaded"]["signaling_sessions"] == 12
    assert result["bytes_per_listener"] > 0
