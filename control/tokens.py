"""JWT join tokens: HS256, `kid`-selected keys, several keys valid at once for rotation.

Only HS256 is accepted: `alg: none`, RS/ES algorithms (the classic confusion where a public
key is used as an HMAC secret) and any other algorithm are refused as `token_invalid`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import jwt
import jwt.warnings

from control.domain.admission import Code, JoinClaims
from control.domain.models import Role
from control.domain.text import unsafe_character

AUDIENCE = "telesfu"
ALGORITHM = "HS256"
_MAX_TOKEN_BYTES = 4096
_REQUIRED = ("sub", "role", "apt", "aud", "exp", "iat", "jti")
_MAX_JTI = 128

# Key length is checked by the config (and warned about at start-up), not per token.
warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)


class TokenError(Exception):
    def __init__(self, code: Code, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class MintedToken:
    token: str
    expires_at: int
    jti: str


class TokenService:
    def __init__(self, keys: Mapping[str, str], ttl_seconds: int = 600, leeway_seconds: int = 30) -> None:
        if not keys:
            raise ValueError("at least one signing key is required")
        self._keys = {kid: secret.encode() for kid, secret in keys.items()}
        self._mint_kid = next(iter(keys))
        self.ttl_seconds = ttl_seconds
        self.leeway_seconds = leeway_seconds

    def mint(self, participant_id: str, role: Role, appointment_id: str, name: str,
             now: float | None = None, ttl_seconds: int | None = None) -> MintedToken:
        """A signed join token. `ttl_seconds` may shorten the configured lifetime (verify refuses
        a token living longer than ttl + leeway, so a longer one would not work)."""
        iat = int(time.time() if now is None else now)
        exp = iat + (self.ttl_seconds if ttl_seconds is None else ttl_seconds)
        jti = secrets.token_urlsafe(16)  # 128 random bits: unique per token (they are single-use)
        claims = {"sub": participant_id, "role": role.value, "apt": appointment_id, "name": name,
                  "aud": AUDIENCE, "iat": iat, "nbf": iat, "exp": exp, "jti": jti}
        token = jwt.encode(claims, self._keys[self._mint_kid], algorithm=ALGORITHM,
                           headers={"kid": self._mint_kid})
        return MintedToken(token, exp, jti)

    def verify(self, token: object, now: float | None = None) -> JoinClaims:
        """Verify signature, algorithm, audience and times. Raises TokenError.

        A single pass with the standard library (PyJWT mints): the header must say HS256 and
        name a configured kid; the signature is compared in constant time before the claims
        are even decoded.
        """
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_BYTES or not token.isascii():
            raise TokenError(Code.TOKEN_INVALID, "token missing or too long")
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError(Code.TOKEN_INVALID, "malformed token")
        header = _json_segment(parts[0])
        if header is None:
            raise TokenError(Code.TOKEN_INVALID, "malformed token")
        if header.get("alg") != ALGORITHM:
            raise TokenError(Code.TOKEN_INVALID, "algorithm not allowed")
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenError(Code.TOKEN_INVALID, "unknown key id")
        signature = _b64url(parts[2])
        expected = hmac.new(key, f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256).digest()
        if signature is None or not hmac.compare_digest(signature, expected):
            raise TokenError(Code.TOKEN_INVALID, "bad signature")
        claims = _json_segment(parts[1])
        if claims is None:
            raise TokenError(Code.TOKEN_INVALID, "malformed claims")
        for name in _REQUIRED:
            if name not in claims:
                raise TokenError(Code.TOKEN_INVALID, f"missing claim {name}")
        aud = claims["aud"]
        if not (aud == AUDIENCE or (isinstance(aud, list) and AUDIENCE in aud)):
            raise TokenError(Code.TOKEN_INVALID, "wrong audience")
        # Times are checked here, against an injectable clock.
        t = time.time() if now is None else now
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (exp, iat)) or \
                (nbf is not None and (not isinstance(nbf, int) or isinstance(nbf, bool))):
            raise TokenError(Code.TOKEN_INVALID, "time claims must be integers")
        assert isinstance(exp, int) and isinstance(iat, int)
        if t >= exp + self.leeway_seconds:
            raise TokenError(Code.TOKEN_EXPIRED, "token expired")
        if exp - iat > self.ttl_seconds + self.leeway_seconds:
            # a key holder minting for year 9999 does not get a link that works forever
            raise TokenError(Code.TOKEN_INVALID, "token lifetime longer than the configured ttl")
        if nbf is not None and t < nbf - self.leeway_seconds:
            raise TokenError(Code.TOKEN_INVALID, "token not yet valid")
        if iat > t + self.leeway_seconds:
            raise TokenError(Code.TOKEN_INVALID, "token issued in the future")
        sub, role, apt, name = claims.get("sub"), claims.get("role"), claims.get("apt"), claims.get("name", "")
        if not (isinstance(sub, str) and sub and isinstance(apt, str) and apt and isinstance(name, str)):
            raise TokenError(Code.TOKEN_INVALID, "sub, apt and name must be strings")
        if unsafe_character(name) is not None:
            raise TokenError(Code.TOKEN_INVALID, "name holds control, bidi, zero-width or invisible characters")
        try:
            role_v = Role(role)
        except ValueError:
            raise TokenError(Code.TOKEN_INVALID, "unknown role") from None
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > _MAX_JTI:
            raise TokenError(Code.TOKEN_INVALID, "jti must be a non-empty string")
        return JoinClaims(sub=sub, role=role_v, apt=apt, name=name[:100], exp=exp, iat=iat, nbf=nbf, jti=jti)

    def check(self, token: object, now: float | None = None) -> JoinClaims | Code:
        """verify() for admission: the claims, or the refusal code."""
        try:
            return self.verify(token, now)
        except TokenError as e:
            return e.code


# -- resume credentials -----------------------------------------------------------------------

RESUME_CREDENTIAL_CHARS = 43  # 32 random bytes, base64url without padding


def new_resume_credential() -> tuple[str, str]:
    """A fresh resume credential and the store key of its record.

    The credential is 256 random bits the client keeps; the store holds only the SHA-256 of it
    (a copy of the store does not hand out sessions), with what it is bound to.
    """
    credential = secrets.token_urlsafe(32)
    return credential, _resume_key(credential)


def resume_key(credential: object) -> str | None:
    """The store key of a presented credential, or None when it cannot be one of ours."""
    if not isinstance(credential, str) or len(credential) != RESUME_CREDENTIAL_CHARS \
            or _b64url(credential) is None:
        return None
    return _resume_key(credential)


def _resume_key(credential: str) -> str:
    return hashlib.sha256(credential.encode("ascii")).hexdigest()


def _b64url(segment: str) -> bytes | None:
    """Canonical base64url (no padding, nothing outside the alphabet, unused bits zero), or None.

    Only one spelling of a given byte string is accepted: the decoded bytes must encode back
    to the segment. Otherwise the last character of a signature could be changed (its unused
    low bits flipped) and the token would still verify.
    """
    if "=" in segment or len(segment) % 4 == 1:
        return None
    try:
        raw = binascii.a2b_base64((segment + "=" * (-len(segment) % 4)).translate(_TO_STANDARD), strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != segment.encode("ascii"):
        return None
    return raw


def _json_segment(segment: str) -> dict[str, object] | None:
    raw = _b64url(segment)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


_TO_STANDARD = str.maketrans("-_", "+/")
