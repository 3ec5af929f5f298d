"""DtlsServer against a pyOpenSSL DTLS client, through in-memory lists."""

from __future__ import annotations

import datetime
import re
import struct
import time

import pylibsrtp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL
from pylibsrtp import Policy

from sfu.errors import InvalidOffer
from sfu.transport import dtls_record, openssl_session
from sfu.transport.dtls import (
    HANDSHAKE_TIMEOUT,
    MTU,
    Certificate,
    DtlsServer,
    SrtpKeys,
    is_dtls_datagram,
    self_signed,
)
from sfu.transport.dtls_record import iter_records
from sfu.transport.srtp import PROFILES, create_srtp_sessions, split_keying_material

pytestmark = pytest.mark.compiled_and_python_alike  # see tests/alike.py

GCM = b"SRTP_AEAD_AES_128_GCM"
CM = b"SRTP_AES128_CM_SHA1_80"
LENGTHS = {GCM: (16, 12), CM: (16, 14)}
LIBSRTP = {GCM: Policy.SRTP_PROFILE_AEAD_AES_128_GCM, CM: Policy.SRTP_PROFILE_AES128_CM_SHA1_80}


def records(data: bytes) -> list[bytes]:
    """Cut a run of DTLS records (RFC 6347 §4.1) into single records."""
    out = []
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from("!H", data, pos + 11)
        out.append(data[pos : pos + 13 + length])
        pos += 13 + length
    assert pos == len(data)
    return out


def fingerprint(certificate: x509.Certificate, algorithm: hashes.HashAlgorithm) -> str:
    return ":".join(f"{b:02X}" for b in certificate.fingerprint(algorithm))


def named_certificate(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, names: int
) -> x509.Certificate:
    """A self-signed certificate naming ``names`` hosts."""
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "client")])
    now = datetime.datetime.now(datetime.timezone.utc)
    hosts = [x509.DNSName(f"host{number}.example.org") for number in range(names)]
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(hosts), critical=False)
        .sign(key, hashes.SHA256())
    )


class Client:
    """A DTLS-SRTP client as a browser would be: connect state, own certificate."""

    def __init__(
        self,
        key_type: str = "ec",
        profiles: bytes | None = GCM + b":" + CM,
        *,
        certificate: bool = True,
        accept_server: bool = True,
        ciphers: bytes | None = None,
        host_names: int = 0,
    ) -> None:
        if key_type == "rsa":
            key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = rsa.generate_private_key(
                public_exponent=65537, key_size=2048
            )
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        if host_names:  # a larger certificate (~20 bytes a name), as a CA-issued one is
            self.certificate = named_certificate(key, host_names)
        else:
            self.certificate = self_signed(key, datetime.timedelta(days=1))
        self.fingerprints = [("sha-256", fingerprint(self.certificate, hashes.SHA256()))]
        context = SSL.Context(SSL.DTLS_METHOD)
        context.set_options(SSL.OP_NO_QUERY_MTU)
        context.set_verify(SSL.VERIFY_PEER, lambda *args: accept_server)
        if certificate:
            context.use_certificate(self.certificate)
            context.use_privatekey(key)
        if profiles is not None:
            context.set_tlsext_use_srtp(profiles)
        if ciphers is not None:
            context.set_cipher_list(ciphers)
        self.ssl = SSL.Connection(context, None)
        self.ssl.set_connect_state()
        self.ssl.set_ciphertext_mtu(MTU)
        self.connected = False
        self.error: SSL.Error | None = None

    def _step(self) -> list[bytes]:
        if not self.connected and self.error is None:
            try:
                self.ssl.do_handshake()
            except SSL.WantReadError:
                pass
            except SSL.Error as exc:
                self.error = exc
            else:
                self.connected = True
        return self.drain()

    def start(self) -> list[bytes]:
        return self._step()

    def receive(self, datagrams: list[bytes]) -> list[bytes]:
        for datagram in datagrams:
            self.ssl.bio_write(datagram)
        return self._step()

    def drain(self) -> list[bytes]:
        """Outgoing records, one per datagram."""
        out: list[bytes] = []
        while True:
            try:
                out.extend(records(self.ssl.bio_read(65536)))
            except SSL.WantReadError:
                return out

    def keys(self) -> SrtpKeys:
        """The client's view: it protects with the client write key."""
        name = self.ssl.get_selected_srtp_profile()
        key_length, salt_length = LENGTHS[name]
        material = self.ssl.export_keying_material(
            b"EXTRACTOR-dtls_srtp", 2 * (key_length + salt_length)
        )
        k, s = key_length, salt_length
        client_write = material[:k] + material[2 * k : 2 * k + s]
        server_write = material[k : 2 * k] + material[2 * k + s :]
        return SrtpKeys(profile=LIBSRTP[name], local=client_write, remote=server_write)


