"""Fuzz targets: every parser a remote party reaches, called the way the server calls it.

Each target takes one input (bytes) and returns normally when the server would handle it,
including when it is refused through the parser's documented signal (None, -1, False, a
reason string, or the typed error: SdpError, ProtocolError, RequestError). Any other
exception escaping a target is a finding. A target may also raise `InvariantError` when a
parser returns something the code after it relies on not happening (e.g. a packet whose
length changed under an in-place rewrite).

`TARGETS` maps a name to (function, seeds, worst cases, max input length). Seeds are real
packets and documents built with the project's own builders and the captured SDP fixtures;
worst cases are crafted inputs replayed by `telesfu bench fuzz` when it measures the cost of
single inputs. Nothing here imports atheris: the smoke test and the replay run without it.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from control.api.validation import (
    RequestError,
    action_body,
    appointment_from_body,
    check_id,
    client_from_body,
    parse_json_body,
    provider_from_body,
    token_request,
)
from control.jsonparse import MAX_DEPTH, MAX_VALUES
from sfu.routing.counters import WorkerCounters
from sfu.routing.downtrack import DownTrack
from sfu.routing.ports import RoomHooks
from sfu.routing.publisher import Publisher
from sfu.routing.stream import RecvStream, _find_one_byte, build_ext_lengths, build_ext_map
from sfu.routing.subscriber import Subscriber
from sfu.routing.track import PublishedTrack
from sfu.rtp import ext as rtp_ext
from sfu.rtp.h264 import fu_a_header, is_h264_keyframe, nal_type, stap_a_nal_types
from sfu.rtp.packet import RtpHeader, build_rtp, is_rtcp, parse_rtp, rtx_original_seq
from sfu.rtp.rtcp.bye import Bye
from sfu.rtp.rtcp.common import (
    FMT_AFB,
    FMT_FIR,
    FMT_NACK,
    FMT_PLI,
    FMT_TWCC,
    PT_BYE,
    PT_PSFB,
    PT_RR,
    PT_RTPFB,
    PT_SDES,
    PT_SR,
)
from sfu.rtp.rtcp.compound import CompoundReader, parse_compound
from sfu.rtp.rtcp.fir import Fir
from sfu.rtp.rtcp.nack import Nack
from sfu.rtp.rtcp.pli import Pli
from sfu.rtp.rtcp.remb import Remb
from sfu.rtp.rtcp.rr import ReceiverReport, ReportBlock
from sfu.rtp.rtcp.sdes import SourceDescription
from sfu.rtp.rtcp.sr import SenderReport
from sfu.rtp.rtcp.twcc import TransportFeedback
from sfu.rtp.vp8 import build_vp8_descriptor, is_vp8_keyframe, parse_vp8, vp8_keyframe_size
from sfu.sdp import (
    DEFAULT_CAPABILITIES,
    Fingerprint,
    LocalTransportParams,
    NegotiatedCodec,
    OutTrack,
    SdpError,
    answer_publish_offer,
    apply_subscribe_answer,
    build_subscribe_offer,
    check_publish_limits,
    check_publish_text,
    check_subscribe_answer_text,
    parse_sdp,
)
from sfu.transport import stun
from sfu.transport.dtls import RECORD_HEADER_LENGTH, is_dtls, scan_records
from sfu.transport.ice_lite import IceLite, IceLiteRegistry
from sfu.transport.tcp_framing import FrameDecoder
from signaling.protocol import MAX_FRAME_BYTES, ProtocolError
from signaling.protocol import parse_message as parse_signaling

REPO = Path(__file__).resolve().parents[2]
# The repo's captures, then the shared ones next to the checkout (or next to its worktree folder).
SDP_FIXTURE_DIRS = (REPO / "tests" / "fixtures" / "sdp", REPO.parent / "shared" / "fixtures" / "sdp",
                    REPO.parent.parent / "shared" / "fixtures" / "sdp")

Target = Callable[[bytes], None]


class InvariantError(AssertionError):
    """A parser accepted an input but broke a promise the code after it relies on."""


@dataclass(frozen=True)
class FuzzTarget:
    name: str
    fn: Target
    seeds: Callable[[], list[bytes]]
    worst: Callable[[], list[bytes]]
    max_len: int
    parsers: str  # what it covers, for the report
    # For measuring what one input costs the server: the datagrams (or documents) a fuzz
    # input stands for, and what the server does with one of them. Default: the input
    # itself through `fn`.
    wire: Callable[[bytes], list[bytes]] | None = None
    serve: Target | None = None

    def cost_cases(self, data: bytes) -> list[tuple[Target, bytes]]:
        if self.wire is None or self.serve is None:
            return [(self.fn, data)]
        return [(self.serve, w) for w in self.wire(data)]


# --- STUN (ICE-lite connectivity checks) -------------------------------------------------

STUN_UFRAG = "fuzzLocalUfrag01"
STUN_PWD = "fuzzLocalPasswordFuzzLocal12345"
STUN_REMOTE_UFRAG = "fuzzRemoteUfrag1"
STUN_REMOTE_PWD = "fuzzRemotePasswordFuzzRemote123"
STUN_KEY = STUN_PWD.encode()
STUN_ADDR = ("127.0.0.1", 50000)


def _stun_signed(data: bytes) -> bytes:
    """What an authenticated peer can send: its own attributes, signed with the right key.

    data[0] picks the message type's low bits, data[1:13] the transaction id, the rest is
    the attribute body (padded) after USERNAME, then MESSAGE-INTEGRITY and FINGERPRINT.
    """
    msg_type = stun.BINDING_REQUEST if data[0] < 0xC0 else (data[0] << 4 | data[0]) & 0x3FFF
    tid = data[1:13].ljust(12, b"\0")
    body = stun.encode_attribute(stun.ATTR_USERNAME, f"{STUN_UFRAG}:{STUN_REMOTE_UFRAG}", tid)
    rest = data[13:]
    body += rest + b"\0" * (-len(rest) % 4)
    return stun.finish_message(msg_type, tid, body[: 0xFFFF - 64 & ~3], STUN_KEY)


def _stun_wire(data: bytes) -> list[bytes]:
    return [data, _stun_signed(data)] if data else [data]


def serve_stun(buf: bytes) -> None:
    """One datagram through the worker's STUN path (UdpEndpoint._receive_stun)."""
    registry: IceLiteRegistry[str] = IceLiteRegistry()
    ice = IceLite(0.0, local_ufrag=STUN_UFRAG, local_pwd=STUN_PWD)
    ice.set_remote_credentials(STUN_REMOTE_UFRAG, STUN_REMOTE_PWD)
    registry.add(ice, "transport")
    registry.handle_stun(buf, STUN_ADDR, 1.0)


