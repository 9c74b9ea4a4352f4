"""Join tokens: HS256 only, kid-selected keys, rotation, leeway, audience, forged tokens refused."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from control.domain.admission import Code
from control.domain.models import Role
from control.tokens import TokenError, TokenService

K1 = "first-secret-0123456789abcdef-xyz"
K2 = "second-secret-0123456789abcdef-xyz"
NOW = 1_800_000_000


def service(**kw):
    return TokenService({"k1": K1, "k2": K2}, ttl_seconds=600, leeway_seconds=30, **kw)


def b64(d: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def claims(**over):
    c = {"sub": "c1", "role": "client", "apt": "a1", "name": "C", "aud": "telesfu", "iat": NOW, "nbf": NOW,
         "exp": NOW + 600, "jti": "j1"}
    c.update(over)
    return c


def test_mint_then_verify_round_trip():
    s = service()
    t = s.mint("c1", Role.CLIENT, "a1", "Client One", now=NOW)
    c = s.verify(t.token, now=NOW + 1)
    assert (c.sub, c.role, c.apt, c.name, c.exp) == ("c1", Role.CLIENT, "a1", "Client One", NOW + 600)
    assert jwt.get_unverified_header(t.token)["kid"] == "k1"  # the first key mints
    assert c.jti == t.jti
    assert len({s.mint("c1", Role.CLIENT, "a1", "C", now=NOW).jti for _ in range(1000)}) == 1000


def test_rotation_both_keys_verify_and_a_removed_key_does_not():
    old = TokenService({"k2": K2}).mint("c1", Role.CLIENT, "a1", "C", now=NOW).token
    assert service().verify(old, now=NOW).sub == "c1"
    with pytest.raises(TokenError) as e:
        TokenService({"k1": K1}).verify(old, now=NOW)
    assert e.value.code is Code.TOKEN_INVALID


@pytest.mark.parametrize("offset,code", [(599, None), (600 + 29, None), (600 + 30, Code.TOKEN_EXPIRED),
                                         (-29, None), (-31, Code.TOKEN_INVALID)])
def test_expiry_and_not_before_with_leeway(offset, code):
    s = service()
    tok = s.mint("c1", Role.CLIENT, "a1", "C", now=NOW).token
    if code is None:
        assert s.verify(tok, now=NOW + offset).sub == "c1"
    else:
        assert s.check(tok, now=NOW + offset) is code


def test_wrong_audience_refused():
    tok = jwt.encode(claims(aud="someone-else"), K1, algorithm="HS256", headers={"kid": "k1"})
    assert service().check(tok, now=NOW) is Code.TOKEN_INVALID


@pytest.mark.parametrize("missing", ["sub", "role", "apt", "aud", "exp", "iat", "jti"])
def test_missing_claims_refused(missing):
    c = claims()
    del c[missing]
    tok = jwt.encode(c, K1, algorithm="HS256", headers={"kid": "k1"})
    assert service().check(tok, now=NOW) is Code.TOKEN_INVALID


def test_alg_none_refused():
    tok = f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': 'k1'})}.{b64(claims())}."
    assert service().check(tok, now=NOW) is Code.TOKEN_INVALID


def test_algorithm_confusion_refused():
    """An RS256 token, and an HS256 token signed with a public key as the secret, are both refused."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rs = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "k1"})
    assert service().check(rs, now=NOW) is Code.TOKEN_INVALID
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = b64({"alg": "HS256", "typ": "JWT", "kid": "k1"})
    import hashlib
    import hmac

    body = f"{header}.{b64(claims())}"
    sig = base64.urlsafe_b64encode(hmac.new(pub, body.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    assert service().check(f"{body}.{sig}", now=NOW) is Code.TOKEN_INVALID
    for alg in ("HS384", "HS512"):
        assert service().check(jwt.encode(claims(), K1, algorithm=alg, headers={"kid": "k1"}), now=NOW) \
            is Code.TOKEN_INVALID


def test_forged_signature_and_tampered_claims_refused():
    s = service()
    tok = s.mint("c1", Role.CLIENT, "a1", "C", now=NOW).token
    h, p, sig = tok.split(".")
    assert s.check(f"{h}.{b64(claims(sub='p1', role='provider'))}.{sig}", now=NOW) is Code.TOKEN_INVALID
    assert s.check(f"{h}.{p}.{sig[:-2]}AA", now=NOW) is Code.TOKEN_INVALID
    forged = jwt.encode(claims(), "not-our-secret-0123456789abcdef", algorithm="HS256", headers={"kid": "k1"})
    assert s.check(forged, now=NOW) is Code.TOKEN_INVALID


@pytest.mark.parametrize("garbage", ["", "a.b", "a.b.c", "....", "x" * 5000, None, 42, {"token": 1},
                                     "eyJhbGciOiJIUzI1NiJ9.e30.", "Bearer abc.def.ghi"])
def test_garbage_is_refused_not_raised(garbage):
    assert service().check(garbage, now=NOW) is Code.TOKEN_INVALID


def test_unknown_kid_and_missing_kid_refused():
    assert service().check(jwt.encode(claims(), K1, algorithm="HS256", headers={"kid": "k9"}), now=NOW) \
        is Code.TOKEN_INVALID
    assert service().check(jwt.encode(claims(), K1, algorithm="HS256"), now=NOW) is Code.TOKEN_INVALID


def test_bad_claim_types_refused():
    for over in ({"role": "admin"}, {"exp": "soon"}, {"sub": 7}, {"iat": True}, {"name": ["x"]}, {"jti": ""},
                 {"jti": 5}, {"jti": "x" * 129}):
        tok = jwt.encode(claims(**over), K1, algorithm="HS256", headers={"kid": "k1"})
        assert service().check(tok, now=NOW) is Code.TOKEN_INVALID, over


def _signed(header_b64: str, payload_b64: str, key: str = K1) -> str:
    import hashlib
    import hmac

    sig = hmac.new(key.encode(), f"{header_b64}.{payload_b64}".encode(), hashlib.sha256).digest()
    return f"{header_b64}.{payload_b64}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


@pytest.mark.parametrize("case", ["non_ascii", "padding", "bad_alphabet", "header_list", "payload_list",
                                  "deep_nesting", "four_parts", "aud_list_without_us"])
def test_hand_made_tokens_with_a_valid_signature_are_still_checked(case):
    """The verifier parses base64url strictly and the JSON defensively, after checking the MAC."""
    h = b64({"alg": "HS256", "typ": "JWT", "kid": "k1"})
    p = b64(claims())
    token = {
        "non_ascii": _signed(h, p) + "é",
        "padding": _signed(h + "==", p),
        "bad_alphabet": _signed(h, p[:-1] + "*"),
        "header_list": _signed(base64.urlsafe_b64encode(b'["HS256"]').rstrip(b"=").decode(), p),
        "payload_list": _signed(h, base64.urlsafe_b64encode(b"[1, 2]").rstrip(b"=").decode()),
        "deep_nesting": _signed(h, base64.urlsafe_b64encode(b"[" * 100000 + b"]" * 100000).rstrip(b"=").decode()),
        "four_parts": _signed(h, p) + ".x",
        "aud_list_without_us": _signed(h, b64(claims(aud=["other"]))),
    }[case]
    assert service().check(token, now=NOW) is Code.TOKEN_INVALID


def test_audience_list_containing_us_is_accepted():
    token = _signed(b64({"alg": "HS256", "typ": "JWT", "kid": "k1"}), b64(claims(aud=["x", "telesfu"])))
    assert service().verify(token, now=NOW).sub == "c1"


def test_a_signature_with_a_non_canonical_last_character_is_refused():
    """The last character of a 43-character signature carries 2 unused bits: flipping them gives
    the same bytes under a lax decoder, so the altered token must not verify."""
    s = service()
    tok = s.mint("c1", Role.CLIENT, "a1", "C", now=NOW).token
    h, p, sig = tok.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    i = alphabet.index(sig[-1])
    siblings = [alphabet[(i & ~3) | low] for low in range(4) if (i & ~3) | low != i]
    assert len(siblings) == 3
    for c in siblings:
        altered = f"{h}.{p}.{sig[:-1]}{c}"
        assert base64.urlsafe_b64decode(altered.split(".")[2] + "=") == base64.urlsafe_b64decode(sig + "=")
        assert s.check(altered, now=NOW) is Code.TOKEN_INVALID
    assert s.verify(tok, now=NOW).sub == "c1"
    # the claims segment is held to the same rule (re-signed, so only the spelling is wrong)
    payload = b64(claims())
    if len(payload) % 4 in (2, 3):
        j = alphabet.index(payload[-1])
        other = alphabet[j ^ 1]
        assert s.check(_signed(b64({"alg": "HS256", "typ": "JWT", "kid": "k1"}), payload[:-1] + other),
                       now=NOW) is Code.TOKEN_INVALID


@pytest.mark.parametrize("exp,iat,code", [
    (253402300799, NOW, Code.TOKEN_INVALID),      # year 9999
    (NOW + 600 + 30 + 1, NOW, Code.TOKEN_INVALID),  # one second longer than ttl + leeway
    (NOW + 600 + 30, NOW, None),                    # exactly ttl + leeway
    (NOW + 600, NOW + 31, Code.TOKEN_INVALID),      # issued in the future beyond the leeway
    (NOW + 600, NOW + 30, None),
])
def test_lifetime_capped_at_ttl_plus_leeway_and_iat_not_in_the_future(exp, iat, code):
    tok = jwt.encode(claims(exp=exp, iat=iat, nbf=iat), K1, algorithm="HS256", headers={"kid": "k1"})
    if code is None:
        assert service().verify(tok, now=NOW).exp == exp
    else:
        assert service().check(tok, now=NOW) is code


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\u200f", "\u061c", "\u200b", "\u2060", "\ufeff", "\x00",
                                  "\n", "\u3164", "\u2800"])
def test_a_name_claim_with_bidi_zero_width_or_control_characters_is_refused(char):
    tok = jwt.encode(claims(name=f"Dr. P{char}x"), K1, algorithm="HS256", headers={"kid": "k1"})
    assert service().check(tok, now=NOW) is Code.TOKEN_INVALID
    ok = jwt.encode(claims(name="Zoë 李"), K1, algorithm="HS256", headers={"kid": "k1"})
    assert service().verify(ok, now=NOW).name == "Zoë 李"
