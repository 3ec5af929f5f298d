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
