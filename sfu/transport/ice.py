"""ICE-lite: answering STUN binding requests on the server's one port.

The server sends no connectivity checks (RFC 8445 section 2.5, ICE-lite),
only the proofs below, in answer to a client's checks: a client proves it holds the session's credentials by sending a binding
request whose USERNAME is ``<server ufrag>:<client ufrag>`` and whose
MESSAGE-INTEGRITY is keyed with the server's password (short-term
credentials, RFC 8489 section 9.1). The address such a request came from
becomes a *checked* address of that session; only checked addresses may
send DTLS and SRTP (RFC 8445 section 7.3.1.1): anything else from an
address nobody vouched for is dropped, so the port is no reflector: a check
gets one response, and the binding requests the server sends to make sure
of an address (:meth:`~sfu.transport.session.Session.receive_binding`'s
proofs) are at most two per check and capped server-wide.

Two checks that pass the credential check are still refused, with a
signed error response: one with a comprehension-required attribute the
server does not understand gets a 420 listing it (RFC 8489 section
6.3.1.1), and one with ICE-CONTROLLED a 487 Role Conflict (RFC 8445 section
7.3.1.1). A lite agent is always the controlled one (section 6.1.1): a
client that believes itself controlled too would wait for a nomination that
never comes; the 487 makes it switch to the controlling role and nominate.

Message coding: the server parses binding requests and builds their
responses, once per join and then once per consent check
(every ~5 s per client, for every listener). The project's design first
named :mod:`aioice.stun` as the codec; it costs ~65 µs per request and answer
(attribute tables, ``ipaddress`` objects), a large share of a join and of
an idle listener's cost. This module codes those two messages itself with
``struct``, ``hmac`` and ``zlib.crc32`` (~12 µs); the tests check it
against :mod:`aioice.stun` both ways.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import socket
import struct
import zlib
from dataclasses import dataclass

__all__ = [
    "BindingRequest",
    "IceCredentials",
    "error_response",
    "parse_binding_request",
    "parse_proof_response",
    "proof_request",
    "success_response",
]

MAGIC_COOKIE = 0x2112A442
_HEADER = struct.Struct("!HHI12s")
_ATTRIBUTE = struct.Struct("!HH")
_BINDING_REQUEST = 0x0001
_BINDING_SUCCESS = 0x0101
_BINDING_ERROR = 0x0111
_USERNAME = 0x0006
_MESSAGE_INTEGRITY = 0x0008
_ERROR_CODE = 0x0009
_UNKNOWN_ATTRIBUTES = 0x000A
_XOR_MAPPED_ADDRESS = 0x0020
_USE_CANDIDATE = 0x0025
_PRIORITY = 0x0024
_ICE_CONTROLLED = 0x8029
#: Comprehension-required attributes (0x0000-0x7FFF) the server understands:
#: those of STUN itself (RFC 8489 section 18.3) and of ICE (RFC 8445 section
#: 16.1). Any other one in a request is answered with a 420 (RFC 8489
#: section 6.3.1.1); comprehension-optional ones (0x8000-0xFFFF, e.g.
#: Chromium's GOOG-NETWORK-INFO) are ignored.
_KNOWN_REQUIRED = frozenset(
    {
        0x0001,  # MAPPED-ADDRESS
        _USERNAME,
        _MESSAGE_INTEGRITY,
        _ERROR_CODE,
        _UNKNOWN_ATTRIBUTES,
        0x0014,  # REALM
        0x0015,  # NONCE
        0x001C,  # MESSAGE-INTEGRITY-SHA256
        0x001D,  # PASSWORD-ALGORITHM
        0x001E,  # USERHASH
        _XOR_MAPPED_ADDRESS,
        _PRIORITY,
        _USE_CANDIDATE,
    }
)
#: Unknown attribute types a 420 lists at most.
_MAX_UNKNOWN = 8
#: Attributes a message may have: a client's check has fewer than ten
#: (Chromium's, with its GOOG- ones, eight). Messages are parsed before they
#: are authenticated, from any address, and a 64 KB datagram of empty
#: attributes would otherwise cost ~4 ms of the event loop every room shares.
_MAX_ATTRIBUTES = 32
#: Error codes the server answers an authenticated check with (RFC 8489
#: section 14.8, RFC 8445 section 7.3.1.1).
UNKNOWN_ATTRIBUTE = 420
ROLE_CONFLICT = 487
_REASONS = {UNKNOWN_ATTRIBUTE: "Unknown Attribute", ROLE_CONFLICT: "Role Conflict"}
# A host candidate's priority (RFC 8445 5.1.2.1: type preference 126).
_PROOF_PRIORITY = (126 << 24) | (65535 << 8) | 255
_FINGERPRINT = 0x8028
_FINGERPRINT_XOR = 0x5354554E
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
_INTEGRITY_ATTRIBUTE_LENGTH = 24  # type, length and a 20-byte HMAC-SHA1
_FINGERPRINT_ATTRIBUTE_LENGTH = 8


@dataclass(frozen=True)
class IceCredentials:
    """The server side's ufrag and password for one session."""

    ufrag: str
    pwd: str

    @classmethod
    def generate(cls) -> IceCredentials:
        # 8 and 32 ice-chars (RFC 8839 minimums: 4 and 22). Base64 of random
        # bytes uses exactly the ice-char alphabet (ALPHA / DIGIT / "+" / "/"),
        # and is much cheaper per join than choosing characters one by one.
        ufrag = base64.b64encode(secrets.token_bytes(6)).decode()
        pwd = base64.b64encode(secrets.token_bytes(24)).decode()
        return cls(ufrag, pwd)


