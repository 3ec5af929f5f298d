"""Embed an audio room in a plain aiohttp app: POST an offer, get an answer.

Run it, open http://127.0.0.1:8080/ in two browser tabs, press "Speak" in
one and "Listen" in the other::

    python examples/aiohttp_app.py --host 127.0.0.1 --port 8080

The whole signaling is two HTTP calls: ``POST /rooms/{room}/{speaker|listener}``
with ``{"identity": ..., "sdp": <offer>}`` returns ``{"sdp": <answer>,
"leave": <url>}``, and ``DELETE <url>`` leaves (the URL is unguessable, so
only the one who joined can end that session). Everything media goes
through the one UDP port of :class:`sfu.Server`. There is no
authentication here: put this behind your login, or use join tokens
(``sfu.auth``) as the demo server does.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
from pathlib import Path

from aiohttp import web

import sfu
from sfu.transport.port import format_address

PAGE = Path(__file__).with_name("aiohttp_app.html")
ROOM_IDLE_SECONDS = 60.0
SERVER_KEY = web.AppKey("server", sfu.Server)
SESSIONS_KEY = web.AppKey("sessions", dict)  # leave-URL secret -> participant


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE)


async def join(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    role = request.match_info["role"]
    if role not in ("speaker", "listener"):
        raise web.HTTPNotFound(text="role must be speaker or listener")
    try:
        body = await request.json()
        identity, offer = body["identity"], body["sdp"]
        if not isinstance(identity, str) or not isinstance(offer, str):
            raise TypeError
    # RecursionError: nested too deep; LookupError: an unknown charset.
    except (ValueError, KeyError, TypeError, RecursionError, LookupError):
        raise web.HTTPBadRequest(
            text='send JSON {"identity": "<name>", "sdp": "<offer>"}'
        ) from None
    try:
        # A room is made by naming it; it goes once nobody has been in it for
        # a minute, so neither refused joins nor finished rooms pile up.
        room = server.room(request.match_info["room"], close_when_empty=ROOM_IDLE_SECONDS)
        if role == "speaker":
            participant: sfu.Participant = await room.add_speaker(offer, identity=identity)
        else:
            participant = await room.add_listener(offer, identity=identity)
    except (sfu.InvalidOffer, sfu.InvalidSetting) as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    except (sfu.DuplicateIdentity, sfu.RoomFull) as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    except sfu.RoomClosed as exc:
        raise web.HTTPNotFound(text=str(exc)) from None
    sessions = request.app[SESSIONS_KEY]
    for key in [key for key, held in sessions.items() if held.closed]:
        del sessions[key]  # sessions that ended without a DELETE
    key = secrets.token_urlsafe(16)
    sessions[key] = participant
    return web.json_response({"sdp": participant.answer, "leave": f"/sessions/{key}"})


async def leave(request: web.Request) -> web.Response:
    participant = request.app[SESSIONS_KEY].pop(request.match_info["key"], None)
    if participant is None:
        raise web.HTTPNotFound(text="no such session")
    await participant.close("left")
    return web.Response(status=204)


def make_app(server: sfu.Server) -> web.Application:
    app = web.Application()
    app[SERVER_KEY] = server
    app[SESSIONS_KEY] = {}
    app.router.add_get("/", index)
    app.router.add_post("/rooms/{room}/{role}", join)
    app.router.add_delete("/sessions/{key}", leave)
    return app


def port_number(text: str) -> int:
    """--port: 0 (any free one) to 65535."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0..65535, got {text!r}")
    return int(text)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8080, help="HTTP port (default 8080)")
    parser.add_argument(
        "--udp-port", type=int, default=0, help="media UDP port (default: any free one)"
    )
    parser.add_argument(
        "--announce",
        action="append",
        default=None,
        help="address put in SDP answers (default: --host); twice, IPv6 and IPv4, with --host ::",
    )
    args = parser.parse_args()
    if args.host in ("0.0.0.0", "::") and not args.announce:
        parser.error(f"--host {args.host} needs --announce ADDRESS (the address clients reach)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        server = await sfu.Server(args.host, args.udp_port, announce=args.announce).start()
    except (sfu.InvalidSetting, OSError) as exc:  # (a port in use, an address not here...)
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    async with server:  # (started: closed on the way out)
        runner = web.AppRunner(make_app(server))
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        try:
            await site.start()
        except OSError as exc:  # the HTTP port in use, or the address not this host's
            await runner.cleanup()
            parser.exit(2, f"{parser.prog}: error: {exc}\n")
        port = runner.addresses[0][1]  # the one bound (--port 0 picks one)
        print(
            f"open http://{format_address((args.host, port))}/  "
            f"(media on udp {' and '.join(format_address((a, server.port)) for a in server.announce_addresses)})",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)  # a clean close, whichever way it ends
        try:
            await stop.wait()
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
