"""The participants a Mixer sends a mix to as RTP (mixed listeners), and what it sent them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket

from ..relay import FanOut
from ..transport.rtp import ntp_time
from .mix_stream import MixStream
from .opus import FRAME_SAMPLES, SAMPLE_RATE
from .streams import send_in_step

if TYPE_CHECKING:
    from ..participant import Participant

__all__ = ["MixReceivers"]


class MixReceivers:
    """Which stream each mixed receiver gets, and the counts that outlive a renegotiation.

    The :class:`~sfu.media.mixer.Mixer` registers a receiver on a stream's
    FanOut and then here; it owns the streams, this only points at them.
    """

    def __init__(self) -> None:
        #: The stream each receiver (by receiver id) gets.
        self.streams: dict[int, MixStream] = {}
        # Per receiver taken off a stream by a renegotiation, per stream SSRC it
        # had: (packets, octets, last sequence number) sent, so that its counts
        # and sender reports go on (RFC 3550 6.4.1: cumulative per SSRC) when
        # it is registered on that stream again, and its SRTP index is brought
        # up to the stream's (send_in_step) if the stream went on meanwhile.
        self.carried: dict[int, dict[int, tuple[int, int, int]]] = {}

    def add(self, receiver_id: int, stream: MixStream, fanout: FanOut) -> tuple[int, int]:
        """``receiver_id``, just registered on ``fanout`` (the stream's), gets
        ``stream``; (packets, octets) sent to bring its SRTP index up to the
        stream's, should it have had this stream before."""
        stream.receivers.add(receiver_id)
        self.streams[receiver_id] = stream
        carried = self.carried.get(receiver_id, {}).get(stream.ssrc)
        if carried is None or carried[2] < 0:
            return 0, 0
        return send_in_step(
            fanout,
            0,
            stream.ssrc,
            carried[2],
            (stream.sequence - 1) & 0xFFFF,
            (stream.timestamp - FRAME_SAMPLES) & 0xFFFFFFFF,
            0,
            receiver_id,
        )

    def set_address(self, participant: Participant) -> None:
        stream = self.streams.get(participant.receiver_id)
        session = participant.session
        if stream is None or stream.fanout is None or session is None:
            return
        if session.address is not None:
            stream.fanout.set_address(participant.receiver_id, session.address)

    def remove(self, receiver_id: int, keep_counts: bool) -> MixStream | None:
        """Take ``receiver_id`` off its stream (and the stream's FanOut); the
        stream it had, if any. ``keep_counts``: see
        :meth:`~sfu.media.mixer.Mixer.remove_receiver`."""
        stream = self.streams.pop(receiver_id, None)
        if not keep_counts:
            self.carried.pop(receiver_id, None)
        if stream is None:
            return None
        if keep_counts:
            packets, octets = self.counts(stream, receiver_id)
            last = -1
            if stream.fanout is not None and receiver_id in stream.fanout:
                if stream.fanout.counters(receiver_id)[0][0]:
                    last = (stream.sequence - 1) & 0xFFFF  # it got every frame
            carried = self.carried.setdefault(receiver_id, {})
            if last < 0 and stream.ssrc in carried:
                last = carried[stream.ssrc][2]  # nothing since it was last registered
            carried[stream.ssrc] = (packets, octets, last)
        stream.receivers.discard(receiver_id)
        if stream.fanout is not None and receiver_id in stream.fanout:
            stream.fanout.remove_receiver(receiver_id)
        return stream

    def clear(self) -> list[int]:
        """Forget every receiver (the Mixer let its consumers go); their ids."""
        receivers = list(self.streams)
        self.streams.clear()
        self.carried.clear()
        return receivers

    def counts(self, stream: MixStream, receiver_id: int) -> tuple[int, int]:
        """(packets, payload octets) sent to a registered receiver on ``stream``,
        what earlier registrations on the same stream sent included."""
        packets = octets = 0
        if stream.fanout is not None and receiver_id in stream.fanout:
            counters = stream.fanout.counters(receiver_id)
            if counters:
                packets, octets = counters[0]
        carried = self.carried.get(receiver_id, {}).get(stream.ssrc)
        if carried is not None:
            packets, octets = packets + carried[0], octets + carried[1]
        return packets, octets

    def sender_report(self, participant: Participant, now: float, unix_time: float) -> bytes | None:
        """See :meth:`~sfu.media.mixer.Mixer.sender_report`."""
        stream = self.streams.get(participant.receiver_id)
        if stream is None or stream.fanout is None or participant.receiver_id not in stream.fanout:
            return None
        if stream.sent_due is None:
            return None
        packets, octets = self.counts(stream, participant.receiver_id)
        elapsed = int((now - stream.sent_due) * SAMPLE_RATE)
        info = RtcpSenderInfo(
            ntp_timestamp=ntp_time(unix_time),
            rtp_timestamp=(stream.sent_timestamp + elapsed) & 0xFFFFFFFF,
            packet_count=packets & 0xFFFFFFFF,
            octet_count=octets & 0xFFFFFFFF,
        )
        return bytes(RtcpSrPacket(ssrc=stream.ssrc, sender_info=info)) + stream.sdes

    def counters(self, participant: Participant) -> list[tuple[int, int]]:
        """See :meth:`~sfu.media.mixer.Mixer.receiver_counters`."""
        stream = self.streams.get(participant.receiver_id)
        if stream is None or stream.fanout is None or participant.receiver_id not in stream.fanout:
            return []
        return [self.counts(stream, participant.receiver_id)]