@dataclass(frozen=True, slots=True)
class BindingRequest:
    """A parsed binding request, before its integrity is checked.

    ``signed`` is what MESSAGE-INTEGRITY covers (the message up to that
    attribute, with the header's length counting up to its end) and
    ``integrity`` the HMAC it carries; both empty when it has none.
    ``ice_controlled`` says the client believes it is the controlled agent
    (an ICE-CONTROLLED attribute) and ``unknown`` lists the comprehension-
    required attribute types the server does not understand; both are read
    only from the attributes MESSAGE-INTEGRITY covers.
    """

    transaction_id: bytes
    local_ufrag: str
    remote_ufrag: str
    use_candidate: bool
    signed: bytes = b""
    integrity: bytes = b""
    ice_controlled: bool = False
    unknown: tuple[int, ...] = ()

    def check(self, credentials: IceCredentials, remote_ufrag: str) -> bool:
        """True when the request was made with this session's credentials."""
        if not self.integrity:
            return False
        return (
            self.local_ufrag == credentials.ufrag
            and self.remote_ufrag == remote_ufrag
            and hmac.compare_digest(
                hmac.digest(credentials.pwd.encode(), self.signed, hashlib.sha1), self.integrity
            )
        )


def parse_binding_request(data: bytes) -> BindingRequest:
    """Parse a STUN binding request with a USERNAME; raise ValueError otherwise.

    FINGERPRINT, when present, must be last and right (RFC 8489 section
    14.7); attributes after MESSAGE-INTEGRITY other than FINGERPRINT are
    ignored (section 14.5). A request without MESSAGE-INTEGRITY parses but
    fails :meth:`BindingRequest.check`. Any malformation raises
    ``ValueError``, nothing else.
    """
    parsed = _parse(data, _BINDING_REQUEST)
    transaction_id, username, use_candidate, signed, integrity, ice_controlled, unknown = parsed
    if username is None:
        raise ValueError("STUN binding request has no USERNAME of the form local:remote")
    try:
        text = username.decode()
    except UnicodeDecodeError:
        raise ValueError("STUN USERNAME is not UTF-8") from None
    local_ufrag, colon, remote_ufrag = text.partition(":")
    if not colon:
        raise ValueError("STUN binding request has no USERNAME of the form local:remote")
    return BindingRequest(
        transaction_id,
        local_ufrag,
        remote_ufrag,
        use_candidate,
        signed,
        integrity,
        ice_controlled,
        tuple(unknown),
    )