def fuzz_stun(data: bytes) -> None:
    """The worker's STUN path: parse, route by USERNAME/address, verify, answer (IceLiteRegistry)."""
    registry: IceLiteRegistry[str] = IceLiteRegistry()
    ice = IceLite(0.0, local_ufrag=STUN_UFRAG, local_pwd=STUN_PWD)
    if data[:1] == b"\x01":  # after the answer: remote credentials known
        ice.set_remote_credentials(STUN_REMOTE_UFRAG, STUN_REMOTE_PWD)
    registry.add(ice, "transport")
    for buf in (data, _stun_signed(data) if data else b""):
        msg = stun.parse_message(buf)
        if msg is not None:
            stun.verify_fingerprint(buf, msg.fingerprint_offset)
            stun.verify_integrity(buf, STUN_KEY, msg.integrity_offset)
            repr(msg)
        _, response, _ = registry.handle_stun(buf, STUN_ADDR, 1.0)
        _, response2, _ = registry.handle_stun(buf, ("127.0.0.2", 1), 2.0)
        for out in (response, response2):
            if out is not None and stun.parse_message(out) is None:
                raise InvariantError("the STUN answer does not parse")
    stun.parse_binding_success(data, STUN_KEY)
    stun.parse_binding_success(data, None)


def _stun_seeds() -> list[bytes]:
    tid = bytes(range(12))
    req = stun.build_binding_request(tid, f"{STUN_UFRAG}:{STUN_REMOTE_UFRAG}", STUN_KEY, 0x6E7F00FF,
                                     0x1122334455667788, use_candidate=True, software="fuzz")
    req2 = stun.build_binding_request(tid, f"{STUN_UFRAG}:{STUN_REMOTE_UFRAG}", STUN_KEY, 1, 2)
    ok = stun.build_binding_success(tid, STUN_ADDR, STUN_KEY)
    ok6 = stun.build_binding_success(tid, ("::1", 9), STUN_KEY)
    err = stun.build_error_response(stun.METHOD_BINDING, tid, 420, key=STUN_KEY, unknown=(0x7777,))
    ind = stun.build_message(stun.BINDING_INDICATION, tid)
    odd = stun.build_message(stun.BINDING_REQUEST, tid, [(stun.ATTR_MAPPED_ADDRESS, STUN_ADDR),
                                                         (0x7777, b"xyz"), (0xC001, b"")])
    return [req, req2, ok, ok6, err, ind, odd, b"\x01" + req[1:], b"\x00\x01\x00\x00"]


def _stun_worst() -> list[bytes]:
    tid = bytes(12)
    many = b"".join(stun.encode_attribute(0xC000 + i, b"", tid) for i in range(300))
    many_required = b"".join(stun.encode_attribute(0x7000 + i, b"", tid) for i in range(300))
    big_user = stun.encode_attribute(stun.ATTR_USERNAME, "u" * 513, tid)
    return [
        stun.finish_message(stun.BINDING_REQUEST, tid, many, STUN_KEY),
        stun.finish_message(stun.BINDING_REQUEST, tid, many_required, STUN_KEY),
        stun.finish_message(stun.BINDING_REQUEST, tid, big_user + many[:1200], STUN_KEY),
        b"\xc0" + bytes(12) + many_required[:1400],  # the signed path with 300 unknown required attributes
    ]


# --- DTLS record framing (what the server checks before OpenSSL sees a datagram) ---------


def fuzz_dtls(data: bytes) -> None:
    """udp.py's RFC 7983 demux then DtlsEndpoint.handle_datagram's record scan."""
    if not data or not is_dtls(data[0]):
        return
    mask = scan_records(data)
    if mask < -1 or mask > 0x0F:
        raise InvariantError(f"scan_records returned {mask}")
    if mask >= 0:  # the records it accepted must tile the datagram exactly
        off = 0
        while off < len(data):
            off += RECORD_HEADER_LENGTH + struct.unpack_from("!H", data, off + 11)[0]
        if off != len(data):
            raise InvariantError("records do not tile the datagram")


def _dtls_record(content: int, body: bytes, version: int = 0xFEFD) -> bytes:
    return struct.pack("!BHHIHH", content, version, 0, 0, 0, len(body)) + body


def _dtls_seeds() -> list[bytes]:
    hello = b"\x01" + (40).to_bytes(3, "big") + b"\0\0" + bytes(6) + (40).to_bytes(3, "big") + b"\xfe\xfd" + bytes(38)
    return [_dtls_record(22, hello, 0xFEFF), _dtls_record(20, b"\x01") + _dtls_record(22, bytes(40)),
            _dtls_record(21, b"\x02\x28"), _dtls_record(23, bytes(30))]


def _dtls_worst() -> list[bytes]:
    return [_dtls_record(20, b"") * 115, _dtls_record(22, bytes(1487))]


# DTLS after the record scan: OpenSSL (through pyOpenSSL) in a server endpoint, as a
# WebRtcTransport makes one for a ClientHello from its selected address.

_DTLS: dict[str, object] = {}


def _dtls_context() -> object:
    if "ctx" not in _DTLS:
        from sfu.transport.certificate import DtlsCertificate
        from sfu.transport.dtls import DtlsContext

        _DTLS["ctx"] = DtlsContext(DtlsCertificate.generate())
    return _DTLS["ctx"]


def _datagrams(data: bytes, limit: int = 16) -> list[bytes]:
    """[length: 2][datagram]... (the rest of the input when the length runs past it)."""
    out: list[bytes] = []
    pos = 0
    while pos + 2 <= len(data) and len(out) < limit:
        size = int.from_bytes(data[pos:pos + 2], "big")
        out.append(data[pos + 2:pos + 2 + size])
        pos += 2 + size
    return out


def fuzz_dtls_handshake(data: bytes) -> None:
    """DtlsEndpoint.handle_datagram of a fresh server endpoint, for each datagram of the input;
    it must never raise (the transport counts a failure by reason)."""
    from sfu.transport.dtls import DtlsEndpoint, DtlsRole, DtlsState

    sent: list[bytes] = []
    clock = [0.0]
    endpoint = DtlsEndpoint(_dtls_context(), DtlsRole.SERVER, sent.append, clock=lambda: clock[0],  # type: ignore[arg-type]
                            handshake_timeout=30.0)
    endpoint.set_remote_fingerprints([("sha-256", ":".join(["AB"] * 32))])
    for datagram in _datagrams(data):
        if datagram and is_dtls(datagram[0]):
            endpoint.handle_datagram(datagram)
        clock[0] += 0.1
        if endpoint.next_timeout() is not None:
            endpoint.handle_timeout(clock[0])
    if endpoint.state == DtlsState.CONNECTED:
        raise InvariantError("a handshake completed against a fingerprint nobody holds")
    endpoint.close()


def _dtls_flights() -> list[bytes]:
    """What a real DTLS client (our own endpoint, client role) sends in a handshake with a server."""
    from sfu.transport.certificate import DtlsCertificate
    from sfu.transport.dtls import DtlsContext, DtlsEndpoint, DtlsRole

    client_cert, server_ctx = DtlsCertificate.generate(), _dtls_context()
    to_server: list[bytes] = []
    to_client: list[bytes] = []
    client = DtlsEndpoint(DtlsContext(client_cert), DtlsRole.CLIENT, to_server.append,
                          [("sha-256", server_ctx.certificate.fingerprint("sha-256"))])  # type: ignore[attr-defined]
    server = DtlsEndpoint(server_ctx, DtlsRole.SERVER, to_client.append,  # type: ignore[arg-type]
                          [("sha-256", client_cert.fingerprint("sha-256"))])
    client.start()
    flights: list[bytes] = []
    for _ in range(6):
        batch, to_server[:] = list(to_server), []
        flights += batch
        for d in batch:
            server.handle_datagram(d)
        replies, to_client[:] = list(to_client), []
        for d in replies:
            client.handle_datagram(d)
        if not to_server:
            break
    return flights


