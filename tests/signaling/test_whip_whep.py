"""WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep) conformance of the aiohttp
endpoints, over real HTTP on 127.0.0.1: what each method on the endpoint and
on the session URL answers, with which headers."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

import sfu
from sfu import auth
from sfu.signaling.aiohttp import add_whip_whep

from ..sites import start_site
from ..test_room_lifecycle import offer

SECRET = secrets.token_urlsafe(32)
PUBLISHER_OFFER = offer("sendonly")
PLAYER_OFFER = offer("recvonly")
KINDS = pytest.mark.parametrize("kind", ["whip", "whep"])


@dataclass
class Site:
    server: sfu.Server
    base: str
    http: aiohttp.ClientSession

    def headers(self, identity: str, role: str = "speaker", room: str = "hall") -> dict[str, str]:
        token = auth.issue_token(SECRET, room=room, identity=identity, role=role)  # type: ignore[arg-type]
        return {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}

    async def session(self, kind: str, identity: str) -> str:
        """POST an offer; the session's URL (its Location, made absolute)."""
        body = PUBLISHER_OFFER if kind == "whip" else PLAYER_OFFER
        async with self.http.post(
            f"{self.base}/rooms/hall/{kind}", data=body, headers=self.headers(identity)
        ) as r:
            assert r.status == 201, await r.text()
            return str(r.url.join(aiohttp.client.URL(r.headers["Location"])))


@pytest_asyncio.fixture
async def site() -> AsyncIterator[Site]:
    async with sfu.Server(token_secret=SECRET, host="127.0.0.1") as server:
        app = web.Application()
        add_whip_whep(app, server)
        runner, port = await start_site(app)
        try:
            async with aiohttp.ClientSession() as http:
                yield Site(server, f"http://127.0.0.1:{port}", http)
        finally:
            await runner.cleanup()


@KINDS
async def test_patch_is_501_not_implemented(site: Site, kind: str) -> None:
    """RFC 9725 §4.3.1: a session that supports neither trickle ICE nor ICE
    restarts (sfu is ICE-lite, its one candidate is in the answer) answers
    every PATCH 501; and the session goes on."""
    url = await site.session(kind, f"{kind}-patcher")
    for fragment, if_match in (
        ("a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n", '"xyzzy"'),  # trickle
        ("a=ice-ufrag:ysXw\r\na=ice-pwd:vw5LmwG4y/e6dPP/zAP9Gp5k\r\n", "*"),  # restart
    ):
        headers = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": if_match}
        async with site.http.patch(url, data=fragment, headers=headers) as r:
            assert r.status == 501, await r.text()
            assert "ICE-lite" in await r.text()
    assert not site.server.rooms["hall"][f"{kind}-patcher"].closed
    async with site.http.delete(url) as r:
        assert r.status == 200
