"""aiohttp adapters: the WebSocket signaling handler, WHIP/WHEP endpoints, /metrics.

Mount them in any aiohttp app::

    add_signaling(app, server)                 # GET /ws, closed on shutdown
    add_whip_whep(app, server)                 # POST /rooms/{room}/whip and /whep
    app.router.add_get("/metrics", metrics_handler(server))
    add_live_stream(app, server)               # GET /rooms/{room}/live.ogg, the room mix

Other frameworks: :class:`sfu.signaling.SignalingSession` needs only a
``send(text)`` and a ``close(code, reason)`` coroutine, and a ``receive()``
one for :meth:`~sfu.signaling.SignalingSession.serve`; see the README for
Starlette/FastAPI.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import secrets
import socket
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable, Collection
from typing import Any
from urllib.parse import quote

from aiohttp import WSMsgType, web

from .._values import shown
from ..auth import Role, signed_identity, verify_token
from ..errors import (
    DuplicateIdentity,
    InvalidOffer,
    InvalidSetting,
    InvalidToken,
    NotAllowed,
    RoomClosed,
    RoomFull,
)
from ..gate import check_claims_before_room, joining_via, replacing, without_renegotiation
from ..media.livestream import live_stream_handler, live_streams
from ..participant import Participant
from ..policy import RoomSettings, policy_of
from ..room import Room, check_policy_for
from ..transport.sdp import MAX_OFFER_SIZE
from ..transport.server import Server
from . import STATIC_DIR
from .metrics import render_metrics
from .protocol import CLOSE_GOING_AWAY, MAX_MESSAGE, SignalingSession
from .refusals import join_refusals

__all__ = [
    "STATIC_DIR",
    "add_live_stream",
    "add_signaling",
    "add_whip_whep",
    "live_stream_handler",
    "metrics_handler",
    "websocket_handler",
]

logger = logging.getLogger(__name__)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: What ``ws.receive()`` returns once the WebSocket is closing or gone.
_ENDED = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR})


def _join_error_status(exc: BaseException) -> int | None:
    """The HTTP status of a refused WHIP/WHEP join; None for anything else."""
    for kinds, status in (
        ((InvalidOffer, InvalidSetting), 400),
        (InvalidToken, 401),
        (NotAllowed, 403),
        ((RoomFull, DuplicateIdentity), 409),
        (RoomClosed, 404),
    ):
        if isinstance(exc, kinds):
            return status
    return None


def _challenge(exc: BaseException) -> dict[str, str]:
    """The ``WWW-Authenticate`` of a refusal for a bad token (RFC 6750 §3)."""
    if isinstance(exc, InvalidToken):
        return {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    return {}


def _mix_asked(request: web.Request) -> bool | None:
    """WHEP ``?mix=``: 1 the mix, 0 slots, absent the server's choice (Room.join)."""
    value = request.query.get("mix", "").lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    if value:
        raise InvalidSetting(f"mix must be 1 or 0, got {value[:20]!r}")
    return None


_PREFIX = re.compile(r"(/[^/]+)+")


def _room_factory(
    server: Server, create_rooms: bool, room_settings: RoomSettings | None
) -> Callable[[str], Room | None]:
    # Checked when mounted: a misspelt or wrong setting is the backend's
    # mistake, not refused to each client whose join would make a room.
    if not isinstance(server, Server):
        raise InvalidSetting(f"server must be an sfu.Server, got {type(server).__name__}")
    if not isinstance(create_rooms, bool):
        raise InvalidSetting(f"create_rooms must be True or False, got {create_rooms!r:.40}")
    if room_settings is not None:
        check_policy_for(server, policy_of(room_settings))
        # A copy: the settings checked here are the ones every room gets, not
        # whatever the caller's dict holds when a join makes one.
        room_settings = RoomSettings(**room_settings)

    def factory(name: str) -> Room | None:
        room = server.get_room(name)
        if room is None and create_rooms:
            room = server.room(name, **(room_settings or {}))
        return room

    return factory