class Wire:
    """What the server sent, and a server wired to it."""

    def __init__(
        self, remote_fingerprints: list[tuple[str, str]], certificate: Certificate
    ) -> None:
        self.sent: list[bytes] = []
        self.server = DtlsServer(certificate, remote_fingerprints, self.sent.append)

    def take(self) -> list[bytes]:
        sent, self.sent[:] = list(self.sent), []
        return sent


@pytest.fixture(scope="module")
def certificate() -> Certificate:
    return Certificate.generate()


def run_handshake(wire: Wire, client: Client, now: float = 1000.0) -> int:
    """Pump datagrams both ways until neither side has anything to say.

    Returns how many feed() calls returned True.
    """
    completed = 0
    to_server = client.start()
    for _ in range(10):
        for datagram in to_server:
            completed += wire.server.feed(datagram, now)
        to_client = wire.take()
        for datagram in to_client:
            assert len(datagram) <= MTU
            assert is_dtls_datagram(datagram)
        to_server = client.receive(to_client)
        if not to_server and not to_client:
            break
        now += 0.01
    return completed


def rtp_packet(seq: int, ssrc: int = 0x11223344) -> bytes:
    header = struct.pack("!BBHII", 0x80, 111, seq, seq * 960, ssrc)
    return header + bytes(range(40))


def rtcp_receiver_report(ssrc: int = 0x55667788) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


# ---------------------------------------------------------------- certificate


def test_certificate_generate() -> None:
    certificate = Certificate.generate()
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", certificate.fingerprint)
    assert certificate.fingerprints()[0] == ("sha-256", certificate.fingerprint)
    assert [name for name, _ in certificate.fingerprints()] == ["sha-256", "sha-384", "sha-512"]
    assert certificate.expires > datetime.datetime.now(datetime.timezone.utc)
    assert Certificate.generate().fingerprint != certificate.fingerprint
    # One context for every session of the certificate.
    assert certificate.ssl_context() is certificate.ssl_context()


# ------------------------------------------------------------------ handshake


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
@pytest.mark.parametrize("profile", [GCM, CM])
def test_handshake_and_srtp(certificate: Certificate, key_type: str, profile: bytes) -> None:
    client = Client(key_type, profiles=profile)
    wire = Wire(client.fingerprints, certificate)
    assert wire.server.state == "new"
    assert wire.server.next_timeout() is None

    assert run_handshake(wire, client) == 1
    assert client.connected
    assert wire.server.state == "connected"
    assert wire.server.failure is None
    assert wire.server.next_timeout() is None
    # The client sees the certificate the SDP answer advertises.
    peer = client.ssl.get_peer_certificate(as_cryptography=True)
    assert peer is not None
    assert fingerprint(peer, hashes.SHA256()) == certificate.fingerprint

    keys = wire.server.keys
    assert keys is not None
    assert keys.profile == LIBSRTP[profile]
    client_keys = client.keys()
    assert keys.local == client_keys.remote
    assert keys.remote == client_keys.local
    assert keys.local != keys.remote
    assert len(keys.local) == sum(LENGTHS[profile])
    assert "local" in repr(keys) and keys.local.hex() not in repr(keys)

    server_tx, server_rx = create_srtp_sessions(keys)
    client_tx, client_rx = create_srtp_sessions(client_keys)
    for seq in (1, 2, 3):
        packet = rtp_packet(seq)
        protected = client_tx.protect(packet)
        assert protected != packet
        assert server_rx.unprotect(protected) == packet
        packet = rtp_packet(seq, ssrc=0xCAFE)
        assert client_rx.unprotect(server_tx.protect(packet)) == packet
    report = rtcp_receiver_report()
    assert server_rx.unprotect_rtcp(client_tx.protect_rtcp(report)) == report
    assert client_rx.unprotect_rtcp(server_tx.protect_rtcp(report)) == report
    # The two directions have different keys: the server cannot read its own.
    with pytest.raises(pylibsrtp.Error):
        server_rx.unprotect(server_tx.protect(rtp_packet(9, ssrc=0xBEEF)))


