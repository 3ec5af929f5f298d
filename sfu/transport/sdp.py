"""SDP offers: :func:`parse_offer` for the ICE-lite audio server.

Pure functions, no I/O. The client always offers and the server answers
(WHIP/WHEP style): :func:`parse_offer` reads an offer (RFC 8866 syntax) into
frozen dataclasses and checks everything the transport depends on: ICE
credentials (RFC 8839), DTLS fingerprint and role (RFC 8122, RFC 8842),
rtcp-mux (RFC 5761, RFC 8858), BUNDLE (RFC 8843), Opus (RFC 7587). The offer's
dataclasses and its transport checks are :mod:`sfu.transport.offer`'s; what
the offer is answered with is :mod:`sfu.transport.answer`'s.

An SDP description is a list of ``<type>=<value>`` lines; ``m=`` lines open
media sections and every line before the first ``m=`` is session level::

    v=0
    o=- <sess-id> <sess-version> IN IP4 <address>
    s=-
    t=0 0
    a=group:BUNDLE 0 1          (session attributes)
    m=audio 9 UDP/TLS/RTP/SAVPF 111
    a=mid:0                     (media attributes, until the next m=)
    a=rtpmap:111 opus/48000/2
    ...

Attributes the server does not use are ignored, malformed or not; anything
that decides whether the offer can be answered raises
:class:`sfu.errors.InvalidOffer` with a message saying what is wrong.
"""

from __future__ import annotations

import re
from typing import Any

from sfu.errors import InvalidOffer
from sfu.transport.offer import (
    AUDIO_LEVEL_URI,
    DIRECTIONS,
    Codec,
    MediaSection,
    Offer,
    check_transport,
    excerpt,
    transport_group,
)

__all__ = [
    "AUDIO_LEVEL_URI",
    "MAX_OFFER_SECTIONS",
    "MAX_OFFER_SIZE",
    "Codec",
    "MediaSection",
    "Offer",
    "parse_offer",
    "transport_group",
]

#: Offers longer than this (in bytes of UTF-8) are refused before parsing.
MAX_OFFER_SIZE = 64 * 1024
#: Offers with more media sections than this are refused before parsing: a
#: member needs one per slot it receives (16 at most) and one it sends, and
#: a browser may add a few it does not use; each costs the parse and the
#: answer (170 sections fit in 64 KiB: ~5 ms of the event loop).
MAX_OFFER_SECTIONS = 32

# Control characters (but TAB, CR, LF), lone surrogates and U+FFFD: not text.
_GARBAGE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffd]")
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")  # RFC 8866 token
# Bytes of printable ASCII text with its line breaks: an offer made only of
# them cannot match _GARBAGE, so the regex (slow per character) is skipped.
_PLAIN_TEXT = bytes(range(0x20, 0x7F)) + b"\t\r\n"

# Parsed a=rtpmap / a=extmap values by their text: browsers offer the same
# few dozen lines every time, and a join storm parses thousands of offers.
# Bounded, and only valid values go in: a full table just stops growing.
_MEMO_SIZE = 512
_RTPMAPS: dict[str, tuple[int, tuple[str, int, int]]] = {}
_EXTMAPS: dict[str, tuple[int, str]] = {}
# The a= attributes _parse_attribute acts on; every other one is skipped.
_USED_ATTRIBUTES = frozenset(
    {
        "mid",
        *DIRECTIONS,
        "rtpmap",
        "fmtp",
        "rtcp-fb",
        "extmap",
        "ssrc",
        "rtcp-mux",
        "rtcp-mux-only",
        "bundle-only",
        "ice-ufrag",
        "ice-pwd",
        "fingerprint",
        "setup",
    }
)


# ---------------------------------------------------------------- parsing


def _fields(value: str) -> list[str]:
    """Split on SP/TAB only (str.split() would also split on U+2028 etc.)."""
    return [f for f in value.replace("\t", " ").split(" ") if f]


def _int(text: str) -> int | None:
    """ASCII decimal or None (int() would accept '١٢' and '+1')."""
    return int(text) if 0 < len(text) <= 10 and text.isascii() and text.isdigit() else None