class SignalingHandler:
    """The GET handler that upgrades to a WebSocket speaking ``docs/signaling.md``.

    It keeps its open connections so that :meth:`close_all` can end them
    when the application shuts down (``add_signaling`` registers that);
    otherwise aiohttp waits for open WebSockets until its shutdown timeout.
    """

    def __init__(
        self, server: Server, factory: Callable[[str], Room | None], *, compress: bool = False
    ) -> None:
        if not isinstance(compress, bool):
            raise InvalidSetting(f"compress must be True or False, got {compress!r:.40}")
        if server.token_secret is None:
            # Told when mounted: otherwise the app starts and refuses every join.
            raise InvalidSetting(
                "the signaling WebSocket needs a Server with token_secret=...: every join "
                "over it carries a join token (sfu.auth.issue_token)"
            )
        self.server = server
        self.factory = factory
        self.compress = compress
        self.sessions: set[SignalingSession] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # Frames up to 1 MiB are read and answered (too_large past 64 KiB);
        # aiohttp closes the connection (1009) beyond that.
        ws = web.WebSocketResponse(
            heartbeat=20.0,
            max_msg_size=max(MAX_MESSAGE * 16, 1 << 20),
            compress=self.compress,
        )
        await ws.prepare(request)

        async def close(code: int, reason: str) -> None:
            await ws.close(code=code, message=reason.encode()[:120])

        def abort() -> None:
            transport = request.transport
            if transport is not None:
                transport.abort()

        session = SignalingSession(
            self.server,
            ws.send_str,
            close,
            room_factory=self.factory,
            peer=str(request.remote),
            abort=abort,
        )

        async def receive() -> str | bytes | None:
            while True:
                message = await ws.receive()
                if message.type == WSMsgType.TEXT:
                    return str(message.data)
                if message.type == WSMsgType.BINARY:
                    return bytes(message.data)
                if message.type in _ENDED:
                    return None

        self.sessions.add(session)
        try:
            # Reads on while a frame is handled: a client gone while its join
            # waits its turn is noticed then, and the join abandoned.
            await session.serve(receive)
        finally:
            self.sessions.discard(session)
            await session.close(CLOSE_GOING_AWAY, "signaling connection closed")
        return ws

    async def close_all(self, *_: object) -> None:
        """Close every open connection (1001 "going away"); their members leave."""
        await asyncio.gather(
            *(
                session.close(CLOSE_GOING_AWAY, "server shutting down")
                for session in list(self.sessions)
            ),
            return_exceptions=True,
        )


def websocket_handler(
    server: Server,
    *,
    create_rooms: bool = True,
    room_settings: RoomSettings | None = None,
    compress: bool = False,
) -> Handler:
    """A GET handler that upgrades to a WebSocket speaking ``docs/signaling.md``.

    ``create_rooms``: a join for an unknown room creates it (with
    ``room_settings``, :class:`~sfu.policy.RoomPolicy` fields; give it
    ``close_when_empty`` so that rooms named once do not stay for ever);
    otherwise it is refused with ``not_found``. ``room_settings`` are
    checked and copied here (a later change to the dict does not reach the
    rooms): :class:`~sfu.errors.InvalidSetting` for an unknown or
    invalid one. Every join over the WebSocket carries a join token, so
    ``server`` must have a ``token_secret`` (:class:`~sfu.errors.InvalidSetting`
    otherwise, here rather than at each join).

    ``compress``: agree to permessage-deflate when the client offers it
    (browsers do). Off by default: aiohttp then keeps a compressor for each
    connection (~256 KB: a 1,000-member join storm held ~260 MB more) and
    compresses every frame once per member; on, a ``joined`` roster naming
    100 listeners (the default ``roster_listeners``) travels in well under
    1 KB instead of ~11 KB.

    Prefer :func:`add_signaling`, which also closes the connections on shutdown.
    """
    return SignalingHandler(
        server, _room_factory(server, create_rooms, room_settings), compress=compress
    ).handle


