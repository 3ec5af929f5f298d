# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled fan-out: same API and byte-identical datagrams as :mod:`sfu._relay_py`.

Per receiver, everything is C: header write, payload copy, ``srtp_protect``
(libsrtp2, the copy bundled in pylibsrtp's cffi module, called through its
function pointer) and ``sendmmsg(MSG_DONTWAIT)`` in batches, with the GIL
released. Python runs only once per :meth:`FanOut.forward` call and on
add/remove. See the Python reference for the header layout and semantics.
"""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset
from libc.errno cimport errno, EAGAIN, EINTR, ENOBUFS

import operator
import socket as _socket

import pylibsrtp
from pylibsrtp._binding import ffi as _ffi, lib as _lib

from sfu.errors import RoomFull

__all__ = ["MAX_BATCH", "MAX_PAYLOAD", "FanOut"]


cdef extern from *:
    """
    #ifndef _GNU_SOURCE
    #define _GNU_SOURCE 1  /* sendmmsg, struct mmsghdr; pyconfig.h defines it too */
    #endif
    #include <sys/types.h>
    #include <sys/socket.h>
    #include <sys/uio.h>
    #include <netinet/in.h>
    #include <arpa/inet.h>
    /* libsrtp2: srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr).
       The enum is int-sized, so int is the ABI-compatible return type. */
    typedef int (*sfu_srtp_protect_fn)(void *ctx, void *hdr, int *len);
    """
    ctypedef int (*sfu_srtp_protect_fn)(void *ctx, void *hdr, int *len) noexcept nogil
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t

    cdef struct sockaddr:
        sa_family_t sa_family
    cdef struct sockaddr_storage:
        sa_family_t ss_family
    cdef struct in_addr:
        uint32_t s_addr
    cdef struct sockaddr_in:
        sa_family_t sin_family
        uint16_t sin_port
        in_addr sin_addr
    cdef struct in6_addr:
        pass
    cdef struct sockaddr_in6:
        sa_family_t sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    cdef struct iovec:
        void *iov_base
        size_t iov_len
    cdef struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    cdef struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len

    int AF_INET
    int AF_INET6
    int MSG_DONTWAIT
    int EWOULDBLOCK
    uint16_t htons(uint16_t) nogil
    uint32_t htonl(uint32_t) nogil
    int sendmmsg(int fd, mmsghdr *msgvec, unsigned int vlen, int flags) nogil
    ssize_t sendto(int fd, const void *buf, size_t n, int flags,
                   const sockaddr *addr, socklen_t addrlen) nogil


cdef enum:
    SLOT_BYTES = 1536         # per queued datagram: header + payload + SRTP trailer
    MAX_HEADER = 24           # 12 fixed + 4 CSRC + 8 one-byte extension (RFC 8285)
    SRTP_MAX_TRAILER = 144    # libsrtp2 SRTP_MAX_TRAILER_LEN (16 tag + 128 MKI)
    C_MAX_PAYLOAD = 1275      # one Opus frame at most (RFC 6716 section 3.2.1)

MAX_PAYLOAD = C_MAX_PAYLOAD
MAX_BATCH = 1024  # sendmmsg(2) takes at most UIO_MAXIOV messages per call

# The largest header + payload + trailer must fit one SLOT_BYTES buffer.
assert MAX_HEADER + C_MAX_PAYLOAD + SRTP_MAX_TRAILER <= SLOT_BYTES

_INT64_MIN = -int("9223372036854775808")
_INT64_MAX = int("9223372036854775807")


# --- libsrtp through pylibsrtp's cffi module, with a guard against drift -----

_PROTECT_CTYPE = "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)"
_SESSION_CTYPE = "struct srtp_ctx_t_ * *"


def _check_binding():
    """Raise ImportError unless pylibsrtp exposes what this kernel relies on.

    The kernel casts ``lib.srtp_protect`` to a C function pointer and reads a
    Session's ``srtp_t`` from ``session._srtp[0]``: both are pylibsrtp
    internals, so a different version must fall back to the Python twin
    (which only uses the public ``Session.protect``) instead of crashing.
    """
    protect = _ffi.addressof(_lib, "srtp_protect")
    if _ffi.typeof(protect).cname != _PROTECT_CTYPE:
        raise ImportError(
            "sfu._relay: pylibsrtp's srtp_protect is %r, expected %r (libsrtp2); "
            "pylibsrtp %s is not supported by the compiled fan-out"
            % (_ffi.typeof(protect).cname, _PROTECT_CTYPE, pylibsrtp.__version__)
        )
    srtp = getattr(pylibsrtp.Session(), "_srtp", None)
    if srtp is None or _ffi.typeof(srtp).cname != _SESSION_CTYPE:
        raise ImportError(
            "sfu._relay: pylibsrtp.Session has no `_srtp` of type srtp_t *; "
            "pylibsrtp %s is not supported by the compiled fan-out" % pylibsrtp.__version__
        )
    return int(_ffi.cast("uintptr_t", protect))


try:
    _protect_address = _check_binding()
except ImportError:
    raise
except Exception as exc:  # TypeError from ffi.typeof(None), AttributeError...
    raise ImportError("sfu._relay: unusable pylibsrtp binding: %r" % (exc,)) from exc

cdef sfu_srtp_protect_fn _srtp_protect = <sfu_srtp_protect_fn><uintptr_t>_protect_address


cdef void *_srtp_pointer(object session) except? NULL:
    if not isinstance(session, pylibsrtp.Session):
        raise TypeError("srtp must be a pylibsrtp.Session")
    cdef uintptr_t pointer = int(_ffi.cast("uintptr_t", session._srtp[0]))
    if pointer == 0:
        raise ValueError("srtp session has no libsrtp context")
    return <void *>pointer


# --- addresses ------------------------------------------------------------------

cdef int _fill_sockaddr(int family, object address, sockaddr_storage *out,
                        socklen_t *length) except -1:
    """Write `address` into `out` for a socket of `family`; ValueError if unusable.

    Same rules as ``sfu._relay_py._destination``: IP literals only, IPv4 peers
    of an AF_INET6 socket are v4-mapped.
    """
    cdef sockaddr_in *v4
    cdef sockaddr_in6 *v6
    if not isinstance(address, tuple) or len(address) not in (2, 4):
        raise ValueError("address must be (host, port) or an IPv6 4-tuple, got %r" % (address,))
    host, port = address[0], address[1]
    if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError("address must be (host: str, port: 1..65535), got %r" % (address,))
    flowinfo = address[2] if len(address) == 4 else 0
    scope_id = address[3] if len(address) == 4 else 0
    if not isinstance(flowinfo, int) or not isinstance(scope_id, int):
        raise ValueError("IPv6 flowinfo and scope_id must be int, got %r" % (address,))
    if not 0 <= flowinfo <= 0xFFFFF or not 0 <= scope_id <= 0xFFFFFFFF:
        raise ValueError("IPv6 flowinfo must fit 20 bits, scope_id 32, got %r" % (address,))
    try:
        packed = _socket.inet_pton(_socket.AF_INET, host)
        is_ipv4 = True
    except OSError:
        is_ipv4 = False
    if not is_ipv4:
        try:
            packed = _socket.inet_pton(_socket.AF_INET6, host)
        except OSError:
            raise ValueError("address host must be an IP literal, got %r" % (host,)) from None
    cdef const unsigned char[:] raw
    memset(out, 0, sizeof(sockaddr_storage))
    if family == AF_INET:
        if not is_ipv4 or len(address) == 4:
            raise ValueError("an IPv4 socket cannot send to %r" % (address,))
        raw = packed
        v4 = <sockaddr_in *>out
        v4.sin_family = AF_INET
        v4.sin_port = htons(<uint16_t>port)
        memcpy(&v4.sin_addr, &raw[0], 4)
        length[0] = sizeof(sockaddr_in)
        return 0
    if family == AF_INET6:
        if is_ipv4:
            if len(address) == 4:
                raise ValueError("an IPv6 4-tuple needs an IPv6 host, got %r" % (address,))
            packed = b"\x00" * 10 + b"\xff\xff" + packed
        raw = packed
        v6 = <sockaddr_in6 *>out
        v6.sin6_family = AF_INET6
        v6.sin6_port = htons(<uint16_t>port)
        v6.sin6_flowinfo = htonl(<uint32_t>(flowinfo & 0xFFFFFFFF))
        memcpy(&v6.sin6_addr, &raw[0], 16)
        v6.sin6_scope_id = <uint32_t>(scope_id & 0xFFFFFFFF)
        length[0] = sizeof(sockaddr_in6)
        return 0
    raise ValueError("the socket must be AF_INET or AF_INET6, got family %d" % family)


cdef inline object _check_int(str name, object value, object low, object high):
    """``value`` as an int in ``low..high``. Not a float: one stored truncated in
    a C field but kept whole as a dict key would part the two (a receiver
    freed while still in the array)."""
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError("%s must be an integer, got %r" % (name, value)) from None
    if not low <= value <= high:
        raise ValueError("%s must be in %d..%d, got %d" % (name, low, high, value))
    return value


# --- the fan-out -------------------------------------------------------------

cdef struct Receiver:
    int64_t receiver_id
    void *srtp                  # srtp_t, kept alive by FanOut._sessions
    sockaddr_storage address
    socklen_t address_length
    uint8_t payload_type
    uint8_t audio_level_id
    int slot_count
    uint64_t *packets           # slot_count entries each
    uint64_t *octets


cdef class FanOut:
    """Receivers of one Router and the batched send of slot packets to them."""

    cdef int _fd
    cdef int _family
    cdef int _batch_size
    cdef Py_ssize_t _max_receivers
    cdef Receiver *_receivers
    cdef Py_ssize_t _count
    cdef Py_ssize_t _capacity
    cdef unsigned char *_buffer       # batch_size * SLOT_BYTES, reused by every batch
    cdef iovec *_iov
    cdef mmsghdr *_messages
    cdef Py_ssize_t *_owners          # receiver index of each queued datagram
    cdef uint64_t _sent
    cdef uint64_t _dropped
    cdef bint _busy                   # forward() runs without the GIL
    cdef object _sock
    cdef dict _index                  # receiver_id -> index in _receivers
    cdef list _sessions               # pylibsrtp.Session per index: keeps srtp_t alive

    def __cinit__(self):
        self._receivers = NULL
        self._buffer = NULL
        self._iov = NULL
        self._messages = NULL
        self._owners = NULL
        self._count = 0
        self._capacity = 0

    def __init__(self, sock, *, batch_size=64, max_receivers=0):
        if (sock.type != _socket.SOCK_DGRAM
                or sock.family not in (_socket.AF_INET, _socket.AF_INET6)):
            raise ValueError("sock must be an AF_INET or AF_INET6 UDP socket")
        _check_int("batch_size", batch_size, 1, MAX_BATCH)
        _check_int("max_receivers", max_receivers, 0, 1 << 30)
        if self._buffer != NULL:
            raise RuntimeError("FanOut.__init__ called twice")
        self._sock = sock
        self._fd = sock.fileno()
        self._family = sock.family
        self._batch_size = batch_size
        self._max_receivers = max_receivers
        self._index = {}
        self._sessions = []
        self._buffer = <unsigned char *>malloc(<size_t>batch_size * SLOT_BYTES)
        self._iov = <iovec *>calloc(batch_size, sizeof(iovec))
        self._messages = <mmsghdr *>calloc(batch_size, sizeof(mmsghdr))
        self._owners = <Py_ssize_t *>calloc(batch_size, sizeof(Py_ssize_t))
        if (self._buffer == NULL or self._iov == NULL or self._messages == NULL
                or self._owners == NULL):
            raise MemoryError()
        cdef int i
        for i in range(batch_size):
            self._iov[i].iov_base = self._buffer + <size_t>i * SLOT_BYTES
            self._messages[i].msg_hdr.msg_iov = &self._iov[i]
            self._messages[i].msg_hdr.msg_iovlen = 1
        if max_receivers:
            self._grow(max_receivers)

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self._receivers != NULL:
            for i in range(self._count):
                free(self._receivers[i].packets)
                free(self._receivers[i].octets)
            free(self._receivers)
        free(self._buffer)
        free(self._iov)
        free(self._messages)
        free(self._owners)

    cdef int _grow(self, Py_ssize_t capacity) except -1:
        cdef Receiver *grown = <Receiver *>realloc(self._receivers, capacity * sizeof(Receiver))
        if grown == NULL:
            raise MemoryError()
        self._receivers = grown
        self._capacity = capacity
        return 0

    cdef int _check_idle(self) except -1:
        if self._busy:
            raise RuntimeError("FanOut changed while forward() runs in another thread")
        return 0

    def add_receiver(self, receiver_id, address, srtp, *, payload_type, audio_level_id,
                     slot_count):
        """Add a receiver taking slots ``0..slot_count-1``; see sfu._relay_py."""
        cdef sockaddr_storage storage
        cdef socklen_t length = 0
        cdef Receiver *receiver
        if self._sock is None:
            raise RuntimeError("FanOut is closed")
        self._check_idle()
        receiver_id = _check_int("receiver_id", receiver_id, _INT64_MIN, _INT64_MAX)
        if receiver_id in self._index:
            raise ValueError("receiver %d is already in this FanOut" % receiver_id)
        cdef void *context = _srtp_pointer(srtp)
        payload_type = _check_int("payload_type", payload_type, 0, 127)
        audio_level_id = _check_int("audio_level_id", audio_level_id, 0, 14)
        slot_count = _check_int("slot_count", slot_count, 0, 255)
        _fill_sockaddr(self._family, address, &storage, &length)
        if self._max_receivers and self._count >= self._max_receivers:
            raise RoomFull("this FanOut holds at most %d receivers" % self._max_receivers)
        if self._count == self._capacity:
            self._grow(max(16, 2 * self._capacity))
        receiver = &self._receivers[self._count]
        memset(receiver, 0, sizeof(Receiver))
        # calloc(0) may return NULL: ask for at least one entry.
        receiver.packets = <uint64_t *>calloc(max(1, slot_count), sizeof(uint64_t))
        receiver.octets = <uint64_t *>calloc(max(1, slot_count), sizeof(uint64_t))
        if receiver.packets == NULL or receiver.octets == NULL:
            free(receiver.packets)
            free(receiver.octets)
            raise MemoryError()
        receiver.receiver_id = receiver_id
        receiver.srtp = context
        receiver.address = storage
        receiver.address_length = length
        receiver.payload_type = payload_type
        receiver.audio_level_id = audio_level_id
        receiver.slot_count = slot_count
        self._index[receiver_id] = self._count
        self._sessions.append(srtp)
        self._count += 1

    def set_address(self, receiver_id, address):
        """Send to `address` from now on (ICE re-nomination)."""
        cdef sockaddr_storage storage
        cdef socklen_t length = 0
        cdef Py_ssize_t index = self._index[receiver_id]
        self._check_idle()
        _fill_sockaddr(self._family, address, &storage, &length)
        self._receivers[index].address = storage
        self._receivers[index].address_length = length

    def remove_receiver(self, receiver_id):
        """Stop sending to `receiver_id` (KeyError if unknown)."""
        cdef Py_ssize_t index = self._index[receiver_id]
        self._check_idle()
        del self._index[receiver_id]
        free(self._receivers[index].packets)
        free(self._receivers[index].octets)
        cdef Py_ssize_t last = self._count - 1
        last_session = self._sessions.pop()
        if index != last:
            self._receivers[index] = self._receivers[last]
            self._sessions[index] = last_session
            self._index[self._receivers[index].receiver_id] = index
        self._count = last

    def forward(self, long long slot, const unsigned char[::1] packet not None,
                long long payload_offset, long long ssrc, long long sequence,
                long long timestamp, bint marker, long long csrc, long long audio_level,
                long long exclude, long long only=-1):
        """Send ``packet[payload_offset:]`` on `slot` to every receiver having it
        (but `exclude`; only receiver `only` when it is >= 0)."""
        cdef Py_ssize_t size = packet.shape[0]
        if slot < 0:
            raise ValueError("slot must be >= 0, got %d" % slot)
        if not 0 <= payload_offset <= size:
            raise ValueError("payload_offset must be in 0..%d, got %d" % (size, payload_offset))
        if not 0 <= ssrc <= 0xFFFFFFFF:
            raise ValueError("ssrc must be in 0..4294967295, got %d" % ssrc)
        if not 0 <= sequence <= 0xFFFF:
            raise ValueError("sequence must be in 0..65535, got %d" % sequence)
        if not 0 <= timestamp <= 0xFFFFFFFF:
            raise ValueError("timestamp must be in 0..4294967295, got %d" % timestamp)
        if not 0 <= csrc <= 0xFFFFFFFF:
            raise ValueError("csrc must be in 0..4294967295, got %d" % csrc)
        if not -1 <= audio_level <= 255:
            raise ValueError("audio_level must be in -1..255, got %d" % audio_level)
        if self._count == 0:
            return 0
        if self._busy:
            raise RuntimeError("FanOut.forward() is already running in another thread")
        # Re-read the descriptor: once the caller closed the socket it is -1
        # (every send fails with EBADF, as sendto does in the twin) rather
        # than a number the OS may have given to another file.
        self._fd = self._sock.fileno()
        cdef const unsigned char *payload = &packet[0] + payload_offset if size else NULL
        cdef Py_ssize_t payload_size = size - payload_offset
        cdef Py_ssize_t sent
        self._busy = True
        try:
            with nogil:
                # slot_count <= 255, so any slot past 255 reaches nobody.
                sent = self._forward(<int>(slot if slot < 256 else 256), payload, payload_size, <uint32_t>ssrc,
                                     <uint16_t>sequence, <uint32_t>timestamp, marker,
                                     <uint32_t>csrc, <int>audio_level, <int64_t>exclude,
                                     <int64_t>only)
        finally:
            self._busy = False
        return sent

    cdef Py_ssize_t _forward(self, int slot, const unsigned char *payload,
                             Py_ssize_t payload_size, uint32_t ssrc, uint16_t sequence,
                             uint32_t timestamp, bint marker, uint32_t csrc,
                             int audio_level, int64_t exclude, int64_t only) noexcept nogil:
        cdef Py_ssize_t i
        cdef Py_ssize_t queued = 0
        cdef Py_ssize_t sent = 0
        cdef Receiver *receiver
        cdef unsigned char *out
        cdef unsigned char common[14]
        cdef uint8_t mark = 0x80 if marker else 0
        cdef int length, header_size
        if payload_size > C_MAX_PAYLOAD:
            for i in range(self._count):
                receiver = &self._receivers[i]
                if (slot < receiver.slot_count and receiver.receiver_id != exclude
                        and (only < 0 or receiver.receiver_id == only)):
                    self._dropped += 1
            return 0
        # Bytes 2..15 are the same for every receiver: sequence, timestamp,
        # SSRC, CSRC in network order (RFC 3550 5.1).
        common[0] = sequence >> 8
        common[1] = sequence
        common[2] = timestamp >> 24
        common[3] = timestamp >> 16
        common[4] = timestamp >> 8
        common[5] = timestamp
        common[6] = ssrc >> 24
        common[7] = ssrc >> 16
        common[8] = ssrc >> 8
        common[9] = ssrc
        common[10] = csrc >> 24
        common[11] = csrc >> 16
        common[12] = csrc >> 8
        common[13] = csrc
        for i in range(self._count):
            receiver = &self._receivers[i]
            if slot >= receiver.slot_count or receiver.receiver_id == exclude:
                continue
            if only >= 0 and receiver.receiver_id != only:
                continue
            out = self._buffer + <size_t>queued * SLOT_BYTES
            out[1] = mark | receiver.payload_type
            memcpy(out + 2, common, 14)
            if receiver.audio_level_id != 0 and audio_level >= 0:
                out[0] = 0x91  # V=2, X=1, CC=1
                # RFC 8285 one-byte header: 0xBEDE, one word, element with L=0.
                out[16] = 0xBE
                out[17] = 0xDE
                out[18] = 0
                out[19] = 1
                out[20] = receiver.audio_level_id << 4
                out[21] = <uint8_t>audio_level
                out[22] = 0
                out[23] = 0
                header_size = 24
            else:
                out[0] = 0x81  # V=2, X=0, CC=1
                header_size = 16
            if payload_size:
                memcpy(out + header_size, payload, payload_size)
            length = header_size + <int>payload_size
            if _srtp_protect(receiver.srtp, out, &length) != 0:
                self._dropped += 1
                continue
            self._iov[queued].iov_len = length
            self._messages[queued].msg_hdr.msg_name = &receiver.address
            self._messages[queued].msg_hdr.msg_namelen = receiver.address_length
            self._owners[queued] = i
            queued += 1
            if queued == self._batch_size:
                sent += self._flush(queued, slot, payload_size)
                queued = 0
        if queued:
            sent += self._flush(queued, slot, payload_size)
        return sent

    cdef Py_ssize_t _flush(self, Py_ssize_t queued, int slot,
                           Py_ssize_t payload_size) noexcept nogil:
        """sendmmsg the queued datagrams; account sent/dropped; return sent."""
        cdef Py_ssize_t done = 0
        cdef Py_ssize_t sent = 0
        cdef Py_ssize_t k
        cdef int result, error
        cdef Receiver *receiver
        while done < queued:
            result = sendmmsg(self._fd, self._messages + done, <unsigned int>(queued - done),
                              MSG_DONTWAIT)
            if result > 0:
                for k in range(done, done + result):
                    receiver = &self._receivers[self._owners[k]]
                    receiver.packets[slot] += 1
                    receiver.octets[slot] += <uint64_t>payload_size
                sent += result
                done += result
                continue
            error = errno
            if error == EINTR:
                continue
            if error == EAGAIN or error == EWOULDBLOCK or error == ENOBUFS:
                # Congestion is met by dropping media: drop, never queue.
                self._dropped += <uint64_t>(queued - done)
                break
            # This one message failed (e.g. EINVAL, EPERM): skip it.
            self._dropped += 1
            done += 1
        self._sent += <uint64_t>sent
        return sent

    def counters(self, receiver_id):
        """Per slot: (packets sent, payload octets sent), for RTCP sender reports."""
        cdef Receiver *receiver = &self._receivers[<Py_ssize_t>self._index[receiver_id]]
        cdef int k
        return [(receiver.packets[k], receiver.octets[k]) for k in range(receiver.slot_count)]

    def __len__(self):
        return self._count

    def __contains__(self, receiver_id):
        return receiver_id in self._index

    @property
    def sent(self):
        """Datagrams the kernel accepted, in total."""
        return self._sent

    @property
    def dropped(self):
        """Datagrams not sent (oversize, SRTP failure, full socket, send error)."""
        return self._dropped

    @property
    def closed(self):
        """Whether :meth:`close` was called."""
        return self._sock is None

    def close(self):
        """Forget every receiver and its SRTP session; idempotent."""
        cdef Py_ssize_t i
        if self._sock is None:
            return
        self._check_idle()
        for i in range(self._count):
            free(self._receivers[i].packets)
            free(self._receivers[i].octets)
        self._count = 0
        self._index.clear()
        self._sessions.clear()
        self._sock = None


def _floor_protect_sendto(sock, srtp, address, const unsigned char[::1] packet, long count):
    """The C floor for bench/bench_relay.py: per packet, copy + srtp_protect + sendto.

    No batching, no header rewrite beyond the sequence number (which must
    advance, or libsrtp refuses a replayed index). Returns datagrams sent.
    """
    cdef sockaddr_storage storage
    cdef socklen_t length = 0
    cdef void *context = _srtp_pointer(srtp)
    cdef int fd = sock.fileno()
    cdef Py_ssize_t size = packet.shape[0]
    cdef unsigned char buffer[SLOT_BYTES]
    cdef long i
    cdef long sent = 0
    cdef int protected_length
    if not 12 <= size <= SLOT_BYTES - SRTP_MAX_TRAILER:
        raise ValueError("packet must be an RTP packet of 12..%d bytes"
                         % (SLOT_BYTES - SRTP_MAX_TRAILER))
    _fill_sockaddr(sock.family, address, &storage, &length)
    with nogil:
        for i in range(count):
            memcpy(buffer, &packet[0], size)
            buffer[2] = <uint8_t>(i >> 8)
            buffer[3] = <uint8_t>i
            protected_length = <int>size
            if _srtp_protect(context, buffer, &protected_length) != 0:
                continue
            if sendto(fd, buffer, protected_length, MSG_DONTWAIT,
                      <sockaddr *>&storage, length) >= 0:
                sent += 1
    return sent
