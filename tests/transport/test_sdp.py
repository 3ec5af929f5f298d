"""SDP offers in, answers out: sfu.transport.sdp (parsing) and
sfu.transport.answer (negotiation, the answer) against tables, real offers
and aiortc; the two are tested together, as most cases are an offer and
what it is answered with."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfu.errors import InvalidOffer, InvalidSetting
from sfu.transport import answer as answer_module
from sfu.transport import sdp
from sfu.transport.answer import Negotiation, build_answer, negotiate
from sfu.transport.sdp import AUDIO_LEVEL_URI, Offer, parse_offer

pytestmark = pytest.mark.compiled_and_python_alike  # see tests/alike.py

OFFERS = Path(__file__).resolve().parent.parent / "data" / "offers"

UFRAG = "Zx4f"
PWD = "k3Jq9sT0pV7wY2bN5cR8dF1h"
FINGERPRINT = ":".join(f"{i:02X}" for i in range(32))
SERVER_FINGERPRINT = ":".join(f"{255 - i:02X}" for i in range(32))
SERVER_UFRAG = "srvU"
SERVER_PWD = "serverpasswordserverpw"
SLOT_SSRCS = (0x1111, 0x2222, 0x3333)
CNAME = "sfu-room"


# --------------------------------------------------------------- offer builder


def audio(
    mid: str | None,
    direction: str | None = "sendrecv",
    *,
    pt: int = 111,
    level: int = 1,
    port: int = 9,
    proto: str = "UDP/TLS/RTP/SAVPF",
    transport: bool = True,
    extra: Sequence[str] = (),
) -> list[str]:
    """An audio m-line as a browser writes it (ICE/DTLS attributes per m-line)."""
    lines = [f"m=audio {port} {proto} {pt} 0", "c=IN IP4 0.0.0.0"]
    if transport:
        lines += [
            f"a=ice-ufrag:{UFRAG}",
            f"a=ice-pwd:{PWD}",
            f"a=fingerprint:sha-256 {FINGERPRINT}",
            "a=setup:actpass",
        ]
    if mid is not None:
        lines.append(f"a=mid:{mid}")
    if level:
        lines.append(f"a=extmap:{level} {AUDIO_LEVEL_URI}")
    if direction:
        lines.append(f"a={direction}")
    lines += [
        "a=rtcp-mux",
        f"a=rtpmap:{pt} opus/48000/2",
        f"a=rtcp-fb:{pt} transport-cc",
        f"a=fmtp:{pt} minptime=10;useinbandfec=1",
        "a=rtpmap:0 PCMU/8000",
        *extra,
    ]
    return lines


def make_offer(
    *sections: list[str], bundle: bool | Sequence[str] = True, session: Sequence[str] = ()
) -> str:
    lines = ["v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    if bundle is True:
        mids = [line[6:] for s in sections for line in s if line.startswith("a=mid:")]
        lines.append("a=group:BUNDLE " + " ".join(mids))
    elif bundle:
        lines.append("a=group:BUNDLE " + " ".join(bundle))
    lines += session
    for section in sections:
        lines += section
    return "\r\n".join(lines) + "\r\n"


BASE = make_offer(audio("0", "sendrecv"), audio("1", "recvonly"))


def edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new)


# ---------------------------------------------------------------- answer reader


@dataclass
class AnswerSection:
    m: list[str]
    attributes: list[str] = field(default_factory=list)
    connection: str | None = None

    def values(self, name: str) -> list[str]:
        prefix = name + ":"
        return [a[len(prefix) :] for a in self.attributes if a.startswith(prefix)]

    def flag(self, name: str) -> bool:
        return name in self.attributes


@dataclass
class Answer:
    session: list[str]
    sections: list[AnswerSection]


def read_answer(text: str) -> Answer:
    assert text.endswith("\r\n")
    lines = text[:-2].split("\r\n")
    assert all("\n" not in line and "\r" not in line for line in lines)
    assert lines[0] == "v=0"
    answer = Answer(session=[], sections=[])
    for line in lines:
        assert re.fullmatch(r"[a-z]=.+", line), line
        if line.startswith("m="):
            answer.sections.append(AnswerSection(m=line[2:].split(" ")))
        elif not answer.sections:
            answer.session.append(line)
        elif line.startswith("c="):
            answer.sections[-1].connection = line[2:]
        else:
            assert line.startswith("a="), line
            answer.sections[-1].attributes.append(line[2:])
    return answer


def answer_for(offer: Offer, negotiation: Negotiation, **overrides: object) -> str:
    arguments: dict[str, object] = dict(
        ice_ufrag=SERVER_UFRAG,
        ice_pwd=SERVER_PWD,
        fingerprint=SERVER_FINGERPRINT,
        address="127.0.0.1",
        port=40000,
        slot_ssrcs=SLOT_SSRCS,
        cname=CNAME,
        session_id=123456789,
    )
    arguments.update(overrides)
    return build_answer(offer, negotiation, **arguments)  # type: ignore[arg-type]


def check_answer(
    text: str,
    offer: Offer,
    negotiation: Negotiation,
    *,
    port: int = 40000,
    address: str = "127.0.0.1",
    slot_ssrcs: Sequence[int] = SLOT_SSRCS,
) -> list[str | None]:
    """Check everything the answer promises; return each m-line's direction
    (None: rejected, UNUSED: kept in the group, inactive)."""
    answer = read_answer(text)
    assert "a=ice-lite" in answer.session
    assert any(line.startswith("a=msid-semantic:") for line in answer.session)
    groups = [line for line in answer.session if line.startswith("a=group:")]
    accepted_mids = [offer.sections[i].mid for i in negotiation.accepted]
    bundled = bool(offer.bundle) and all(mid in offer.bundle for mid in accepted_mids)
    transport_protocol = offer.sections[negotiation.accepted[0]].protocol
    # RFC 9725 (no partial answers) and what webrtcbin and aiortc accept: an
    # RTP line of the group that the server does not use is kept, inactive.
    unused = [
        s.index
        for s in offer.sections
        if bundled
        and s.index not in negotiation.accepted
        and s.mid in offer.bundle
        and s.protocol == transport_protocol
        and s.formats
        and (s.port != 0 or s.bundle_only)
    ]
    if bundled:
        grouped = [s.mid for s in offer.sections if s.index in (*negotiation.accepted, *unused)]
        assert groups == ["a=group:BUNDLE " + " ".join(map(str, grouped))]
    else:
        assert groups == []
    assert len(answer.sections) == len(offer.sections)

    net = "IN IP6" if ":" in address else "IN IP4"
    directions: list[str | None] = []
    transport = [
        f"ice-ufrag:{SERVER_UFRAG}",
        f"ice-pwd:{SERVER_PWD}",
        f"fingerprint:sha-256 {SERVER_FINGERPRINT}",
        "setup:passive",
        f"candidate:1 1 udp 2130706431 {address} {port} typ host",
        "end-of-candidates",
    ]
    for offered, section in zip(offer.sections, answer.sections):
        mids = section.values("mid")
        assert mids == ([offered.mid] if offered.mid is not None else [])
        if offered.index in unused:
            fmt = offered.formats[0]
            assert section.m == [offered.kind, str(port), offered.protocol, fmt]
            assert section.connection == f"{net} {address}"
            rtpmap = [f"rtpmap:{fmt} {offered.first_rtpmap}"] if offered.first_rtpmap else []
            others = [a for a in section.attributes if not a.startswith("mid:")]
            assert others == ["inactive", "rtcp-mux", *rtpmap, *transport]
            directions.append(UNUSED)
            continue
        if offered.index not in negotiation.accepted:
            assert section.m[:3] == [offered.kind, "0", offered.protocol]
            assert len(section.m) == 4
            assert [a for a in section.attributes if not a.startswith("mid:")] == []
            directions.append(None)
            continue
        assert offered.opus is not None
        pt = str(negotiation.payload_type)
        assert section.m == ["audio", str(port), offered.protocol, pt]
        assert section.connection == f"{net} {address}"
        assert section.values("rtpmap") == [f"{pt} opus/48000/2"]
        assert section.values("fmtp") == [f"{pt} minptime=10;useinbandfec=1"]
        level = offered.extensions.get(AUDIO_LEVEL_URI)
        assert section.values("extmap") == ([f"{level} {AUDIO_LEVEL_URI}"] if level else [])
        assert section.values("rtcp-fb") == []
        assert section.flag("rtcp-mux")
        assert section.values("setup") == ["passive"]
        assert section.values("ice-ufrag") == [SERVER_UFRAG]
        assert section.values("ice-pwd") == [SERVER_PWD]
        assert section.values("fingerprint") == [f"sha-256 {SERVER_FINGERPRINT}"]
        assert section.values("candidate") == [f"1 1 udp 2130706431 {address} {port} typ host"]
        assert section.flag("end-of-candidates")
        direction = [a for a in section.attributes if a in DIRECTIONS]
        assert len(direction) == 1
        directions.append(direction[0])
        if offered.index in negotiation.slots:
            slot = negotiation.slots.index(offered.index)
            assert section.values("ssrc") == [f"{slot_ssrcs[slot]} cname:{CNAME}"]
            assert section.values("msid") == [f"sfu slot{slot}"]
            assert direction[0] in ("sendonly", "sendrecv")
        else:
            assert section.values("ssrc") == [] and section.values("msid") == []
            assert direction[0] in ("recvonly", "inactive")
        # The server never receives on an m-line the client does not send on,
        # and only receives on the publish one.
        receives = direction[0] in ("recvonly", "sendrecv")
        assert receives == (offered.index == negotiation.publish)
        allowed = {
            "sendrecv": {"sendrecv", "sendonly", "recvonly", "inactive"},
            "sendonly": {"recvonly", "inactive"},
            "recvonly": {"sendonly", "inactive"},
            "inactive": {"inactive"},
        }[offered.direction]
        assert direction[0] in allowed
        known: tuple[str, ...] = ("mid:", "rtpmap:", "fmtp:", "extmap:", "ice-", "fingerprint:")
        known += ("setup:", "candidate:", "ssrc:", "msid:")
        others = [a for a in section.attributes if not a.startswith(known)]
        assert sorted(others) == sorted([direction[0], "rtcp-mux", "end-of-candidates"])
    return directions


DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
UNUSED = "unused"  # check_answer: an m-line the server keeps in the group, inactive


# ----------------------------------------------------- malformed / unusable offers

BIG = BASE + "a=x-padding:" + "y" * (64 * 1024) + "\r\n"
SESSION_ONLY = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
VIDEO_ONLY = SESSION_ONLY + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=rtcp-mux\r\n"
MD5 = "a=fingerprint:md5 " + ":".join(["AB"] * 16)
TWO_URIS = "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:1 " + AUDIO_LEVEL_URI

# (id, offer text, publish, message fragment)
INVALID: list[tuple[str, str, bool, str]] = [
    ("empty", "", True, "empty"),
    ("whitespace", " \r\n\r\n", True, "empty"),
    ("too-large", BIG, True, "64 KiB"),
    ("no-version", BASE.replace("v=0\r\n", ""), True, "v=0"),
    ("version-1", BASE.replace("v=0", "v=1"), True, "v=0"),
    ("binary", bytes(range(256)).decode("latin-1") * 4, True, "control character"),
    ("nul-in-line", edit("s=-", "s=\x00"), True, "control character"),
    ("c1-control", edit("s=-", "s=\x85"), True, "control character"),
    ("nul-after-non-ascii", edit("s=-", "s=caf\u00e9 \x00"), True, "control character"),
    ("replacement-char", b"v=0\r\n\xff\xfe".decode("utf-8", "replace"), True, "control"),
    ("not-type-equals", edit("t=0 0", "t=0 0\r\nhello world"), True, "not of the form"),
    ("upper-type", edit("s=-", "S=-"), True, "not of the form"),
    ("indented", edit("a=rtcp-mux", " a=rtcp-mux"), True, "not of the form"),
    ("bare-cr", edit("s=-", "s=-\rx"), True, "bare CR"),
    ("m-port-not-int", edit("m=audio 9 ", "m=audio nine "), True, "invalid port"),
    ("m-port-range", edit("m=audio 9 ", "m=audio 70000 "), True, "invalid port"),
    ("m-missing-fields", edit("m=audio 9 UDP/TLS/RTP/SAVPF 111 0", "m=audio 9"), True, "malformed"),
    ("m-no-format", edit(" 111 0\r\n", "\r\n"), True, "malformed"),
    ("no-m-line", SESSION_ONLY, True, "no m= line"),
    ("no-audio", VIDEO_ONLY, True, "no audio m-line"),
    ("no-opus", edit("opus/48000/2", "PCMA/8000"), True, "opus/48000/2"),
    ("opus-clock-rate", edit("opus/48000/2", "opus/16000/2"), True, "opus/48000/2"),
    ("opus-mono", edit("opus/48000/2", "opus/48000"), True, "opus/48000/2"),
    ("opus-not-in-m-line", edit(" 111 0\r\n", " 0\r\n"), True, "opus/48000/2"),
    ("rtp-avp", edit("UDP/TLS/RTP/SAVPF", "RTP/AVP"), True, "protocol RTP/AVP"),
    ("no-rtcp-mux", edit("a=rtcp-mux\r\n", ""), True, "requires rtcp-mux"),
    ("port-zero", edit("m=audio 9 ", "m=audio 0 "), True, "disabled (port 0)"),
    ("no-ufrag", edit(f"a=ice-ufrag:{UFRAG}\r\n", ""), True, "no a=ice-ufrag"),
    ("short-ufrag", edit(UFRAG, "abc"), True, "ice-ufrag must be 4..256"),
    ("long-ufrag", edit(UFRAG, "u" * 257), True, "ice-ufrag must be 4..256"),
    ("ufrag-char", edit(UFRAG, "ab_cd"), True, "ice-ufrag must be"),
    ("no-pwd", edit(f"a=ice-pwd:{PWD}\r\n", ""), True, "no a=ice-pwd"),
    ("short-pwd", edit(PWD, "x" * 21), True, "ice-pwd must be 22..256"),
    ("pwd-char", edit(PWD, "x" * 21 + "="), True, "ice-pwd must be"),
    (
        "no-fingerprint",
        edit(f"a=fingerprint:sha-256 {FINGERPRINT}\r\n", ""),
        True,
        "no a=fingerprint",
    ),
    (
        "md5-only",
        edit(f"a=fingerprint:sha-256 {FINGERPRINT}", MD5),
        True,
        "unsupported hash algorithms (md5)",
    ),
    ("fingerprint-short", edit(FINGERPRINT, FINGERPRINT[:-3]), True, "sha-256 value is malformed"),
    ("fingerprint-hex", edit(FINGERPRINT, FINGERPRINT[:-2] + "XY"), True, "malformed"),
    ("fingerprint-separator", edit(FINGERPRINT, FINGERPRINT.replace(":", "-")), True, "malformed"),
    ("fingerprint-no-value", edit(f"sha-256 {FINGERPRINT}", "sha-256"), True, "malformed"),
    ("fingerprint-sha1-size", edit("sha-256", "sha-1"), True, "sha-1 value is malformed"),
    (
        "setup-passive",
        edit("a=setup:actpass", "a=setup:passive"),
        True,
        "DTLS server; offer a=setup:actpass or active (ffmpeg's WHIP muxer: -whip_flags dtls_active)",
    ),
    ("setup-holdconn", edit("a=setup:actpass", "a=setup:holdconn"), True, "cannot be used"),
    ("setup-unknown", edit("a=setup:actpass", "a=setup:sideways"), True, "is unknown"),
    ("rtpmap-pt-text", edit("a=rtpmap:0 PCMU", "a=rtpmap:zero PCMU"), True, "invalid payload type"),
    ("rtpmap-pt-128", edit("a=rtpmap:0 PCMU", "a=rtpmap:128 PCMU"), True, "must be 0..127"),
    (
        "rtpmap-pt-negative",
        edit("a=rtpmap:0 PCMU", "a=rtpmap:-1 PCMU"),
        True,
        "invalid payload type",
    ),
    ("rtpmap-no-clock", edit("a=rtpmap:0 PCMU/8000", "a=rtpmap:0 PCMU"), True, "malformed"),
    ("extmap-id-0", edit("a=extmap:1 ", "a=extmap:0 "), True, "invalid id"),
    ("extmap-id-256", edit("a=extmap:1 ", "a=extmap:256 "), True, "invalid id"),
    ("extmap-id-text", edit("a=extmap:1 ", "a=extmap:one "), True, "invalid id"),
    ("extmap-no-uri", edit(f"a=extmap:1 {AUDIO_LEVEL_URI}", "a=extmap:1"), True, "no URI"),
    ("extmap-id-twice", edit(f"a=extmap:1 {AUDIO_LEVEL_URI}", TWO_URIS), True, "used for two"),
    ("duplicate-mid", edit("a=mid:1", "a=mid:0"), True, "duplicate a=mid:0"),
    ("mid-not-token", edit("a=mid:1", 'a=mid:"1"'), True, "identification tag"),
    ("bundle-unknown-mid", edit("BUNDLE 0 1", "BUNDLE 0 1 7"), True, "names mid 7 but"),
    ("offer-ice-lite", edit("t=0 0", "t=0 0\r\na=ice-lite"), True, "ICE-lite"),
    (
        "speaker-receives-only",
        make_offer(audio("0", "recvonly"), audio("1", "recvonly")),
        True,
        "speaker needs to send audio, but the offer has no audio m-line that sends",
    ),
    (
        "speaker-inactive",
        make_offer(audio("0", "inactive")),
        True,
        "no audio m-line that sends",
    ),
    (
        "speaker-no-bundle",
        make_offer(audio("0", "recvonly"), audio("1", "sendrecv"), bundle=False),
        True,
        "without a=group:BUNDLE only the first usable audio m-line",
    ),
    (
        "listener-sends-only",
        make_offer(audio("0", "sendonly"), audio("1", "inactive")),
        False,
        "listener needs to receive audio, but the offer has no audio m-line that receives",
    ),
]


@pytest.mark.parametrize(
    ("text", "publish", "fragment"),
    [pytest.param(text, publish, fragment, id=name) for name, text, publish, fragment in INVALID],
)
def test_invalid_offer(text: str, publish: bool, fragment: str) -> None:
    with pytest.raises(InvalidOffer) as caught:
        negotiate(parse_offer(text), publish=publish, max_slots=3)
    assert fragment in str(caught.value)


def test_table_covers_at_least_twenty_cases() -> None:
    assert len(INVALID) >= 20
    assert len({name for name, *_ in INVALID}) == len(INVALID)


@pytest.mark.parametrize("value", [None, b"v=0\r\n", 42, ["v=0"]])
def test_offer_must_be_str(value: object) -> None:
    with pytest.raises(InvalidOffer, match="must be str"):
        parse_offer(value)  # type: ignore[arg-type]


def test_base_offer_is_valid() -> None:
    """The table above only tests what it means to if the unedited offer works."""
    offer = parse_offer(BASE)
    negotiation = negotiate(offer, publish=True, max_slots=3)
    assert negotiation == Negotiation(0, (0, 1), (0, 1), 111, 1)
    check_answer(answer_for(offer, negotiation), offer, negotiation)


def test_an_offer_with_too_many_media_sections_is_refused_before_parsing() -> None:
    """Each section costs the parse and the answer: past MAX_OFFER_SECTIONS the
    offer is refused at once (found by a review: 170 sections, ~5 ms each)."""
    limit = sdp.MAX_OFFER_SECTIONS
    assert limit >= 16 + 1, "a member receiving every slot and sending must fit"
    sections = [audio("0", "sendrecv")] + [audio(str(i), "recvonly") for i in range(1, limit)]
    offer = parse_offer(make_offer(*sections))
    assert len(offer.sections) == limit
    more = make_offer(*sections, audio(str(limit), "recvonly"))
    with pytest.raises(InvalidOffer, match=f"{limit + 1} media sections; at most {limit}"):
        parse_offer(more)


@pytest.mark.parametrize("max_slots", [-1, 1.5, "3", True])
def test_max_slots_must_be_a_non_negative_int(max_slots: object) -> None:
    with pytest.raises(InvalidSetting, match="max_slots"):
        negotiate(parse_offer(BASE), publish=True, max_slots=max_slots)  # type: ignore[arg-type]


# ------------------------------------------------------------------- parsing


def test_parsed_rtpmap_and_extmap_memo_is_bounded_and_holds_only_valid_values() -> None:
    """The memo of parsed a=rtpmap / a=extmap values neither grows without
    bound nor turns a malformed value into an accepted one."""
    sdp._RTPMAPS.clear()
    sdp._EXTMAPS.clear()
    for number in range(sdp._MEMO_SIZE + 50):
        codec = f"a=rtpmap:{number % 128} x{number}/8000"
        ext = f"a=extmap:{1 + number % 14} urn:x-{number}"
        parse_offer(make_offer(audio("a", "sendrecv", level=0, extra=[codec, ext])))
    assert len(sdp._RTPMAPS) == sdp._MEMO_SIZE
    assert len(sdp._EXTMAPS) == sdp._MEMO_SIZE
    opus = parse_offer(BASE).sections[0].opus
    assert opus is not None and (opus.name, opus.clock_rate, opus.channels) == ("opus", 48000, 2)
    for _ in range(2):  # the second time is not answered from a memo
        with pytest.raises(InvalidOffer, match="malformed"):
            parse_offer(edit("opus/48000/2", "opus/48000/2/9"))
        with pytest.raises(InvalidOffer, match="invalid id"):
            parse_offer(edit("a=rtcp-mux", "a=extmap:0 urn:x-zero\r\na=rtcp-mux"))
    assert "111 opus/48000/2/9" not in sdp._RTPMAPS


def test_parse_fields() -> None:
    text = make_offer(
        audio(
            "a",
            "sendonly",
            extra=[
                "a=rtcp-fb:* nack",
                "a=ssrc:42 cname:x",
                "a=ssrc:42 msid:s t",
                "a=ssrc:7 cname:x",
                "a=extmap:3/sendonly http://example.com/ext foo",
            ],
        ),
        audio("b", None, pt=109, level=0, port=0, extra=["a=bundle-only"]),
        ["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "a=mid:d", "a=sctp-port:5000"],
    ).replace(f"sha-256 {FINGERPRINT}", f"SHA-256 {FINGERPRINT.lower()}", 1)
    offer = parse_offer(text)
    assert offer.bundle == ("a", "b", "d")
    assert (offer.ice_ufrag, offer.ice_pwd, offer.setup) == (UFRAG, PWD, "actpass")
    assert offer.fingerprints == (("sha-256", FINGERPRINT),)
    first, second, data = offer.sections
    assert (first.index, first.kind, first.port, first.mid) == (0, "audio", 9, "a")
    assert first.protocol == "UDP/TLS/RTP/SAVPF"
    assert first.direction == "sendonly"
    assert first.opus is not None
    assert first.opus.payload_type == 111
    assert (first.opus.name, first.opus.clock_rate, first.opus.channels) == ("opus", 48000, 2)
    assert first.opus.fmtp == "minptime=10;useinbandfec=1"
    assert first.opus.rtcp_feedback == ("transport-cc", "nack")
    assert first.extensions == {AUDIO_LEVEL_URI: 1, "http://example.com/ext": 3}
    assert first.ssrcs == (42, 7)
    assert first.rtcp_mux and first.fingerprints == (("sha-256", FINGERPRINT),)
    assert second.direction == "sendrecv"  # the default
    assert second.port == 0 and second.bundle_only
    assert second.opus is not None and second.opus.payload_type == 109
    assert second.extensions == {} and second.ssrcs == ()
    assert data.kind == "application" and data.opus is None and not data.rtcp_mux
    # "b" uses another Opus payload type than the transport: rejected
    assert negotiate(offer, publish=True, max_slots=3).accepted == (0,)


def test_bundle_only_section_is_accepted() -> None:
    text = make_offer(
        audio("0", "sendonly"),
        audio("1", "recvonly", port=0, transport=False, extra=["a=bundle-only"]),
    )
    offer = parse_offer(text)
    negotiation = negotiate(offer, publish=True, max_slots=3)
    assert negotiation == Negotiation(0, (1,), (0, 1), 111, 1)
    check_answer(answer_for(offer, negotiation), offer, negotiation)


@pytest.mark.parametrize("written", ["ACTPASS", "ActPass", "ACTIVE"])
def test_the_setup_role_is_read_whatever_its_case(written: str) -> None:
    """RFC 4145's roles are ABNF literals, which are case-insensitive."""
    offer = parse_offer(edit("a=setup:actpass", f"a=setup:{written}"))
    assert offer.setup == written.lower()
    negotiation = negotiate(offer, publish=True, max_slots=3)
    check_answer(answer_for(offer, negotiation), offer, negotiation)