def _parse(
    data: bytes, expected_type: int
) -> tuple[bytes, bytes | None, bool, bytes, bytes, bool, list[int]]:
    """``(transaction id, USERNAME, USE-CANDIDATE, signed, MESSAGE-INTEGRITY,
    ICE-CONTROLLED, unknown comprehension-required attribute types)`` of a
    STUN message of ``expected_type``; ValueError if malformed."""
    size = len(data)
    if size < 20:
        raise ValueError("STUN message shorter than its 20-byte header")
    message_type, length, cookie, transaction_id = _HEADER.unpack_from(data)
    if length != size - 20 or length % 4:
        raise ValueError("STUN message length does not match its header")
    if cookie != MAGIC_COOKIE:
        raise ValueError("STUN message without the magic cookie (RFC 5389+)")
    if message_type != expected_type:
        raise ValueError(
            "STUN message is not a binding "
            + ("request" if expected_type == _BINDING_REQUEST else "success response")
        )
    username: bytes | None = None
    use_candidate = ice_controlled = False
    unknown: list[int] = []
    signed = integrity = b""
    position = 20
    attributes = 0
    while position < size:
        if position + 4 > size:
            raise ValueError("STUN attribute header truncated")
        attributes += 1
        if attributes > _MAX_ATTRIBUTES:
            raise ValueError(f"STUN message with more than {_MAX_ATTRIBUTES} attributes")
        kind, value_length = _ATTRIBUTE.unpack_from(data, position)
        start = position + 4
        end = start + value_length
        if end > size:
            raise ValueError("STUN attribute longer than the message")
        if kind == _FINGERPRINT:
            if value_length != 4 or end != size:
                raise ValueError("STUN FINGERPRINT must be the last attribute, 4 bytes")
            expected = (zlib.crc32(data[:position]) ^ _FINGERPRINT_XOR).to_bytes(4, "big")
            if data[start:end] != expected:
                raise ValueError("STUN message fingerprint does not match")
        elif integrity:
            pass  # not covered by MESSAGE-INTEGRITY: ignored
        elif kind == _USERNAME:
            username = data[start:end]
        elif kind == _USE_CANDIDATE:
            use_candidate = True
        elif kind == _ICE_CONTROLLED:
            ice_controlled = True
        elif kind < 0x8000 and kind not in _KNOWN_REQUIRED:
            # A few named are enough for the 420; a bound keeps a datagram of
            # hundreds of them (parsed before it is authenticated) cheap.
            if len(unknown) < _MAX_UNKNOWN and kind not in unknown:
                unknown.append(kind)
        elif kind == _MESSAGE_INTEGRITY:
            if value_length != 20:
                raise ValueError("STUN MESSAGE-INTEGRITY must be 20 bytes")
            integrity = data[start:end]
            signed = data[:2] + (end - 20).to_bytes(2, "big") + data[4:position]
        position = end + (-value_length % 4)
    return transaction_id, username, use_candidate, signed, integrity, ice_controlled, unknown


def success_response(
    request: BindingRequest, address: tuple[str, int], credentials: IceCredentials
) -> bytes:
    """The binding success response: XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT."""
    host = address[0].partition("%")[0]  # an IPv6 scope is not part of the address
    if host.lower().startswith("::ffff:") and "." in host:
        # An IPv4 client on a dual-stack socket: its address is the IPv4 one.
        host = host[len("::ffff:") :]
    port = address[1] ^ (MAGIC_COOKIE >> 16)
    if ":" in host:
        mask = _COOKIE_BYTES + request.transaction_id
        raw = socket.inet_pton(socket.AF_INET6, host)
        value = struct.pack("!BBH", 0, 2, port) + bytes(a ^ b for a, b in zip(raw, mask))
    else:
        raw = socket.inet_pton(socket.AF_INET, host)
        value = struct.pack("!BBHI", 0, 1, port, int.from_bytes(raw, "big") ^ MAGIC_COOKIE)
    body = _ATTRIBUTE.pack(_XOR_MAPPED_ADDRESS, len(value)) + value
    return _signed(_BINDING_SUCCESS, request.transaction_id, body, credentials.pwd)