class _SectionBuilder:
    """Attributes gathered for one m= line while its lines are read."""

    def __init__(self, index: int, line: str) -> None:
        fields = _fields(line)
        if len(fields) < 4:
            raise InvalidOffer(
                f"m= line {index} is malformed: expected "
                f"'m=<media> <port> <proto> <fmt> ...', got {excerpt('m=' + line)}"
            )
        port_text = fields[1].split("/", 1)[0]  # RFC 8866: <port>/<number of ports>
        port = _int(port_text)
        if port is None or port > 65535:
            raise InvalidOffer(f"m= line {index} has an invalid port {excerpt(fields[1])}")
        self.index = index
        #: How error messages name it (made once: it is needed only for them).
        self.where = "session" if index < 0 else f"m-line {index}"
        self.kind = fields[0]
        self.port = port
        self.protocol = fields[2]
        self.formats = tuple(fields[3:])
        self.mid: str | None = None
        self.direction: str | None = None
        self.rtpmaps: dict[int, tuple[str, int, int]] = {}
        self.fmtp: dict[str, str] = {}
        self.rtcp_fb: dict[str, list[str]] = {}
        self.extensions: dict[str, int] = {}
        self.ssrcs: dict[int, None] = {}  # ordered set
        self.rtcp_mux = False
        self.bundle_only = False
        self.ice_ufrag: str | None = None
        self.ice_pwd: str | None = None
        self.fingerprints: list[tuple[str, str]] = []
        self.setup: str | None = None


def _parse_rtpmap(where: str, value: str) -> tuple[int, tuple[str, int, int]]:
    """``a=rtpmap:<pt> <name>/<clock rate>[/<channels>]`` (RFC 8866 6.6)."""
    parsed = _RTPMAPS.get(value)
    if parsed is not None:
        return parsed
    pt_text, _, encoding = value.partition(" ")
    pt = _int(pt_text.strip())
    if pt is None or pt > 127:
        raise InvalidOffer(
            f"{where}: a=rtpmap has an invalid payload type {excerpt(pt_text)} (must be 0..127)"
        )
    parts = encoding.strip().split("/")
    clock_rate = _int(parts[1]) if len(parts) >= 2 else None
    channels = _int(parts[2]) if len(parts) >= 3 else 1
    if not parts[0] or clock_rate is None or channels is None or len(parts) > 3:
        raise InvalidOffer(f"{where}: a=rtpmap:{excerpt(value)} is malformed")
    parsed = pt, (parts[0], clock_rate, channels)
    if len(_RTPMAPS) < _MEMO_SIZE:
        _RTPMAPS[value] = parsed
    return parsed


def _parse_extmap(where: str, value: str, extensions: dict[str, int]) -> None:
    """``a=extmap:<id>[/<direction>] <uri> [<attributes>]`` (RFC 8285 section 5)."""
    parsed = _EXTMAPS.get(value)
    if parsed is None:
        fields = _fields(value)
        ext_id = _int(fields[0].split("/", 1)[0]) if fields else None
        # 1..14 fit the one-byte header form, 15..255 need the two-byte form.
        if ext_id is None or not 1 <= ext_id <= 255 or len(fields) < 2:
            raise InvalidOffer(
                f"{where}: a=extmap:{excerpt(value)} has an invalid id (must be 1..255, 1..14 "
                "for one-byte headers) or no URI"
            )
        parsed = ext_id, fields[1]
        if len(_EXTMAPS) < _MEMO_SIZE:
            _EXTMAPS[value] = parsed
    ext_id, uri = parsed
    if uri in extensions:
        return  # the first mapping wins
    if ext_id in extensions.values():
        raise InvalidOffer(f"{where}: extmap id {ext_id} is used for two extensions")
    extensions[uri] = ext_id


