"""One participant's WebRTC session on the server's shared port.

A session is created when an offer is answered. It owns the ICE
credentials, the checked client addresses, the DTLS server and, once the
handshake is done, the two SRTP contexts. It knows nothing about rooms:
what arrives is handed to its :class:`SessionHandler` (the participant).

States: ``new`` (answered, waiting for a STUN check) -> ``checking`` (an
address passed a check, DTLS under way) -> ``connected`` (SRTP keys) ->
``closed``. Closing is idempotent and always ends in the handler's
``session_closed``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

import pylibsrtp

from .dtls import DtlsServer
from .ice import BindingRequest, IceCredentials
from .rtp import is_rtcp
from .srtp import create_srtp_sessions

if TYPE_CHECKING:
    from .server import Server

__all__ = ["Session", "SessionHandler"]

logger = logging.getLogger(__name__)

Address = tuple[Any, ...]


#: Distinct SSRCs a client may send SRTP/SRTCP with (a speaker uses one, a
#: browser's receive-only lines a few for their reports).
MAX_INBOUND_SSRCS = 16
#: Addresses a session remembers as checked (a client on a few interfaces, a NAT
#: rebinding); past it the oldest one not in use is forgotten.
MAX_CHECKED_ADDRESSES = 8


class SessionHandler(Protocol):
    def session_connected(self, session: Session) -> None: ...
    def session_address_changed(self, session: Session) -> None: ...
    def session_rtp(self, session: Session, packet: bytes, now: float) -> None: ...
    def session_rtcp(self, session: Session, packet: bytes, now: float) -> None: ...
    def session_closed(self, session: Session, reason: str) -> None: ...


class Session:
    __slots__ = (
        "address",
        "checked_addresses",
        "close_reason",
        "created",
        "credentials",
        "dtls",
        "dtls_fingerprints",
        "handshake_queued",
        "inbound_ssrcs",
        "handler",
        "last_valid",
        "remote_ufrag",
        "server",
        "srtp_rx",
        "srtp_tx",
        "state",
    )

    def __init__(
        self,
        server: Server,
        credentials: IceCredentials,
        remote_ufrag: str,
        remote_fingerprints: tuple[tuple[str, str], ...],
        handler: SessionHandler,
        now: float,
    ) -> None:
        self.server = server
        self.credentials = credentials
        self.remote_ufrag = remote_ufrag
        self.handler = handler
        self.state = "new"
        self.address: Address | None = None
        # Addresses its binding requests came from, oldest first (at most
        # MAX_CHECKED_ADDRESSES: one client could otherwise add one per source port).
        self.checked_addresses: dict[Address, None] = {}
        self.last_valid = now
        self.created = now
        self.dtls_fingerprints = remote_fingerprints
        self.handshake_queued = 0  # its datagrams waiting in the server's handshake backlog
        # SSRCs whose packets authenticated: libsrtp keeps a stream for each
        # (SSRC_ANY_INBOUND) and never drops it, so their number is capped.
        self.inbound_ssrcs: set[int] = set()
        self.dtls = DtlsServer(
            server.certificate,
            remote_fingerprints,
            self._send_dtls,
            handshake_timeout=server.handshake_timeout,
        )
        self.srtp_tx: pylibsrtp.Session | None = None
        self.srtp_rx: pylibsrtp.Session | None = None
        self.close_reason: str | None = None

    def __repr__(self) -> str:
        return f"<Session {self.credentials.ufrag} {self.state} {self.address}>"

    # -- input from the server's socket --------------------------------

    def receive_binding(self, request: BindingRequest, address: Address, now: float) -> None:
        """A binding request that passed the credential check."""
        if address not in self.checked_addresses:
            self.checked_addresses[address] = None
            self.server._address_checked(self, address)
            if len(self.checked_addresses) > MAX_CHECKED_ADDRESSES:
                oldest = next(a for a in self.checked_addresses if a != self.address)
                del self.checked_addresses[oldest]
                self.server._address_forgotten(self, oldest)
        if self.address is None or (request.use_candidate and address != self.address):
            self.address = address
            logger.debug("%r selected %s", self, address)
            if self.state == "new":
                self.state = "checking"
                self.server._handshake_started(self)
            self.handler.session_address_changed(self)
        if address == self.address:
            # Consent is for the address media goes to (RFC 7675: per candidate
            # pair): checks from elsewhere do not keep a stream to it alive.
            self.last_valid = now

    def receive_dtls(self, data: bytes, now: float) -> None:
        if self.state not in ("checking", "connected"):
            self.server.drops["dtls before ice"] += 1
            return
        completed = self.dtls.feed(data, now)
        if completed and self.dtls.keys is not None:
            self.srtp_tx, self.srtp_rx = create_srtp_sessions(self.dtls.keys)
            self.state = "connected"
            self.last_valid = now
            self.server._handshake_done(self)
            logger.debug("%r connected", self)
            self.handler.session_connected(self)
        elif self.dtls.state == "failed":
            self.close(f"dtls failed: {self.dtls.failure}")
        elif self.dtls.state == "closed":
            self.close("closed by the client")

    def receive_srtp(self, data: bytes, now: float, address: Address) -> None:
        rx = self.srtp_rx
        if rx is None:
            self.server.drops["srtp before dtls"] += 1
            return
        rtcp = is_rtcp(data)
        if len(data) < 12:
            self.server.drops["srtp unprotect failed"] += 1
            return
        ssrc = int.from_bytes(data[4:8] if rtcp else data[8:12], "big")
        known = self.inbound_ssrcs
        if ssrc not in known and len(known) >= MAX_INBOUND_SSRCS:
            self.server.drops["srtp from too many ssrcs"] += 1
            return
        try:
            plain = rx.unprotect_rtcp(data) if rtcp else rx.unprotect(data)
        except (pylibsrtp.Error, ValueError):  # ValueError: longer than libsrtp takes
            self.server.drops["srtp unprotect failed"] += 1
            return
        known.add(ssrc)
        if address == self.address:  # consent, as in receive_binding()
            self.last_valid = now
        if rtcp:
            self.handler.session_rtcp(self, plain, now)
        else:
            self.handler.session_rtp(self, plain, now)

    def handle_timeout(self, now: float) -> None:
        deadline = self.dtls.next_timeout()
        if deadline is not None and now >= deadline:
            self.dtls.handle_timeout(now)
            if self.dtls.state == "failed":
                self.close(f"dtls failed: {self.dtls.failure}")

    # -- output ---------------------------------------------------------

    def _send_dtls(self, data: bytes) -> None:
        if self.address is not None:
            self.server._send(data, self.address)

    def send_rtcp(self, packet: bytes) -> None:
        """Protect and send one (compound) RTCP packet to the client."""
        if self.srtp_tx is None or self.address is None:
            return
        self.server._send(self.srtp_tx.protect_rtcp(packet), self.address)

    # -- end --------------------------------------------------------------

    def close(self, reason: str) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self.close_reason = reason
        logger.debug("%r closed: %s", self, reason)
        self.dtls.close()
        self.server._session_closed(self)
        self.handler.session_closed(self, reason)
