"""One OpenSSL DTLS server session over memory BIOs, called without pyOpenSSL's wrappers.

:class:`sfu.transport.dtls.DtlsServer` drives a handshake with some forty
OpenSSL calls (write a datagram into the read BIO, ``SSL_do_handshake``,
read the reply out, the timer, and after the handshake the peer certificate,
the SRTP profile, the exported keys, the master secret and randoms).
pyOpenSSL's ``SSL.Connection`` wraps each in a Python method that checks
arguments, turns ``WANT_READ`` into a raised exception and builds an
``X509`` object for every verify-callback call; in a join storm that glue
cost ~150 µs per handshake, a sixth of a whole join. This module makes the
same calls through the same cffi bindings (``OpenSSL._util``, which are
``cryptography``'s), returning status codes instead of raising, and checks
the client certificate in a verify callback of its own.

The context is still configured through pyOpenSSL's public ``SSL.Context``
(see :meth:`sfu.transport.dtls.Certificate.ssl_context`); only its pointer
(``Context._context``) is used here. ``tests/transport/test_dtls.py`` checks
that every binding used here exists, so a pyOpenSSL or ``cryptography``
upgrade that drops one fails there, not in a handshake.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from OpenSSL import SSL
from OpenSSL._util import ffi, lib

__all__ = [
    "BINDINGS",
    "OpenSslSession",
    "certificate_der",
    "error_reasons",
    "install_verify_callback",
]

#: The cffi functions and constants this module calls (the drift check's list).
BINDINGS = (
    "BIO_free",
    "BIO_new",
    "BIO_read",
    "BIO_s_mem",
    "BIO_write",
    "Cryptography_DTLSv1_get_timeout",
    "DTLSv1_handle_timeout",
    "ERR_clear_error",
    "ERR_get_error",
    "ERR_reason_error_string",
    "SSL_CIPHER_get_name",
    "SSL_CTX_set_verify",
    "SSL_ERROR_WANT_READ",
    "SSL_ERROR_ZERO_RETURN",
    "SSL_MODE_AUTO_RETRY",
    "SSL_SESSION_get_master_key",
    "SSL_do_handshake",
    "SSL_export_keying_material",
    "SSL_free",
    "SSL_get_client_random",
    "SSL_get_current_cipher",
    "SSL_get_error",
    "SSL_get_ex_data_X509_STORE_CTX_idx",
    "SSL_get_peer_certificate",
    "SSL_get_selected_srtp_profile",
    "SSL_get_server_random",
    "SSL_get_session",
    "SSL_new",
    "SSL_read",
    "SSL_set_accept_state",
    "SSL_set_bio",
    "SSL_set_mode",
    "SSL_set_mtu",
    "SSL_shutdown",
    "X509_STORE_CTX_get_current_cert",
    "X509_STORE_CTX_get_error_depth",
    "X509_STORE_CTX_get_ex_data",
    "X509_free",
    "i2d_X509_bio",
)

logger = logging.getLogger(__name__)

# Outcomes of OpenSslSession.do_handshake and .recv: finished (or data
# read), nothing to do until the client sends more, failed (read the reasons
# with error_reasons()), close_notify received (recv only).
DONE, WANT_READ, FAILED, CLOSED = 1, 0, -1, 2

_BUFFER_SIZE = 1 << 16


class _Scratch(threading.local):
    """Buffers for every read, one set per thread: each read copies out what
    it got before the next call, and cffi releases the GIL inside OpenSSL, so
    a Server in another thread (sfu.transport.srtp allows one per thread)
    must not write into the same memory meanwhile."""

    def __init__(self) -> None:
        self.buffer = ffi.new("unsigned char[]", _BUFFER_SIZE)
        self.seconds = ffi.new("time_t *")
        self.microseconds = ffi.new("long *")


_scratch = _Scratch()

#: The owner of each live session, by its ``SSL *`` address: the verify
#: callback gets only the pointer. Weak, so a dropped owner leaves nothing.
_owners: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
_ssl_index = lib.SSL_get_ex_data_X509_STORE_CTX_idx()


def certificate_der(x509: Any) -> bytes:
    """The DER of an ``X509 *`` (b"" if it cannot be written)."""
    bio = lib.BIO_new(lib.BIO_s_mem())
    try:
        if lib.i2d_X509_bio(bio, x509) != 1:
            return b""
        buffer = _scratch.buffer
        size = lib.BIO_read(bio, buffer, _BUFFER_SIZE)
        return ffi.buffer(buffer, size)[:] if size > 0 else b""
    finally:
        lib.BIO_free(bio)


def _verify(ok: int, store: Any) -> int:
    """OpenSSL's verify callback: the end-entity certificate (depth 0) must
    satisfy its session owner's ``verify_peer(x509)``; the chain above it is
    self-signed, so OpenSSL's own verdict is ignored. An exception or an
    unknown session fails the handshake (``onerror``)."""
    if lib.X509_STORE_CTX_get_error_depth(store) != 0:
        return 1
    ssl = lib.X509_STORE_CTX_get_ex_data(store, _ssl_index)
    owner = _owners.get(int(ffi.cast("uintptr_t", ssl)))
    if owner is None:
        return 0
    certificate = lib.X509_STORE_CTX_get_current_cert(store)
    return 1 if owner.verify_peer(certificate) else 0


def _verify_raised(kind: type[BaseException], error: BaseException, trace: TracebackType) -> int:
    logger.error("the DTLS verify callback raised; the handshake fails", exc_info=error)
    return 0


_verify_callback = ffi.callback("int (*)(int, X509_STORE_CTX *)", _verify, onerror=_verify_raised)


def install_verify_callback(context: SSL.Context) -> None:
    """Make ``context`` ask for a client certificate and check it with this
    module's callback (instead of pyOpenSSL's ``Context.set_verify``)."""
    lib.SSL_CTX_set_verify(
        context._context,  # pyOpenSSL's SSL_CTX pointer: the one private attribute used
        SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
        _verify_callback,
    )


def error_reasons() -> str:
    """Empty OpenSSL's error queue into one line of reason strings."""
    reasons = []
    while True:
        code = lib.ERR_get_error()
        if not code:
            break
        text = lib.ERR_reason_error_string(code)
        reasons.append(ffi.string(text).decode(errors="replace") if text else f"error {code:#x}")
    return "; ".join(reasons) or "unknown error"


