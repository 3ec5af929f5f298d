"""STUN binding requests for ICE-lite, including malformed input."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from aioice import stun
from hypothesis import given
from hypothesis import strategies as st

from sfu.transport.ice import (
    ROLE_CONFLICT,
    UNKNOWN_ATTRIBUTE,
    IceCredentials,
    error_response,
    parse_binding_request,
    success_response,
)

pytestmark = pytest.mark.compiled_and_python_alike  # see tests/alike.py

CREDENTIALS = IceCredentials("srvufrag", "p" * 32)


def request(
    username: str = "srvufrag:cli1",
    pwd: str = "p" * 32,
    *,
    method: stun.Method = stun.Method.BINDING,
) -> bytes:
    message = stun.Message(method, stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    message.attributes["USE-CANDIDATE"] = None
    message.add_message_integrity(pwd.encode())
    return bytes(message)


def test_good_request_checks_and_is_answered() -> None:
    parsed = parse_binding_request(request())
    assert (
        parsed.local_ufrag == "srvufrag" and parsed.remote_ufrag == "cli1" and parsed.use_candidate
    )
    assert parsed.check(CREDENTIALS, "cli1")
    answer = stun.parse_message(success_response(parsed, ("127.0.0.1", 5000), CREDENTIALS))
    assert answer.message_class == stun.Class.RESPONSE
    assert answer.transaction_id == parsed.transaction_id
    assert answer.attributes["XOR-MAPPED-ADDRESS"] == ("127.0.0.1", 5000)
    assert answer.check_message_integrity(CREDENTIALS.pwd.encode())


@pytest.mark.parametrize(
    ("data", "remote"),
    [
        (request(pwd="q" * 32), "cli1"),  # wrong password
        (request(username="other:cli1"), "cli1"),  # wrong server ufrag
        (request(), "cli2"),  # wrong client ufrag
    ],
)
def test_wrong_credentials_fail_the_check(data: bytes, remote: str) -> None:
    assert not parse_binding_request(data).check(CREDENTIALS, remote)


def test_request_without_integrity_fails_the_check() -> None:
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    message.attributes["USERNAME"] = "srvufrag:cli1"
    assert not parse_binding_request(bytes(message)).check(CREDENTIALS, "cli1")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x01\x00",  # truncated header
        request()[:-3],  # length mismatch
        request(username="no-colon"),
        request(method=stun.Method.ALLOCATE),
        bytes(stun.Message(stun.Method.BINDING, stun.Class.RESPONSE)),
        bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST)),  # no USERNAME
        request()[:-4] + b"\x00\x00\x00\x00",  # bad FINGERPRINT
    ],
)
def test_malformed_requests_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_binding_request(data)


@given(st.binary(max_size=120), st.binary(max_size=60))
def test_random_bytes_only_raise_value_error(data: bytes, attribute: bytes) -> None:
    for candidate in (
        b"\x00\x01" + data,
        # A well-formed header and a USERNAME/XOR-MAPPED-ADDRESS with hostile values.
        b"\x00\x01"
        + len(attribute).to_bytes(2, "big")
        + b"\x21\x12\xa4\x42"
        + bytes(12)
        + attribute,
    ):
        try:
            parse_binding_request(candidate)
        except ValueError:
            pass  # the server catches exactly this


@given(
    ufrag=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=32
    ),
    priority=st.integers(0, 2**32 - 1),
    tie_breaker=st.integers(0, 2**64 - 1),
    use_candidate=st.booleans(),
    fingerprint=st.booleans(),
)
def test_requests_from_aioice_parse_and_check(
    ufrag: str, priority: int, tie_breaker: int, use_candidate: bool, fingerprint: bool
) -> None:
    """Our codec against an independent one: whatever aioice builds, we read alike."""
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    message.attributes["USERNAME"] = f"srvufrag:{ufrag}"
    message.attributes["PRIORITY"] = priority
    message.attributes["ICE-CONTROLLING"] = tie_breaker
    if use_candidate:
        message.attributes["USE-CANDIDATE"] = None
    message.add_message_integrity(CREDENTIALS.pwd.encode())
    if not fingerprint:
        del message.attributes["FINGERPRINT"]
    parsed = parse_binding_request(bytes(message))
    assert parsed.transaction_id == message.transaction_id
    assert (parsed.local_ufrag, parsed.remote_ufrag) == ("srvufrag", ufrag)
    assert parsed.use_candidate is use_candidate
    assert parsed.check(CREDENTIALS, ufrag)
    assert not parsed.check(IceCredentials("srvufrag", "q" * 32), ufrag)


@pytest.mark.parametrize(
    "address", [("127.0.0.1", 5000), ("10.1.2.3", 65535), ("::1", 4000), ("fe80::1%lo", 9)]
)
def test_responses_read_back_with_aioice(address: tuple[str, int]) -> None:
    parsed = parse_binding_request(request())
    data = success_response(parsed, address, CREDENTIALS)
    answer = stun.parse_message(data)  # raises if FINGERPRINT is wrong
    assert "FINGERPRINT" in answer.attributes
    assert answer.attributes["XOR-MAPPED-ADDRESS"] == (address[0].split("%")[0], address[1])
    assert answer.check_message_integrity(CREDENTIALS.pwd.encode())
    assert not answer.check_message_integrity(b"q" * 32)


def test_an_ipv4_client_on_a_dual_stack_socket_is_told_its_ipv4_address() -> None:
    parsed = parse_binding_request(request())
    data = success_response(parsed, ("::ffff:192.0.2.7", 5000), CREDENTIALS)
    answer = stun.parse_message(data)
    assert answer.attributes["XOR-MAPPED-ADDRESS"] == ("192.0.2.7", 5000)
    assert data[20 + 4 + 1] == 1, "address family IPv4 (after the header and attribute header)"


def with_length(data: bytes) -> bytes:
    """``data`` with the header's length field made to match it."""
    return data[:2] + (len(data) - 20).to_bytes(2, "big") + data[4:]