def test_server_prefers_gcm(certificate: Certificate) -> None:
    client = Client(profiles=CM + b":" + GCM)
    wire = Wire(client.fingerprints, certificate)
    run_handshake(wire, client)
    assert wire.server.keys is not None
    assert wire.server.keys.profile == Policy.SRTP_PROFILE_AEAD_AES_128_GCM
    assert client.ssl.get_selected_srtp_profile() == GCM


def test_profiles_offered() -> None:
    assert [profile.name for profile in PROFILES] == [GCM, CM]


def test_split_keying_material() -> None:
    gcm = PROFILES[0]
    material = bytes(range(56))  # 16 + 16 + 12 + 12
    client, server = split_keying_material(gcm, material)
    assert client == bytes(range(16)) + bytes(range(32, 44))
    assert server == bytes(range(16, 32)) + bytes(range(44, 56))
    with pytest.raises(ValueError):
        split_keying_material(gcm, material[:-1])


def test_server_flight_is_packed_in_one_datagram(certificate: Certificate) -> None:
    client = Client()
    wire = Wire(client.fingerprints, certificate)
    for datagram in client.start():
        wire.server.feed(datagram, 0.0)
    # ServerHello, Certificate, ServerKeyExchange, CertificateRequest and
    # ServerHelloDone are five records; with an ECDSA certificate they fit in
    # one datagram.
    (flight,) = wire.take()
    assert len(records(flight)) == 5
    assert len(flight) <= MTU


# ---------------------------------------------------------------- fingerprints


def test_fingerprint_mismatch(certificate: Certificate) -> None:
    client = Client()
    other = Client()
    wire = Wire(other.fingerprints, certificate)
    completed = run_handshake(wire, client)
    assert completed == 0
    assert wire.server.state == "failed"
    assert wire.server.failure == "fingerprint mismatch"
    assert wire.server.keys is None
    assert wire.server.next_timeout() is None
    # The client is told with an alert instead of being left to time out.
    assert not client.connected
    assert client.error is not None


def test_a_raising_certificate_check_fails_the_handshake(
    certificate: Certificate, caplog: pytest.LogCaptureFixture
) -> None:
    """The verify callback fails closed: an exception in the check is logged
    and ends the handshake, it does not let the client in."""

    class Broken(DtlsServer):
        def _check_peer(self, der: bytes) -> bool:
            raise RuntimeError("broken check")

    client = Client()
    wire = Wire(client.fingerprints, certificate)
    wire.server = Broken(certificate, client.fingerprints, wire.sent.append)
    with caplog.at_level("ERROR", logger="sfu.transport.openssl_session"):
        completed = run_handshake(wire, client)
    assert completed == 0
    assert wire.server.state == "failed"
    assert wire.server.keys is None
    assert not client.connected
    assert "broken check" in caplog.text


@pytest.mark.parametrize("outcome", ["connected", "mismatch", "closed early"])
def test_no_openssl_session_outlives_its_use(certificate: Certificate, outcome: str) -> None:
    """The OpenSSL session is freed and unregistered once the handshake is
    over (either way) or the server is closed mid-handshake."""
    client = Client()
    fingerprints = Client().fingerprints if outcome == "mismatch" else client.fingerprints
    before = len(openssl_session._owners)
    wire = Wire(fingerprints, certificate)
    assert len(openssl_session._owners) == before + 1, "a live session is registered"
    if outcome == "closed early":
        wire.server.feed(client.start()[0], 1000.0)
        assert wire.server.state == "connecting"
        wire.server.close()
    else:
        run_handshake(wire, client)
    assert wire.server._ssl is None
    assert wire.server.state == {"connected": "connected", "mismatch": "failed"}.get(
        outcome, "closed"
    )
    assert len(openssl_session._owners) == before