TRANSPORT = [
    f"a=ice-ufrag:{UFRAG}",
    f"a=ice-pwd:{PWD}",
    f"a=fingerprint:sha-256 {FINGERPRINT}",
    "a=setup:actpass",
]
DATA_CHANNEL = [
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "c=IN IP4 0.0.0.0",
    "a=mid:d",
    *TRANSPORT,
    "a=sctp-port:5000",
]


@pytest.mark.parametrize(
    "text",
    [
        # max-bundle: the tagged line is a data channel, audio is bundle-only
        make_offer(
            DATA_CHANNEL,
            audio("0", "recvonly", port=0, transport=False, extra=["a=bundle-only"]),
        ),
        # a later offer: the transport's attributes on the tagged line only (RFC 8843 7.5)
        make_offer(DATA_CHANNEL, audio("0", "recvonly", transport=False)),
        # the group names the second audio line first, which alone has them
        make_offer(
            audio("0", "recvonly", transport=False),
            audio("1", "recvonly"),
            bundle=["1", "0"],
        ),
    ],
    ids=["max-bundle", "attributes-on-the-tagged-line", "second-line-tagged"],
)
def test_the_bundle_transport_is_the_offerer_tagged_lines(text: str) -> None:
    """RFC 8843: a BUNDLE group's transport is that of the m-line its first
    mid names, of any kind; the other lines need not repeat its attributes."""
    offer = parse_offer(text)
    assert (offer.ice_ufrag, offer.ice_pwd, offer.setup) == (UFRAG, PWD, "actpass")
    assert offer.fingerprints == (("sha-256", FINGERPRINT),)
    negotiation = negotiate(offer, publish=False, max_slots=3)
    assert negotiation.accepted
    check_answer(answer_for(offer, negotiation), offer, negotiation)


