"""Passive ICE-TCP candidates (RFC 6544) in the SFU's SDP: after the UDP ones, lower priority."""

from __future__ import annotations

from dataclasses import replace

from sfu.sdp.model import MediaSection
from sfu.sdp.parser import parse_sdp
from sfu.sdp.transport import host_candidates, write_local_transport

from .conftest import LOCAL


def test_tcp_candidates_follow_udp_ones_with_lower_priority() -> None:
    local = replace(LOCAL, tcp_candidates=(("127.0.0.1", 40000), ("::1", 40000)))
    local.validate()
    cands = host_candidates(local)
    assert [(c.transport, c.address, c.port) for c in cands] == [
        ("udp", "127.0.0.1", 40000), ("udp", "::1", 40000), ("tcp", "127.0.0.1", 40000), ("tcp", "::1", 40000)]
    assert len({c.foundation for c in cands}) == 4
    udp_low = min(c.priority for c in cands if c.transport == "udp")
    tcp = [c for c in cands if c.transport == "tcp"]
    assert all(c.priority < udp_low for c in tcp)
    assert tcp[0].priority > tcp[1].priority  # the configured order holds within TCP too
    # type preference host (126), direction passive (4) << 13, component 1
    assert tcp[0].priority == (126 << 24) | (((4 << 13) | 8191) << 8) | 255
    assert tcp[0].to_value().endswith("typ host tcptype passive generation 0")


def test_no_tcp_candidates_by_default() -> None:
    assert [c.transport for c in host_candidates(LOCAL)] == ["udp", "udp"]


def test_tcp_candidate_lines_parse_back() -> None:
    local = replace(LOCAL, tcp_candidates=(("127.0.0.1", 40001),))
    section = MediaSection(kind="audio", port=9, protocol="UDP/TLS/RTP/SAVPF", formats=["111"])
    write_local_transport(section, local, "passive", True)
    text = "\r\n".join(["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0", *section.to_lines()]) + "\r\n"
    parsed = parse_sdp(text).media[0].candidates
    tcp = [c for c in parsed if c.transport == "tcp"]
    assert [(c.port, c.type, c.extensions) for c in tcp] == [(40001, "host", [("tcptype", "passive"), ("generation", "0")])]
