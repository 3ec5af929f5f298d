# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled packet sink for the load generator, and the C floor sender.

:class:`Sink` drains the UDP sockets of every connected listener with
``epoll`` + ``recvmmsg`` without the GIL, for a bounded time per
:meth:`Sink.run` call, and counts per listener: RTP packets per slot SSRC
(read from the clear-text RTP header, RFC 3550 5.1), RTCP, STUN and other
datagrams; the arrival time of the first and last RTP packet (the kernel's
``SO_TIMESTAMPNS`` receive time, CLOCK_REALTIME, when enabled); and it
authenticates one RTP packet in ``sample_every`` per listener with libsrtp's
``srtp_unprotect``, called through the function pointer of pylibsrtp's cffi
module (as ``sfu/_relay.pyx`` does with ``srtp_protect``), counting failures.

Fan-out latency: for the RTP stream whose SSRC is ``latency_ssrc``, the
earliest and latest arrival of each sequence number over all listeners are
kept, and each authenticated (so decrypted) sample whose Opus payload is a
code-3 packet with padding (RFC 6716 3.2.5) yields the synthetic speaker's
send time, stored in the last 8 bytes of that padding (big-endian ns,
CLOCK_REALTIME): arrival - send time is the latency of that copy.

:func:`floor_protect_sendto` is the C floor of the CPU benchmark: per
datagram, copy + ``srtp_protect`` + ``sendto``, round-robin over receivers
with their own SRTP sessions and addresses, no batching;
:func:`floor_protect_sendmmsg` is the same with ``sendmmsg`` batches, the
best a C fan-out can do with these syscalls.

Build: ``python bench/setup_sink.py build_ext --inplace``.
"""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset
from libc.errno cimport errno, EINTR

import socket as _socket

import numpy as np
import pylibsrtp
from pylibsrtp._binding import ffi as _ffi, lib as _lib


cdef extern from *:
    """
    #ifndef _GNU_SOURCE
    #define _GNU_SOURCE 1
    #endif
    #include <sys/types.h>
    #include <sys/socket.h>
    #include <sys/uio.h>
    #include <sys/epoll.h>
    #include <netinet/in.h>
    #include <time.h>
    typedef int (*sink_srtp_fn)(void *ctx, void *hdr, int *len);
    static inline int64_t sink_timespec_ns(const struct timespec *ts) {
        return (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec;
    }
    static inline int64_t sink_now_ns(int clock) {
        struct timespec ts;
        clock_gettime(clock, &ts);
        return sink_timespec_ns(&ts);
    }
    /* The SCM_TIMESTAMPNS control message of a received datagram, or 0. */
    static inline int64_t sink_kernel_ns(struct msghdr *msg) {
        struct cmsghdr *c;
        for (c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                struct timespec ts;
                memcpy(&ts, CMSG_DATA(c), sizeof(ts));
                return sink_timespec_ns(&ts);
            }
        }
        return 0;
    }
    """
    ctypedef int (*sink_srtp_fn)(void *ctx, void *hdr, int *len) noexcept nogil
    ctypedef unsigned int socklen_t
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
    cdef struct timespec:
        long tv_sec
        long tv_nsec
    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64
    cdef struct epoll_event:
        uint32_t events
        epoll_data_t data
    cdef struct sockaddr:
        unsigned short sa_family
    cdef struct sockaddr_storage:
        unsigned short ss_family

    int EPOLLIN
    int EPOLL_CTL_ADD
    int EPOLL_CTL_DEL
    int EPOLL_CLOEXEC
    int MSG_DONTWAIT
    int SOL_SOCKET
    int SO_TIMESTAMPNS
    int setsockopt(int fd, int level, int name, const void *value, socklen_t length) nogil
    int CLOCK_REALTIME
    int CLOCK_MONOTONIC
    int epoll_create1(int flags) nogil
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event) nogil
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout) nogil
    int recvmmsg(int fd, mmsghdr *msgvec, unsigned int vlen, int flags, timespec *timeout) nogil
    int sendmmsg(int fd, mmsghdr *msgvec, unsigned int vlen, int flags) nogil
    ssize_t sendto(int fd, const void *buf, size_t n, int flags,
                   const sockaddr *addr, socklen_t addrlen) nogil
    int close(int fd) nogil
    int nanosleep(const timespec *req, timespec *rem) nogil
    int64_t sink_now_ns(int clock) nogil
    int64_t sink_kernel_ns(msghdr *msg) nogil


cdef enum:
    BATCH = 16            # datagrams per recvmmsg
    BUFFER = 2048         # bytes per datagram buffer
    CONTROL = 64          # bytes of control data per datagram (one timespec cmsg)
    MAX_EVENTS = 512
    MAX_SSRCS = 16
    SEQUENCES = 65536

#: Copies of the latency SSRC per sequence number are tracked with this many entries.
SEQUENCE_SPACE = SEQUENCES

#: The SSRC of the C floor's datagrams (:func:`floor_protect_sendto`). The
#: sink counts them apart, in :attr:`Sink.floor`, and nowhere else: they are
#: not the room's audio, so they neither fill a listener's first packet nor
#: its per-SSRC counts.
cdef uint32_t _FLOOR_SSRC = 0xF100F100
FLOOR_SSRC = _FLOOR_SSRC

_SRTP_CTYPE = "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)"


def _function_address(name):
    """Address of a libsrtp2 function of pylibsrtp's cffi module, checked for drift."""
    pointer = _ffi.addressof(_lib, name)
    if _ffi.typeof(pointer).cname != _SRTP_CTYPE:
        raise ImportError("bench._sink: pylibsrtp's %s is %r, expected %r"
                          % (name, _ffi.typeof(pointer).cname, _SRTP_CTYPE))
    return int(_ffi.cast("uintptr_t", pointer))


