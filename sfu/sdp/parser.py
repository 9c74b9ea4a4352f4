"""Tolerant SDP parser: CRLF or LF, blank lines, unknown lines and attributes are accepted
(unknown ones are kept verbatim); a malformed line the model understands raises
`SdpError(SDP_MALFORMED, ...)` naming the line number and text.
"""

from __future__ import annotations

from collections.abc import Callable

from sfu.sdp.errors import SDP_MALFORMED, SDP_TOO_LARGE, SdpError
from sfu.sdp.model import (
    DIRECTIONS,
    RID_RECV,
    RID_SEND,
    SETUP_VALUES,
    Attribute,
    Candidate,
    Codec,
    Extmap,
    Fingerprint,
    FmtpParams,
    Group,
    MediaSection,
    Msid,
    MsidSemantic,
    Origin,
    Rid,
    RtcpFb,
    SessionDescription,
    Simulcast,
    SimulcastRid,
    SsrcGroup,
    SsrcLine,
)

MAX_SDP_SIZE = 512 * 1024
MAX_LINE_SHOWN = 120
MAX_PAYLOAD_TYPE = 127
MAX_EXTMAP_ID = 255
MAX_PORT = 65535
MAX_U32 = 0xFFFFFFFF


class _Malformed(Exception):
    """Internal: a reason; the line loop adds line number and text."""


