"""SRTP sessions: the shared work buffer changes nothing but memory."""

from __future__ import annotations

import os
import struct

import pylibsrtp
import pytest

from sfu.transport.srtp import (
    INDEX_STEP,
    PROFILES,
    SrtpKeys,
    create_srtp_sessions,
    index_steps,
)

pytestmark = pytest.mark.compiled_and_python_alike  # see tests/alike.py


def rtp(sequence: int, ssrc: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 111, sequence, sequence * 960, ssrc) + payload


def test_interleaved_sessions_sharing_the_work_buffer_round_trip() -> None:
    gcm = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
    keys_a = SrtpKeys(profile=gcm, local=os.urandom(28), remote=os.urandom(28))
    keys_b = SrtpKeys(profile=gcm, local=os.urandom(28), remote=os.urandom(28))
    tx_a, rx_a = create_srtp_sessions(keys_a)
    tx_b, rx_b = create_srtp_sessions(keys_b)
    assert tx_a._cdata is tx_b._cdata is rx_a._cdata, "one work buffer for all sessions"
    # The far ends: the same keys, the other way round.
    peer_a_tx, _ = create_srtp_sessions(SrtpKeys(gcm, keys_a.remote, keys_a.local))
    _, peer_b_rx = create_srtp_sessions(SrtpKeys(gcm, keys_b.remote, keys_b.local))
    for sequence in range(1, 50):
        sent_b = rtp(sequence, 0xB, os.urandom(sequence))
        protected_b = tx_b.protect(sent_b)
        sent_a = rtp(sequence, 0xA, os.urandom(100 - sequence))
        received_a = rx_a.unprotect(peer_a_tx.protect(sent_a))
        assert received_a == sent_a
        assert peer_b_rx.unprotect(protected_b) == sent_b


def test_sessions_of_two_threads_do_not_share_a_work_buffer() -> None:
    """Two Servers, each on an event loop in its own thread: cffi lets both
    threads run libsrtp at once, so each thread has its own shared buffer."""
    import threading

    cm = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    failures = [0, 0]
    buffers: list[object] = [None, None]
    ready = threading.Barrier(2)

    def worker(index: int) -> None:
        a, b = os.urandom(30), os.urandom(30)
        tx, _ = create_srtp_sessions(SrtpKeys(cm, local=a, remote=b))
        _, rx = create_srtp_sessions(SrtpKeys(cm, local=b, remote=a))
        buffers[index] = tx._cdata
        payload = bytes([index]) * 1000
        ready.wait()
        for sequence in range(4000):
            packet = rtp(sequence, 1000 + index, payload)
            try:
                if rx.unprotect(tx.protect(packet)) != packet:
                    failures[index] += 1
            except pylibsrtp.Error:
                failures[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert buffers[0] is not buffers[1]
    assert failures == [0, 0]


def test_sessions_are_made_directly_with_the_installed_pylibsrtp() -> None:
    """The direct path (half the cost of pylibsrtp's constructors) applies to
    the pylibsrtp installed: if its Session changed shape this fails, and the
    server would be on the slower path without anyone noticing."""
    from sfu.transport import srtp

    assert srtp._DIRECT
    keys = SrtpKeys(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, os.urandom(30), os.urandom(30))
    tx, rx = create_srtp_sessions(keys)
    assert type(tx) is pylibsrtp.Session and type(rx) is pylibsrtp.Session
    assert sorted(vars(tx)) == sorted(vars(pylibsrtp.Session()))


@pytest.mark.parametrize("profile_name", [p.name.decode() for p in PROFILES])
def test_direct_sessions_interoperate_and_protect_as_pylibsrtp_does(profile_name: str) -> None:
    """Sessions made directly and sessions made through pylibsrtp's Policy
    and Session, with the same keys, are the same SRTP: same ciphertext, each
    opens the other's packets, the same replay window on receive and the
    same refusal to protect an index twice on send."""
    from sfu.transport import srtp

    profile = next(p for p in PROFILES if p.name.decode() == profile_name)
    size = profile.key_length + profile.salt_length
    keys = SrtpKeys(profile.libsrtp, os.urandom(size), os.urandom(size))
    direct_tx, direct_rx = create_srtp_sessions(keys)
    reference_tx = pylibsrtp.Session(
        pylibsrtp.Policy(
            key=keys.local, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=keys.profile
        )
    )
    reference_rx_policy = pylibsrtp.Policy(
        key=keys.remote, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=keys.profile
    )
    reference_rx_policy.window_size = srtp.REPLAY_WINDOW
    reference_rx = pylibsrtp.Session(reference_rx_policy)
    # What the far end sends: protected with the server's receive key.
    far_tx = pylibsrtp.Session(
        pylibsrtp.Policy(
            key=keys.remote, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=keys.profile
        )
    )
    packets = [rtp(sequence, 0x1234, os.urandom(40 + sequence % 7)) for sequence in range(1, 1200)]
    for packet in packets[:5]:
        assert direct_tx.protect(packet) == reference_tx.protect(packet)
    with pytest.raises(pylibsrtp.Error):
        direct_tx.protect(packets[0])  # the same index again: keystream reuse
    sent = [far_tx.protect(packet) for packet in packets]
    # Newest first, then one 1,100 behind: inside a 1,024 window it would open.
    for receiver in (direct_rx, reference_rx):
        assert receiver.unprotect(sent[-1]) == packets[-1]
        assert receiver.unprotect(sent[-1000]) == packets[-1000]  # within the window
        with pytest.raises(pylibsrtp.Error):
            receiver.unprotect(sent[-1100])  # behind it
        with pytest.raises(pylibsrtp.Error):
            receiver.unprotect(sent[-1])  # a replay


def test_a_key_of_the_wrong_length_is_refused() -> None:
    cm = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    with pytest.raises(ValueError, match="30"):
        create_srtp_sessions(SrtpKeys(cm, os.urandom(28), os.urandom(30)))


@pytest.mark.parametrize("distance", [100, INDEX_STEP - 1, INDEX_STEP, 34_000, 65_000, 65_535])
@pytest.mark.parametrize(
    "lost", [(), (0,), (0, 1, 2, 3, 4, 5), (3, 4, 5, 6, 7, 8), (-1,), (-2, -1)]
)
def test_index_steps_take_both_ends_to_the_target(distance: int, lost: tuple[int, ...]) -> None:
    """An SSRC's stream went on ``distance`` packets without reaching a
    receiver: after the steps (some of them lost on the way), both libsrtp
    ends take the packets after the target as new, whatever the index."""
    cm = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    keys = SrtpKeys(cm, os.urandom(30), os.urandom(30))
    server_tx, _ = create_srtp_sessions(keys)
    _, client_rx = create_srtp_sessions(SrtpKeys(cm, keys.remote, keys.local))
    last = 40_000  # past 2**15: libsrtp guesses the index from here on
    assert client_rx.unprotect(server_tx.protect(rtp(last, 7, b"before"))) == rtp(
        last, 7, b"before"
    )
    target = (last + distance) & 0xFFFF
    steps = index_steps(last, target)
    assert len(steps) <= 16 and (not steps or steps[-1] == target)
    assert (steps == []) == (distance < INDEX_STEP)
    dropped = {index % len(steps) for index in lost} if steps else set()
    for index, sequence in enumerate(steps):
        protected = server_tx.protect(rtp(sequence, 7, b"step"))
        if index not in dropped:
            client_rx.unprotect(protected)
    for sequence in range(target + 1, target + 6):
        packet = rtp(sequence & 0xFFFF, 7, b"after")
        assert client_rx.unprotect(server_tx.protect(packet)) == packet