def test_openssl_bindings_used_exist() -> None:
    """sfu.transport.openssl_session calls cffi bindings that pyOpenSSL and
    cryptography ship, and one private attribute: a release dropping any
    fails here, not in a handshake."""
    from OpenSSL._util import lib

    missing = [name for name in openssl_session.BINDINGS if not hasattr(lib, name)]
    assert not missing, f"missing from OpenSSL._util.lib: {missing}"
    assert hasattr(SSL.Context(SSL.DTLS_METHOD), "_context")


def test_fingerprint_mismatch_rsa(certificate: Certificate) -> None:
    client = Client("rsa")
    wire = Wire(Client("rsa").fingerprints, certificate)
    run_handshake(wire, client)
    assert wire.server.state == "failed"
    assert wire.server.keys is None


@pytest.mark.parametrize(
    "algorithm, digest",
    [
        ("sha-1", hashes.SHA1()),
        ("SHA-224", hashes.SHA224()),
        ("sha-384", hashes.SHA384()),
        ("sha-512", hashes.SHA512()),
    ],
)
def test_fingerprint_algorithms(
    certificate: Certificate, algorithm: str, digest: hashes.HashAlgorithm
) -> None:
    client = Client()
    value = fingerprint(client.certificate, digest).lower()
    wire = Wire([("md5", "00:11"), (algorithm, value)], certificate)
    assert run_handshake(wire, client) == 1
    assert wire.server.state == "connected"


@pytest.mark.parametrize("weaker, digest", [("sha-1", hashes.SHA1()), ("sha-224", hashes.SHA224())])
def test_a_weaker_fingerprint_does_not_stand_in_for_the_strongest(
    certificate: Certificate, weaker: str, digest: hashes.HashAlgorithm
) -> None:
    """RFC 8122 §5: the strongest hash function the offer uses decides. A
    certificate that matches only a weaker fingerprint beside it (as one
    made for a collision in the weak function would) is refused."""
    client = Client()
    matching_weak = (weaker, fingerprint(client.certificate, digest))
    wrong_strong = ("sha-256", Client().fingerprints[0][1])
    wire = Wire([matching_weak, wrong_strong], certificate)
    assert run_handshake(wire, client) == 0
    assert wire.server.state == "failed"
    assert wire.server.failure == "fingerprint mismatch"
    assert wire.server.keys is None


def test_any_fingerprint_of_the_strongest_hash_may_match(certificate: Certificate) -> None:
    """Several fingerprints of the strongest function (several certificates)
    are alternatives; a stronger one decides over sha-256."""
    client = Client()
    other = Client()
    strongest = [
        ("sha-384", fingerprint(other.certificate, hashes.SHA384())),
        ("sha-384", fingerprint(client.certificate, hashes.SHA384())),
    ]
    wrong_weaker = ("sha-256", other.fingerprints[0][1])
    wire = Wire([wrong_weaker, *strongest], certificate)
    assert run_handshake(wire, client) == 1
    assert wire.server.state == "connected"


@pytest.mark.parametrize(
    "fingerprints",
    [[], [("md5", "00:11:22")], [("sha-256", "not hex")], [("sha-256", "AB:CD")]],
)
def test_no_usable_fingerprint(
    certificate: Certificate, fingerprints: list[tuple[str, str]]
) -> None:
    with pytest.raises(InvalidOffer):
        DtlsServer(certificate, fingerprints, lambda datagram: None)


def test_client_without_certificate(certificate: Certificate) -> None:
    client = Client(certificate=False)
    wire = Wire(client.fingerprints, certificate)
    assert run_handshake(wire, client) == 0
    assert wire.server.state == "failed"
    assert wire.server.failure is not None
    assert wire.server.keys is None


