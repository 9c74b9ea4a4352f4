"""NTP timestamp helpers for RTCP SR/RR (RFC 3550 section 4 and 6.4).

A full NTP timestamp is 64-bit fixed point 32.32 seconds since 1900-01-01.  The
"compact" (middle 32 bits, 16.16) form is what RR's LSR and DLSR fields carry.
"""

from __future__ import annotations

NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
NTP_FRACTION = 1 << 32
COMPACT_FRACTION = 1 << 16
NTP_MASK = (1 << 64) - 1
COMPACT_MASK = 0xFFFFFFFF


def ntp_from_unix(seconds: float) -> int:
    """64-bit NTP timestamp for a Unix time in seconds."""
    return round((seconds + NTP_UNIX_OFFSET) * NTP_FRACTION) & NTP_MASK


def unix_from_ntp(ntp: int) -> float:
    """Unix time in seconds for a 64-bit NTP timestamp (era 0)."""
    return (ntp & NTP_MASK) / NTP_FRACTION - NTP_UNIX_OFFSET


def ntp_middle32(ntp: int) -> int:
    """Middle 32 bits of a 64-bit NTP timestamp: the LSR of a report block."""
    return (ntp >> 16) & COMPACT_MASK


def compact_from_seconds(seconds: float) -> int:
    """16.16 fixed point of a duration (a DLSR value), wrapped to 32 bits."""
    return round(seconds * COMPACT_FRACTION) & COMPACT_MASK


def compact_to_seconds(value: int) -> float:
    """Seconds of a 16.16 fixed point value."""
    return (value & COMPACT_MASK) / COMPACT_FRACTION


def rtt_from_report(arrival_compact: int, lsr: int, dlsr: int) -> float:
    """Round-trip time in seconds from a report block (RFC 3550 6.4.1).

    ``arrival_compact`` is the compact NTP time the report arrived.  Returns -1.0 when
    the block carries no LSR (no SR received yet) or the result is negative.
    """
    if lsr == 0:
        return -1.0
    rtt = (arrival_compact - lsr - dlsr) & COMPACT_MASK
    if rtt >= 1 << 31:  # negative: clock skew or bogus DLSR
        return -1.0
    return rtt / COMPACT_FRACTION