@pytest.mark.parametrize("written", ["bundle", "Bundle"])
def test_the_bundle_group_is_read_whatever_its_case(written: str) -> None:
    offer = parse_offer(BASE.replace("a=group:BUNDLE ", f"a=group:{written} "))
    assert offer.bundle == ("0", "1")
    negotiation = negotiate(offer, publish=False, max_slots=3)
    assert negotiation.slots == (0, 1), "both lines share the one transport"
    check_answer(answer_for(offer, negotiation), offer, negotiation)


def test_audio_outside_a_bundle_group_of_video_keeps_its_own_transport() -> None:
    """A group that names only a video line bundles nothing the server uses:
    the audio line outside it is its own transport, with its own ICE
    credentials (the parse took the video line's, and every check with the
    audio's failed)."""
    video = [
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:VVvv",
        "a=ice-pwd:" + "v" * 24,
        f"a=fingerprint:sha-256 {FINGERPRINT}",
        "a=setup:actpass",
        "a=mid:v",
        "a=sendrecv",
        "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000",
    ]
    offer = parse_offer(make_offer(video, audio("a", "recvonly"), bundle=["v"]))
    assert (offer.ice_ufrag, offer.ice_pwd) == (UFRAG, PWD)
    negotiation = negotiate(offer, publish=False, max_slots=3)
    assert negotiation.accepted == (1,)
    answer = answer_for(offer, negotiation)
    assert "a=group:BUNDLE" not in answer
    check_answer(answer, offer, negotiation)