def _int(text: str, low: int, high: int, what: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise _Malformed(f"{what} is not a number")
    value = int(text)
    if value < low or value > high:
        raise _Malformed(f"{what} {value} is outside {low}..{high}")
    return value


def _split2(value: str, what: str) -> tuple[str, str]:
    parts = value.split(None, 1)
    if len(parts) != 2:
        raise _Malformed(f"{what} needs two fields")
    return parts[0], parts[1].strip()


def _need(value: str | None, what: str) -> str:
    if value is None:
        raise _Malformed(f"a={what} needs a value")
    stripped = value.strip()
    return stripped


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise _Malformed("o= needs 6 fields")
    return Origin(
        username=parts[0],
        session_id=_int(parts[1], 0, (1 << 64) - 1, "session id"),
        session_version=_int(parts[2], 0, (1 << 64) - 1, "session version"),
        net_type=parts[3],
        addr_type=parts[4],
        address=parts[5],
    )


def _parse_fingerprint(value: str) -> Fingerprint:
    algorithm, fp = _split2(value, "a=fingerprint")
    return Fingerprint(algorithm=algorithm, value=fp)


def _parse_setup(value: str) -> str:
    if value not in SETUP_VALUES:
        raise _Malformed(f"unknown a=setup value {value!r}")
    return value


def _parse_group(value: str) -> Group:
    parts = value.split()
    if not parts:
        raise _Malformed("a=group needs semantics")
    return Group(semantics=parts[0], mids=parts[1:])


def _parse_extmap(value: str) -> Extmap:
    parts = value.split(None, 2)
    if len(parts) < 2:
        raise _Malformed("a=extmap needs an id and a URI")
    ident, _, direction = parts[0].partition("/")
    if "/" in parts[0] and direction not in DIRECTIONS:
        raise _Malformed(f"unknown a=extmap direction {direction!r}")
    return Extmap(
        id=_int(ident, 1, MAX_EXTMAP_ID, "extmap id"),
        uri=parts[1],
        direction=direction if "/" in parts[0] else None,
        attributes=parts[2] if len(parts) == 3 else None,
    )


def _parse_candidate(value: str) -> Candidate:
    parts = value.split()
    if len(parts) < 8 or parts[6] != "typ":
        raise _Malformed("a=candidate needs '<foundation> <component> <transport> <priority> <address> <port> typ <type>'")
    if (len(parts) - 8) % 2:
        raise _Malformed("a=candidate extension without a value")
    cand = Candidate(
        foundation=parts[0],
        component=_int(parts[1], 1, 256, "candidate component"),
        transport=parts[2],
        priority=_int(parts[3], 0, MAX_U32, "candidate priority"),
        address=parts[4],
        port=_int(parts[5], 0, MAX_PORT, "candidate port"),
        type=parts[7],
    )
    for i in range(8, len(parts), 2):
        key, val = parts[i], parts[i + 1]
        if key == "raddr":
            cand.related_address = val
        elif key == "rport":
            cand.related_port = _int(val, 0, MAX_PORT, "candidate rport")
        else:
            cand.extensions.append((key, val))
    return cand


def _parse_fmtp_params(text: str) -> FmtpParams:
    params: FmtpParams = []
    for piece in text.split(";"):
        piece = piece.strip()
        if not piece:
            continue
        key, eq, val = piece.partition("=")
        params.append((key.strip(), val.strip() if eq else None))
    return params


def _parse_simulcast(value: str) -> Simulcast:
    parts = value.split()
    if not parts or len(parts) % 2:
        raise _Malformed("a=simulcast needs '<send|recv> <rid list>' pairs")
    sim = Simulcast()
    seen: set[str] = set()
    for i in range(0, len(parts), 2):
        word, text = parts[i], parts[i + 1]
        if word not in (RID_SEND, RID_RECV) or word in seen:
            raise _Malformed(f"a=simulcast direction {word!r} unknown or repeated")
        seen.add(word)
        if text.startswith("rid="):  # the pre-RFC 8853 draft syntax
            text = text[4:]
        streams: list[list[SimulcastRid]] = []
        for stream in text.split(";"):
            alternatives: list[SimulcastRid] = []
            for rid in stream.split(","):
                paused = rid.startswith("~")
                name = rid[1:] if paused else rid
                if not name or name.startswith("~"):
                    raise _Malformed("a=simulcast has an empty rid")
                alternatives.append(SimulcastRid(rid=name, paused=paused))
            streams.append(alternatives)
        if word == RID_SEND:
            sim.send = streams
        else:
            sim.recv = streams
    return sim


def _codec_for(media: MediaSection, pt_text: str) -> Codec:
    pt = _int(pt_text, 0, MAX_PAYLOAD_TYPE, "payload type")
    codec = media.codec(pt)
    if codec is None:
        codec = Codec(payload_type=pt)
        media.codecs.append(codec)
    return codec


def _set_once(obj: object, attr: str, value: object, what: str) -> None:
    if getattr(obj, attr) is not None:
        raise _Malformed(f"duplicate a={what}")
    setattr(obj, attr, value)


def _session_attribute(s: SessionDescription, name: str, value: str | None) -> None:
    if name == "ice-lite":
        s.ice_lite = True
    elif name == "ice-ufrag":
        _set_once(s, "ice_ufrag", _need(value, name), name)
    elif name == "ice-pwd":
        _set_once(s, "ice_pwd", _need(value, name), name)
    elif name == "ice-options":
        _set_once(s, "ice_options", _need(value, name), name)
    elif name == "fingerprint":
        s.fingerprints.append(_parse_fingerprint(_need(value, name)))
    elif name == "setup":
        _set_once(s, "setup", _parse_setup(_need(value, name)), name)
    elif name in DIRECTIONS:
        _set_once(s, "direction", name, "<direction>")
    elif name == "group":
        s.groups.append(_parse_group(_need(value, name)))
    elif name == "extmap-allow-mixed":
        s.extmap_allow_mixed = True
    elif name == "msid-semantic":
        parts = _need(value, name).split()
        if not parts:
            raise _Malformed("a=msid-semantic needs a semantic")
        if s.msid_semantic is not None:
            raise _Malformed("duplicate a=msid-semantic")
        s.msid_semantic = MsidSemantic(semantic=parts[0], ids=parts[1:])
    elif name == "extmap":
        s.extmaps.append(_parse_extmap(_need(value, name)))
    else:
        s.attributes.append(Attribute(name=name, value=value))


def _media_attribute(m: MediaSection, name: str, value: str | None) -> None:
    handler = _MEDIA_HANDLERS.get(name)
    if handler is not None:
        handler(m, _need(value, name))
    elif name in _MEDIA_FLAGS:
        setattr(m, _MEDIA_FLAGS[name], True)
    elif name in DIRECTIONS:
        _set_once(m, "direction", name, "<direction>")
    else:
        m.attributes.append(Attribute(name=name, value=value))


def _media_rtpmap(m: MediaSection, value: str) -> None:
    pt_text, encoding = _split2(value, "a=rtpmap")
    codec = _codec_for(m, pt_text)
    if codec.name is not None:
        raise _Malformed(f"duplicate a=rtpmap for payload type {codec.payload_type}")
    bits = encoding.split("/")
    if len(bits) not in (2, 3) or not bits[0]:
        raise _Malformed("a=rtpmap needs '<name>/<clock rate>[/<channels>]'")
    codec.name = bits[0]
    codec.clock_rate = _int(bits[1], 1, MAX_U32, "clock rate")
    codec.channels = _int(bits[2], 1, 255, "channels") if len(bits) == 3 else None


def _media_fmtp(m: MediaSection, value: str) -> None:
    parts = value.split(None, 1)
    codec = _codec_for(m, parts[0] if parts else "")
    if codec.fmtp is not None:
        raise _Malformed(f"duplicate a=fmtp for payload type {codec.payload_type}")
    codec.fmtp = _parse_fmtp_params(parts[1] if len(parts) == 2 else "")


def _media_rtcp_fb(m: MediaSection, value: str) -> None:
    pt_text, rest = _split2(value, "a=rtcp-fb")
    fb_parts = rest.split(None, 1)
    fb = RtcpFb(type=fb_parts[0], parameter=fb_parts[1] if len(fb_parts) == 2 else None)
    if pt_text == "*":
        m.rtcp_fb_all.append(fb)
    else:
        _codec_for(m, pt_text).rtcp_fb.append(fb)


def _media_ssrc(m: MediaSection, value: str) -> None:
    ssrc_text, rest = _split2(value, "a=ssrc")
    name, colon, val = rest.partition(":")
    m.ssrcs.append(SsrcLine(ssrc=_int(ssrc_text, 0, MAX_U32, "ssrc"), name=name, value=val if colon else None))


def _media_ssrc_group(m: MediaSection, value: str) -> None:
    parts = value.split()
    if not parts:
        raise _Malformed("a=ssrc-group needs semantics")
    m.ssrc_groups.append(SsrcGroup(semantics=parts[0], ssrcs=[_int(p, 0, MAX_U32, "ssrc") for p in parts[1:]]))


def _media_rid(m: MediaSection, value: str) -> None:
    parts = value.split(None, 2)
    if len(parts) < 2 or parts[1] not in (RID_SEND, RID_RECV):
        raise _Malformed("a=rid needs '<id> <send|recv> [<restrictions>]'")
    m.rids.append(Rid(id=parts[0], direction=parts[1], params=parts[2] if len(parts) == 3 else None))


def _media_msid(m: MediaSection, value: str) -> None:
    parts = value.split(None, 1)
    if not parts:
        raise _Malformed("a=msid needs a stream id")
    m.msids.append(Msid(stream_id=parts[0], track_id=parts[1] if len(parts) == 2 else None))


def _media_mid(m: MediaSection, value: str) -> None:
    if not value:
        raise _Malformed("a=mid is empty")
    _set_once(m, "mid", value, "mid")


def _media_simulcast(m: MediaSection, value: str) -> None:
    _set_once(m, "simulcast", _parse_simulcast(value), "simulcast")


def _scalar(attr: str, what: str) -> Callable[[MediaSection, str], None]:
    def handler(m: MediaSection, value: str) -> None:
        _set_once(m, attr, value, what)

    return handler


_MEDIA_HANDLERS: dict[str, Callable[[MediaSection, str], None]] = {
    "rtcp": _scalar("rtcp", "rtcp"),
    "candidate": lambda m, v: m.candidates.append(_parse_candidate(v)),
    "ice-ufrag": _scalar("ice_ufrag", "ice-ufrag"),
    "ice-pwd": _scalar("ice_pwd", "ice-pwd"),
    "ice-options": _scalar("ice_options", "ice-options"),
    "fingerprint": lambda m, v: m.fingerprints.append(_parse_fingerprint(v)),
    "setup": lambda m, v: _set_once(m, "setup", _parse_setup(v), "setup"),
    "mid": _media_mid,
    "extmap": lambda m, v: m.extmaps.append(_parse_extmap(v)),
    "msid": _media_msid,
    "rtpmap": _media_rtpmap,
    "fmtp": _media_fmtp,
    "rtcp-fb": _media_rtcp_fb,
    "ssrc": _media_ssrc,
    "ssrc-group": _media_ssrc_group,
    "rid": _media_rid,
    "simulcast": _media_simulcast,
}

_MEDIA_FLAGS = {
    "rtcp-mux": "rtcp_mux",
    "rtcp-rsize": "rtcp_rsize",
    "bundle-only": "bundle_only",
    "end-of-candidates": "end_of_candidates",
    "extmap-allow-mixed": "extmap_allow_mixed",
}


def _parse_m_line(value: str) -> MediaSection:
    parts = value.split()
    if len(parts) < 3:
        raise _Malformed("m= needs '<media> <port> <proto> <fmt>...'")
    return MediaSection(
        kind=parts[0],
        port=_int(parts[1], 0, MAX_PORT, "port"),
        protocol=parts[2],
        formats=parts[3:],
    )


def _session_line(s: SessionDescription, kind: str, value: str, seen: set[str]) -> None:
    if kind == "o":
        if "o" in seen:
            raise _Malformed("duplicate o= line")
        s.origin = _parse_origin(value)
    elif kind == "s" and "s" not in seen:
        s.session_name = value
    elif kind == "t" and "t" not in seen:
        s.timing = value
    elif kind == "c" and "c" not in seen:
        s.connection = value
    elif kind == "b":
        s.bandwidths.append(value)
    else:
        s.lines.append((kind, value))
    seen.add(kind)


def parse_sdp(text: str) -> SessionDescription:
    """Parse SDP text into a SessionDescription; raise SdpError on malformed input."""
    if not isinstance(text, str):
        raise SdpError(SDP_MALFORMED, "SDP must be text")
    if len(text) > MAX_SDP_SIZE:
        raise SdpError(SDP_TOO_LARGE, f"SDP is {len(text)} characters; the limit is {MAX_SDP_SIZE}")
    session = SessionDescription(timing=None, session_name="")
    media: MediaSection | None = None
    seen: set[str] = set()
    media_seen: set[str] = set()
    mids: set[str] = set()
    first = True
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip()
        if not line:
            continue
        try:
            if len(line) < 2 or line[1] != "=" or not ("a" <= line[0].lower() <= "z") or not line[0].isascii():
                raise _Malformed("expected '<type>=<value>'")
            kind, value = line[0], line[2:]
            if first:
                if kind != "v":
                    raise _Malformed("the first line must be v=")
                session.version = _int(value.strip(), 0, 255, "version")
                first = False
                continue
            if kind == "m":
                if media is not None and media.mid is not None:
                    mids.add(media.mid)
                media = _parse_m_line(value)
                session.media.append(media)
                media_seen = set()
            elif kind == "a":
                name, colon, attr_value = value.partition(":")
                if media is None:
                    _session_attribute(session, name, attr_value if colon else None)
                else:
                    _media_attribute(media, name, attr_value if colon else None)
                    if name == "mid" and media.mid in mids:
                        raise _Malformed(f"mid {media.mid!r} is used by two m-sections")
            elif media is None:
                _session_line(session, kind, value, seen)
            elif kind == "c" and "c" not in media_seen:
                media.connection = value
                media_seen.add("c")
            elif kind == "b":
                media.bandwidths.append(value)
            else:
                media.lines.append((kind, value))
        except _Malformed as exc:
            shown = line if len(line) <= MAX_LINE_SHOWN else line[:MAX_LINE_SHOWN] + "..."
            raise SdpError(SDP_MALFORMED, f"line {number}: {exc}: {shown!r}", line=number) from None
    if first:
        raise SdpError(SDP_MALFORMED, "empty SDP (no v= line)")
    return session
