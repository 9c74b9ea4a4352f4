"""Fixtures of the SDP tests: the real Chromium and Firefox SDPs and the SFU's local transport."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfu.sdp import Fingerprint, LocalTransportParams

REPO = Path(__file__).resolve().parents[3]
FIXTURE_DIRS = (REPO / "tests" / "fixtures" / "sdp", REPO / ".." / "shared" / "fixtures" / "sdp")
FIXTURE_NAMES = ("chromium-sendonly-offer.sdp", "chromium-recvonly-offer.sdp", "chromium-simulcast-offer.sdp",
                 "firefox-publish-offer.sdp", "firefox-subscribe-answer.sdp")

SFU_FINGERPRINT = Fingerprint("sha-256", ":".join(["5A"] * 32))
LOCAL = LocalTransportParams(
    ice_ufrag="sfuUfrag",
    ice_pwd="sfuPasswordSfuPassword1234",
    fingerprint=SFU_FINGERPRINT,
    candidates=(("127.0.0.1", 40000), ("::1", 40000)),
    session_id=4242,
)


def find_fixture(name: str) -> Path | None:
    """The repo's copy of a fixture, else the shared one, else None."""
    for folder in FIXTURE_DIRS:
        path = folder / name
        if path.is_file():
            return path
    return None


def fixture_path(name: str) -> Path:
    """Like find_fixture, but skips the calling test when the fixture is missing."""
    path = find_fixture(name)
    if path is None:
        pytest.skip(f"SDP fixture {name} is in neither tests/fixtures/sdp/ nor ../shared/fixtures/sdp/")
    return path


def fixture_text(name: str) -> str:
    """The fixture exactly as captured (CRLF line endings kept)."""
    return fixture_path(name).read_bytes().decode()


@pytest.fixture
def sendonly_text() -> str:
    return fixture_text("chromium-sendonly-offer.sdp")


@pytest.fixture
def recvonly_text() -> str:
    return fixture_text("chromium-recvonly-offer.sdp")


@pytest.fixture
def simulcast_text() -> str:
    return fixture_text("chromium-simulcast-offer.sdp")


@pytest.fixture
def local() -> LocalTransportParams:
    return LOCAL
