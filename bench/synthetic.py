"""Synthetic WebRTC participants: real ICE, DTLS-SRTP and RTP/RTCP on the wire, no codecs.

A `SyntheticParticipant` has the two peer connections of a telesfu participant, built from
the SFU's own pieces rather than a full WebRTC stack, so one process can drive hundreds:

- `PeerConnection`: one UDP socket, a controlling ICE agent (Binding requests with
  USE-CANDIDATE, consent checks every few seconds), a DTLS client (`DtlsEndpoint`) and an
  `SrtpContext`. The SFU is ICE-lite and DTLS server on both connections.
- `Publisher`: offers sendonly Opus and VP8 (+RTX), then sends the pre-encoded media of
  `bench.media_source` when the process's one `Pacer` says so, with abs-send-time and
  audio-level header extensions. It answers NACK from a 1024-packet history (as RTX) and
  PLI/FIR with the next keyframe, and sends Sender Reports.
- `Subscriber`: answers the SFU's subscribe offers (recvonly, echoing codecs and extension
  ids) and receives without decoding: per incoming SSRC it keeps RFC 3550 receive stats
  (`sfu.rtpstats.ReceiveStats`), NACKs gaps (`sfu.nack.NackGenerator`), asks for a keyframe
  when video starts without one (`sfu.keyframe.KeyframeRequester`), counts RTX repairs, and
  records each packet's one-way delay from the publisher's abs-send-time (same host, same
  clock) into a histogram of 0.1 ms buckets.

`LoadGenerator` holds what a process shares: the DTLS certificate, the pacer, one feedback
ticker (NACK/PLI, 20 ms) and one report ticker (RR, SR, ICE consent, 1 s), the counters
and the delay histograms, and routes the SFU's subscribe offers to participants.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from bench.media_source import AUDIO_TS_STEP, VIDEO_TS_STEP, EncodedMedia, Pacer
from sfu.keyframe import KeyframeRequester
from sfu.nack import NackGenerator
from sfu.rtp.ext import URI_ABS_SEND_TIME, URI_AUDIO_LEVEL, URI_MID
from sfu.rtp.ntp import ntp_from_unix
from sfu.rtp.packet import find_extension
from sfu.rtp.rtcp.compound import parse_compound
from sfu.rtp.rtcp.fir import Fir
from sfu.rtp.rtcp.nack import Nack
from sfu.rtp.rtcp.pli import Pli
from sfu.rtp.rtcp.rr import ReceiverReport
from sfu.rtp.rtcp.sdes import SourceDescription
from sfu.rtp.rtcp.sr import SenderReport
from sfu.rtp.vp8 import Vp8Descriptor
from sfu.rtpstats import ReceiveStats
from sfu.sdp import (
    Candidate,
    Codec,
    Extmap,
    Fingerprint,
    Group,
    MediaSection,
    Msid,
    MsidSemantic,
    Origin,
    RtcpFb,
    SessionDescription,
    SsrcGroup,
    SsrcLine,
    parse_sdp,
)
from sfu.transport import stun
from sfu.transport.certificate import DtlsCertificate
from sfu.transport.dtls import DtlsContext, DtlsEndpoint, DtlsRole, DtlsState
from sfu.transport.ice_lite import PWD_LENGTH, UFRAG_LENGTH, random_ice_string
from sfu.transport.srtp import SrtpContext, SrtpError

log = logging.getLogger("telesfu.bench.synthetic")

# Payload types and header extension ids of our publish offers (Chrome's numbering).
OPUS_PT = 111
VP8_PT = 96
RTX_PT = 97
EXT_AUDIO_LEVEL = 1
EXT_ABS_SEND_TIME = 2
EXT_MID = 4
AUDIO_LEVEL = 30  # -dBov of the tone, with the voice activity bit set

ABS_SEND_TIME_UNITS = 1 << 18  # 6.18 fixed point seconds
ABS_MASK = 0xFFFFFF
ABS_HALF = 0x800000
DELAY_BUCKET_SECONDS = 0.0001
DELAY_BUCKETS = 20000  # 0..2 s in 0.1 ms buckets; one more bucket holds anything later
# (delay in 2^-18 s units * 625) >> 14 == delay in 0.1 ms buckets (10000 / 2^18 == 625 / 2^14)
_BUCKET_MUL = 625
_BUCKET_SHIFT = 14

HISTORY = 1024  # video packets a publisher keeps for NACK (a power of two)
_HMASK = HISTORY - 1
CHECK_INTERVAL = 0.05
CONSENT_INTERVAL = 5.0
FEEDBACK_INTERVAL = 0.02
REPORT_INTERVAL = 1.0
CONNECT_TIMEOUT = 10.0
SOCKET_BUFFER = 1 << 20
MAX_NACK_SEQS = 64  # per NACK packet
HOST_PRIORITY = (126 << 24) | (65535 << 8) | 255

_RTP_FIXED = struct.Struct("!BBHII")
_SEQ_TS = struct.Struct("!HI")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
# V=2 X=1 | M PT | seq | ts | ssrc | 0xBEDE | words | abs-send-time element | VP8 descriptor (X, I, M+PictureID)
_VIDEO_HEADER = struct.Struct("!BBHIIHHIBBH")
# ... | 0xBEDE | 2 words | abs-send-time element | audio-level element + 2 bytes of padding
_AUDIO_HEADER = struct.Struct("!BBHIIHHII")
# RTX: ... | 0xBEDE | 1 word | abs-send-time element | OSN
_RTX_HEADER = struct.Struct("!BBHIIHHIH")
_VIDEO_HEADER_SIZE = 20  # RTP header with its extension block, before the VP8 descriptor
_B0_EXT = 0x90
_EXT_PROFILE = 0xBEDE
_ABS_ELEMENT = ((EXT_ABS_SEND_TIME << 4) | 2) << 24  # id, length-1 = 2, then the 24-bit value
_LEVEL_ELEMENT = ((EXT_AUDIO_LEVEL << 4) << 24) | ((0x80 | AUDIO_LEVEL) << 16)
_DESC_START = 0x90  # X=1, S=1, PID=0
_DESC_MIDDLE = 0x80
_DESC_I = 0x80

_monotonic = time.monotonic


class ConnectError(Exception):
    """ICE or DTLS did not complete."""


class Signaling(Protocol):
    """The commands a participant needs; `control.media.MediaPlane` has them."""

    async def add_participant(self, room_id: str, participant_id: str, can_publish: bool = True,
                              can_subscribe: bool = True) -> None: ...

    async def publish_offer(self, room_id: str, participant_id: str, sdp: str) -> str: ...

    async def subscribe_answer(self, room_id: str, participant_id: str, sdp: str) -> None: ...


class GeneratorCounters:
    """Totals of one load-generating process, plain ints bumped on the packet path."""

    __slots__ = (
        "rtp_sent", "rtp_sent_bytes", "audio_sent", "video_sent", "rtx_sent", "keyframes_sent",
        "nacks_received", "nack_seqs_received", "nack_misses", "plis_received", "sr_sent",
        "rtp_received", "rtp_received_bytes", "audio_received", "video_received", "rtx_received",
        "recovered", "nacks_sent", "nack_seqs_sent", "plis_sent", "rr_sent", "rtcp_received",
        "unknown_ssrc", "srtp_drops", "srtp_before_connected", "no_abs_send_time", "negative_delays",
        "frames_received", "keyframes_received", "consent_checks", "consent_responses",
        "subscribe_offers", "connect_failures", "send_errors", "loss_dropped_out", "loss_dropped_in",
    )

    def __init__(self) -> None:
        self.rtp_sent = 0
        self.rtp_sent_bytes = 0
        self.audio_sent = 0
        self.video_sent = 0
        self.rtx_sent = 0
        self.keyframes_sent = 0
        self.nacks_received = 0
        self.nack_seqs_received = 0
        self.nack_misses = 0
        self.plis_received = 0
        self.sr_sent = 0
        self.rtp_received = 0
        self.rtp_received_bytes = 0
        self.audio_received = 0
        self.video_received = 0
        self.rtx_received = 0
        self.recovered = 0
        self.nacks_sent = 0
        self.nack_seqs_sent = 0
        self.plis_sent = 0
        self.rr_sent = 0
        self.rtcp_received = 0
        self.unknown_ssrc = 0
        self.srtp_drops = 0
        self.srtp_before_connected = 0
        self.no_abs_send_time = 0
        self.negative_delays = 0
        self.frames_received = 0
        self.keyframes_received = 0
        self.consent_checks = 0
        self.consent_responses = 0
        self.subscribe_offers = 0
        self.connect_failures = 0
        self.send_errors = 0
        self.loss_dropped_out = 0
        self.loss_dropped_in = 0

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def new_histogram() -> list[int]:
    """Delay counts per 0.1 ms bucket, 0..2 s, plus one overflow bucket."""
    return [0] * (DELAY_BUCKETS + 1)


def delay_bucket(delay_units: int) -> int:
    """Bucket of a delay in abs-send-time units (2^-18 s)."""
    i = (delay_units * _BUCKET_MUL) >> _BUCKET_SHIFT
    return i if i < DELAY_BUCKETS else DELAY_BUCKETS


def histogram_summary(counts: Sequence[int]) -> dict[str, float]:
    """count, p50/p95/p99/max/mean in ms of a delay histogram (bucket midpoints; the
    overflow bucket counts as 2 s)."""
    import numpy as np

    arr = np.asarray(counts, dtype=np.int64)
    total = int(arr.sum())
    if total == 0:
        return {"count": 0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "mean_ms": 0.0}
    mids = (np.arange(len(arr)) + 0.5) * DELAY_BUCKET_SECONDS * 1e3
    mids[-1] = DELAY_BUCKETS * DELAY_BUCKET_SECONDS * 1e3
    cum = np.cumsum(arr)

    def q(p: float) -> float:
        rank = max(1, int(np.ceil(p * total)))
        return float(mids[int(np.searchsorted(cum, rank))])

    last = int(np.nonzero(arr)[0][-1])
    return {"count": total, "p50_ms": round(q(0.50), 3), "p95_ms": round(q(0.95), 3), "p99_ms": round(q(0.99), 3),
            "max_ms": round(float(mids[last]), 3), "mean_ms": round(float((arr * mids).sum() / total), 3)}


# -- SDP ------------------------------------------------------------------------------------------

PROTO = "UDP/TLS/RTP/SAVPF"
_VIDEO_FEEDBACK = [RtcpFb("goog-remb"), RtcpFb("ccm", "fir"), RtcpFb("nack"), RtcpFb("nack", "pli")]


def _host_candidate(host: str, port: int) -> Candidate:
    return Candidate("1", 1, "udp", HOST_PRIORITY, host, port, "host", extensions=[("generation", "0")])


def build_publish_offer(*, ufrag: str, pwd: str, fingerprint: str, host: str, port: int, cname: str,
                        stream_id: str, audio_ssrc: int, video_ssrc: int, rtx_ssrc: int,
                        session_id: int) -> SessionDescription:
    """A browser-like publish offer: sendonly Opus (mid 0) and VP8+RTX (mid 1), BUNDLE, rtcp-mux,
    setup:actpass; a zero SSRC leaves that kind out."""
    offer = SessionDescription(origin=Origin(session_id=session_id, session_version=1), extmap_allow_mixed=True,
                               msid_semantic=MsidSemantic("WMS", [stream_id]))
    fp = [Fingerprint("sha-256", fingerprint)]

    def section(kind: str, mid: str, formats: list[str], codecs: list[Codec], extmaps: list[Extmap]) -> MediaSection:
        return MediaSection(kind=kind, port=port, protocol=PROTO, formats=formats, connection=f"IN IP4 {host}",
                            mid=mid, direction="sendonly", ice_ufrag=ufrag, ice_pwd=pwd, fingerprints=list(fp),
                            setup="actpass", rtcp_mux=True, rtcp_rsize=True, extmap_allow_mixed=True,
                            candidates=[_host_candidate(host, port)], codecs=codecs, extmaps=extmaps,
                            msids=[Msid(stream_id, f"{stream_id}-{kind}")])

    if audio_ssrc:
        audio = section("audio", "0", [str(OPUS_PT)],
                        [Codec(OPUS_PT, "opus", 48000, 2, [("minptime", "10"), ("useinbandfec", "1")])],
                        [Extmap(EXT_AUDIO_LEVEL, URI_AUDIO_LEVEL), Extmap(EXT_ABS_SEND_TIME, URI_ABS_SEND_TIME),
                         Extmap(EXT_MID, URI_MID)])
        audio.ssrcs = [SsrcLine(audio_ssrc, "cname", cname), SsrcLine(audio_ssrc, "msid", f"{stream_id} {stream_id}-audio")]
        offer.media.append(audio)
    if video_ssrc:
        video = section("video", "1", [str(VP8_PT), str(RTX_PT)],
                        [Codec(VP8_PT, "VP8", 90000, rtcp_fb=list(_VIDEO_FEEDBACK)),
                         Codec(RTX_PT, "rtx", 90000, fmtp=[("apt", str(VP8_PT))])],
                        [Extmap(EXT_ABS_SEND_TIME, URI_ABS_SEND_TIME), Extmap(EXT_MID, URI_MID)])
        msid = f"{stream_id} {stream_id}-video"
        video.ssrc_groups = [SsrcGroup("FID", [video_ssrc, rtx_ssrc])]
        video.ssrcs = [SsrcLine(video_ssrc, "cname", cname), SsrcLine(video_ssrc, "msid", msid),
                       SsrcLine(rtx_ssrc, "cname", cname), SsrcLine(rtx_ssrc, "msid", msid)]
        offer.media.append(video)
    if not offer.media:
        raise ValueError("a publish offer needs audio or video")
    offer.groups.append(Group("BUNDLE", [m.mid or "" for m in offer.media]))
    return offer


def build_subscribe_answer(offer: SessionDescription, *, ufrag: str, pwd: str, fingerprint: str, host: str,
                           port: int, session_id: int, version: int) -> SessionDescription:
    """Answer a subscribe offer as a browser would: recvonly for every live m-section with the
    offered codecs and extension ids, setup:active (we are the DTLS client), stopped sections
    answered with port 0."""
    answer = SessionDescription(origin=Origin(session_id=session_id, session_version=version),
                                extmap_allow_mixed=offer.extmap_allow_mixed, msid_semantic=MsidSemantic("WMS"))
    live: list[str] = []
    for m in offer.media:
        codecs = [Codec(c.payload_type, c.name, c.clock_rate, c.channels, None if c.fmtp is None else list(c.fmtp),
                        list(c.rtcp_fb)) for c in m.codecs]
        if not m.active:
            answer.media.append(MediaSection(kind=m.kind, port=0, protocol=m.protocol, formats=m.formats[:1] or ["0"],
                                             connection="IN IP4 0.0.0.0", mid=m.mid, direction="inactive",
                                             rtcp_mux=True, codecs=codecs[:1]))
            continue
        answer.media.append(MediaSection(
            kind=m.kind, port=port, protocol=m.protocol, formats=list(m.formats), connection=f"IN IP4 {host}",
            mid=m.mid, direction="recvonly", ice_ufrag=ufrag, ice_pwd=pwd,
            fingerprints=[Fingerprint("sha-256", fingerprint)], setup="active", rtcp_mux=True,
            rtcp_rsize=m.rtcp_rsize, extmap_allow_mixed=m.extmap_allow_mixed, codecs=codecs,
            extmaps=[Extmap(e.id, e.uri) for e in m.extmaps], candidates=[_host_candidate(host, port)]))
        if m.mid is not None:
            live.append(m.mid)
    if live:
        answer.groups.append(Group("BUNDLE", live))
    return answer


def remote_transport(desc: SessionDescription) -> tuple[str, str, list[tuple[str, str]], tuple[str, int]]:
    """(ice ufrag, ice pwd, fingerprints, candidate address) of the SFU, from its first live m-section.

    Raises ValueError when the description has none of them.
    """
    for m in desc.media:
        if m.port == 0:
            continue
        ufrag = m.ice_ufrag or desc.ice_ufrag
        pwd = m.ice_pwd or desc.ice_pwd
        fps = [(f.algorithm, f.value) for f in (m.fingerprints or desc.fingerprints)]
        cands = [c for c in m.candidates if c.transport.lower() == "udp"]
        addr = (cands[0].address, cands[0].port) if cands else None
        if addr is None and m.connection:
            addr = (m.connection.split()[-1], m.port)
        if not ufrag or not pwd or not fps or addr is None:
            raise ValueError(f"m-section {m.mid!r} lacks ICE credentials, a fingerprint or a candidate")
        return ufrag, pwd, fps, addr
    raise ValueError("no live m-section")


class OfferedStream:
    """One sendonly m-section of a subscribe offer, as the subscriber will receive it."""

    __slots__ = ("mid", "kind", "ssrc", "rtx_ssrc", "payload_type", "clock_rate", "abs_send_time_id", "publisher_id",
                 "nack", "pli")

    def __init__(self, mid: str, kind: str, ssrc: int, rtx_ssrc: int, payload_type: int, clock_rate: int,
                 abs_send_time_id: int, publisher_id: str, nack: bool = True, pli: bool = True) -> None:
        self.mid = mid
        self.kind = kind
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.abs_send_time_id = abs_send_time_id
        self.publisher_id = publisher_id
        self.nack = nack  # the codec negotiated a=rtcp-fb nack: NACK gaps
        self.pli = pli  # ... nack pli: ask for keyframes


def offered_streams(offer: SessionDescription, tracks: Sequence[dict[str, Any]]) -> list[OfferedStream]:
    """The live streams of a subscribe offer; `tracks` is the offer event's list (mid -> publisher)."""
    publisher_of = {str(t.get("mid")): str(t.get("participant_id", "")) for t in tracks}
    out: list[OfferedStream] = []
    for m in offer.media:
        if not m.active or m.mid is None or m.kind not in ("audio", "video"):
            continue
        fid = next((g.ssrcs for g in m.ssrc_groups if g.semantics == "FID" and len(g.ssrcs) == 2), None)
        ssrcs = m.ssrc_order()
        ssrc = fid[0] if fid else (ssrcs[0] if ssrcs else 0)
        if not ssrc:
            continue
        pts = m.payload_types
        codec = m.codec(pts[0]) if pts else None
        abs_id = next((e.id for e in m.extmaps if e.uri == URI_ABS_SEND_TIME), 0)
        feedback = m.feedback(codec) if codec is not None else []
        out.append(OfferedStream(m.mid, m.kind, ssrc, fid[1] if fid else 0, pts[0] if pts else 0,
                                 (codec.clock_rate if codec is not None and codec.clock_rate else 90000),
                                 abs_id, publisher_of.get(m.mid, ""),
                                 nack=any(fb.type == "nack" and fb.parameter is None for fb in feedback),
                                 pli=any(fb.type == "nack" and fb.parameter == "pli" for fb in feedback)))
    return out