def test_port_zero_without_bundle_only_is_rejected() -> None:
    offer = parse_offer(make_offer(audio("0", "sendrecv"), audio("1", "recvonly", port=0)))
    negotiation = negotiate(offer, publish=False, max_slots=3)
    assert negotiation.accepted == (0,) and negotiation.slots == (0,)
    assert check_answer(answer_for(offer, negotiation), offer, negotiation) == ["sendonly", None]


def test_session_level_values_are_inherited_and_overridden() -> None:
    session = [
        f"a=ice-ufrag:{UFRAG}",
        f"a=ice-pwd:{PWD}",
        f"a=fingerprint:sha-512 {':'.join(['0A'] * 64)}",
        "a=recvonly",
        f"a=extmap:5 {AUDIO_LEVEL_URI}",
    ]
    media = audio("0", None, transport=False, level=0)
    override = audio("1", "sendrecv", level=0) + ["a=ice-ufrag:other"]
    offer = parse_offer(make_offer(media, override, session=session))
    first, second = offer.sections
    assert first.ice_ufrag == UFRAG and first.ice_pwd == PWD
    assert first.fingerprints == (("sha-512", ":".join(["0A"] * 64)),)
    assert first.setup is None and offer.setup == "active"  # RFC 4145 default
    assert first.direction == "recvonly" and first.extensions == {AUDIO_LEVEL_URI: 5}
    assert second.ice_ufrag == "other" and second.direction == "sendrecv"
    assert second.fingerprints == (("sha-256", FINGERPRINT),)
    assert offer.ice_ufrag == UFRAG and offer.fingerprints == first.fingerprints


def test_unsupported_fingerprints_are_dropped() -> None:
    text = edit(
        f"a=fingerprint:sha-256 {FINGERPRINT}", f"{MD5}\r\na=fingerprint:sha-256 {FINGERPRINT}"
    )
    assert parse_offer(text).fingerprints == (("sha-256", FINGERPRINT),)


def test_irrelevant_lines_are_ignored() -> None:
    noise = [
        "a=candidate:garbage",
        "a=candidate:1 1 udp 2122260223 10.0.0.1 9 typ host",
        "a=ssrc:not-a-number cname:x",
        "a=ssrc:99999999999 cname:x",
        "a=fmtp:abc x=y",
        "a=rtcp-fb:111",
        "a=",
        "a=x-unknown:whatever \u00e9",
        "b=AS:30",
        "i=description",
        "z=whatever",
    ]
    text = make_offer(audio("0", "sendrecv", extra=noise), audio("1", "recvonly"))
    offer = parse_offer(text)
    assert offer.sections[0].ssrcs == ()
    assert offer.sections[0].opus is not None and offer.sections[0].opus.rtcp_feedback == (
        "transport-cc",
    )
    # a setup line on a non-transport m-line does not matter either
    passive_second = text.replace("a=setup:actpass", "a=setup:passive")
    offer = parse_offer(passive_second.replace("a=setup:passive", "a=setup:actpass", 1))
    assert negotiate(offer, publish=True, max_slots=3).accepted == (0, 1)


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_line_endings(ending: str) -> None:
    text = BASE.replace("\r\n", ending)
    assert parse_offer(text) == parse_offer(BASE)
    assert parse_offer(text.rstrip(ending)) == parse_offer(BASE)  # no final newline


