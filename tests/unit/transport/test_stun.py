"""STUN codec: RFC 5769 vectors, malformed input, round trips, integrity/fingerprint."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfu.transport import stun


def unhex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# RFC 5769 section 2 test vectors (data, as printed in the RFC).
RFC5769_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
RFC5769_TRANSACTION_ID = unhex("b7 e7 a7 01 bc 34 d6 86 fa 87 df ae")
RFC5769_REQUEST = unhex(
    """
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf
    """
)
RFC5769_IPV4_RESPONSE = unhex(
    """
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96
    """
)
RFC5769_IPV6_RESPONSE = unhex(
    """
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c
    """
)
RFC5769_IPV4 = ("192.0.2.1", 32853)
RFC5769_IPV6 = ("2001:db8:1234:5678:11:2233:4455:6677", 32853)

KEY = b"abcdefghijklmnopqrstuvwxyz012345"
TXID = bytes(range(1, 13))


# --- message type ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "klass", "msg_type"),
    [
        (stun.METHOD_BINDING, stun.CLASS_REQUEST, 0x0001),
        (stun.METHOD_BINDING, stun.CLASS_INDICATION, 0x0011),
        (stun.METHOD_BINDING, stun.CLASS_SUCCESS, 0x0101),
        (stun.METHOD_BINDING, stun.CLASS_ERROR, 0x0111),
        (0x003, stun.CLASS_REQUEST, 0x0003),  # TURN Allocate
        (0x003, stun.CLASS_ERROR, 0x0113),
        (0x009, stun.CLASS_SUCCESS, 0x0109),  # TURN ChannelBind
        (0x010, stun.CLASS_REQUEST, 0x0020),  # M4 moves past C0
        (0x080, stun.CLASS_REQUEST, 0x0200),  # M7 moves past C1
        (0xFFF, stun.CLASS_ERROR, 0x3FFF),
    ],
)
def test_message_type_table(method: int, klass: int, msg_type: int) -> None:
    assert stun.message_type(method, klass) == msg_type
    assert stun.method_of(msg_type) == method
    assert stun.class_of(msg_type) == klass


def test_binding_type_constants() -> None:
    assert stun.BINDING_REQUEST == stun.message_type(stun.METHOD_BINDING, stun.CLASS_REQUEST)
    assert stun.BINDING_INDICATION == stun.message_type(stun.METHOD_BINDING, stun.CLASS_INDICATION)
    assert stun.BINDING_SUCCESS == stun.message_type(stun.METHOD_BINDING, stun.CLASS_SUCCESS)
    assert stun.BINDING_ERROR == stun.message_type(stun.METHOD_BINDING, stun.CLASS_ERROR)


@given(
    st.integers(0, 0xFFF),
    st.sampled_from(
        [stun.CLASS_REQUEST, stun.CLASS_INDICATION, stun.CLASS_SUCCESS, stun.CLASS_ERROR]
    ),
)
def test_message_type_round_trip(method: int, klass: int) -> None:
    msg_type = stun.message_type(method, klass)
    assert 0 <= msg_type <= 0x3FFF
    assert (stun.method_of(msg_type), stun.class_of(msg_type)) == (method, klass)


@pytest.mark.parametrize(("method", "klass"), [(-1, 0), (0x1000, 0), (1, 0x001), (1, 0x200)])
def test_message_type_rejects_bad_arguments(method: int, klass: int) -> None:
    with pytest.raises(ValueError):
        stun.message_type(method, klass)


# --- RFC 5769 ---------------------------------------------------------------------


def test_rfc5769_sample_request() -> None:
    msg = stun.parse_message(RFC5769_REQUEST)
    assert msg is not None
    assert msg.msg_type == stun.BINDING_REQUEST
    assert msg.method == stun.METHOD_BINDING and msg.msg_class == stun.CLASS_REQUEST
    assert msg.transaction_id == RFC5769_TRANSACTION_ID
    a = msg.attributes
    assert a[stun.ATTR_SOFTWARE] == "STUN test client"
    assert a[stun.ATTR_PRIORITY] == 0x6E0001FF
    assert a[stun.ATTR_ICE_CONTROLLED] == 0x932FF9B151263B36
    assert a[stun.ATTR_USERNAME] == "evtj:h6vY"
    assert msg.unknown_required == ()
    assert msg.integrity_offset == 20 + 20 + 8 + 12 + 16
    assert msg.fingerprint_offset == len(RFC5769_REQUEST) - 8
    assert stun.verify_integrity(RFC5769_REQUEST, RFC5769_PASSWORD, msg.integrity_offset)
    assert stun.verify_integrity(RFC5769_REQUEST, RFC5769_PASSWORD)  # offset found
    assert not stun.verify_integrity(RFC5769_REQUEST, b"VOkJxbRl1RmTxUk/WvJxBT")
    assert stun.verify_fingerprint(RFC5769_REQUEST, msg.fingerprint_offset)
    assert stun.verify_fingerprint(RFC5769_REQUEST)


@pytest.mark.parametrize(
    ("vector", "addr", "xma_tlv"),
    [
        (RFC5769_IPV4_RESPONSE, RFC5769_IPV4, "00 20 00 08 00 01 a1 47 e1 12 a6 43"),
        (
            RFC5769_IPV6_RESPONSE,
            RFC5769_IPV6,
            "00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9",
        ),
    ],
)
def test_rfc5769_sample_responses(vector: bytes, addr: stun.Address, xma_tlv: str) -> None:
    msg = stun.parse_message(vector)
    assert msg is not None
    assert msg.msg_type == stun.BINDING_SUCCESS
    assert msg.attributes[stun.ATTR_SOFTWARE] == "test vector"
    assert msg.attributes[stun.ATTR_XOR_MAPPED_ADDRESS] == addr
    assert stun.verify_integrity(vector, RFC5769_PASSWORD)
    assert stun.verify_fingerprint(vector)
    assert stun.parse_binding_success(vector, RFC5769_PASSWORD) == (RFC5769_TRANSACTION_ID, addr)
    assert stun.parse_binding_success(vector, b"wrong") is None
    # Our encoder produces the RFC's XOR-MAPPED-ADDRESS bytes.
    assert stun.xor_mapped_address_attribute(addr, RFC5769_TRANSACTION_ID) == unhex(xma_tlv)


def test_rfc5769_request_rebuilt_verifies() -> None:
    """Rebuilding the sample request (zero padding instead of spaces) gives a message
    that parses to the same values and verifies with the same key."""
    attrs = [
        (stun.ATTR_SOFTWARE, "STUN test client"),
        (stun.ATTR_PRIORITY, 0x6E0001FF),
        (stun.ATTR_ICE_CONTROLLED, 0x932FF9B151263B36),
        (stun.ATTR_USERNAME, "evtj:h6vY"),
    ]
    buf = stun.build_message(stun.BINDING_REQUEST, RFC5769_TRANSACTION_ID, attrs, RFC5769_PASSWORD)
    assert len(buf) == len(RFC5769_REQUEST)
    # Identical up to the USERNAME padding (0x20 in the RFC, 0x00 here).
    assert buf[:69] == RFC5769_REQUEST[:69]
    msg = stun.parse_message(buf)
    assert msg is not None
    assert {c: msg.attributes[c] for c, _ in attrs} == dict(attrs)
    assert stun.verify_integrity(buf, RFC5769_PASSWORD)
    assert stun.verify_fingerprint(buf)


# --- malformed input --------------------------------------------------------------


def header(msg_type: int, length: int, cookie: int = stun.MAGIC_COOKIE) -> bytes:
    return struct.pack("!HHI", msg_type, length, cookie) + TXID


def tlv(code: int, value: bytes) -> bytes:
    return struct.pack("!HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def message(body: bytes, msg_type: int = stun.BINDING_REQUEST) -> bytes:
    return header(msg_type, len(body)) + body


MALFORMED = {
    "empty": b"",
    "short header": header(1, 0)[:19],
    "bad cookie": header(1, 0, cookie=0x2112A443),
    "top type bits": header(0xC001, 0),
    "length too long": header(1, 8) + tlv(stun.ATTR_PRIORITY, b"\x00\x00\x00\x01")[:4],
    "length too short": header(1, 0) + tlv(stun.ATTR_PRIORITY, b"\x00\x00\x00\x01"),
    "length not multiple of 4": header(1, 6) + b"\x00\x24\x00\x02\x00\x01",
    "attribute past end": message(struct.pack("!HH", stun.ATTR_USERNAME, 8) + b"abcd"),
    "priority too short": message(tlv(stun.ATTR_PRIORITY, b"\x00\x00\x01")),
    "controlling too short": message(tlv(stun.ATTR_ICE_CONTROLLING, b"\x00" * 4)),
    "use-candidate with value": message(tlv(stun.ATTR_USE_CANDIDATE, b"\x00" * 4)),
    "integrity wrong size": message(tlv(stun.ATTR_MESSAGE_INTEGRITY, b"\x00" * 16)),
    "fingerprint wrong size": message(tlv(stun.ATTR_FINGERPRINT, b"\x00" * 8)),
    "attribute after fingerprint": message(
        tlv(stun.ATTR_FINGERPRINT, b"\x00" * 4) + tlv(stun.ATTR_SOFTWARE, b"x")
    ),
    "address family 3": message(tlv(stun.ATTR_XOR_MAPPED_ADDRESS, b"\x00\x03\x00\x01" + b"\0" * 4)),
    "ipv4 address too long": message(
        tlv(stun.ATTR_MAPPED_ADDRESS, b"\x00\x01\x00\x01" + b"\0" * 8)
    ),
    "ipv6 address too short": message(
        tlv(stun.ATTR_XOR_MAPPED_ADDRESS, b"\x00\x02\x00\x01" + b"\0" * 12)
    ),
    "username not utf-8": message(tlv(stun.ATTR_USERNAME, b"\xff\xfe:ab")),
    "error class 7": message(tlv(stun.ATTR_ERROR_CODE, b"\x00\x00\x07\x00"), stun.BINDING_ERROR),
    "error number 100": message(tlv(stun.ATTR_ERROR_CODE, b"\x00\x00\x04\x64"), stun.BINDING_ERROR),
    "odd unknown-attributes": message(tlv(stun.ATTR_UNKNOWN_ATTRIBUTES, b"\x00\x01\x00")),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_is_none(name: str) -> None:
    buf = MALFORMED[name]
    assert stun.parse_message(buf) is None
    assert stun.parse_binding_success(buf, KEY) is None
    assert not stun.verify_integrity(buf, KEY)


def test_minimal_and_unknown_attributes() -> None:
    empty = stun.parse_message(header(stun.BINDING_INDICATION, 0))
    assert empty is not None and empty.attributes == {} and empty.integrity_offset == -1
    msg = stun.parse_message(
        message(
            tlv(0xC057, b"\x00\x01\x00\x0a")  # GOOG-NETWORK-INFO: optional
            + tlv(0x7F01, b"abc")  # unknown comprehension-required
            + tlv(0x7F02, b"")
            + tlv(0x7F01, b"again")
        )
    )
    assert msg is not None
    assert msg.attributes[0xC057] == b"\x00\x01\x00\x0a"
    assert msg.attributes[0x7F01] == b"abc"  # first occurrence wins
    assert msg.unknown_required == (0x7F01, 0x7F02)


def test_attributes_after_integrity_are_ignored() -> None:
    buf = stun.build_message(stun.BINDING_REQUEST, TXID, [(stun.ATTR_USERNAME, "a:b")], KEY)
    fp = buf[-8:]
    # Splice a PRIORITY and an unknown required attribute between MI and FINGERPRINT.
    extra = tlv(stun.ATTR_PRIORITY, b"\x00\x00\x00\x07") + tlv(0x7F01, b"x")
    body = buf[20:-8] + extra + fp
    spliced = header(stun.BINDING_REQUEST, len(body)) + body
    msg = stun.parse_message(spliced)
    assert msg is not None
    assert stun.ATTR_PRIORITY not in msg.attributes
    assert msg.unknown_required == ()
    assert stun.verify_integrity(spliced, KEY, msg.integrity_offset)


# --- builders -------------------------------------------------------------------


def test_finish_message_layout() -> None:
    buf = stun.build_message(stun.BINDING_REQUEST, TXID, [(stun.ATTR_PRIORITY, 5)], KEY)
    assert len(buf) == 20 + 8 + 24 + 8
    assert struct.unpack_from("!HHI", buf) == (stun.BINDING_REQUEST, 40, stun.MAGIC_COOKIE)
    assert buf[8:20] == TXID
    assert buf[28:32] == b"\x00\x08\x00\x14"
    assert buf[52:56] == b"\x80\x28\x00\x04"
    unsigned = stun.build_message(stun.BINDING_REQUEST, TXID, [], None, with_fingerprint=False)
    assert unsigned == header(stun.BINDING_REQUEST, 0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: stun.build_message(1, b"short", []),
        lambda: stun.build_message(0x4000, TXID, []),
        lambda: stun.build_message(1, TXID, [(stun.ATTR_PRIORITY, -1)]),
        lambda: stun.build_message(1, TXID, [(stun.ATTR_PRIORITY, 1 << 32)]),
        lambda: stun.build_message(1, TXID, [(stun.ATTR_ICE_CONTROLLING, 1 << 64)]),
        lambda: stun.build_message(1, TXID, [(stun.ATTR_XOR_MAPPED_ADDRESS, ("nope", 1))]),
        lambda: stun.build_message(1, TXID, [(stun.ATTR_MAPPED_ADDRESS, ("1.2.3.4", 70000))]),
        lambda: stun.build_message(1, TXID, [(stun.ATTR_USERNAME, "u" * 514)]),
        lambda: stun.build_message(1, TXID, [(stun.ATTR_ERROR_CODE, (200, "OK"))]),
        lambda: stun.build_message(1, TXID, [(stun.ATTR_MESSAGE_INTEGRITY, b"\0" * 20)]),
        lambda: stun.build_message(1, TXID, [(stun.ATTR_FINGERPRINT, 0)]),
        lambda: stun.build_message(1, TXID, [(0x10000, b"")]),
        lambda: stun.finish_message(1, TXID, b"\x00\x01"),
    ],
)
def test_builders_reject_bad_arguments(call: Any) -> None:
    with pytest.raises(ValueError):
        call()


def test_build_binding_request_and_success_response() -> None:
    req = stun.build_binding_request(
        TXID, "remote:local", KEY, 0x6E7F1EFF, 0x1122334455667788, use_candidate=True
    )
    msg = stun.parse_message(req)
    assert msg is not None and msg.msg_type == stun.BINDING_REQUEST
    assert msg.attributes == {
        stun.ATTR_USERNAME: "remote:local",
        stun.ATTR_PRIORITY: 0x6E7F1EFF,
        stun.ATTR_ICE_CONTROLLING: 0x1122334455667788,
        stun.ATTR_USE_CANDIDATE: True,
        stun.ATTR_MESSAGE_INTEGRITY: req[msg.integrity_offset + 4 : msg.integrity_offset + 24],
        stun.ATTR_FINGERPRINT: struct.unpack("!I", req[-4:])[0],
    }
    assert stun.verify_integrity(req, KEY) and stun.verify_fingerprint(req)

    controlled = stun.parse_message(
        stun.build_binding_request(TXID, "a:b", KEY, 1, 2, controlling=False, software="x")
    )
    assert controlled is not None
    assert controlled.attributes[stun.ATTR_ICE_CONTROLLED] == 2
    assert stun.ATTR_ICE_CONTROLLING not in controlled.attributes
    assert stun.ATTR_USE_CANDIDATE not in controlled.attributes
    assert controlled.attributes[stun.ATTR_SOFTWARE] == "x"

    for addr in [("198.51.100.7", 40000), ("2001:db8::42", 1)]:
        resp = stun.build_binding_success(TXID, addr, KEY)
        assert stun.parse_binding_success(resp, KEY) == (TXID, addr)
        assert stun.parse_binding_success(resp, None) == (TXID, addr)
        assert stun.parse_binding_success(resp, b"other key") is None
    assert stun.parse_binding_success(req, KEY) is None  # a request is not a response


def test_parse_binding_success_rejections() -> None:
    unsigned = stun.build_message(
        stun.BINDING_SUCCESS, TXID, [(stun.ATTR_XOR_MAPPED_ADDRESS, ("10.0.0.1", 9))]
    )
    assert stun.parse_binding_success(unsigned, None) == (TXID, ("10.0.0.1", 9))
    assert stun.parse_binding_success(unsigned, KEY) is None  # key given, no MI
    mapped = stun.build_message(
        stun.BINDING_SUCCESS, TXID, [(stun.ATTR_MAPPED_ADDRESS, ("10.0.0.2", 10))], KEY
    )
    assert stun.parse_binding_success(mapped, KEY) == (TXID, ("10.0.0.2", 10))
    no_addr = stun.build_message(stun.BINDING_SUCCESS, TXID, [], KEY)
    assert stun.parse_binding_success(no_addr, KEY) is None
    required = stun.build_message(
        stun.BINDING_SUCCESS,
        TXID,
        [(stun.ATTR_XOR_MAPPED_ADDRESS, ("10.0.0.1", 9)), (0x7F01, b"")],
        KEY,
    )
    assert stun.parse_binding_success(required, KEY) is None
    good = stun.build_binding_success(TXID, ("10.0.0.1", 9), KEY)
    bad_fp = good[:-1] + bytes([good[-1] ^ 1])
    assert stun.parse_binding_success(bad_fp, None) is None


def test_error_response() -> None:
    buf = stun.build_error_response(
        stun.METHOD_BINDING, TXID, stun.ERROR_UNKNOWN_ATTRIBUTE, key=KEY, unknown=(0x7F01, 0x7F02)
    )
    msg = stun.parse_message(buf)
    assert msg is not None and msg.msg_type == stun.BINDING_ERROR
    assert msg.error_code == 420
    assert msg.attributes[stun.ATTR_ERROR_CODE] == (420, "Unknown Attribute")
    assert msg.attributes[stun.ATTR_UNKNOWN_ATTRIBUTES] == (0x7F01, 0x7F02)
    assert stun.verify_integrity(buf, KEY) and stun.verify_fingerprint(buf)

    plain = stun.parse_message(stun.build_error_response(stun.METHOD_BINDING, TXID, 401))
    assert plain is not None and plain.integrity_offset == -1 and plain.fingerprint_offset > 0
    assert plain.attributes[stun.ATTR_ERROR_CODE] == (401, "Unauthenticated")
    custom = stun.parse_message(stun.build_error_response(3, TXID, 599, "Odd"))
    assert custom is not None and custom.msg_type == 0x0113
    assert custom.attributes[stun.ATTR_ERROR_CODE] == (599, "Odd")
    assert stun.parse_message(RFC5769_REQUEST).error_code is None  # type: ignore[union-attr]


# --- properties -----------------------------------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
port = st.integers(0, 0xFFFF)
address = st.tuples(st.one_of(ipv4, ipv6), port)
text = st.text(max_size=120)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 0xFFFFFFFFFFFFFFFF)

attribute = st.one_of(
    st.tuples(st.just(stun.ATTR_MAPPED_ADDRESS), address),
    st.tuples(st.just(stun.ATTR_XOR_MAPPED_ADDRESS), address),
    st.tuples(st.just(stun.ATTR_USERNAME), st.text(max_size=100)),
    st.tuples(st.just(stun.ATTR_SOFTWARE), text),
    st.tuples(st.just(stun.ATTR_PRIORITY), u32),
    st.tuples(st.just(stun.ATTR_ICE_CONTROLLING), u64),
    st.tuples(st.just(stun.ATTR_ICE_CONTROLLED), u64),
    st.tuples(st.just(stun.ATTR_USE_CANDIDATE), st.just(True)),
    st.tuples(
        st.just(stun.ATTR_ERROR_CODE),
        st.tuples(st.integers(300, 699), text),
    ),
    st.tuples(st.just(stun.ATTR_UNKNOWN_ATTRIBUTES), st.lists(st.integers(0, 0xFFFF), max_size=6)),
    st.tuples(st.integers(0x8030, 0xFFFF), st.binary(max_size=40)),  # unknown, optional
)
attribute_lists = st.lists(attribute, max_size=8, unique_by=lambda a: a[0])
msg_types = st.builds(
    stun.message_type,
    st.integers(0, 0xFFF),
    st.sampled_from([0x000, 0x010, 0x100, 0x110]),
)


def normalized(code: int, value: Any) -> Any:
    """Values compared as meaning: addresses as IP objects, lists as tuples."""
    if code == stun.ATTR_UNKNOWN_ATTRIBUTES:
        return tuple(value)
    if code in (stun.ATTR_MAPPED_ADDRESS, stun.ATTR_XOR_MAPPED_ADDRESS):
        return (ipaddress.ip_address(value[0]), value[1])
    return value


@settings(max_examples=300, deadline=None)
@given(msg_types, st.binary(min_size=12, max_size=12), attribute_lists, st.booleans())
def test_round_trip(msg_type: int, txid: bytes, attrs: list[tuple[int, Any]], signed: bool) -> None:
    key = KEY if signed else None
    buf = stun.build_message(msg_type, txid, attrs, key)
    msg = stun.parse_message(buf)
    assert msg is not None
    assert msg.msg_type == msg_type and msg.transaction_id == txid
    for code, value in attrs:
        assert normalized(code, msg.attributes[code]) == normalized(code, value)
    assert msg.unknown_required == ()
    assert stun.verify_fingerprint(buf, msg.fingerprint_offset)
    assert (msg.integrity_offset >= 0) == signed
    if signed:
        assert stun.verify_integrity(buf, KEY, msg.integrity_offset)
        assert not stun.verify_integrity(buf, KEY + b"!", msg.integrity_offset)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(buf: bytes) -> None:
    msg = stun.parse_message(buf)
    stun.verify_integrity(buf, KEY)
    stun.verify_fingerprint(buf)
    stun.find_attribute(buf, stun.ATTR_MESSAGE_INTEGRITY)
    stun.parse_binding_success(buf, KEY)
    if msg is not None:
        stun.verify_integrity(buf, KEY, msg.integrity_offset)
        stun.verify_fingerprint(buf, msg.fingerprint_offset)


@st.composite
def framed_garbage(draw: st.DrawFn) -> bytes:
    """A valid header framing random attribute bytes, to reach the attribute loop."""
    words = draw(st.integers(0, 24))
    body = draw(st.binary(min_size=words * 4, max_size=words * 4))
    return header(draw(msg_types), len(body)) + body


@settings(max_examples=500, deadline=None)
@given(framed_garbage())
def test_framed_garbage_never_raises(buf: bytes) -> None:
    msg = stun.parse_message(buf)
    stun.verify_integrity(buf, KEY)
    stun.verify_fingerprint(buf)
    stun.parse_binding_success(buf, None)
    if msg is not None:
        assert msg.transaction_id == TXID
        stun.verify_integrity(buf, KEY, msg.integrity_offset)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    buf = bytearray(
        stun.build_message(draw(msg_types), TXID, draw(attribute_lists), draw(st.just(KEY)))
    )
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "extend", "delete"]))
        if op == "truncate":
            del buf[draw(st.integers(0, len(buf))) :]
        elif op == "extend":
            buf += draw(st.binary(min_size=1, max_size=8))
        elif not buf:
            continue
        elif op == "flip":
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
        else:
            del buf[draw(st.integers(0, len(buf) - 1))]
    return bytes(buf)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_messages_never_raise(buf: bytes) -> None:
    msg = stun.parse_message(buf)
    stun.verify_integrity(buf, KEY)
    stun.verify_fingerprint(buf)
    stun.parse_binding_success(buf, KEY)
    if msg is not None:
        stun.verify_integrity(buf, KEY, msg.integrity_offset)
        stun.verify_fingerprint(buf, msg.fingerprint_offset)


def flip(buf: bytes, bit: int) -> bytes:
    out = bytearray(buf)
    out[bit >> 3] ^= 1 << (bit & 7)
    return bytes(out)


@pytest.mark.parametrize(
    ("buf", "key"),
    [
        (RFC5769_REQUEST, RFC5769_PASSWORD),
        (RFC5769_IPV6_RESPONSE, RFC5769_PASSWORD),
        (stun.build_binding_request(TXID, "ufrag:other", KEY, 7, 9, use_candidate=True), KEY),
    ],
    ids=["rfc-request", "rfc-ipv6", "ours"],
)
def test_every_single_bit_flip_is_detected(buf: bytes, key: bytes) -> None:
    msg = stun.parse_message(buf)
    assert msg is not None
    mi_end = msg.integrity_offset + 24
    for bit in range(len(buf) * 8):
        bad = flip(buf, bit)
        parsed = stun.parse_message(bad)
        # FINGERPRINT (CRC-32) catches every single-bit error anywhere.
        assert parsed is None or not stun.verify_fingerprint(bad, parsed.fingerprint_offset)
        assert not stun.verify_fingerprint(bad)
        if bit < mi_end * 8:
            # MESSAGE-INTEGRITY covers everything up to its end; the length field
            # is rewritten for the HMAC, so a flip there must break parsing instead.
            assert parsed is None or not stun.verify_integrity(bad, key, parsed.integrity_offset)


@settings(max_examples=200, deadline=None)
@given(attribute_lists, st.data())
def test_single_bit_flip_breaks_integrity_and_fingerprint(
    attrs: list[tuple[int, Any]], data: st.DataObject
) -> None:
    buf = stun.build_message(stun.BINDING_REQUEST, TXID, attrs, KEY)
    mi_end = len(buf) - 8
    bit = data.draw(st.integers(0, len(buf) * 8 - 1))
    bad = flip(buf, bit)
    parsed = stun.parse_message(bad)
    assert not stun.verify_fingerprint(bad)
    if bit < mi_end * 8:
        assert parsed is None or not stun.verify_integrity(bad, KEY, parsed.integrity_offset)


def test_buffer_types_accepted() -> None:
    expected = stun.parse_message(RFC5769_REQUEST)
    assert expected is not None
    for buf in (bytearray(RFC5769_REQUEST), memoryview(RFC5769_REQUEST)):
        msg = stun.parse_message(buf)
        assert msg is not None
        assert msg.attributes == expected.attributes
        assert msg.transaction_id == RFC5769_TRANSACTION_ID
        assert type(msg.transaction_id) is bytes
        assert stun.verify_integrity(buf, RFC5769_PASSWORD, msg.integrity_offset)  # type: ignore[arg-type]
        assert stun.verify_fingerprint(buf)  # type: ignore[arg-type]
