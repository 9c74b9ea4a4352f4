"""NTP helpers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.rtp.ntp import (
    NTP_UNIX_OFFSET,
    compact_from_seconds,
    compact_to_seconds,
    ntp_from_unix,
    ntp_middle32,
    rtt_from_report,
    unix_from_ntp,
)


def test_ntp_table() -> None:
    assert ntp_from_unix(0.0) == NTP_UNIX_OFFSET << 32
    assert ntp_from_unix(1.5) == ((NTP_UNIX_OFFSET + 1) << 32) | 0x80000000
    assert unix_from_ntp((NTP_UNIX_OFFSET + 10) << 32 | 0x40000000) == 10.25
    assert ntp_middle32(0x1122334455667788) == 0x33445566
    assert compact_from_seconds(1.0) == 0x10000
    assert compact_to_seconds(0x18000) == 1.5


@given(st.floats(0, 2_000_000_000, allow_nan=False))
def test_ntp_round_trip(t: float) -> None:
    assert abs(unix_from_ntp(ntp_from_unix(t)) - t) < 1e-6


def test_rtt_from_report() -> None:
    # SR sent at compact 0x00010000 (1 s), held 0.25 s by the receiver, RR back at 1.5 s.
    assert rtt_from_report(0x00018000, 0x00010000, 0x00004000) == pytest.approx(0.25)
    # across the 16.16 wrap
    assert rtt_from_report(0x00000100, 0xFFFFFF00, 0) == pytest.approx(0x200 / 65536)
    assert rtt_from_report(0x00018000, 0, 0) == -1.0  # no SR seen yet
    assert rtt_from_report(0x00010000, 0x00010000, 0x00004000) == -1.0  # negative
