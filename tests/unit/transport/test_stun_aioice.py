"""Golden messages against an independent implementation: aioice.stun."""

from __future__ import annotations

import pytest
from aioice import stun as astun

from sfu.transport import stun

KEY = b"Q1w2E3r4T5y6U7i8O9p0Aa"
TXID = bytes.fromhex("0102030405060708090a0b0c")


def aioice_request(use_candidate: bool) -> bytes:
    msg = astun.Message(astun.Method.BINDING, astun.Class.REQUEST, transaction_id=TXID)
    msg.attributes["USERNAME"] = "lite:full"
    msg.attributes["PRIORITY"] = 1853824767
    msg.attributes["ICE-CONTROLLING"] = 0xDEADBEEFCAFEF00D
    if use_candidate:
        msg.attributes["USE-CANDIDATE"] = None
    msg.add_message_integrity(KEY)
    return bytes(msg)


@pytest.mark.parametrize("use_candidate", [False, True])
def test_aioice_request_parsed_by_us(use_candidate: bool) -> None:
    buf = aioice_request(use_candidate)
    msg = stun.parse_message(buf)
    assert msg is not None
    assert msg.msg_type == stun.BINDING_REQUEST and msg.transaction_id == TXID
    assert msg.attributes[stun.ATTR_USERNAME] == "lite:full"
    assert msg.attributes[stun.ATTR_PRIORITY] == 1853824767
    assert msg.attributes[stun.ATTR_ICE_CONTROLLING] == 0xDEADBEEFCAFEF00D
    assert (stun.ATTR_USE_CANDIDATE in msg.attributes) == use_candidate
    assert stun.verify_integrity(buf, KEY, msg.integrity_offset)
    assert not stun.verify_integrity(buf, KEY[:-1], msg.integrity_offset)
    assert stun.verify_fingerprint(buf, msg.fingerprint_offset)


@pytest.mark.parametrize("use_candidate", [False, True])
def test_our_request_is_byte_identical_to_aioice(use_candidate: bool) -> None:
    ours = stun.build_binding_request(
        TXID, "lite:full", KEY, 1853824767, 0xDEADBEEFCAFEF00D, use_candidate=use_candidate
    )
    assert ours == aioice_request(use_candidate)


@pytest.mark.parametrize("addr", [("203.0.113.9", 61000), ("2001:db8:a::1", 3478)])
def test_our_success_response_parsed_by_aioice(addr: stun.Address) -> None:
    buf = stun.build_binding_success(TXID, addr, KEY)
    msg = astun.parse_message(buf)  # raises on a bad FINGERPRINT
    assert msg.message_method == astun.Method.BINDING
    assert msg.message_class == astun.Class.RESPONSE
    assert msg.transaction_id == TXID
    assert msg.attributes["XOR-MAPPED-ADDRESS"] == addr
    assert msg.check_message_integrity(KEY)
    assert not msg.check_message_integrity(b"x" * 22)
    expected = astun.Message(astun.Method.BINDING, astun.Class.RESPONSE, transaction_id=TXID)
    expected.attributes["XOR-MAPPED-ADDRESS"] = addr
    expected.add_message_integrity(KEY)
    assert buf == bytes(expected)


@pytest.mark.parametrize("addr", [("192.0.2.200", 1), ("fe80::1:2:3", 65535)])
def test_aioice_success_response_parsed_by_us(addr: stun.Address) -> None:
    msg = astun.Message(astun.Method.BINDING, astun.Class.RESPONSE, transaction_id=TXID)
    msg.attributes["XOR-MAPPED-ADDRESS"] = addr
    msg.attributes["SOFTWARE"] = "aioice"
    msg.add_message_integrity(KEY)
    buf = bytes(msg)
    assert stun.parse_binding_success(buf, KEY) == (TXID, addr)
    assert stun.parse_binding_success(buf, b"not the key") is None


def test_our_controlled_request_parsed_by_aioice() -> None:
    buf = stun.build_binding_request(TXID, "a:b", KEY, 5, 77, controlling=False, software="t")
    msg = astun.parse_message(buf)
    assert msg.message_class == astun.Class.REQUEST
    assert msg.attributes["ICE-CONTROLLED"] == 77
    assert msg.attributes["SOFTWARE"] == "t"
    assert msg.attributes["PRIORITY"] == 5
    assert msg.attributes["USERNAME"] == "a:b"
    assert "USE-CANDIDATE" not in msg.attributes
    assert msg.check_message_integrity(KEY)


@pytest.mark.parametrize(
    ("code", "reason", "key"),
    [(400, "Bad Request", None), (401, "Unauthenticated", None), (487, "Role Conflict", KEY)],
)
def test_error_responses_both_ways(code: int, reason: str, key: bytes | None) -> None:
    ours = stun.build_error_response(stun.METHOD_BINDING, TXID, code, key=key)
    theirs_view = astun.parse_message(ours)
    assert theirs_view.message_class == astun.Class.ERROR
    assert theirs_view.attributes["ERROR-CODE"] == (code, reason)
    assert theirs_view.check_message_integrity(KEY) == (key is not None)

    theirs = astun.Message(astun.Method.BINDING, astun.Class.ERROR, transaction_id=TXID)
    theirs.attributes["ERROR-CODE"] = (code, reason)
    if key is None:
        theirs.add_fingerprint()
    else:
        theirs.add_message_integrity(key)
    assert bytes(theirs) == ours
    parsed = stun.parse_message(bytes(theirs))
    assert parsed is not None and parsed.error_code == code


def test_mapped_address_matches_aioice() -> None:
    for addr in [("10.1.2.3", 4444), ("::1", 5)]:
        ours = stun.encode_attribute(stun.ATTR_MAPPED_ADDRESS, addr, TXID)
        assert ours[4:] == astun.pack_address(addr)
        xor = stun.encode_attribute(stun.ATTR_XOR_MAPPED_ADDRESS, addr, TXID)
        assert xor[4:] == astun.pack_xor_address(addr, TXID)
