"""ICE-lite: answering STUN binding requests on the server's one port.

The server never sends checks of its own (RFC 8445 section 2.5, ICE-lite):
a client proves it holds the session's credentials by sending a binding
request whose USERNAME is ``<server ufrag>:<client ufrag>`` and whose
MESSAGE-INTEGRITY is keyed with the server's password (short-term
credentials, RFC 8489 section 9.1). The address such a request came from
becomes a *checked* address of that session; only checked addresses may
send DTLS and SRTP (RFC 8445 section 7.3.1.1 + DESIGN.md rule 11).

Message coding is :mod:`aioice.stun`'s; this module decides what to
accept and builds the answers.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

from aioice import stun

__all__ = ["BindingRequest", "IceCredentials", "parse_binding_request", "success_response"]


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


@dataclass(frozen=True)
class BindingRequest:
    """A parsed binding request, before its integrity is checked."""

    message: stun.Message
    local_ufrag: str
    remote_ufrag: str
    use_candidate: bool

    def check(self, credentials: IceCredentials, remote_ufrag: str) -> bool:
        """True when the request was made with this session's credentials."""
        return (
            self.local_ufrag == credentials.ufrag
            and self.remote_ufrag == remote_ufrag
            and self.message.check_message_integrity(credentials.pwd.encode())
        )


def parse_binding_request(data: bytes) -> BindingRequest:
    """Parse a STUN binding request with a USERNAME; raise ValueError otherwise.

    FINGERPRINT, when present, is verified by the parser; a request without
    MESSAGE-INTEGRITY fails :meth:`BindingRequest.check`. Any malformation
    raises ``ValueError``, nothing else.
    """
    try:
        message = stun.parse_message(data)
    except ValueError:
        raise
    except Exception as exc:  # the codec can trip on hostile attribute values in many ways
        raise ValueError(f"STUN message malformed: {exc!r}") from None
    if message.message_method != stun.Method.BINDING or message.message_class != stun.Class.REQUEST:
        raise ValueError("STUN message is not a binding request")
    username = message.attributes.get("USERNAME")
    if not isinstance(username, str) or ":" not in username:
        raise ValueError("STUN binding request has no USERNAME of the form local:remote")
    local_ufrag, remote_ufrag = username.split(":", 1)
    return BindingRequest(
        message=message,
        local_ufrag=local_ufrag,
        remote_ufrag=remote_ufrag,
        use_candidate="USE-CANDIDATE" in message.attributes,
    )


def success_response(
    request: BindingRequest, address: tuple[str, int], credentials: IceCredentials
) -> bytes:
    """The binding success response: XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT."""
    response = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.RESPONSE,
        transaction_id=request.message.transaction_id,
    )
    response.attributes["XOR-MAPPED-ADDRESS"] = (address[0], address[1])
    response.add_message_integrity(credentials.pwd.encode())
    return bytes(response)
