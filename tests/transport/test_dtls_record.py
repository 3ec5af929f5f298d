"""The post-handshake DTLS record layer: PRF, record splitting, AES-GCM records."""

from __future__ import annotations

import pytest

from sfu.transport.dtls_record import RecordKeys, RecordSecret, iter_records, prf

pytestmark = pytest.mark.compiled_and_python_alike  # see tests/alike.py


def test_prf_sha256_vector() -> None:
    # The TLS 1.2 PRF test vector published on the IETF TLS list (P_SHA256).
    secret = bytes.fromhex("9bbe436ba940f017b17652849a71db35")
    seed = bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c")
    out = prf(secret, b"test label", seed, 100, "sha256")
    assert out[:32].hex() == "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a"
    assert len(out) == 100


def test_derive_only_for_gcm() -> None:
    master, client, server = bytes(48), bytes(32), bytes(range(32))
    assert RecordKeys.derive("ECDHE-ECDSA-AES128-SHA", master, client, server) is None
    assert RecordKeys.derive("ECDHE-ECDSA-CHACHA20-POLY1305", master, client, server) is None
    assert RecordKeys.derive("ECDHE-ECDSA-AES256-GCM-SHA384", master, client, server) is not None


def test_record_secret_derives_the_same_keys_once() -> None:
    master, client, server = b"m" * 48, b"c" * 32, b"s" * 32
    assert RecordSecret.of("ECDHE-ECDSA-AES128-SHA", master, client, server) is None
    secret = RecordSecret.of("ECDHE-ECDSA-AES256-GCM-SHA384", master, client, server)
    assert secret is not None
    keys = secret.keys()
    assert keys == RecordKeys.derive("ECDHE-ECDSA-AES256-GCM-SHA384", master, client, server)
    assert secret.keys() is keys, "derived once, then kept"
    keys.seal(21, b"\x01\x00")
    assert secret.keys().next_sequence == 2, "the sequence lives in the one key object"


def test_seal_and_open_mirror_each_other() -> None:
    master, client_random, server_random = b"m" * 48, b"c" * 32, b"s" * 32
    server = RecordKeys.derive(
        "ECDHE-ECDSA-AES128-GCM-SHA256", master, client_random, server_random
    )
    assert server is not None
    # The client's view: the same keys with the directions swapped.
    client = RecordKeys(server.server_key, server.server_iv, server.client_key, server.client_iv)
    record = server.seal(21, b"\x01\x00")
    ((kind, epoch, sequence, header, fragment),) = iter_records(record)
    assert (kind, epoch, sequence) == (21, 1, 1)
    assert client.open(header, fragment) == b"\x01\x00"
    assert iter_records(server.seal(21, b"\x01\x00"))[0][2] == 2, "sequence numbers advance"
    tampered = fragment[:-1] + bytes([fragment[-1] ^ 1])
    with pytest.raises(ValueError):
        client.open(header, tampered)


@pytest.mark.parametrize("data", [b"\x15\xfe\xfd\x00", b"\x15\xfe\xfd" + bytes(8) + b"\x00\x05abc"])
def test_iter_records_truncated(data: bytes) -> None:
    with pytest.raises(ValueError):
        iter_records(data)