def _parse_attribute(line: str, target: _SectionBuilder) -> None:
    """Apply one ``a=`` line to a media section (or the session defaults)."""
    name, _, value = line.partition(":")
    if name not in _USED_ATTRIBUTES:
        return
    where = target.where
    # Commonest first (a browser offers dozens of rtpmap, extmap, rtcp-fb lines).
    if name == "rtpmap":
        pt, encoding = _parse_rtpmap(where, value)
        target.rtpmaps.setdefault(pt, encoding)
    elif name == "extmap":
        _parse_extmap(where, value, target.extensions)
    elif name == "rtcp-fb":
        pt_text, _, feedback = value.partition(" ")
        if feedback.strip():
            target.rtcp_fb.setdefault(pt_text, []).append(feedback.strip())
    elif name == "fmtp":
        pt_text, _, params = value.partition(" ")
        target.fmtp.setdefault(pt_text, params.strip())
    elif name == "mid":
        if not _TOKEN.fullmatch(value):
            raise InvalidOffer(f"{where}: a=mid:{excerpt(value)} is not a valid identification tag")
        target.mid = value
    elif name in DIRECTIONS:
        target.direction = name
    elif name == "ssrc":
        ssrc = _int(value.partition(" ")[0])
        if ssrc is not None and ssrc < 2**32:
            target.ssrcs[ssrc] = None
    elif name in ("rtcp-mux", "rtcp-mux-only"):  # mux-only implies mux (RFC 8858)
        target.rtcp_mux = True
    elif name == "bundle-only":
        target.bundle_only = True
    elif name == "ice-ufrag":
        target.ice_ufrag = value
    elif name == "ice-pwd":
        target.ice_pwd = value
    elif name == "fingerprint":
        target.fingerprints.append(_fingerprint(value))
    elif name == "setup":
        target.setup = value.strip().lower()  # (ABNF literals: any case)


def _fingerprint(value: str) -> tuple[str, str]:
    """``a=fingerprint:<hash> <value>`` as (hash, VALUE); "" for a malformed value."""
    fields = _fields(value)
    algorithm = fields[0].lower() if fields else ""
    fingerprint = fields[1].upper() if len(fields) == 2 else ""
    return algorithm, fingerprint


def _opus(section: _SectionBuilder) -> Codec | None:
    """The first opus/48000/2 in m= line order (RFC 7587 section 7)."""
    for fmt in section.formats:
        pt = _int(fmt)
        if pt is None or pt not in section.rtpmaps:
            continue
        name, clock_rate, channels = section.rtpmaps[pt]
        if name.lower() == "opus" and clock_rate == 48000 and channels == 2:
            feedback = section.rtcp_fb.get(fmt, []) + section.rtcp_fb.get("*", [])
            return Codec(pt, name, clock_rate, channels, section.fmtp.get(fmt), tuple(feedback))
    return None


# A crowd's offers come from a few client builds and differ only in per-client
# values: ICE credentials, certificate fingerprint, ports, SSRCs, candidates,
# session id. The text with those values cut out is the offer's *shape*. A
# shape seen twice in valid offers is not parsed again: its parse is reused with
# the new values put in and checked as the parse checks them (a captured
# Chromium offer 135 -> 47 µs; the first two of a shape cost 10-50 µs more). Each
# value is cut only where the parse reads it whole (the rest of the line; the
# port as the second field of ``m=``), so texts of one shape parse alike but
# for those values; tests/transport/test_sdp.py compares both ways.
_VARIABLE = re.compile(
    # From the newline before each line: a literal first character lets the
    # regex engine skip ahead (^ with re.M would be tried at every character).
    r"\n(?:(m=[^ \t\r\n]+ )([0-9]+)(?= )"
    r"|(a=(?:ice-ufrag|ice-pwd|fingerprint|ssrc|candidate|msid|rtcp|ssrc-group|msid-semantic):"
    r"|[oc]=)"
    r"([^\r\n]*)(?=\r?\n|\r?\Z))"
)
_SHAPES_SIZE = 256  # shapes kept, the least recently used dropped first
_SHAPE_MAX_TEXT = 16 * 1024  # larger offers are parsed every time (and have at
# most MAX_OFFER_SECTIONS sections, so a kept shape's size is bounded too)
_SEEN_SIZE = 1024  # shapes seen once (their hashes): a shape is kept when seen again