cdef sink_srtp_fn _srtp_unprotect = <sink_srtp_fn><uintptr_t>_function_address("srtp_unprotect")
cdef sink_srtp_fn _srtp_protect = <sink_srtp_fn><uintptr_t>_function_address("srtp_protect")


cdef void *_srtp_pointer(object session) except? NULL:
    if not isinstance(session, pylibsrtp.Session):
        raise TypeError("srtp must be a pylibsrtp.Session")
    cdef uintptr_t pointer = int(_ffi.cast("uintptr_t", session._srtp[0]))
    if pointer == 0:
        raise ValueError("srtp session has no libsrtp context")
    return <void *>pointer


cdef inline uint32_t _be32(const unsigned char *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline int64_t _be64(const unsigned char *p) noexcept nogil:
    return <int64_t>((<uint64_t>_be32(p) << 32) | _be32(p + 4))


cdef class Sink:
    """Counts what every connected listener socket receives; see the module doc.

    ``capacity`` listeners at most (index 0..capacity-1); ``ssrcs`` are the
    room's slot SSRCs, in slot order (packets of any other SSRC are counted in
    the last column of :attr:`packets`). ``authenticate_other``: sample the
    packets of other SSRCs with ``srtp_unprotect`` too (a server that gives
    each listener its own SSRC, as Janus does; they have no latency stamps read).

    Counters are numpy arrays owned by the Sink, written by :meth:`run` (in
    whatever thread calls it) and read by Python in between or concurrently
    (aligned 64-bit words: a reader sees an old or a new value).
    """

    cdef int _epoll
    cdef int _capacity
    cdef int _ssrc_count
    cdef uint32_t _ssrcs[MAX_SSRCS]
    cdef uint32_t _latency_ssrc
    cdef bint _track_latency
    cdef bint _authenticate_other
    cdef int _sample_mask
    cdef bint _stop
    cdef int *_fds
    cdef void **_contexts
    cdef list _sessions
    cdef unsigned char *_buffers
    cdef unsigned char *_control
    cdef iovec *_iov
    cdef mmsghdr *_messages
    cdef epoll_event *_events
    cdef Py_ssize_t _sample_count
    # Counters, as numpy arrays (Python reads) and memoryviews (C writes).
    cdef public object packets, rtcp, stun, other, floor, first_ns, last_ns, auth_ok, auth_failed
    cdef public object seq_first_ns, seq_last_ns, seq_copies, seq_sent_ns, samples_ns
    cdef uint64_t[:, ::1] _packets
    cdef uint64_t[::1] _rtcp, _stun, _other, _floor, _auth_ok, _auth_failed, _seq_copies
    cdef int64_t[::1] _first, _last, _seq_first, _seq_last, _seq_sent, _samples
    cdef public uint64_t datagrams
    cdef public uint64_t wakeups

    def __cinit__(self):
        self._epoll = -1
        self._fds = NULL
        self._contexts = NULL
        self._buffers = NULL
        self._control = NULL
        self._iov = NULL
        self._messages = NULL
        self._events = NULL

    def __init__(self, int capacity, ssrcs, *, long long latency_ssrc=-1, int sample_every=64,
                 int max_samples=1_000_000, bint authenticate_other=False):
        cdef int i
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        if len(ssrcs) > MAX_SSRCS:
            raise ValueError("at most %d slot SSRCs" % MAX_SSRCS)
        if sample_every < 1 or sample_every & (sample_every - 1):
            raise ValueError("sample_every must be a power of two")
        self._capacity = capacity
        self._ssrc_count = len(ssrcs)
        for i in range(self._ssrc_count):
            self._ssrcs[i] = <uint32_t>ssrcs[i]
        self._track_latency = latency_ssrc >= 0
        self._latency_ssrc = <uint32_t>(latency_ssrc if latency_ssrc >= 0 else 0)
        self._sample_mask = sample_every - 1
        self._authenticate_other = authenticate_other
        self._sessions = [None] * capacity
        self._epoll = epoll_create1(EPOLL_CLOEXEC)
        if self._epoll < 0:
            raise OSError(errno, "epoll_create1 failed")
        self._fds = <int *>calloc(capacity, sizeof(int))
        self._contexts = <void **>calloc(capacity, sizeof(void *))
        self._buffers = <unsigned char *>calloc(BATCH, BUFFER)
        self._control = <unsigned char *>calloc(BATCH, CONTROL)
        self._iov = <iovec *>calloc(BATCH, sizeof(iovec))
        self._messages = <mmsghdr *>calloc(BATCH, sizeof(mmsghdr))
        self._events = <epoll_event *>calloc(MAX_EVENTS, sizeof(epoll_event))
        if (self._fds == NULL or self._contexts == NULL or self._buffers == NULL
                or self._control == NULL or self._iov == NULL or self._messages == NULL
                or self._events == NULL):
            raise MemoryError()
        for i in range(capacity):
            self._fds[i] = -1
        for i in range(BATCH):
            self._iov[i].iov_base = self._buffers + i * BUFFER
            self._iov[i].iov_len = BUFFER
        self.packets = np.zeros((capacity, self._ssrc_count + 1), dtype=np.uint64)
        self.rtcp = np.zeros(capacity, dtype=np.uint64)
        self.stun = np.zeros(capacity, dtype=np.uint64)
        self.other = np.zeros(capacity, dtype=np.uint64)
        self.floor = np.zeros(capacity, dtype=np.uint64)
        self.auth_ok = np.zeros(capacity, dtype=np.uint64)
        self.auth_failed = np.zeros(capacity, dtype=np.uint64)
        self.first_ns = np.zeros(capacity, dtype=np.int64)
        self.last_ns = np.zeros(capacity, dtype=np.int64)
        self.seq_first_ns = np.zeros(SEQUENCES, dtype=np.int64)
        self.seq_last_ns = np.zeros(SEQUENCES, dtype=np.int64)
        self.seq_copies = np.zeros(SEQUENCES, dtype=np.uint64)
        self.seq_sent_ns = np.zeros(SEQUENCES, dtype=np.int64)
        self.samples_ns = np.zeros(max(1, max_samples), dtype=np.int64)
        self._packets = self.packets
        self._rtcp = self.rtcp
        self._stun = self.stun
        self._other = self.other
        self._floor = self.floor
        self._auth_ok = self.auth_ok
        self._auth_failed = self.auth_failed
        self._first = self.first_ns
        self._last = self.last_ns
        self._seq_first = self.seq_first_ns
        self._seq_last = self.seq_last_ns
        self._seq_copies = self.seq_copies
        self._seq_sent = self.seq_sent_ns
        self._samples = self.samples_ns
        self._sample_count = 0
        self.datagrams = 0
        self.wakeups = 0

    def __dealloc__(self):
        if self._epoll >= 0:
            close(self._epoll)
        free(self._fds)
        free(self._contexts)
        free(self._buffers)
        free(self._control)
        free(self._iov)
        free(self._messages)
        free(self._events)

    def add(self, int index, sock, srtp):
        """Start counting what ``sock`` (a listener's UDP socket) receives, as ``index``.

        ``srtp`` is the listener's inbound pylibsrtp.Session (kept alive here);
        the sink owns its use from now on: nothing else may unprotect with it.
        Turns on SO_TIMESTAMPNS so arrival times are the kernel's.
        """
        cdef epoll_event event
        if not 0 <= index < self._capacity:
            raise IndexError("index %d out of 0..%d" % (index, self._capacity - 1))
        if self._fds[index] >= 0:
            raise ValueError("index %d is already in use" % index)
        cdef void *context = _srtp_pointer(srtp)
        cdef int fd = sock.fileno()
        cdef int on = 1
        if setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) != 0:
            raise OSError(errno, "setsockopt(SO_TIMESTAMPNS) failed")
        self._sessions[index] = (sock, srtp)
        self._contexts[index] = context
        memset(&event, 0, sizeof(event))
        event.events = EPOLLIN
        event.data.u32 = <uint32_t>index
        if epoll_ctl(self._epoll, EPOLL_CTL_ADD, fd, &event) != 0:
            self._sessions[index] = None
            raise OSError(errno, "epoll_ctl(ADD) failed")
        self._fds[index] = fd

    def remove(self, int index):
        """Stop reading listener ``index`` (its counters stay)."""
        if not 0 <= index < self._capacity or self._fds[index] < 0:
            return
        epoll_ctl(self._epoll, EPOLL_CTL_DEL, self._fds[index], NULL)
        self._fds[index] = -1
        self._sessions[index] = None

    def stop(self):
        """Make a running :meth:`run` return at its next wakeup."""
        self._stop = True

    @property
    def sample_count(self):
        """How many entries of :attr:`samples_ns` are filled."""
        return self._sample_count

    def reset_latency(self):
        """Forget the per-sequence arrival times and latency samples (call while idle)."""
        self.seq_first_ns[:] = 0
        self.seq_last_ns[:] = 0
        self.seq_copies[:] = 0
        self.seq_sent_ns[:] = 0
        self._sample_count = 0

    def run(self, double seconds, double pause=0.0):
        """Drain the sockets for ``seconds`` (or until :meth:`stop`), without the GIL.

        ``pause`` (seconds) is slept after each wakeup that did not fill the
        event array, so datagrams of many sockets are read per wakeup (the
        arrival times are the kernel's, so this does not change them).
        Returns the datagrams read.
        """
        cdef int64_t deadline = sink_now_ns(CLOCK_MONOTONIC) + <int64_t>(seconds * 1e9)
        cdef timespec nap
        nap.tv_sec = <long>pause
        nap.tv_nsec = <long>((pause - nap.tv_sec) * 1e9)
        self._stop = False
        cdef uint64_t before = self.datagrams
        with nogil:
            self._run(deadline, nap)
        return self.datagrams - before

    cdef void _run(self, int64_t deadline, timespec nap) noexcept nogil:
        cdef int n, i, k, received, index, fd, timeout
        cdef int64_t now
        cdef bint napping = nap.tv_sec > 0 or nap.tv_nsec > 0
        for i in range(BATCH):
            self._messages[i].msg_hdr.msg_iov = &self._iov[i]
            self._messages[i].msg_hdr.msg_iovlen = 1
        while not self._stop:
            now = sink_now_ns(CLOCK_MONOTONIC)
            if now >= deadline:
                break
            timeout = <int>((deadline - now) // 1000000) + 1
            if timeout > 50:
                timeout = 50  # see stop() within 50 ms
            n = epoll_wait(self._epoll, self._events, MAX_EVENTS, timeout)
            if n < 0:
                if errno == EINTR:
                    continue
                break
            self.wakeups += 1
            for i in range(n):
                index = <int>self._events[i].data.u32
                fd = self._fds[index]
                if fd < 0:
                    continue
                for k in range(BATCH):
                    self._messages[k].msg_hdr.msg_name = NULL
                    self._messages[k].msg_hdr.msg_namelen = 0
                    self._messages[k].msg_hdr.msg_control = self._control + k * CONTROL
                    self._messages[k].msg_hdr.msg_controllen = CONTROL
                    self._messages[k].msg_hdr.msg_flags = 0
                received = recvmmsg(fd, self._messages, BATCH, MSG_DONTWAIT, NULL)
                if received <= 0:
                    continue
                now = sink_now_ns(CLOCK_REALTIME)
                for k in range(received):
                    self._account(index, self._buffers + k * BUFFER,
                                  <int>self._messages[k].msg_len,
                                  &self._messages[k].msg_hdr, now)
                self.datagrams += <uint64_t>received
            if napping and n < MAX_EVENTS:
                nanosleep(&nap, NULL)

    cdef void _account(self, int index, unsigned char *data, int length, msghdr *header,
                       int64_t fallback_ns) noexcept nogil:
        cdef uint8_t first
        cdef uint32_t ssrc
        cdef uint16_t sequence
        cdef int slot, count, offset, size
        cdef int64_t arrival, stamp
        cdef uint64_t seen
        if length <= 0:
            self._other[index] += 1
            return
        first = data[0]
        if first < 2:
            self._stun[index] += 1
            return
        if first < 128 or first > 191 or length < 12:
            self._other[index] += 1
            return
        if 192 <= data[1] <= 223:  # RTCP packet types 192..223 (RFC 5761 4)
            self._rtcp[index] += 1
            return
        arrival = sink_kernel_ns(header)
        if arrival == 0:
            arrival = fallback_ns
        ssrc = _be32(data + 8)
        if ssrc == _FLOOR_SSRC:
            self._floor[index] += 1
            return
        slot = 0
        while slot < self._ssrc_count and self._ssrcs[slot] != ssrc:
            slot += 1
        seen = self._packets[index, slot]
        self._packets[index, slot] = seen + 1
        if self._first[index] == 0:
            self._first[index] = arrival
        self._last[index] = arrival
        if slot == self._ssrc_count and not self._authenticate_other:
            return  # not a slot stream of the room
        sequence = (<uint16_t>data[2] << 8) | data[3]
        cdef bint latency = self._track_latency and ssrc == self._latency_ssrc
        if latency:
            if self._seq_copies[sequence] == 0 or arrival < self._seq_first[sequence]:
                self._seq_first[sequence] = arrival
            if arrival > self._seq_last[sequence]:
                self._seq_last[sequence] = arrival
            self._seq_copies[sequence] += 1
        # The phase differs per listener, so the samples cover every sequence
        # number rather than the same few (the listeners' counts move in step).
        if (seen + <uint64_t>index) & self._sample_mask:
            return
        size = length
        if _srtp_unprotect(self._contexts[index], data, &size) != 0:
            self._auth_failed[index] += 1
            return
        self._auth_ok[index] += 1
        if not latency:
            return
        # The decrypted payload: after the CSRCs and the header extension.
        count = data[0] & 0x0F
        offset = 12 + 4 * count
        if data[0] & 0x10:
            if offset + 4 > size:
                return
            offset += 4 + 4 * ((<int>data[offset + 2] << 8) | data[offset + 3])
        # Opus code 3 with the padding flag (RFC 6716 3.2.5): the stamp is the
        # last 8 bytes of the padding.
        if offset + 12 > size or data[offset] & 3 != 3 or not data[offset + 1] & 0x40:
            return
        stamp = _be64(data + size - 8)
        self._seq_sent[sequence] = stamp
        if self._sample_count < self._samples.shape[0]:
            self._samples[self._sample_count] = arrival - stamp
            self._sample_count += 1


cdef int _fill_destinations(sessions, addresses, void **contexts, unsigned char *names) except -1:
    """Each receiver's libsrtp context, and its ``struct sockaddr_in`` in 16 bytes
    of ``names``: family (host order), port and address (network order)."""
    cdef Py_ssize_t r
    cdef int k
    for r in range(len(sessions)):
        contexts[r] = _srtp_pointer(sessions[r])
        host, port = addresses[r]
        raw = _socket.inet_aton(host)
        names[r * 16] = _socket.AF_INET & 0xFF
        names[r * 16 + 1] = (_socket.AF_INET >> 8) & 0xFF
        names[r * 16 + 2] = (port >> 8) & 0xFF
        names[r * 16 + 3] = port & 0xFF
        for k in range(4):
            names[r * 16 + 4 + k] = raw[k]
    return 0


def floor_protect_sendto(sock, sessions, addresses, const unsigned char[::1] packet,
                         long count, long first_sequence=0):
    """The C floor: ``count`` datagrams of copy + srtp_protect + sendto, no batching.

    Datagram ``i`` goes to ``addresses[i % n]`` protected with
    ``sessions[i % n]`` (pylibsrtp outbound sessions), with sequence number
    ``first_sequence + i // n`` (libsrtp refuses a replayed index, so a
    caller sending in bursts passes where the last burst ended).
    ``addresses`` are IPv4 ``(host, port)`` on loopback. Returns datagrams
    the kernel took (``MSG_DONTWAIT``: a full socket drops, as the server's
    fan-out does).
    """
    cdef Py_ssize_t n = len(sessions)
    if n == 0 or n != len(addresses):
        raise ValueError("one address per session, at least one")
    cdef Py_ssize_t size = packet.shape[0]
    if not 12 <= size <= BUFFER - 160:
        raise ValueError("packet must be an RTP packet of 12..%d bytes" % (BUFFER - 160))
    if _be32(&packet[8]) != _FLOOR_SSRC:
        raise ValueError("the floor's packet must carry FLOOR_SSRC (0x%08X)" % _FLOOR_SSRC)
    cdef void **contexts = <void **>calloc(n, sizeof(void *))
    cdef unsigned char *names = <unsigned char *>calloc(n, 16)
    if contexts == NULL or names == NULL:
        free(contexts)
        free(names)
        raise MemoryError()
    cdef Py_ssize_t r
    cdef unsigned char buffer[BUFFER]
    cdef long i
    cdef long sent = 0
    cdef int length
    cdef int fd = sock.fileno()
    cdef uint16_t sequence
    try:
        _fill_destinations(sessions, addresses, contexts, names)
        with nogil:
            for i in range(count):
                r = i % n
                sequence = <uint16_t>(first_sequence + i // n)
                memcpy(buffer, &packet[0], size)
                buffer[2] = <uint8_t>(sequence >> 8)
                buffer[3] = <uint8_t>sequence
                length = <int>size
                if _srtp_protect(contexts[r], buffer, &length) != 0:
                    continue
                if sendto(fd, buffer, length, MSG_DONTWAIT,
                          <sockaddr *>(names + r * 16), 16) >= 0:
                    sent += 1
    finally:
        free(contexts)
        free(names)
    return sent


def floor_protect_sendmmsg(sock, sessions, addresses, const unsigned char[::1] packet,
                           long count, long first_sequence=0, int batch=64):
    """The batched C floor: as :func:`floor_protect_sendto`, but the protected
    datagrams go to the kernel ``batch`` at a time with ``sendmmsg``, as the
    server's fan-out does. Returns datagrams the kernel took."""
    cdef Py_ssize_t n = len(sessions)
    if n == 0 or n != len(addresses):
        raise ValueError("one address per session, at least one")
    if not 1 <= batch <= 1024:
        raise ValueError("batch must be in 1..1024")
    cdef Py_ssize_t size = packet.shape[0]
    if not 12 <= size <= BUFFER - 160:
        raise ValueError("packet must be an RTP packet of 12..%d bytes" % (BUFFER - 160))
    if _be32(&packet[8]) != _FLOOR_SSRC:
        raise ValueError("the floor's packet must carry FLOOR_SSRC (0x%08X)" % _FLOOR_SSRC)
    cdef void **contexts = <void **>calloc(n, sizeof(void *))
    cdef unsigned char *names = <unsigned char *>calloc(n, 16)
    cdef unsigned char *buffers = <unsigned char *>calloc(batch, BUFFER)
    cdef iovec *iov = <iovec *>calloc(batch, sizeof(iovec))
    cdef mmsghdr *messages = <mmsghdr *>calloc(batch, sizeof(mmsghdr))
    if contexts == NULL or names == NULL or buffers == NULL or iov == NULL or messages == NULL:
        free(contexts)
        free(names)
        free(buffers)
        free(iov)
        free(messages)
        raise MemoryError()
    cdef Py_ssize_t r
    cdef long i
    cdef long sent = 0
    cdef int length, queued, done, result, k
    cdef int fd = sock.fileno()
    cdef uint16_t sequence
    cdef unsigned char *out
    try:
        _fill_destinations(sessions, addresses, contexts, names)
        for k in range(batch):
            iov[k].iov_base = buffers + k * BUFFER
            messages[k].msg_hdr.msg_iov = &iov[k]
            messages[k].msg_hdr.msg_iovlen = 1
            messages[k].msg_hdr.msg_namelen = 16
        with nogil:
            queued = 0
            for i in range(count):
                r = i % n
                sequence = <uint16_t>(first_sequence + i // n)
                out = buffers + queued * BUFFER
                memcpy(out, &packet[0], size)
                out[2] = <uint8_t>(sequence >> 8)
                out[3] = <uint8_t>sequence
                length = <int>size
                if _srtp_protect(contexts[r], out, &length) != 0:
                    continue
                iov[queued].iov_len = length
                messages[queued].msg_hdr.msg_name = names + r * 16
                queued += 1
                if queued == batch or i == count - 1:
                    done = 0
                    while done < queued:
                        result = sendmmsg(fd, messages + done, queued - done, MSG_DONTWAIT)
                        if result > 0:
                            done += result
                            sent += result
                        elif result < 0 and errno == EINTR:
                            continue
                        else:
                            break  # a full socket drops the rest, as the server does
                    queued = 0
    finally:
        free(contexts)
        free(names)
        free(buffers)
        free(iov)
        free(messages)
    return sent