def add_signaling(
    app: web.Application,
    server: Server,
    path: str = "/ws",
    *,
    create_rooms: bool = True,
    room_settings: RoomSettings | None = None,
    compress: bool = False,
) -> SignalingHandler:
    """Mount the signaling WebSocket at ``path`` and close its connections on
    shutdown; the options are :func:`websocket_handler`'s, and so is the
    :class:`~sfu.errors.InvalidSetting` for bad ``room_settings`` or a
    ``server`` without a ``token_secret``."""
    handler = SignalingHandler(
        server, _room_factory(server, create_rooms, room_settings), compress=compress
    )
    app.router.add_get(path, handler.handle)
    app.on_shutdown.append(handler.close_all)
    return handler


# -- WHIP (RFC 9725) and WHEP --------------------------------------------------------


def add_live_stream(
    app: web.Application,
    server: Server,
    path: str = "/rooms/{room}/live.ogg",
    **options: Any,
) -> Handler:
    """Mount :func:`~sfu.media.livestream.live_stream_handler` (``options``
    are its own) at ``path`` (GET, and HEAD for headers only; it needs a
    ``{room}`` part) and end its open streams when the app shuts down:
    without that, ``runner.cleanup()`` would wait for the streams of rooms
    still open (aiohttp's ``shutdown_timeout``, 60 s, twice)."""
    if not re.search(r"\{room(:[^}]*)?\}", path):
        raise InvalidSetting(f"the live stream's path needs a {{room}} part, got {path!r:.80}")
    handler = live_stream_handler(server, **options)

    async def end_streams(app: web.Application) -> None:
        for stream in live_streams(handler):
            stream.close()

    app.router.add_get(path, handler)
    app.on_shutdown.append(end_streams)
    return handler


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


#: Seconds a POST for an identity whose earlier session of the same endpoint
#: kind is still in the room waits for that session's client to show it is
#: there: any valid STUN, SRTP or SRTCP from it, or its answer to the binding
#: requests the server sends it (a live ICE agent answers in a round trip;
#: one goes at once and every half second after, four in all, so a client
#: is not taken for gone on a lost datagram or two). Nothing in that time:
#: the client is gone (crashed, its page reloaded), and the new session
#: replaces it (see add_whip_whep).
ANSWER_WAIT = 2.0


def _plain(status: int, text: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=headers)


#: What a browser's script may send to a WHIP/WHEP URL, and read back.
_CORS_REQUEST_HEADERS = "Authorization, Content-Type, If-Match"
_CORS_EXPOSED_HEADERS = "Location, WWW-Authenticate"


def _browser_host(host: str) -> str | None:
    """``host`` (lower-case, brackets off) as the URL standard serializes it,
    or None if no browser sends it: an IPv6 address compressed
    (``[::1]``, ``[::ffff:7f00:1]``), a dotted or shorthand IPv4 address
    in four decimals (``127.1`` is ``127.0.0.1``), a Unicode name in
    punycode (``xn--``)."""
    if ":" in host:
        if "%" in host:  # a zone (fe80::1%eth0): not in a URL a browser sends
            return None
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:  # not an address
            return None
        mapped = address.ipv4_mapped
        if mapped is not None:
            # In hex, as browsers write it (Python 3.13 writes it dotted).
            high, low = int(mapped) >> 16, int(mapped) & 0xFFFF
            return f"[::ffff:{high:x}:{low:x}]"
        return f"[{address.compressed}]"
    last = host.rstrip(".").rpartition(".")[2]
    if last.isdigit() or last.startswith("0x"):  # the URL standard reads an IPv4 address
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            return None
    if not host.isascii():
        try:
            return host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return host


