"""The one exception of the SDP layer and its error codes.

Signaling code turns an `SdpError` into `error{code, message}` for the client, so the
codes are stable strings and the messages name the offending line or m-section.
"""

from __future__ import annotations

SDP_MALFORMED = "sdp_malformed"
SDP_TOO_LARGE = "sdp_too_large"
NO_MEDIA = "no_media"
BUNDLE_REQUIRED = "bundle_required"
RTCP_MUX_REQUIRED = "rtcp_mux_required"
NO_COMMON_CODEC = "no_common_codec"
MISSING_ICE_CREDENTIALS = "missing_ice_credentials"
MISSING_FINGERPRINT = "missing_fingerprint"
UNSUPPORTED_PROTOCOL = "unsupported_protocol"
MISSING_MID = "missing_mid"
INVALID_SETUP = "invalid_setup"
TRANSPORT_MISMATCH = "transport_mismatch"
ANSWER_MISMATCH = "answer_mismatch"
TOO_MANY_TRACKS = "too_many_tracks"

ERROR_CODES = frozenset(
    {
        SDP_MALFORMED,
        SDP_TOO_LARGE,
        NO_MEDIA,
        BUNDLE_REQUIRED,
        RTCP_MUX_REQUIRED,
        NO_COMMON_CODEC,
        MISSING_ICE_CREDENTIALS,
        MISSING_FINGERPRINT,
        UNSUPPORTED_PROTOCOL,
        MISSING_MID,
        INVALID_SETUP,
        TRANSPORT_MISMATCH,
        ANSWER_MISMATCH,
        TOO_MANY_TRACKS,
    }
)


class SdpError(Exception):
    """A refused or malformed session description.

    `code` is one of the constants above; `message` says what and where (line number
    and text for parse errors, m-section index and mid for negotiation errors).
    """

    def __init__(self, code: str, message: str, line: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.line = line