def _dtls_handshake_seeds() -> list[bytes]:
    flights = _dtls_flights()
    framed = [len(d).to_bytes(2, "big") + d for d in flights]
    return [framed[0], b"".join(framed), framed[0] + framed[0]]


def _dtls_handshake_worst() -> list[bytes]:
    hello = _dtls_flights()[0]
    return [(len(hello).to_bytes(2, "big") + hello) * 16]


# ICE-TCP (RFC 4571): the length-prefixed framing of a TCP stream, read in arbitrary chunks.


def fuzz_tcp_framing(data: bytes) -> None:
    """FrameDecoder.feed over a TCP stream cut where the input says: data[0] picks the chunk
    size; every frame delivered must be what the stream framed, in order, nothing lost."""
    frames: list[bytes] = []
    decoder = FrameDecoder(frames.append)
    step = 1 + (data[0] if data else 0) * 7
    stream = data[1:]
    for i in range(0, len(stream), step):
        decoder.feed(stream[i:i + step])
    # the same stream parsed in one go, by hand
    expect: list[bytes] = []
    pos = 0
    while pos + 2 <= len(stream):
        size = int.from_bytes(stream[pos:pos + 2], "big")
        if pos + 2 + size > len(stream):
            break
        expect.append(stream[pos + 2:pos + 2 + size])
        pos += 2 + size
    if frames != expect:
        raise InvariantError(f"{len(frames)} frames delivered, {len(expect)} in the stream")
    if decoder.buffered != len(stream) - pos:
        raise InvariantError("the decoder holds a different remainder than the stream left")


def serve_tcp_framing(data: bytes) -> None:
    """One received TCP chunk through the decoder, as the ICE-TCP connection feeds it."""
    FrameDecoder(lambda frame: None).feed(data[1:])


def _tcp_framing_seeds() -> list[bytes]:
    stun_req = _stun_seeds()[0]
    return [b"\x00" + len(stun_req).to_bytes(2, "big") + stun_req, b"\x02" + b"\x00\x04abcd\x00\x00\x00\x01x"]


def _tcp_framing_worst() -> list[bytes]:
    return [b"\x00" + b"\x00\x00" * 4000, b"\x00" + b"\xff\xff" + bytes(7990)]


# --- RTP header, header extensions, payload descriptors ---------------------------------

# A publisher's extension ids (Chromium's numbering) -> the SFU's, as RecvStream binds them.
_EXT_MAP = bytearray(256)
_EXT_MAP[1], _EXT_MAP[2], _EXT_MAP[3], _EXT_MAP[4] = 1, 2, 3, 0
_EXT_MAP[10], _EXT_MAP[11], _EXT_MAP[12] = 0, 0, 0
_EXT_LENGTHS = bytearray(256)
_EXT_LENGTHS[1], _EXT_LENGTHS[2], _EXT_LENGTHS[3] = 1, 3, 2


def _recv_stream() -> object:
    stream = object.__new__(RecvStream)
    stream.ext_map = bytes(_EXT_MAP)
    stream.ext_lengths = bytes(_EXT_LENGTHS)
    return stream


_STREAM = _recv_stream()
_HDR = RtpHeader()


def fuzz_rtp(data: bytes) -> None:
    """Publisher.on_rtp / RecvStream.receive: header, RTX unwrap, extensions (mid, rid,
    audio level, abs-send-time, transport-cc) and their in-place renumbering."""
    if is_rtcp(data):
        return  # RFC 5761 demux: the RTCP path
    hdr = _HDR
    if not hdr.load(data):
        if parse_rtp(data) is not None:
            raise InvariantError("parse_rtp and RtpHeader.load disagree")
        return
    if hdr.payload_offset + hdr.payload_length + hdr.padding_length != len(data):
        raise InvariantError("header, payload and padding do not add up to the packet")
    hdr.csrcs()
    if hdr.payload_length >= 2:
        rtx_original_seq(hdr)
    for ext_id, off, length in hdr.extensions():
        if off + length > hdr.ext_offset + hdr.ext_length:
            raise InvariantError(f"extension {ext_id} runs past the extension block")
        rtp_ext.read_sdes_id(data, off, length)
        rtp_ext.read_audio_level(data, off, length)
        rtp_ext.read_abs_send_time(data, off, length)
        rtp_ext.read_twcc_seq(data, off, length)
    for ext_id in (1, 2, 3, 4, 10, 11, 12, 255):
        hdr.find_extension(ext_id)
    pkt = bytearray(data)
    if hdr.extension:
        RecvStream.translate_ext_into(_STREAM, pkt, hdr)  # type: ignore[arg-type]
        if len(pkt) != len(data) or pkt[hdr.payload_offset:] != data[hdr.payload_offset:]:
            raise InvariantError("renumbering the extensions changed the packet outside the extension block")
        loc = _find_one_byte(pkt, hdr, 1)
        if loc is not None:
            rtp_ext.read_audio_level(pkt, loc[0], loc[1])
    end = hdr.payload_offset + hdr.payload_length
    is_vp8_keyframe(data, hdr.payload_offset, end)
    is_h264_keyframe(data, hdr.payload_offset, end)


def serve_rtp(data: bytes) -> None:
    """The parsing RecvStream.receive does per packet: the header, the extension renumbering,
    the audio level, the keyframe check."""
    hdr = _HDR
    if is_rtcp(data) or not hdr.load(data):
        return
    end = hdr.payload_offset + hdr.payload_length
    is_vp8_keyframe(data, hdr.payload_offset, end)
    pkt = bytearray(data)
    if hdr.extension:
        RecvStream.translate_ext_into(_STREAM, pkt, hdr)  # type: ignore[arg-type]
        loc = _find_one_byte(pkt, hdr, 1)
        if loc is not None:
            rtp_ext.read_audio_level(pkt, loc[0], loc[1])


def _rtp_seeds() -> list[bytes]:
    vp8 = build_vp8_descriptor(start=True, picture_id=1234, tl0picidx=7, tid=1, layer_sync=True, keyidx=3)
    return [
        build_rtp(111, 1, 960, 0x1234, b"\xfc" * 40, extensions=[(1, b"\x85"), (2, b"\x01\x02\x03"), (3, b"\0\x07"),
                                                                 (4, b"0")]),
        build_rtp(96, 2, 3000, 0x5678, vp8 + b"\x10\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01" + bytes(20), marker=True,
                  extensions=[(10, b"q"), (11, b"h"), (3, b"\0\x08"), (2, b"\1\2\3")]),
        build_rtp(97, 3, 3000, 0x9ABC, b"\x00\x02" + vp8, extensions=[(12, b"q")], two_byte=True),
        build_rtp(102, 4, 0, 1, b"\x7c\x85" + bytes(30), csrcs=[1, 2, 3], padding=4),
        build_rtp(102, 5, 0, 1, b"\x78\x00\x04\x67\x42\x00\x1f\x00\x02\x68\xce", raw_extension=(0x1234, bytes(8))),
        build_rtp(96, 6, 0, 1, b"", padding=200),
    ]


