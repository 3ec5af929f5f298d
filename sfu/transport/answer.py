"""What a participant's offer is answered with: :func:`negotiate` decides,
for a speaker or a listener, which audio m-lines carry its voice and which
the K slot streams; :func:`build_answer` writes the answer (RFC 3264,
RFC 8829 JSEP): ICE-lite, ``a=setup:passive``, a host candidate per announced
address (one, or one per family on a dual-stack server), Opus only,
and for every slot an ``a=ssrc`` + ``a=msid`` so a browser demultiplexes by
SSRC and makes one track per slot (RFC 5576, RFC 8830).

Pure functions, no I/O; the offer comes from :func:`sfu.transport.sdp.parse_offer`.
An offer that cannot be answered raises :class:`sfu.errors.InvalidOffer`
with a message saying what is wrong; bad server-side values (address, port,
fingerprint) raise :class:`sfu.errors.InvalidSetting`.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sfu._values import is_int
from sfu.errors import InvalidOffer, InvalidSetting
from sfu.transport.offer import (
    AUDIO_LEVEL_URI,
    RECEIVING,
    SENDING,
    MediaSection,
    Offer,
    transport_group,
)

__all__ = [
    "AnswerTemplate",
    "AnswerValues",
    "Negotiation",
    "answer_template",
    "build_answer",
    "fill_answer",
    "negotiate",
    "negotiate_or_listen",
]

#: The answer's Opus parameters: what the server wants to receive (RFC 7587
#: §7), not an echo of the offer's, which are the offerer's own receive
#: preferences (echoed, a Firefox offer's ``stereo=1`` asked every Firefox
#: speaker for stereo, forwarded as it is to every listener). Mono (no
#: ``stereo``), and in-band FEC, which listeners' decoders use on loss.
OPUS_ANSWER_FMTP = "minptime=10;useinbandfec=1"

_SHA256_FINGERPRINT = re.compile(r"[0-9A-F]{2}(?::[0-9A-F]{2}){31}")


@dataclass(frozen=True)
class Negotiation:
    """Which m-lines carry what, for one participant (see :func:`negotiate`)."""

    publish: int | None
    slots: tuple[int, ...]
    accepted: tuple[int, ...]
    payload_type: int
    audio_level_id: int


def negotiate(offer: Offer, *, publish: bool, max_slots: int) -> Negotiation:
    """Choose the publish m-line (speakers) and up to ``max_slots`` slot m-lines.

    The publish m-line is the first accepted one the client sends on; slots
    are, in order, the accepted m-lines the client receives on (the publish
    one too when it is sendrecv). Raises :class:`InvalidOffer` when a speaker
    has nothing to send on or a listener nothing to receive on, and
    :class:`InvalidSetting` when ``max_slots`` is negative.
    """
    if not is_int(max_slots) or max_slots < 0:
        raise InvalidSetting(f"max_slots must be an int >= 0, got {max_slots!r}")
    group = transport_group(offer.sections, offer.bundle)
    hint = ""
    if not offer.bundle and sum(s.kind == "audio" for s in offer.sections) > 1:
        hint = " (without a=group:BUNDLE only the first usable audio m-line is used)"

    publish_index: int | None = None
    if publish:
        sending = [s for s in group if s.direction in SENDING]
        if not sending:
            raise InvalidOffer(
                "a speaker needs to send audio, but the offer has no audio m-line that "
                f"sends (sendrecv or sendonly){hint}"
            )
        publish_index = sending[0].index

    receivable = [s.index for s in group if s.direction in RECEIVING]
    if not publish and not receivable:
        raise InvalidOffer(
            "a listener needs to receive audio, but the offer has no audio m-line that "
            f"receives (sendrecv or recvonly){hint}"
        )
    transport = group[0]
    assert transport.opus is not None
    payload_type = transport.opus.payload_type
    if 64 <= payload_type <= 95:
        raise InvalidOffer(
            f"Opus on payload type {payload_type} would read as RTCP on the one muxed port "
            "(RFC 5761 section 4): offer it on 96..127 or 0..63"
        )
    level_id = transport.extensions.get(AUDIO_LEVEL_URI, 0)
    if level_id > 14:
        # Only the one-byte header form (ids 1..14) is written per receiver; without
        # the extension the server measures this speaker's level by decoding.
        level_id = 0
    return Negotiation(
        publish=publish_index,
        slots=tuple(receivable[:max_slots]),
        accepted=tuple(s.index for s in group),
        payload_type=payload_type,
        audio_level_id=level_id,
    )


def negotiate_or_listen(
    offer: Offer, *, publish: bool, max_slots: int, listen_instead: bool
) -> tuple[Negotiation, bool]:
    """:func:`negotiate`; but when a publisher's offer cannot be answered as one
    and ``listen_instead`` is true (its client offered as a listener, not
    knowing it may speak), it is answered as a listener's. The flag returned
    says so: the client must then be asked for an offer with a sending line.
    """
    try:
        return negotiate(offer, publish=publish, max_slots=max_slots), False
    except InvalidOffer:
        if not (publish and listen_instead):
            raise
    return negotiate(offer, publish=False, max_slots=max_slots), True


def _answer_direction(index: int, negotiation: Negotiation) -> str:
    """The server's direction for an accepted m-line."""
    is_slot = index in negotiation.slots
    if index == negotiation.publish:
        return "sendrecv" if is_slot else "recvonly"
    return "sendonly" if is_slot else "inactive"


