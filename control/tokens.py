"""JWT join tokens: HS256, `kid`-selected keys, several keys valid at once for rotation.

Only HS256 is accepted: `alg: none`, RS/ES algorithms (the classic confusion where a public
key is used as an HMAC secret) and any other algorithm are refused as `token_invalid`.
"""

from __future__ import annotations

import secrets
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import jwt
import jwt.warnings

from control.domain.admission import Code, JoinClaims
from control.domain.models import Role

AUDIENCE = "telesfu"
ALGORITHM = "HS256"
_MAX_TOKEN_BYTES = 4096
_REQUIRED = ("sub", "role", "apt", "aud", "exp", "iat")

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
        iat = int(time.time() if now is None else now)
        exp = iat + (self.ttl_seconds if ttl_seconds is None else ttl_seconds)
        jti = secrets.token_urlsafe(12)
        claims = {"sub": participant_id, "role": role.value, "apt": appointment_id, "name": name,
                  "aud": AUDIENCE, "iat": iat, "nbf": iat, "exp": exp, "jti": jti}
        token = jwt.encode(claims, self._keys[self._mint_kid], algorithm=ALGORITHM,
                           headers={"kid": self._mint_kid})
        return MintedToken(token, exp, jti)

    def verify(self, token: object, now: float | None = None) -> JoinClaims:
        """Verify signature, algorithm, audience and times. Raises TokenError."""
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_BYTES:
            raise TokenError(Code.TOKEN_INVALID, "token missing or too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError(Code.TOKEN_INVALID, "malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise TokenError(Code.TOKEN_INVALID, "algorithm not allowed")
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenError(Code.TOKEN_INVALID, "unknown key id")
        options = {"require": list(_REQUIRED), "verify_exp": False, "verify_nbf": False, "verify_iat": False}
        try:
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=AUDIENCE, options=options)
        except jwt.InvalidAudienceError:
            raise TokenError(Code.TOKEN_INVALID, "wrong audience") from None
        except jwt.MissingRequiredClaimError as e:
            raise TokenError(Code.TOKEN_INVALID, f"missing claim {e.claim}") from None
        except jwt.PyJWTError:
            raise TokenError(Code.TOKEN_INVALID, "bad signature") from None
        # Times are checked here, against an injectable clock.
        t = time.time() if now is None else now
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (exp, iat)) or \
                (nbf is not None and (not isinstance(nbf, int) or isinstance(nbf, bool))):
            raise TokenError(Code.TOKEN_INVALID, "time claims must be integers")
        assert isinstance(exp, int) and isinstance(iat, int)
        if t >= exp + self.leeway_seconds:
            raise TokenError(Code.TOKEN_EXPIRED, "token expired")
        if nbf is not None and t < nbf - self.leeway_seconds:
            raise TokenError(Code.TOKEN_INVALID, "token not yet valid")
        if iat > t + self.leeway_seconds:
            raise TokenError(Code.TOKEN_INVALID, "token issued in the future")
        sub, role, apt, name = claims.get("sub"), claims.get("role"), claims.get("apt"), claims.get("name", "")
        if not (isinstance(sub, str) and sub and isinstance(apt, str) and apt and isinstance(name, str)):
            raise TokenError(Code.TOKEN_INVALID, "sub, apt and name must be strings")
        try:
            role_v = Role(role)
        except ValueError:
            raise TokenError(Code.TOKEN_INVALID, "unknown role") from None
        jti = claims.get("jti")
        return JoinClaims(sub=sub, role=role_v, apt=apt, name=name[:100], exp=exp, iat=iat, nbf=nbf,
                          jti=jti if isinstance(jti, str) else None)

    def check(self, token: object, now: float | None = None) -> JoinClaims | Code:
        """verify() for admission: the claims, or the refusal code."""
        try:
            return self.verify(token, now)
        except TokenError as e:
            return e.code