def _rtp_worst() -> list[bytes]:
    return [
        build_rtp(96, 1, 0, 1, bytes(1000), csrcs=list(range(15)), extensions=[(i % 14 + 1, b"\x41") for i in range(150)]),
        build_rtp(96, 1, 0, 1, bytes(100), raw_extension=(0xBEDE, b"\x00" * 1200)),
        build_rtp(96, 1, 0, 1, bytes(100), raw_extension=(0x1000, b"\x01\x00" * 600)),
        build_rtp(96, 1, 0, 1, b"\x78" + b"\x00\x01\x65" * 400),
    ]


def fuzz_vp8(data: bytes) -> None:
    """The VP8 payload descriptor: RecvStream's keyframe check and the descriptor parse the
    picture-id rewriting uses."""
    for start in (0, 1):
        end = len(data)
        desc = parse_vp8(data, start, end)
        quick = is_vp8_keyframe(data, start, end)
        if desc is None:
            if quick:
                raise InvariantError("is_vp8_keyframe says keyframe for a malformed descriptor")
            continue
        if quick != desc.keyframe:
            raise InvariantError("is_vp8_keyframe and parse_vp8 disagree")
        if not start <= desc.payload_offset < end:
            raise InvariantError("VP8 payload offset out of the packet")
        for off in (desc.picture_id_offset, desc.tl0picidx_offset):
            if off != -1 and not start < off < desc.payload_offset:
                raise InvariantError("a VP8 field offset outside the descriptor")
        vp8_keyframe_size(data, desc.payload_offset, end)


def _vp8_seeds() -> list[bytes]:
    key = b"\x10\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01"
    return [build_vp8_descriptor(start=True) + key,
            build_vp8_descriptor(start=True, picture_id=0x1234, tl0picidx=3, tid=2, layer_sync=True, keyidx=5) + key,
            build_vp8_descriptor(start=False, partition_id=1, picture_id=5) + b"\x01\x02",
            b"\x90\x80\x05\x00"]


def fuzz_h264(data: bytes) -> None:
    """H.264 payload (RFC 6184): single NAL, STAP-A, FU-A, as the keyframe check reads them."""
    for start in (0, 1):
        end = len(data)
        is_h264_keyframe(data, start, end)
        kind = nal_type(data, start, end)
        types = stap_a_nal_types(data, start, end)
        if types is not None and (kind != 24 or not types or any(not 0 <= t <= 31 for t in types)):
            raise InvariantError("STAP-A types from a non-STAP-A payload")
        fu = fu_a_header(data, start, end)
        if fu is not None and kind != 28:
            raise InvariantError("FU-A header from a non-FU-A payload")


def _h264_seeds() -> list[bytes]:
    sps = b"\x67\x42\x00\x1f\xe9\x02\xc1\x2c\x80"
    pps = b"\x68\xce\x06\xe2"
    stap = b"\x78" + len(sps).to_bytes(2, "big") + sps + len(pps).to_bytes(2, "big") + pps
    return [stap, b"\x7c\x85" + bytes(20), b"\x7c\x45" + bytes(20), b"\x65\x88\x84", b"\x41\x9a\x00"]


def _h264_worst() -> list[bytes]:
    return [b"\x78" + b"\x00\x01\x65" * 500, b"\x00\x78" + b"\x00\x01\x65" * 500]


# --- RTCP ----------------------------------------------------------------------------------


def serve_rtcp(data: bytes) -> None:
    """What Publisher.on_rtcp and Subscriber.on_rtcp do with a datagram, minus the
    DownTracks: walk it with CompoundReader and read what they read of each packet."""
    reader = CompoundReader(data)
    for p in reader:
        if isinstance(p, SenderReport):
            p.ssrc, p.ntp_timestamp, p.rtp_timestamp  # noqa: B018
        if isinstance(p, ReceiverReport | SenderReport):
            for block in p.reports:
                block.ssrc, block.fraction_lost, block.packets_lost, block.jitter, block.lsr, block.dlsr  # noqa: B018
        elif isinstance(p, Nack):
            for _pid, _blp in p.pairs:
                pass
        elif isinstance(p, Pli):
            p.media_ssrc  # noqa: B018
        elif isinstance(p, Fir):
            for _ssrc, _seq in p.entries:
                pass
        elif isinstance(p, Remb):
            p.bitrate  # noqa: B018
        elif isinstance(p, TransportFeedback):
            p.status_count, p.received_count  # noqa: B018  (kept whole for the allocator)
    if reader.error is not None and not isinstance(reader.error, str):
        raise InvariantError(f"CompoundReader: reason {reader.error!r}")


TWCC_RECORDS_CHECKED = 512  # lazily decoded TWCC records checked per call of _use (keeps exec/s up)


def _use(packets: list[object]) -> None:
    """Everything a parsed packet offers, beyond what the server reads today."""
    budget = TWCC_RECORDS_CHECKED
    for p in packets:
        if isinstance(p, Nack):
            p.seqs()
        elif isinstance(p, TransportFeedback) and budget > 0:
            n = received = 0
            for _seq, got, _delta in itertools.islice(p.records(), budget):
                n += 1
                received += got
            budget -= n
            if n > p.status_count or (n == p.status_count and received != p.received_count):
                raise InvariantError("TWCC records disagree with the parsed counts")
        elif isinstance(p, SourceDescription):
            for chunk in p.chunks:
                chunk.cname  # noqa: B018
        repr(p)


def fuzz_rtcp_compound(data: bytes) -> None:
    """Participant.on_rtcp: a whole (decrypted) SRTCP datagram through CompoundReader as the
    server walks it, then parse_compound and every packet's accessors."""
    serve_rtcp(data)
    packets, error = parse_compound(data)
    if error is not None and not isinstance(error, str):
        raise InvariantError(f"parse_compound: reason {error!r}")
    _use(list(packets))


