"""Typed model of a WebRTC session description (RFC 8866 + the JSEP attributes) and its writer.

`parse_sdp` (sfu.sdp.parser) builds these objects; `SessionDescription.to_text()` writes
them back with CRLF line endings such that ``parse_sdp(d.to_text()) == d``. Attributes the
model has no field for are kept verbatim in `attributes` (and other line types in `lines`),
so nothing an offer says is lost on the way through.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SENDRECV = "sendrecv"
SENDONLY = "sendonly"
RECVONLY = "recvonly"
INACTIVE = "inactive"
DIRECTIONS = (SENDRECV, SENDONLY, RECVONLY, INACTIVE)

SETUP_ACTPASS = "actpass"
SETUP_ACTIVE = "active"
SETUP_PASSIVE = "passive"
SETUP_HOLDCONN = "holdconn"
SETUP_VALUES = (SETUP_ACTPASS, SETUP_ACTIVE, SETUP_PASSIVE, SETUP_HOLDCONN)

RID_SEND = "send"
RID_RECV = "recv"

KIND_AUDIO = "audio"
KIND_VIDEO = "video"
KIND_APPLICATION = "application"

PROTO_WEBRTC = "UDP/TLS/RTP/SAVPF"

SEMANTICS_BUNDLE = "BUNDLE"
SEMANTICS_FID = "FID"
SEMANTICS_SIM = "SIM"

CRLF = "\r\n"


@dataclass
class Origin:
    """The o= line."""

    username: str = "-"
    session_id: int = 0
    session_version: int = 0
    net_type: str = "IN"
    addr_type: str = "IP4"
    address: str = "127.0.0.1"

    def to_value(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.net_type} {self.addr_type} {self.address}"
        )


@dataclass(frozen=True)
class Fingerprint:
    """a=fingerprint: hash function name and colon-separated hex value."""

    algorithm: str
    value: str


@dataclass(frozen=True)
class RtcpFb:
    """One a=rtcp-fb value: type ('nack', 'ccm', 'goog-remb', ...) and optional parameter."""

    type: str
    parameter: str | None = None

    def to_value(self) -> str:
        return self.type if self.parameter is None else f"{self.type} {self.parameter}"


FmtpParams = list[tuple[str, str | None]]


@dataclass
class Codec:
    """rtpmap + fmtp + rtcp-fb of one payload type. `name` is None when there is no rtpmap."""

    payload_type: int
    name: str | None = None
    clock_rate: int | None = None
    channels: int | None = None
    fmtp: FmtpParams | None = None
    rtcp_fb: list[RtcpFb] = field(default_factory=list)

    def fmtp_value(self, key: str) -> str | None:
        """Value of one fmtp parameter (key compared case-insensitively), or None."""
        if self.fmtp is None:
            return None
        lower = key.lower()
        for k, v in self.fmtp:
            if k.lower() == lower:
                return v
        return None


@dataclass
class Extmap:
    """a=extmap:<id>[/<direction>] <uri> [<attributes>]."""

    id: int
    uri: str
    direction: str | None = None
    attributes: str | None = None

    def to_value(self) -> str:
        head = str(self.id) if self.direction is None else f"{self.id}/{self.direction}"
        tail = "" if self.attributes is None else f" {self.attributes}"
        return f"{head} {self.uri}{tail}"


@dataclass
class Candidate:
    """a=candidate (RFC 8839). Extension pairs such as `generation 0` are kept in order."""

    foundation: str
    component: int
    transport: str
    priority: int
    address: str
    port: int
    type: str
    related_address: str | None = None
    related_port: int | None = None
    extensions: list[tuple[str, str]] = field(default_factory=list)

    def to_value(self) -> str:
        parts = [
            self.foundation,
            str(self.component),
            self.transport,
            str(self.priority),
            self.address,
            str(self.port),
            "typ",
            self.type,
        ]
        if self.related_address is not None:
            parts += ["raddr", self.related_address]
        if self.related_port is not None:
            parts += ["rport", str(self.related_port)]
        for k, v in self.extensions:
            parts += [k, v]
        return " ".join(parts)


@dataclass
class SsrcLine:
    """One a=ssrc:<ssrc> <name>[:<value>] line."""

    ssrc: int
    name: str
    value: str | None = None


@dataclass
class SsrcGroup:
    """a=ssrc-group:<semantics> <ssrc>... (FID pairs media/RTX, SIM lists simulcast layers)."""

    semantics: str
    ssrcs: list[int]


@dataclass
class Group:
    """a=group:<semantics> <mid>..."""

    semantics: str
    mids: list[str]


@dataclass
class MsidSemantic:
    """a=msid-semantic: WMS [ids]."""

    semantic: str
    ids: list[str] = field(default_factory=list)


@dataclass
class Msid:
    """a=msid:<stream id> [<track id>]."""

    stream_id: str
    track_id: str | None = None

    def to_value(self) -> str:
        return self.stream_id if self.track_id is None else f"{self.stream_id} {self.track_id}"


@dataclass
class Rid:
    """a=rid:<id> <send|recv> [<restrictions>] (RFC 8851); restrictions kept verbatim."""

    id: str
    direction: str
    params: str | None = None


@dataclass
class SimulcastRid:
    """One rid in a simulcast stream list; `paused` is the '~' prefix."""

    rid: str
    paused: bool = False


@dataclass
class Simulcast:
    """a=simulcast (RFC 8853): each list entry is one stream, given as its alternative rids."""

    send: list[list[SimulcastRid]] = field(default_factory=list)
    recv: list[list[SimulcastRid]] = field(default_factory=list)

    def to_value(self) -> str:
        parts: list[str] = []
        for word, streams in ((RID_SEND, self.send), (RID_RECV, self.recv)):
            if streams:
                text = ";".join(
                    ",".join(("~" if r.paused else "") + r.rid for r in alternatives)
                    for alternatives in streams
                )
                parts.append(f"{word} {text}")
        return " ".join(parts)


@dataclass
class Attribute:
    """An a= line the model has no field for: name, and value (None when there is no ':')."""

    name: str
    value: str | None = None

    def to_line(self) -> str:
        return f"a={self.name}" if self.value is None else f"a={self.name}:{self.value}"


@dataclass
class MediaSection:
    """One m= section and everything below it."""

    kind: str
    port: int
    protocol: str
    formats: list[str]
    connection: str | None = None
    bandwidths: list[str] = field(default_factory=list)
    rtcp: str | None = None
    mid: str | None = None
    direction: str | None = None
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    ice_options: str | None = None
    fingerprints: list[Fingerprint] = field(default_factory=list)
    setup: str | None = None
    rtcp_mux: bool = False
    rtcp_rsize: bool = False
    bundle_only: bool = False
    extmap_allow_mixed: bool = False
    candidates: list[Candidate] = field(default_factory=list)
    end_of_candidates: bool = False
    codecs: list[Codec] = field(default_factory=list)
    rtcp_fb_all: list[RtcpFb] = field(default_factory=list)
    extmaps: list[Extmap] = field(default_factory=list)
    msids: list[Msid] = field(default_factory=list)
    ssrcs: list[SsrcLine] = field(default_factory=list)
    ssrc_groups: list[SsrcGroup] = field(default_factory=list)
    rids: list[Rid] = field(default_factory=list)
    simulcast: Simulcast | None = None
    attributes: list[Attribute] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        """Not rejected: a non-zero port, or a bundle-only section (port 0 by design)."""
        return self.port != 0 or self.bundle_only

    @property
    def payload_types(self) -> list[int]:
        """The m= line formats that are RTP payload types, in order."""
        return [int(f) for f in self.formats if f.isascii() and f.isdigit() and len(f) <= 3]

    def codec(self, payload_type: int) -> Codec | None:
        for c in self.codecs:
            if c.payload_type == payload_type:
                return c
        return None

    def feedback(self, codec: Codec) -> list[RtcpFb]:
        """The codec's rtcp-fb plus the section's `a=rtcp-fb:*` ones, without repeats."""
        out = list(codec.rtcp_fb)
        for fb in self.rtcp_fb_all:
            if fb not in out:
                out.append(fb)
        return out

    def ssrc_value(self, ssrc: int, name: str) -> str | None:
        for line in self.ssrcs:
            if line.ssrc == ssrc and line.name == name:
                return line.value
        return None

    def ssrc_order(self) -> list[int]:
        """Distinct SSRCs in order of first mention (a=ssrc lines, then groups)."""
        seen: list[int] = []
        for line in self.ssrcs:
            if line.ssrc not in seen:
                seen.append(line.ssrc)
        for group in self.ssrc_groups:
            for s in group.ssrcs:
                if s not in seen:
                    seen.append(s)
        return seen

    def to_lines(self) -> list[str]:
        out = [f"m={self.kind} {self.port} {self.protocol}" + "".join(" " + f for f in self.formats)]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"b={b}" for b in self.bandwidths]
        out += [f"{t}={v}" for t, v in self.lines]
        if self.rtcp is not None:
            out.append(f"a=rtcp:{self.rtcp}")
        out += [f"a=candidate:{c.to_value()}" for c in self.candidates]
        if self.end_of_candidates:
            out.append("a=end-of-candidates")
        if self.ice_ufrag is not None:
            out.append(f"a=ice-ufrag:{self.ice_ufrag}")
        if self.ice_pwd is not None:
            out.append(f"a=ice-pwd:{self.ice_pwd}")
        if self.ice_options is not None:
            out.append(f"a=ice-options:{self.ice_options}")
        out += [f"a=fingerprint:{f.algorithm} {f.value}" for f in self.fingerprints]
        if self.setup is not None:
            out.append(f"a=setup:{self.setup}")
        if self.mid is not None:
            out.append(f"a=mid:{self.mid}")
        out += [f"a=extmap:{e.to_value()}" for e in self.extmaps]
        if self.extmap_allow_mixed:
            out.append("a=extmap-allow-mixed")
        if self.direction is not None:
            out.append(f"a={self.direction}")
        out += [f"a=msid:{m.to_value()}" for m in self.msids]
        if self.rtcp_mux:
            out.append("a=rtcp-mux")
        if self.rtcp_rsize:
            out.append("a=rtcp-rsize")
        if self.bundle_only:
            out.append("a=bundle-only")
        out += [a.to_line() for a in self.attributes]
        for c in self.codecs:
            pt = c.payload_type
            if c.name is not None:
                rtpmap = f"a=rtpmap:{pt} {c.name}/{c.clock_rate}"
                if c.channels is not None:
                    rtpmap += f"/{c.channels}"
                out.append(rtpmap)
            out += [f"a=rtcp-fb:{pt} {fb.to_value()}" for fb in c.rtcp_fb]
            if c.fmtp is not None:
                out.append(f"a=fmtp:{pt} {format_fmtp(c.fmtp)}" if c.fmtp else f"a=fmtp:{pt}")
        out += [f"a=rtcp-fb:* {fb.to_value()}" for fb in self.rtcp_fb_all]
        out += [f"a=ssrc-group:{g.semantics}" + "".join(f" {s}" for s in g.ssrcs) for g in self.ssrc_groups]
        for s in self.ssrcs:
            out.append(f"a=ssrc:{s.ssrc} {s.name}" if s.value is None else f"a=ssrc:{s.ssrc} {s.name}:{s.value}")
        for r in self.rids:
            out.append(f"a=rid:{r.id} {r.direction}" + ("" if r.params is None else f" {r.params}"))
        if self.simulcast is not None:
            out.append(f"a=simulcast:{self.simulcast.to_value()}")
        return out


@dataclass
class SessionDescription:
    """A whole SDP: session-level fields and the m= sections in order."""

    version: int = 0
    origin: Origin | None = None
    session_name: str = "-"
    timing: str | None = "0 0"
    connection: str | None = None
    bandwidths: list[str] = field(default_factory=list)
    ice_lite: bool = False
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    ice_options: str | None = None
    fingerprints: list[Fingerprint] = field(default_factory=list)
    setup: str | None = None
    direction: str | None = None
    groups: list[Group] = field(default_factory=list)
    extmap_allow_mixed: bool = False
    msid_semantic: MsidSemantic | None = None
    extmaps: list[Extmap] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)
    media: list[MediaSection] = field(default_factory=list)

    def bundle_mids(self) -> list[str]:
        """Mids of the first BUNDLE group, [] when there is none."""
        for g in self.groups:
            if g.semantics.upper() == SEMANTICS_BUNDLE:
                return list(g.mids)
        return []

    def has_bundle_group(self) -> bool:
        return any(g.semantics.upper() == SEMANTICS_BUNDLE for g in self.groups)

    def section(self, mid: str) -> MediaSection | None:
        for m in self.media:
            if m.mid == mid:
                return m
        return None

    def to_text(self) -> str:
        """SDP text with CRLF line endings."""
        out = [f"v={self.version}"]
        if self.origin is not None:
            out.append(f"o={self.origin.to_value()}")
        out.append(f"s={self.session_name or ' '}")
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"b={b}" for b in self.bandwidths]
        if self.timing is not None:
            out.append(f"t={self.timing}")
        out += [f"{t}={v}" for t, v in self.lines]
        if self.ice_lite:
            out.append("a=ice-lite")
        if self.ice_ufrag is not None:
            out.append(f"a=ice-ufrag:{self.ice_ufrag}")
        if self.ice_pwd is not None:
            out.append(f"a=ice-pwd:{self.ice_pwd}")
        if self.ice_options is not None:
            out.append(f"a=ice-options:{self.ice_options}")
        out += [f"a=fingerprint:{f.algorithm} {f.value}" for f in self.fingerprints]
        if self.setup is not None:
            out.append(f"a=setup:{self.setup}")
        if self.direction is not None:
            out.append(f"a={self.direction}")
        out += [f"a=group:{g.semantics}" + "".join(f" {m}" for m in g.mids) for g in self.groups]
        if self.extmap_allow_mixed:
            out.append("a=extmap-allow-mixed")
        if self.msid_semantic is not None:
            ms = self.msid_semantic
            out.append(f"a=msid-semantic: {ms.semantic}" + "".join(f" {i}" for i in ms.ids))
        out += [f"a=extmap:{e.to_value()}" for e in self.extmaps]
        out += [a.to_line() for a in self.attributes]
        for m in self.media:
            out += m.to_lines()
        return CRLF.join(out) + CRLF


def format_fmtp(params: FmtpParams) -> str:
    return ";".join(k if v is None else f"{k}={v}" for k, v in params)
