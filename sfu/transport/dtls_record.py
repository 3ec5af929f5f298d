"""The DTLS 1.2 record layer after the handshake, without OpenSSL.

Once the handshake is done, a session only ever needs three things from
DTLS: to recognise the client's alerts (close_notify), to re-send its own
last flight if the client did not get it, and to send a close_notify of its
own. Keeping a whole OpenSSL connection per session for that costs
~85 KB each (``bench/README.md``); this module does the same with the
session's record keys, derived from the master secret (RFC 5246 6.3) when a record first needs them.

Only AES-GCM suites (RFC 5288) are handled; for any other suite the caller
keeps its OpenSSL connection. A GCM record (RFC 6347 4.1, RFC 5288 3)::

    | type | version FE FD | epoch (2) | sequence (6) | length (2) |
    | explicit nonce (8) | ciphertext ... | tag (16) |

    nonce = write_IV (4) || explicit nonce;  aad = epoch || sequence || type || version || plaintext length
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["RecordKeys", "RecordSecret", "iter_records", "prf"]

_VERSION = b"\xfe\xfd"
_HEADER = struct.Struct("!BHHHIH")  # type, version, epoch, sequence (48 bits as 16 + 32), length
_HEADER_SIZE = 13

#: Suites this module can carry: key length and the PRF's hash.
SUITES: dict[str, tuple[int, str]] = {
    "ECDHE-ECDSA-AES128-GCM-SHA256": (16, "sha256"),
    "ECDHE-ECDSA-AES256-GCM-SHA384": (32, "sha384"),
    "ECDHE-RSA-AES128-GCM-SHA256": (16, "sha256"),
    "ECDHE-RSA-AES256-GCM-SHA384": (32, "sha384"),
}


def prf(secret: bytes, label: bytes, seed: bytes, size: int, digest: str) -> bytes:
    """The TLS 1.2 PRF: P_hash(secret, label + seed) cut to ``size`` (RFC 5246 5)."""
    seed = label + seed
    out = b""
    block = seed
    while len(out) < size:
        block = hmac.new(secret, block, digest).digest()
        out += hmac.new(secret, block + seed, digest).digest()
    return out[:size]


def iter_records(data: bytes) -> list[tuple[int, int, int, bytes, bytes]]:
    """Split a datagram into ``(type, epoch, sequence, header, fragment)``; ValueError if cut."""
    records = []
    position = 0
    while position < len(data):
        if position + _HEADER_SIZE > len(data):
            raise ValueError("DTLS record header truncated")
        kind, _version, epoch, high, low, length = _HEADER.unpack_from(data, position)
        sequence = (high << 32) | low
        end = position + _HEADER_SIZE + length
        if end > len(data):
            raise ValueError("DTLS record truncated")
        header = data[position : position + _HEADER_SIZE]
        records.append((kind, epoch, sequence, header, data[position + _HEADER_SIZE : end]))
        position = end
    return records


class RecordSecret:
    """What :class:`RecordKeys` are derived from, kept until they are first needed.

    Most sessions never seal or open a record after their handshake (consent
    ends them, not close_notify), so the key expansion (four HMACs, ~10-30 µs
    of a join) waits until a record does need it.
    """

    __slots__ = ("_inputs", "_keys")

    def __init__(
        self, cipher: str, master_secret: bytes, client_random: bytes, server_random: bytes
    ) -> None:
        self._inputs: tuple[str, bytes, bytes, bytes] | None = (
            cipher,
            master_secret,
            client_random,
            server_random,
        )
        self._keys: RecordKeys | None = None

    @classmethod
    def of(
        cls, cipher: str, master_secret: bytes, client_random: bytes, server_random: bytes
    ) -> RecordSecret | None:
        """The secret of ``cipher`` (OpenSSL's name), or None if it is not an AES-GCM suite."""
        if cipher not in SUITES:
            return None
        return cls(cipher, master_secret, client_random, server_random)

    def keys(self) -> RecordKeys:
        """The record keys, derived on the first call (the inputs are then dropped)."""
        if self._keys is None:
            assert self._inputs is not None
            keys = RecordKeys.derive(*self._inputs)
            assert keys is not None  # of() admits AES-GCM suites only
            self._keys, self._inputs = keys, None
        return self._keys


@dataclass(slots=True)
class RecordKeys:
    """Epoch-1 keys of both directions of one DTLS 1.2 AES-GCM session.

    The AES-GCM contexts are made when a record is sealed or opened, which
    happens a few times per session at most; the raw keys are what is kept.
    """

    client_key: bytes
    client_iv: bytes
    server_key: bytes
    server_iv: bytes
    next_sequence: int = 1  # the server's Finished was epoch 1, sequence 0

    @classmethod
    def derive(
        cls, cipher: str, master_secret: bytes, client_random: bytes, server_random: bytes
    ) -> RecordKeys | None:
        """The keys of ``cipher`` (OpenSSL's name), or None if it is not an AES-GCM suite."""
        suite = SUITES.get(cipher)
        if suite is None:
            return None
        key_size, digest = suite
        block = prf(
            master_secret, b"key expansion", server_random + client_random, 2 * key_size + 8, digest
        )
        client_key, server_key = block[:key_size], block[key_size : 2 * key_size]
        client_iv, server_iv = block[2 * key_size : 2 * key_size + 4], block[2 * key_size + 4 :]
        return cls(client_key, client_iv, server_key, server_iv)

    def seal(self, kind: int, plaintext: bytes) -> bytes:
        """One epoch-1 record from the server."""
        sequence = self.next_sequence
        self.next_sequence += 1
        explicit = struct.pack("!HHI", 1, sequence >> 32, sequence & 0xFFFFFFFF)
        aad = explicit + bytes([kind]) + _VERSION + struct.pack("!H", len(plaintext))
        sealed = AESGCM(self.server_key).encrypt(self.server_iv + explicit, plaintext, aad)
        fragment = explicit + sealed
        return bytes([kind]) + _VERSION + explicit + struct.pack("!H", len(fragment)) + fragment

    def open(self, header: bytes, fragment: bytes) -> bytes:
        """The plaintext of an epoch-1 record from the client; ValueError if it does not authenticate."""
        if len(fragment) < 8 + 16:
            raise ValueError("DTLS record too short for AES-GCM")
        explicit = fragment[:8]
        aad = header[3:11] + header[0:3] + struct.pack("!H", len(fragment) - 24)
        try:
            return AESGCM(self.client_key).decrypt(self.client_iv + explicit, fragment[8:], aad)
        except InvalidTag:
            raise ValueError("DTLS record does not authenticate") from None
