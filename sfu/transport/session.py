"""One participant's WebRTC session on the server's shared port.

A session is created when an offer is answered. It owns the ICE
credentials, the checked client addresses, the DTLS server and, once the
handshake is done, the two SRTP contexts. It knows nothing about rooms:
what arrives is handed to its :class:`SessionHandler` (the participant).
What one client can make it spend is bounded: SSRCs (MAX_INBOUND_SSRCS),
SRTCP packets a second, counted before decryption (RTCP_PER_SECOND), and
address proofs, waiting (MAX_PROOFS) and a second (SESSION_PROOFS_PER_SECOND).

States: ``new`` (answered, waiting for a STUN check) -> ``checking`` (an
address passed a check, DTLS under way) -> ``connected`` (SRTP keys) ->
``closed``. Closing is idempotent and always ends in the handler's
``session_closed``.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any, Protocol

import pylibsrtp

from .._values import refilled, take_token
from ..policy import MAX_SLOTS
from ..stats import SessionState
from .dtls import DtlsServer
from .ice import BindingRequest, IceCredentials, parse_proof_response, proof_request
from .port import Shown
from .rtp import is_rtcp
from .srtp import create_srtp_sessions

if TYPE_CHECKING:
    from .server import Server

__all__ = ["Session", "SessionHandler"]

logger = logging.getLogger(__name__)

Address = tuple[Any, ...]


#: SSRCs one offer may send SRTP/SRTCP from: each of the at most MAX_SLOTS
#: receiving lines a room answers may report from an SSRC of its own
#: (aiortc's and Firefox's do; Chromium's share one), and a sending line
#: adds its media SSRC and, were they negotiated, RTX and FEC ones.
SSRCS_PER_OFFER = MAX_SLOTS + 3
#: Distinct SSRCs a session may send SRTP/SRTCP from: libsrtp keeps a stream
#: (~400 bytes) for each SSRC it authenticated, for the session's life (one
#: dropped would let a replay of its packets in again), so a client gets a
#: bounded number. Room for the offer and three renegotiations that each
#: change every SSRC (a client that makes a new sending line to speak, a new
#: line per slot): ~30 KB at most; a listener of a 3-slot room uses 1 to 3.
MAX_INBOUND_SSRCS = 4 * SSRCS_PER_OFFER
#: Addresses a session remembers as checked (a client on a few interfaces, a NAT
#: rebinding); past it the oldest one not in use is forgotten.
MAX_CHECKED_ADDRESSES = 8
#: Transaction IDs of checks remembered until connected (see Session.copied_check);
#: past it, a check from an address not checked yet needs a proof.
MAX_CHECKS_REMEMBERED = 128
#: Address proofs (see Session.receive_binding) a session may have waiting at once.
MAX_PROOFS = 4
#: Proofs to addresses other than its selected one a session may send per
#: second, and the burst allowed, on top of the server-wide PROOFS_PER_SECOND:
#: a client that answers its own proofs frees its MAX_PROOFS at once, and
#: would otherwise spend the server's budget and leave other members' NAT
#: rebindings unproven. A move needs one proof (a few for a client checking
#: from several interfaces as its NAT rebinds), asked again a second later.
SESSION_PROOFS_PER_SECOND = 2.0
SESSION_PROOF_BURST = 4.0
#: Seconds a proof waits for its answer; a check from the address then asks again.
PROOF_TIMEOUT = 1.0
#: An unanswered proof is sent once more (same transaction) after this long:
#: two datagrams for one forged check at most, so the port is a poor reflector.
PROOF_RESEND = 0.5
#: Share of ``consent_timeout`` after which a check from the selected address
#: no longer renews consent on its own word: nothing authenticated (SRTP or
#: SRTCP, which libsrtp's replay check makes fresh) came from there for that
#: long, and a check's bytes can be replayed by anyone who saw them (STUN
#: has no freshness), so the server asks the client with a proof of its own.
#: Every WebRTC client sends RTCP every few seconds: this is for the rest.
CONSENT_PROOF_AFTER = 1 / 3
#: Seconds without valid traffic from the address media goes to after which a
#: valid check from another address counts as moving there (once proven): a
#: NAT that rebound the client to a new port. Clients' consent checks (RFC
#: 7675) do not carry USE-CANDIDATE, and a listener sends RTCP every few
#: seconds, so a live path is never this quiet.
REBIND_SILENCE = 3.0
#: SRTCP packets a second a session's client may send, and the burst allowed,
#: counted before they are decrypted: each costs up to ~25 µs (decrypted, its
#: reports read) of the event loop every room shares, so a flood from one
#: member is cut here. A client sends a compound about once a second per line
#: (aiortc, Firefox; Chromium one for all), so even 16 receiving lines and a
#: sending one stay well below this.
RTCP_PER_SECOND = 50.0
RTCP_BURST = 100.0


class SessionHandler(Protocol):
    def session_connected(self, session: Session) -> None: ...
    def session_address_changed(self, session: Session) -> None: ...
    def session_rtp(self, session: Session, packet: bytes, now: float) -> None: ...
    def session_rtcp(self, session: Session, packet: bytes, now: float) -> None: ...
    def session_closed(self, session: Session, reason: str) -> None: ...


class Session:
    __slots__ = (
        "_checks_taken",
        "_flight_sent",
        "_nominated",
        "_proof_tokens",
        "_proof_tokens_at",
        "_proofs",
        "_rebind_to",
        "_rtcp_tokens",
        "_rtcp_tokens_at",
        "address",
        "bad_checks",
        "checked_addresses",
        "close_reason",
        "created",
        "credentials",
        "dtls",
        "dtls_fingerprints",
        "handshake_queued",
        "inbound_ssrcs",
        "handler",
        "last_media",
        "last_valid",
        "remote_pwd",
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
        remote_pwd: str = "",
    ) -> None:
        self.server = server
        self.credentials = credentials
        self.remote_ufrag = remote_ufrag
        # The client's ICE password (its offer's), for the server's own checks.
        self.remote_pwd = remote_pwd
        # Address proofs under way: transaction id -> [address, first sent, last sent].
        self._proofs: dict[bytes, list[Any]] = {}
        # Its share of proofs elsewhere (SESSION_PROOFS_PER_SECOND), and of SRTCP
        # (RTCP_PER_SECOND): tokens left, and when they were worked out.
        self._proof_tokens = SESSION_PROOF_BURST
        self._proof_tokens_at = now
        self._rtcp_tokens = RTCP_BURST
        self._rtcp_tokens_at = now
        # The address the client last nominated (USE-CANDIDATE) that awaits its
        # proof: selected when a proof of it comes back.
        self._nominated: Address | None = None
        # An address checked from while the selected one was quiet (a NAT
        # rebinding): selected when its proof comes back, if still quiet then.
        self._rebind_to: Address | None = None
        # The DTLS server's first flight went out: from then on the client at
        # the selected address is the one reading the handshake, so a move
        # needs a proof (else: flight to here, a forged move, the rest read
        # from elsewhere, and the audio to a victim).
        self._flight_sent = False
        self.handler = handler
        self.state: SessionState = "new"
        self.address: Address | None = None
        # Addresses its binding requests came from, oldest first (at most
        # MAX_CHECKED_ADDRESSES: one client could otherwise add one per source port).
        self.checked_addresses: dict[Address, None] = {}
        # Until connected: the transaction ID of each check taken, and where
        # it came from (see copied_check); None from then on.
        self._checks_taken: dict[bytes, Address] | None = {}
        self.last_valid = now
        # Authenticated SRTP/SRTCP from the selected address (see CONSENT_PROOF_AFTER).
        self.last_media = now
        self.created = now
        # Checks naming this session that failed its credentials (the client
        # applied another session's answer, or munged the SDP): told in the
        # reason if the handshake then times out.
        self.bad_checks = 0
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
        return f"<Session {self.credentials.ufrag} {self.state} {Shown(self.address)}>"

    # -- input from the server's socket --------------------------------

    def copied_check(self, transaction_id: bytes, address: Address) -> bool:
        """Whether a check that passed the credential check is a copy of one
        that came from another address, sent before the session connected.

        STUN has no freshness: anyone who sees a client's check go by can
        send its bytes again from an address of its own. Taken, that address
        would be let in while the DTLS handshake runs (its plaintext fatal
        alert would end it; a copied nomination before the server's first
        flight would send the flight there). A copy carries its original's
        transaction ID, which MESSAGE-INTEGRITY covers, and the client's own
        checks each have a new one (a retransmission, the same, from the same
        address): so the first address an ID came from keeps it. (A copy that
        arrives before its original takes the ID; the client's next check,
        with a new one, is taken from its own address.) None is forgotten
        before the session connects (a forgotten ID's copy would pass): past
        MAX_CHECKS_REMEMBERED, new IDs are not kept, and a check from an
        address not checked yet needs a proof (:meth:`receive_binding`).
        Once connected a copy can do no harm (alerts must be authenticated,
        SRTP is replay-protected, a move needs a proof), and nothing is kept.
        """
        taken = self._checks_taken
        if taken is None:
            return False
        source = taken.get(transaction_id)
        if source is not None:
            return source != address
        if len(taken) < MAX_CHECKS_REMEMBERED:
            taken[transaction_id] = address
        return False

    def _unvouched(self, transaction_id: bytes, address: Address) -> bool:
        """Not connected yet, too many checks to remember this one's ID, and
        from an address not checked yet: a copy of a check whose ID was not
        kept would look just like it (see :meth:`copied_check`)."""
        taken = self._checks_taken
        return (
            taken is not None
            and transaction_id not in taken
            and address not in self.checked_addresses
        )

    def receive_binding(self, request: BindingRequest, address: Address, now: float) -> None:
        """A binding request that passed the credential check.

        Its source address can be forged by the session's own client (it holds
        the credentials): one check naming a victim's address would send the
        room's audio there, or take a connected member's address away from
        it. So an address is taken on a check's word only before the DTLS
        handshake's first flight goes out and when no live session has it;
        otherwise (a move once that flight went out, an address another live
        session uses) the server first sends a check of its own there and
        waits for the client's answer, which only a client at that address
        can give (sent once more after PROOF_RESEND, and again on the next
        check; those to an address other than the selected one are capped per
        session, SESSION_PROOFS_PER_SECOND, and server-wide). A move is a check with USE-CANDIDATE, or any check from elsewhere
        while nothing valid has come from the selected address for
        REBIND_SILENCE seconds (a NAT that rebound the client: its consent
        checks carry no USE-CANDIDATE), taken only if it is still quiet when
        the proof comes back. The same proof, to the selected address, renews
        consent once nothing authenticated came from there for a while
        (CONSENT_PROOF_AFTER): a check's bytes alone can be replayed.
        """
        owner = self.server._sessions_by_address.get(address)
        stolen = owner is not None and owner is not self and owner.state != "closed"
        # (A check from an address nominated earlier asks again: its proof may
        # have been lost, and the client's consent checks now come from there.)
        nominated = request.use_candidate or address == self._nominated
        if not nominated and address != self.address and self._path_quiet(now):
            # The path media goes to went quiet and the client checks from
            # elsewhere: its NAT rebound it. Moved there once proven, if the
            # old path is still quiet then (not a nomination that outlives it).
            self._rebind_to = address
            nominated = True
        moved = self._flight_sent and nominated and address != self.address
        unvouched = self._unvouched(request.transaction_id, address)
        if (stolen or moved or unvouched) and self.remote_pwd:
            if request.use_candidate:
                self._nominated = address
            self._prove(address, now)
            return
        self._accept_check(address, request.use_candidate, now)

    def _accept_check(
        self, address: Address, use_candidate: bool, now: float, *, proven: bool = False
    ) -> None:
        if address not in self.checked_addresses:
            self.checked_addresses[address] = None
            self.server._address_checked(self, address, proven)
            if len(self.checked_addresses) > MAX_CHECKED_ADDRESSES:
                oldest = next(a for a in self.checked_addresses if a != self.address)
                del self.checked_addresses[oldest]
                self.server._address_forgotten(self, oldest)
        if use_candidate and address == self.address:
            # Nominated again where it is: an earlier nomination elsewhere, not
            # yet proven, must not move it back there later.
            self._nominated = None
        if self.address is None or (use_candidate and address != self.address):
            self.address = address
            self._nominated = self._rebind_to = None
            logger.debug("%r selected %s", self, Shown(address))
            if self.state == "new":
                self.state = "checking"
                self.server.handshakes.started(self)
            self.handler.session_address_changed(self)
        if address == self.address:
            # Consent is for the address media goes to (RFC 7675: per candidate
            # pair): checks from elsewhere do not keep a stream to it alive.
            if proven or not self.remote_pwd or not self._consent_needs_proof(now):
                self.last_valid = now
            else:
                self._prove(address, now)

    def _consent_needs_proof(self, now: float) -> bool:
        """Connected, and nothing authenticated from the selected address for a
        while: a check alone (perhaps replayed) does not renew consent then."""
        quiet = self.server.consent_timeout * CONSENT_PROOF_AFTER
        return self.state == "connected" and now - self.last_media > quiet

    def _prove(self, address: Address, now: float) -> None:
        """Send the client a binding request at ``address``; see :meth:`receive_binding`."""
        self.resend_proofs(now)
        if any(pending[0] == address for pending in self._proofs.values()):
            return  # under way (re-sent by resend_proofs)
        if len(self._proofs) >= MAX_PROOFS:
            self.server.drops["stun address proofs over the session's share"] += 1
            return
        if address != self.address and not self._proof_budget(now):
            # (A proof to the selected address is consent's, to where media
            # goes anyway; one elsewhere may be to a victim: those are capped.)
            return
        transaction_id = secrets.token_bytes(12)
        self._proofs[transaction_id] = [address, now, False]
        self.server._proof_sent(self, transaction_id)
        logger.debug("%r: proving %s", self, Shown(address))
        self._send_proof(transaction_id, address)

    def probe(self, now: float) -> None:
        """Send the client, at the address media goes to, a binding request
        of the server's now (as a consent proof is, see :meth:`receive_binding`;
        re-sent once after PROOF_RESEND): a client still there answers it,
        which renews :attr:`last_valid`. For a caller that must know whether
        the client is there at all (the WHIP/WHEP adapter, before it replaces
        a member whose client stopped answering). Nothing happens before an
        address is selected, or once closed."""
        if self.state != "closed" and self.address is not None and self.remote_pwd:
            self._prove(self.address, now)

    def _proof_budget(self, now: float) -> bool:
        """Spend one of the session's proofs elsewhere (SESSION_PROOFS_PER_SECOND)
        and one of the server's (PROOFS_PER_SECOND); False, counted, when
        either has none left (the server's is not spent for a session over its own)."""
        tokens = refilled(
            self._proof_tokens,
            self._proof_tokens_at,
            now,
            SESSION_PROOFS_PER_SECOND,
            SESSION_PROOF_BURST,
        )
        self._proof_tokens, self._proof_tokens_at = tokens, now
        if tokens < 1.0:
            self.server.drops["stun address proofs over the session's rate"] += 1
            return False
        if not self.server._proof_budget(now):
            self.server.drops["stun address proofs over the server's budget"] += 1
            return False
        self._proof_tokens = tokens - 1.0
        return True

    def _send_proof(self, transaction_id: bytes, address: Address) -> None:
        username = f"{self.remote_ufrag}:{self.credentials.ufrag}"
        request = proof_request(transaction_id, username, self.remote_pwd, self.server.tie_breaker)
        self.server._send(request, address)

    def resend_proofs(self, now: float) -> None:
        """Re-send an unanswered proof once (a STUN transaction's retransmission),
        give up on those older than PROOF_TIMEOUT (the next check asks again)."""
        for transaction_id, pending in list(self._proofs.items()):
            address, first, resent = pending
            if now - first > PROOF_TIMEOUT:
                self._forget_proof(transaction_id)
            elif not resent and now - first >= PROOF_RESEND:
                pending[2] = True
                self._send_proof(transaction_id, address)

    def receive_proof(
        self, transaction_id: bytes, data: bytes, address: Address, now: float
    ) -> None:
        """A binding success response to one of this session's proofs."""
        pending = self._proofs.get(transaction_id)
        if pending is None or pending[0] != address:
            self.server.drops["stun response unexpected"] += 1
            return
        try:
            parse_proof_response(data, self.remote_pwd)
        except ValueError:
            self.server.drops["stun response bad"] += 1
            return
        self._forget_proof(transaction_id)
        if self.state == "closed":
            return
        logger.debug("%r: %s proven", self, Shown(address))
        rebound = address == self._rebind_to and self._path_quiet(now)
        if rebound:
            logger.info(
                "%r of %r: moves to %s (the old address went quiet: a NAT rebinding)",
                self,
                self.handler,  # (the member: which room, whom)
                Shown(address),
            )
        self._accept_check(address, address == self._nominated or rebound, now, proven=True)

    def _path_quiet(self, now: float) -> bool:
        """Connected, or handshaking with a flight sent to the selected address,
        and nothing valid from that address for REBIND_SILENCE. (A NAT that
        rebinds mid-handshake would otherwise have every flight go to the
        old port until the handshake timed out.)"""
        return (
            self.state == "connected" or (self.state == "checking" and self._flight_sent)
        ) and now - self.last_valid > REBIND_SILENCE

    def _forget_proof(self, transaction_id: bytes) -> None:
        del self._proofs[transaction_id]
        self.server._proof_done(transaction_id)

    def receive_dtls(self, data: bytes, now: float) -> None:
        if self.state not in ("checking", "connected"):
            self.server.drops["dtls before ice"] += 1
            return
        completed = self.dtls.feed(data, now)
        if completed and self.dtls.keys is not None:
            self.srtp_tx, self.srtp_rx = create_srtp_sessions(self.dtls.keys)
            self.state = "connected"
            self._checks_taken = None
            self.last_valid = self.last_media = now
            self.server.handshakes.done(self)
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
        if rtcp and not self._rtcp_budget(now):
            self.server.drops["srtcp over the session's rate"] += 1
            return
        try:
            plain = rx.unprotect_rtcp(data) if rtcp else rx.unprotect(data)
        except (pylibsrtp.Error, ValueError):  # ValueError: longer than libsrtp takes
            self.server.drops["srtp unprotect failed"] += 1
            if rtcp:
                # Not the client's: a forger of its address must not spend its share.
                self._rtcp_tokens = min(self._rtcp_tokens + 1.0, RTCP_BURST)
            return
        known.add(ssrc)
        if address == self.address:  # consent, as in receive_binding()
            self.last_valid = self.last_media = now
        if rtcp:
            self.handler.session_rtcp(self, plain, now)
        else:
            self.handler.session_rtp(self, plain, now)

    def _rtcp_budget(self, now: float) -> bool:
        """Spend one of the session's SRTCP packets (RTCP_PER_SECOND); False when none is left."""
        taken, self._rtcp_tokens = take_token(
            self._rtcp_tokens, self._rtcp_tokens_at, now, RTCP_PER_SECOND, RTCP_BURST
        )
        self._rtcp_tokens_at = now
        return taken

    def handle_timeout(self, now: float) -> None:
        deadline = self.dtls.next_timeout()
        if deadline is not None and now >= deadline:
            self.dtls.handle_timeout(now)
            if self.dtls.state == "failed":
                self.close(f"dtls failed: {self.dtls.failure}")

    # -- output ---------------------------------------------------------

    def _send_dtls(self, data: bytes) -> None:
        if self.address is not None:
            self._flight_sent = True
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
        for transaction_id in list(self._proofs):
            self._forget_proof(transaction_id)
        self.server._session_closed(self)
        self.handler.session_closed(self, reason)