def _rtcp_header(pt: int, fmt: int, body: bytes, padding: bool = False) -> bytes:
    body = body + b"\0" * (-len(body) % 4)
    if padding:
        body += b"\0\0\0\x04"
    return struct.pack("!BBH", 0x80 | (0x20 if padding else 0) | fmt, pt, len(body) // 4) + body


def _typed(parse: Callable[..., object | None], pt: int, fmt: int) -> Target:
    def target(data: bytes) -> None:
        # data[0]: bit 0 the RTCP padding flag of the framed packet, bits 3-7 its count field
        # (for SR, RR, SDES, BYE; feedback keeps its FMT); data[1:] the body. The raw bytes
        # are tried too, at offset 0, and the framed packet inside a compound after an RR.
        framed = _framer(pt, fmt)(data)[0]
        p = parse(framed, 0)
        if p is not None:
            _use([p])  # every accessor once (the lazily decoded TWCC records are the costly part)
        parse(data, 0)
        parse(_rtcp_header(PT_RR, 0, b"\0\0\0\1") + framed, 8)
        serve_rtcp(framed)
        parse_compound(framed)

    target.__doc__ = f"{parse.__qualname__} on a framed packet (PT {pt}, FMT {fmt}) and raw."
    return target


def _framer(pt: int, fmt: int) -> Callable[[bytes], list[bytes]]:
    def wire(data: bytes) -> list[bytes]:
        first = data[0] if data else 0
        return [_rtcp_header(pt, first >> 3 if fmt < 0 else fmt, data[1:], padding=bool(first & 1))]

    return wire


def _compound_seeds() -> list[bytes]:
    block = ReportBlock(0x1111, 12, 34, 0x10005, 77, 0x12345678, 0x10000)
    sr = SenderReport(0x2222, 0x0102030405060708, 90000, 10, 1000, [block])
    rr = ReceiverReport(0x3333, [block, block])
    sdes = SourceDescription.with_cname(0x2222, "telesfu-abcd")
    nack = Nack.from_seqs(1, 2, [100, 101, 105, 120, 400])
    twcc = TransportFeedback(1, 2, 65530, 1234, 5, [(65530 + i & 0xFFFF, i % 3 != 0, 250 * (i % 7)) for i in range(20)])
    twcc_big = TransportFeedback(1, 2, 7, 99, 1, [(7 + i, True, -2000 if i == 3 else 500) for i in range(40)])
    pli, fir = Pli(1, 2), Fir(1, [(2, 7), (3, 8)])
    remb = Remb(1, 1_500_000, [2, 3])
    bye = Bye([1, 2], b"bye")
    singles = [p.to_bytes() for p in (sr, rr, sdes, nack, twcc, twcc_big, pli, fir, remb, bye)]
    return [*singles, sr.to_bytes() + sdes.to_bytes(), rr.to_bytes() + nack.to_bytes() + pli.to_bytes(),
            rr.to_bytes() + twcc.to_bytes() + remb.to_bytes() + fir.to_bytes() + bye.to_bytes(),
            _rtcp_header(204, 1, b"\0\0\0\1name" + bytes(8)), _rtcp_header(207, 0, bytes(12))]


def _twcc_bomb(packets: int) -> bytes:
    """The issue's "status count bomb": transport-cc packets claiming 65,535 statuses each,
    backed by two run-length chunks of 8,191 "not received" (the parser repeats the last)."""
    one = _rtcp_header(PT_RTPFB, FMT_TWCC, struct.pack("!IIHHI", 1, 2, 0, 0xFFFF, 0) + struct.pack("!H", 0x1FFF) * 9)
    return one * packets


def _nack_bomb() -> bytes:
    return _rtcp_header(PT_RTPFB, FMT_NACK, struct.pack("!II", 1, 2) + struct.pack("!HH", 100, 0xFFFF) * 365)


def _rtcp_worst() -> list[bytes]:
    sdes_many = _rtcp_header(PT_SDES, 31, b"".join(struct.pack("!I", i) + b"\x01\x01x\x00\x00\x00" for i in range(31)))
    return [
        _twcc_bomb(1), _twcc_bomb(14), _nack_bomb(),
        _rtcp_header(PT_RR, 31, bytes(4 + 24 * 31)) * 2,
        _rtcp_header(PT_PSFB, FMT_PLI, bytes(8)) * 150,
        _rtcp_header(PT_PSFB, FMT_FIR, bytes(8) + bytes(8) * 180),
        _rtcp_header(PT_PSFB, FMT_AFB, bytes(8) + b"REMB\xff\x3f\xff\xff" + bytes(4 * 255)),
        sdes_many, _rtcp_header(PT_BYE, 31, bytes(4 * 31) + b"\xff" + b"x" * 255),
    ]


def _typed_seeds(pt: int, fmt: int) -> Callable[[], list[bytes]]:
    def seeds() -> list[bytes]:
        out = []
        for pkt in _compound_seeds():
            if len(pkt) >= 4 and pkt[1] == pt and (fmt < 0 or pkt[0] & 0x1F == fmt):
                size = 4 * (struct.unpack_from("!H", pkt, 2)[0] + 1)
                out.append(bytes([(pkt[0] & 0x1F) << 3]) + pkt[4:size])
        return out or [b"\0" + bytes(24)]

    return seeds


def _typed_worst(pt: int, fmt: int) -> Callable[[], list[bytes]]:
    def worst() -> list[bytes]:
        out = []
        for pkt in _rtcp_worst():
            if pkt[1] == pt and (fmt < 0 or pkt[0] & 0x1F == fmt):
                size = 4 * (struct.unpack_from("!H", pkt, 2)[0] + 1)
                out.append(bytes([(pkt[0] & 0x1F) << 3]) + pkt[4:size])
        return out

    return worst


# --- the packet path as a whole: a publisher's stream forwarded to two subscribers ----------


class _SrtpSink:
    """A subscriber's transport minus the socket: protects each packet with a real SRTP
    context (as WebRtcTransport.send_rtp does) and counts it."""

    __slots__ = ("srtp", "sent", "sent_bytes", "connected")

    def __init__(self) -> None:
        from sfu.transport.srtp import SRTP_PROFILES, SrtpContext

        prof = SRTP_PROFILES[7]  # AEAD_AES_128_GCM
        self.srtp = SrtpContext(prof, bytes(range(prof.master_length)), bytes(prof.master_length))
        self.sent = self.sent_bytes = 0
        self.connected = True

    def send_rtp(self, buf: bytes | bytearray) -> bool:
        self.sent += 1
        self.sent_bytes += len(self.srtp.protect_rtp(buf))  # type: ignore[arg-type]
        return True

    send_rtcp = send_rtp


PUB_SSRC, PUB_RTX_SSRC, SUB_SSRCS = 0x1234, 0x1235, (1000, 1001)


def _packet_path() -> tuple[object, object, list[object], list[_SrtpSink], list[float]]:
    from sfu.sdp import (
        URI_ABS_SEND_TIME,
        URI_AUDIO_LEVEL,
        URI_MID,
        URI_TRANSPORT_CC,
        NegotiatedCodec,
    )

    now = [0.0]
    counters = WorkerCounters()
    codec = NegotiatedCodec("video", "VP8", 96, 90000, rtx_payload_type=97)
    track = PublishedTrack("pub:video:0", "pub", "video", codec, lambda s: None, None)
    forwarded = {URI_ABS_SEND_TIME: 2, URI_TRANSPORT_CC: 3}
    ext_map = build_ext_map({URI_AUDIO_LEVEL: 1, URI_ABS_SEND_TIME: 2, URI_TRANSPORT_CC: 3, URI_MID: 4}, forwarded)
    stream = RecvStream(track, PUB_SSRC, PUB_RTX_SSRC, 96, 97, 90000, "VP8", ext_map, 0, True, counters,
                        build_ext_lengths(forwarded))
    track.set_source(stream, 0.0)
    from sfu.sdp import DEFAULT_CAPABILITIES

    def no_transport(*_args: object) -> object:
        raise AssertionError("the fuzz target makes no transports")

    publish = Publisher("pub", True, no_transport, counters, lambda: now[0],  # type: ignore[arg-type]
                        DEFAULT_CAPABILITIES, DEFAULT_CAPABILITIES, RoomHooks(), 1)
    publish.streams = {PUB_SSRC: stream, PUB_RTX_SSRC: stream}
    subscribe = Subscriber("sub", True, no_transport, counters, lambda: now[0],  # type: ignore[arg-type]
                           DEFAULT_CAPABILITIES, RoomHooks())
    sinks: list[_SrtpSink] = []
    for k, ssrc in enumerate(SUB_SSRCS):
        sink = _SrtpSink()
        dt = DownTrack(track, f"sub{k}", sink, ssrc, ssrc + 100, "cname", counters)
        dt.bind(str(k), 96, 97, True)
        track.add_downtrack(dt)
        subscribe.by_ssrc[ssrc] = dt
        sinks.append(sink)
    return publish, subscribe, [stream], sinks, now


def _frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """An input as a sequence of datagrams: [kind | ms << 2][length: 2][datagram]..., kind 0 RTP
    from the publisher, 1 RTCP from the publisher, 2 RTCP from a subscriber, 3 a NACK tick."""
    out: list[tuple[int, int, bytes]] = []
    pos = 0
    while pos + 3 <= len(data) and len(out) < 64:
        head = data[pos]
        size = int.from_bytes(data[pos + 1:pos + 3], "big")
        body = data[pos + 3:pos + 3 + size]
        out.append((head & 3, head >> 2, body))
        pos += 3 + len(body)
    return out


def fuzz_packet_path(data: bytes) -> None:
    """Publisher.on_rtp/on_rtcp and Subscriber.on_rtcp over one publisher stream (with RTX)
    and two subscribers' DownTracks: receive stats, NACK generation, retransmission buffer,
    keyframes, extension renumbering, forwarding, NACK/PLI/FIR/RR/REMB/TWCC from subscribers."""
    publish, subscribe, streams, sinks, now = _packet_path()
    stream = streams[0]
    for kind, ms, body in _frames(data):
        now[0] += ms / 1000
        if kind == 0:
            publish.on_rtp(body)  # type: ignore[attr-defined]
        elif kind == 1:
            publish.on_rtcp(body)  # type: ignore[attr-defined]
        elif kind == 2:
            subscribe.on_rtcp(body)  # type: ignore[attr-defined]
        else:
            stream.nack.tick(now[0], 0.05)  # type: ignore[attr-defined]
            stream.nack.take_keyframe_request()  # type: ignore[attr-defined]
            stream.keyframe_requester.tick(now[0])  # type: ignore[attr-defined]
            stream.report_block(now[0])  # type: ignore[attr-defined]


def _frame(kind: int, body: bytes, ms: int = 1) -> bytes:
    return bytes([kind | ms << 2]) + len(body).to_bytes(2, "big") + body


def _packet_path_seeds() -> list[bytes]:
    vp8 = build_vp8_descriptor(start=True, picture_id=100)
    key = b"\x10\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01" + bytes(60)
    delta = b"\x11\x02\x00" + bytes(60)
    exts = [(1, b"\x85"), (2, b"\1\2\3"), (3, b"\0\7"), (4, b"0")]
    rtp = [build_rtp(96, 10 + i, 3000 * i, PUB_SSRC, vp8 + (key if i == 0 else delta), extensions=exts,
                     marker=True) for i in range(6)]
    rtx = build_rtp(97, 500, 3000, PUB_RTX_SSRC, (12).to_bytes(2, "big") + vp8 + delta, extensions=exts)
    sr = SenderReport(PUB_SSRC, 0x0102030405060708, 90000, 10, 1000).to_bytes()
    nack = Nack.from_seqs(5, SUB_SSRCS[0], [0, 1, 2, 3]).to_bytes()
    pli, fir = Pli(5, SUB_SSRCS[1]).to_bytes(), Fir(5, [(SUB_SSRCS[0], 1)]).to_bytes()
    rr = ReceiverReport(5, [ReportBlock(SUB_SSRCS[0], 10, 2, 5, 3, 0, 0)]).to_bytes()
    remb = Remb(5, 500_000, [SUB_SSRCS[0]]).to_bytes()
    twcc = TransportFeedback(5, 0, 7, 1, 1, [(7 + i, True, 250) for i in range(5)]).to_bytes()
    stream_in = b"".join(_frame(0, p, 33) for p in (rtp[0], rtp[1], rtp[3], rtp[4]))
    return [
        stream_in + _frame(3, b"", 60) + _frame(0, rtx) + _frame(1, sr) + _frame(2, nack) + _frame(2, rr + remb),
        stream_in + _frame(2, pli) + _frame(2, fir) + _frame(2, twcc) + _frame(0, rtp[5], 63),
        b"".join(_frame(0, p, 1) for p in rtp) + _frame(2, rr + nack + pli),
    ]


def _packet_path_worst() -> list[bytes]:
    vp8 = build_vp8_descriptor(start=True, picture_id=100)
    key, delta = b"\x10\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01", b"\x11\x02\x00"
    pkts = b"".join(_frame(0, build_rtp(96, i, 3000 * i, PUB_SSRC, vp8 + (key if i == 0 else delta) + bytes(1000)), 1)
                    for i in range(40))
    # issue 8 item 2: one NACK listing (pid, blp=0xFFFF) many times, after 40 packets were stored
    nack = _rtcp_header(PT_RTPFB, FMT_NACK, struct.pack("!II", 5, SUB_SSRCS[0]) + struct.pack("!HH", 1, 0xFFFF) * 300)
    return [pkts + _frame(2, nack), pkts + _frame(2, _twcc_bomb(10))]


# --- SDP and the publish offer it answers -----------------------------------------------

SDP_LOCAL = LocalTransportParams(
    ice_ufrag="sfuUfrag", ice_pwd="sfuPasswordSfuPassword1234",
    fingerprint=Fingerprint("sha-256", ":".join(["5A"] * 32)),
    candidates=(("127.0.0.1", 40000), ("::1", 40000)), session_id=4242,
)


def _text(data: bytes) -> str:
    # The signaling server hands the SDP over as a JSON string: any Unicode text.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def fuzz_sdp(data: bytes) -> None:
    """Participant.apply_publish_offer without the transport: check_publish_text, parse_sdp,
    check_publish_limits, answer_publish_offer (then again as a renegotiation), the answer's
    text. SdpError is the refusal."""
    text = _text(data)
    try:
        check_publish_text(text)
        offer = parse_sdp(text)
        check_publish_limits(offer)
    except SdpError as exc:
        if not exc.code or not exc.message:
            raise InvariantError("SdpError without code or message") from exc
        return
    offer.to_text()
    try:
        answer, params = answer_publish_offer(offer, SDP_LOCAL, DEFAULT_CAPABILITIES)
        answer.to_text()
        again, _ = answer_publish_offer(offer, SDP_LOCAL, DEFAULT_CAPABILITIES, answer)
        again.to_text()
    except SdpError as exc:
        if not exc.code or not exc.message:
            raise InvariantError("SdpError without code or message") from exc


def serve_sdp(data: bytes) -> None:
    """One publish offer as the server answers it (no renegotiation)."""
    text = _text(data)
    try:
        check_publish_text(text)
        offer = parse_sdp(text)
        check_publish_limits(offer)
        answer_publish_offer(offer, SDP_LOCAL, DEFAULT_CAPABILITIES)[0].to_text()
    except SdpError:
        pass


_SUB_OFFER = build_subscribe_offer(SDP_LOCAL, [
    OutTrack("audio", "pub", "pub:audio:0", 1, NegotiatedCodec("audio", "opus", 111, 48000, 2, (("useinbandfec", "1"),))),
    OutTrack("video", "pub", "pub:video:0", 2, NegotiatedCodec("video", "VP8", 96, 90000, rtx_payload_type=97),
             rtx_ssrc=3),
])


def fuzz_sdp_subscribe_answer(data: bytes) -> None:
    """Participant.apply_subscribe_answer without the transport: check_subscribe_answer_text,
    parse_sdp, then the answer checked against the SFU's offer (two tracks). SdpError is the
    refusal."""
    try:
        text = _text(data)
        check_subscribe_answer_text(text, _SUB_OFFER)
        params = apply_subscribe_answer(_SUB_OFFER, parse_sdp(text))
    except SdpError as exc:
        if not exc.code or not exc.message:
            raise InvariantError("SdpError without code or message") from exc
        return
    mids = {m.mid for m in _SUB_OFFER.media}
    if not {t.mid for t in params.tracks} <= mids:
        raise InvariantError("the answer accepted a track the offer did not have")


def _subscribe_answer_seeds() -> list[bytes]:
    answer = (_SUB_OFFER.to_text().replace("a=sendonly", "a=recvonly").replace("a=setup:actpass", "a=setup:active")
              .replace("a=ice-lite\r\n", ""))
    return [answer.encode(), answer.replace("a=recvonly", "a=inactive", 1).encode(),
            *[f for f in _sdp_fixtures() if b"a=recvonly" in f]]


def _sdp_fixtures() -> list[bytes]:
    seen: dict[str, bytes] = {}
    for folder in SDP_FIXTURE_DIRS:
        if folder.is_dir():
            for path in sorted(folder.glob("*.sdp")):
                seen.setdefault(path.name, path.read_bytes())
    return list(seen.values())


def _sdp_seeds() -> list[bytes]:
    minimal = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
               "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\n"
               "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
               f"a=fingerprint:sha-256 {':'.join(['AB'] * 32)}\r\na=setup:actpass\r\n"
               "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=ssrc:1 cname:x\r\n")
    return [minimal.encode(), *_sdp_fixtures()]