@functools.lru_cache(maxsize=64)
def _candidate_address(address: str) -> tuple[int, str]:
    """IP version and canonical text of an answer's address (a server has one
    to three: cached, as it is checked for every answer).

    An IPv6 zone (``fe80::1%eth0``) is left out: SDP has no syntax for it, and
    the client reaches a link-local address through its own interface.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise InvalidSetting(f"address must be an IP address, got {address!r}") from None
    return ip.version, ip.compressed.partition("%")[0]


@functools.lru_cache(maxsize=16)
def _check_sha256_fingerprint(fingerprint: str) -> None:
    if not _SHA256_FINGERPRINT.fullmatch(fingerprint):
        raise InvalidSetting("fingerprint must be a sha-256 digest written 'AB:CD:...'")


def build_answer(
    offer: Offer,
    negotiation: Negotiation,
    *,
    ice_ufrag: str,
    ice_pwd: str,
    fingerprint: str,
    address: str,
    port: int,
    slot_ssrcs: Sequence[int],
    cname: str,
    session_id: int,
    session_version: int = 1,
    other_addresses: Sequence[str] = (),
) -> str:
    """Write the SDP answer (RFC 3264, RFC 8829 section 5.3) for a negotiation.

    ``fingerprint`` is the server certificate's sha-256 ('AB:CD:...');
    ``address``/``port`` are the UDP host candidate (IPv4 or IPv6) and the
    default address (``c=``); ``other_addresses`` are more host candidates
    on the same port (a dual-stack server's other family), less preferred;
    ``slot_ssrcs[i]`` is the SSRC the server sends slot ``i`` with.

    An RTP m-line of a bundled offer that the server does not use (video,
    audio it cannot take) is kept in the BUNDLE group, ``a=inactive``, with
    the transport's attributes and its first format, as a browser answers
    a line it will not use: GStreamer's webrtcbin and aiortc refuse an
    answer whose port-0 line lacks them (an audio+video WHIP or WHEP
    client), and RFC 9725 asks WHIP endpoints not to answer partially.
    Other m-lines the server does not take (a data channel, a line outside
    the group or one the client disabled) get port 0 and stay out of it.
    """
    values = AnswerValues(ice_ufrag, ice_pwd, session_id, session_version)
    template = answer_template(
        offer,
        negotiation,
        fingerprint=fingerprint,
        address=address,
        port=port,
        slot_ssrcs=slot_ssrcs,
        cname=cname,
        other_addresses=other_addresses,
        values=values,
    )
    return fill_answer(template, values)


@dataclass(frozen=True, slots=True)
class AnswerValues:
    """What differs between two answers to the same kind of offer."""

    ice_ufrag: str
    ice_pwd: str
    session_id: int
    session_version: int


#: An answer without its :class:`AnswerValues`: the text before the first
#: value, then each value's letter (``u``, ``p``, ``s``, ``v``) with the text
#: after it. Shared by every answer to the same kind of offer, so a member
#: keeps its answer as this and its own values (~2 KB less a member).
AnswerTemplate = tuple[str, tuple[tuple[str, str], ...]]


def answer_template(
    offer: Offer,
    negotiation: Negotiation,
    *,
    fingerprint: str,
    address: str,
    port: int,
    slot_ssrcs: Sequence[int],
    cname: str,
    values: AnswerValues,
    other_addresses: Sequence[str] = (),
) -> AnswerTemplate:
    """The template of :func:`build_answer`'s answer (same arguments), which
    :func:`fill_answer` with ``values`` makes the answer. (A ``cname`` holding
    a NUL, the template's own marker, gives the whole answer written with
    ``values`` and nothing to fill.)"""
    # A crowd's answers differ only in the ICE credentials and the session id
    # and version: the rest is written once per kind of offer and kept (11 ->
    # 4 µs). (The version is left out of the key as the id is: with it, each
    # renegotiation made an entry of its own, never used again, and a server
    # whose members renegotiate filled the table and emptied it over and over.)
    key = (
        offer.bundle,
        tuple(
            (s.index, s.kind, s.protocol, s.mid, s.formats[:1], s.port != 0, s.bundle_only)
            + (s.first_rtpmap,)
            for s in offer.sections
        ),
        negotiation,
        fingerprint,
        address,
        tuple(other_addresses),
        port,
        tuple(slot_ssrcs),
        cname,
    )

    def write(ufrag: str, pwd: str, session: int | str, version: int | str) -> str:
        return _write_answer(
            offer,
            negotiation,
            ice_ufrag=ufrag,
            ice_pwd=pwd,
            fingerprint=fingerprint,
            address=address,
            port=port,
            slot_ssrcs=slot_ssrcs,
            cname=cname,
            session_id=session,
            session_version=version,
            other_addresses=other_addresses,
        )

    template = _ANSWERS.get(key)
    if template is None and _MARK in cname:
        return write(
            values.ice_ufrag, values.ice_pwd, values.session_id, values.session_version
        ), ()
    if template is None:
        text = write(_MARK + "u", _MARK + "p", _MARK + "s", _MARK + "v")
        pieces = text.split(_MARK)
        template = pieces[0], tuple((piece[0], piece[1:]) for piece in pieces[1:])
        if len(_ANSWERS) >= _ANSWERS_SIZE:
            _ANSWERS.clear()
        _ANSWERS[key] = template
    return template


def fill_answer(template: AnswerTemplate, values: AnswerValues) -> str:
    """The answer that ``template`` (:func:`answer_template`) is with ``values``."""
    head, rest = template
    if not rest:
        return head
    by_letter = {
        "u": values.ice_ufrag,
        "p": values.ice_pwd,
        "s": str(values.session_id),
        "v": str(values.session_version),
    }
    out = [head]
    for letter, after in rest:
        out.append(by_letter[letter])
        out.append(after)
    return "".join(out)


# Where an answer template's per-answer values go: a NUL, never in an offer
# the parser accepts nor in the server's own values (a cname with one is
# written in full).
_MARK = "\x00"
_ANSWERS_SIZE = 256
_ANSWERS: dict[tuple[Any, ...], AnswerTemplate] = {}


def _kept_unused(section: MediaSection, bundle: Sequence[str], protocol: str) -> bool:
    """Whether an m-line the server does not use is answered inactive in the
    group (see build_answer): one in the BUNDLE group, of the transport's RTP
    profile (``protocol``), not disabled."""
    return (
        section.mid in bundle
        and section.protocol == protocol
        and bool(section.formats)
        and (section.port != 0 or section.bundle_only)
    )


def _write_answer(
    offer: Offer,
    negotiation: Negotiation,
    *,
    ice_ufrag: str,
    ice_pwd: str,
    fingerprint: str,
    address: str,
    port: int,
    slot_ssrcs: Sequence[int],
    cname: str,
    session_id: int | str,
    session_version: int | str,
    other_addresses: Sequence[str] = (),
) -> str:
    version, compressed = _candidate_address(address)
    # One host candidate per address, the first preferred (RFC 8445 5.1.2.1:
    # type preference 126 for host, local preference 65535 down, component 1).
    candidates = [
        f"a=candidate:{number} 1 udp {(126 << 24) | ((65536 - number) << 8) | 255} "
        f"{_candidate_address(each)[1]} {port} typ host"
        for number, each in enumerate((address, *other_addresses), start=1)
    ]
    if not 1 <= port <= 65535:
        raise InvalidSetting(f"port must be 1..65535, got {port}")
    if len(slot_ssrcs) < len(negotiation.slots):
        raise InvalidSetting(
            f"{len(negotiation.slots)} slots need as many SSRCs, got {len(slot_ssrcs)}"
        )
    _check_sha256_fingerprint(fingerprint)
    net = f"IN IP{version} {compressed}"

    accepted = [offer.sections[i] for i in negotiation.accepted]
    bundled = bool(offer.bundle) and all(s.mid in offer.bundle for s in accepted)
    unused = {
        s.index
        for s in offer.sections
        if bundled
        and s.index not in negotiation.accepted
        and _kept_unused(s, offer.bundle, accepted[0].protocol)
    }
    lines = [
        "v=0",
        f"o=- {session_id} {session_version} {net}",
        "s=-",
        "t=0 0",
        "a=ice-lite",
    ]
    if bundled:
        group = [
            str(s.mid)
            for s in offer.sections
            if s.index in negotiation.accepted or s.index in unused
        ]
        lines.append("a=group:BUNDLE " + " ".join(group))
    lines.append("a=msid-semantic:WMS sfu")
    transport = [
        f"a=ice-ufrag:{ice_ufrag}",
        f"a=ice-pwd:{ice_pwd}",
        f"a=fingerprint:sha-256 {fingerprint}",
        "a=setup:passive",
        # Repeated on every m-line kept: some clients (aiortc) read the
        # candidates of the last bundled m-line only.
        *candidates,
        "a=end-of-candidates",
    ]

    pt = negotiation.payload_type
    for section in offer.sections:
        mid = [f"a=mid:{section.mid}"] if section.mid is not None else []
        if section.index in unused:
            fmt = section.formats[0]
            lines += [f"m={section.kind} {port} {section.protocol} {fmt}", f"c={net}", *mid]
            lines += ["a=inactive", "a=rtcp-mux"]
            if section.first_rtpmap is not None:
                lines.append(f"a=rtpmap:{fmt} {section.first_rtpmap}")
            lines += transport
            continue
        if section.index not in negotiation.accepted:
            fmt = section.formats[0] if section.formats else "0"
            lines += [f"m={section.kind} 0 {section.protocol} {fmt}", f"c={net}", *mid]
            continue
        lines += [f"m=audio {port} {section.protocol} {pt}", f"c={net}", *mid]
        lines += [f"a={_answer_direction(section.index, negotiation)}", "a=rtcp-mux"]
        lines.append(f"a=rtpmap:{pt} opus/48000/2")
        lines.append(f"a=fmtp:{pt} {OPUS_ANSWER_FMTP}")
        if negotiation.audio_level_id:
            lines.append(f"a=extmap:{negotiation.audio_level_id} {AUDIO_LEVEL_URI}")
        lines += transport
        if section.index in negotiation.slots:
            slot = negotiation.slots.index(section.index)
            lines += [
                f"a=msid:sfu slot{slot}",
                f"a=ssrc:{slot_ssrcs[slot]} cname:{cname}",
            ]
    return "\r\n".join(lines) + "\r\n"