def test_extmap_two_byte_ids_are_syntactically_valid() -> None:
    offer = parse_offer(edit("a=extmap:1 ", "a=extmap:200 "))
    assert offer.sections[0].extensions[AUDIO_LEVEL_URI] == 200
    # Parsed, but not used: see test_an_audio_level_id_past_14_is_not_used.
    assert negotiate(offer, publish=True, max_slots=3).audio_level_id == 0


# ------------------------------------------------------------- negotiation rules

SR, SO, RO, IA = "sendrecv", "sendonly", "recvonly", "inactive"  # offer/answer shorthands

# (id, offered directions, bundle, publish, max_slots,
#  expected (publish, slots, accepted), answer directions per m-line (None = rejected))
RULES = [
    (
        "speaker-browser",
        [SR, RO, RO, RO],
        True,
        True,
        3,
        (0, (0, 1, 2), (0, 1, 2, 3)),
        [SR, SO, SO, IA],
    ),
    (
        "speaker-sendonly",
        [SO, RO, RO, RO],
        True,
        True,
        3,
        (0, (1, 2, 3), (0, 1, 2, 3)),
        [RO, SO, SO, SO],
    ),
    (
        "speaker-last",
        [RO, RO, RO, SR],
        True,
        True,
        3,
        (3, (0, 1, 2), (0, 1, 2, 3)),
        [SO, SO, SO, RO],
    ),
    ("speaker-no-slots", [SR], True, True, 0, (0, (), (0,)), [RO]),
    ("speaker-two-senders", [SR, SO, RO], True, True, 3, (0, (0, 2), (0, 1, 2)), [SR, IA, SO]),
    ("speaker-inactive", [IA, SO], True, True, 3, (1, (), (0, 1)), [IA, RO]),
    ("speaker-k1", [SR, RO], True, True, 1, (0, (0,), (0, 1)), [SR, IA]),
    ("listener-browser", [SR, RO, RO], True, False, 3, (None, (0, 1, 2), (0, 1, 2)), [SO, SO, SO]),
    ("listener-sendonly", [SO, RO], True, False, 3, (None, (1,), (0, 1)), [IA, SO]),
    (
        "listener-extra",
        [RO] * 5,
        True,
        False,
        3,
        (None, (0, 1, 2), (0, 1, 2, 3, 4)),
        [SO, SO, SO, IA, IA],
    ),
    ("listener-inactive", [IA, RO], True, False, 3, (None, (1,), (0, 1)), [IA, SO]),
    ("listener-k0", [RO], True, False, 0, (None, (), (0,)), [IA]),
    ("no-bundle-speaker", [SR, RO, RO], False, True, 3, (0, (0,), (0,)), [SR, None, None]),
    ("no-bundle-listener", [RO, RO], False, False, 3, (None, (0,), (0,)), [SO, None]),
    ("no-bundle-sendonly", [SO, RO], False, True, 3, (0, (), (0,)), [RO, None]),
]


@pytest.mark.parametrize(
    ("directions", "bundle", "publish", "max_slots", "expected", "answered"),
    [pytest.param(*row[1:], id=row[0]) for row in RULES],
)
def test_negotiation_rules(
    directions: list[str],
    bundle: bool,
    publish: bool,
    max_slots: int,
    expected: tuple[int | None, tuple[int, ...], tuple[int, ...]],
    answered: list[str | None],
) -> None:
    offer = parse_offer(
        make_offer(*(audio(str(i), d) for i, d in enumerate(directions)), bundle=bundle)
    )
    negotiation = negotiate(offer, publish=publish, max_slots=max_slots)
    assert (negotiation.publish, negotiation.slots, negotiation.accepted) == expected
    assert (negotiation.payload_type, negotiation.audio_level_id) == (111, 1)
    assert check_answer(answer_for(offer, negotiation), offer, negotiation) == answered


def test_a_video_line_is_kept_inactive_and_a_data_channel_rejected() -> None:
    """A video line of the group is answered as a browser answers a line it
    will not use: kept in the group, inactive, with the transport's
    attributes and its first format. Rejected with port 0 and nothing else,
    as before, GStreamer's webrtcbin refused the whole answer ("No
    fingerprint lines in sdp for media 1") and aiortc too ("ICE username
    fragment or password is missing"): an audio+video WHIP or WHEP client
    could not connect. A data channel is still rejected (the server speaks
    no SCTP)."""
    text = make_offer(
        ["m=video 9 UDP/TLS/RTP/SAVPF 96 97", "a=mid:v", "a=rtcp-mux", "a=rtpmap:96 VP8/90000"],
        audio("a", "sendrecv"),
        ["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "a=mid:d"],
        audio("b", "recvonly"),
    )
    offer = parse_offer(text)
    negotiation = negotiate(offer, publish=True, max_slots=3)
    assert negotiation == Negotiation(1, (1, 3), (1, 3), 111, 1)
    answer = answer_for(offer, negotiation)
    assert check_answer(answer, offer, negotiation) == [UNUSED, SR, None, SO]
    assert "\r\nm=video 40000 UDP/TLS/RTP/SAVPF 96\r\n" in answer
    assert "\r\na=rtpmap:96 VP8/90000\r\n" in answer
    assert "\r\nm=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n" in answer
    assert "a=group:BUNDLE v a b\r\n" in answer


@pytest.mark.parametrize(
    ("second", "accepted"),
    [
        pytest.param(audio("1", "recvonly", pt=109), (0, 2), id="other-opus-pt"),
        pytest.param(audio("1", "recvonly", level=5), (0, 2), id="other-level-id"),
        pytest.param(audio("1", "recvonly", level=0), (0, 2), id="no-level"),
        pytest.param(audio("1", "recvonly", proto="RTP/AVP"), (0, 2), id="plain-rtp"),
        pytest.param(audio("1", "recvonly", extra=["a=rtpmap:111 x/1"]), (0, 1, 2), id="same"),
    ],
)
def test_bundle_members_must_match_the_transport(
    second: list[str], accepted: tuple[int, ...]
) -> None:
    offer = parse_offer(make_offer(audio("0", "sendrecv"), second, audio("2", "recvonly")))
    negotiation = negotiate(offer, publish=True, max_slots=3)
    assert negotiation.accepted == accepted
    assert negotiation.slots == tuple(i for i in accepted)
    directions = check_answer(answer_for(offer, negotiation), offer, negotiation)
    # One not taken stays in the group, unused (plain RTP, another profile, is rejected).
    unused = None if "RTP/AVP" in second[0] else UNUSED
    assert [d if d in (None, UNUSED) else "taken" for d in directions] == [
        "taken" if i in accepted else unused for i in range(3)
    ]


def test_transport_is_the_first_usable_audio_section() -> None:
    no_opus = ["m=audio 9 UDP/TLS/RTP/SAVPF 0", "a=mid:0", "a=rtcp-mux", "a=rtpmap:0 PCMU/8000"]
    text = make_offer(
        ["m=video 9 UDP/TLS/RTP/SAVPF 96", "a=mid:v", "a=rtpmap:96 VP8/90000"],
        no_opus,
        audio("1", "sendrecv", pt=96, level=3),
        audio("2", "recvonly", pt=96, level=3),
    )
    offer = parse_offer(text)
    assert offer.sections[1].opus is None
    negotiation = negotiate(offer, publish=True, max_slots=3)
    assert negotiation == Negotiation(2, (2, 3), (2, 3), 96, 3)
    answer = answer_for(offer, negotiation)
    assert check_answer(answer, offer, negotiation) == [UNUSED, UNUSED, SR, SO]
    assert "a=group:BUNDLE v 0 1 2\r\n" in answer


def test_unusable_reasons_are_listed() -> None:
    text = make_offer(audio("0", proto="RTP/AVP"), audio("1"))
    with pytest.raises(InvalidOffer) as caught:
        parse_offer(text.replace("opus/48000/2", "G722/8000"))
    message = str(caught.value)
    assert "audio m-line 0 uses protocol RTP/AVP" in message
    assert "audio m-line 1 does not offer opus/48000/2" in message


# ------------------------------------------------------------------- answers


def test_answer_over_ipv6() -> None:
    offer = parse_offer(BASE)
    negotiation = negotiate(offer, publish=True, max_slots=3)
    answer = answer_for(offer, negotiation, address="::1", port=5000)
    check_answer(answer, offer, negotiation, address="::1", port=5000)
    assert "o=- 123456789 1 IN IP6 ::1\r\n" in answer


def test_answer_for_a_link_local_address_leaves_out_its_zone() -> None:
    """SDP has no syntax for an IPv6 zone (RFC 8866 address, RFC 8839 candidate):
    a server bound to ``fe80::1%lo`` announces ``fe80::1``."""
    offer = parse_offer(BASE)
    negotiation = negotiate(offer, publish=True, max_slots=3)
    answer = answer_for(offer, negotiation, address="fe80::1%lo", port=5000)
    assert "%" not in answer
    check_answer(answer, offer, negotiation, address="fe80::1", port=5000)


def test_answer_is_accepted_by_an_independent_parser() -> None:
    """aiortc's own SDP parser reads what we wrote (codecs, SSRCs, msid, candidates)."""
    offer = parse_offer(make_offer(audio("0", SR), audio("1", RO), audio("2", RO)))
    negotiation = negotiate(offer, publish=True, max_slots=3)
    parsed = aiortc_sdp.SessionDescription.parse(answer_for(offer, negotiation))
    assert [m.direction for m in parsed.media] == [SR, SO, SO]
    for slot, media in enumerate(parsed.media):
        assert [c.payloadType for c in media.rtp.codecs] == [111]
        assert [s.ssrc for s in media.ssrc] == [SLOT_SSRCS[slot]]
        assert media.ssrc[0].cname == CNAME
        assert media.msid == f"sfu slot{slot}"
        assert parsed.webrtc_track_id(media) == f"slot{slot}"
        assert media.ice is not None and media.ice.iceLite
        assert media.dtls is not None and media.dtls.role == "server"
        assert [(c.ip, c.port) for c in media.ice_candidates] == [("127.0.0.1", 40000)]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"slot_ssrcs": (1,)}, "SSRCs"),
        ({"address": "example.com"}, "IP address"),
        ({"port": 0}, "port"),
        ({"fingerprint": "AB:CD"}, "sha-256"),
    ],
)
def test_answer_settings_are_checked(overrides: dict[str, object], fragment: str) -> None:
    offer = parse_offer(BASE)
    negotiation = negotiate(offer, publish=False, max_slots=3)
    with pytest.raises(InvalidSetting, match=fragment):
        answer_for(offer, negotiation, **overrides)


