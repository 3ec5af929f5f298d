"""WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep) conformance of the aiohttp
endpoints, over real HTTP on 127.0.0.1: what each method on the endpoint and
on the session URL answers, with which headers."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import jwt
import pytest
import pytest_asyncio
from aiohttp import web

import sfu
from sfu import auth
from sfu.signaling.aiohttp import MAX_OFFER_SIZE, _Cors, add_whip_whep

from ..sites import start_site
from ..test_operator_logs import messages
from ..test_room_lifecycle import LISTENER, offer

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


BROWSER_PAGE = "https://app.example"


@KINDS
async def test_options_on_the_endpoint_says_what_to_post_and_answers_a_preflight(
    site: Site, kind: str
) -> None:
    """RFC 9725 §4.2: the endpoint supports OPTIONS for CORS, its 200 with
    ``Accept-Post: application/sdp``; a browser page of another origin is let
    POST its offer with a Bearer token, and read the Location it gets."""
    endpoint = f"{site.base}/rooms/hall/{kind}"
    async with site.http.options(endpoint) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Accept-Post"] == "application/sdp"
        assert set(r.headers["Allow"].replace(" ", "").split(",")) == {"OPTIONS", "POST"}
    preflight = {
        "Origin": BROWSER_PAGE,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with site.http.options(endpoint, headers=preflight) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type"} <= allowed
        assert "Access-Control-Allow-Credentials" not in r.headers
    body = PUBLISHER_OFFER if kind == "whip" else PLAYER_OFFER
    headers = {**site.headers(f"{kind}-page"), "Origin": BROWSER_PAGE}
    async with site.http.post(endpoint, data=body, headers=headers) as r:
        assert r.status == 201
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "location" in r.headers["Access-Control-Expose-Headers"].lower()
        session = str(r.url.join(aiohttp.client.URL(r.headers["Location"])))
    # Refusals are readable too (the page can say why).
    async with site.http.post(endpoint, data=body, headers={"Origin": BROWSER_PAGE}) as r:
        assert r.status == 415 and r.headers["Access-Control-Allow-Origin"] == "*"
    # The session: a preflight for its DELETE, then the DELETE.
    delete_preflight = {**preflight, "Access-Control-Request-Method": "DELETE"}
    async with site.http.options(session, headers=delete_preflight) as r:
        assert r.status == 200
        assert "DELETE" in r.headers["Access-Control-Allow-Methods"]
        assert set(r.headers["Allow"].replace(" ", "").split(",")) == {"OPTIONS", "PATCH", "DELETE"}
    async with site.http.delete(session, headers={"Origin": BROWSER_PAGE}) as r:
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "*"


async def test_the_app_s_own_routes_of_the_same_paths_still_answer() -> None:
    """The endpoints take only their methods: a route the app adds for
    another method on the same path afterwards (a player page at the WHEP
    URL) still answers, and a method nobody serves is aiohttp's 405."""

    async def page(request: web.Request) -> web.StreamResponse:
        return web.Response(text="a player page")

    async with sfu.Server(host="127.0.0.1") as server:
        app = web.Application()
        add_whip_whep(app, server)
        app.router.add_get("/rooms/{room}/whep", page)
        runner, port = await start_site(app)
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/rooms/hall/whep") as r:
                    assert r.status == 200 and await r.text() == "a player page"
                async with http.put(f"http://127.0.0.1:{port}/rooms/hall/whip") as r:
                    assert r.status == 405
        finally:
            await runner.cleanup()


