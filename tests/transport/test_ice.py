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
    assert answer.transaction_id == parsed.message.transaction_id
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


def test_generated_credentials_meet_rfc_8839() -> None:
    credentials = IceCredentials.generate()
    assert len(credentials.ufrag) >= 4 and len(credentials.pwd) >= 22
    assert credentials != IceCredentials.generate()