# ------------------------------------------------------------ captured offers


def load(name: str) -> str:
    with open(OFFERS / name, encoding="utf-8", newline="") as file:
        return file.read()


# (file, publish, expected Negotiation or an InvalidOffer fragment)
REAL = [
    ("chromium-speaker.sdp", True, Negotiation(0, (0, 1, 2), (0, 1, 2, 3), 111, 1)),
    ("chromium-speaker.sdp", False, Negotiation(None, (0, 1, 2), (0, 1, 2, 3), 111, 1)),
    ("chromium-listener.sdp", False, Negotiation(None, (0, 1, 2), (0, 1, 2), 111, 1)),
    ("chromium-listener.sdp", True, "speaker needs to send audio"),
    ("gstreamer-sendrecv.sdp", True, Negotiation(0, (0,), (0,), 96, 0)),
    ("gstreamer-sendrecv.sdp", False, Negotiation(None, (0,), (0,), 96, 0)),
    ("gstreamer-sendonly.sdp", True, Negotiation(0, (), (0,), 96, 0)),
    ("gstreamer-sendonly.sdp", False, "listener needs to receive audio"),
]


@pytest.mark.parametrize(
    ("name", "publish", "expected"),
    [pytest.param(*row, id=f"{row[0][:-4]}-{'speaker' if row[1] else 'listener'}") for row in REAL],
)
def test_captured_offers(name: str, publish: bool, expected: Negotiation | str) -> None:
    text = load(name)
    assert "\r\n" in text  # captured byte for byte
    offer = parse_offer(text)
    assert offer.setup == "actpass"
    assert [a for a, _ in offer.fingerprints] == ["sha-256"]
    if isinstance(expected, str):
        with pytest.raises(InvalidOffer, match=expected):
            negotiate(offer, publish=publish, max_slots=3)
        return
    negotiation = negotiate(offer, publish=publish, max_slots=3)
    assert negotiation == expected
    answer = answer_for(offer, negotiation)
    check_answer(answer, offer, negotiation)
    if name.startswith("chromium"):
        assert "a=fmtp:111 minptime=10;useinbandfec=1\r\n" in answer
        for unwanted in ("transport-cc", "abs-send-time", "sdes:mid", "red/", "G722", "rtcp-fb"):
            assert unwanted not in answer
    else:
        # The offerer's own parameters are not echoed back as the server's.
        assert "a=fmtp:96 minptime=10;useinbandfec=1\r\n" in answer
        assert "sprop-" not in answer
        assert "extmap" not in answer and "transport-cc" not in answer


def test_the_answer_asks_for_mono_whatever_the_offerer_can_receive() -> None:
    """RFC 7587 §7: an answer's Opus parameters are the answerer's receive
    preferences. A Firefox offer says it can receive stereo (``stereo=1``);
    echoed, that asked the speaker to send stereo to every listener."""
    firefox = edit(
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=fmtp:111 maxplaybackrate=48000;stereo=1;useinbandfec=1",
    )
    offer = parse_offer(firefox)
    answer = answer_for(offer, negotiate(offer, publish=True, max_slots=3))
    fmtp = [line for line in answer.split("\r\n") if line.startswith("a=fmtp:")]
    assert fmtp and all(line == "a=fmtp:111 minptime=10;useinbandfec=1" for line in fmtp)


def test_captured_offer_details() -> None:
    chromium = parse_offer(load("chromium-speaker.sdp"))
    assert chromium.bundle == ("0", "1", "2", "3")
    assert [s.direction for s in chromium.sections] == [SR, RO, RO, RO]
    first = chromium.sections[0]
    assert first.opus is not None and first.opus.rtcp_feedback == ("transport-cc",)
    assert len(first.ssrcs) == 1 and all(not s.ssrcs for s in chromium.sections[1:])
    assert len(first.extensions) == 4 and first.extensions[AUDIO_LEVEL_URI] == 1
    gstreamer = parse_offer(load("gstreamer-sendrecv.sdp"))
    section = gstreamer.sections[0]
    assert section.opus is not None and section.opus.name == "OPUS"
    assert section.rtcp_mux and section.extensions == {} and gstreamer.bundle == ("audio0",)


# ------------------------------------------------------------------- aiortc


@pytest.fixture
def loopback_aioice(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice gathers on 127.0.0.1 only (it skips loopback by default)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda *args, **kwargs: ["127.0.0.1"])


