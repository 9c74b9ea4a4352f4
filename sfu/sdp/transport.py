"""ICE/DTLS attributes: writing the SFU's, reading the peer's."""

from __future__ import annotations

import ipaddress

from sfu.sdp.errors import (
    INVALID_SETUP,
    MISSING_FINGERPRINT,
    MISSING_ICE_CREDENTIALS,
    TRANSPORT_MISMATCH,
    SdpError,
)
from sfu.sdp.model import (
    SETUP_ACTIVE,
    SETUP_ACTPASS,
    SETUP_PASSIVE,
    Candidate,
    Fingerprint,
    MediaSection,
    SessionDescription,
)
from sfu.sdp.params import DTLS_CLIENT, DTLS_SERVER, LocalTransportParams, RemoteTransportParams

HASH_FUNCTIONS = frozenset({"sha-1", "sha-224", "sha-256", "sha-384", "sha-512"})
HOST_TYPE_PREFERENCE = 126
COMPONENT_RTP = 1
TCP_PASSIVE_DIRECTION_PREFERENCE = 4
DISCARD_CONNECTION = "IN IP4 0.0.0.0"


def connection_line(ip: str) -> str:
    version = ipaddress.ip_address(ip).version
    return f"IN IP{version} {ip}"


def host_candidates(local: LocalTransportParams) -> list[Candidate]:
    """One UDP host candidate per (ip, port), in the configured order (RFC 8445 priorities),
    then one passive TCP candidate per ICE-TCP (ip, port)."""
    out = []
    for index, (ip, port) in enumerate(local.candidates):
        local_preference = 65535 - index
        priority = (HOST_TYPE_PREFERENCE << 24) | (local_preference << 8) | (256 - COMPONENT_RTP)
        out.append(
            Candidate(
                foundation=str(index + 1),
                component=COMPONENT_RTP,
                transport="udp",
                priority=priority,
                address=ip,
                port=port,
                type="host",
                extensions=[("generation", "0")],
            )
        )
    # Passive ICE-TCP (RFC 6544 section 4.2): the same type preference, a local preference
    # of direction-pref (passive host: 4) << 13 plus a per-address rank, so every TCP
    # candidate ranks below every UDP one and a browser picks TCP only when UDP fails.
    first = len(out)
    for index, (ip, port) in enumerate(local.tcp_candidates):
        local_preference = (TCP_PASSIVE_DIRECTION_PREFERENCE << 13) | (8191 - index)
        priority = (HOST_TYPE_PREFERENCE << 24) | (local_preference << 8) | (256 - COMPONENT_RTP)
        out.append(
            Candidate(
                foundation=str(first + index + 1),
                component=COMPONENT_RTP,
                transport="tcp",
                priority=priority,
                address=ip,
                port=port,
                type="host",
                extensions=[("tcptype", "passive"), ("generation", "0")],
            )
        )
    return out


def write_local_transport(section: MediaSection, local: LocalTransportParams, setup: str, active: bool) -> None:
    """Put the SFU's ICE-lite/DTLS attributes on a section; candidates only when `active`."""
    ip, port = local.candidates[0]
    section.ice_ufrag = local.ice_ufrag
    section.ice_pwd = local.ice_pwd
    section.fingerprints = [local.fingerprint]
    section.setup = setup
    if active:
        section.port = port
        section.connection = connection_line(ip)
        section.candidates = host_candidates(local)
        section.end_of_candidates = True
    else:
        section.port = 0
        section.connection = DISCARD_CONNECTION
        section.candidates = []
        section.end_of_candidates = False


def _where(index: int, section: MediaSection) -> str:
    return f"m-section {index} (mid {section.mid!r})"


def remote_transport(
    description: SessionDescription, indexes: list[int], answer: bool
) -> RemoteTransportParams:
    """The peer's ICE/DTLS parameters from the given (bundled) m-sections.

    Section-level values override session-level ones; all sections must agree. For an
    offer, `actpass`/`active` (or none) makes the SFU the DTLS server, `passive` the client.
    For an answer, `actpass` is refused.
    """
    ufrag = pwd = setup = None
    fingerprints: tuple[Fingerprint, ...] = ()
    candidates: tuple[Candidate, ...] = ()
    first = True
    for index in indexes:
        m = description.media[index]
        m_ufrag = m.ice_ufrag if m.ice_ufrag is not None else description.ice_ufrag
        m_pwd = m.ice_pwd if m.ice_pwd is not None else description.ice_pwd
        m_fps = tuple(m.fingerprints or description.fingerprints)
        m_setup = m.setup if m.setup is not None else description.setup
        if not m_ufrag or not m_pwd:
            raise SdpError(MISSING_ICE_CREDENTIALS, f"{_where(index, m)} has no a=ice-ufrag/a=ice-pwd")
        if not any(f.algorithm.lower() in HASH_FUNCTIONS and f.value for f in m_fps):
            raise SdpError(MISSING_FINGERPRINT, f"{_where(index, m)} has no a=fingerprint with a known hash")
        if first:
            ufrag, pwd, fingerprints, setup = m_ufrag, m_pwd, m_fps, m_setup
            candidates = tuple(m.candidates)
            first = False
        elif (m_ufrag, m_pwd) != (ufrag, pwd) or {_fp_key(f) for f in m_fps} != {_fp_key(f) for f in fingerprints}:
            raise SdpError(TRANSPORT_MISMATCH, f"{_where(index, m)} has other ICE/DTLS parameters than its BUNDLE group")
        elif m_setup != setup:
            raise SdpError(INVALID_SETUP, f"{_where(index, m)} has another a=setup than its BUNDLE group")
    if first or ufrag is None or pwd is None:
        raise SdpError(MISSING_ICE_CREDENTIALS, "no m-section carries ICE credentials")
    if answer:
        if setup == SETUP_ACTPASS:
            raise SdpError(INVALID_SETUP, "an answer must say a=setup:active or a=setup:passive, not actpass")
        remote_setup = setup or SETUP_ACTIVE
    else:
        remote_setup = setup or SETUP_ACTPASS
    if remote_setup in (SETUP_ACTPASS, SETUP_ACTIVE):
        role = DTLS_SERVER
    elif remote_setup == SETUP_PASSIVE:
        role = DTLS_CLIENT
    else:
        raise SdpError(INVALID_SETUP, f"a=setup:{remote_setup} is not supported")
    usable = tuple(f for f in fingerprints if f.algorithm.lower() in HASH_FUNCTIONS and f.value)
    return RemoteTransportParams(
        ice_ufrag=ufrag,
        ice_pwd=pwd,
        fingerprints=usable,
        setup=remote_setup,
        dtls_role=role,
        ice_lite=description.ice_lite,
        candidates=candidates,
    )


def _fp_key(f: Fingerprint) -> tuple[str, str]:
    return f.algorithm.lower(), f.value.upper()


def local_setup_for(remote_setup: str) -> str:
    """Our a=setup in an answer to the given remote offer value."""
    return SETUP_ACTIVE if remote_setup == SETUP_PASSIVE else SETUP_PASSIVE
