"""DTLS-SRTP, server side, as a state machine over memory BIOs.

The Server is always the DTLS server (it answers ``a=setup:passive``). One
:class:`DtlsServer` per session takes datagrams in with :meth:`DtlsServer.feed`
and hands datagrams out through a ``send`` callback; it never touches a socket
and never reads the clock: the caller passes ``now`` (``loop.time()``) and
calls :meth:`DtlsServer.handle_timeout` when :meth:`DtlsServer.next_timeout`
says so.

- DTLS 1.2: RFC 6347. DTLS-SRTP (use_srtp, key export): RFC 5764.
- Certificates are self-signed and authenticated by the SDP ``a=fingerprint``
  (RFC 8122): the client certificate must match one of the offer's
  fingerprints of the strongest hash function the offer uses (§5), or the
  handshake fails and no keys are produced.

OpenSSL is driven through :mod:`sfu.transport.openssl_session` (the same
bindings as pyOpenSSL, without its per-call wrappers); the context is made
with pyOpenSSL. A memory BIO is a byte stream, not a datagram queue: one
read returns every record written since the last one, and a partial
record written into it would shift every later record. So incoming datagrams
are checked to hold whole records before they go in, and outgoing bytes are
cut at record boundaries and packed into datagrams of at most :data:`MTU`.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from OpenSSL import SSL

from sfu.errors import InvalidOffer
from sfu.transport import openssl_session
from sfu.transport.dtls_record import RecordSecret, iter_records
from sfu.transport.openssl_session import FAILED, WANT_READ, OpenSslSession
from sfu.transport.srtp import PROFILES, SrtpKeys, split_keying_material

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "MTU",
    "Certificate",
    "DtlsServer",
    "SrtpKeys",
    "is_dtls_datagram",
]

logger = logging.getLogger(__name__)

#: Largest datagram sent, in bytes. Below the IPv6 minimum MTU (1280) minus the
#: IPv6 and UDP headers, so a flight carrying a certificate is never
#: fragmented at the IP level (fragments are often dropped by NATs).
MTU = 1200

#: Seconds from the first datagram to a completed handshake before giving up.
HANDSHAKE_TIMEOUT = 30.0

#: How long a generated certificate is valid. WebRTC peers authenticate it by
#: fingerprint, not by date, but a Server should still make a new one before
#: :attr:`Certificate.expires`.
CERTIFICATE_LIFETIME = datetime.timedelta(days=365)

_DTLS_1_2 = 0xFEFD  # ProtocolVersion {254, 253}; pyOpenSSL has no constant
_RECORD_HEADER = 13
_EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"  # RFC 5764 §4.2
_CHANGE_CIPHER_SPEC, _ALERT, _HANDSHAKE = 20, 21, 22  # record content types
_MAX_REPLAYS = 8  # re-sends of our last flight, after the handshake
#: Records a datagram may hold: a flight's datagram has a handful (up to
#: ~6), and each record of a datagram is walked in Python, so a 64 KB one of
#: 5,000 empty records would cost ~4 ms of the event loop (from a checked
#: address: the client's, or anyone forging it).
MAX_RECORDS = 32

# The server key is ECDSA, so only ECDHE-ECDSA suites apply; AEAD first, CBC
# last for old stacks. The client's key type (RSA or ECDSA) is not limited by
# this: it only signs CertificateVerify.
_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
    b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"
)

# Hash function names of the SDP fingerprint attribute (RFC 8122 §5, which
# takes them from the IANA "Hash Function Textual Names" registry).
_DIGESTS: dict[str, hashes.HashAlgorithm] = {
    "sha-1": hashes.SHA1(),
    "sha-224": hashes.SHA224(),
    "sha-256": hashes.SHA256(),
    "sha-384": hashes.SHA384(),
    "sha-512": hashes.SHA512(),
}
#: Their order of strength, weakest first.
_STRENGTH: dict[str, int] = {name: rank for rank, name in enumerate(_DIGESTS)}
# The same functions from hashlib: the client certificate is checked by
# hashing the DER of the copy OpenSSL already parsed and comparing raw bytes
# (pyOpenSSL's ``X509.digest`` formats every byte in Python: ~3x the cost).
_HASHLIB_DIGESTS: dict[str, Callable[[bytes], Any]] = {
    "sha-1": hashlib.sha1,
    "sha-224": hashlib.sha224,
    "sha-256": hashlib.sha256,
    "sha-384": hashlib.sha384,
    "sha-512": hashlib.sha512,
}


def _format_fingerprint(digest: bytes) -> str:
    return digest.hex(":").upper()


def is_dtls_datagram(data: bytes) -> bool:
    """Return True if `data` is a sequence of whole DTLS records.

    Each record (RFC 6347 §4.1, DTLSPlaintext / DTLSCiphertext)::

         0               1               2               3
        +---------------+---------------+---------------+---------------+
        |  ContentType  | version major | version minor |    epoch ...  |
        +---------------+---------------+---------------+---------------+
        |   ... epoch   |          sequence_number (48 bits) ...        |
        +---------------+---------------+---------------+---------------+
        |                  ... sequence_number          |   length ...  |
        +---------------+---------------+---------------+---------------+
        |  ... length   |  fragment (length bytes) ...
        +---------------+---------------

    ContentType must be in 20..63 (the DTLS range of the RFC 7983 demux) and
    the major version 254 (DTLS 1.0 and 1.2 both use it; ClientHello records
    often say 1.0). A record running past the end of the datagram, or more
    than :data:`MAX_RECORDS` records, makes the whole datagram invalid.
    """
    end = len(data)
    pos = 0
    records = 0
    if end == 0:
        return False
    while pos < end:
        records += 1
        if end - pos < _RECORD_HEADER or records > MAX_RECORDS:
            return False
        if not 20 <= data[pos] <= 63 or data[pos + 1] != 0xFE:
            return False
        pos += _RECORD_HEADER + (data[pos + 11] << 8 | data[pos + 12])
    return pos == end


def self_signed(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, lifetime: datetime.timedelta
) -> x509.Certificate:
    """A self-signed certificate for ``key``, as WebRTC peers use (RFC 8827 6.5).

    The name is random: the certificate must not identify a server or a room.
    It is back-dated a day so a peer with a slow clock does not see it as not
    yet valid.
    """
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, secrets.token_hex(16))])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + lifetime)
        .sign(key, hashes.SHA256())
    )


class Certificate:
    """One ECDSA P-256 self-signed certificate per Server, with its key.

    Every :class:`DtlsServer` made with it shares one OpenSSL context.
    """

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self._key = key
        self._certificate = certificate
        self._context: SSL.Context | None = None
        #: SHA-256 fingerprint, for ``a=fingerprint:sha-256 <fingerprint>``.
        self.fingerprint: str = _format_fingerprint(certificate.fingerprint(hashes.SHA256()))

    @classmethod
    def generate(cls) -> Certificate:
        """Make a new key pair and a self-signed certificate for it."""
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self_signed(key, CERTIFICATE_LIFETIME)
        return cls(key, certificate)

    @property
    def expires(self) -> datetime.datetime:
        """When the certificate stops being valid (UTC)."""
        return self._certificate.not_valid_after_utc

    def fingerprints(self) -> list[tuple[str, str]]:
        """``(algorithm, value)`` pairs, as in ``a=fingerprint``, strongest last."""
        return [
            (name, _format_fingerprint(self._certificate.fingerprint(_DIGESTS[name])))
            for name in ("sha-256", "sha-384", "sha-512")
        ]

    def ssl_context(self) -> SSL.Context:
        """The OpenSSL context every session of this certificate uses (made once)."""
        if self._context is None:
            self._context = self._make_context()
        return self._context

    def _make_context(self) -> SSL.Context:
        context = SSL.Context(SSL.DTLS_METHOD)
        # DTLS 1.2 only: RFC 8827 forbids 1.0, and the record splitting in this
        # module knows the 1.2 record header, not DTLS 1.3's unified header.
        context.set_min_proto_version(_DTLS_1_2)
        context.set_max_proto_version(_DTLS_1_2)
        context.set_options(
            SSL.OP_NO_TICKET
            | SSL.OP_NO_COMPRESSION
            | SSL.OP_CIPHER_SERVER_PREFERENCE
            # Nothing sets an MTU on a memory BIO: use the one given per session.
            | SSL.OP_NO_QUERY_MTU
            # Keys are exported once; a renegotiation would only cost CPU.
            | getattr(SSL, "OP_NO_RENEGOTIATION", 0)
        )
        # Every session is a new peer: resumption would skip the certificate.
        context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        # The client certificate is required and pinned to the offer's
        # fingerprint by DtlsServer.verify_peer, through this callback.
        openssl_session.install_verify_callback(context)
        context.use_certificate(self._certificate)
        context.use_privatekey(self._key)
        context.check_privatekey()
        context.set_cipher_list(_CIPHERS)
        # OpenSSL picks the first profile of this list that the client offers.
        context.set_tlsext_use_srtp(b":".join(profile.name for profile in PROFILES))
        return context


class DtlsServer:
    """DTLS 1.2 server side of one session, over memory BIOs (RFC 6347, RFC 5764).

    ``remote_fingerprints`` are the offer's ``a=fingerprint`` values as
    ``(algorithm, value)``, e.g. ``("sha-256", "AB:CD:...")``; the client
    certificate must match one of those of the strongest hash function
    among them (RFC 8122 §5; entries with an unknown hash or a malformed
    value are skipped, and weaker ones beside a stronger one are ignored). ``send`` gets each outgoing datagram; it is called only from
    :meth:`feed`, :meth:`handle_timeout` and :meth:`close`.

    States: ``new`` → ``connecting`` (first datagram) → ``connected`` (keys
    set) → ``closed`` (close_notify either way, or :meth:`close`); ``failed``
    from ``connecting`` or ``connected``, with the reason in :attr:`failure`.
    """

    __slots__ = (
        "__weakref__",
        "_deadline",
        "_final_flight",
        "_handshake_timeout",
        "_label",
        "_peer_rejected",
        "_peer_verdict",
        "_records",
        "_remote",
        "_replays",
        "_retransmit_at",
        "_send",
        "_ssl",
        "dropped",
        "failure",
        "keys",
        "retransmissions",
        "state",
    )

    def __init__(
        self,
        certificate: Certificate,
        remote_fingerprints: Sequence[tuple[str, str]],
        send: Callable[[bytes], None],
        *,
        label: str = "",
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        # (hash function, the raw digest the client certificate must have),
        # of the strongest hash function the offer uses (RFC 8122 §5): a
        # weaker fingerprint beside it is ignored, or a collision in the weak
        # function would let another certificate in.
        usable: list[tuple[str, bytes]] = []
        for algorithm, value in remote_fingerprints:
            name = algorithm.strip().lower()
            digest = _DIGESTS.get(name)
            if digest is None:
                continue
            try:
                expected = bytes.fromhex(value.replace(":", ""))
            except ValueError:
                continue
            if len(expected) == digest.digest_size:
                usable.append((name, expected))
        strongest = max((_STRENGTH[name] for name, _ in usable), default=None)
        self._remote: list[tuple[Callable[[bytes], Any], bytes]] = [
            (_HASHLIB_DIGESTS[name], expected)
            for name, expected in usable
            if _STRENGTH[name] == strongest
        ]
        if not self._remote:
            raise InvalidOffer(
                "the offer has no usable a=fingerprint: give the client certificate's digest "
                f"with one of {', '.join(_DIGESTS)}"
            )
        self._send = send
        self._handshake_timeout = handshake_timeout
        self._label = label or f"{id(self):x}"
        self.state = "new"
        self.keys: SrtpKeys | None = None
        self.failure: str | None = None
        #: Datagrams ignored: malformed, or arriving after the session ended.
        self.dropped = 0
        #: Flights re-sent on a timeout.
        self.retransmissions = 0
        self._deadline: float | None = None  # handshake gives up at this time
        self._retransmit_at: float | None = None
        self._peer_rejected = False
        #: The verify callback's verdict on the client certificate, once asked.
        self._peer_verdict: bool | None = None
        self._ssl: OpenSslSession | None = OpenSslSession(certificate.ssl_context(), MTU, self)
        # After the handshake: the record keys and our last flight, so that the
        # OpenSSL connection (~85 KB) can be freed (see sfu.transport.dtls_record).
        self._records: RecordSecret | None = None
        self._final_flight: list[bytes] = []
        self._replays = 0

    def __repr__(self) -> str:
        return f"<DtlsServer {self._label} {self.state}>"

    # ------------------------------------------------------------------ input

    def feed(self, data: bytes, now: float) -> bool:
        """Take one datagram of DTLS records; return True if it completed the handshake.

        Never raises on bad input: a datagram that is not whole DTLS records
        is dropped and counted; OpenSSL discards bad records itself, and a
        fatal alert or handshake error moves the session to ``failed``.
        """
        ssl = self._ssl
        if ssl is None and self._records is not None and is_dtls_datagram(data):
            self._feed_released(data)
            return False
        if ssl is None or not is_dtls_datagram(data):
            self.dropped += 1
            logger.debug(
                "x dtls %s: dropped %d bytes in state %s", self._label, len(data), self.state
            )
            return False
        logger.debug("< dtls %s: %d bytes", self._label, len(data))
        if self.state == "new":
            self.state = "connecting"
            self._deadline = now + self._handshake_timeout
        ssl.write(data)
        if self.state == "connecting":
            return self._handshake(ssl, now)
        self._read(ssl)
        return False

    def _handshake(self, ssl: OpenSslSession, now: float) -> bool:
        outcome = ssl.do_handshake()
        if outcome == WANT_READ:
            self._flush(ssl)
            self._arm_timer(ssl, now)
            return False
        if outcome == openssl_session.CLOSED:
            logger.debug("< dtls %s: close_notify during the handshake", self._label)
            self._end("closed", None, notify=False)
            return False
        if outcome == FAILED:
            reasons = openssl_session.error_reasons()
            if self._peer_rejected:
                self._fail("fingerprint mismatch")
            else:
                self._fail(f"handshake failed: {reasons}")
            return False

        # Checked again on the finished session: the verify callback is the
        # early answer, this is the one the keys depend on.
        if not ssl.peer_certificate(self._check_peer):
            self._fail("fingerprint mismatch", notify=True)
            return False
        selected = ssl.selected_srtp_profile()
        profile = next((p for p in PROFILES if p.name == selected), None)
        if profile is None:
            self._fail("no SRTP profile negotiated", notify=True)
            return False
        material = ssl.export_keying_material(
            _EXPORTER_LABEL, 2 * (profile.key_length + profile.salt_length)
        )
        client_write, server_write = split_keying_material(profile, material)
        self.keys = SrtpKeys(profile=profile.libsrtp, local=server_write, remote=client_write)
        self.state = "connected"
        self._deadline = self._retransmit_at = None
        cipher = ssl.cipher_name()
        logger.debug("- dtls %s: connected, %s, %s", self._label, cipher, profile.name.decode())
        flight = self._flush(ssl)
        master, client_random, server_random = ssl.secrets()
        records = None
        if master and client_random and server_random:
            records = RecordSecret.of(cipher, master, client_random, server_random)
        if records is not None:
            self._records, self._final_flight, self._ssl = records, flight, None
            ssl.free()
        # What the handshake needed and nothing after it does.
        self._remote = []
        return True

    def _feed_released(self, data: bytes) -> None:
        """After the handshake, without OpenSSL: the client's alerts and repeated flights."""
        assert self._records is not None
        try:
            records = iter_records(data)
        except ValueError:
            self.dropped += 1
            return
        for kind, epoch, _sequence, header, fragment in records:
            if kind in (_HANDSHAKE, _CHANGE_CIPHER_SPEC):
                # The client did not get our last flight and sent its own again:
                # answer its Finished (the flight's one epoch-1 record) once.
                # The flight usually comes as one datagram of epoch-0 records
                # (Certificate ... ChangeCipherSpec) ending with that Finished.
                if kind == _HANDSHAKE and epoch == 1 and self._replays < _MAX_REPLAYS:
                    self._replays += 1
                    self.retransmissions += 1
                    for datagram in self._final_flight:
                        self._emit(datagram)
                continue
            if kind != _ALERT or epoch != 1:
                self.dropped += 1  # application data, or a plaintext (unauthenticated) alert
                continue
            try:
                alert = self._records.keys().open(header, fragment)
            except ValueError:
                # Forged (a client's datagram holds no such record): the rest
                # of it is not decrypted either, one AES-GCM per datagram at most.
                self.dropped += 1
                return
            if len(alert) == 2 and alert[1] == 0:
                logger.debug("< dtls %s: close_notify", self._label)
                self._end("closed", None, notify=True)
                return
            if len(alert) == 2 and alert[0] == 2:
                self._fail(f"fatal alert {alert[1]} from the client")
                return

    def _read(self, ssl: OpenSslSession) -> None:
        """Process records after the handshake: alerts, a repeated client
        Finished (OpenSSL re-sends our last flight), application data."""
        while True:
            outcome, data = ssl.recv()
            if outcome == WANT_READ:
                break
            if outcome == openssl_session.CLOSED:
                logger.debug("< dtls %s: close_notify", self._label)
                self._end("closed", None, notify=True)
                return
            if outcome == FAILED:
                self._fail(f"connection failed: {openssl_session.error_reasons()}")
                return
            # No data channel on an audio-only session: nothing reads it.
            self.dropped += 1
            logger.debug("x dtls %s: %d bytes of application data ignored", self._label, len(data))
        self._flush(ssl)

    # ------------------------------------------------------------------ time

    def next_timeout(self) -> float | None:
        """When :meth:`handle_timeout` is next due (the clock of ``now``), or None."""
        if self.state != "connecting" or self._deadline is None:
            return None
        if self._retransmit_at is None:
            return self._deadline
        return min(self._retransmit_at, self._deadline)

    def handle_timeout(self, now: float) -> None:
        """Re-send the last flight if its timer ran out; fail past the deadline.

        OpenSSL keeps the retransmission timer (1 s, doubling, RFC 6347
        §4.2.4.1) on its own clock; :meth:`next_timeout` translates it into
        the caller's. Called early, this does nothing but re-arm.
        """
        ssl = self._ssl
        if ssl is None or self.state != "connecting" or self._deadline is None:
            return
        if now >= self._deadline:
            self._fail("handshake timeout")
            return
        if self._retransmit_at is None or now < self._retransmit_at:
            return
        resent = ssl.handle_timeout()
        if resent < 0:
            # OpenSSL gives up after its own number of retransmissions.
            openssl_session.error_reasons()
            self._fail("handshake timeout")
            return
        if resent:
            self.retransmissions += 1
            logger.debug("> dtls %s: retransmitting flight", self._label)
        self._flush(ssl)
        self._arm_timer(ssl, now)

    def _arm_timer(self, ssl: OpenSslSession, now: float) -> None:
        remaining = ssl.timeout()
        self._retransmit_at = None if remaining is None else now + remaining

    # ------------------------------------------------------------------ end

    def close(self) -> None:
        """Send close_notify if connected and free the OpenSSL session. Idempotent."""
        if self._ssl is None and self._records is None:
            return
        self._end("closed", None, notify=self.state == "connected")

    def _fail(self, reason: str, *, notify: bool = False) -> None:
        logger.debug("x dtls %s: failed: %s", self._label, reason)
        self.keys = None
        self._end("failed", reason, notify=notify)

    def _end(self, state: str, failure: str | None, *, notify: bool) -> None:
        ssl = self._ssl
        if ssl is not None:
            if notify:
                ssl.shutdown()  # queues close_notify
            # Whatever OpenSSL queued (an alert, close_notify) still goes out.
            self._flush(ssl)
            ssl.free()
        elif self._records is not None and notify:
            self._emit(self._records.keys().seal(_ALERT, b"\x01\x00"))  # warning, close_notify
        self._ssl = None
        self._records = None
        self._final_flight = []
        self.state = state
        self.failure = failure
        self._deadline = self._retransmit_at = None

    # ------------------------------------------------------------------ helpers

    def verify_peer(self, certificate: Any) -> bool:
        """OpenSSL's verify callback, for the client's end-entity certificate
        (an ``X509 *``): it must match a fingerprint of the offer.

        Rejecting here, before the server's Finished, makes OpenSSL send a
        fatal alert, so the client learns of it instead of waiting for media.
        OpenSSL asks twice about a self-signed certificate (with its error,
        then to close the chain): the verdict of the first ask is kept.
        """
        if self._peer_verdict is None:
            self._peer_verdict = self._check_peer(openssl_session.certificate_der(certificate))
        return self._peer_verdict

    def _check_peer(self, der: bytes) -> bool:
        """True if `der` matches an offer fingerprint of its strongest hash (RFC 8122 §5).

        Asked by the verify callback (the early answer: a mismatch ends the
        handshake with an alert) and again on the finished session (the
        answer the keys depend on).
        """
        matched = bool(der) and any(
            hash_function(der).digest() == expected for hash_function, expected in self._remote
        )
        if not matched:
            self._peer_rejected = True
        return matched

    def _flush(self, ssl: OpenSslSession) -> list[bytes]:
        """Send what OpenSSL wrote, whole records packed into datagrams of at most MTU."""
        data = ssl.read_output()
        if not data:
            return []
        sent = []
        end = len(data)
        start = pos = 0
        while pos < end:
            # OpenSSL sizes each record to the MTU already; a datagram takes as
            # many whole records as fit (RFC 6347 §4.1.1).
            next_pos = pos + _RECORD_HEADER + (data[pos + 11] << 8 | data[pos + 12])
            if next_pos - start > MTU and pos > start:
                sent.append(data[start:pos])
                start = pos
            pos = next_pos
        sent.append(data[start:])
        for datagram in sent:
            self._emit(datagram)
        return sent

    def _emit(self, datagram: bytes) -> None:
        logger.debug("> dtls %s: %d bytes", self._label, len(datagram))
        self._send(datagram)
