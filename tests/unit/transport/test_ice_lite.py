"""ICE-lite responder and the ufrag/address registry (pure, injected clock)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.transport import ice_lite, stun
from sfu.transport.ice_lite import (
    DROP_BAD_FINGERPRINT,
    DROP_BAD_INTEGRITY,
    DROP_BAD_REQUEST,
    DROP_MALFORMED,
    DROP_NOT_REQUEST,
    DROP_ROLE_CONFLICT,
    DROP_UNKNOWN_ADDRESS,
    DROP_UNKNOWN_ATTRIBUTE,
    DROP_UNKNOWN_UFRAG,
    DROP_UNKNOWN_USERNAME,
    EVENT_ADDRESS_CHANGED,
    EVENT_CHECK,
    EVENT_INDICATION,
    EVENT_NAMES,
    EVENT_SELECTED,
    IceLite,
    IceLiteRegistry,
)

LOCAL_UFRAG = "lcl1"
LOCAL_PWD = "localpassword0123456789"
REMOTE_UFRAG = "rmt9"
REMOTE_PWD = "remotepassword987654321"
ADDR_A = ("198.51.100.10", 50000)
ADDR_B = ("198.51.100.11", 50002)
ADDR_V6 = ("2001:db8::7", 40000)
KEY = LOCAL_PWD.encode()


def make_ice(now: float = 0.0, consent_timeout: float = 30.0) -> IceLite:
    ice = IceLite(
        now, local_ufrag=LOCAL_UFRAG, local_pwd=LOCAL_PWD, consent_timeout=consent_timeout
    )
    ice.set_remote_credentials(REMOTE_UFRAG, REMOTE_PWD)
    return ice


def check(
    *,
    use_candidate: bool = False,
    username: str = f"{LOCAL_UFRAG}:{REMOTE_UFRAG}",
    key: bytes = KEY,
    txid: bytes | None = None,
    controlling: bool = True,
) -> bytes:
    return stun.build_binding_request(
        txid or stun.new_transaction_id(),
        username,
        key,
        1853824767,
        0x0102030405060708,
        use_candidate=use_candidate,
        controlling=controlling,
    )


def success_address(response: bytes | None, txid: bytes) -> stun.Address:
    assert response is not None
    parsed = stun.parse_binding_success(response, KEY)
    assert parsed is not None
    assert parsed[0] == txid
    return parsed[1]


# --- credentials -----------------------------------------------------------------


def test_generated_credentials() -> None:
    seen = set()
    for _ in range(50):
        ice = IceLite(0.0)
        assert ice_lite.is_valid_ufrag(ice.local_ufrag) and len(ice.local_ufrag) >= 4
        assert ice_lite.is_valid_pwd(ice.local_pwd) and len(ice.local_pwd) >= 22
        assert set(ice.local_ufrag + ice.local_pwd) <= set(ice_lite.ICE_CHARS)
        seen.add(ice.local_ufrag)
    assert len(seen) == 50


@pytest.mark.parametrize(
    ("ufrag", "pwd"),
    [
        ("abc", LOCAL_PWD),  # ufrag too short
        ("ab:c", LOCAL_PWD),  # ':' is not an ice-char
        ("a" * 257, LOCAL_PWD),
        (LOCAL_UFRAG, "x" * 21),  # pwd too short
        (LOCAL_UFRAG, "é" * 22),
    ],
)
def test_bad_credentials_rejected(ufrag: str, pwd: str) -> None:
    with pytest.raises(ValueError):
        IceLite(0.0, local_ufrag=ufrag, local_pwd=pwd)
    ice = IceLite(0.0)
    with pytest.raises(ValueError):
        ice.set_remote_credentials(ufrag, pwd)


def test_event_names_cover_every_event() -> None:
    assert len(EVENT_NAMES) == ice_lite.DROP_UFRAG_LIMITED + 1
    assert EVENT_NAMES[ice_lite.DROP_UFRAG_LIMITED] == "stun_ufrag_rate_limited"
    assert EVENT_NAMES[DROP_BAD_INTEGRITY] == "stun_bad_integrity"
    assert EVENT_NAMES[DROP_UNKNOWN_USERNAME] == "stun_unknown_username"
    assert EVENT_NAMES[DROP_MALFORMED] == "stun_malformed"
    assert EVENT_NAMES[DROP_UNKNOWN_UFRAG] == "stun_unknown_ufrag"
    assert all(EVENT_NAMES[e].startswith("stun_") for e in range(ice_lite.DROP_FIRST, len(EVENT_NAMES)))


# --- checks and nomination ---------------------------------------------------------


def test_check_then_nomination_then_move() -> None:
    ice = make_ice()
    txid = stun.new_transaction_id()
    response, event = ice.handle_binding_request(check(txid=txid), ADDR_A, 1.0)
    assert event == EVENT_CHECK
    assert success_address(response, txid) == ADDR_A
    assert ice.selected_address is None

    txid = stun.new_transaction_id()
    response, event = ice.handle_binding_request(check(use_candidate=True, txid=txid), ADDR_A, 2.0)
    assert event == EVENT_SELECTED
    assert success_address(response, txid) == ADDR_A
    assert ice.selected_address == ADDR_A

    # Consent checks that keep nominating the same address change nothing.
    _, event = ice.handle_binding_request(check(use_candidate=True), ADDR_A, 3.0)
    assert event == EVENT_CHECK

    # A non-nominated check from elsewhere is answered but does not move us.
    txid = stun.new_transaction_id()
    response, event = ice.handle_binding_request(check(txid=txid), ADDR_B, 4.0)
    assert event == EVENT_CHECK
    assert success_address(response, txid) == ADDR_B
    assert ice.selected_address == ADDR_A

    # The peer moves (NAT rebinding, network change): followed on a nominated check.
    txid = stun.new_transaction_id()
    response, event = ice.handle_binding_request(check(use_candidate=True, txid=txid), ADDR_B, 5.0)
    assert event == EVENT_ADDRESS_CHANGED
    assert success_address(response, txid) == ADDR_B
    assert ice.selected_address == ADDR_B

    txid = stun.new_transaction_id()
    response, event = ice.handle_binding_request(check(use_candidate=True, txid=txid), ADDR_V6, 6.0)
    assert event == EVENT_ADDRESS_CHANGED
    assert success_address(response, txid) == ADDR_V6
    # IPv6 XOR-MAPPED-ADDRESS depends on the transaction id: each answer its own.
    for _ in range(2):
        txid = stun.new_transaction_id()
        response, _ = ice.handle_binding_request(check(txid=txid), ADDR_V6, 6.5)
        assert success_address(response, txid) == ADDR_V6
    # Back to IPv4 after IPv6: the cached IPv4 attribute is not reused wrongly.
    txid = stun.new_transaction_id()
    response, _ = ice.handle_binding_request(check(txid=txid), ADDR_A, 7.0)
    assert success_address(response, txid) == ADDR_A


def test_success_response_is_signed_and_fingerprinted() -> None:
    ice = make_ice()
    txid = stun.new_transaction_id()
    response, _ = ice.handle_binding_request(check(txid=txid), ADDR_A, 0.0)
    assert response is not None
    msg = stun.parse_message(response)
    assert msg is not None and msg.msg_type == stun.BINDING_SUCCESS
    assert msg.transaction_id == txid
    assert stun.verify_integrity(response, KEY, msg.integrity_offset)
    assert stun.verify_fingerprint(response, msg.fingerprint_offset)


def test_remote_ufrag_unknown_until_set() -> None:
    ice = IceLite(0.0, local_ufrag=LOCAL_UFRAG, local_pwd=LOCAL_PWD)
    _, event = ice.handle_binding_request(check(username=f"{LOCAL_UFRAG}:any1"), ADDR_A, 0.0)
    assert event == EVENT_CHECK
    _, event = ice.handle_binding_request(check(username=f"{LOCAL_UFRAG}x:any1"), ADDR_A, 0.0)
    assert event == DROP_UNKNOWN_USERNAME
    ice.set_remote_credentials(REMOTE_UFRAG, REMOTE_PWD)
    _, event = ice.handle_binding_request(check(username=f"{LOCAL_UFRAG}:any1"), ADDR_A, 0.0)
    assert event == DROP_UNKNOWN_USERNAME


def raw_request(attrs: list[tuple[int, object]], key: bytes | None = KEY) -> Callable[[], bytes]:
    return lambda: stun.build_message(stun.BINDING_REQUEST, stun.new_transaction_id(), attrs, key)


USERNAME = (stun.ATTR_USERNAME, f"{LOCAL_UFRAG}:{REMOTE_UFRAG}")
CONTROLLING = (stun.ATTR_ICE_CONTROLLING, 1)


def bad_fingerprint() -> bytes:
    buf = check()
    return buf[:-1] + bytes([buf[-1] ^ 0x80])


# (name, request factory, event, error code or None for no answer, signed error)
ERROR_CASES: list[tuple[str, Callable[[], bytes], int, int | None, bool]] = [
    ("not stun", lambda: b"\x00\x01\x00\x00garbage", DROP_MALFORMED, None, False),
    ("bad fingerprint", bad_fingerprint, DROP_BAD_FINGERPRINT, None, False),
    ("no username", raw_request([CONTROLLING]), DROP_BAD_REQUEST, 400, False),
    ("no integrity", raw_request([USERNAME, CONTROLLING], key=None), DROP_BAD_REQUEST, 400, False),
    (
        "wrong local ufrag",
        lambda: check(username=f"zzzz:{REMOTE_UFRAG}"),
        DROP_UNKNOWN_USERNAME,
        401,
        False,
    ),
    (
        "wrong remote ufrag",
        lambda: check(username=f"{LOCAL_UFRAG}:zzzz"),
        DROP_UNKNOWN_USERNAME,
        401,
        False,
    ),
    ("no colon", lambda: check(username=LOCAL_UFRAG), DROP_UNKNOWN_USERNAME, 401, False),
    (
        "wrong password",
        lambda: check(key=b"wrongpassword123456789"),
        DROP_BAD_INTEGRITY,
        401,
        False,
    ),
    ("remote pwd as key", lambda: check(key=REMOTE_PWD.encode()), DROP_BAD_INTEGRITY, 401, False),
    (
        "unknown required attribute",
        raw_request([USERNAME, CONTROLLING, (0x7F01, b"??")]),
        DROP_UNKNOWN_ATTRIBUTE,
        420,
        True,
    ),
    ("peer claims controlled", lambda: check(controlling=False), DROP_ROLE_CONFLICT, 487, True),
    (
        "allocate request",
        lambda: stun.build_message(0x0003, stun.new_transaction_id(), [USERNAME], KEY),
        DROP_BAD_REQUEST,
        400,
        False,
    ),
    (
        "binding indication",
        lambda: stun.build_message(stun.BINDING_INDICATION, stun.new_transaction_id()),
        EVENT_INDICATION,
        None,
        False,
    ),
    (
        "binding response",
        lambda: stun.build_binding_success(stun.new_transaction_id(), ADDR_A, KEY),
        DROP_NOT_REQUEST,
        None,
        False,
    ),
]


@pytest.mark.parametrize(
    ("factory", "event", "code", "signed"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_rejected_requests(
    factory: Callable[[], bytes], event: int, code: int | None, signed: bool
) -> None:
    ice = make_ice(now=0.0)
    request = factory()
    response, got = ice.handle_binding_request(request, ADDR_A, 10.0)
    assert got == event
    assert ice.selected_address is None
    assert ice.last_consent == 0.0  # a rejected check does not refresh consent
    if code is None:
        assert response is None
        return
    assert response is not None
    msg = stun.parse_message(response)
    req = stun.parse_message(request)
    assert msg is not None and req is not None
    assert msg.msg_class == stun.CLASS_ERROR and msg.method == req.method
    assert msg.transaction_id == req.transaction_id
    assert msg.error_code == code
    assert stun.verify_fingerprint(response, msg.fingerprint_offset)
    if signed:
        assert stun.verify_integrity(response, KEY, msg.integrity_offset)
    else:
        assert msg.integrity_offset == -1
    if code == 420:
        assert msg.attributes[stun.ATTR_UNKNOWN_ATTRIBUTES] == (0x7F01,)


def test_unknown_optional_attribute_is_accepted() -> None:
    # Chrome adds GOOG-NETWORK-INFO (0xC057), comprehension-optional.
    request = stun.build_message(
        stun.BINDING_REQUEST,
        stun.new_transaction_id(),
        [USERNAME, (0xC057, b"\x00\x01\x00\x0a"), CONTROLLING, (stun.ATTR_USE_CANDIDATE, True)],
        KEY,
    )
    _, event = make_ice().handle_binding_request(request, ADDR_A, 0.0)
    assert event == EVENT_SELECTED


def test_no_fingerprint_is_accepted() -> None:
    request = stun.build_message(
        stun.BINDING_REQUEST, stun.new_transaction_id(), [USERNAME], KEY, with_fingerprint=False
    )
    _, event = make_ice().handle_binding_request(request, ADDR_A, 0.0)
    assert event == EVENT_CHECK


# --- consent freshness --------------------------------------------------------------


def test_consent_expires_without_checks() -> None:
    ice = make_ice(now=100.0)
    assert not ice.consent_expired(129.9)
    assert ice.consent_expired(130.0)
    ice.handle_binding_request(check(use_candidate=True), ADDR_A, 125.0)
    assert not ice.consent_expired(154.9)
    assert ice.consent_expired(155.0)


def test_consent_only_from_selected_address() -> None:
    ice = make_ice(now=0.0)
    ice.handle_binding_request(check(use_candidate=True), ADDR_A, 1.0)
    ice.handle_binding_request(check(), ADDR_B, 20.0)  # valid, but not the selected pair
    assert ice.last_consent == 1.0
    assert ice.consent_expired(31.0)
    ice.handle_binding_request(check(), ADDR_A, 30.5)  # consent check on the selected pair
    assert not ice.consent_expired(31.0)
    assert ice.consent_expired(60.5)


def test_consent_timeout_configurable() -> None:
    ice = make_ice(now=0.0, consent_timeout=5.0)
    assert not ice.consent_expired(4.99)
    assert ice.consent_expired(5.0)
    with pytest.raises(ValueError):
        IceLite(0.0, consent_timeout=0.0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.booleans())
def test_random_datagrams_never_raise(buf: bytes, framed: bool) -> None:
    if framed:
        body = buf[: len(buf) & ~3]
        buf = struct.pack("!HHI", 1, len(body), stun.MAGIC_COOKIE) + bytes(12) + body
    ice = make_ice()
    response, event = ice.handle_binding_request(buf, ADDR_A, 0.0)
    assert 0 <= event < len(EVENT_NAMES)
    assert event >= ice_lite.DROP_FIRST or event == EVENT_INDICATION  # never authenticated
    assert ice.selected_address is None
    registry: IceLiteRegistry[str] = IceLiteRegistry()
    registry.add(ice, "t")
    registry.handle_stun(buf, ADDR_A, 0.0)


# --- registry --------------------------------------------------------------------


@dataclass
class FakeTransport:
    name: str
    ice: IceLite = field(repr=False)


def add_transport(registry: IceLiteRegistry[FakeTransport], name: str) -> FakeTransport:
    ice = registry.new_ice(0.0)
    ice.set_remote_credentials("rem" + name, REMOTE_PWD)
    transport = FakeTransport(name, ice)
    registry.add(ice, transport)
    return transport


def check_for(t: FakeTransport, *, use_candidate: bool = False) -> bytes:
    return stun.build_binding_request(
        stun.new_transaction_id(),
        f"{t.ice.local_ufrag}:{t.ice.remote_ufrag}",
        t.ice.local_pwd.encode(),
        1,
        2,
        use_candidate=use_candidate,
    )


def test_registry_add_remove() -> None:
    registry: IceLiteRegistry[FakeTransport] = IceLiteRegistry()
    a = add_transport(registry, "a")
    assert len(registry) == 1 and a.ice.local_ufrag in registry
    assert registry.get_by_ufrag(a.ice.local_ufrag) is a
    with pytest.raises(ValueError):
        registry.add(a.ice, a)
    assert registry.remove(a.ice) is a
    assert registry.remove(a.ice) is None
    assert len(registry) == 0 and registry.get_by_ufrag(a.ice.local_ufrag) is None


def test_registry_routes_by_ufrag_then_address() -> None:
    registry: IceLiteRegistry[FakeTransport] = IceLiteRegistry()
    a, b = add_transport(registry, "a"), add_transport(registry, "b")
    # First contact from an unknown address: routed by USERNAME alone.
    t, response, event = registry.handle_stun(check_for(b), ADDR_A, 1.0)
    assert (t, event) == (b, EVENT_CHECK) and response is not None
    assert registry.get_by_address(ADDR_A) is b  # routed provisionally until a nomination
    t, _, event = registry.handle_stun(check_for(b, use_candidate=True), ADDR_A, 2.0)
    assert (t, event) == (b, EVENT_SELECTED)
    assert registry.get_by_address(ADDR_A) is b
    assert registry.by_address == {ADDR_A: b}
    t, _, event = registry.handle_stun(check_for(a, use_candidate=True), ADDR_B, 2.0)
    assert (t, event) == (a, EVENT_SELECTED)
    assert registry.by_address == {ADDR_A: b, ADDR_B: a}


def test_registry_drops() -> None:
    registry: IceLiteRegistry[FakeTransport] = IceLiteRegistry()
    a = add_transport(registry, "a")
    stranger = stun.build_binding_request(
        stun.new_transaction_id(), "nobody:x", KEY, 1, 2, use_candidate=True
    )
    assert registry.handle_stun(stranger, ADDR_A, 0.0) == (None, None, DROP_UNKNOWN_UFRAG)
    assert registry.handle_stun(b"\x00\x01junk", ADDR_A, 0.0) == (None, None, DROP_MALFORMED)
    indication = stun.build_message(stun.BINDING_INDICATION, stun.new_transaction_id())
    assert registry.handle_stun(indication, ADDR_A, 0.0) == (None, None, DROP_UNKNOWN_ADDRESS)
    # Bad password for a known ufrag: the transport answers 401, nothing is selected.
    forged = stun.build_binding_request(
        stun.new_transaction_id(),
        f"{a.ice.local_ufrag}:{a.ice.remote_ufrag}",
        b"guessedpassword1234567",
        1,
        2,
        use_candidate=True,
    )
    t, response, event = registry.handle_stun(forged, ADDR_A, 0.0)
    assert (t, event) == (a, DROP_BAD_INTEGRITY) and response is not None
    assert registry.by_address == {}
    # Once selected, an indication from that address is routed to its transport.
    registry.handle_stun(check_for(a, use_candidate=True), ADDR_A, 1.0)
    assert registry.handle_stun(indication, ADDR_A, 1.0) == (a, None, EVENT_INDICATION)
    no_user = stun.build_message(stun.BINDING_REQUEST, stun.new_transaction_id(), [], KEY)
    t, response, event = registry.handle_stun(no_user, ADDR_A, 1.0)
    assert (t, event) == (a, DROP_BAD_REQUEST) and response is not None


def test_registry_two_transports_change_addresses() -> None:
    registry: IceLiteRegistry[FakeTransport] = IceLiteRegistry()
    a, b = add_transport(registry, "a"), add_transport(registry, "b")
    a1, a2, b1 = ("203.0.113.1", 1000), ("203.0.113.1", 1001), ("203.0.113.2", 2000)
    registry.handle_stun(check_for(a, use_candidate=True), a1, 0.0)
    registry.handle_stun(check_for(b, use_candidate=True), b1, 0.0)
    assert registry.by_address == {a1: a, b1: b}

    # a moves: its old address is freed.
    _, _, event = registry.handle_stun(check_for(a, use_candidate=True), a2, 1.0)
    assert event == EVENT_ADDRESS_CHANGED
    assert registry.by_address == {a2: a, b1: b}

    # Swap: a takes b's address, then b takes a's. Each keeps only what it owns.
    registry.handle_stun(check_for(a, use_candidate=True), b1, 2.0)
    assert registry.by_address == {b1: a}
    registry.handle_stun(check_for(b, use_candidate=True), a2, 3.0)
    assert registry.by_address == {b1: a, a2: b}
    assert (a.ice.selected_address, b.ice.selected_address) == (b1, a2)

    # Removing b frees only b's address.
    assert registry.remove(b.ice) is b
    assert registry.by_address == {b1: a}
    assert registry.remove(a.ice) is a
    assert registry.by_address == {}


def test_registry_remove_keeps_address_taken_over() -> None:
    registry: IceLiteRegistry[FakeTransport] = IceLiteRegistry()
    a, b = add_transport(registry, "a"), add_transport(registry, "b")
    registry.handle_stun(check_for(a, use_candidate=True), ADDR_A, 0.0)
    registry.handle_stun(check_for(b, use_candidate=True), ADDR_A, 1.0)  # b takes it over
    assert registry.by_address == {ADDR_A: b}
    # a checks again from there (its selected address): it claims it back.
    _, _, event = registry.handle_stun(check_for(a), ADDR_A, 2.0)
    assert event == EVENT_CHECK
    assert registry.by_address == {ADDR_A: a}
    registry.handle_stun(check_for(b, use_candidate=True), ADDR_A, 3.0)
    registry.remove(a.ice)  # a still believes ADDR_A is its address
    assert registry.by_address == {ADDR_A: b}


def test_registry_expired() -> None:
    registry: IceLiteRegistry[FakeTransport] = IceLiteRegistry()
    a, b = add_transport(registry, "a"), add_transport(registry, "b")
    registry.handle_stun(check_for(a, use_candidate=True), ADDR_A, 20.0)
    assert registry.expired(29.0) == []
    assert registry.expired(30.0) == [b]
    assert sorted(t.name for t in registry.expired(50.0)) == ["a", "b"]
    assert len(registry) == 2  # not removed


def test_registry_new_ice_is_unique() -> None:
    registry: IceLiteRegistry[FakeTransport] = IceLiteRegistry()
    names = {add_transport(registry, str(i)).ice.local_ufrag for i in range(200)}
    assert len(names) == 200 == len(registry)


ADDRESSES = [("10.0.0.1", 1), ("10.0.0.1", 2), ("10.0.0.2", 1), ("2001:db8::1", 1)]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.integers(0, len(ADDRESSES) - 1),
            st.sampled_from(["check", "nominate", "remove"]),
        ),
        max_size=40,
    )
)
def test_registry_address_map_stays_consistent(ops: list[tuple[int, int, str]]) -> None:
    registry: IceLiteRegistry[FakeTransport] = IceLiteRegistry()
    transports = [add_transport(registry, str(i)) for i in range(3)]
    for now, (ti, ai, op) in enumerate(ops):
        t, addr = transports[ti], ADDRESSES[ai]
        if op == "remove":
            registry.remove(t.ice)
            continue
        routed, response, event = registry.handle_stun(
            check_for(t, use_candidate=op == "nominate"), addr, float(now)
        )
        if t.ice.local_ufrag not in registry:
            assert (routed, response, event) == (None, None, DROP_UNKNOWN_UFRAG)
            continue
        assert routed is t and response is not None
        assert event in (EVENT_CHECK, EVENT_SELECTED, EVENT_ADDRESS_CHANGED)
        if op == "nominate":
            assert t.ice.selected_address == addr
            assert registry.get_by_address(addr) is t
        # Every entry points at a registered transport that has that address selected.
        for mapped, owner in registry.by_address.items():
            assert owner.ice.local_ufrag in registry
            # an address maps to its owner's selected address, or provisionally to a
            # transport that has no selection yet (its one pre-nomination address)
            assert owner.ice.selected_address == mapped or (
                owner.ice.selected_address is None and registry._provisional.get(owner.ice.local_ufrag) == mapped)


def test_registry_bounds_failed_checks_per_ufrag_from_any_number_of_sources() -> None:
    # A participant knows its own transport's ufrag: bad checks from 5,000 addresses (each
    # under the endpoint's per-host limit) must not each cost an HMAC. Past the ufrag's burst
    # they are dropped unread, while the selected address's checks still get through.
    registry: IceLiteRegistry[FakeTransport] = IceLiteRegistry()
    a = add_transport(registry, "a")
    other = add_transport(registry, "other")
    registry.handle_stun(check_for(a, use_candidate=True), ADDR_A, 0.0)  # selected
    forged_key = b"guessedpassword1234567"
    hmacs = limited = 0
    for i in range(5000):
        forged = stun.build_binding_request(
            stun.new_transaction_id(), f"{a.ice.local_ufrag}:{a.ice.remote_ufrag}", forged_key, 1, 2)
        _, _, event = registry.handle_stun(forged, (f"10.0.{i // 250}.{i % 250}", 5000 + i), 1.0)
        hmacs += event == DROP_BAD_INTEGRITY
        limited += event == ice_lite.DROP_UFRAG_LIMITED
    assert hmacs <= ice_lite.UFRAG_FAILURE_BURST
    assert hmacs + limited == 5000
    t, response, event = registry.handle_stun(check_for(a), ADDR_A, 1.0)
    assert (t, event) == (a, EVENT_CHECK) and response is not None  # consent goes on
    t, _, event = registry.handle_stun(check_for(other), ADDR_B, 1.0)
    assert (t, event) == (other, EVENT_CHECK)  # another transport is not affected
    # The bucket refills at the rate: a second later about UFRAG_FAILURE_RATE more are heard.
    forged = stun.build_binding_request(
        stun.new_transaction_id(), f"{a.ice.local_ufrag}:{a.ice.remote_ufrag}", forged_key, 1, 2)
    assert registry.handle_stun(forged, ("10.9.9.9", 1), 2.0)[2] == DROP_BAD_INTEGRITY
    registry.remove(a.ice)  # its failure entry goes with it
    assert registry._failures.limited(a.ice.local_ufrag, 2.0) is False


def test_aggressive_nomination_keeps_the_highest_priority_pair() -> None:
    # Firefox sets USE-CANDIDATE on every check: its UDP pair and, later, its lower-priority
    # ICE-TCP pair. The lite agent keeps the UDP pair (RFC 8445 8.1.1) while it is alive.
    def nominate(priority: int) -> bytes:
        return stun.build_binding_request(stun.new_transaction_id(), f"{LOCAL_UFRAG}:{REMOTE_UFRAG}", KEY,
                                          priority, 0x0102030405060708, use_candidate=True)

    ice = make_ice()
    udp_priority, tcp_priority = 1853824767, 1518280447
    assert ice.handle_binding_request(nominate(udp_priority), ADDR_A, 1.0)[1] == EVENT_SELECTED
    response, event = ice.handle_binding_request(nominate(tcp_priority), ADDR_B, 1.2)
    assert response is not None and event == EVENT_CHECK  # answered, selection unchanged
    assert ice.selected_address == ADDR_A
    # A higher (or equal) priority nomination from elsewhere moves it at once.
    assert ice.handle_binding_request(nominate(udp_priority + 1), ADDR_B, 1.3)[1] == EVENT_ADDRESS_CHANGED
    assert ice.selected_address == ADDR_B
    # A lower one moves it once the selected address has gone quiet (a path that died).
    ice.handle_binding_request(check(), ADDR_B, 2.0)
    assert ice.handle_binding_request(nominate(tcp_priority), ADDR_A, 2.0 + 1.0)[1] == EVENT_CHECK
    stale = 2.0 + ice_lite.SELECTED_STALE_SECONDS
    assert ice.handle_binding_request(nominate(tcp_priority), ADDR_A, stale)[1] == EVENT_ADDRESS_CHANGED
    assert ice.selected_address == ADDR_A
