"""SRTP sessions: the shared work buffer changes nothing but memory."""

from __future__ import annotations

import os
import struct

import pylibsrtp

from sfu.transport.srtp import SrtpKeys, create_srtp_sessions


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