async def test_an_answer_raised_or_a_failed_handler_carries_the_cors_headers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The wrapper every WHIP/WHEP handler runs in: an answer raised
    (aiohttp's HTTPException) keeps its status and gains the CORS headers; a
    handler that fails is logged with its traceback and answered 500, with
    them too, so a page of another origin reads a status, not a network error."""

    async def raises_answer(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTooManyRequests(text="slow down")

    async def fails(request: web.Request) -> web.StreamResponse:
        raise RuntimeError("a bug in a handler")

    cors = _Cors("*")
    app = web.Application()
    app.router.add_post("/answer", cors.wrap(raises_answer))
    app.router.add_post("/bug", cors.wrap(fails))
    runner, port = await start_site(app)
    try:
        async with aiohttp.ClientSession() as http:
            base, origin = f"http://127.0.0.1:{port}", {"Origin": BROWSER_PAGE}
            async with http.post(f"{base}/answer", headers=origin) as r:
                assert r.status == 429 and await r.text() == "slow down"
                assert r.headers["Access-Control-Allow-Origin"] == "*"
            with caplog.at_level(logging.ERROR, logger="sfu.signaling.aiohttp"):
                async with http.post(f"{base}/bug", headers=origin) as r:
                    assert r.status == 500
                    assert r.headers["Access-Control-Allow-Origin"] == "*"
                    assert "a bug in a handler" not in await r.text()  # details stay in the log
            failed = [rec for rec in caplog.records if rec.name == "sfu.signaling.aiohttp"]
            assert len(failed) == 1 and "/bug" in failed[0].getMessage()
            assert failed[0].exc_info is not None and "a bug in a handler" in str(
                failed[0].exc_info[1]
            )
    finally:
        await runner.cleanup()


async def test_cors_origins_lets_in_only_the_origins_named() -> None:
    async with sfu.Server(host="127.0.0.1") as server:
        app = web.Application()
        add_whip_whep(app, server, cors_origins={BROWSER_PAGE})
        runner, port = await start_site(app)
        endpoint = f"http://127.0.0.1:{port}/rooms/hall/whep"
        try:
            async with aiohttp.ClientSession() as http:
                for origin, allowed in ((BROWSER_PAGE, True), ("https://evil.example", False)):
                    headers = {"Origin": origin, "Access-Control-Request-Method": "POST"}
                    async with http.options(endpoint, headers=headers) as r:
                        assert r.status == 200  # what the URL takes is no secret
                        assert "Origin" in r.headers.getall("Vary", [])
                        if allowed:
                            assert r.headers["Access-Control-Allow-Origin"] == origin
                        else:
                            assert "Access-Control-Allow-Origin" not in r.headers
                            assert "Access-Control-Allow-Methods" not in r.headers
        finally:
            await runner.cleanup()
        for wrong in (["https://app.example/"], "everyone", 5, [["https://app.example"]], [5]):
            with pytest.raises(sfu.errors.InvalidSetting, match="cors_origins"):
                add_whip_whep(web.Application(), server, cors_origins=wrong)  # type: ignore[arg-type]
        # Origins no browser's Origin header can equal: taken, they never
        # matched, and the page's WHIP POST failed with nothing on the server.
        for written, sent in (
            ("https://app.example:443", "https://app.example"),
            ("https://App.Example", "https://app.example"),
            ("app.example", None),
            ("https://app.example/x", None),
        ):
            with pytest.raises(sfu.errors.InvalidSetting, match="cors_origins") as refused:
                add_whip_whep(web.Application(), server, cors_origins={written})
            if sent:
                assert f"a browser sends {sent!r}" in str(refused.value)
        add_whip_whep(web.Application(), server, cors_origins={"http://[::1]:8080"})
        for named in ("*", "null"):
            with pytest.raises(sfu.errors.InvalidSetting, match='cors_origins="\\*" lets every'):
                add_whip_whep(web.Application(), server, cors_origins=[named])


async def test_the_location_is_right_when_the_endpoints_are_in_a_sub_application() -> None:
    """Mounted in an aiohttp sub-application (``app.add_subapp("/sfu/", sub)``),
    the endpoints are under /sfu/: the Location must be too, or the client's
    DELETE goes to a URL nobody serves and the session stays."""
    async with sfu.Server(host="127.0.0.1") as server:
        sub = web.Application()
        add_whip_whep(sub, server)
        app = web.Application()
        app.add_subapp("/sfu/", sub)
        runner, port = await start_site(app)
        try:
            async with aiohttp.ClientSession() as http:
                for name, escaped in (("a b", "a%20b"), ("a/b", "a%2Fb")):
                    async with http.post(
                        f"http://127.0.0.1:{port}/sfu/rooms/{escaped}/whep",
                        data=PLAYER_OFFER,
                        headers={"Content-Type": "application/sdp"},
                    ) as r:
                        assert r.status == 201, await r.text()
                        location = r.headers["Location"]
                    assert location.startswith(f"/sfu/rooms/{escaped}/whep/"), location
                    assert server.rooms[name].participants
                    url = aiohttp.client.URL(f"http://127.0.0.1:{port}{location}", encoded=True)
                    async with http.delete(url) as r:
                        assert r.status == 200
                    assert not server.rooms[name].participants
        finally:
            await runner.cleanup()


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_offer_too_large_is_413_however_it_is_sent(site: Site, chunked: bool) -> None:
    """An offer past 64 KiB is 413 Content Too Large, with or without a
    Content-Length (a chunked body was read whole, then refused 400)."""
    body = PLAYER_OFFER.encode() + b"a=x-padding:" + b"y" * (70 * 1024) + b"\r\n"

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    async with site.http.post(
        f"{site.base}/rooms/hall/whep",
        data=pieces() if chunked else body,
        headers=site.headers("big", "listener"),
    ) as r:
        assert r.status == 413, await r.text()
        assert "64 KiB" in await r.text()
    assert "hall" not in site.server.rooms


@KINDS
async def test_a_bad_token_is_401_invalid_token_and_a_token_granting_too_little_403(
    site: Site, kind: str
) -> None:
    """RFC 6750 §3.1, which RFC 9725 §4.8 points to: a token that is
    malformed, expired or not signed with the key is ``invalid_token``, 401
    with a ``WWW-Authenticate: Bearer error="invalid_token"`` challenge; a
    good token for another room (or, for WHIP, a listener's) 403."""
    endpoint = f"{site.base}/rooms/hall/{kind}"
    body = PUBLISHER_OFFER if kind == "whip" else PLAYER_OFFER
    other_key = auth.issue_token(secrets.token_urlsafe(32), room="hall", identity="x")
    expired = auth.issue_token(SECRET, room="hall", identity="x", ttl=1, now=1_000_000)
    for token in ("garbage", other_key, expired):
        headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
        async with site.http.post(endpoint, data=body, headers=headers) as r:
            assert r.status == 401, (token, await r.text())
            assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    # In a room that exists the token's times are checked by the room itself.
    await site.session(kind, "first")
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {expired}"}
    async with site.http.post(endpoint, data=body, headers=headers) as r:
        assert r.status == 401 and "expired" in await r.text()
        assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    refused = [site.headers("y", room="elsewhere")]
    if kind == "whip":
        refused.append(site.headers("z", role="listener"))
    for headers in refused:
        async with site.http.post(endpoint, data=body, headers=headers) as r:
            assert r.status == 403, await r.text()
            assert "WWW-Authenticate" not in r.headers


async def test_a_join_its_token_alone_refuses_makes_no_room(
    site: Site, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A good token that does not grant what the endpoint asks (a listener's
    on WHIP) is refused 403 before any room is made for it: not made, then
    closed again as unused (events, logs and a room's cost for a join bound
    to fail). The refusal is the one the room gives (body, INFO line). In a
    room that exists the room decides, as a promotion may let that token
    publish; a token that grants publishing still makes the room."""
    caplog.set_level(logging.INFO, logger="sfu")
    made: list[str] = []
    init = sfu.room.Room.__init__

    def spied(room: sfu.Room, server: sfu.Server, name: str, policy: sfu.RoomPolicy) -> None:
        made.append(name)
        init(room, server, name, policy)

    monkeypatch.setattr(sfu.room.Room, "__init__", spied)
    listener = site.headers("lou", role="listener", room="fresh")
    async with site.http.post(
        f"{site.base}/rooms/fresh/whip", data=PUBLISHER_OFFER, headers=listener
    ) as r:
        assert r.status == 403, await r.text()
        assert await r.text() == "the token does not grant the 'speaker' role\n"
        assert "WWW-Authenticate" not in r.headers
    assert made == [] and "fresh" not in site.server.rooms
    refusals = [m for m in messages(caplog) if "refused" in m]
    assert refusals == [
        "WHIP join from 127.0.0.1 of room 'fresh' refused (403): "
        "the token does not grant the 'speaker' role"
    ]
    assert not [m for m in messages(caplog) if "closed" in m], messages(caplog)

    # An identity no member can have (a backend signed it by hand): the token
    # is at fault, 401 invalid_token (the review's proposal; was 400), no room.
    claims = {"sub": "x" * 257, "room": "fresh", "role": "speaker", "jti": "j"}
    now = int(time.time())
    long_named = jwt.encode({**claims, "nbf": now, "exp": now + 60}, SECRET, algorithm="HS256")
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {long_named}"}
    async with site.http.post(
        f"{site.base}/rooms/fresh/whip", data=PUBLISHER_OFFER, headers=headers
    ) as r:
        assert r.status == 401 and "identity" in await r.text()
    assert made == []

    # A listener's token on WHEP, or a speaker's on WHIP, makes the room and joins.
    for kind, body, identity, role in (
        ("whep", PLAYER_OFFER, "lou", "listener"),
        ("whip", PUBLISHER_OFFER, "sue", "speaker"),
    ):
        room = f"fresh-{kind}"
        async with site.http.post(
            f"{site.base}/rooms/{room}/{kind}",
            data=body,
            headers=site.headers(identity, role=role, room=room),
        ) as r:
            assert r.status == 201, await r.text()
        assert made[-1] == room and site.server.rooms[room][identity].role == role
    assert isinstance(site.server.rooms["fresh-whip"]["sue"], sfu.Speaker)

    # In a room that exists: the same token is refused by the room, which stays...
    hall = site.server.room("hall")
    hall_listener = site.headers("lou", role="listener")
    async with site.http.post(
        f"{site.base}/rooms/hall/whip", data=PUBLISHER_OFFER, headers=hall_listener
    ) as r:
        assert r.status == 403 and "does not grant the 'speaker' role" in await r.text()
    assert site.server.rooms["hall"] is hall and not hall.closed
    # ...and let in once a moderator promoted that identity there.
    token = hall_listener["Authorization"].removeprefix("Bearer ")
    lou = await hall.join(LISTENER, token=token)
    await hall.promote("lou")
    await lou.close()
    async with site.http.post(
        f"{site.base}/rooms/hall/whip", data=PUBLISHER_OFFER, headers=hall_listener
    ) as r:
        assert r.status == 201, await r.text()
    assert isinstance(hall["lou"], sfu.Speaker)
    assert made == ["fresh-whep", "fresh-whip", "hall"]


async def test_a_whip_moderator_with_a_receiving_line_is_refused_by_a_full_stage(
    site: Site,
) -> None:
    """A moderator's token on WHIP, its offer sendrecv (a WHIP client that also
    receives), to a full stage: it cannot be seated in the audience, since it
    can never take the stage from there (a WHIP session does not renegotiate,
    so promote() refuses it): 409 room full, as a sendonly publisher is
    refused, not a 201 for a publisher nobody will ever hear."""
    room = site.server.room("hall", max_speakers=1)
    await site.session("whip", "on-stage")
    async with site.http.post(
        f"{site.base}/rooms/hall/whip",
        data=offer("sendrecv"),
        headers=site.headers("mod", role="moderator"),
    ) as response:
        text = await response.text()
        assert response.status == 409, (response.status, text)
        assert "full" in text
    assert "mod" not in room.participants


async def test_refused_joins_are_counted_and_their_log_lines_bounded(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No token is needed to be refused: one client posting bad joins as fast
    as it can must not write the log as fast. Every refusal is counted for
    /metrics; past a burst, lines are written at a bounded rate, and the next
    one says how many were left out."""
    from sfu.signaling import refusals
    from sfu.signaling.metrics import render_metrics

    clock = [1000.0]
    monkeypatch.setattr(refusals.time, "monotonic", lambda: clock[0])
    async with sfu.Server(host="127.0.0.1", token_secret=SECRET) as server:
        app = web.Application()
        add_whip_whep(app, server)
        runner, port = await start_site(app)
        try:
            with caplog.at_level(logging.INFO, logger="sfu.signaling.aiohttp"):
                async with aiohttp.ClientSession() as http:
                    headers = {"Content-Type": "application/sdp", "Authorization": "Bearer x.y.z"}
                    for _ in range(200):
                        url = f"http://127.0.0.1:{port}/rooms/r/whep"
                        async with http.post(url, data="v=0\r\n", headers=headers) as r:
                            assert r.status == 401
                    lines = [
                        rec.getMessage() for rec in caplog.records if "refused" in rec.getMessage()
                    ]
                    assert len(lines) == refusals.LOG_BURST, len(lines)
                    clock[0] += 1.0  # two lines' worth of budget again
                    async with http.post(url, data="v=0\r\n", headers=headers) as r:
                        assert r.status == 401
            lines = [rec.getMessage() for rec in caplog.records if "refused" in rec.getMessage()]
            left_out = 200 - refusals.LOG_BURST
            assert (
                lines[-2]
                == f"{left_out} refused joins were not logged (over 2 a second): {left_out} 401"
            )
            assert lines[-1].startswith("WHEP join from 127.0.0.1 of room 'r' refused (401)")
            text = render_metrics(server)[0].decode()
            assert 'sfu_joins_refused_total{reason="401",via="whep"} 201.0' in text, text
        finally:
            await runner.cleanup()


@pytest.mark.parametrize(
    ("written", "sent"),
    [
        ("http://[0:0:0:0:0:0:0:1]:8080", "http://[::1]:8080"),
        ("http://[::FFFF:127.0.0.1]", "http://[::ffff:7f00:1]"),
        ("http://[::ffff:127.0.0.1]", "http://[::ffff:7f00:1]"),
        ("http://127.1:8080", "http://127.0.0.1:8080"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
        ("http://[fe80::1%25eth0]", None),
    ],
)
async def test_cors_origins_a_browser_never_sends_are_refused_with_what_it_sends(
    written: str, sent: str | None
) -> None:
    """The URL standard serializes an IPv6 host compressed (and an IPv4-mapped
    one in hex), a shorthand IPv4 host in four decimals, a Unicode name in
    punycode: an entry written otherwise never equals an Origin header, and
    the hint must name the form the browser sends."""
    async with sfu.Server() as server:
        with pytest.raises(sfu.errors.InvalidSetting, match="cors_origins") as refused:
            add_whip_whep(web.Application(), server, cors_origins={written})
        if sent:
            assert f"a browser sends {sent!r}" in str(refused.value), refused.value
            add_whip_whep(web.Application(), server, cors_origins={sent})


async def test_joins_refused_before_their_offer_is_read_are_counted_too(site: Site) -> None:
    """A wrong Content-Type (415), an offer too large (413), a body that is
    not UTF-8 text or a bad ``?mix`` (400) are refused joins as well:
    ``sfu_joins_refused_total`` counted only those refused for their token,
    room or offer."""
    from sfu.signaling.metrics import render_metrics

    url = f"{site.base}/rooms/hall/whep"
    sdp = {"Content-Type": "application/sdp"}
    for data, headers, query, status in (
        ("v=0\r\n", {"Content-Type": "text/plain"}, "", 415),
        ("v" * (MAX_OFFER_SIZE + 1), sdp, "", 413),
        (b"\xff\xfe", sdp, "", 400),
        (
            PLAYER_OFFER,
            site.headers("m", "listener"),
            "?mix=2",
            400,
        ),
    ):
        async with site.http.post(url + query, data=data, headers=headers) as response:
            assert response.status == status, await response.text()
    text = render_metrics(site.server)[0].decode()
    for reason, count in (("415", 1), ("413", 1), ("400", 2)):
        assert f'sfu_joins_refused_total{{reason="{reason}",via="whep"}} {count}.0' in text, text
