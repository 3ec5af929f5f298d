"""Prometheus metrics of a :class:`~sfu.Server`, read at scrape time.

Nothing is counted per packet here: the collector reads the counters the
server keeps anyway (``server.stats()``, drops by reason, the join-latency
histogram) when Prometheus asks.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .refusals import join_refusals

if TYPE_CHECKING:
    from ..transport.server import Server

__all__ = ["ServerCollector", "render_metrics"]

#: What generate_latest writes (the 0.0.4 text format), whatever the newest
#: format of the installed prometheus_client is.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerCollector(Collector):
    """Exports one server's rooms, participants, media counters and join latency."""

    def __init__(self, server: Server) -> None:
        self._server = weakref.ref(server)

    def collect(self) -> Iterator[Metric]:
        server = self._server()
        if server is None:
            return
        stats = server.stats()
        yield GaugeMetricFamily("sfu_rooms", "Open rooms", value=stats["rooms"])
        participants = GaugeMetricFamily("sfu_participants", "Members by role", labels=["role"])
        counts = {"moderator": 0, "speaker": 0, "listener": 0}
        for room in server.rooms.values():
            for participant in room.participants.values():
                counts[participant.role] += 1
        for role, count in counts.items():
            participants.add_metric([role], count)
        yield participants
        yield GaugeMetricFamily("sfu_sessions", "WebRTC sessions", value=stats["sessions"])
        # Counters carry their unit last, then _total (Prometheus' naming):
        # generate_latest adds the _total.
        yield CounterMetricFamily(
            "sfu_received_datagrams",
            "Datagrams received on the media port: STUN, DTLS, SRTP and SRTCP, dropped ones too",
            value=stats["packets_in"],
        )
        yield CounterMetricFamily(
            "sfu_received_bytes",
            "Bytes of the datagrams received on the media port",
            value=stats["bytes_in"],
        )
        yield CounterMetricFamily(
            "sfu_sent_packets",
            "RTP packets handed to the kernel: slot streams, and the mix to mixed listeners",
            value=stats["packets_out"],
        )
        yield CounterMetricFamily(
            "sfu_sent_payload_bytes",
            "Opus payload bytes of the RTP packets handed to the kernel",
            value=stats["payload_bytes_out"],
        )
        drops = CounterMetricFamily(
            "sfu_drops", "Datagrams and packets dropped, by reason", labels=["reason"]
        )
        # What the fan-out could not send: the socket full or failing, a
        # payload over the MTU, an SRTP error.
        drops.add_metric(["not sent (socket, size or srtp)"], stats["packets_out_dropped"])
        drops.add_metric(["rtp not forwarded"], stats["rtp_not_forwarded"])
        for reason, count in sorted(stats["drops"].items()):
            drops.add_metric([reason], count)
        yield drops
        cumulative, buckets = 0, []
        for bound, count in zip(server.join_buckets, server.join_counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "sfu_join_seconds",
            "From the answer to DTLS done, per participant",
            buckets=buckets,
            sum_value=server.join_sum,
        )
        yield CounterMetricFamily(
            "sfu_handshakes_timed_out",
            "Sessions closed because ICE and DTLS were not done within handshake_timeout, "
            "or within consent_timeout when that is shorter (a client whose UDP does not reach the server, a wrong announce address)",
            value=server.handshakes_timed_out,
        )
        refused = CounterMetricFamily(
            "sfu_joins_refused",
            "Joins the signaling adapters refused, by way in (websocket, whip, whep) and "
            "reason (an error code; for WHIP and WHEP the HTTP status)",
            labels=["via", "reason"],
        )
        for (via, reason), count in sorted(join_refusals(server).counts.items()):
            refused.add_metric([via, reason], count)
        yield refused


_registries: weakref.WeakKeyDictionary[Server, CollectorRegistry] = weakref.WeakKeyDictionary()


def render_metrics(server: Server) -> tuple[bytes, str]:
    """The Prometheus text exposition for ``server``, and its content type."""
    registry = _registries.get(server)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ServerCollector(server))
        _registries[server] = registry
    return generate_latest(registry), CONTENT_TYPE