def _sdp_worst() -> list[bytes]:
    out = []
    fixtures = _sdp_fixtures()
    if fixtures:
        text = fixtures[0].decode()
        head, _, rest = text.partition("m=")
        video = "m=" + rest.split("m=")[-1]
        many = head + "".join(video.replace("a=mid:", f"a=mid:x{i}") for i in range(12))
        out.append(many.encode())
        out.append((text + "a=x-pad:" + "y" * 8000 + "\r\n").encode())
    out.append(("v=0\r\n" + "a=candidate:1 1 udp 1 1.2.3.4 9 typ host\r\n" * 600).encode())
    if fixtures:  # issue 8 item 11: as many video m-sections as a 200 KB signaling frame holds
        text = fixtures[0].decode()
        head, _, rest = text.partition("m=")
        video = "m=" + rest.split("m=")[-1]
        n = (200 * 1024 - len(head)) // (len(video) + 8)
        out.append((head + "".join(video.replace("a=mid:", f"a=mid:x{i}") for i in range(n))).encode())
    return out


# --- signaling frames --------------------------------------------------------------------


def fuzz_signaling(data: bytes) -> None:
    """SignalingSession's frame parse: every text frame a WebSocket client sends."""
    try:
        parse_signaling(_text(data))
    except ProtocolError as exc:
        if not exc.code:
            raise InvariantError("ProtocolError without a code") from exc
    try:
        parse_signaling(data)  # a binary frame
    except ProtocolError:
        pass