def test_client_without_srtp(certificate: Certificate) -> None:
    client = Client(profiles=None)
    wire = Wire(client.fingerprints, certificate)
    assert run_handshake(wire, client) == 0
    assert wire.server.state == "failed"
    assert wire.server.failure == "no SRTP profile negotiated"
    assert wire.server.keys is None


def test_client_rejects_server(certificate: Certificate) -> None:
    """A fatal alert from the client during the handshake fails the session."""
    client = Client(accept_server=False)
    wire = Wire(client.fingerprints, certificate)
    run_handshake(wire, client)
    assert client.error is not None
    assert wire.server.state == "failed"
    assert wire.server.failure is not None and wire.server.failure.startswith("handshake failed")


# --------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x16",
        b"\x16\xfe\xfd" + bytes(10),  # header only, length 0: whole but empty
        b"\x16\xfe\xfd" + bytes(8) + b"\x00\x10" + bytes(5),  # truncated body
        b"\x80" + bytes(40),  # RTP
        b"\x00\x01\x00\x00" + bytes(16),  # STUN
        b"\x17\x03\x03\x00\x02ab",  # TLS, not DTLS
    ],
)
def test_is_dtls_datagram_rejects(data: bytes) -> None:
    expected = data == b"\x16\xfe\xfd" + bytes(10)
    assert is_dtls_datagram(data) is expected


def test_truncated_record_does_not_desynchronise(certificate: Certificate) -> None:
    client = Client()
    wire = Wire(client.fingerprints, certificate)
    (hello,) = client.start()
    # Half a ClientHello is dropped whole: it must not leave bytes in the
    # memory BIO that would corrupt the next datagram.
    assert wire.server.feed(hello[: len(hello) // 2], 0.0) is False
    assert wire.server.dropped == 1
    assert wire.server.state == "new"
    assert not wire.take()
    wire.server.feed(hello, 0.0)
    to_server = client.receive(wire.take())
    for datagram in to_server:
        wire.server.feed(datagram, 0.0)
    client.receive(wire.take())
    assert wire.server.state == "connected"
    assert client.connected


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), content_type=st.integers(20, 63))
def test_garbage_never_raises(certificate: Certificate, data: bytes, content_type: int) -> None:
    sent: list[bytes] = []
    server = DtlsServer(certificate, [("sha-256", certificate.fingerprint)], sent.append)
    server.feed(data, 0.0)
    # Also as a well-framed record with a garbage body, so OpenSSL parses it.
    framed = bytes([content_type, 0xFE, 0xFD]) + bytes(8) + struct.pack("!H", len(data)) + data
    server.feed(framed, 0.0)
    assert server.state in ("new", "connecting", "failed")
    assert server.keys is None
    server.handle_timeout(HANDSHAKE_TIMEOUT + 1)
    assert server.state in ("new", "failed")


def test_garbage_mid_handshake_and_after(certificate: Certificate) -> None:
    client = Client()
    wire = Wire(client.fingerprints, certificate)
    for datagram in client.start():
        wire.server.feed(datagram, 0.0)
    flight = wire.take()
    garbage = [b"\xff" * 50, b"\x17\xfe\xfd" + bytes(8) + b"\x00\x04" + b"junk", flight[0][:20]]
    for datagram in garbage:
        wire.server.feed(datagram, 0.0)
    assert wire.server.state == "connecting"
    for datagram in client.receive(flight):
        wire.server.feed(datagram, 0.0)
    client.receive(wire.take())
    assert wire.server.state == "connected"
    # After the handshake: forged application data in epoch 1 fails its MAC
    # and is discarded (RFC 6347 §4.1.2.7); an epoch 0 alert is ignored.
    forged_app_data = b"\x17\xfe\xfd\x00\x01" + bytes(6) + b"\x00\x30" + bytes(48)
    plaintext_alert = b"\x15\xfe\xfd\x00\x00" + bytes(6) + b"\x00\x02\x02\x28"
    for datagram in [*garbage, forged_app_data, plaintext_alert]:
        assert wire.server.feed(datagram, 1.0) is False
    assert wire.server.state == "connected"
    assert wire.server.keys is not None


