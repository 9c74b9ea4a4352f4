"""STUN messages (RFC 8489) as used by ICE connectivity checks: parse, verify, build.

Pure functions, no I/O. `parse_message` never raises: it returns None for any
malformed datagram. MESSAGE-INTEGRITY and FINGERPRINT are verified over the raw
bytes received, never over a re-serialized message. Builders raise ValueError for
bad arguments.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import socket
import struct
import zlib
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

Address = tuple[str, int]

MAGIC_COOKIE = 0x2112A442
HEADER_LENGTH = 20
TRANSACTION_ID_LENGTH = 12
ATTR_HEADER_LENGTH = 4
INTEGRITY_LENGTH = 20  # HMAC-SHA1 digest
INTEGRITY_ATTR_LENGTH = ATTR_HEADER_LENGTH + INTEGRITY_LENGTH
FINGERPRINT_ATTR_LENGTH = ATTR_HEADER_LENGTH + 4
FINGERPRINT_XOR = 0x5354554E
MAX_MESSAGE_LENGTH = 0xFFFF

# Message class: bits C1 (0x100) and C0 (0x010) of the message type.
CLASS_REQUEST = 0x0000
CLASS_INDICATION = 0x0010
CLASS_SUCCESS = 0x0100
CLASS_ERROR = 0x0110
CLASS_MASK = 0x0110

METHOD_BINDING = 0x001

# Binding message types (method 1 with each class).
BINDING_REQUEST = 0x0001
BINDING_INDICATION = 0x0011
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111

# Attribute types. 0x0000-0x7FFF are comprehension-required, 0x8000-0xFFFF optional.
ATTR_MAPPED_ADDRESS = 0x0001
ATTR_USERNAME = 0x0006
ATTR_MESSAGE_INTEGRITY = 0x0008
ATTR_ERROR_CODE = 0x0009
ATTR_UNKNOWN_ATTRIBUTES = 0x000A
ATTR_MESSAGE_INTEGRITY_SHA256 = 0x001C
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_PRIORITY = 0x0024
ATTR_USE_CANDIDATE = 0x0025
ATTR_SOFTWARE = 0x8022
ATTR_FINGERPRINT = 0x8028
ATTR_ICE_CONTROLLED = 0x8029
ATTR_ICE_CONTROLLING = 0x802A
COMPREHENSION_OPTIONAL = 0x8000

FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02

ERROR_BAD_REQUEST = 400
ERROR_UNAUTHENTICATED = 401
ERROR_UNKNOWN_ATTRIBUTE = 420
ERROR_ROLE_CONFLICT = 487
ERROR_SERVER_ERROR = 500

REASON_PHRASES: dict[int, str] = {
    300: "Try Alternate",
    400: "Bad Request",
    401: "Unauthenticated",
    403: "Forbidden",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    487: "Role Conflict",
    500: "Server Error",
}

_HEADER = struct.Struct("!HHI12s")
_HEADER_PREFIX = struct.Struct("!HHI")
_ATTR = struct.Struct("!HH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_ADDR = struct.Struct("!BBH")  # reserved, family, port
_ERROR = struct.Struct("!HBB")  # reserved, class, number
_PAD = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")  # indexed by length & 3
_COOKIE_BYTES = _U32.pack(MAGIC_COOKIE)
_COOKIE_HIGH = MAGIC_COOKIE >> 16
_INTEGRITY_HEADER = _ATTR.pack(ATTR_MESSAGE_INTEGRITY, INTEGRITY_LENGTH)
_FINGERPRINT_HEADER = _ATTR.pack(ATTR_FINGERPRINT, 4)


def message_type(method: int, message_class: int) -> int:
    """Message type for a 12-bit method and a class (RFC 8489 section 5)."""
    if not 0 <= method <= 0xFFF:
        raise ValueError(f"STUN method out of range: {method}")
    if message_class & ~CLASS_MASK:
        raise ValueError(f"not a STUN class: {message_class:#x}")
    return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | message_class


def method_of(msg_type: int) -> int:
    """Method bits of a message type."""
    return (msg_type & 0x000F) | ((msg_type & 0x00E0) >> 1) | ((msg_type & 0x3E00) >> 2)


def class_of(msg_type: int) -> int:
    """Class bits of a message type (one of the CLASS_* constants)."""
    return msg_type & CLASS_MASK


def new_transaction_id() -> bytes:
    """96 random bits."""
    return os.urandom(TRANSACTION_ID_LENGTH)


# --- attribute values -------------------------------------------------------------
# pack(value, transaction_id) -> value bytes (no header, no padding); raises ValueError.
# unpack(buf, offset, length) -> value, or None when malformed; buf is the whole message.


def _address_parts(value: Address) -> tuple[int, int, bytes]:
    host, port = value[0], value[1]
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    host = host.partition("%")[0]  # drop an IPv6 zone
    try:
        return FAMILY_IPV4, port, socket.inet_pton(socket.AF_INET, host)
    except OSError:
        pass
    try:
        return FAMILY_IPV6, port, socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        raise ValueError(f"not an IP address: {host!r}") from None


def _pack_address(value: Address, transaction_id: bytes) -> bytes:
    family, port, ip = _address_parts(value)
    return _ADDR.pack(0, family, port) + ip


def _pack_xor_address(value: Address, transaction_id: bytes) -> bytes:
    family, port, ip = _address_parts(value)
    if family == FAMILY_IPV4:
        xip = (int.from_bytes(ip, "big") ^ MAGIC_COOKIE).to_bytes(4, "big")
    else:
        pad = int.from_bytes(_COOKIE_BYTES + transaction_id, "big")
        xip = (int.from_bytes(ip, "big") ^ pad).to_bytes(16, "big")
    return _ADDR.pack(0, family, port ^ _COOKIE_HIGH) + xip


def _unpack_address(buf: bytes, off: int, length: int) -> Address | None:
    if length < 4:
        return None
    _, family, port = _ADDR.unpack_from(buf, off)
    if family == FAMILY_IPV4 and length == 8:
        return socket.inet_ntop(socket.AF_INET, buf[off + 4 : off + 8]), port
    if family == FAMILY_IPV6 and length == 20:
        return socket.inet_ntop(socket.AF_INET6, buf[off + 4 : off + 20]), port
    return None


def _unpack_xor_address(buf: bytes, off: int, length: int) -> Address | None:
    if length < 4:
        return None
    _, family, port = _ADDR.unpack_from(buf, off)
    port ^= _COOKIE_HIGH
    if family == FAMILY_IPV4 and length == 8:
        ip = _U32.unpack_from(buf, off + 4)[0] ^ MAGIC_COOKIE
        return socket.inet_ntop(socket.AF_INET, ip.to_bytes(4, "big")), port
    if family == FAMILY_IPV6 and length == 20:
        ip = int.from_bytes(buf[off + 4 : off + 20], "big") ^ int.from_bytes(buf[4:20], "big")
        return socket.inet_ntop(socket.AF_INET6, ip.to_bytes(16, "big")), port
    return None


def _pack_username(value: str, transaction_id: bytes) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 513:
        raise ValueError("USERNAME longer than 513 bytes")
    return raw


def _unpack_username(buf: bytes, off: int, length: int) -> str | None:
    if length > 513:
        return None
    try:
        return buf[off : off + length].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _pack_text(value: str, transaction_id: bytes) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 763:
        raise ValueError("text attribute longer than 763 bytes")
    return raw


def _unpack_text(buf: bytes, off: int, length: int) -> str | None:
    # Informational text: undecodable bytes are replaced rather than rejected.
    return buf[off : off + length].decode("utf-8", "replace")


def _pack_raw(value: bytes, transaction_id: bytes) -> bytes:
    return bytes(value)


def _unpack_integrity(buf: bytes, off: int, length: int) -> bytes | None:
    return buf[off : off + length] if length == INTEGRITY_LENGTH else None


def _unpack_integrity_sha256(buf: bytes, off: int, length: int) -> bytes | None:
    return buf[off : off + length] if 16 <= length <= 32 and length & 3 == 0 else None


def _pack_error_code(value: tuple[int, str], transaction_id: bytes) -> bytes:
    code, reason = value
    if not 300 <= code <= 699:
        raise ValueError(f"STUN error code out of range: {code}")
    return _ERROR.pack(0, code // 100, code % 100) + _pack_text(reason, transaction_id)


def _unpack_error_code(buf: bytes, off: int, length: int) -> tuple[int, str] | None:
    if length < 4:
        return None
    _, klass, number = _ERROR.unpack_from(buf, off)
    klass &= 0x07
    if not 3 <= klass <= 6 or number > 99:
        return None
    return klass * 100 + number, buf[off + 4 : off + length].decode("utf-8", "replace")


def _pack_unknown(value: Iterable[int], transaction_id: bytes) -> bytes:
    codes = tuple(value)
    for code in codes:
        if not 0 <= code <= 0xFFFF:
            raise ValueError(f"attribute type out of range: {code}")
    return struct.pack(f"!{len(codes)}H", *codes)


def _unpack_unknown(buf: bytes, off: int, length: int) -> tuple[int, ...] | None:
    if length & 1:
        return None
    return struct.unpack_from(f"!{length >> 1}H", buf, off)


def _pack_u32(value: int, transaction_id: bytes) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"not a 32-bit value: {value}")
    return _U32.pack(value)


def _unpack_u32(buf: bytes, off: int, length: int) -> int | None:
    return _U32.unpack_from(buf, off)[0] if length == 4 else None


def _pack_u64(value: int, transaction_id: bytes) -> bytes:
    if not 0 <= value <= 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"not a 64-bit value: {value}")
    return _U64.pack(value)


def _unpack_u64(buf: bytes, off: int, length: int) -> int | None:
    return _U64.unpack_from(buf, off)[0] if length == 8 else None


def _pack_flag(value: Any, transaction_id: bytes) -> bytes:
    return b""


def _unpack_flag(buf: bytes, off: int, length: int) -> bool | None:
    return True if length == 0 else None


class AttributeSpec(NamedTuple):
    """One known attribute: its type, name and value codec."""

    code: int
    name: str
    pack: Callable[[Any, bytes], bytes]
    unpack: Callable[[bytes, int, int], Any]


ATTRIBUTES: tuple[AttributeSpec, ...] = (
    AttributeSpec(ATTR_MAPPED_ADDRESS, "MAPPED-ADDRESS", _pack_address, _unpack_address),
    AttributeSpec(ATTR_USERNAME, "USERNAME", _pack_username, _unpack_username),
    AttributeSpec(ATTR_MESSAGE_INTEGRITY, "MESSAGE-INTEGRITY", _pack_raw, _unpack_integrity),
    AttributeSpec(ATTR_ERROR_CODE, "ERROR-CODE", _pack_error_code, _unpack_error_code),
    AttributeSpec(ATTR_UNKNOWN_ATTRIBUTES, "UNKNOWN-ATTRIBUTES", _pack_unknown, _unpack_unknown),
    AttributeSpec(
        ATTR_MESSAGE_INTEGRITY_SHA256,
        "MESSAGE-INTEGRITY-SHA256",
        _pack_raw,
        _unpack_integrity_sha256,
    ),
    AttributeSpec(
        ATTR_XOR_MAPPED_ADDRESS, "XOR-MAPPED-ADDRESS", _pack_xor_address, _unpack_xor_address
    ),
    AttributeSpec(ATTR_PRIORITY, "PRIORITY", _pack_u32, _unpack_u32),
    AttributeSpec(ATTR_USE_CANDIDATE, "USE-CANDIDATE", _pack_flag, _unpack_flag),
    AttributeSpec(ATTR_SOFTWARE, "SOFTWARE", _pack_text, _unpack_text),
    AttributeSpec(ATTR_FINGERPRINT, "FINGERPRINT", _pack_u32, _unpack_u32),
    AttributeSpec(ATTR_ICE_CONTROLLED, "ICE-CONTROLLED", _pack_u64, _unpack_u64),
    AttributeSpec(ATTR_ICE_CONTROLLING, "ICE-CONTROLLING", _pack_u64, _unpack_u64),
)
ATTRIBUTES_BY_CODE: dict[int, AttributeSpec] = {spec.code: spec for spec in ATTRIBUTES}
ATTRIBUTES_BY_NAME: dict[str, AttributeSpec] = {spec.name: spec for spec in ATTRIBUTES}


# --- parsing ----------------------------------------------------------------------


class StunMessage:
    """A parsed STUN message.

    `attributes` maps attribute type to decoded value (first occurrence wins);
    unknown attributes are kept as raw bytes. Attributes after MESSAGE-INTEGRITY,
    other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, are ignored (RFC 8489
    section 14.5). Offsets are those of the attribute headers, -1 when absent.
    """

    __slots__ = (
        "msg_type",
        "transaction_id",
        "attributes",
        "unknown_required",
        "integrity_offset",
        "integrity_sha256_offset",
        "fingerprint_offset",
    )

    def __init__(
        self,
        msg_type: int,
        transaction_id: bytes,
        attributes: dict[int, Any],
        unknown_required: tuple[int, ...] = (),
        integrity_offset: int = -1,
        integrity_sha256_offset: int = -1,
        fingerprint_offset: int = -1,
    ) -> None:
        self.msg_type = msg_type
        self.transaction_id = transaction_id
        self.attributes = attributes
        self.unknown_required = unknown_required
        self.integrity_offset = integrity_offset
        self.integrity_sha256_offset = integrity_sha256_offset
        self.fingerprint_offset = fingerprint_offset

    @property
    def method(self) -> int:
        return method_of(self.msg_type)

    @property
    def msg_class(self) -> int:
        return self.msg_type & CLASS_MASK

    @property
    def error_code(self) -> int | None:
        value = self.attributes.get(ATTR_ERROR_CODE)
        return None if value is None else value[0]

    def __repr__(self) -> str:
        names = {
            ATTRIBUTES_BY_CODE[c].name if c in ATTRIBUTES_BY_CODE else f"{c:#06x}": v
            for c, v in self.attributes.items()
        }
        return (
            f"StunMessage(type={self.msg_type:#06x}, "
            f"transaction_id={self.transaction_id.hex()}, attributes={names})"
        )


def parse_message(buf: bytes | bytearray | memoryview) -> StunMessage | None:
    """Parse one STUN message from a whole datagram; None if malformed.

    Malformed: shorter than a header, top two type bits set, wrong magic cookie,
    length field not matching the datagram or not a multiple of 4, an attribute
    running past the end, a known attribute with a bad value, anything after
    FINGERPRINT. Integrity and fingerprint are not checked here.
    """
    if type(buf) is not bytes:
        buf = bytes(buf)  # bytearray/memoryview: values must be bytes and str
    n = len(buf)
    if n < HEADER_LENGTH:
        return None
    msg_type, length, cookie = _HEADER_PREFIX.unpack_from(buf, 0)
    if msg_type & 0xC000 or cookie != MAGIC_COOKIE or length & 3 or length + HEADER_LENGTH != n:
        return None
    attributes: dict[int, Any] = {}
    unknown: list[int] | None = None
    mi = mi256 = fp = -1
    by_code = ATTRIBUTES_BY_CODE
    off = HEADER_LENGTH
    while off < n:
        if fp >= 0 or off + ATTR_HEADER_LENGTH > n:
            return None
        code, alen = _ATTR.unpack_from(buf, off)
        voff = off + ATTR_HEADER_LENGTH
        if voff + alen > n:
            return None
        if code == ATTR_FINGERPRINT:
            fp = off
        elif mi256 >= 0 or (mi >= 0 and code != ATTR_MESSAGE_INTEGRITY_SHA256):
            off = voff + ((alen + 3) & ~3)
            continue  # not covered by integrity: ignored
        elif code == ATTR_MESSAGE_INTEGRITY:
            mi = off
        elif code == ATTR_MESSAGE_INTEGRITY_SHA256:
            mi256 = off
        spec = by_code.get(code)
        if spec is not None:
            value = spec.unpack(buf, voff, alen)
            if value is None:
                return None
        else:
            value = buf[voff : voff + alen]
            if code < COMPREHENSION_OPTIONAL:
                if unknown is None:
                    unknown = [code]
                elif code not in unknown:
                    unknown.append(code)
        if code not in attributes:
            attributes[code] = value
        off = voff + ((alen + 3) & ~3)
    return StunMessage(
        msg_type,
        buf[8:20],
        attributes,
        () if unknown is None else tuple(unknown),
        mi,
        mi256,
        fp,
    )


def username_ufrag(buf: bytes) -> str | None:
    """The part before ':' of USERNAME, read without parsing the message; None when absent.

    For routing before any other work: checks the header (type bits, magic cookie, length),
    walks attribute headers only, decodes nothing but that prefix. A prefix that is not
    ASCII comes back as "" (no transport has it). ``parse_message`` still judges the whole
    message afterwards.
    """
    n = len(buf)
    if n < HEADER_LENGTH:
        return None
    msg_type, length, cookie = _HEADER_PREFIX.unpack_from(buf, 0)
    if msg_type & 0xC000 or cookie != MAGIC_COOKIE or length + HEADER_LENGTH != n:
        return None
    off = HEADER_LENGTH
    while off + ATTR_HEADER_LENGTH <= n:
        code, alen = _ATTR.unpack_from(buf, off)
        voff = off + ATTR_HEADER_LENGTH
        if code == ATTR_USERNAME:
            if voff + alen > n:
                return None
            end = buf.find(b":", voff, voff + alen)
            raw = buf[voff : voff + alen if end < 0 else end]
            return raw.decode("ascii") if raw.isascii() else ""
        off = voff + ((alen + 3) & ~3)
    return None


def find_attribute(buf: bytes, code: int) -> int:
    """Offset of the first attribute header of type `code`, -1 if absent or malformed."""
    n = len(buf)
    off = HEADER_LENGTH
    while off + ATTR_HEADER_LENGTH <= n:
        acode, alen = _ATTR.unpack_from(buf, off)
        if acode == code:
            return off if off + ATTR_HEADER_LENGTH + alen <= n else -1
        off += ATTR_HEADER_LENGTH + ((alen + 3) & ~3)
    return -1


@functools.lru_cache(maxsize=4096)
def _hmac_sha1_base(key: bytes) -> hmac.HMAC:
    # Keyed inner/outer state computed once per key; each message copies it.
    return hmac.new(key, digestmod=hashlib.sha1)


def message_integrity(data: bytes | bytearray | memoryview, key: bytes) -> bytes:
    """HMAC-SHA1 of `data` (a message prefix whose length field already covers
    MESSAGE-INTEGRITY)."""
    mac = _hmac_sha1_base(key).copy()
    mac.update(data)
    return mac.digest()


def verify_integrity(buf: bytes, key: bytes, offset: int = -1) -> bool:
    """Check MESSAGE-INTEGRITY (HMAC-SHA1) over the raw bytes received.

    `offset` is the attribute's header offset (StunMessage.integrity_offset), found
    by walking the attributes when -1. The HMAC covers the bytes before the attribute
    with the header length set as if the message ended right after it.
    """
    if offset < 0:
        if len(buf) < HEADER_LENGTH:
            return False
        offset = find_attribute(buf, ATTR_MESSAGE_INTEGRITY)
        if offset < 0:
            return False
    end = offset + INTEGRITY_ATTR_LENGTH
    if offset < HEADER_LENGTH or end > len(buf) or buf[offset : offset + 4] != _INTEGRITY_HEADER:
        return False
    mac = _hmac_sha1_base(key).copy()
    mac.update(buf[0:2])
    mac.update(_U16.pack(end - HEADER_LENGTH))
    mac.update(memoryview(buf)[4:offset])
    return hmac.compare_digest(mac.digest(), buf[offset + 4 : end])


def fingerprint(data: bytes | bytearray | memoryview) -> int:
    """FINGERPRINT value: CRC-32 of `data` xor 0x5354554e."""
    return zlib.crc32(data) ^ FINGERPRINT_XOR


def verify_fingerprint(buf: bytes, offset: int = -1) -> bool:
    """Check FINGERPRINT, which must be the last attribute.

    `offset` (StunMessage.fingerprint_offset) defaults to the last 8 bytes.
    """
    n = len(buf)
    if offset < 0:
        offset = n - FINGERPRINT_ATTR_LENGTH
    if offset < HEADER_LENGTH or offset + FINGERPRINT_ATTR_LENGTH != n:
        return False
    if buf[offset : offset + 4] != _FINGERPRINT_HEADER:
        return False
    return _U32.unpack_from(buf, offset + 4)[0] == zlib.crc32(memoryview(buf)[:offset]) ^ (
        FINGERPRINT_XOR
    )


# --- building ---------------------------------------------------------------------


def encode_attribute(code: int, value: Any, transaction_id: bytes) -> bytes:
    """One attribute TLV with padding; unknown types take raw bytes as value."""
    if code == ATTR_MESSAGE_INTEGRITY or code == ATTR_FINGERPRINT:
        raise ValueError("MESSAGE-INTEGRITY and FINGERPRINT are added by finish_message")
    if not 0 <= code <= 0xFFFF:
        raise ValueError(f"attribute type out of range: {code}")
    spec = ATTRIBUTES_BY_CODE.get(code)
    raw = spec.pack(value, transaction_id) if spec is not None else bytes(value)
    n = len(raw)
    if n > 0xFFFF:
        raise ValueError("attribute value too long")
    return _ATTR.pack(code, n) + raw + _PAD[n & 3]


def encode_attributes(attributes: Iterable[tuple[int, Any]], transaction_id: bytes) -> bytes:
    """Attribute TLVs in the given order."""
    return b"".join(encode_attribute(code, value, transaction_id) for code, value in attributes)


def finish_message(
    msg_type: int,
    transaction_id: bytes,
    body: bytes,
    key: bytes | None = None,
    with_fingerprint: bool = True,
) -> bytes:
    """Header + encoded attributes `body`, then MESSAGE-INTEGRITY (when `key`) and
    FINGERPRINT, each computed with the length field covering itself."""
    if len(transaction_id) != TRANSACTION_ID_LENGTH:
        raise ValueError("transaction id must be 12 bytes")
    if not 0 <= msg_type <= 0x3FFF:
        raise ValueError(f"STUN message type out of range: {msg_type}")
    n = len(body)
    if n & 3:
        raise ValueError("attribute body not padded to 4 bytes")
    pos = HEADER_LENGTH + n
    total = pos + (INTEGRITY_ATTR_LENGTH if key is not None else 0)
    total += FINGERPRINT_ATTR_LENGTH if with_fingerprint else 0
    if total - HEADER_LENGTH > MAX_MESSAGE_LENGTH:
        raise ValueError("STUN message too long")
    out = bytearray(total)
    view = memoryview(out)
    first_length = n + (INTEGRITY_ATTR_LENGTH if key is not None else 0)
    _HEADER.pack_into(out, 0, msg_type, first_length, MAGIC_COOKIE, transaction_id)
    out[HEADER_LENGTH:pos] = body
    if key is not None:
        mac = _hmac_sha1_base(key).copy()
        mac.update(view[:pos])
        out[pos : pos + 4] = _INTEGRITY_HEADER
        out[pos + 4 : pos + INTEGRITY_ATTR_LENGTH] = mac.digest()
        pos += INTEGRITY_ATTR_LENGTH
    if with_fingerprint:
        _U16.pack_into(out, 2, pos + FINGERPRINT_ATTR_LENGTH - HEADER_LENGTH)
        out[pos : pos + 4] = _FINGERPRINT_HEADER
        _U32.pack_into(out, pos + 4, zlib.crc32(view[:pos]) ^ FINGERPRINT_XOR)
    view.release()
    return bytes(out)


def build_message(
    msg_type: int,
    transaction_id: bytes,
    attributes: Iterable[tuple[int, Any]] = (),
    key: bytes | None = None,
    with_fingerprint: bool = True,
) -> bytes:
    """A whole message from (type, value) pairs, signed when `key` is given."""
    body = encode_attributes(attributes, transaction_id)
    return finish_message(msg_type, transaction_id, body, key, with_fingerprint)


def xor_mapped_address_attribute(addr: Address, transaction_id: bytes) -> bytes:
    """XOR-MAPPED-ADDRESS TLV; for IPv4 it does not depend on the transaction id."""
    return encode_attribute(ATTR_XOR_MAPPED_ADDRESS, addr, transaction_id)


def build_binding_success(transaction_id: bytes, addr: Address, key: bytes) -> bytes:
    """Binding success response: XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT."""
    body = xor_mapped_address_attribute(addr, transaction_id)
    return finish_message(BINDING_SUCCESS, transaction_id, body, key)


@functools.lru_cache(maxsize=64)
def error_code_attribute(code: int, reason: str | None = None) -> bytes:
    """ERROR-CODE TLV, with the standard reason phrase by default."""
    if reason is None:
        reason = REASON_PHRASES.get(code, "")
    return encode_attribute(ATTR_ERROR_CODE, (code, reason), b"")


def build_error_response(
    method: int,
    transaction_id: bytes,
    code: int,
    reason: str | None = None,
    key: bytes | None = None,
    unknown: Iterable[int] = (),
) -> bytes:
    """Error response to a request of `method`; UNKNOWN-ATTRIBUTES lists `unknown`
    (for 420). Signed when `key` is given; FINGERPRINT always."""
    body = error_code_attribute(code, reason)
    unknown = tuple(unknown)
    if unknown:
        body += encode_attribute(ATTR_UNKNOWN_ATTRIBUTES, unknown, transaction_id)
    return finish_message(message_type(method, CLASS_ERROR), transaction_id, body, key)


def build_binding_request(
    transaction_id: bytes,
    username: str,
    key: bytes,
    priority: int,
    tie_breaker: int,
    *,
    use_candidate: bool = False,
    controlling: bool = True,
    software: str | None = None,
) -> bytes:
    """ICE connectivity check as sent by a full agent (RFC 8445 section 7.2.2):
    USERNAME `remote_ufrag:local_ufrag`, PRIORITY, ICE-CONTROLLING (or -CONTROLLED)
    with the tie-breaker, USE-CANDIDATE when nominating; `key` is the remote pwd."""
    attrs: list[tuple[int, Any]] = []
    if software is not None:
        attrs.append((ATTR_SOFTWARE, software))
    attrs.append((ATTR_USERNAME, username))
    attrs.append((ATTR_PRIORITY, priority))
    attrs.append((ATTR_ICE_CONTROLLING if controlling else ATTR_ICE_CONTROLLED, tie_breaker))
    if use_candidate:
        attrs.append((ATTR_USE_CANDIDATE, True))
    return build_message(BINDING_REQUEST, transaction_id, attrs, key)


def parse_binding_success(buf: bytes, key: bytes | None) -> tuple[bytes, Address] | None:
    """(transaction id, XOR-MAPPED-ADDRESS) of a Binding success response.

    None unless: it parses, its FINGERPRINT (if any) matches, it is signed with `key`
    (when `key` is not None) and it has no unknown comprehension-required attribute.
    Falls back to MAPPED-ADDRESS when XOR-MAPPED-ADDRESS is absent.
    """
    msg = parse_message(buf)
    if msg is None or msg.msg_type != BINDING_SUCCESS or msg.unknown_required:
        return None
    if msg.fingerprint_offset >= 0 and not verify_fingerprint(buf, msg.fingerprint_offset):
        return None
    if key is not None and (
        msg.integrity_offset < 0 or not verify_integrity(buf, key, msg.integrity_offset)
    ):
        return None
    addr = msg.attributes.get(ATTR_XOR_MAPPED_ADDRESS)
    if addr is None:
        addr = msg.attributes.get(ATTR_MAPPED_ADDRESS)
        if addr is None:
            return None
    return msg.transaction_id, addr