def _signaling_seeds() -> list[bytes]:
    frames = [{"type": "join", "token": "eyJhbGciOiJIUzI1NiJ9.e30.sig"}, {"type": "publish_offer", "sdp": "v=0\r\n"},
              {"type": "subscribe_answer", "sdp": "v=0"}, {"type": "mute", "track_id": "audio", "muted": True},
              {"type": "admit", "participant_id": "c1"}, {"type": "admit_all"},
              {"type": "deny", "participant_id": "c1", "reason": "no"}, {"type": "remove", "participant_id": "c1"},
              {"type": "mute_participant", "participant_id": "c1", "kind": "video", "muted": False},
              {"type": "end_session"}, {"type": "leave"}, {"type": "ping"}, {"type": 7}, [1, 2]]
    return [json.dumps(f).encode() for f in frames]


def _json_worst(limit: int = MAX_FRAME_BYTES) -> list[bytes]:
    """Deep, long-number and large documents, the largest at the size limit (a signaling frame's
    MAX_FRAME_BYTES, a request body's http.max_body_bytes), and documents of as many tiny
    values as jsonparse.MAX_VALUES lets through."""
    zeros = b"[" + b"0," * ((limit - 2) // 2 - 1) + b"0]"
    objects = b"[" + b",".join([b"{}"] * ((limit - 2) // 3)) + b"]"
    sdp = json.dumps({"type": "publish_offer", "sdp": "a" * (limit - 64)}).encode()
    n = MAX_VALUES - 2  # the most values a document may hold, each as costly as a value can be
    e = MAX_VALUES // 2 - 2  # an empty array or object counts as two
    within = [b"[" + b",".join([b"{}"] * e) + b"]", b"[" + b",".join([b"[]"] * e) + b"]",
              b"[" + b",".join([b"1.5"] * n) + b"]", b"[" + b",".join([b'"\\ud83d\\ude00"'] * n) + b"]",
              b"[" + b",".join([b'"' + b"\\u0100" * ((limit - 2) // n // 6 - 1) + b'"'] * n) + b"]",
              b"[" * (MAX_DEPTH - 1) + b",".join([b"{}"] * (e - MAX_DEPTH)) + b"]" * (MAX_DEPTH - 1),
              b'{"type":"deny","participant_id":"c1","reason":"' + b"\\\"" * ((limit - 80) // 2) + b'"}']
    return [b"[" * 50_000 + b"]" * 50_000, b'{"type":"ping","n":' + b"9" * 4400 + b"}", b'{"type":"ping","n":1e99999}',
            b'"' + b"\\u0041" * 20_000 + b'"', b"[" + b"0," * 30_000 + b"0]", zeros, objects, sdp, *within]


def _signaling_worst() -> list[bytes]:
    return [*_json_worst(), b"[" + b",".join([b"{}"] * ((256 * 1024 - 2) // 3)) + b"]"]  # the old frame limit


# --- the control API's request bodies ------------------------------------------------------

_CONTROL_BODIES = ("provider", "client", "appointment", "token", "action_reason", "action_mute", "action_none")


def fuzz_control_api(data: bytes) -> None:
    """read_json then the body validators of control/api/app.py; data[0] picks the endpoint,
    data[1:] is the raw request body. RequestError (a 400/422 with a code) is the refusal."""
    if not data:
        return
    which = _CONTROL_BODIES[data[0] % len(_CONTROL_BODIES)]
    raw = data[1:]
    try:
        body = parse_json_body(raw, optional=which.startswith("action"))
        if which == "provider":
            provider_from_body(check_id("p1", "provider id"), body).to_json()
        elif which == "client":
            client_from_body("c1", body).to_json()
        elif which == "appointment":
            appointment_from_body("a1", body, 10).to_json()
        elif which == "token":
            token_request(body)
        elif which == "action_reason":
            action_body(body, {"reason"})
        elif which == "action_mute":
            action_body(body, {"kind", "muted"})
        else:
            action_body(body, set())
    except RequestError as exc:
        if not exc.code or exc.status not in (400, 413, 422):
            raise InvariantError(f"RequestError {exc.status} {exc.code!r}") from exc


def _control_seeds() -> list[bytes]:
    bodies = [
        (0, {"name": "Dr. A", "teletherapy_enabled": True, "waiting_room_enabled": False}),
        (1, {"name": "Client B", "portal_account_active": True}),
        (2, {"provider_id": "p1", "client_ids": ["c1", "c2"], "telehealth": True,
             "starts_at": "2026-01-02T15:04:05Z", "ends_at": "2026-01-02T16:04:05+01:00", "status": "scheduled",
             "max_participants": 4}),
        (3, {"participant_id": "c1"}), (4, {"reason": "late"}), (5, {"kind": "audio", "muted": True}), (6, {}),
    ]
    return [bytes([i]) + json.dumps(b).encode() for i, b in bodies] + [b"\x06"]


def _control_worst() -> list[bytes]:
    out = [bytes([i]) + w for i in (0, 2) for w in _json_worst(64 * 1024)]  # http.max_body_bytes
    out.append(b"\x02" + json.dumps({"provider_id": "p1", "client_ids": [f"c{i}" for i in range(99)], "telehealth": True,
                                     "starts_at": "2026-01-02T15:04:05Z", "ends_at": "2026-01-02T16:04:05Z"}).encode())
    return out


def _rtcp_target(name: str, parse: Callable[..., object | None], pt: int, fmt: int, module: str) -> FuzzTarget:
    """One RTCP type: its body framed with a valid header (so the fuzzer works on the body),
    raw, and inside a compound; the cost is that framed packet through parse_compound."""
    return FuzzTarget(name, _typed(parse, pt, fmt), _typed_seeds(pt, fmt), _typed_worst(pt, fmt), 1500,
                      f"sfu/rtp/rtcp/{module} {parse.__qualname__}, via parse_compound too",
                      _framer(pt, fmt), serve_rtcp)


def _itself(data: bytes) -> list[bytes]:
    return [data]


def _none() -> list[bytes]:
    return []


TARGETS: dict[str, FuzzTarget] = {
    t.name: t
    for t in (
        FuzzTarget("stun", fuzz_stun, _stun_seeds, _stun_worst, 1500,
                   "sfu/transport/stun.py parse/verify, ice_lite.py IceLiteRegistry.handle_stun",
                   _stun_wire, serve_stun),
        FuzzTarget("dtls", fuzz_dtls, _dtls_seeds, _dtls_worst, 1500,
                   "sfu/transport/dtls.py is_dtls, scan_records (record headers before OpenSSL)"),
        FuzzTarget("dtls_handshake", fuzz_dtls_handshake, _dtls_handshake_seeds, _dtls_handshake_worst, 4096,
                   "sfu/transport/dtls.py DtlsEndpoint.handle_datagram (server): OpenSSL behind the record scan"),
        FuzzTarget("tcp_framing", fuzz_tcp_framing, _tcp_framing_seeds, _tcp_framing_worst, 8192,
                   "sfu/transport/tcp_framing.py FrameDecoder (ICE-TCP, RFC 4571), fed in chunks",
                   _itself, serve_tcp_framing),
        FuzzTarget("rtp", fuzz_rtp, _rtp_seeds, _rtp_worst, 1500,
                   "sfu/rtp/packet.py RtpHeader, extensions; ext.py readers; RecvStream.translate_ext_into",
                   _itself, serve_rtp),
        FuzzTarget("vp8", fuzz_vp8, _vp8_seeds, _none, 1500, "sfu/rtp/vp8.py descriptor, keyframe check, size"),
        FuzzTarget("h264", fuzz_h264, _h264_seeds, _h264_worst, 1500, "sfu/rtp/h264.py NAL, STAP-A, FU-A"),
        FuzzTarget("rtcp_compound", fuzz_rtcp_compound, _compound_seeds, _rtcp_worst, 1500,
                   "sfu/rtp/rtcp/compound.py CompoundReader, parse_compound and every type behind it",
                   _itself, serve_rtcp),
        _rtcp_target("rtcp_sr", SenderReport.parse, PT_SR, -1, "sr.py"),
        _rtcp_target("rtcp_rr", ReceiverReport.parse, PT_RR, -1, "rr.py"),
        _rtcp_target("rtcp_sdes", SourceDescription.parse, PT_SDES, -1, "sdes.py"),
        _rtcp_target("rtcp_bye", Bye.parse, PT_BYE, -1, "bye.py"),
        _rtcp_target("rtcp_nack", Nack.parse, PT_RTPFB, FMT_NACK, "nack.py"),
        _rtcp_target("rtcp_twcc", TransportFeedback.parse, PT_RTPFB, FMT_TWCC, "twcc.py"),
        _rtcp_target("rtcp_pli", Pli.parse, PT_PSFB, FMT_PLI, "pli.py"),
        _rtcp_target("rtcp_fir", Fir.parse, PT_PSFB, FMT_FIR, "fir.py"),
        _rtcp_target("rtcp_remb", Remb.parse, PT_PSFB, FMT_AFB, "remb.py"),
        FuzzTarget("packet_path", fuzz_packet_path, _packet_path_seeds, _packet_path_worst, 16384,
                   "sfu/routing publisher.py, subscriber.py, stream.py, track.py, downtrack.py, "
                   "sfu/nack.py: a stream of datagrams through the routing layer"),
        FuzzTarget("signaling", fuzz_signaling, _signaling_seeds, _signaling_worst, 65536,
                   "signaling/protocol.py parse_message"),
        FuzzTarget("control_api", fuzz_control_api, _control_seeds, _control_worst, 65536,
                   "control/api/validation.py parse_json_body and the body validators"),
        FuzzTarget("sdp", fuzz_sdp, _sdp_seeds, _sdp_worst, 16384,
                   "sfu/sdp/parser.py parse_sdp, publish.py answer_publish_offer", None, None),
        FuzzTarget("sdp_subscribe_answer", fuzz_sdp_subscribe_answer, _subscribe_answer_seeds, _sdp_worst, 16384,
                   "sfu/sdp/parser.py parse_sdp, subscribe.py apply_subscribe_answer"),
    )
}
