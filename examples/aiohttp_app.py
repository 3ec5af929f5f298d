"""Embed an audio room in a plain aiohttp app: POST an offer, get an answer.

Run it, open http://127.0.0.1:8080/ in two browser tabs, press "Speak" in
one and "Listen" in the other::

    python examples/aiohttp_app.py --host 127.0.0.1 --port 8080

The whole signaling is two HTTP calls: ``POST /rooms/{room}/{speaker|listener}``
with ``{"identity": ..., "sdp": <offer>}`` returns ``{"sdp": <answer>}``, and
``DELETE /rooms/{room}/{identity}`` leaves. Everything media goes through
the one UDP port of :class:`sfu.Server`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from aiohttp import web

import sfu

PAGE = Path(__file__).with_name("aiohttp_app.html")
SERVER_KEY = web.AppKey("server", sfu.Server)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE)


async def join(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    role = request.match_info["role"]
    if role not in ("speaker", "listener"):
        raise web.HTTPNotFound(text="role must be speaker or listener")
    try:
        body = await request.json()
        identity, offer = str(body["identity"]), str(body["sdp"])
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text='send JSON {"identity": ..., "sdp": ...}') from None
    room = server.room(request.match_info["room"])
    try:
        if role == "speaker":
            participant: sfu.Participant = await room.add_speaker(offer, identity=identity)
        else:
            participant = await room.add_listener(offer, identity=identity)
    except sfu.InvalidOffer as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    except sfu.DuplicateIdentity as exc:
        raise web.HTTPConflict(text=str(exc)) from None
    return web.json_response({"sdp": participant.answer})


async def leave(request: web.Request) -> web.Response:
    room = request.app[SERVER_KEY].rooms.get(request.match_info["room"])
    participant = room.get(request.match_info["identity"]) if room else None
    if participant is None:
        raise web.HTTPNotFound(text="no such participant")
    await participant.close("left")
    return web.Response(status=204)


def make_app(server: sfu.Server) -> web.Application:
    app = web.Application()
    app[SERVER_KEY] = server
    app.router.add_get("/", index)
    app.router.add_post("/rooms/{room}/{role}", join)
    app.router.add_delete("/rooms/{room}/{identity}", leave)
    return app


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    parser.add_argument(
        "--udp-port", type=int, default=0, help="media UDP port (default: any free one)"
    )
    parser.add_argument(
        "--announce", default=None, help="address put in SDP answers (default: --host)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    async with sfu.Server(args.host, args.udp_port, announce=args.announce) as server:
        runner = web.AppRunner(make_app(server))
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        print(
            f"open http://{args.host}:{args.port}/  (media on udp {args.host}:{server.port})",
            flush=True,
        )
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
