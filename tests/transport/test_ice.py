"""STUN binding requests for ICE-lite, including malformed input."""

from __future__ import annotations

import pytest
from aioice import stun
from hypothesis import given
from hypothesis import strategies as st

from sfu.transport.ice import IceCredentials, parse_binding_request, success_response

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