def _origin(text: str) -> str | None:
    """``text`` as a browser serializes an origin in its ``Origin`` header
    (lower-case scheme and host, no default port, no path), or None if it
    is not one: an entry of another form would never match."""
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme  # (urlsplit gives scheme and hostname in lower case)
    if (
        scheme not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        return None
    host = _browser_host(parts.hostname)
    if host is None:
        return None
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


class _Cors:
    """CORS (the Fetch standard) for the WHIP/WHEP URLs, which RFC 9725 §4.2
    requires: a browser's WHIP client is usually served by another origin
    than the endpoint, and its ``application/sdp`` POST (and its DELETE)
    is sent only after a preflight OPTIONS allows it.

    ``origins``: ``"*"`` any origin (the credential is a Bearer token the
    page holds, never a cookie: ``Access-Control-Allow-Credentials`` is
    never sent), a collection of origins (``"https://app.example"``) only
    those, empty none.
    """

    def __init__(self, origins: str | Collection[str]) -> None:
        if isinstance(origins, str):
            if origins != "*":
                raise InvalidSetting(
                    f'cors_origins must be "*" or a collection of origins, got {origins[:40]!r}'
                )
            self.any = True
            self.origins: frozenset[str] = frozenset()
        else:
            self.any = False
            try:
                self.origins = frozenset(origins)
            except TypeError:  # not iterable (a number), or an unhashable item (a list)
                raise InvalidSetting(
                    f'cors_origins must be "*" or a collection of origins, got {origins!r:.60}'
                ) from None
            wrong = [o for o in self.origins if not isinstance(o, str) or _origin(o) != o]
            if wrong:
                canonical = _origin(wrong[0]) if isinstance(wrong[0], str) else None
                raise InvalidSetting(
                    f"cors_origins are origins like 'https://app.example' (scheme, host,"
                    f" port; no path), got {wrong[0]!r}"
                    + (f": a browser sends {canonical!r}" if canonical else "")
                    + (
                        ' (cors_origins="*" lets every origin in; "null", the origin of'
                        " sandboxed and file pages, is not let in by name)"
                        if wrong[0] in ("*", "null")
                        else ""
                    )
                )

    def allow(self, request: web.Request, response: web.StreamResponse) -> None:
        """Let the page of ``request``'s Origin read ``response``, if it may."""
        origin = request.headers.get("Origin")
        if self.any:
            response.headers["Access-Control-Allow-Origin"] = "*"
        else:
            response.headers.add("Vary", "Origin")
            if origin is None or origin not in self.origins:
                return
            response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = _CORS_EXPOSED_HEADERS

    def options(self, methods: str, **headers: str) -> Handler:
        """The OPTIONS handler of a URL taking ``methods``: 200 with ``Allow``
        (and ``headers``), a CORS preflight's answer too."""

        async def handler(request: web.Request) -> web.StreamResponse:
            response = web.Response(status=200, headers={"Allow": f"OPTIONS, {methods}", **headers})
            self.allow(request, response)
            if "Access-Control-Allow-Origin" in response.headers:
                response.headers["Access-Control-Allow-Methods"] = methods
                response.headers["Access-Control-Allow-Headers"] = _CORS_REQUEST_HEADERS
                response.headers["Access-Control-Max-Age"] = "7200"
            return response

        return handler

    def wrap(self, handler: Handler) -> Handler:
        """``handler`` whose every answer carries the CORS headers: errors too,
        including aiohttp's own raised ones and the 500 of a handler that
        failed, so that a page of another origin can read why, not only
        "TypeError: Failed to fetch"."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # an answer raised (it is a Response)
                self.allow(request, exc)
                raise
            except Exception:
                # What aiohttp would do (log it, answer 500), readable by the page.
                logger.exception("%s %s failed", request.method, f"{request.path!r:.120}")
                response = _plain(500, "the server failed to answer this request (see its log)")
            self.allow(request, response)
            return response

        return wrapped


def _refused(
    server: Server,
    request: web.Request,
    kind: str,
    room: str,
    status: int,
    text: str,
    **headers: str,
) -> web.Response:
    """A refused WHIP/WHEP join: counted, and logged at INFO (who asked, which
    room, why; never the token) at a bounded rate, as the signaling's refused
    joins are (:mod:`sfu.signaling.refusals`)."""
    join_refusals(server).refused(
        logger,
        kind,
        str(status),
        "%s join from %s of room %s refused (%d): %s",
        kind.upper(),
        request.remote,
        f"{room!r:.80}",
        status,
        text,
    )
    return _plain(status, text, **headers)


def add_whip_whep(
    app: web.Application,
    server: Server,
    *,
    prefix: str = "",
    create_rooms: bool = True,
    room_settings: RoomSettings | None = None,
    cors_origins: str | Collection[str] = "*",
) -> None:
    """``POST {prefix}/rooms/{room}/whip`` publishes as a speaker (RFC 9725;
    ``prefix``: empty, or a path like ``/api``, no trailing slash);
    ``POST {prefix}/rooms/{room}/whep`` listens (one slot per offered audio
    line; ``?mix=1`` asks for the room mix on the first line instead, and a
    player offering fewer lines than the room has slots gets it unasked, so
    a one-line player hears every speaker; ``?mix=0`` asks for slots
    however few lines; the same holds for what a WHIP client with receiving
    lines gets back). Body: the SDP
    offer (``Content-Type: application/sdp``); reply
    201 with the answer and a ``Location`` to ``DELETE`` when leaving (an
    absolute path, under the prefix of a sub-application the endpoints
    were mounted in too).

    Authentication is a join token as ``Authorization: Bearer <token>``; it is
    required when the server has a ``token_secret``: a missing or bad one
    (malformed, expired, not signed with the key) is refused 401 with a
    ``WWW-Authenticate: Bearer`` challenge (``error="invalid_token"`` for a
    bad one, RFC 6750 §3.1), a good one that does not allow the join
    (another room, a listener's on WHIP, a banned name) 403. Without one (a server
    with no authentication at all) the resource gets a random identity and
    an ``Authorization`` header is ignored. A POST that its token alone
    refuses (bad, for another room, a listener's on WHIP) makes no room:
    for a room that does not exist yet, the token is checked in full, and
    the role is checked against its grants (as the room would, with nothing
    decided in it: :func:`sfu.gate.check_claims_before_room`), before the
    room is made. A room made for a POST that is then refused otherwise (a
    bad offer, capacity) is closed again; rooms made by successful joins
    stay unless ``room_settings`` has ``close_when_empty`` (the settings are
    checked and copied here, as :func:`websocket_handler` does:
    :class:`~sfu.errors.InvalidSetting`). A resource answers only at
    its own URL (room and kind), and only while its session lasts (one the
    server ended answers 404, as after a DELETE).

    A POST whose token names a member of the room that joined through the
    same endpoint (WHIP or WHEP) of this app replaces that member if its
    client no longer answers: nothing valid (STUN, SRTP, SRTCP, nor an
    answer to the binding requests the server sends it, the first at once)
    comes from it within :data:`ANSWER_WAIT` seconds. An encoder that
    crashed, or a page reloaded, without a DELETE gets its new session
    within that, not a 409 until the old one's consent expires
    (``consent_timeout``, 30 s); the
    member leaves as replaced (reason ``"replaced"``), its session and URL
    end, and the new one rejoins as the signaling's reconnect does (a
    promotion or a moderator's mute stands). A member whose client still
    answers is never taken over: 409, as before, whoever holds the token
    (two encoders given one token do not take turns knocking each other
    out, and a copied token cannot cut a live stream unless all four
    requests or their answers are lost); end it with DELETE
    first. A member that joined otherwise (the signaling WebSocket, which
    has its resume key, or the Python API) is never replaced by a POST.
    The bearer token is what authenticates the principal, so a new token
    for the same identity replaces as the same one does; it is checked in
    full before the old client is asked anything. Trickle ICE and ICE
    restarts (PATCH) are not implemented by this ICE-lite server: a PATCH
    answers 501 (RFC 9725 §4.3.1). Such a client cannot renegotiate
    (``participant.renegotiates`` is False): a WHEP player cannot be
    promoted (``can_speak`` is False), a WHIP publisher keeps its sending line.

    Browsers' WHIP/WHEP clients on other origins are let in by CORS
    (RFC 9725 §4.2): ``OPTIONS`` on the endpoint and on a session answers
    200 with ``Allow`` (and ``Accept-Post: application/sdp`` on the
    endpoint), a preflight's answer too, and every answer of these handlers
    names the origins allowed: refusals and the 500 of a handler that failed
    (logged) included (not aiohttp's own 405 to a method a URL does not
    take: a catch-all route for it would shadow the app's own routes of the
    same path). ``cors_origins``: ``"*"`` (the default) any origin, since the
    credential is a Bearer token the page must hold (no cookie is ever
    allowed); a collection of origins (``{"https://app.example"}``) only
    those; empty, none (same-origin pages only).
    """
    if not isinstance(prefix, str) or (prefix and not _PREFIX.fullmatch(prefix)):
        # ("/api/" would mount "/api//rooms/...", which no request reaches.)
        raise InvalidSetting(
            f"prefix must be empty or a path that starts with / and does not end with one "
            f"(like '/api'), got {prefix!r:.60}"
        )
    factory = _room_factory(server, create_rooms, room_settings)
    cors = _Cors(cors_origins)
    # kind -> its session URLs' resource, which makes their Location.
    sessions: dict[str, web.Resource] = {}
    # (kind, resource id) -> its session, weakly held: one that ended without a
    # DELETE (the client vanished, its consent expired) goes with its member,
    # not when some later request comes.
    resources: weakref.WeakValueDictionary[tuple[str, str], Participant] = (
        weakref.WeakValueDictionary()
    )
    # The members that joined through these endpoints, and by which kind:
    # only those may be replaced by a POST (see above).
    joined_by: weakref.WeakKeyDictionary[Participant, str] = weakref.WeakKeyDictionary()

    async def answers(member: Participant, asked: float) -> bool:
        """Whether ``member``'s client shows within ANSWER_WAIT that it is
        there (anything valid from it since loop time ``asked``, when it is
        sent a binding request)."""
        session = member.session
        if session is None:
            return False
        while session.state != "closed":
            if session.last_valid >= asked:
                return True
            now = server.loop.time()
            if now - asked >= ANSWER_WAIT:
                return False
            # Sends the request, re-sends it after PROOF_RESEND, and sends a
            # new one once the last is given up (PROOF_TIMEOUT).
            session.probe(now)
            await asyncio.sleep(0.02)
        return False

    def silent_since(member: Participant, asked: float) -> Callable[[Participant], bool]:
        """For the join's gate: it may replace ``member`` itself (not one of
        its name that came meanwhile) while still nothing came from its client."""

        def may_replace(present: Participant) -> bool:
            session = present.session
            return present is member and (session is None or session.last_valid < asked)

        return may_replace

    def make(kind: str) -> Handler:
        # What its joins ask for: WHIP publishes (Room.add_speaker), WHEP listens.
        role: Role = "speaker" if kind == "whip" else "listener"

        async def post(request: web.Request) -> web.StreamResponse:
            name = request.match_info["room"]

            def refused(status: int, text: str, **headers: str) -> web.Response:
                return _refused(server, request, kind, name, status, text, **headers)

            if request.content_type != "application/sdp":
                return refused(415, "send the SDP offer with Content-Type: application/sdp")
            too_large = f"the offer is larger than {MAX_OFFER_SIZE // 1024} KiB"
            if request.content_length is not None and request.content_length > MAX_OFFER_SIZE:
                return refused(413, too_large)
            # Read to the limit, whatever the framing (a chunked body has no
            # Content-Length): one byte past it is enough to refuse.
            body = bytearray()
            while len(body) <= MAX_OFFER_SIZE:
                piece = await request.content.read(MAX_OFFER_SIZE + 1 - len(body))
                if not piece:
                    break
                body += piece
            if len(body) > MAX_OFFER_SIZE:
                return refused(413, too_large)
            try:
                offer = body.decode(request.charset or "utf-8")
            except (UnicodeDecodeError, LookupError):
                return refused(400, "the offer must be SDP text in UTF-8")
            # Without a token_secret the server takes no tokens: a client's
            # Authorization header (OBS sends one) is ignored, not refused.
            token = _bearer(request) if server.token_secret is not None else None
            # (Nothing below awaits until the room is made or found.)
            existed = server.get_room(name) is not None
            if server.token_secret is not None:
                if token is None:
                    return refused(
                        401,
                        "a join token is required: Authorization: Bearer <token>",
                        **{"WWW-Authenticate": "Bearer"},
                    )
                # In a room that exists, a quick look at the signature (a few
                # µs) lets the join wait its turn, where the room checks the
                # rest (PyJWT's ~80 µs), as the signaling does: a crowd's
                # requests read in one loop iteration then do not hold it.
                if not existed or signed_identity(server.token_secret, token, room=name) is None:
                    try:
                        # The whole check first: a bad token must not create
                        # the room it names, nor wait a turn.
                        claims = verify_token(server.token_secret, token, room=name)
                        if not existed and create_rooms:
                            # Nor a good one whose join the room would refuse
                            # whatever it holds (a listener's on WHIP): the
                            # gate's checks of the token alone, which a room
                            # made now (nothing decided in it) would make.
                            check_claims_before_room(claims, role)
                    except (NotAllowed, InvalidSetting) as exc:
                        return refused(_join_error_status(exc) or 403, str(exc), **_challenge(exc))
            try:
                mixed = _mix_asked(request)
            except InvalidSetting as exc:
                return refused(400, str(exc))
            try:
                room = factory(name)
            except InvalidSetting as exc:
                return refused(400, str(exc))
            except RoomClosed as exc:  # the server is shutting down (ServerClosed)
                return refused(503, str(exc))
            if room is None:
                return refused(404, f"no room {name!r}")
            identity = None if token is not None else f"{kind}-{secrets.token_hex(4)}"
            may_replace: Callable[[Participant], bool] | None = None
            if token is not None and existed:
                assert server.token_secret is not None
                named = signed_identity(server.token_secret, token, room=name)
                earlier = room._participants.get(named) if named is not None else None
                if earlier is not None and joined_by.get(earlier) == kind:
                    try:
                        # In full, before its client is asked anything.
                        verify_token(server.token_secret, token, room=name)
                    except NotAllowed as exc:
                        refusal = _join_error_status(exc) or 403
                        return refused(refusal, str(exc), **_challenge(exc))
                    asked = server.loop.time()
                    if await answers(earlier, asked):
                        return refused(
                            409,
                            f"{named!r} is already in room {name!r} by {kind.upper()} and its "
                            "client still answers: DELETE that session first, or use another "
                            "identity (a session whose client stopped answering is replaced)",
                        )
                    logger.info(
                        "%s %s: the client of its session in room %r no longer answers: "
                        "this POST may replace it",
                        kind.upper(),
                        shown(earlier.identity),
                        name,
                    )
                    may_replace = silent_since(earlier, asked)

            if not existed:
                room._closing.made_for_join = True  # refused, it leaves no room behind
            try:
                with (
                    joining_via(f"{kind.upper()} from {request.remote}"),
                    replacing(may_replace),
                    without_renegotiation(),
                ):
                    participant = await room.join(
                        offer, token=token, identity=identity, role=role, mixed=mixed
                    )
            except BaseException as exc:
                status = _join_error_status(exc)
                if status is None:
                    raise
                return refused(status, str(exc), **_challenge(exc))
            # Its media lines are fixed at this POST: it is never asked to offer
            # again. (Set before anything else runs, so every roster sees it.)
            participant.renegotiates = False
            joined_by[participant] = kind
            transport = request.transport
            if transport is None or transport.is_closing():
                # The client gave up while its join waited its turn (aiohttp does
                # not cancel the handler): no seat for an answer nobody reads.
                logger.info(
                    "%s %s left before its answer", kind.upper(), shown(participant.identity)
                )
                await participant.close("the client left before its answer")
                if not existed:
                    room._closing.join_undone()
                return _plain(499, "the client left before its answer")
            resource = secrets.token_urlsafe(16)
            resources[kind, resource] = participant
            # The session route's own URL: under the prefix of a sub-application
            # the endpoints were mounted in too (an absolute path, which a
            # reverse proxy's Location rewriting handles).
            # (Every character of the name escaped, "/" too: url_for keeps it.)
            location = (
                sessions[kind]
                .canonical.replace("{room}", quote(name, safe=""))
                .replace("{resource}", resource)
            )
            # (The room logged the join at INFO, saying it came by WHIP or WHEP.)
            logger.debug(
                "%s %s joined room %r as %s",
                kind.upper(),
                shown(participant.identity),
                name,
                participant.role,
            )
            return web.Response(
                status=201,
                body=participant.answer.encode(),  # (text= would add a charset)
                content_type="application/sdp",
                headers={"Location": location},
            )

        return post

    def held(request: web.Request, kind: str) -> Participant | None:
        """The live session at exactly this URL (its room and kind too), or None."""
        key = (kind, request.match_info["resource"])
        participant = resources.get(key)
        if participant is not None and participant.closed:
            # Ended by the server (removed, its room closed, consent lost): its
            # URL is gone now, not when the collector frees the member.
            del resources[key]
            return None
        if participant is None or participant.room.name != request.match_info["room"]:
            return None
        return participant

    def make_delete(kind: str) -> Handler:
        async def delete(request: web.Request) -> web.StreamResponse:
            participant = held(request, kind)
            if participant is None:
                return _plain(404, "no such session")  # and a wrong URL forgets nothing
            resources.pop((kind, request.match_info["resource"]), None)
            await participant.close("left")
            return web.Response(status=200)

        return delete

    def make_patch(kind: str) -> Handler:
        async def patch(request: web.Request) -> web.StreamResponse:
            if held(request, kind) is None:
                return _plain(404, "no such session")
            # RFC 9725 §4.3.1: a session supporting neither trickle ICE nor
            # ICE restarts answers every PATCH 501 (its one candidate is in
            # the answer; a client whose address changed posts again).
            return _plain(
                501,
                "PATCH is not implemented: the server is ICE-lite, with no trickle ICE"
                " and no ICE restart (its candidate is in the answer)",
            )

        return patch

    for kind in ("whip", "whep"):
        endpoint = f"{prefix}/rooms/{{room}}/{kind}"
        session = f"{endpoint}/{{resource}}"
        posts = app.router.add_resource(endpoint)
        posts.add_route("POST", cors.wrap(make(kind)))
        posts.add_route("OPTIONS", cors.options("POST", **{"Accept-Post": "application/sdp"}))
        sessions[kind] = app.router.add_resource(session)
        sessions[kind].add_route("DELETE", cors.wrap(make_delete(kind)))
        sessions[kind].add_route("PATCH", cors.wrap(make_patch(kind)))
        sessions[kind].add_route("OPTIONS", cors.options("PATCH, DELETE"))


def metrics_handler(server: Server) -> Handler:
    """A GET handler serving the server's metrics in Prometheus text format."""

    async def handler(request: web.Request) -> web.StreamResponse:
        body, content_type = render_metrics(server)
        return web.Response(body=body, headers={"Content-Type": content_type})

    return handler
