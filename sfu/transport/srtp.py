"""SRTP keys from a DTLS-SRTP handshake, and the libsrtp sessions that use them.

DTLS-SRTP (RFC 5764) negotiates a protection profile in the ``use_srtp``
extension and derives the master keys with the TLS exporter (RFC 5705).
This module knows the profiles the Server offers and how to turn the
exported keying material into a pair of :class:`pylibsrtp.Session`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pylibsrtp
from pylibsrtp import Policy
from pylibsrtp._binding import ffi as _ffi
from pylibsrtp._binding import lib as _lib

__all__ = [
    "INDEX_STEP",
    "PROFILES",
    "SrtpKeys",
    "SrtpProfile",
    "create_srtp_sessions",
    "index_steps",
    "split_keying_material",
]

#: Replay window for inbound streams (packets). libsrtp's default is 128; audio
#: over a congested path can reorder further than that, and a larger window
#: costs a few bytes per stream.
REPLAY_WINDOW = 1024


#: libsrtp, at both ends, guesses a packet's index (rollover counter and
#: sequence number, RFC 3711 section 3.3.1) from the highest one it has seen
#: on the SSRC: a sequence number less than 2**15 ahead of it reads as ahead,
#: one further ahead as behind (a replay: refused by the receiver; a sender's
#: libsrtp refuses to protect it). Steps this long read as ahead even when
#: six in a row are lost on the way (7 * 2**12 < 2**15).
INDEX_STEP = 1 << 12


def index_steps(last: int, target: int) -> list[int]:
    """The sequence numbers to send, in order, on an SSRC whose last packet
    had ``last``, so that the ones after ``target`` read as ahead at both
    ends: none when ``target`` is less than :data:`INDEX_STEP` ahead, else
    one every :data:`INDEX_STEP` and ``target`` itself (at most 16).

    Both libsrtp ends guess from the same packets the same way, so each step
    moves them on together (rollover counter included); a stream that went
    on without reaching a receiver for a while (a slot it did not have for a
    renegotiation or two) is taken up again where it is.
    """
    distance = (target - last) & 0xFFFF
    if distance < INDEX_STEP:
        return []
    steps = [(last + step) & 0xFFFF for step in range(INDEX_STEP, distance, INDEX_STEP)]
    return [*steps, target & 0xFFFF]


@dataclass(frozen=True)
class SrtpProfile:
    """One DTLS-SRTP protection profile (RFC 5764 §4.1.2, RFC 7714 §14.2)."""

    name: bytes  # the OpenSSL name, as in the use_srtp extension
    libsrtp: int  # pylibsrtp.Policy.SRTP_PROFILE_* constant
    key_length: int  # master key, bytes
    salt_length: int  # master salt, bytes


def _available(profile: SrtpProfile) -> bool:
    # A libsrtp built without an AEAD backend has no GCM: such a profile is
    # left out rather than negotiated and then failing to create a session.
    try:
        Policy(srtp_profile=profile.libsrtp)
    except pylibsrtp.Error:  # pragma: no cover - depends on how libsrtp was built
        return False
    return True


#: Offered in this order of preference: AES-GCM first (RFC 7714; authenticated
#: encryption in one pass, 16-byte tag), then the mandatory-to-implement
#: AES128_CM_SHA1_80 (RFC 5764, RFC 8827 §6.5) that every WebRTC client has.
PROFILES: tuple[SrtpProfile, ...] = tuple(
    profile
    for profile in (
        SrtpProfile(b"SRTP_AEAD_AES_128_GCM", Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12),
        SrtpProfile(b"SRTP_AES128_CM_SHA1_80", Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14),
    )
    if _available(profile)
)


@dataclass(frozen=True)
class SrtpKeys:
    """The SRTP master keys of one session, from the server's point of view."""

    profile: int  # pylibsrtp.Policy.SRTP_PROFILE_* constant
    local: bytes  # master key + salt the server protects with (server write)
    remote: bytes  # master key + salt the server unprotects with (client write)

    def __repr__(self) -> str:
        # Never put key material in logs or tracebacks.
        return f"SrtpKeys(profile={self.profile}, local=<{len(self.local)} bytes>, remote=<{len(self.remote)} bytes>)"


def split_keying_material(profile: SrtpProfile, material: bytes) -> tuple[bytes, bytes]:
    """Split exported keying material into ``(client_write, server_write)``.

    RFC 5764 §4.2: the exporter output (label ``EXTRACTOR-dtls_srtp``) is::

        client_write_SRTP_master_key[key_length]
        server_write_SRTP_master_key[key_length]
        client_write_SRTP_master_salt[salt_length]
        server_write_SRTP_master_salt[salt_length]

    Each returned value is key + salt, as libsrtp takes them.
    """
    k, s = profile.key_length, profile.salt_length
    if len(material) != 2 * (k + s):
        raise ValueError(f"keying material is {len(material)} bytes, expected {2 * (k + s)}")
    client = material[:k] + material[2 * k : 2 * k + s]
    server = material[k : 2 * k] + material[2 * k + s :]
    return client, server


# One work buffer for every pylibsrtp Session made in a thread (see _share_work_buffer).
_work_buffers = threading.local()