def _shape_of(text: str) -> tuple[tuple[str, ...], list[str]]:
    """The text with the variable values cut out, and the values in order."""
    # split() gives, per cut: the text before it, the m-line prefix, the port,
    # the other prefix, the value (None for the alternative not taken).
    parts = _VARIABLE.split(text)
    values = [port or value for port, value in zip(parts[2::5], parts[4::5])]
    return (*parts[0::5], *parts[1::5], *parts[3::5]), values


class _Shape:
    """A valid offer's parse and where each of its variable values went."""

    __slots__ = ("offer", "recipe", "transport", "zero_ports")

    def __init__(self, offer: Offer, transport: int, recipe: list[tuple[str, int]]) -> None:
        self.offer = offer
        self.transport = transport  # index of the transport m-line
        # (what each cut value is, the m-line it belongs to; -1: session level)
        self.recipe = recipe
        self.zero_ports = tuple(section.port == 0 for section in offer.sections)

    @classmethod
    def of(cls, text: str, key: tuple[str, ...], offer: Offer, transport: int) -> _Shape | None:
        """The shape of a text just parsed (``key`` from :func:`_shape_of`), or None
        if a value the parse read was not cut (written in a way :data:`_VARIABLE`
        leaves whole, e.g. a line ending in two CRs): such a text is always parsed."""
        cuts = (len(key) - 1) // 3
        section = -1
        recipe = []
        for m_prefix, prefix in zip(key[cuts + 1 : 2 * cuts + 1], key[2 * cuts + 1 :]):
            if m_prefix is not None:
                section += 1
                recipe.append(("port", section))
            else:
                recipe.append((_VALUE_KINDS.get(prefix, ""), section))
        read = sum(text.count(start) for start in _READ_LINES)
        if section + 1 != len(offer.sections) or read != sum(1 for what, _ in recipe if what):
            return None
        return cls(offer, transport, recipe)

    def apply(self, values: list[str]) -> Offer | None:
        """The offer ``values`` make of this shape, or None for the full parse to say
        what is wrong (a port it would refuse, or one that changes which lines work)."""
        offer = self.offer
        count = len(offer.sections)
        ufrags: list[str | None] = [None] * (count + 1)  # [-1]: session level
        pwds: list[str | None] = [None] * (count + 1)
        fingerprints: list[list[tuple[str, str]]] = [[] for _ in range(count + 1)]
        ssrcs: list[dict[int, None]] = [{} for _ in range(count + 1)]  # ordered sets
        ports = [section.port for section in offer.sections]
        for (what, where), value in zip(self.recipe, values):
            if what == "ufrag":
                ufrags[where] = value
            elif what == "pwd":
                pwds[where] = value
            elif what == "fingerprint":
                fingerprints[where].append(_fingerprint(value))
            elif what == "ssrc":
                ssrc = _int(value.partition(" ")[0])
                if ssrc is not None and ssrc < 2**32:
                    ssrcs[where][ssrc] = None
            elif what == "port":
                port = _int(value)
                if port is None or port > 65535 or (port == 0) != self.zero_ports[where]:
                    return None
                ports[where] = port
        sections: list[MediaSection] = []
        new = object.__new__
        for index, old in enumerate(offer.sections):
            made = new(MediaSection)
            # A frozen dataclass's fields, set as __init__ would, at a fraction of its cost.
            fields = made.__dict__
            fields.update(old.__dict__)
            ufrag, pwd = ufrags[index], pwds[index]
            fields["port"] = ports[index]
            fields["ice_ufrag"] = ufrag if ufrag is not None else ufrags[-1]
            fields["ice_pwd"] = pwd if pwd is not None else pwds[-1]
            fields["fingerprints"] = tuple(fingerprints[index] or fingerprints[-1])
            fields["ssrcs"] = tuple(ssrcs[index])
            fields["extensions"] = dict(old.extensions)
            sections.append(made)
        return Offer(tuple(sections), offer.bundle, *check_transport(sections[self.transport]))