# -- one peer connection ---------------------------------------------------------------------------

class PeerConnection(asyncio.DatagramProtocol):
    """A UDP socket with a controlling ICE agent, a DTLS client and SRTP: the far side of one
    SFU transport. Decrypted packets go to `on_rtp(buf, arrival)` and `on_rtcp(buf)`.

    `loss` (0..1) simulates a lossy network: that share of RTP packets, picked at random, is
    dropped on the way out and on the way in (RTCP, STUN and DTLS are never dropped)."""

    __slots__ = ("context", "counters", "ufrag", "pwd", "sock", "local", "remote", "remote_ufrag", "remote_key",
                 "fingerprints", "dtls", "srtp", "on_rtp", "on_rtcp", "tie_breaker", "next_consent", "_ice_waiter",
                 "_dtls_waiter", "_timer", "closed", "loss", "_rng")

    def __init__(self, context: DtlsContext, counters: GeneratorCounters,
                 on_rtp: Callable[[bytes, float], None], on_rtcp: Callable[[bytes], None],
                 loss: float = 0.0, seed: int | None = None) -> None:
        self.context = context
        self.counters = counters
        self.ufrag = random_ice_string(UFRAG_LENGTH)
        self.pwd = random_ice_string(PWD_LENGTH)
        self.sock: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("", 0)
        self.remote: tuple[str, int] | None = None
        self.remote_ufrag = ""
        self.remote_key = b""
        self.fingerprints: list[tuple[str, str]] = []
        self.dtls: DtlsEndpoint | None = None
        self.srtp: SrtpContext | None = None
        self.on_rtp = on_rtp
        self.on_rtcp = on_rtcp
        self.tie_breaker = random.getrandbits(64)
        self.next_consent = 0.0
        self._ice_waiter: asyncio.Future[None] | None = None
        self._dtls_waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.loss = loss
        self._rng = random.Random(seed)

    async def open(self, host: str = "127.0.0.1") -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, 0))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sock = transport  # type: ignore[assignment]
        raw = transport.get_extra_info("socket")
        if raw is not None:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    raw.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
                except OSError:
                    pass
        name = transport.get_extra_info("sockname")
        self.local = (name[0], name[1])

    @property
    def connected(self) -> bool:
        return self.srtp is not None

    def set_remote(self, ufrag: str, pwd: str, fingerprints: list[tuple[str, str]], address: tuple[str, int]) -> None:
        self.remote_ufrag = ufrag
        self.remote_key = pwd.encode()
        self.fingerprints = fingerprints
        self.remote = address

    async def connect(self, timeout: float = CONNECT_TIMEOUT) -> None:
        """ICE (nominate the SFU's candidate), then the DTLS handshake as client. Raises ConnectError."""
        loop = asyncio.get_running_loop()
        deadline = _monotonic() + timeout
        self._ice_waiter = loop.create_future()
        while not self._ice_waiter.done():
            if _monotonic() > deadline or self.closed:
                raise ConnectError(f"no ICE answer from {self.remote}")
            self.send_check(use_candidate=True)
            await asyncio.wait([self._ice_waiter], timeout=CHECK_INTERVAL)
        self.next_consent = _monotonic() + CONSENT_INTERVAL
        self._dtls_waiter = loop.create_future()
        self.dtls = DtlsEndpoint(self.context, DtlsRole.CLIENT, self._send_raw, self.fingerprints,
                                 clock=_monotonic, handshake_timeout=timeout, on_state=self._on_dtls_state)
        self.dtls.start()
        self._arm()
        try:
            await asyncio.wait_for(self._dtls_waiter, max(0.1, deadline - _monotonic()))
        except TimeoutError:
            raise ConnectError(f"DTLS not connected: {self.dtls!r}") from None

    def send_check(self, use_candidate: bool = False) -> None:
        """One ICE Binding request (a nomination, or a consent check)."""
        if self.sock is None or self.remote is None:
            return
        request = stun.build_binding_request(stun.new_transaction_id(), f"{self.remote_ufrag}:{self.ufrag}",
                                             self.remote_key, HOST_PRIORITY, self.tie_breaker,
                                             use_candidate=use_candidate)
        if not use_candidate:
            self.counters.consent_checks += 1
        self.sock.sendto(request, self.remote)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:  # type: ignore[override]
        first = data[0]
        if first > 127:
            now = _monotonic()
            srtp = self.srtp
            if srtp is None:
                self.counters.srtp_before_connected += 1
                return
            if 191 < data[1] < 224:
                buf = srtp.unprotect_rtcp(data)
                if buf is not None:
                    self.counters.rtcp_received += 1
                    self.on_rtcp(buf)
                else:
                    self.counters.srtp_drops += 1
                return
            if self.loss and self._rng.random() < self.loss:
                self.counters.loss_dropped_in += 1
                return
            buf = srtp.unprotect_rtp(data)
            if buf is None:
                self.counters.srtp_drops += 1
                return
            self.on_rtp(buf, now)
        elif first < 4:
            if stun.parse_binding_success(data, self.remote_key) is None:
                return
            waiter = self._ice_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            else:
                self.counters.consent_responses += 1
        elif 19 < first < 64 and self.dtls is not None:
            self.dtls.handle_datagram(data)
            self._arm()

    def error_received(self, exc: Exception) -> None:
        pass

    def send_rtp(self, pkt: bytes) -> None:
        srtp = self.srtp
        if srtp is None or self.sock is None:
            return
        if self.loss and self._rng.random() < self.loss:
            self.counters.loss_dropped_out += 1
            return
        try:
            self.sock.sendto(srtp.protect_rtp(pkt), self.remote)
        except (SrtpError, OSError):
            self.counters.send_errors += 1

    def send_rtcp(self, pkt: bytes) -> None:
        srtp = self.srtp
        if srtp is None or self.sock is None:
            return
        try:
            self.sock.sendto(srtp.protect_rtcp(pkt), self.remote)
        except (SrtpError, OSError):
            self.counters.send_errors += 1

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for waiter in (self._ice_waiter, self._dtls_waiter):
            if waiter is not None and not waiter.done():
                waiter.cancel()
        self.srtp = None
        if self.sock is not None:
            self.sock.close()

    def _send_raw(self, data: bytes) -> None:
        if self.sock is not None and self.remote is not None and not self.closed:
            self.sock.sendto(data, self.remote)

    def _on_dtls_state(self, dtls: DtlsEndpoint) -> None:
        waiter = self._dtls_waiter
        if dtls.state == DtlsState.CONNECTED and dtls.srtp_keys is not None:
            self.srtp = SrtpContext.from_keys(dtls.srtp_keys)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif dtls.state in (DtlsState.FAILED, DtlsState.CLOSED):
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectError(f"DTLS {dtls.state.name.lower()}: {dtls.reason} {dtls.detail}"))

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        dtls = self.dtls
        at = dtls.next_timeout() if dtls is not None else None
        if at is not None and not self.closed:
            self._timer = asyncio.get_running_loop().call_later(max(0.0, at - _monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.dtls is not None and not self.closed:
            self.dtls.handle_timeout(_monotonic())
            self._arm()


# -- publishing ---------------------------------------------------------------------------------------

def _random_ssrc(rng: random.Random, taken: set[int]) -> int:
    while True:
        s = rng.getrandbits(32)
        if s and s not in taken:
            taken.add(s)
            return s


class Publisher:
    """The publish connection: paced Opus and VP8 from the shared pre-encoded media."""

    __slots__ = ("participant_id", "media", "counters", "pc", "cname", "audio_ssrc", "video_ssrc", "rtx_ssrc",
                 "rtcp_ssrc", "_aseq", "_ats", "_aframe", "_apackets", "_aoctets", "_aat", "_vseq", "_rtx_seq",
                 "_vts", "_vframe", "_vframes", "_picture_id", "_queue", "_qpos", "_vpackets", "_voctets", "_vat",
                 "_history", "_history_seq", "keyframe_wanted", "sending")

    def __init__(self, participant_id: str, media: EncodedMedia, counters: GeneratorCounters,
                 rng: random.Random, *, audio: bool = True, video: bool = True) -> None:
        taken: set[int] = set()
        self.participant_id = participant_id
        self.media = media
        self.counters = counters
        self.pc: PeerConnection | None = None
        self.cname = f"bench-{rng.getrandbits(40):010x}"
        self.audio_ssrc = _random_ssrc(rng, taken) if audio else 0
        self.video_ssrc = _random_ssrc(rng, taken) if video else 0
        self.rtx_ssrc = _random_ssrc(rng, taken) if video else 0
        self.rtcp_ssrc = self.audio_ssrc or self.video_ssrc
        self._aseq = rng.getrandbits(15)
        self._ats = rng.getrandbits(32)
        self._aframe = 0
        self._apackets = 0
        self._aoctets = 0
        self._aat = 0.0
        self._vseq = rng.getrandbits(15)
        self._rtx_seq = rng.getrandbits(15)
        self._vts = rng.getrandbits(32)
        self._vframe = 0
        self._vframes = 0
        self._picture_id = rng.getrandbits(15)
        self._queue: tuple[bytes, ...] = ()
        self._qpos = 0
        self._vpackets = 0
        self._voctets = 0
        self._vat = 0.0
        self._history: list[bytes | None] = [None] * HISTORY
        self._history_seq = [-1] * HISTORY
        self.keyframe_wanted = False
        self.sending = False

    def offer(self, pc: PeerConnection, session_id: int) -> str:
        return build_publish_offer(ufrag=pc.ufrag, pwd=pc.pwd, fingerprint=pc.context.fingerprint, host=pc.local[0],
                                   port=pc.local[1], cname=self.cname, stream_id=self.participant_id,
                                   audio_ssrc=self.audio_ssrc, video_ssrc=self.video_ssrc, rtx_ssrc=self.rtx_ssrc,
                                   session_id=session_id).to_text()

    # -- paced sending (bench.media_source.PacedSender) -------------------------------------------

    def send_audio_frame(self, now: float) -> None:
        pc = self.pc
        if not self.audio_ssrc or pc is None:
            return
        audio = self.media.audio
        payload = audio[self._aframe]
        self._aframe = (self._aframe + 1) % len(audio)
        seq = self._aseq
        sent = _monotonic()  # abs-send-time is the moment of sending, not the pacer's tick
        pkt = _AUDIO_HEADER.pack(_B0_EXT, OPUS_PT, seq, self._ats, self.audio_ssrc, _EXT_PROFILE, 2,
                                 _ABS_ELEMENT | (int(sent * ABS_SEND_TIME_UNITS) & ABS_MASK), _LEVEL_ELEMENT) + payload
        self._aseq = (seq + 1) & 0xFFFF
        self._ats = (self._ats + AUDIO_TS_STEP) & 0xFFFFFFFF
        self._apackets += 1
        self._aoctets += len(payload)
        self._aat = now
        c = self.counters
        c.rtp_sent += 1
        c.audio_sent += 1
        c.rtp_sent_bytes += len(pkt)
        pc.send_rtp(pkt)

    def queue_video_frame(self, now: float) -> None:
        if not self.video_ssrc or self.pc is None:
            return
        if self._qpos < len(self._queue):  # the last frame is still draining: finish it first
            self.send_video_packets(len(self._queue), now)
        video = self.media.video
        if self.keyframe_wanted:
            self.keyframe_wanted = False
            self._vframe = self.media.next_keyframe(self._vframe)
        frame = video[self._vframe]
        self._vframe = (self._vframe + 1) % len(video)
        if frame.keyframe:
            self.counters.keyframes_sent += 1
        if self._vframes:
            self._vts = (self._vts + VIDEO_TS_STEP) & 0xFFFFFFFF
            self._picture_id = (self._picture_id + 1) & 0x7FFF
        self._vframes += 1
        self._queue = frame.bodies
        self._qpos = 0

    def send_video_packets(self, budget: int, now: float) -> int:
        pc = self.pc
        queue = self._queue
        n = len(queue)
        pos = self._qpos
        if pc is None:
            return 0
        end = pos + budget if pos + budget < n else n
        c = self.counters
        history = self._history
        history_seq = self._history_seq
        ts = self._vts
        ssrc = self.video_ssrc
        pid = 0x8000 | self._picture_id
        ast = _ABS_ELEMENT | (int(_monotonic() * ABS_SEND_TIME_UNITS) & ABS_MASK)
        last = n - 1
        while pos < end:
            body = queue[pos]
            seq = self._vseq
            pkt = _VIDEO_HEADER.pack(_B0_EXT, (0x80 | VP8_PT) if pos == last else VP8_PT, seq, ts, ssrc,
                                     _EXT_PROFILE, 1, ast, _DESC_START if pos == 0 else _DESC_MIDDLE, _DESC_I,
                                     pid) + body
            i = seq & _HMASK
            history[i] = pkt
            history_seq[i] = seq
            self._vseq = (seq + 1) & 0xFFFF
            self._vpackets += 1
            self._voctets += len(pkt) - _VIDEO_HEADER_SIZE
            c.rtp_sent += 1
            c.video_sent += 1
            c.rtp_sent_bytes += len(pkt)
            pc.send_rtp(pkt)
            pos += 1
        self._qpos = pos
        self._vat = now
        return n - pos

    # -- feedback from the SFU ---------------------------------------------------------------------

    def on_rtp(self, buf: bytes, now: float) -> None:
        self.counters.unknown_ssrc += 1  # the SFU sends no media on a publish connection

    def on_rtcp(self, buf: bytes) -> None:
        packets, _ = parse_compound(buf)
        c = self.counters
        for p in packets:
            if isinstance(p, Nack):
                c.nacks_received += 1
                if p.media_ssrc == self.video_ssrc:
                    seqs = p.seqs()
                    c.nack_seqs_received += len(seqs)
                    self._retransmit(seqs)
            elif isinstance(p, Pli | Fir):
                c.plis_received += 1
                self.keyframe_wanted = True

    def _retransmit(self, seqs: list[int]) -> None:
        pc = self.pc
        if pc is None:
            return
        c = self.counters
        ast = _ABS_ELEMENT | (int(_monotonic() * ABS_SEND_TIME_UNITS) & ABS_MASK)
        for seq in seqs:
            i = seq & _HMASK
            original = self._history[i]
            if original is None or self._history_seq[i] != seq:
                c.nack_misses += 1
                continue
            rtx_seq = self._rtx_seq
            ts = _U32.unpack_from(original, 4)[0]
            pkt = _RTX_HEADER.pack(_B0_EXT, (original[1] & 0x80) | RTX_PT, rtx_seq, ts, self.rtx_ssrc, _EXT_PROFILE, 1,
                                   ast, seq) + original[_VIDEO_HEADER_SIZE:]
            self._rtx_seq = (rtx_seq + 1) & 0xFFFF
            c.rtx_sent += 1
            c.rtp_sent += 1
            c.rtp_sent_bytes += len(pkt)
            pc.send_rtp(pkt)

    def sender_report(self, now: float, wallclock: float) -> bytes | None:
        """SR for each stream that sent something, with SDES CNAME (one compound packet)."""
        ntp = ntp_from_unix(wallclock)
        out = b""
        if self._apackets:
            ts = (self._ats - AUDIO_TS_STEP + int((now - self._aat) * 48000)) & 0xFFFFFFFF
            out += SenderReport(self.audio_ssrc, ntp, ts, self._apackets, self._aoctets).to_bytes()
        if self._vpackets:
            ts = (self._vts + int((now - self._vat) * 90000)) & 0xFFFFFFFF
            out += SenderReport(self.video_ssrc, ntp, ts, self._vpackets, self._voctets).to_bytes()
        if not out:
            return None
        return out + SourceDescription.with_cname(self.rtcp_ssrc, self.cname).to_bytes()


# -- subscribing --------------------------------------------------------------------------------------

class InboundStream:
    """One SSRC a subscriber receives: RFC 3550 stats, NACK state, keyframe state, delays."""

    __slots__ = ("ssrc", "rtx_ssrc", "mid", "kind", "publisher_id", "clock_rate", "is_video", "abs_id",
                 "abs_byte", "stats", "nack", "nack_enabled", "pli_enabled", "keyframe", "hist", "counters", "packets",
                 "bytes", "rtx_packets", "recovered", "frames", "keyframes", "have_keyframe", "first_at", "last_at",
                 "active", "_vp8")

    def __init__(self, offered: OfferedStream, hist: list[int], counters: GeneratorCounters) -> None:
        self.ssrc = offered.ssrc
        self.rtx_ssrc = offered.rtx_ssrc
        self.mid = offered.mid
        self.kind = offered.kind
        self.publisher_id = offered.publisher_id
        self.clock_rate = offered.clock_rate
        self.is_video = offered.kind == "video"
        self.abs_id = offered.abs_send_time_id
        # one-byte form element header of a 3-byte abs-send-time: the fast path when it comes first
        self.abs_byte = ((offered.abs_send_time_id << 4) | 2) if 0 < offered.abs_send_time_id < 15 else -1
        self.stats = ReceiveStats()
        self.nack = NackGenerator()
        self.nack_enabled = offered.nack
        self.pli_enabled = offered.pli and self.is_video
        self.keyframe = KeyframeRequester()
        self.hist = hist
        self.counters = counters
        self.packets = 0
        self.bytes = 0
        self.rtx_packets = 0
        self.recovered = 0
        self.frames = 0
        self.keyframes = 0
        self.have_keyframe = not self.is_video
        self.first_at = 0.0
        self.last_at = 0.0
        self.active = True
        self._vp8 = Vp8Descriptor()

    def on_media(self, buf: bytes, now: float) -> bool:
        """One media packet; True when the caller should ask for a keyframe now."""
        n = len(buf)
        b0 = buf[0]
        seq, ts = _SEQ_TS.unpack_from(buf, 2)
        if not self.packets:
            self.first_at = now
        self.packets += 1
        self.bytes += n
        self.last_at = now
        self.stats.on_packet(seq, ts, now, self.clock_rate, n)
        if self.nack_enabled:
            self.nack.on_packet(seq, now)
        off = 12 + ((b0 & 0x0F) << 2)
        c = self.counters
        if b0 & 0x10 and off + 4 <= n:
            words = _U16.unpack_from(buf, off + 2)[0]
            ext = off + 4
            off = ext + (words << 2)
            value = -1
            if words and buf[ext] == self.abs_byte:
                value = _U32.unpack_from(buf, ext)[0] & ABS_MASK
            elif self.abs_id:
                loc = find_extension(buf, _U16.unpack_from(buf, ext - 4)[0], ext, words << 2, self.abs_id)
                if loc is not None and loc[1] == 3:
                    value = _U32.unpack_from(buf, loc[0] - 1)[0] & ABS_MASK
            if value >= 0:
                d = (int(now * ABS_SEND_TIME_UNITS) - value) & ABS_MASK
                if d < ABS_HALF:
                    i = (d * _BUCKET_MUL) >> _BUCKET_SHIFT
                    self.hist[i if i < DELAY_BUCKETS else DELAY_BUCKETS] += 1
                else:
                    c.negative_delays += 1
            else:
                c.no_abs_send_time += 1
        else:
            c.no_abs_send_time += 1
        if not self.is_video:
            c.audio_received += 1
            return False
        c.video_received += 1
        if off < n and buf[off] & 0x17 == 0x10:  # S=1, PID=0: a picture starts
            self.frames += 1
            c.frames_received += 1
            desc = self._vp8
            if desc.load(buf, off, n) and desc.keyframe:
                self.keyframes += 1
                c.keyframes_received += 1
                self.have_keyframe = True
                self.keyframe.on_keyframe(now)
                self.nack.on_keyframe(seq)
                return False
        return not self.have_keyframe and self.pli_enabled and self.keyframe.request(now, "no keyframe yet")

    def on_rtx(self, buf: bytes, now: float) -> None:
        """A retransmission (RFC 4588): its OSN may fill a gap."""
        n = len(buf)
        b0 = buf[0]
        off = 12 + ((b0 & 0x0F) << 2)
        if b0 & 0x10 and off + 4 <= n:
            off += 4 + (_U16.unpack_from(buf, off + 2)[0] << 2)
        self.rtx_packets += 1
        self.counters.rtx_received += 1
        if off + 2 > n:
            return
        osn = _U16.unpack_from(buf, off)[0]
        if self.nack.on_packet(osn, now):
            self.recovered += 1
            self.counters.recovered += 1
            self.stats.on_packet(osn, _U32.unpack_from(buf, 4)[0], now, self.clock_rate, n - 2)

    def summary(self) -> dict[str, object]:
        st = self.stats
        return {"mid": self.mid, "kind": self.kind, "publisher": self.publisher_id, "packets": self.packets,
                "bytes": self.bytes, "expected": st.expected, "lost": st.lost, "jitter_ms": round(st.jitter_ms, 3),
                "rtx_packets": self.rtx_packets, "recovered": self.recovered, "frames": self.frames,
                "keyframes": self.keyframes, "nacked_seqs": self.nack.nacks_sent,
                "lost_for_good": self.nack.packets_lost_for_good, "plis": self.keyframe.sent}


class Subscriber:
    """The subscribe connection: answers the SFU's offers and receives every stream it is sent."""

    __slots__ = ("participant_id", "counters", "hist_audio", "hist_video", "pc", "streams", "by_ssrc",
                 "rtcp_ssrc", "session_id", "version", "offers")

    def __init__(self, participant_id: str, counters: GeneratorCounters, hist_audio: list[int],
                 hist_video: list[int], rng: random.Random) -> None:
        self.participant_id = participant_id
        self.counters = counters
        self.hist_audio = hist_audio
        self.hist_video = hist_video
        self.pc: PeerConnection | None = None
        self.streams: dict[int, InboundStream] = {}  # media SSRC -> stream
        self.by_ssrc: dict[int, InboundStream] = {}  # media and RTX SSRC -> stream
        self.rtcp_ssrc = rng.getrandbits(32) or 1
        self.session_id = rng.getrandbits(62) or 1
        self.version = 0
        self.offers = 0

    def answer(self, offer: SessionDescription, tracks: Sequence[dict[str, Any]]) -> str:
        """Our answer to a (re-)offer; learns the streams it announces. The pc must be open."""
        pc = self.pc
        assert pc is not None
        self.offers += 1
        self.version += 1
        offered = offered_streams(offer, tracks)
        live = {s.ssrc for s in offered}
        for s in offered:
            if s.ssrc not in self.streams:
                stream = InboundStream(s, self.hist_video if s.kind == "video" else self.hist_audio, self.counters)
                self.streams[s.ssrc] = stream
                self.by_ssrc[s.ssrc] = stream
                if s.rtx_ssrc:
                    self.by_ssrc[s.rtx_ssrc] = stream
        for ssrc, stream in self.streams.items():
            stream.active = ssrc in live
        return build_subscribe_answer(offer, ufrag=pc.ufrag, pwd=pc.pwd, fingerprint=pc.context.fingerprint,
                                      host=pc.local[0], port=pc.local[1], session_id=self.session_id,
                                      version=self.version).to_text()

    def on_rtp(self, buf: bytes, now: float) -> None:
        ssrc = _U32.unpack_from(buf, 8)[0]
        stream = self.by_ssrc.get(ssrc)
        c = self.counters
        if stream is None:
            c.unknown_ssrc += 1
            return
        c.rtp_received += 1
        c.rtp_received_bytes += len(buf)
        if ssrc == stream.ssrc:
            if stream.on_media(buf, now):
                self._send_pli(stream)
        else:
            stream.on_rtx(buf, now)

    def on_rtcp(self, buf: bytes) -> None:
        packets, _ = parse_compound(buf)
        now = _monotonic()
        for p in packets:
            if isinstance(p, SenderReport):
                stream = self.streams.get(p.ssrc)
                if stream is not None:
                    stream.stats.on_sender_report(p, now)

    def feedback(self, now: float) -> None:
        """NACKs for what is missing; PLIs for lost-for-good video and unanswered requests."""
        pc = self.pc
        if pc is None or not pc.connected:
            return
        c = self.counters
        for stream in self.streams.values():
            if not stream.nack_enabled:
                continue
            seqs = stream.nack.tick(now)
            if seqs:
                for i in range(0, len(seqs), MAX_NACK_SEQS):
                    pc.send_rtcp(Nack.from_seqs(self.rtcp_ssrc, stream.ssrc, seqs[i:i + MAX_NACK_SEQS]).to_bytes())
                    c.nacks_sent += 1
                c.nack_seqs_sent += len(seqs)
            if stream.pli_enabled:
                want = stream.nack.take_keyframe_request() and stream.keyframe.request(now, "lost for good")
                if want or stream.keyframe.tick(now):
                    self._send_pli(stream)

    def report(self, now: float) -> None:
        """Receiver Reports for every stream received so far."""
        pc = self.pc
        if pc is None or not pc.connected:
            return
        blocks = [s.stats.report_block(s.ssrc, now) for s in self.streams.values() if s.stats.started]
        for i in range(0, len(blocks), 31):
            pc.send_rtcp(ReceiverReport(self.rtcp_ssrc, blocks[i:i + 31]).to_bytes())
            self.counters.rr_sent += 1

    def _send_pli(self, stream: InboundStream) -> None:
        pc = self.pc
        if pc is not None and pc.connected:
            pc.send_rtcp(Pli(self.rtcp_ssrc, stream.ssrc).to_bytes())
            self.counters.plis_sent += 1

    def received_from(self) -> set[tuple[str, str]]:
        """(publisher id, kind) of every stream that delivered at least one packet."""
        return {(s.publisher_id, s.kind) for s in self.streams.values() if s.packets}


# -- a participant and the process that runs many -------------------------------------------------------

class SyntheticParticipant:
    """One person in a room: a publish connection, a subscribe connection, or both."""

    __slots__ = ("id", "room_id", "generator", "publisher", "subscriber", "_lock", "errors", "closed")

    def __init__(self, generator: LoadGenerator, room_id: str, participant_id: str, *, publish: bool,
                 subscribe: bool) -> None:
        self.id = participant_id
        self.room_id = room_id
        self.generator = generator
        rng = generator.rng
        self.publisher = Publisher(participant_id, generator.media, generator.counters, rng) if publish else None
        self.subscriber = (Subscriber(participant_id, generator.counters, generator.delay_audio,
                                      generator.delay_video, rng) if subscribe else None)
        self._lock = asyncio.Lock()
        self.errors: list[str] = []
        self.closed = False

    async def join(self) -> None:
        """Enter the room and, when publishing, negotiate and connect the publish connection."""
        g = self.generator
        await g.signaling.add_participant(self.room_id, self.id, self.publisher is not None,
                                          self.subscriber is not None)
        publisher = self.publisher
        if publisher is None:
            return
        pc = PeerConnection(g.context, g.counters, publisher.on_rtp, publisher.on_rtcp, g.loss, g.rng.getrandbits(32))
        publisher.pc = pc
        await pc.open(g.host)
        answer = parse_sdp(await g.signaling.publish_offer(self.room_id, self.id,
                                                           publisher.offer(pc, g.rng.getrandbits(62) or 1)))
        ufrag, pwd, fingerprints, address = remote_transport(answer)
        pc.set_remote(ufrag, pwd, fingerprints, address)
        try:
            await pc.connect()
        except ConnectError as e:
            g.counters.connect_failures += 1
            self.errors.append(f"publish: {e}")
            raise
        g.pacer.add(publisher)
        publisher.sending = True

    async def on_subscribe_offer(self, sdp: str, tracks: Sequence[dict[str, Any]]) -> None:
        """Answer one subscribe offer; connect the subscribe connection after the first."""
        subscriber = self.subscriber
        if subscriber is None or self.closed:
            return
        g = self.generator
        async with self._lock:
            g.counters.subscribe_offers += 1
            offer = parse_sdp(sdp)
            pc = subscriber.pc
            first = pc is None
            if pc is None:
                pc = PeerConnection(g.context, g.counters, subscriber.on_rtp, subscriber.on_rtcp, g.loss,
                                    g.rng.getrandbits(32))
                subscriber.pc = pc
                await pc.open(g.host)
            answer = subscriber.answer(offer, tracks)
            await g.signaling.subscribe_answer(self.room_id, self.id, answer)
            if first:
                ufrag, pwd, fingerprints, address = remote_transport(offer)
                pc.set_remote(ufrag, pwd, fingerprints, address)
                try:
                    await pc.connect()
                except ConnectError as e:
                    g.counters.connect_failures += 1
                    self.errors.append(f"subscribe: {e}")

    def close(self) -> None:
        self.closed = True
        if self.publisher is not None:
            self.generator.pacer.remove(self.publisher)
            self.publisher.sending = False
            if self.publisher.pc is not None:
                self.publisher.pc.close()
        if self.subscriber is not None and self.subscriber.pc is not None:
            self.subscriber.pc.close()


class LoadGenerator:
    """Everything one load-generating process shares, and the routing of SFU events to participants."""

    def __init__(self, media: EncodedMedia, signaling: Signaling, *, host: str = "127.0.0.1",
                 seed: int | None = None, loss: float = 0.0) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError("loss must be in [0, 1)")
        self.media = media
        self.loss = loss
        self.signaling = signaling
        self.host = host
        self.rng = random.Random(seed)
        self.context = DtlsContext(DtlsCertificate.generate())
        self.counters = GeneratorCounters()
        self.delay_audio = new_histogram()
        self.delay_video = new_histogram()
        self.pacer = Pacer(fps=media.fps, seed=seed)
        self.participants: dict[tuple[str, str], SyntheticParticipant] = {}
        self.publishers: tuple[Publisher, ...] = ()
        self.subscribers: tuple[Subscriber, ...] = ()
        self.events: dict[str, int] = {}
        self.errors: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._feedback: asyncio.TimerHandle | None = None
        self._reports: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start the pacer and the feedback and report tickers."""
        self._loop = asyncio.get_running_loop()
        self.pacer.start()
        self._feedback = self._loop.call_later(FEEDBACK_INTERVAL, self._tick_feedback)
        self._reports = self._loop.call_later(REPORT_INTERVAL, self._tick_reports)

    def stop_sending(self) -> None:
        """Stop the pacer: no more media (feedback continues until `close`)."""
        self.pacer.stop()

    async def close(self) -> None:
        self.pacer.stop()
        for handle in (self._feedback, self._reports):
            if handle is not None:
                handle.cancel()
        self._feedback = self._reports = None
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for p in self.participants.values():
            p.close()

    async def add(self, room_id: str, participant_id: str, *, publish: bool = True,
                  subscribe: bool = True) -> SyntheticParticipant:
        """A new participant, registered before it joins so the SFU's first offer finds it."""
        p = SyntheticParticipant(self, room_id, participant_id, publish=publish, subscribe=subscribe)
        self.participants[(room_id, participant_id)] = p
        if p.subscriber is not None:
            self.subscribers = (*self.subscribers, p.subscriber)
        if p.publisher is not None:
            self.publishers = (*self.publishers, p.publisher)
        await p.join()
        return p

    def on_event(self, event: dict[str, Any]) -> None:
        """A media-plane event (MediaPlane.subscribe handler): subscribe offers go to their participant."""
        kind = str(event.get("type"))
        self.events[kind] = self.events.get(kind, 0) + 1
        if kind == "subscribe_offer":
            p = self.participants.get((str(event.get("room_id")), str(event.get("participant_id"))))
            if p is not None:
                self._spawn(p.on_subscribe_offer(str(event["sdp"]), list(event.get("tracks") or [])))
        elif kind == "transport_state" and event.get("state") == "failed":
            self.errors.append(f"{event.get('participant_id')}/{event.get('transport')}: {event.get('reason')}")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(repr(task.exception()))

    def take_delay_interval(self) -> tuple[list[int], list[int]]:
        """The delay histograms (audio, video) since the last call; the live ones start again at zero."""
        audio, video = self.delay_audio[:], self.delay_video[:]
        zeros = [0] * len(audio)
        self.delay_audio[:] = zeros
        self.delay_video[:] = zeros
        return audio, video

    def _tick_feedback(self) -> None:
        now = _monotonic()
        try:
            for s in self.subscribers:
                s.feedback(now)
        except Exception:
            log.exception("feedback tick failed")
        assert self._loop is not None
        self._feedback = self._loop.call_later(FEEDBACK_INTERVAL, self._tick_feedback)

    def _tick_reports(self) -> None:
        now = _monotonic()
        wall = time.time()
        c = self.counters
        try:
            for s in self.subscribers:
                s.report(now)
            for p in self.publishers:
                pc = p.pc
                if pc is not None and pc.connected:
                    report = p.sender_report(now, wall)
                    if report is not None:
                        pc.send_rtcp(report)
                        c.sr_sent += 1
            for participant in self.participants.values():
                for pc in (participant.publisher.pc if participant.publisher else None,
                           participant.subscriber.pc if participant.subscriber else None):
                    if pc is not None and pc.connected and now >= pc.next_consent:
                        pc.next_consent = now + CONSENT_INTERVAL
                        pc.send_check()
        except Exception:
            log.exception("report tick failed")
        assert self._loop is not None
        self._reports = self._loop.call_later(REPORT_INTERVAL, self._tick_reports)

    def stream_summaries(self) -> list[dict[str, object]]:
        out = []
        for (room, pid), p in self.participants.items():
            if p.subscriber is None:
                continue
            for s in p.subscriber.streams.values():
                out.append({"room": room, "subscriber": pid, **s.summary()})
        return out


# -- signaling through a node's WebSocket -----------------------------------------------------------------

TokenSource = Callable[[str, str], Any]  # (room id, participant id) -> awaitable join token
REPLY_TIMEOUT = 15.0


class SignalingRefused(Exception):
    """The node refused a join or an offer (`error{code}` or a close)."""


class _Connection:
    """One participant's WebSocket and what it waits for."""

    __slots__ = ("room_id", "participant_id", "ws", "reader", "joined", "answers", "closed_code", "waiting_since",
                 "admitted_at")

    def __init__(self, room_id: str, participant_id: str, ws: Any) -> None:
        self.room_id = room_id
        self.participant_id = participant_id
        self.ws = ws
        self.reader: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self.joined: asyncio.Future[None] = loop.create_future()
        self.answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed_code: int | None = None
        self.waiting_since = 0.0
        self.admitted_at = 0.0


class NodeSignaling:
    """`Signaling` through a node's `GET /v1/rtc`: one WebSocket per participant, joined with a
    token from `tokens`. Subscribe offers go to `on_event` in the shape MediaPlane events have.
    With `auto_admit`, a provider connection admits each `participant_waiting` at once; the
    admission wait of every client that waited is kept in `admission_waits` (seconds). `prefix` is
    what the node's ids carry before ours (a run's tag, so runs can share a node); it is taken off
    the participant ids of subscribe offers' tracks."""

    def __init__(self, url: str, tokens: TokenSource, *, auto_admit: bool = True, prefix: str = "") -> None:
        self.prefix = prefix
        self.ws_url = url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://") + "/v1/rtc"
        self.tokens = tokens
        self.auto_admit = auto_admit
        self.on_event: Callable[[dict[str, Any]], None] = lambda e: None
        self.connections: dict[tuple[str, str], _Connection] = {}
        self.admission_waits: list[float] = []
        self.messages: dict[str, int] = {}
        self._session: Any = None

    async def _http(self) -> Any:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession()
        return self._session

    async def add_participant(self, room_id: str, participant_id: str, can_publish: bool = True,
                              can_subscribe: bool = True) -> None:
        """Connect, send `join{token}` and return once `joined` arrives (after the waiting room, if any).
        Raises SignalingRefused."""
        token = await self.tokens(room_id, participant_id)
        session = await self._http()
        ws = await session.ws_connect(self.ws_url, heartbeat=None, max_msg_size=0)
        conn = _Connection(room_id, participant_id, ws)
        self.connections[(room_id, participant_id)] = conn
        conn.reader = asyncio.ensure_future(self._read(conn))
        await ws.send_str(json.dumps({"type": "join", "token": token}))
        try:
            await asyncio.wait_for(asyncio.shield(conn.joined), REPLY_TIMEOUT + 30.0)
        except TimeoutError:
            raise SignalingRefused(f"{participant_id}: no joined within {REPLY_TIMEOUT + 30.0:.0f} s") from None

    async def publish_offer(self, room_id: str, participant_id: str, sdp: str) -> str:
        conn = self.connections[(room_id, participant_id)]
        last: dict[str, Any] = {}
        for _ in range(20):
            await conn.ws.send_str(json.dumps({"type": "publish_offer", "sdp": sdp}))
            reply = await asyncio.wait_for(conn.answers.get(), REPLY_TIMEOUT)
            if reply.get("type") == "publish_answer":
                return str(reply["sdp"])
            last = reply
            await asyncio.sleep(0.1)  # admitted a moment ago: its media room may still be being entered
        raise SignalingRefused(f"{participant_id}: publish_offer refused: {last}")

    async def subscribe_answer(self, room_id: str, participant_id: str, sdp: str) -> None:
        conn = self.connections[(room_id, participant_id)]
        await conn.ws.send_str(json.dumps({"type": "subscribe_answer", "sdp": sdp}))

    async def _read(self, conn: _Connection) -> None:
        import aiohttp

        ws = conn.ws
        try:
            async for m in ws:
                if m.type != aiohttp.WSMsgType.TEXT:
                    continue
                d = json.loads(m.data)
                kind = str(d.get("type"))
                self.messages[kind] = self.messages.get(kind, 0) + 1
                if kind == "subscribe_offer":
                    tracks = d.get("tracks") or []
                    if self.prefix:
                        n = len(self.prefix)
                        tracks = [{**t, "participant_id": str(t.get("participant_id", ""))[n:]}
                                  if str(t.get("participant_id", "")).startswith(self.prefix) else t for t in tracks]
                    self.on_event({"type": "subscribe_offer", "room_id": conn.room_id,
                                   "participant_id": conn.participant_id, "sdp": d.get("sdp", ""),
                                   "tracks": tracks})
                elif kind == "publish_answer":
                    conn.answers.put_nowait(d)
                elif kind == "joined":
                    if conn.waiting_since:
                        conn.admitted_at = _monotonic()
                        self.admission_waits.append(conn.admitted_at - conn.waiting_since)
                    if not conn.joined.done():
                        conn.joined.set_result(None)
                elif kind == "waiting":
                    if not conn.waiting_since:
                        conn.waiting_since = _monotonic()
                elif kind == "participant_waiting" and self.auto_admit:
                    pid = str((d.get("participant") or {}).get("participant_id", ""))
                    if pid:
                        await ws.send_str(json.dumps({"type": "admit", "participant_id": pid}))
                elif kind == "error":
                    if not conn.joined.done():
                        conn.joined.set_exception(SignalingRefused(f"{conn.participant_id}: {d}"))
                    else:
                        conn.answers.put_nowait(d)
        except Exception as e:  # noqa: BLE001 - a broken socket ends this participant, the run reports it
            log.warning("signaling reader of %s: %r", conn.participant_id, e)
        conn.closed_code = ws.close_code
        if not conn.joined.done():
            conn.joined.set_exception(SignalingRefused(f"{conn.participant_id}: closed ({ws.close_code})"))

    async def close(self) -> None:
        for conn in self.connections.values():
            if not conn.ws.closed:
                try:
                    await conn.ws.send_str(json.dumps({"type": "leave"}))
                    await conn.ws.close()
                except Exception:  # noqa: BLE001 - closing anyway
                    pass
        readers = [c.reader for c in self.connections.values() if c.reader is not None]
        await asyncio.gather(*readers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