@pytest.fixture
def sink_port() -> Iterator[int]:
    """A bound loopback UDP port, so aiortc's ICE checks land somewhere harmless."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


# (id, transceiver directions, publish, expected currentDirection per transceiver)
AIORTC = [
    ("speaker-sendrecv", [SR, RO, RO, RO], True, [SR, RO, RO, IA]),
    ("speaker-sendonly", [SO, RO, RO, RO], True, [SO, RO, RO, RO]),
    ("listener", [RO, RO, RO], False, [RO, RO, RO]),
    ("listener-with-sendrecv", [SR, RO, RO, RO], False, [RO, RO, RO, IA]),
]


@pytest.mark.parametrize(
    ("directions", "publish", "current"), [pytest.param(*row[1:], id=row[0]) for row in AIORTC]
)
@pytest.mark.usefixtures("loopback_aioice")
async def test_aiortc_accepts_the_answer(
    directions: list[str], publish: bool, current: list[str], sink_port: int
) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        transceivers = [pc.addTransceiver("audio", direction=d) for d in directions]
        await pc.setLocalDescription(await pc.createOffer())
        text = pc.localDescription.sdp
        assert " 127.0.0.1 " in text
        offer = parse_offer(text)
        negotiation = negotiate(offer, publish=publish, max_slots=3)
        answer = answer_for(offer, negotiation, port=sink_port)
        check_answer(answer, offer, negotiation, port=sink_port)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        assert pc.signalingState == "stable"
        assert [t.currentDirection for t in transceivers] == current
        for slot, index in enumerate(negotiation.slots):
            track = transceivers[index].receiver.track
            assert track is not None and track.id == f"slot{slot}"
        codecs = [c.mimeType.lower() for t in transceivers for c in t._codecs]
        assert set(codecs) == {"audio/opus"}
    finally:
        await pc.close()


# ---------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000))
def test_arbitrary_text_raises_only_invalid_offer(text: str) -> None:
    try:
        parse_offer(text)
    except InvalidOffer:
        pass


def _mutated_offers() -> st.SearchStrategy[str]:
    """Real and built offers with lines deleted, duplicated, cut, swapped or replaced."""
    sources = [BASE, load("chromium-speaker.sdp"), load("gstreamer-sendrecv.sdp")]
    line_text = st.one_of(
        st.text(max_size=40),
        st.builds(lambda k, v: f"{k}={v}", st.sampled_from("vmacsotb"), st.text(max_size=40)),
        st.builds(
            lambda a, v: f"a={a}:{v}",
            st.sampled_from(
                [
                    "rtpmap",
                    "fmtp",
                    "extmap",
                    "mid",
                    "ssrc",
                    "fingerprint",
                    "setup",
                    "ice-ufrag",
                    "ice-pwd",
                    "group",
                    "rtcp-fb",
                    "bundle-only",
                    "rtcp-mux",
                ]
            ),
            st.text(alphabet="0123456789 /:abcdef-ABCDEF=;*", max_size=30),
        ),
    )

    @st.composite
    def mutate(draw: st.DrawFn) -> str:
        lines = draw(st.sampled_from(sources)).split("\r\n")
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(lines) - 1))
            op = draw(st.sampled_from(["delete", "duplicate", "cut", "swap", "replace", "insert"]))
            if op == "delete" and len(lines) > 1:
                del lines[i]
            elif op == "duplicate":
                lines.insert(i, lines[i])
            elif op == "cut":
                lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
            elif op == "swap":
                j = draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
            elif op == "replace":
                lines[i] = draw(line_text)
            else:
                lines.insert(i, draw(line_text))
        return "\r\n".join(lines)

    return mutate()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated_offers(), st.booleans(), st.integers(0, len(SLOT_SSRCS)))
def test_mutated_offers_raise_only_invalid_offer(text: str, publish: bool, slots: int) -> None:
    try:
        offer = parse_offer(text)
        negotiation = negotiate(offer, publish=publish, max_slots=slots)
    except InvalidOffer:
        return
    check_answer(answer_for(offer, negotiation), offer, negotiation)


def test_an_audio_level_id_past_14_is_not_used() -> None:
    """The fan-out writes the one-byte header form (ids 1..14): a two-byte-only
    id is left out of the answer and the speaker's level is decoded instead."""
    offer = parse_offer(make_offer(audio("0", "sendrecv", level=16)))
    negotiation = negotiate(offer, publish=True, max_slots=3)
    assert negotiation.audio_level_id == 0
    answer = answer_for(offer, negotiation)
    assert AUDIO_LEVEL_URI not in answer
    assert (
        negotiate(
            parse_offer(make_offer(audio("0", level=14))), publish=True, max_slots=3
        ).audio_level_id
        == 14
    )


@pytest.mark.parametrize("pt", [64, 72, 95])
def test_opus_on_an_rtcp_payload_type_is_refused(pt: int) -> None:
    offer = parse_offer(make_offer(audio("0", "sendrecv", pt=pt)))
    with pytest.raises(InvalidOffer, match="RFC 5761"):
        negotiate(offer, publish=True, max_slots=3)


# -- offers parsed by shape ----------------------------------------------------------


def _outcome(text: str) -> object:
    """What parse_offer makes of ``text``: the Offer, or the error's type and message."""
    try:
        return parse_offer(text)
    except InvalidOffer as exc:
        return ("InvalidOffer", str(exc))


def _know_shape(text: str) -> None:
    """Parse ``text`` as often as it takes for its shape to be kept."""
    parse_offer(text)
    parse_offer(text)


def _full_parse(text: str, monkeypatch: pytest.MonkeyPatch | None = None) -> object:
    """The outcome with no shape known: every line parsed."""
    saved = sdp._SHAPES
    sdp._SHAPES = {}
    try:
        return _outcome(text)
    finally:
        sdp._SHAPES = saved


_CROWD_SOURCES = [
    BASE,
    # Session-level transport values, overridden in part by the second m-line.
    make_offer(
        audio("0", None, transport=False, level=0),
        audio("1", "sendrecv", level=0, port=0, extra=["a=bundle-only"]),
        audio("2", "recvonly", transport=False),
        session=[
            f"a=ice-ufrag:{UFRAG}",
            f"a=ice-pwd:{PWD}",
            f"a=fingerprint:sha-512 {':'.join(['0A'] * 64)}",
            f"a=fingerprint:sha-256 {FINGERPRINT}",
            "a=candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host",
        ],
    ),
    load("chromium-listener.sdp"),
    load("chromium-speaker.sdp"),
    load("gstreamer-sendrecv.sdp"),
]
# What a value may be replaced with: valid ones and everything a parse refuses.
_VALUE_TEXT = st.one_of(
    st.sampled_from(["0", "9", "65535", "65536", "00009", "", " ", "a b", "\t9", "x:y"]),
    st.text(alphabet="0123456789 \t:/+abcdefxyzABCDEF-=", max_size=40),
    st.text(max_size=12),
)


@st.composite
def _offers_of_a_known_shape(draw: st.DrawFn) -> tuple[str, str]:
    """A captured offer and one like it with its per-client values replaced."""
    source = draw(st.sampled_from(_CROWD_SOURCES))
    parts = sdp._VARIABLE.split(source)  # per cut: before, m prefix, port, prefix, value
    pieces = []
    for i in range(0, len(parts) - 1, 5):
        before, m_prefix, port, prefix, value = parts[i : i + 5]
        old = port if port is not None else value
        new = draw(_VALUE_TEXT) if draw(st.booleans()) else old
        pieces.append(before + "\n" + (m_prefix or prefix) + new)
    pieces.append(parts[-1])
    return source, "".join(pieces)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_offers_of_a_known_shape())