_VALUE_KINDS = {
    "a=ice-ufrag:": "ufrag",
    "a=ice-pwd:": "pwd",
    "a=fingerprint:": "fingerprint",
    "a=ssrc:": "ssrc",
}
# The starts of the lines whose values the parse reads: each must have been cut
# (a count over the text; "a=ice-ufragx" lines count too: such a text is parsed).
_READ_LINES = ("\nm=", "\na=ice-ufrag", "\na=ice-pwd", "\na=fingerprint", "\na=ssrc:")
_SHAPES: dict[tuple[str, ...], _Shape] = {}
_SEEN: dict[int, None] = {}


def parse_offer(text: str) -> Offer:
    """Parse an SDP offer (RFC 8866) and check its transport can be used.

    The transport is that of the first usable audio m-line (in the BUNDLE
    group when there is one, RFC 8843): its ICE credentials must follow
    RFC 8839 section 5.4, its fingerprints RFC 8122 (sha-1 .. sha-512) and its
    ``a=setup`` must let the server be the DTLS server (RFC 8842).

    Raises :class:`sfu.errors.InvalidOffer` saying what is wrong.
    """
    if not isinstance(text, str):
        raise InvalidOffer(f"offer must be str (SDP text), got {type(text).__name__}")
    if not text.strip():
        raise InvalidOffer("offer is empty")
    if len(text) > MAX_OFFER_SIZE:
        raise InvalidOffer(f"offer is larger than {MAX_OFFER_SIZE // 1024} KiB")
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) > MAX_OFFER_SIZE:
        raise InvalidOffer(f"offer is larger than {MAX_OFFER_SIZE // 1024} KiB")
    sections = text.count("\nm=") + text.startswith("m=")
    if sections > MAX_OFFER_SECTIONS:
        raise InvalidOffer(
            f"offer has {sections} media sections; at most {MAX_OFFER_SECTIONS} are read"
        )
    garbage = _GARBAGE.search(text) if encoded.translate(None, _PLAIN_TEXT) else None
    if garbage:
        raise InvalidOffer(
            f"offer is not SDP text: control character {garbage.group()!r} "
            f"at offset {garbage.start()}"
        )
    if len(text) > _SHAPE_MAX_TEXT:
        return _parse_lines(text)[0]
    key, values = _shape_of(text)
    shape = _SHAPES.pop(key, None)
    if shape is not None:
        _SHAPES[key] = shape  # the most recently used now
        offer = shape.apply(values)
        if offer is not None:
            return offer
    offer, transport = _parse_lines(text)
    # Kept the second time it is seen: a client of its own (a shape seen
    # once) pays only for the cut, and does not push a crowd's shape out.
    seen = hash(key)
    if seen not in _SEEN:
        if len(_SEEN) >= _SEEN_SIZE:
            _drop_oldest(_SEEN)
        _SEEN[seen] = None
        return offer
    shape = _Shape.of(text, key, offer, transport)
    if shape is None:
        return offer
    if len(_SHAPES) >= _SHAPES_SIZE:
        _drop_oldest(_SHAPES)
    _SHAPES[key] = shape
    # The shape keeps this parse to itself: the caller gets one made from it.
    return shape.apply(values) or offer


def _drop_oldest(table: dict[Any, Any]) -> None:
    try:
        del table[next(iter(table))]
    except (KeyError, RuntimeError, StopIteration):
        pass  # a Server in another thread changed it first: it is smaller already