def error_response(request: BindingRequest, code: int, credentials: IceCredentials) -> bytes:
    """A binding error response to a request that passed the credential check:
    ERROR-CODE (with UNKNOWN-ATTRIBUTES for a 420), MESSAGE-INTEGRITY, FINGERPRINT.

    Signed like a success response (RFC 8489 section 9.1.4: only 400 and 401
    go unsigned, and the server sends neither: it answers no request that
    fails the check). ``code`` is :data:`UNKNOWN_ATTRIBUTE` or :data:`ROLE_CONFLICT`.
    """
    reason = _REASONS[code].encode()
    value = struct.pack("!HBB", 0, code // 100, code % 100) + reason
    body = _ATTRIBUTE.pack(_ERROR_CODE, len(value)) + value + bytes(-len(value) % 4)
    if code == UNKNOWN_ATTRIBUTE:
        types = b"".join(kind.to_bytes(2, "big") for kind in request.unknown)
        body += _ATTRIBUTE.pack(_UNKNOWN_ATTRIBUTES, len(types)) + types + bytes(-len(types) % 4)
    return _signed(_BINDING_ERROR, request.transaction_id, body, credentials.pwd)


def _signed(message_type: int, transaction_id: bytes, body: bytes, password: str) -> bytes:
    """Header + ``body`` + MESSAGE-INTEGRITY (keyed with ``password``) + FINGERPRINT."""
    length = len(body) + _INTEGRITY_ATTRIBUTE_LENGTH
    signed = _HEADER.pack(message_type, length, MAGIC_COOKIE, transaction_id) + body
    message = (
        signed
        + _ATTRIBUTE.pack(_MESSAGE_INTEGRITY, 20)
        + hmac.digest(password.encode(), signed, hashlib.sha1)
    )
    message = (
        message[:2] + (length + _FINGERPRINT_ATTRIBUTE_LENGTH).to_bytes(2, "big") + message[4:]
    )
    crc = zlib.crc32(message) ^ _FINGERPRINT_XOR
    return message + _ATTRIBUTE.pack(_FINGERPRINT, 4) + crc.to_bytes(4, "big")


def proof_request(transaction_id: bytes, username: str, password: str, tie_breaker: bytes) -> bytes:
    """A binding request from the server, to the client at an address it claims.

    An ICE-lite server sends no checks of its own to find paths; it sends this
    one only to prove that an address a connected session's checks name
    really answers (a return-routability check, RFC 7675 section 5.1), since
    a check's source address can be forged by the session's own client.
    ``username`` is ``<client ufrag>:<server ufrag>``, ``password`` the
    client's (RFC 8445 section 7.2.2); the server is the controlled agent.
    """
    name = username.encode()
    body = (
        _ATTRIBUTE.pack(_USERNAME, len(name))
        + name
        + bytes(-len(name) % 4)
        + _ATTRIBUTE.pack(_PRIORITY, 4)
        + _PROOF_PRIORITY.to_bytes(4, "big")
        + _ATTRIBUTE.pack(_ICE_CONTROLLED, 8)
        + tie_breaker
    )
    return _signed(_BINDING_REQUEST, transaction_id, body, password)


def parse_proof_response(data: bytes, password: str) -> bytes:
    """The transaction id of a binding success response authenticated with
    ``password`` (the client's); ValueError if it is malformed or is not."""
    transaction_id, _username, _use_candidate, signed, integrity, _, _ = _parse(
        data, _BINDING_SUCCESS
    )
    if not integrity or not hmac.compare_digest(
        hmac.digest(password.encode(), signed, hashlib.sha1), integrity
    ):
        raise ValueError("STUN binding response does not authenticate")
    return transaction_id
