"""The port: the one UDP socket a :class:`~sfu.transport.server.Server` shares.

:func:`open_socket` binds it with buffers large enough for the fan-out's
bursts and checks that the address written into answers is of the family
it receives. :class:`PortProtocol` is its asyncio protocol: each datagram
goes straight to the server's demultiplexer, and what goes wrong on one
datagram (a bug, an ICMP error for one client) is counted in
:attr:`Server.drops <sfu.transport.server.Server.drops>` and never stops the port.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import InvalidSetting

if TYPE_CHECKING:
    from .server import Server

__all__ = ["SOCKET_BUFFER", "PortProtocol", "Shown", "format_address", "open_socket"]

logger = logging.getLogger(__name__)

Address = tuple[Any, ...]

#: Socket buffer wanted for fan-out bursts (one packet x thousands of listeners).
SOCKET_BUFFER = 4 * 1024 * 1024


def format_address(address: Address) -> str:
    """A socket address as logs show it: ``127.0.0.1:5000``, ``[::1]:5000``
    (an IPv6 host in brackets, RFC 3986 3.2.2: ``::1:5000`` would read as an
    address ending in ``:5000``). An IPv4 client of a dual-stack socket,
    which the socket names ``::ffff:127.0.0.1``, is shown as the IPv4
    address it is."""
    host, port = str(address[0]), address[1]
    if host[:7].lower() == "::ffff:" and "." in host and ":" not in host[7:]:
        host = host[7:]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Shown:
    """:func:`format_address`, made only if a log record is written: pass
    ``Shown(address)`` as a ``%s`` argument."""

    __slots__ = ("address",)

    def __init__(self, address: Address | None) -> None:
        self.address = address

    def __str__(self) -> str:
        return "None" if self.address is None else format_address(self.address)


def open_socket(host: str, port: int, announce: str | Sequence[str]) -> socket.socket:
    """A non-blocking UDP socket bound to ``host`` and ``port`` (0: a free
    one), whose family can receive what is sent to ``announce`` (an address,
    or each of a list)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option, force in ((socket.SO_SNDBUF, 32), (socket.SO_RCVBUF, 33)):  # SO_*BUFFORCE
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        try:
            sock.bind(sockaddr)
        except OSError as exc:  # the errno kept; the message names the address
            where = format_address((host, port))
            raise OSError(exc.errno, f"cannot bind udp {where}: {exc.strerror}") from exc
        for address in [announce] if isinstance(announce, str) else announce:
            _check_announce_family(sock, host, address)
    except BaseException:
        sock.close()
        raise
    return sock


def _check_announce_family(sock: socket.socket, host: str, announce: str) -> None:
    """Answers must name an address of the family the socket receives:
    ``host`` a name that resolved to IPv6 with an IPv4 ``announce`` (or
    the reverse) would send every client where nothing listens. An
    unspecified IPv6 bind (``::``) also takes IPv4, unless IPv6-only."""
    version = ipaddress.ip_address(announce).version
    family, bound = sock.family, str(sock.getsockname()[0])
    if family == socket.AF_INET and version == 6:
        raise InvalidSetting(
            f"announce {announce!r} is IPv6 but host {host!r} bound IPv4 "
            f"{bound}: give an IPv6 host (or an IPv4 announce)"
        )
    if family == socket.AF_INET6:
        bound_address = ipaddress.ip_address(bound.partition("%")[0])
    if family == socket.AF_INET6 and version == 6:
        # An IPv6 socket bound to an IPv4 address in IPv6 form takes only
        # that IPv4 address's datagrams.
        if isinstance(bound_address, ipaddress.IPv6Address) and bound_address.ipv4_mapped:
            raise InvalidSetting(
                f"announce {announce!r} is IPv6 but host {host!r} is the IPv4 address "
                f"{bound_address.ipv4_mapped}: give '::' (both) or an IPv4 announce"
            )
    if family == socket.AF_INET6 and version == 4:
        # '::' (both families) or an IPv4 address in IPv6 form: the socket
        # takes IPv4 clients, which reach the IPv4 address announced.
        takes_ipv4 = (
            bound_address.is_unspecified
            or (isinstance(bound_address, ipaddress.IPv6Address) and bound_address.ipv4_mapped)
        ) and not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        if not takes_ipv4:
            raise InvalidSetting(
                f"announce {announce!r} is IPv4 but host {host!r} bound IPv6 "
                f"{bound}: give an IPv4 host, '::' (both), or an IPv6 announce"
            )


class PortProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: Server) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: Address) -> None:
        try:
            self.server._datagram_received(data, addr)
        except Exception:  # a bug on one packet must not stop the port
            drops = self.server.drops
            drops["internal error"] += 1
            if (
                drops["internal error"] & (drops["internal error"] - 1) == 0
            ):  # 1st, 2nd, 4th, ...: no log flood
                logger.exception(
                    "x error handling a datagram from %s (%d so far)",
                    Shown(addr),
                    drops["internal error"],
                )

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for one client must not disturb the others.
        self.server.drops["socket error"] += 1
        logger.debug("x socket error: %s", exc)