def test_application_data_is_ignored(certificate: Certificate) -> None:
    client = Client()
    wire = Wire(client.fingerprints, certificate)
    run_handshake(wire, client)
    dropped = wire.server.dropped
    client.ssl.send(b"hello")
    for datagram in client.drain():
        assert wire.server.feed(datagram, 2.0) is False
    assert wire.server.state == "connected"
    assert wire.server.dropped == dropped + 1


# ------------------------------------------------------------------- timers


def test_lost_flight_is_retransmitted(certificate: Certificate) -> None:
    client = Client()
    wire = Wire(client.fingerprints, certificate)
    start = 500.0
    for datagram in client.start():
        wire.server.feed(datagram, start)
    assert wire.server.state == "connecting"
    lost = wire.take()
    assert lost
    due = wire.server.next_timeout()
    assert due is not None
    # OpenSSL's first retransmission timer is 1 s (RFC 6347 §4.2.4.1).
    assert start + 0.5 < due <= start + 1.0

    wire.server.handle_timeout(start + 0.5)  # early: nothing
    assert not wire.take()
    assert wire.server.next_timeout() == due

    # OpenSSL keeps its timer on the wall clock, so the test has to let the
    # second go by for real before telling the server that it has.
    time.sleep(due - start + 0.05)
    wire.server.handle_timeout(due + 0.05)
    resent = wire.take()
    assert resent
    assert wire.server.retransmissions == 1
    # Same messages, new record sequence numbers.
    assert len(records(b"".join(resent))) == len(records(b"".join(lost)))
    assert resent != lost
    later = wire.server.next_timeout()
    assert later is not None and later > due + 1.0  # the timer doubled

    for datagram in client.receive(resent):
        wire.server.feed(datagram, due + 0.1)
    client.receive(wire.take())
    assert wire.server.state == "connected"
    assert client.connected
    assert wire.server.next_timeout() is None


def test_handshake_timeout(certificate: Certificate) -> None:
    client = Client()
    wire = Wire(client.fingerprints, certificate)
    start = 100.0
    for datagram in client.start():
        wire.server.feed(datagram, start)
    due = wire.server.next_timeout()
    assert due is not None and due <= start + HANDSHAKE_TIMEOUT
    wire.server.handle_timeout(start + HANDSHAKE_TIMEOUT - 0.001)
    assert wire.server.state == "connecting"
    wire.server.handle_timeout(start + HANDSHAKE_TIMEOUT)
    assert wire.server.state == "failed"
    assert wire.server.failure == "handshake timeout"
    assert wire.server.keys is None
    assert wire.server.next_timeout() is None
    # A late flight from the client changes nothing.
    wire.take()
    for datagram in client.receive(wire.take()):
        assert wire.server.feed(datagram, start + HANDSHAKE_TIMEOUT + 1) is False
    assert wire.server.state == "failed"


def test_handle_timeout_when_idle(certificate: Certificate) -> None:
    wire = Wire([("sha-256", certificate.fingerprint)], certificate)
    wire.server.handle_timeout(10_000.0)  # nothing started: no deadline
    assert wire.server.state == "new"
    assert not wire.take()


# -------------------------------------------------------------------- close


def test_close_sends_close_notify(certificate: Certificate) -> None:
    client = Client()
    wire = Wire(client.fingerprints, certificate)
    run_handshake(wire, client)
    wire.server.close()
    assert wire.server.state == "closed"
    assert wire.server.failure is None
    (notify,) = wire.take()
    assert notify[0] == 21  # alert record (encrypted, so the level is not visible)
    client.ssl.bio_write(notify)
    with pytest.raises(SSL.ZeroReturnError):
        client.ssl.recv(1500)
    wire.server.close()
    assert not wire.take()
    assert wire.server.state == "closed"
    assert wire.server.feed(rtp_packet(1), 3.0) is False