def test_an_offer_parsed_by_its_shape_is_what_a_full_parse_makes(pair: tuple[str, str]) -> None:
    """Same Offer, or the same InvalidOffer message, with the shape known or not."""
    source, text = pair
    _know_shape(source)
    assert sdp._shape_of(source)[0] in sdp._SHAPES
    assert _outcome(text) == _full_parse(text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated_offers())
def test_a_mutated_offer_parses_alike_whatever_shapes_are_known(text: str) -> None:
    for source in _CROWD_SOURCES:
        _know_shape(source)
    first = _outcome(text)
    assert first == _full_parse(text)
    assert _outcome(text) == first  # may keep its shape
    assert _outcome(text) == first  # by its shape, if it was valid


def test_a_crowd_of_one_client_build_is_parsed_by_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offers of one build differing in credentials, fingerprint, ports and
    candidates share a shape: after the first, none is parsed line by line,
    and each gets its own values."""
    parsed: list[str] = []
    original = sdp._parse_lines

    def parse_lines(text: str) -> tuple[sdp.Offer, int]:
        parsed.append(text)
        return original(text)

    monkeypatch.setattr(sdp, "_parse_lines", parse_lines)
    monkeypatch.setattr(sdp, "_SHAPES", {})
    monkeypatch.setattr(sdp, "_SEEN", {})
    source = load("chromium-listener.sdp")
    _, values = sdp._shape_of(source)
    assert len(values) >= 6
    offers = []
    for number in range(20):
        text = source.replace(sdp.parse_offer(source).ice_ufrag, f"uf{number:02d}").replace(
            sdp.parse_offer(source).ice_pwd, f"password{number:02d}padpadpadpadpad"
        )
        text = re.sub(r"(?m)^m=audio [0-9]+ ", f"m=audio {9000 + number} ", text)
        offers.append((number, sdp.parse_offer(text)))
    assert len(parsed) == 2, "only the first two offers of the shape are parsed line by line"
    for number, offer in offers:
        assert offer.ice_ufrag == f"uf{number:02d}"
        assert offer.ice_pwd == f"password{number:02d}padpadpadpadpad"
        assert {section.port for section in offer.sections} == {9000 + number}
    # What the shape keeps is not shared with what it made, the first offer's either.
    offers[0][1].sections[0].extensions["x"] = 1
    offers[1][1].sections[0].extensions["y"] = 1
    assert not {"x", "y"} & set(sdp.parse_offer(source).sections[0].extensions)


def test_known_shapes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdp, "_SHAPES", {})
    monkeypatch.setattr(sdp, "_SEEN", {})
    for number in range(sdp._SHAPES_SIZE + 10):
        _know_shape(BASE.replace("t=0 0", f"t=0 0\r\na=x-{number}"))  # a new shape each
    assert len(sdp._SHAPES) == sdp._SHAPES_SIZE
    assert sdp._shape_of(BASE.replace("t=0 0", "t=0 0\r\na=x-0"))[0] not in sdp._SHAPES
    for number in range(2 * sdp._SEEN_SIZE):
        parse_offer(BASE.replace("t=0 0", f"t=0 0\r\na=y-{number}"))  # seen once each
    assert len(sdp._SEEN) == sdp._SEEN_SIZE


def test_a_crowd_of_speakers_of_one_build_is_parsed_by_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Chromium speaker's offer names its stream (msid-semantic, msid,
    ssrc lines): one shape all the same."""
    monkeypatch.setattr(sdp, "_SHAPES", {})
    monkeypatch.setattr(sdp, "_SEEN", {})
    source = load("chromium-speaker.sdp")
    ssrc = parse_offer(source).sections[0].ssrcs[0]
    stream = re.search(r"a=msid-semantic: ?WMS (\S+)", source)
    assert stream is not None
    for number in range(1, 6):
        text = source.replace(stream.group(1), f"stream{number}").replace(
            str(ssrc), str(1000 + number)
        )
        offer = parse_offer(text)
        assert offer.sections[0].ssrcs[0] == 1000 + number
        assert offer == _full_parse(text)
    assert len(sdp._SHAPES) == 1


def test_a_large_offer_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """An offer of much text costs memory to keep: it is parsed each time."""
    monkeypatch.setattr(sdp, "_SHAPES", {})
    monkeypatch.setattr(sdp, "_SEEN", {})
    large = BASE.replace("t=0 0", "t=0 0\r\n" + "a=x\r\n" * 4000)
    assert len(large) > sdp._SHAPE_MAX_TEXT
    _know_shape(large)
    assert sdp._SHAPES == {}


def test_an_offer_with_a_value_left_uncut_is_always_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line the cut leaves whole (here a second ice-ufrag ending in two CRs,
    which the parse reads and which wins) keeps its text out of the shapes."""
    monkeypatch.setattr(sdp, "_SHAPES", {})
    first = BASE.replace(f"a=ice-pwd:{PWD}", f"a=ice-ufrag:last\r\r\na=ice-pwd:{PWD}", 1)
    assert parse_offer(first).ice_ufrag == "last"
    assert sdp._SHAPES == {}
    second = first.replace(f"a=ice-ufrag:{UFRAG}", "a=ice-ufrag:Other", 1)
    assert _outcome(second) == _full_parse(second)
    assert parse_offer(second).ice_ufrag == "last"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    _mutated_offers(),
    st.booleans(),
    st.integers(0, len(SLOT_SSRCS)),
    st.sampled_from(["127.0.0.1", "::1", "192.0.2.7"]),
    st.integers(1, 65535),
    st.text(alphabet="abcXYZ019+/\x00", min_size=1, max_size=8),
    st.integers(0, 2**62),
    st.integers(1, 2**62),
)
def test_an_answer_from_a_kept_template_is_the_one_written_in_full(
    text: str,
    publish: bool,
    slots: int,
    address: str,
    port: int,
    ufrag: str,
    session_id: int,
    version: int,
) -> None:
    """The answer of a kind of offer is written once and kept with its
    per-answer values left out: what it gives is what writing it gives."""
    try:
        offer = parse_offer(text)
        negotiation = negotiate(offer, publish=publish, max_slots=slots)
    except InvalidOffer:
        return
    settings_ = dict(fingerprint=SERVER_FINGERPRINT, slot_ssrcs=SLOT_SSRCS, cname=CNAME)
    # The second and third from the template (the third a renegotiation's).
    for pwd, session_version in (("first", 1), ("second", 1), ("third", version)):
        kept = build_answer(
            offer,
            negotiation,
            ice_ufrag=ufrag,
            ice_pwd=pwd + ufrag * 3,
            address=address,
            port=port,
            session_id=session_id,
            session_version=session_version,
            **settings_,  # type: ignore[arg-type]
        )
        written = answer_module._write_answer(
            offer,
            negotiation,
            ice_ufrag=ufrag,
            ice_pwd=pwd + ufrag * 3,
            address=address,
            port=port,
            session_id=session_id,
            session_version=session_version,
            **settings_,  # type: ignore[arg-type]
        )
        assert kept == written


def test_renegotiations_keep_no_answer_template_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A member's answers differ by their session version (one more per
    renegotiation): one kind of offer is one kept template, however many
    times it is answered, or every renegotiation would make one of its own."""
    monkeypatch.setattr(answer_module, "_ANSWERS", {})
    offer = parse_offer(BASE)
    negotiation = negotiate(offer, publish=False, max_slots=len(SLOT_SSRCS))
    for version in range(1, 41):
        answer = build_answer(
            offer,
            negotiation,
            ice_ufrag=UFRAG,
            ice_pwd=PWD,
            fingerprint=SERVER_FINGERPRINT,
            address="127.0.0.1",
            port=9,
            slot_ssrcs=SLOT_SSRCS,
            cname=CNAME,
            session_id=7,
            session_version=version,
        )
        assert f"\r\no=- 7 {version} IN IP4 127.0.0.1\r\n" in answer
    assert len(answer_module._ANSWERS) == 1
