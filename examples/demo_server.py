"""The sfu demo: Clubhouse-style audio rooms in the browser.

Run it and open the printed URL in a few browser tabs::

    python examples/demo_server.py                 # http://127.0.0.1:8080/
    python examples/demo_server.py --host 0.0.0.0 --announce 192.0.2.10 --udp-port 40000
    python examples/demo_server.py --host :: --announce 2001:db8::10 --announce 192.0.2.10  # both families

Pick a room, a name and a role (moderator, speaker or listener) and join.
Speakers and moderators are on the stage; listeners are in the audience and
can raise a hand; moderators promote, demote, mute and remove people.

Everything the page uses is part of the ``sfu`` package, not demo code:

* ``GET /ws``: the JSON-over-WebSocket signaling (docs/signaling.md),
  :func:`sfu.signaling.aiohttp.add_signaling`;
* ``GET /sfu.js``: the browser client shipped in ``sfu/signaling/static``;
* ``POST /rooms/{room}/whip`` and ``/whep``: WHIP publishing and WHEP
  listening (Bearer token, ``application/sdp``; DELETE the ``Location``);
* ``GET /rooms/{room}/live.ogg``: the room mix as a live Ogg/Opus stream,
  offered to the listeners a full room (``--max-listeners``) turns away,
  :func:`sfu.signaling.aiohttp.add_live_stream`;
* ``GET /metrics``: Prometheus text.

Only ``POST /api/token`` is demo-only: it signs a join token for any room,
name and role (``{"room", "identity", "role"}`` -> ``{"token", "name_key"}``;
a refusal is ``{"error", "code"}``, the code telling the page what to say),
so anyone can try it out. A name in a room belongs to the browser that took
it first: later tokens for it need the ``name_key`` that came with the first
(a room remembers who was promoted by name, so a name taken over would be a
stage seat taken over), for as long as its token lasts or its room is open.
The first to ask for a room's moderator token opens it and moderates it
(a speaker or listener may have made the room before, unmoderated), and a
later moderator token for that room needs the ``owner_key`` the first one
came with; one address (an IPv6 client: its /64; a link-local or loopback one: itself) may open 20 rooms that way at
once, then 10 a minute (429 past that; speaker and listener tokens are not counted). ``--no-demo-tokens`` turns it off (404); then tokens must come
from your own backend (``sfu.auth.issue_token``) and the page is opened as
``/?token=...``. The token secret is random per run unless ``--token-secret``
or the ``SFU_TOKEN_SECRET`` environment variable sets it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import hmac
import ipaddress
import itertools
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

from aiohttp import web

import sfu
from sfu.signaling.aiohttp import (
    STATIC_DIR,
    add_live_stream,
    add_signaling,
    add_whip_whep,
    metrics_handler,
)
from sfu.transport.port import format_address

__all__ = ["PAGE_DIR", "make_app", "main"]

logger = logging.getLogger("sfu.demo")

PAGE_DIR = Path(__file__).resolve().parent / "static"
ROLES = ("moderator", "speaker", "listener")
#: Demo tokens last a working day: sfu.js rejoins with the same token after a network drop.
TOKEN_TTL = 12 * 3600.0
#: Largest request body the demo reads (a WHIP offer is a few KB).
MAX_BODY = 256 * 1024
_MAX_NAME = 64


#: Letters that show as nothing (Hangul fillers, the Braille blank): "Ada"
#: and "Ada" + one of them would look the same on a moderator's screen.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def _valid_name(value: object) -> bool:
    """1..64 characters that show: no control, format (zero-width, bidi
    override) or separator-only characters a lookalike name could hide in,
    no blank letters, no space but single ASCII ones, and in Unicode's
    composed form (NFC), so that one name has one spelling. (Letters of
    other scripts that look alike, as Cyrillic and Latin "A", still pass.)"""
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_NAME:
        return False
    if value.strip() in (".", ".."):
        return False  # a URL path normalises them away: no HTTP route would reach the room
    if unicodedata.normalize("NFC", value) != value or "  " in value:
        return False
    return all(
        unicodedata.category(char)[0] not in "C"
        and unicodedata.category(char) not in ("Zl", "Zp")
        and (unicodedata.category(char) != "Zs" or char == " ")
        and char not in _BLANK_LETTERS
        for char in value
    )


SERVER_KEY = web.AppKey("server", sfu.Server)
#: Room name -> (its opener's identity, when the opener's token expires (monotonic),
#: the opener's key: the secret a later moderator token for the room needs).
OWNERS_KEY = web.AppKey("owners", collections.OrderedDict)
#: Rooms with a remembered opener at once (each for TOKEN_TTL): bounds the table.
MAX_OWNED_ROOMS = 10_000
_clock = time.monotonic  # the claims' clock
#: A claim on a room that is not open may make way for a new one once it is this old (s).
CLAIM_GRACE = 600.0
#: Rooms one address may open (claim) in a burst, and per minute after it: a
#: flood that fills the table to make old claims give way is slow then.
NEW_ROOMS_BURST = 20
NEW_ROOMS_PER_MINUTE = 10.0
#: Opener (an IPv4 address or an IPv6 /64, :func:`_opener`) -> (claims left,
#: when counted), the one counted longest ago first: those whose burst has
#: refilled are forgotten from that end, a few per claim, so a claim never
#: rescans the table; at MAX_OPENERS the one counted longest ago goes, refilled
#: or not (that many openers within the refill time is a flood from many
#: addresses, which a per-address count cannot stop anyway).
OPENERS_KEY = web.AppKey("openers", collections.OrderedDict)
MAX_OPENERS = 10_000
#: (room, identity) -> (when its last token expires (monotonic), the key later
#: tokens for the name need). Oldest first (each mint moves its entry last).
NAMES_KEY = web.AppKey("names", collections.OrderedDict)
#: Names held at once: bounds the table. When it is full, the oldest name of
#: a room that is not open, minted over CLAIM_GRACE ago, makes way (no member
#: of a closed room has a seat to take over; a fresh one is on its way in).
MAX_NAME_CLAIMS = 100_000
#: How many of the oldest names a full table looks through for one to drop.
_NAME_SCAN = 1000
#: A key a request proposes for a new claim: URL-safe base64, 16 to 128 characters
#: (16 random bytes from ``crypto.getRandomValues`` are 22).
_MIN_KEY, _MAX_KEY = 16, 128


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def no_favicon(request: web.Request) -> web.Response:
    """Browsers ask for /favicon.ico whatever the page says: an empty answer,
    not a 404 in every console."""
    return web.Response(status=204, headers={"Cache-Control": "max-age=86400"})


async def client_script(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        STATIC_DIR / "sfu.js",
        headers={"Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "no-cache"},
    )


def _refusal(code: str, message: str) -> dict[str, str]:
    """A refused token request's JSON: ``error`` says why in the API's terms,
    ``code`` lets the page tell the person what to change in the form."""
    return {"error": message, "code": code}


def _bad_request(message: str, code: str = "bad_request") -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=json.dumps(_refusal(code, message)), content_type="application/json"
    )


async def issue_demo_token(request: web.Request) -> web.Response:
    """``POST /api/token`` ``{"room", "identity", "role", "name_key"?, "owner_key"?}``
    -> ``{"token", "name_key", "owner_key"?}``: try-it-out only. A refusal is
    ``{"error", "code"}``: ``error`` in the API's terms, ``code`` (``bad_room``,
    ``bad_identity``, ``name_taken``, ``room_moderated``, ``room_owned``,
    ``too_many_rooms``, ``busy``...) for the page to word it for the form.

    The first token for a name in a room comes with a ``name_key``; later
    tokens for that name need it, while the name's last token is valid or
    its room is open (a room gives a returning name the role a moderator
    chose for it). The first moderator token of a room comes with an
    ``owner_key``; later moderator tokens for that room need it (with the
    same identity): the opener's name is shown to every member, the key is
    not. A request for a new claim may propose its key (``name_key``,
    ``owner_key``: 16 to 128 URL-safe base64 characters); the page makes
    and keeps one before it asks, so that a reply lost on the way (a
    reload, a network blink) does not lock it out of its name or room."""
    server = request.app[SERVER_KEY]
    assert server.token_secret is not None
    try:
        body: Any = await request.json()
    except web.HTTPRequestEntityTooLarge:  # past client_max_size: JSON as every refusal
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_BODY,
            actual_size=request.content_length or 0,
            text=json.dumps(_refusal("too_large", f"a token request is at most {MAX_BODY} bytes")),
            content_type="application/json",
        ) from None
    # RecursionError: nested deeper than json can read; LookupError: an unknown charset.
    except (ValueError, RecursionError, LookupError):
        raise _bad_request('send JSON {"room": ..., "identity": ..., "role": ...}') from None
    if not isinstance(body, dict):
        raise _bad_request('send JSON {"room": ..., "identity": ..., "role": ...}')
    room, identity, role = body.get("room"), body.get("identity"), body.get("role", "listener")
    for field, value in (("room", room), ("identity", identity)):
        if not _valid_name(value):
            raise _bad_request(
                f"{field} must be 1 to {_MAX_NAME} visible characters, in composed form "
                "(no control, zero-width, blank or direction-changing ones, no double spaces)",
                f"bad_{field}",
            )
    if role not in ROLES:
        raise _bad_request(f"role must be one of {', '.join(ROLES)}", "bad_role")
    assert isinstance(room, str) and isinstance(identity, str)
    # Checked first, recorded last: a request refused below claims nothing.
    name_claim, name_key, stale_claim = _check_name(
        request, room.strip(), identity.strip(), body.get("name_key")
    )
    if role == "moderator":
        # The first moderator token opens the room; later arrivals ask to be promoted.
        # The opener is remembered for as long as its token lasts: a moderator
        # token minted before (or while the room is empty) is not a way in.
        owners = request.app[OWNERS_KEY]
        now = _clock()
        while owners and next(iter(owners.values()))[1] <= now:
            owners.popitem(last=False)  # oldest first: every entry lives TOKEN_TTL
        name = room.strip()
        owner = owners.get(name)
        existing = server.get_room(name)
        members = existing.participants.values() if existing else ()
        key_matches = owner is not None and _key_matches(body.get("owner_key"), owner[2])
        # A moderator in the room, whatever its name (the opener's is public),
        # unless this is the opener with its key: an expired claim must not
        # let someone else in under the opener's name.
        taken = any("moderate" in member.grants for member in members) and not (
            key_matches and owner is not None and owner[0] == identity.strip()
        )
        not_the_owner = owner is not None and (owner[0] != identity.strip() or not key_matches)
        if taken or not_the_owner:
            moderated = any("moderate" in member.grants for member in members)
            raise web.HTTPForbidden(
                text=json.dumps(
                    _refusal(
                        "room_moderated",
                        "this room has a moderator already: join and ask to be promoted",
                    )
                    if moderated
                    # Its opener is away (or not in yet): nobody here could promote you.
                    else _refusal(
                        "room_owned",
                        "this room was opened by someone else, who alone moderates it: "
                        "join as a speaker or listener, or open a room of another name",
                    )
                ),
                content_type="application/json",
            )
        if owner is None:
            _spend_room_claim(request, now)
        if owner is None and len(owners) >= MAX_OWNED_ROOMS:
            # Full (names minted for rooms never opened can fill it): the
            # oldest claim on a room not open, minted over CLAIM_GRACE ago,
            # makes way (a fresh claim is kept: its opener is on the way in).
            unopened = _stale_claim(
                ((n, expires, n) for n, (_, expires, _key) in owners.items()), now, server
            )
            if unopened is None:
                raise web.HTTPTooManyRequests(
                    text=json.dumps(_refusal("busy", "too many rooms are open: try later")),
                    content_type="application/json",
                )
            del owners[unopened]
        # Each token minted for the opener extends the claim to its expiry.
        owner_key = owner[2] if owner is not None else _new_key(body.get("owner_key"))
        owners[name] = (identity.strip(), now + TOKEN_TTL, owner_key)
        owners.move_to_end(name)
    token = sfu.auth.issue_token(
        server.token_secret, room=room.strip(), identity=identity.strip(), role=role, ttl=TOKEN_TTL
    )
    names = request.app[NAMES_KEY]
    if stale_claim is not None:
        del names[stale_claim]
    names[name_claim] = (_clock() + TOKEN_TTL, name_key)
    names.move_to_end(name_claim)
    logger.info("issued a demo token: %r as %s in room %r", identity.strip(), role, room.strip())
    reply = {"token": token, "name_key": name_key}
    if role == "moderator":
        reply["owner_key"] = owner_key
    return web.json_response(reply)


def _opener(remote: str | None) -> str:
    """Who a room claim is counted against: an IPv4 address, also when a
    dual-stack socket shows it IPv4-mapped (``::ffff:192.0.2.1``), or an
    IPv6 address's /64 (one host's: its privacy addresses change within
    it, so counted one by one a single client could open rooms without bound),
    except a link-local or loopback one, counted by itself (every host of a
    link shares fe80::/64)."""
    try:
        ip = ipaddress.ip_address((remote or "").partition("%")[0])
    except ValueError:
        return remote or "?"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if ip.is_link_local or ip.is_loopback:
            # Every host on a link shares fe80::/64: counted by address (and link).
            return remote or "?"
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _spend_room_claim(request: web.Request, now: float) -> None:
    """One more room opened from this request's address; 429 past its share
    (NEW_ROOMS_BURST, then NEW_ROOMS_PER_MINUTE)."""
    openers = request.app[OPENERS_KEY]

    def refilled(left: float, at: float) -> float:
        return min(float(NEW_ROOMS_BURST), left + (now - at) * NEW_ROOMS_PER_MINUTE / 60)

    # Each claim forgets at most two refilled openers: one more than it adds.
    for _ in range(2):
        oldest = next(iter(openers.items()), None)
        if oldest is None or refilled(*oldest[1]) < NEW_ROOMS_BURST:
            break
        del openers[oldest[0]]
    address = _opener(request.remote)
    left, at = openers.pop(address, (float(NEW_ROOMS_BURST), now))
    if len(openers) >= MAX_OPENERS:
        openers.popitem(last=False)
    left = refilled(left, at)
    if left < 1:
        openers[address] = (left, now)
        raise web.HTTPTooManyRequests(
            text=json.dumps(
                _refusal(
                    "too_many_rooms",
                    "too many rooms opened from here: join one, or try again in a minute",
                )
            ),
            content_type="application/json",
        )
    openers[address] = (left - 1, now)


def _new_key(proposed: object) -> str:
    """The key of a new claim: the one its request proposed, when it could be
    a secret (a page makes one and keeps it before it asks, so that a reply
    lost on the way, a reload, loses it nothing), else a random one."""
    if (
        isinstance(proposed, str)
        and _MIN_KEY <= len(proposed) <= _MAX_KEY
        and all(char.isascii() and (char.isalnum() or char in "-_") for char in proposed)
    ):
        return proposed
    return secrets.token_urlsafe(16)


def _key_matches(presented: object, key: str) -> bool:
    """Whether a request's key (any JSON value) is the claim's key."""
    return isinstance(presented, str) and hmac.compare_digest(presented.encode(), key.encode())


def _stale_claim(
    claims: Iterable[tuple[Any, float, str]],
    now: float,
    server: sfu.Server,
    limit: int | None = None,
) -> Any:
    """The claim that makes way in a full table: of ``(key, its token's expiry,
    room)`` oldest first (each mint moves its entry last), the first minted
    over CLAIM_GRACE ago on a room that is not open, among the first
    ``limit``. None once a fresher one comes (all later ones are fresher)."""
    minted_before = now + TOKEN_TTL - CLAIM_GRACE
    for key, expires, room in itertools.islice(claims, limit):
        if expires > minted_before:
            return None
        if server.get_room(room) is None:
            return key
    return None


def _check_name(
    request: web.Request, room: str, identity: str, presented: object
) -> tuple[tuple[str, str], str, tuple[str, str] | None]:
    """May this requester have ``identity`` in ``room``? Refuses with 403 (the
    name is someone else's) or 429 (the table is full). Changes nothing:
    returns the claim, its key (the one held, or a new one) and a stale
    claim to drop to make room, for the caller to record once the token is
    issued."""
    names = request.app[NAMES_KEY]
    server = request.app[SERVER_KEY]
    now = _clock()
    claim = (room, identity)
    held = names.get(claim)
    if held is not None and (held[0] > now or server.get_room(room) is not None):
        if not _key_matches(presented, held[1]):
            raise web.HTTPForbidden(
                text=json.dumps(
                    _refusal("name_taken", "this name is taken in this room: pick another name")
                ),
                content_type="application/json",
            )
        return claim, held[1], None
    stale = None
    if held is None and len(names) >= MAX_NAME_CLAIMS:
        stale = _stale_claim(
            ((key, expires, key[0]) for key, (expires, _key) in names.items()),
            now,
            server,
            limit=_NAME_SCAN,
        )
        if stale is None:
            raise web.HTTPTooManyRequests(
                text=json.dumps(_refusal("busy", "too many names are in use: try later")),
                content_type="application/json",
            )
    # A new claim (or one whose token expired in a room no longer open).
    return claim, _new_key(presented), stale


def _listener_count(text: str) -> int:
    """--max-listeners: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def _port(text: str) -> int:
    """--port: 0 (any free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0..65535, got {text!r}")
    return value


def _forwarded_address(value: str) -> str | None:
    """The address in an X-Forwarded-For entry (``192.0.2.1``, ``2001:db8::1``,
    or either with a port: ``192.0.2.1:4711``, ``[2001:db8::1]:4711``); None if it is none."""
    value = value.strip()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip)  # (a dual-stack socket shows IPv4 peers mapped)


def forwarded_client(trusted_proxies: Iterable[str]) -> Any:
    """A middleware: a request from one of ``trusted_proxies`` (addresses) is
    taken as from the last entry of its X-Forwarded-For (the address the
    proxy saw), for the room-opening budget and the logs; from any other
    peer the header is ignored, or anyone could claim any address."""
    trusted = set()
    for address in trusted_proxies:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"trusted_proxies takes IP addresses, got {address!r:.80}") from None
        trusted.add(_forwarded_address(str(ip)))

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        # Every line of it, in order: the proxy may add its own after the client's.
        lines = request.headers.getall("X-Forwarded-For", [])
        if not lines or _forwarded_address(request.remote or "") not in trusted:
            return await handler(request)
        forwarded = ",".join(lines)
        # Empty elements are ignored (RFC 9110 section 5.6.1).
        entries = [entry for entry in forwarded.split(",") if entry.strip()]
        client = _forwarded_address(entries[-1]) if entries else None
        if client is None:
            return web.Response(status=400, text=f"bad X-Forwarded-For: {forwarded!r:.80}\n")
        return await handler(request.clone(remote=client))

    return middleware


def make_app(
    server: sfu.Server,
    *,
    demo_tokens: bool = True,
    max_listeners: int | None = None,
    trusted_proxies: Iterable[str] = (),
) -> web.Application:
    """The demo's aiohttp application for a started-or-not ``server``.

    ``server`` must have a ``token_secret`` (joins are token-checked).
    ``demo_tokens``: serve ``POST /api/token``; otherwise it is a 404.
    ``max_listeners``: rooms hold at most that many listeners; the page
    offers the others the room's live stream (``/rooms/{room}/live.ogg``).
    ``trusted_proxies``: the addresses of reverse proxies in front of it,
    whose X-Forwarded-For names the client (see :func:`forwarded_client`).
    """
    if server.token_secret is None:
        raise ValueError("the demo needs a Server with token_secret=... (joins carry tokens)")
    proxies = list(trusted_proxies)
    middlewares = [forwarded_client(proxies)] if proxies else []
    app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
    app[SERVER_KEY] = server
    app[OWNERS_KEY] = collections.OrderedDict()
    app[OPENERS_KEY] = collections.OrderedDict()
    app[NAMES_KEY] = collections.OrderedDict()
    app.router.add_get("/", index)
    app.router.add_get("/sfu.js", client_script)
    app.router.add_get("/favicon.ico", no_favicon)
    app.router.add_static("/static/", PAGE_DIR, append_version=False)
    # Rooms are made by whoever names one: each closes itself once it has been
    # empty for five minutes, so a long-running demo does not keep them all.
    # Private: every demo join carries a token, and so must the live stream
    # (else it would be open to anyone who knows a room's name, banned or not).
    room_settings = {"max_listeners": max_listeners, "close_when_empty": 300.0, "private": True}
    add_signaling(app, server, room_settings=room_settings)  # checks them: a bad one fails here
    app.router.add_get("/metrics", metrics_handler(server))
    # The overflow audience of a full room listens to the mix over plain HTTP.
    add_live_stream(app, server, "/rooms/{room}/live.ogg")  # its streams end at shutdown
    add_whip_whep(app, server, room_settings=room_settings)  # the same limits, whoever opens a room
    if demo_tokens:
        app.router.add_post("/api/token", issue_demo_token)
    return app


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="HTTP and UDP address (default 127.0.0.1; :: takes IPv4 and IPv6)",
    )
    parser.add_argument("--port", type=_port, default=8080, help="HTTP port (default 8080)")
    parser.add_argument(
        "--udp-port", type=int, default=0, help="the media UDP port (default 0: any free one)"
    )
    parser.add_argument(
        "--announce",
        action="append",
        default=None,
        help="address written in SDP answers (default: --host; required with --host 0.0.0.0 "
        "or ::); give it twice, an IPv6 and an IPv4 address, for clients of both families "
        "with --host ::",
    )
    parser.add_argument(
        "--max-listeners",
        type=_listener_count,
        default=None,
        help="listeners per room (default: unlimited); the rest get the live stream",
    )
    parser.add_argument(
        "--token-secret",
        default=os.environ.get("SFU_TOKEN_SECRET"),
        help="HS256 secret for join tokens, >= 32 bytes (default: $SFU_TOKEN_SECRET, else random per run)",
    )
    parser.add_argument(
        "--no-demo-tokens",
        dest="demo_tokens",
        action="store_false",
        help="do not serve POST /api/token (tokens must come from your backend)",
    )
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="the address of a reverse proxy in front of the demo (repeatable): from it, "
        "X-Forwarded-For names the client, for the room-opening limit per address and the logs",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    try:
        forwarded_client(args.trusted_proxy)  # (checks the addresses)
    except ValueError as exc:
        parser.error(f"--trusted-proxy: {exc}")
    if args.host in ("0.0.0.0", "::") and not args.announce:
        parser.error(f"--host {args.host} needs --announce ADDRESS (the address clients reach)")
    if args.token_secret is not None and len(args.token_secret.encode()) < 32:
        parser.error("--token-secret / SFU_TOKEN_SECRET must be at least 32 bytes")
    return args


def _http_site(runner: web.AppRunner, host: str, port: int) -> web.BaseSite:
    """Where the page is served. On the IPv6 wildcard ``::`` the media socket
    takes IPv4 as well (dual-stack) and the URL printed is 127.0.0.1's, but
    asyncio makes an IPv6 TCP listener IPv6-only: the page is served from a
    dual-stack socket of its own (one port for both, also with ``--port 0``)."""
    if host != "::":
        return web.TCPSite(runner, host, port, backlog=1024)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::", port))
    except BaseException:
        sock.close()
        raise
    return web.SockSite(runner, sock, backlog=1024)


async def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in ("aiohttp.access", "aioice", "aiortc"):
        logging.getLogger(name).setLevel(logging.WARNING)
    secret = args.token_secret or secrets.token_urlsafe(32)
    if args.token_secret is None:
        logger.info("random token secret for this run (set SFU_TOKEN_SECRET to keep tokens valid)")
    try:
        server = await sfu.Server(
            args.host, args.udp_port, announce=args.announce, token_secret=secret
        ).start()
    except (sfu.InvalidSetting, OSError) as exc:  # (a port in use, an address not here...)
        _exit_with(exc)
    async with server:  # (started: closed on the way out)
        runner = web.AppRunner(
            make_app(
                server,
                demo_tokens=args.demo_tokens,
                max_listeners=args.max_listeners,
                trusted_proxies=args.trusted_proxy,
            )
        )
        await runner.setup()
        try:
            # A crowd connects at once: past the listen backlog (aiohttp's
            # default 128) the kernel drops connections and each client waits
            # a 1 s SYN retransmission. The kernel caps it at net.core.somaxconn.
            site = _http_site(runner, args.host, args.port)
            try:
                await site.start()
            except OSError as exc:  # the HTTP port in use, or the address not this host's
                _exit_with(exc)
            # Start-up objects are never scanned by the cyclic GC again: short
            # full collections when a crowd joins (README, "Running it").
            gc.collect()
            gc.freeze()
            shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
            if ":" in shown:
                shown = f"[{shown}]"  # an IPv6 address in a URL
            port = runner.addresses[0][1]  # the one bound (--port 0 picks one)
            flavour = (
                "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"
            )
            print(
                f"sfu demo: open http://{shown}:{port}/  "
                f"(media on udp {' and '.join(format_address((a, server.port)) for a in server.announce_addresses)}, "
                "metrics at /metrics, "
                f"demo tokens {'on' if args.demo_tokens else 'off'}, {flavour})",
                flush=True,
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await stop.wait()
            logger.info("shutting down: closing rooms, then the HTTP server")
        finally:
            # Rooms first: each member is told (room_closed) and its WebSocket
            # closes, so the HTTP shutdown does not wait for open sockets.
            await server.close()
            await runner.cleanup()


def _exit_with(error: Exception) -> NoReturn:
    """A start-up error as one line and exit status 2, as argparse's own usage errors."""
    print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
    raise SystemExit(2) from None


def run(argv: list[str] | None = None) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(argv))
    else:
        uvloop.run(main(argv))


if __name__ == "__main__":
    try:
        run(sys.argv[1:])
    except KeyboardInterrupt:
        pass