def test_close_before_connected_is_silent(certificate: Certificate) -> None:
    client = Client()
    wire = Wire(client.fingerprints, certificate)
    for datagram in client.start():
        wire.server.feed(datagram, 0.0)
    wire.take()
    wire.server.close()
    wire.server.close()
    assert not wire.take()
    assert wire.server.state == "closed"
    assert wire.server.next_timeout() is None


def test_close_after_failure_keeps_failure(certificate: Certificate) -> None:
    client = Client()
    wire = Wire(Client().fingerprints, certificate)
    run_handshake(wire, client)
    wire.server.close()
    assert wire.server.state == "failed"
    assert wire.server.failure == "fingerprint mismatch"


def test_client_close_notify(certificate: Certificate) -> None:
    client = Client()
    wire = Wire(client.fingerprints, certificate)
    run_handshake(wire, client)
    client.ssl.shutdown()
    for datagram in client.drain():
        wire.server.feed(datagram, 5.0)
    assert wire.server.state == "closed"
    assert wire.server.failure is None
    assert wire.server.keys is not None  # the session's keys stay readable
    # The server answers with its own close_notify.
    (notify,) = wire.take()
    assert notify[0] == 21


def test_a_client_hanging_up_during_the_handshake_closes_it_as_the_clients_doing(
    certificate: Certificate,
) -> None:
    """close_notify (plaintext, epoch 0) after the server's first flight: the
    client hung up; "closed", as after the handshake, not a failure with an
    empty reason (review: "handshake failed: unknown error")."""
    client = Client()
    wire = Wire(client.fingerprints, certificate)
    for datagram in client.start():
        wire.server.feed(datagram, 1000.0)
    assert wire.take(), "the server's first flight"
    close_notify = bytes([21, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 9, 0, 2, 1, 0])
    wire.server.feed(close_notify, 1000.01)
    assert (wire.server.state, wire.server.failure) == ("closed", None)
    assert wire.server.keys is None


# -- after the handshake, without OpenSSL (sfu.transport.dtls_record) -----------------


def handshake_until_final_flight(wire: Wire, client: Client) -> tuple[list[bytes], list[bytes]]:
    """Run the handshake until the server completes; return (client's last flight, server's last flight)."""
    to_server = client.start()
    for _ in range(10):
        completed = False
        for datagram in to_server:
            completed = wire.server.feed(datagram, 1000.0) or completed
        to_client = wire.take()
        if completed:
            return to_server, to_client
        to_server = client.receive(to_client)
    raise AssertionError("the handshake did not complete")


def test_openssl_connection_is_released_after_the_handshake(certificate: Certificate) -> None:
    client = Client()
    wire = Wire(client.fingerprints, certificate)
    run_handshake(wire, client)
    assert wire.server.state == "connected" and wire.server.keys is not None
    assert wire.server._ssl is None, "an AES-GCM session keeps no OpenSSL connection"