def _parse_lines(text: str) -> tuple[Offer, int]:
    """The parse itself, on a text :func:`parse_offer` has checked: the offer
    and the index of its transport m-line."""
    # Lines without their CR; blank lines are tolerated (and not counted).
    lines = [line for raw in text.split("\n") if (line := raw.rstrip("\r")).strip()]
    if lines[0].strip() != "v=0":
        raise InvalidOffer(f"offer does not start with v=0 (got {lines[0][:40]!r})")

    session = _SectionBuilder(-1, "session 9 - -")  # holds session-level values
    bundle: tuple[str, ...] | None = None
    ice_lite = False
    builders: list[_SectionBuilder] = []
    current: _SectionBuilder | None = None  # the m-line being read
    for number, line in enumerate(lines, 1):
        if "\r" in line:
            raise InvalidOffer(f"line {number} contains a bare CR (lines end with CRLF)")
        # x=value with x a lower-case letter (RFC 8866 5); checked by hand, it runs per line.
        if len(line) < 2 or line[1] != "=" or not "a" <= line[0] <= "z":
            raise InvalidOffer(f"line {number} is not of the form x=value: {line[:60]!r}")
        kind, value = line[0], line[2:]
        if kind == "a":
            if current is not None:
                _parse_attribute(value, current)
                continue
        elif kind == "m":
            current = _SectionBuilder(len(builders), value)
            builders.append(current)
            continue
        else:
            continue  # o=, s=, c=, t=, b= ...: the server has no use for them
        if value.startswith("group:"):
            fields = _fields(value[len("group:") :])
            # (The semantics token is ABNF, case-insensitive: RFC 5888 5, RFC 5234 2.3.)
            if fields and fields[0].upper() == "BUNDLE" and bundle is None:
                bundle = tuple(dict.fromkeys(fields[1:]))
        elif value == "ice-lite":
            ice_lite = True
        else:
            _parse_attribute(value, session)

    if not builders:
        raise InvalidOffer("offer has no m= line")
    if ice_lite:
        raise InvalidOffer("offer is ICE-lite but so is the server: the client must run full ICE")
    mids: set[str] = set()
    for builder in builders:
        if builder.mid is not None:
            if builder.mid in mids:
                raise InvalidOffer(f"offer has a duplicate a=mid:{excerpt(builder.mid)}")
            mids.add(builder.mid)
    for mid in bundle or ():
        if mid not in mids:
            raise InvalidOffer(f"a=group:BUNDLE names mid {excerpt(mid)} but no m-line has it")

    sections = tuple(_section(builder, session) for builder in builders)
    bundle = bundle or ()
    transport = transport_group(sections, bundle)[0]
    if transport.mid is not None and transport.mid in bundle:
        # RFC 8843: the group's transport is the offerer-tagged m-line's (its
        # first mid, of any kind), which alone carries the attributes in a
        # max-bundle or later offer. One that has none (a lax offerer that
        # wrote them on the audio lines only) leaves them to the first audio.
        # (Audio outside the group, one of video only, is its own transport.)
        tagged = next(section for section in sections if section.mid == bundle[0])
        if tagged.ice_ufrag is not None and tagged.port != 0 and not tagged.bundle_only:
            transport = tagged
    offer = Offer(sections, bundle, *check_transport(transport))
    return offer, next(i for i, section in enumerate(sections) if section is transport)


def _section(builder: _SectionBuilder, session: _SectionBuilder) -> MediaSection:
    """Resolve media-level values, falling back to the session level."""
    extensions = dict(session.extensions)
    extensions.update(builder.extensions)
    return MediaSection(
        index=builder.index,
        kind=builder.kind,
        port=builder.port,
        protocol=builder.protocol,
        mid=builder.mid,
        direction=builder.direction or session.direction or "sendrecv",
        opus=_opus(builder),
        extensions=extensions,
        ssrcs=tuple(builder.ssrcs),
        rtcp_mux=builder.rtcp_mux,
        ice_ufrag=builder.ice_ufrag if builder.ice_ufrag is not None else session.ice_ufrag,
        ice_pwd=builder.ice_pwd if builder.ice_pwd is not None else session.ice_pwd,
        fingerprints=tuple(builder.fingerprints or session.fingerprints),
        setup=builder.setup if builder.setup is not None else session.setup,
        formats=builder.formats,
        bundle_only=builder.bundle_only,
        first_rtpmap=_first_rtpmap(builder),
    )


def _first_rtpmap(builder: _SectionBuilder) -> str | None:
    """``name/clock rate[/channels]`` of the m-line's first format, if it has an rtpmap."""
    pt = _int(builder.formats[0]) if builder.formats else None
    encoding = builder.rtpmaps.get(pt) if pt is not None else None
    if encoding is None:
        return None
    name, clock_rate, channels = encoding
    return f"{name}/{clock_rate}" + (f"/{channels}" if channels != 1 else "")
