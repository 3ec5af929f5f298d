"""The Router: one room's media path, speakers' packets in, slot streams out.

For each incoming speaker packet (already SRTP-unprotected) the Router

1. reads the fixed header and the RFC 6464 level, without decoding;
2. feeds the level to the :class:`~sfu.detector.ActiveSpeakerDetector` and asks
   it which slot carries this speaker (a speaker whose client sends no
   level is decoded, and only that one, to measure it);
3. maps the packet into that slot's continuous stream: the slot has its
   own SSRC, sequence numbers continue with no gap when the speaker in it
   changes, timestamps advance by the real time elapsed, and the first
   packet of a new speaker carries the marker bit;
4. hands it to the :class:`~sfu.relay.FanOut`, which, per receiver,
   writes the header (receiver's payload type and extension id, CSRC =
   the speaker's :attr:`~sfu.media.streams.Publisher.csrc`), copies the
   payload byte for byte, protects it and sends the batch.

The CSRC that names a voice is the room's, not the client's SSRC: the
Router gives each member one (:meth:`Router.new_csrc`), unique in the
room, for as long as it is in it. Receivers map it to an identity through
the ``active_speakers`` events, so a client cannot pass its voice off as
another's by sending with that one's SSRC, and two clients that send with
the same SSRC (OBS 30.0's WHIP output always used 5002) are both heard, each
under its own name.

Steps 1-3 run once per incoming packet, in Python; step 4 runs per
receiver, in the compiled kernel.

One set of slot streams is shared by every receiver of the room. A
speaker that also receives is excluded from the slot carrying its own
voice (it never hears itself); that slot's sequence numbers jump for it
when someone else takes the slot, which its jitter buffer treats as loss.
Listeners always see gap-free streams.

A receiver that renegotiates fewer lines, and later more, gets those slots
back on the same SSRCs where they are now: its SRTP context (and its
client's) still holds the index of the last packet it got on each, so the
Router remembers that packet for as long as the receiver is in the room and
first brings both ends up to the slot with a few silence frames
(:func:`~sfu.media.streams.send_in_step`). The Mixer does the same for a mixed member's streams.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pylibsrtp
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket, RtcpSenderInfo, RtcpSrPacket

from .._values import refilled
from ..audio_level import read_audio_level
from ..detector import ActiveSpeakerDetector
from ..relay import MAX_PAYLOAD, FanOut
from ..transport.rtp import (
    MAX_DROPOUT,
    MAX_MISORDER,
    ReceiveStatistics,
    ntp_time,
    parse_rtp_header,
    sdes_cnames,
    strip_padding,
    uint16_gt,
)
from .levels import SILENCE as SILENCE_LEVEL
from .levels import OpusLevelMeter
from .streams import (
    KEEP_IN_STEP,
    PACKET_BURST,
    PACKET_RATE,
    SILENCE_RTP,
    Publisher,
    SlotStream,
    send_in_step,
)

# The streams are sfu.media.streams'; named here too, as the Router's.
__all__ = ["Publisher", "Router", "SlotStream", "send_in_step"]

logger = logging.getLogger(__name__)

#: Receivers' sender reports are sent this often (seconds).
SENDER_REPORT_INTERVAL = 5.0
# MAX_DROPOUT, MAX_MISORDER (sfu.transport.rtp, RFC 3550 A.1): a speaker's
# sequence number this far ahead of the expected one, or more than
# MAX_MISORDER behind it, is not loss or reordering but a stray or a sender
# that restarted its numbering under the same SSRC: two such packets in a
# row re-anchor the slot as for a new speaker. Copied through, a jump would
# put the slot's SRTP index behind itself, and libsrtp (ours and the
# listeners') would drop every packet for minutes.
#: Packets after a slot switch during which one from before it is dropped:
#: as far back as a packet may be reordered (beyond that it is a stray, above).
SWITCH_GUARD_PACKETS = MAX_MISORDER
#: Seconds after a speaker's SSRC changed during which packets of the SSRC it
#: left are late ones, dropped (else each would flip the slot back and forth).
STALE_SSRC_SECONDS = 2.0
#: Packets without a level from a speaker whose client negotiated the level
#: extension, after which its level is decoded instead (never heard otherwise).
MISSING_LEVEL_PACKETS = 25
#: The most a slot's sequence number moves on for one packet: a speaker's
#: larger jump (loss of over 2 s, or jumps made on purpose) is carried as a
#: step of this size. A receiver that misses some packets (its socket full)
#: misses their steps too, and its libsrtp, like ours, takes a packet whose
#: index is 2**15 or more ahead for an old one: with the speaker's own jumps
#: (up to MAX_DROPOUT each) a dozen missed packets could cut it off for ~11
#: minutes; with this, it takes hundreds.
MAX_SLOT_STEP = 100


@dataclass(eq=False)
class _Receiver:
    receiver_id: int
    slot_count: int
    srtp: pylibsrtp.Session
    address: Any
    next_report: float = 0.0
    # Per slot it had under earlier registrations (a renegotiation registers
    # it again, on the same slot SSRCs): (packets, payload octets) sent, so
    # that its counts go on, and the last sequence number sent (-1: none),
    # where its SRTP context for that SSRC still is. Kept for slots it has
    # not now, too: it may get them back.
    carried: list[tuple[int, int, int]] = field(default_factory=list)


class Router:
    """Per-room media path; see the module documentation."""

    def __init__(self, sock: socket.socket, slots: int, **detector: Any) -> None:
        """``detector``: :class:`~sfu.detector.ActiveSpeakerDetector` settings (``hold``, ``interval``, ``c1``...)."""
        self.slot_count = slots
        self.detector = ActiveSpeakerDetector(slots, **detector)
        self.fanout = FanOut(sock)
        self.slots = [SlotStream(secrets.randbits(32)) for _ in range(slots)]
        # The SSRC of the server's own reports to speakers.
        self.report_ssrc = secrets.randbits(32)
        #: The CNAME of every stream the room sends (RTCP SDES, the answers'
        #: a=ssrc lines): random, nothing identifying the room goes on the wire.
        self.cname = secrets.token_hex(8)
        # The SDES packet (RFC 3550 6.1: in every compound) of the receiver
        # reports, and of the sender reports by number of slots: made once.
        self._report_sdes = sdes_cnames([self.report_ssrc], self.cname)
        self._slot_sdes: dict[int, bytes] = {}
        self._publishers: dict[int, Publisher] = {}
        # The CSRCs given to the room's members (new_csrc), and the room's own SSRCs,
        # which no member's CSRC may equal.
        self._csrcs: set[int] = set()
        self._own_ssrcs = {slot.ssrc for slot in self.slots} | {self.report_ssrc}
        self._receivers: dict[int, _Receiver] = {}
        # What was sent to receivers taken off to be registered again (see
        # remove_receiver(keep_counts=True)), by receiver id: _Receiver.carried.
        self._kept: dict[int, list[tuple[int, int, int]]] = {}
        self.packets_in = 0
        self.packets_dropped = 0
        self.payload_bytes_out = 0  # Opus payload bytes handed to the kernel, all receivers
        # Consumers of every forwarded speaker packet besides the fan-out (the
        # Mixer while it runs): tap(publisher, packet, payload_offset, sequence,
        # timestamp, slot, now). Empty when nothing consumes: no cost.
        self.taps: list[Callable[[Publisher, bytes, int, int, int, int, float], None]] = []
        # Told the number of a publisher released (muted, demoted, gone), so
        # that what they buffered (the Mixer's jitter buffer) is not played.
        self.released: list[Callable[[int], None]] = []

    @property
    def slot_ssrcs(self) -> list[int]:
        return [slot.ssrc for slot in self.slots]

    def slot_of_ssrc(self, ssrc: int) -> int:
        """The slot sent with ``ssrc`` (a receiver report names it), -1 for none."""
        for index, slot in enumerate(self.slots):
            if slot.ssrc == ssrc:
                return index
        return -1

    # -- membership ------------------------------------------------------------

    def new_csrc(self) -> int:
        """A CSRC for a new member's voice: random, not 0 (a mix with nobody in
        it), unique among the members' and the room's own SSRCs until
        :meth:`release_csrc`."""
        while True:
            csrc = secrets.randbits(32)
            if csrc and csrc not in self._csrcs and csrc not in self._own_ssrcs:
                self._csrcs.add(csrc)
                return csrc

    def release_csrc(self, csrc: int) -> None:
        """The member that had ``csrc`` left: another may get it."""
        self._csrcs.discard(csrc)

    def add_publisher(self, publisher: Publisher) -> None:
        if publisher.audio_level_id == 0:
            publisher.meter = OpusLevelMeter()  # first: if it fails, nothing is registered
        self._publishers[publisher.number] = publisher
        if not publisher.muted:
            self.detector.add(publisher.number)

    def remove_publisher(self, publisher: Publisher) -> None:
        self._publishers.pop(publisher.number, None)
        self.release(publisher)

    def release(self, publisher: Publisher) -> None:
        """Take ``publisher`` off the ranking and its slot at once (muted, demoted, gone)."""
        self.detector.remove(publisher.number)
        for stream in self.slots:
            if stream.publisher is publisher:
                stream.publisher = None
        for listener in self.released:
            try:
                listener(publisher.number)
            except Exception:  # a consumer's failure must not leave the release half done
                logger.exception("router release listener %r failed: removed", listener)
                self.released = [other for other in self.released if other is not listener]

    def restore(self, publisher: Publisher) -> None:
        """Rank ``publisher`` again (unmuted)."""
        if publisher.number in self._publishers:
            self.detector.add(publisher.number)

    def set_audio_level_id(self, publisher: Publisher, extension_id: int) -> None:
        """The speaker renegotiated: levels come in another extension id, or decoded."""
        if extension_id:
            publisher.meter = None
        elif publisher.meter is None:
            publisher.meter = OpusLevelMeter()  # first: if it fails, nothing changes
        publisher.audio_level_id = extension_id
        publisher.missing_levels = 0

    def add_receiver(
        self,
        receiver_id: int,
        address: Any,
        srtp: pylibsrtp.Session,
        *,
        payload_type: int,
        audio_level_id: int,
        slot_count: int,
        now: float,
    ) -> None:
        slot_count = min(slot_count, self.slot_count)
        self.fanout.add_receiver(
            receiver_id,
            address,
            srtp,
            payload_type=payload_type,
            audio_level_id=audio_level_id,
            slot_count=slot_count,
        )
        # Spread the receivers' sender reports over the interval.
        offset = (receiver_id * 0.618) % 1.0 * SENDER_REPORT_INTERVAL
        carried = self._kept.pop(receiver_id, [])
        self._receivers[receiver_id] = _Receiver(
            receiver_id, slot_count, srtp, address, now + offset, carried
        )
        for slot in range(min(slot_count, len(carried))):
            if carried[slot][2] >= 0:
                self._bring_in_step(receiver_id, slot, carried[slot][2])

    def _bring_in_step(self, receiver_id: int, slot: int, last: int) -> None:
        """A receiver registered again gets ``slot``, on which it was last sent
        ``last``: see :func:`send_in_step`."""
        stream = self.slots[slot]
        _, bytes_sent = send_in_step(
            self.fanout,
            slot,
            stream.ssrc,
            last,
            stream.last_sequence,
            stream.last_timestamp,
            stream.csrc,
            receiver_id,
        )
        self.payload_bytes_out += bytes_sent
        if stream.holder_receiver == receiver_id:
            # Its own voice holds the slot: keep it in step from where it is now.
            stream.holder_last_sequence = stream.last_sequence if bytes_sent else last

    def set_receiver_address(self, receiver_id: int, address: Any) -> None:
        receiver = self._receivers.get(receiver_id)
        if receiver is not None:
            receiver.address = address
            self.fanout.set_address(receiver_id, address)

    def remove_receiver(self, receiver_id: int, *, keep_counts: bool = False) -> None:
        """``keep_counts``: it may be registered again (a renegotiation), and
        what was sent to it stays counted, in stats and in its sender reports,
        and where each slot's SRTP index is, for any slot it gets back later
        (:meth:`forget_receiver` once it is gone for good). Without it, it is
        gone for good."""
        if not keep_counts:
            self._kept.pop(receiver_id, None)
        receiver = self._receivers.pop(receiver_id, None)
        if receiver is None:
            return
        if keep_counts:
            self._kept[receiver_id] = self._carry(receiver)
        self.fanout.remove_receiver(receiver_id)

    def forget_receiver(self, receiver_id: int) -> None:
        """The receiver is gone for good (it left): nothing of it is kept."""
        self._kept.pop(receiver_id, None)

    def _carry(self, receiver: _Receiver) -> list[tuple[int, int, int]]:
        """What a registered receiver's ``carried`` becomes once it is taken off."""
        carried = list(receiver.carried)
        for slot, (packets, octets) in enumerate(self.fanout.counters(receiver.receiver_id)):
            if slot == len(carried):
                carried.append((0, 0, -1))
            packets_before, octets_before, last = carried[slot]
            if packets:
                stream = self.slots[slot]
                # The holder does not get its own voice: it has what it got before it.
                holder = stream.holder_receiver == receiver.receiver_id
                last = stream.holder_last_sequence if holder else stream.last_sequence
            carried[slot] = (packets_before + packets, octets_before + octets, last)
        return carried

    def receiver_counters(self, receiver_id: int) -> list[tuple[int, int]]:
        if receiver_id not in self._receivers:
            return []
        return self._counts(receiver_id)

    def _counts(self, receiver_id: int) -> list[tuple[int, int]]:
        """Per slot (packets, payload octets) sent to a registered receiver."""
        counts = list(self.fanout.counters(receiver_id))
        for slot, (packets, octets, _) in enumerate(self._receivers[receiver_id].carried):
            if slot < len(counts):
                counts[slot] = (counts[slot][0] + packets, counts[slot][1] + octets)
        return counts

    def close(self) -> None:
        self._publishers.clear()
        self._csrcs.clear()
        self._receivers.clear()
        self._kept.clear()
        self.fanout.close()

    # -- the packet path ---------------------------------------------------------

    def forward(self, publisher: Publisher, packet: bytes, now: float) -> None:
        """One decrypted RTP packet from ``publisher``."""
        self.packets_in += 1
        budget = refilled(publisher.budget, publisher.budget_time, now, PACKET_RATE, PACKET_BURST)
        publisher.budget_time = now
        if budget < 1.0:
            publisher.budget = budget
            self.packets_dropped += 1  # faster than any voice (PACKET_RATE)
            return
        publisher.budget = budget - 1.0
        try:
            payload_type, marker, sequence, timestamp, ssrc, offset = parse_rtp_header(packet)
            if packet[0] & 0x20:
                # Before anything is counted or decoded: a bad padding count drops it.
                packet = strip_padding(packet, offset)
        except ValueError:
            self.packets_dropped += 1
            return
        if payload_type != publisher.payload_type:
            # Only Opus was negotiated; anything else is not ours to forward.
            self.packets_dropped += 1
            return
        if not 0 < len(packet) - offset <= MAX_PAYLOAD:
            # Larger than the fan-out sends (an Opus frame's limit, RFC 6716
            # 3.2.1): dropped before it moves a slot's numbering that no
            # receiver would then see (their SRTP indices would fall behind).
            # Empty (a header alone, or padding): no Opus packet (one has at
            # least its TOC byte, RFC 6716 3.1), nothing to forward.
            self.packets_dropped += 1
            return
        if ssrc != publisher.ssrc:
            if (
                ssrc == publisher.previous_ssrc
                and now - publisher.ssrc_changed_at < STALE_SSRC_SECONDS
            ):
                self.packets_dropped += 1  # late, from before the change
                return
            if publisher.ssrc >= 0 and ssrc != publisher.pending_ssrc:
                # One packet of another SSRC may be a stray (an old stream's,
                # held up): taken for a change it would silence the live one.
                publisher.pending_ssrc = ssrc
                self.packets_dropped += 1
                return
            publisher.pending_ssrc = -1
            publisher.previous_ssrc = publisher.ssrc
            publisher.ssrc_changed_at = now
            publisher.ssrc = ssrc
            publisher.statistics = ReceiveStatistics()
        elif publisher.pending_ssrc >= 0:
            publisher.pending_ssrc = -1  # the live SSRC again: that one was a stray
        publisher.statistics.add(sequence, timestamp, now)
        publisher.packets += 1
        publisher.octets += len(packet) - offset
        if publisher.meter is None:
            level = read_audio_level(packet, publisher.audio_level_id)
            if level < 0:
                # Negotiated but not sent (some clients do): decode it instead.
                publisher.missing_levels += 1
                if publisher.missing_levels >= MISSING_LEVEL_PACKETS:
                    publisher.meter = OpusLevelMeter()
                    logger.info(
                        "speaker %d sends no audio level: its levels are decoded", publisher.number
                    )
            else:
                publisher.missing_levels = 0
        else:
            level = publisher.meter.level(packet[offset:], now)
        publisher.level = level
        if publisher.muted:
            return
        slot = self.detector.observe(publisher.number, level, now)
        if slot < 0:
            return
        stream = self.slots[slot]
        if stream.publisher is not publisher or stream.source_ssrc != ssrc:
            stream.switch(publisher, ssrc, sequence, timestamp, now)
        elif (
            MAX_DROPOUT
            <= (sequence - stream.last_sequence + stream.sequence_offset - 1) & 0xFFFF
            < 0x10000 - MAX_MISORDER
        ):
            # Far from where the speaker's numbering was: a stray, or the first
            # packet of a restarted numbering; the next one in a row tells.
            if sequence != stream.bad_sequence:
                stream.bad_sequence = (sequence + 1) & 0xFFFF
                self.packets_dropped += 1
                return
            stream.switch(publisher, ssrc, sequence, timestamp, now)
        elif stream.switch_guard:
            if uint16_gt(stream.switch_sequence, sequence):
                # Reordered from before the switch: it would land in the previous speaker's range.
                return
            if (sequence - stream.switch_sequence) & 0xFFFF >= SWITCH_GUARD_PACKETS:
                # Well past the switch: nothing from before it can still arrive. (Left
                # on, the check would drop half of all packets once the sequence
                # numbers wrapped half-way round, ~11 minutes into a turn.)
                stream.switch_guard = False
        out_sequence = (sequence + stream.sequence_offset) & 0xFFFF
        step = (out_sequence - stream.last_sequence) & 0xFFFF
        if MAX_SLOT_STEP < step < 1 << 15 and stream.last_time is not None:
            # A jump ahead, carried as a step of MAX_SLOT_STEP (see there).
            stream.sequence_offset = (stream.sequence_offset - (step - MAX_SLOT_STEP)) & 0xFFFF
            out_sequence = (stream.last_sequence + MAX_SLOT_STEP) & 0xFFFF
        out_timestamp = (timestamp + stream.timestamp_offset) & 0xFFFFFFFF
        if uint16_gt(out_sequence, stream.last_sequence) or stream.last_time is None:
            stream.last_sequence = out_sequence
            stream.last_timestamp = out_timestamp
            stream.last_time = now
            stream.last_packet = packet
            stream.last_offset = offset
        marker = marker or stream.marker_pending
        for tap in self.taps:
            try:
                tap(publisher, packet, offset, sequence, timestamp, slot, now)
            except Exception:  # a recorder's failure must never stop the listeners' audio
                logger.exception("router tap %r failed: removed", tap)
                # A new list: this loop goes on over the old one.
                self.taps = [other for other in self.taps if other is not tap]
        sent = self.fanout.forward(
            slot,
            packet,
            offset,
            stream.ssrc,
            out_sequence,
            out_timestamp,
            marker,
            publisher.csrc,
            level,
            publisher.receiver_id,
        )
        self.payload_bytes_out += sent * (len(packet) - offset)
        if sent:
            # The new speaker's first packet that anyone got carries the marker.
            stream.marker_pending = False
        own = publisher.receiver_id
        if own >= 0 and (
            KEEP_IN_STEP <= (out_sequence - stream.holder_last_sequence) & 0xFFFF < 1 << 15
        ):  # (not for a reordered packet)
            # The holder never gets its own voice, so its SRTP index on this slot
            # stands still while the slot's goes on; past 2**15 packets (~11
            # minutes) libsrtp, ours and the client's, would take the next
            # speaker's packets for old ones and drop them for as long again.
            # A 20 ms silence frame now and then (every ~82 s) keeps it in step.
            refused = self.fanout.dropped
            kept = self.fanout.forward(
                slot,
                SILENCE_RTP,
                12,
                stream.ssrc,
                out_sequence,
                out_timestamp,
                False,
                publisher.csrc,
                SILENCE_LEVEL,
                -1,
                own,
            )
            self.payload_bytes_out += kept * (len(SILENCE_RTP) - 12)
            if kept or self.fanout.dropped == refused:
                # Sent, or the holder takes no packets of this slot (a send-only
                # publisher, a mixed speaker): done for KEEP_IN_STEP packets.
                # Dropped (the socket's buffer full): tried again with the next
                # packet, not KEEP_IN_STEP later (where a full buffer again and
                # again would let the holder fall out of step).
                stream.holder_last_sequence = out_sequence

    # -- RTCP -------------------------------------------------------------------

    def receiver_report(self, publisher: Publisher, now: float) -> bytes | None:
        """An RR about ``publisher``'s stream, so its encoder sees the loss, and
        the SDES CNAME of the SSRC it is sent from."""
        if publisher.ssrc < 0:
            return None
        statistics = publisher.statistics
        dlsr = int((now - statistics.last_sr_arrival) * 65536) if statistics.last_sr else 0
        report = RtcpReceiverInfo(
            ssrc=publisher.ssrc,
            fraction_lost=statistics.report_fraction_lost(),
            packets_lost=min(statistics.lost, 0x7FFFFF),
            highest_sequence=statistics.extended_max & 0xFFFFFFFF,
            jitter=int(statistics.jitter),
            lsr=statistics.last_sr,
            dlsr=dlsr & 0xFFFFFFFF,
        )
        return bytes(RtcpRrPacket(ssrc=self.report_ssrc, reports=[report])) + self._report_sdes

    def sender_reports(self, receiver_id: int, now: float, unix_time: float) -> bytes | None:
        """A compound packet with one SR per slot the receiver has (RFC 3550
        6.4.1), then the SDES CNAME of each slot SSRC (6.1)."""
        receiver = self._receivers.get(receiver_id)
        if receiver is None:
            return None
        ntp = ntp_time(unix_time)
        compound = b""
        counts = self._counts(receiver_id)
        for slot, (packets, octets) in enumerate(counts):
            stream = self.slots[slot]
            info = RtcpSenderInfo(
                ntp_timestamp=ntp,
                rtp_timestamp=stream.rtp_timestamp_at(now),
                packet_count=packets & 0xFFFFFFFF,
                octet_count=octets & 0xFFFFFFFF,
            )
            compound += bytes(RtcpSrPacket(ssrc=stream.ssrc, sender_info=info))
        if not compound:
            return None
        sdes = self._slot_sdes.get(len(counts))
        if sdes is None:
            sdes = self._slot_sdes[len(counts)] = sdes_cnames(
                self.slot_ssrcs[: len(counts)], self.cname
            )
        return compound + sdes

    def due_sender_reports(self, now: float) -> list[int]:
        """Receivers whose sender report is due; schedules their next one."""
        due = []
        for receiver in self._receivers.values():
            if receiver.next_report <= now:
                receiver.next_report = now + SENDER_REPORT_INTERVAL
                due.append(receiver.receiver_id)
        return due