def create_srtp_sessions(keys: SrtpKeys) -> tuple[pylibsrtp.Session, pylibsrtp.Session]:
    """Return ``(tx, rx)``: the session that protects what the server sends and
    the one that unprotects what it receives, for any SSRC.

    Repeated transmission of an index stays forbidden on tx (libsrtp's
    default): with AES-CM or GCM, protecting two payloads under the same SSRC
    and index reuses the keystream, so a sender must never do it.
    """
    if _DIRECT:
        return (
            _direct_session(keys.local, Policy.SSRC_ANY_OUTBOUND, keys.profile, 0),
            _direct_session(keys.remote, Policy.SSRC_ANY_INBOUND, keys.profile, REPLAY_WINDOW),
        )
    tx_policy = Policy(
        key=keys.local, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=keys.profile
    )
    rx_policy = Policy(
        key=keys.remote, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=keys.profile
    )
    rx_policy.window_size = REPLAY_WINDOW
    tx, rx = pylibsrtp.Session(tx_policy), pylibsrtp.Session(rx_policy)
    _share_work_buffer(tx)
    _share_work_buffer(rx)
    return tx, rx


# Policies without a key, one per (profile, SSRC type, replay window), with
# the master key + salt length the profile needs: _direct_session copies one.
_templates: dict[tuple[int, int, int], tuple[Policy, int]] = {}


def _template(profile: int, ssrc_type: int, window: int) -> tuple[Policy, int]:
    entry = _templates.get((profile, ssrc_type, window))
    if entry is None:
        policy = Policy(ssrc_type=ssrc_type, srtp_profile=profile)
        if window:
            policy.window_size = window
        length = _lib.srtp_profile_get_master_key_length(
            profile
        ) + _lib.srtp_profile_get_master_salt_length(profile)
        entry = _templates[(profile, ssrc_type, window)] = (policy, length)
    return entry


def _dealloc(srtp: Any) -> None:
    _lib.srtp_dealloc(srtp[0])


def _direct_session(key: bytes, ssrc_type: int, profile: int, window: int) -> pylibsrtp.Session:
    """A pylibsrtp Session made as ``Session(Policy(...))`` makes it, in half the time.

    A join makes two sessions; through pylibsrtp each builds a Policy (a
    struct, two profile calls, a key copy) and a 1,500-byte work buffer this
    module then replaces. Here the policy struct is copied from a template
    and the session gets its thread's shared buffer at once (~39 -> ~20 µs
    for the pair). Used only when pylibsrtp's Session has the layout this
    expects (:data:`_DIRECT`, checked at import).
    """
    template, length = _template(profile, ssrc_type, window)
    if len(key) != length:
        raise ValueError(f"SRTP master key + salt is {len(key)} bytes, the profile needs {length}")
    policy = _ffi.new("srtp_policy_t *", template._policy[0])
    key_data = _ffi.new("unsigned char[]", key)  # libsrtp reads it only in srtp_create
    policy.key = key_data
    srtp = _ffi.new("srtp_t *")
    status = _lib.srtp_create(srtp, policy)
    if status != 0:
        raise pylibsrtp.Error(f"srtp_create failed with status {status}")
    session = pylibsrtp.Session.__new__(pylibsrtp.Session)
    session._srtp = _ffi.gc(srtp, _dealloc)
    session._cdata, session._buffer = _shared_buffer()
    return session


def _shared_buffer() -> tuple[Any, Any]:
    shared = getattr(_work_buffers, "buffer", None)
    if shared is None:
        cdata = _ffi.new("char[]", _WORK_BUFFER_SIZE)
        shared = _work_buffers.buffer = (cdata, _ffi.buffer(cdata))
    return shared


def _share_work_buffer(session: pylibsrtp.Session) -> None:
    """Point the session's 1,500-byte work buffer at its thread's shared buffer.

    pylibsrtp gives every Session its own buffer to copy a packet into, run
    libsrtp and copy it out: 3 KB per participant for two sessions, all used
    from the event-loop thread that made them and never across an ``await``.
    Sharing one per thread is safe there (a Server per thread, each with its
    own loop, works: cffi lets the threads run libsrtp at once), and leaves
    the session as it was on any other pylibsrtp layout (the fan-out checks
    the same internals, see sfu/_relay.pyx).
    """
    if getattr(session, "_cdata", None) is None or getattr(session, "_buffer", None) is None:
        return
    if len(session._buffer) != _WORK_BUFFER_SIZE:
        return
    session._cdata, session._buffer = _shared_buffer()


def _layout() -> tuple[bool, int]:
    """Whether a Session is exactly ``_srtp``, ``_cdata``, ``_buffer``, and the buffer's size."""
    try:
        probe = pylibsrtp.Session(
            Policy(
                key=bytes(30),
                ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
            )
        )
        names = sorted(vars(probe))
        size = len(probe._buffer)
    except Exception:  # pragma: no cover - another pylibsrtp layout
        return False, 1500
    return names == ["_buffer", "_cdata", "_srtp"], size


#: True when pylibsrtp's Session is laid out as this module knows it: then
#: sessions are made by :func:`_direct_session`, else through pylibsrtp.
_DIRECT, _WORK_BUFFER_SIZE = _layout()