def test_record_keys_are_derived_only_when_a_record_needs_them(
    certificate: Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The key expansion is part of every join's CPU; most sessions end by
    # consent and never seal or open a record, so it waits for one.
    calls = []
    real_prf = dtls_record.prf

    def counting_prf(*args: object, **kwargs: object) -> bytes:
        calls.append(args)
        return real_prf(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dtls_record, "prf", counting_prf)
    client = Client()
    wire = Wire(client.fingerprints, certificate)
    run_handshake(wire, client)
    assert wire.server._ssl is None and not calls, "no key expansion at the handshake"
    wire.server.close()  # close_notify is sealed with the derived keys
    (notify,) = wire.take()
    assert len(calls) == 1
    client.ssl.bio_write(notify)
    with pytest.raises(SSL.ZeroReturnError):
        client.ssl.recv(1500)


def test_lost_final_flight_is_replayed_without_openssl(certificate: Certificate) -> None:
    client = Client()
    wire = Wire(client.fingerprints, certificate)
    client_flight, server_flight = handshake_until_final_flight(wire, client)
    assert wire.server.state == "connected" and wire.server._ssl is None
    # Our last flight is lost; the client sends its own again.
    for datagram in client_flight:
        wire.server.feed(datagram, 1001.0)
    replay = wire.take()
    assert replay == server_flight
    client.receive(replay)
    assert client.connected and client.keys().remote == wire.server.keys.local  # type: ignore[union-attr]
    # Replays are bounded.
    for _ in range(20):
        for datagram in client_flight:
            wire.server.feed(datagram, 1002.0)
    assert len(wire.take()) <= 8 * len(server_flight)


def test_final_flight_is_replayed_for_a_flight_sent_in_one_datagram(
    certificate: Certificate,
) -> None:
    """Clients usually send Certificate ... Finished as one datagram: the
    epoch-1 Finished comes after epoch-0 records in it."""
    client = Client()
    wire = Wire(client.fingerprints, certificate)
    client_flight, server_flight = handshake_until_final_flight(wire, client)
    whole = b"".join(client_flight)
    assert len(list(iter_records(whole))) > 1
    wire.server.feed(whole, 1001.0)
    assert wire.take() == server_flight


def test_forged_alerts_after_release_are_ignored(certificate: Certificate) -> None:
    client = Client()
    wire = Wire(client.fingerprints, certificate)
    run_handshake(wire, client)
    # An encrypted-looking alert that does not authenticate, and a plaintext epoch-0 one.
    forged = bytes([21, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0, 0, 9, 0, 26]) + bytes(26)
    plain = bytes([21, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 9, 0, 2, 2, 40])
    for datagram in (forged, plain, forged[:20]):
        assert wire.server.feed(datagram, 2000.0) is False
    assert wire.server.state == "connected"
    assert wire.server.dropped >= 3


def test_cbc_suite_keeps_openssl(certificate: Certificate) -> None:
    client = Client(ciphers=b"ECDHE-ECDSA-AES128-SHA")
    wire = Wire(client.fingerprints, certificate)
    run_handshake(wire, client)
    assert wire.server.state == "connected"
    assert wire.server._ssl is not None, "no record layer of our own for CBC: OpenSSL stays"
    wire.server.close()
    (notify,) = wire.take()
    client.ssl.bio_write(notify)
    with pytest.raises(SSL.ZeroReturnError):
        client.ssl.recv(1500)


def test_certificate_der_in_two_threads_at_once() -> None:
    """Servers in two threads (one per thread is supported): cffi lets go of
    the GIL inside OpenSSL, so a scratch buffer shared between threads would
    hand one thread the other's bytes (a wrong client fingerprint)."""
    import threading

    from OpenSSL import crypto

    certificates = []
    for _ in range(2):
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self_signed(key, datetime.timedelta(days=1))
        der = certificate.public_bytes(serialization.Encoding.DER)
        certificates.append((der, crypto.X509.from_cryptography(certificate)._x509))
    wrong = [0, 0]

    def read_many(index: int) -> None:
        der, pointer = certificates[index]
        for _ in range(20_000):
            if openssl_session.certificate_der(pointer) != der:
                wrong[index] += 1

    threads = [threading.Thread(target=read_many, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == [0, 0]


def test_handshakes_in_two_threads_at_once(certificate: Certificate) -> None:
    """Two threads, each completing handshakes with its own DtlsServers."""
    import threading

    failures: list[str] = []

    def handshakes() -> None:
        for _ in range(60):
            client = Client()
            wire = Wire(client.fingerprints, certificate)
            run_handshake(wire, client)
            if wire.server.state != "connected" or not client.connected:
                failures.append(f"{wire.server.state}: {wire.server.failure}")

    threads = [threading.Thread(target=handshakes) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


def test_a_freed_openssl_session_refuses_use(certificate: Certificate) -> None:
    """free() also frees the memory BIOs: later calls raise instead of reaching them."""
    session = openssl_session.OpenSslSession(certificate.ssl_context(), MTU, Client())
    session.free()
    session.free()  # idempotent
    with pytest.raises(ValueError, match="freed"):
        session.write(b"\x16\xfe\xfd")
    with pytest.raises(ValueError, match="freed"):
        session.read_output()