class OpenSslSession:
    """An accepting DTLS ``SSL *`` with a read and a write memory BIO.

    ``owner`` must have ``verify_peer(x509) -> bool``, called during the
    handshake with the client's end-entity certificate (an ``X509 *``; see
    :func:`certificate_der`), and be weakly referenceable. Nothing here
    raises on what the peer sends: results are status codes, and errors are
    read with :func:`error_reasons`.
    """

    __slots__ = ("_from_ssl", "_into_ssl", "_key", "ssl")

    def __init__(self, context: SSL.Context, mtu: int, owner: object) -> None:
        ssl = lib.SSL_new(context._context)
        if ssl == ffi.NULL:
            raise MemoryError("SSL_new failed")
        ssl = ffi.gc(ssl, lib.SSL_free)
        self._into_ssl = lib.BIO_new(lib.BIO_s_mem())
        self._from_ssl = lib.BIO_new(lib.BIO_s_mem())
        if self._into_ssl == ffi.NULL or self._from_ssl == ffi.NULL:
            for bio in (self._into_ssl, self._from_ssl):
                if bio != ffi.NULL:
                    lib.BIO_free(bio)
            raise MemoryError("BIO_new failed")
        lib.SSL_set_bio(ssl, self._into_ssl, self._from_ssl)  # SSL_free frees them
        # As pyOpenSSL does: a record that is not application data does not
        # end a read with WANT_READ while more is buffered.
        lib.SSL_set_mode(ssl, lib.SSL_MODE_AUTO_RETRY)
        lib.SSL_set_accept_state(ssl)
        lib.SSL_set_mtu(ssl, mtu)
        self.ssl = ssl
        self._key = int(ffi.cast("uintptr_t", ssl))
        _owners[self._key] = owner

    def free(self) -> None:
        """Free the OpenSSL session now (idempotent)."""
        if self.ssl is not None:
            _owners.pop(self._key, None)
            ssl, self.ssl = self.ssl, None
            # SSL_free frees the BIOs too: nothing may reach them after this.
            self._into_ssl = self._from_ssl = None
            ffi.release(ssl)

    def _check_live(self) -> None:
        if self.ssl is None:
            raise ValueError("the OpenSSL session was freed")

    # -- the handshake --------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Hand a datagram from the client to OpenSSL."""
        self._check_live()
        lib.BIO_write(self._into_ssl, data, len(data))

    def do_handshake(self) -> int:
        """Advance the handshake: DONE, WANT_READ, CLOSED (the client sent
        close_notify: it hung up), or FAILED (see :func:`error_reasons`)."""
        # SSL_get_error reads the thread's error queue: start it empty.
        lib.ERR_clear_error()
        result = lib.SSL_do_handshake(self.ssl)
        if result == 1:
            return DONE
        error = lib.SSL_get_error(self.ssl, result)
        if error == lib.SSL_ERROR_WANT_READ:
            return WANT_READ
        if error == lib.SSL_ERROR_ZERO_RETURN:
            return CLOSED
        return FAILED

    def read_output(self) -> bytes:
        """Everything OpenSSL has written for the client so far (b"" if nothing)."""
        self._check_live()
        buffer = _scratch.buffer
        chunks = []
        while True:
            size = lib.BIO_read(self._from_ssl, buffer, _BUFFER_SIZE)
            if size <= 0:
                break
            chunks.append(ffi.buffer(buffer, size)[:])
            if size < _BUFFER_SIZE:
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def timeout(self) -> float | None:
        """Seconds until the retransmission timer runs out, or None if none runs."""
        scratch = _scratch
        if lib.Cryptography_DTLSv1_get_timeout(self.ssl, scratch.seconds, scratch.microseconds):
            remaining: float = scratch.seconds[0] + scratch.microseconds[0] / 1e6
            return remaining
        return None

    def handle_timeout(self) -> int:
        """OpenSSL's DTLSv1_handle_timeout: 1 resent, 0 nothing due, < 0 it gave up."""
        result: int = lib.DTLSv1_handle_timeout(self.ssl)
        return result

    # -- after the handshake --------------------------------------------------

    def recv(self) -> tuple[int, bytes]:
        """(DONE, application data), (WANT_READ, b"") when nothing is left,
        (CLOSED, b"") on close_notify, (FAILED, b"") on an error."""
        lib.ERR_clear_error()
        buffer = _scratch.buffer
        size = lib.SSL_read(self.ssl, buffer, _BUFFER_SIZE)
        if size > 0:
            return DONE, ffi.buffer(buffer, size)[:]
        error = lib.SSL_get_error(self.ssl, size)
        if error == lib.SSL_ERROR_WANT_READ:
            return WANT_READ, b""
        if error == lib.SSL_ERROR_ZERO_RETURN:
            return CLOSED, b""
        return FAILED, b""

    def shutdown(self) -> None:
        """Queue close_notify (sent with the next :meth:`read_output`)."""
        if lib.SSL_shutdown(self.ssl) < 0:
            lib.ERR_clear_error()

    def peer_certificate(self, check: Callable[[bytes], bool]) -> bool:
        """``check`` of the client certificate's DER; False if there is none."""
        x509 = lib.SSL_get_peer_certificate(self.ssl)
        if x509 == ffi.NULL:
            return False
        try:
            return check(certificate_der(x509))
        finally:
            lib.X509_free(x509)

    def selected_srtp_profile(self) -> bytes | None:
        profile = lib.SSL_get_selected_srtp_profile(self.ssl)
        return ffi.string(profile.name) if profile != ffi.NULL else None

    def export_keying_material(self, label: bytes, length: int) -> bytes:
        out = ffi.new("unsigned char[]", length)
        if (
            lib.SSL_export_keying_material(self.ssl, out, length, label, len(label), ffi.NULL, 0, 0)
            != 1
        ):
            lib.ERR_clear_error()
            raise ValueError("SSL_export_keying_material failed")
        material: bytes = ffi.buffer(out, length)[:]
        return material

    def cipher_name(self) -> str:
        cipher = lib.SSL_get_current_cipher(self.ssl)
        return ffi.string(lib.SSL_CIPHER_get_name(cipher)).decode() if cipher != ffi.NULL else ""

    def secrets(self) -> tuple[bytes, bytes, bytes]:
        """(master secret, client random, server random), each b"" if unknown."""
        buffer = _scratch.buffer
        session = lib.SSL_get_session(self.ssl)
        size = lib.SSL_SESSION_get_master_key(session, buffer, 48) if session != ffi.NULL else 0
        master = ffi.buffer(buffer, size)[:]
        size = lib.SSL_get_client_random(self.ssl, buffer, 32)
        client_random = ffi.buffer(buffer, size)[:]
        size = lib.SSL_get_server_random(self.ssl, buffer, 32)
        return master, client_random, ffi.buffer(buffer, size)[:]