def test_attributes_after_message_integrity_are_ignored() -> None:
    """RFC 8489 section 14.5: only FINGERPRINT may follow MESSAGE-INTEGRITY."""
    clean = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    clean.attributes["USERNAME"] = "srvufrag:cli1"
    clean.add_message_integrity(CREDENTIALS.pwd.encode())
    without_fingerprint = bytes(clean)[:-8]
    smuggled = with_length(without_fingerprint + b"\x00\x25\x00\x00")  # USE-CANDIDATE
    parsed = parse_binding_request(smuggled)
    assert parsed.check(CREDENTIALS, "cli1") and not parsed.use_candidate


def test_tampered_request_fails_the_check() -> None:
    data = bytearray(request())
    data[10] ^= 0x01  # the transaction id, covered by MESSAGE-INTEGRITY
    tampered = with_length(bytes(data[:-8]))  # without the FINGERPRINT that would catch it first
    assert not parse_binding_request(tampered).check(CREDENTIALS, "cli1")
    assert parse_binding_request(with_length(request()[:-8])).check(CREDENTIALS, "cli1")


def test_generated_credentials_meet_rfc_8839() -> None:
    credentials = IceCredentials.generate()
    assert len(credentials.ufrag) >= 4 and len(credentials.pwd) >= 22
    assert credentials != IceCredentials.generate()


def signed_request(
    *attributes: tuple[int, bytes], username: str = "srvufrag:cli1", pwd: str = CREDENTIALS.pwd
) -> bytes:
    """A binding request with raw ``attributes`` before its MESSAGE-INTEGRITY."""
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    head = bytes(message)
    for kind, value in attributes:
        head += kind.to_bytes(2, "big") + len(value).to_bytes(2, "big") + value
        head += bytes(-len(value) % 4)
    head = with_length(head + bytes(24))[:-24]  # the length counts MESSAGE-INTEGRITY
    integrity = hmac.digest(pwd.encode(), head, hashlib.sha1)
    return head + b"\x00\x08\x00\x14" + integrity


def raw_attributes(data: bytes) -> dict[int, bytes]:
    """A STUN message's attribute values by type, unpadded."""
    found, position = {}, 20
    while position < len(data):
        kind, length = (
            int.from_bytes(data[position : position + 2], "big"),
            int.from_bytes(data[position + 2 : position + 4], "big"),
        )
        found[kind] = data[position + 4 : position + 4 + length]
        position += 4 + length + (-length % 4)
    return found


def test_unknown_comprehension_required_attributes_are_listed() -> None:
    """RFC 8489 6.3.1.1: those the server cannot understand get a 420, the
    comprehension-optional ones (0x8000 and up) are ignored."""
    parsed = parse_binding_request(
        signed_request((0x7777, b"x"), (0xC057, b"\x00\x01\x00\x0a"), (0x0024, bytes(4)))
    )
    assert parsed.check(CREDENTIALS, "cli1")
    assert parsed.unknown == (0x7777,)
    assert not parsed.ice_controlled
    data = error_response(parsed, UNKNOWN_ATTRIBUTE, CREDENTIALS)
    answer = stun.parse_message(data)
    assert answer.message_class == stun.Class.ERROR
    assert answer.transaction_id == parsed.transaction_id
    assert answer.attributes["ERROR-CODE"] == (420, "Unknown Attribute")
    assert raw_attributes(data)[0x000A] == b"\x77\x77"  # UNKNOWN-ATTRIBUTES (aioice lacks it)
    assert answer.check_message_integrity(CREDENTIALS.pwd.encode())
    assert "FINGERPRINT" in answer.attributes


def test_ice_controlled_is_read_and_answered_with_a_role_conflict() -> None:
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    message.attributes["USERNAME"] = "srvufrag:cli1"
    message.attributes["PRIORITY"] = 1
    message.attributes["ICE-CONTROLLED"] = 2**64 - 1
    message.add_message_integrity(CREDENTIALS.pwd.encode())
    message.add_fingerprint()
    parsed = parse_binding_request(bytes(message))
    assert parsed.ice_controlled and parsed.unknown == ()
    answer = stun.parse_message(error_response(parsed, ROLE_CONFLICT, CREDENTIALS))
    assert answer.attributes["ERROR-CODE"] == (487, "Role Conflict")
    assert "UNKNOWN-ATTRIBUTES" not in answer.attributes
    assert answer.check_message_integrity(CREDENTIALS.pwd.encode())


def test_an_ordinary_check_has_no_unknown_attributes() -> None:
    parsed = parse_binding_request(request())
    assert parsed.unknown == () and not parsed.ice_controlled


def test_a_request_full_of_unknown_attributes_names_a_few() -> None:
    """The 420 lists at most eight types; past 32 attributes (parsed before the
    credential check) the request is malformed."""
    attributes = [(kind, b"") for kind in range(0x4000, 0x4000 + 20)]
    parsed = parse_binding_request(signed_request(*attributes))
    assert parsed.unknown == tuple(range(0x4000, 0x4008))
    assert parsed.check(CREDENTIALS, "cli1")
    with pytest.raises(ValueError, match="more than 32 attributes"):
        parse_binding_request(signed_request(*[(0x8100, b"")] * 300))
