"""The port's socket and protocol on their own: what one bad datagram costs."""

from __future__ import annotations

import collections
import logging
import socket
from types import SimpleNamespace
from typing import Any

import pytest

import sfu
from sfu.transport.port import PortProtocol, open_socket

pytestmark = pytest.mark.compiled_and_python_alike  # see tests/alike.py


class BrokenServer:
    def __init__(self) -> None:
        self.drops: collections.Counter[str] = collections.Counter()
        self.seen: list[bytes] = []

    def _datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.seen.append(data)
        if data == b"bug":
            raise RuntimeError("a bug")


def test_a_failing_datagram_is_counted_and_the_next_one_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server: Any = BrokenServer()
    protocol = PortProtocol(server)
    with caplog.at_level(logging.ERROR, logger="sfu.transport.port"):
        for _ in range(5):
            protocol.datagram_received(b"bug", ("127.0.0.1", 5000))
        protocol.datagram_received(b"fine", ("127.0.0.1", 5000))
    assert server.seen == [b"bug"] * 5 + [b"fine"]
    assert server.drops["internal error"] == 5
    # Logged the 1st, 2nd and 4th time: a bug hit by every packet floods no log.
    logged = [r.getMessage() for r in caplog.records if r.name == "sfu.transport.port"]
    assert [message.rpartition("(")[2] for message in logged] == [
        "1 so far)",
        "2 so far)",
        "4 so far)",
    ]


def test_an_icmp_error_is_counted_not_raised() -> None:
    server: Any = SimpleNamespace(drops=collections.Counter())
    PortProtocol(server).error_received(ConnectionRefusedError())
    assert server.drops == {"socket error": 1}


def test_open_socket_binds_a_non_blocking_udp_socket() -> None:
    sock = open_socket("127.0.0.1", 0, "127.0.0.1")
    try:
        assert sock.type == socket.SOCK_DGRAM and not sock.getblocking()
        assert sock.getsockname()[0] == "127.0.0.1" and sock.getsockname()[1] > 0
    finally:
        sock.close()


def test_open_socket_refuses_an_announce_the_socket_cannot_receive() -> None:
    with pytest.raises(sfu.InvalidSetting, match="announce '::1' is IPv6 but host '127.0.0.1'"):
        open_socket("127.0.0.1", 0, "::1")
