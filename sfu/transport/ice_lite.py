"""ICE-lite responder (RFC 8445 section 2.5) for one transport, and the worker's
ufrag/address table. Pure logic: no sockets, the clock is passed in as `now`.

An ICE-lite agent never sends checks. It answers the checks of the browser (a full,
controlling agent), selects the source address of a nominated check (USE-CANDIDATE)
and follows the peer to a new address on a later nominated check. Consent (RFC 7675)
is taken as expired when no valid check arrived for `consent_timeout` seconds.
"""

from __future__ import annotations

import re
import secrets
import string
from typing import Generic, TypeVar

from sfu.transport import stun
from sfu.transport.stun import Address, StunMessage

ICE_CHARS = string.ascii_letters + string.digits + "+/"
UFRAG_LENGTH = 16
PWD_LENGTH = 32
CONSENT_TIMEOUT = 30.0

_UFRAG_RE = re.compile(r"[A-Za-z0-9+/]{4,256}")
_PWD_RE = re.compile(r"[A-Za-z0-9+/]{22,256}")

# Events returned with each handled datagram. Values below DROP_FIRST are normal;
# the others are drop reasons the caller counts (EVENT_NAMES gives the label).
EVENT_CHECK = 0  # valid check answered, nothing changed
EVENT_SELECTED = 1  # first nominated check: selected_address set
EVENT_ADDRESS_CHANGED = 2  # nominated check from a new address: selected_address moved
EVENT_INDICATION = 3  # Binding indication (keepalive): no answer
DROP_FIRST = 4
DROP_MALFORMED = 4  # not parseable as STUN: no answer
DROP_BAD_FINGERPRINT = 5  # FINGERPRINT mismatch: no answer
DROP_NOT_REQUEST = 6  # a response (we send no requests), or unknown indication
DROP_BAD_REQUEST = 7  # 400: not a Binding request, or USERNAME/MESSAGE-INTEGRITY missing
DROP_UNKNOWN_USERNAME = 8  # 401 from a transport; unanswered by the registry
DROP_BAD_INTEGRITY = 9  # 401
DROP_UNKNOWN_ATTRIBUTE = 10  # 420 with UNKNOWN-ATTRIBUTES
DROP_ROLE_CONFLICT = 11  # 487: the peer claims the controlled role too
DROP_UNKNOWN_ADDRESS = 12  # registry: no USERNAME and no transport at that address
DROP_UNKNOWN_UFRAG = 13  # registry: USERNAME names no local ufrag; dropped before parsing, unanswered
DROP_UFRAG_LIMITED = 14  # registry: the ufrag's failed checks are spent; only its selected address is heard

EVENT_NAMES: tuple[str, ...] = (
    "check",
    "selected",
    "address_changed",
    "indication",
    "stun_malformed",
    "stun_bad_fingerprint",
    "stun_not_request",
    "stun_bad_request",
    "stun_unknown_username",
    "stun_bad_integrity",
    "stun_unknown_attribute",
    "stun_role_conflict",
    "stun_unknown_address",
    "stun_unknown_ufrag",
    "stun_ufrag_rate_limited",
)


def random_ice_string(length: int) -> str:
    """`length` characters of the ice-char set from a CSPRNG."""
    return "".join(secrets.choice(ICE_CHARS) for _ in range(length))


def is_valid_ufrag(value: str) -> bool:
    return _UFRAG_RE.fullmatch(value) is not None


def is_valid_pwd(value: str) -> bool:
    return _PWD_RE.fullmatch(value) is not None


def _error(msg: StunMessage, code: int, key: bytes | None, request_size: int) -> bytes | None:
    """An error response; an unsigned one (400/401: the request was not authenticated) only
    when it is no bigger than the request, so answering a stranger never amplifies."""
    response = stun.build_error_response(
        stun.method_of(msg.msg_type), msg.transaction_id, code, key=key
    )
    if key is None and len(response) > request_size:
        return None
    return response


def _precheck(msg: StunMessage, buf: bytes) -> tuple[bytes | None, int] | None:
    """Checks that need no credentials; None when `msg` is a Binding request with
    USERNAME and MESSAGE-INTEGRITY, else the answer and event."""
    if msg.fingerprint_offset >= 0 and not stun.verify_fingerprint(buf, msg.fingerprint_offset):
        return None, DROP_BAD_FINGERPRINT
    msg_type = msg.msg_type
    if msg_type != stun.BINDING_REQUEST:
        if msg_type == stun.BINDING_INDICATION:
            return None, EVENT_INDICATION
        if msg_type & stun.CLASS_MASK == stun.CLASS_REQUEST:
            return _error(msg, stun.ERROR_BAD_REQUEST, None, len(buf)), DROP_BAD_REQUEST
        return None, DROP_NOT_REQUEST
    if stun.ATTR_USERNAME not in msg.attributes or msg.integrity_offset < 0:
        return _error(msg, stun.ERROR_BAD_REQUEST, None, len(buf)), DROP_BAD_REQUEST
    return None


class IceLite:
    """ICE-lite state of one transport (one peer connection of a participant)."""

    __slots__ = (
        "local_ufrag",
        "local_pwd",
        "remote_ufrag",
        "remote_pwd",
        "consent_timeout",
        "selected_address",
        "last_consent",
        "_key",
        "_prefix",
        "_username",
        "_xma_addr",
        "selected_priority",
        "_xma_attr",
    )

    def __init__(
        self,
        now: float,
        *,
        local_ufrag: str | None = None,
        local_pwd: str | None = None,
        consent_timeout: float = CONSENT_TIMEOUT,
    ) -> None:
        if local_ufrag is None:
            local_ufrag = random_ice_string(UFRAG_LENGTH)
        elif not is_valid_ufrag(local_ufrag):
            raise ValueError("ufrag must be 4-256 ice-chars")
        if local_pwd is None:
            local_pwd = random_ice_string(PWD_LENGTH)
        elif not is_valid_pwd(local_pwd):
            raise ValueError("pwd must be 22-256 ice-chars")
        if consent_timeout <= 0:
            raise ValueError("consent_timeout must be positive")
        self.local_ufrag = local_ufrag
        self.local_pwd = local_pwd
        self.remote_ufrag: str | None = None
        self.remote_pwd: str | None = None
        self.consent_timeout = consent_timeout
        self.selected_address: Address | None = None
        self.selected_priority = 0  # PRIORITY of the check that nominated selected_address
        # Time of the last valid check (creation time until the first one).
        self.last_consent = now
        self._key = local_pwd.encode("ascii")
        self._prefix = local_ufrag + ":"
        self._username: str | None = None
        self._xma_addr: Address | None = None
        self._xma_attr = b""

    def set_remote_credentials(self, ufrag: str, pwd: str) -> None:
        """Remote ice-ufrag/ice-pwd from SDP. Until set, any remote ufrag is accepted
        in USERNAME (checks may arrive before the answer is applied)."""
        if not is_valid_ufrag(ufrag):
            raise ValueError("remote ufrag must be 4-256 ice-chars")
        if not is_valid_pwd(pwd):
            raise ValueError("remote pwd must be 22-256 ice-chars")
        self.remote_ufrag = ufrag
        self.remote_pwd = pwd
        self._username = self._prefix + ufrag

    def consent_expired(self, now: float) -> bool:
        """True when no valid check was received for `consent_timeout` seconds."""
        return now - self.last_consent >= self.consent_timeout

    def handle_binding_request(
        self, buf: bytes, addr: Address, now: float
    ) -> tuple[bytes | None, int]:
        """Answer one STUN datagram from `addr`: (response to send or None, event)."""
        msg = stun.parse_message(buf)
        if msg is None:
            return None, DROP_MALFORMED
        return self.handle_message(msg, buf, addr, now)

    def handle_message(
        self, msg: StunMessage, buf: bytes, addr: Address, now: float
    ) -> tuple[bytes | None, int]:
        """As handle_binding_request, for a message already parsed from `buf`."""
        early = _precheck(msg, buf)
        if early is not None:
            return early
        username: str = msg.attributes[stun.ATTR_USERNAME]
        expected = self._username
        if expected is None:
            known = username.startswith(self._prefix)
        else:
            known = username == expected
        if not known:
            return _error(msg, stun.ERROR_UNAUTHENTICATED, None, len(buf)), DROP_UNKNOWN_USERNAME
        key = self._key
        attrs = msg.attributes
        if not stun.verify_integrity(buf, key, msg.integrity_offset):
            return _error(msg, stun.ERROR_UNAUTHENTICATED, None, len(buf)), DROP_BAD_INTEGRITY
        if msg.unknown_required:
            response = stun.build_error_response(
                stun.METHOD_BINDING,
                msg.transaction_id,
                stun.ERROR_UNKNOWN_ATTRIBUTE,
                key=key,
                unknown=msg.unknown_required,
            )
            return response, DROP_UNKNOWN_ATTRIBUTE
        if stun.ATTR_ICE_CONTROLLED in attrs:
            # We are always controlled: the peer must take the controlling role.
            return _error(msg, stun.ERROR_ROLE_CONFLICT, key, len(buf)), DROP_ROLE_CONFLICT

        selected = self.selected_address
        event = EVENT_CHECK
        if stun.ATTR_USE_CANDIDATE in attrs:
            priority = attrs.get(stun.ATTR_PRIORITY, 0)
            if selected is None:
                self.selected_address = selected = addr
                self.selected_priority = priority
                event = EVENT_SELECTED
            elif selected != addr and (
                priority >= self.selected_priority or now - self.last_consent >= SELECTED_STALE_SECONDS
            ):
                # A lite agent keeps the highest-priority nominated pair (RFC 8445 section
                # 8.1.1). Firefox nominates aggressively: every check carries USE-CANDIDATE, its
                # lower-priority ICE-TCP pair's too, and taking the last one heard moved a
                # client's media off UDP to a TCP connection (its UDP packets then dropped as
                # unknown_address). A lower-priority nomination still wins once the selected
                # address has gone quiet (a network change without an ICE restart).
                self.selected_address = selected = addr
                self.selected_priority = priority
                event = EVENT_ADDRESS_CHANGED
        if selected is None or selected == addr:
            self.last_consent = now

        txid = msg.transaction_id
        if addr != self._xma_addr:
            self._xma_attr = stun.xor_mapped_address_attribute(addr, txid)
            # IPv4 XOR-MAPPED-ADDRESS depends only on the magic cookie: keep it.
            self._xma_addr = addr if ":" not in addr[0] else None
        return stun.finish_message(stun.BINDING_SUCCESS, txid, self._xma_attr, key), event

    def __repr__(self) -> str:
        return f"IceLite(ufrag={self.local_ufrag!r}, selected={self.selected_address!r})"


T = TypeVar("T")


class IceLiteRegistry(Generic[T]):
    """The worker's table: local ufrag -> (IceLite, transport), and selected remote
    address -> transport.

    STUN requests are routed by the local ufrag in USERNAME (they may come from an
    address no check has selected yet); every other datagram by source address.
    An address belongs to the transport whose last valid check from it had it
    selected; a transport that moves away or is removed only gives up an address
    it still owns. Addresses are keys exactly as the worker passes them (normalize
    IPv6 4-tuples to (host, port) before both handle_stun and get_by_address).

    A request that names a known ufrag but fails its integrity check cost us an HMAC; the
    per-source limiter of the endpoint bounds that per host, and `_failures` bounds it per
    ufrag, whatever the number of source addresses: a participant who knows only its own
    transport's ufrag can spend at most UFRAG_FAILURE_RATE HMACs a second on bad checks,
    after which that ufrag is heard only from its selected address (its consent checks go
    on) until the bucket refills.
    """

    __slots__ = ("_by_ufrag", "_by_address", "_provisional", "_failures")

    def __init__(self) -> None:
        self._by_ufrag: dict[str, tuple[IceLite, T]] = {}
        self._by_address: dict[Address, T] = {}
        self._provisional: dict[str, Address] = {}  # local ufrag -> address routed before nomination
        self._failures = FailureLimiter(UFRAG_FAILURE_RATE, UFRAG_FAILURE_BURST, UFRAG_FAILURE_ENTRIES)

    @property
    def by_address(self) -> dict[Address, T]:
        """Selected address -> transport, for the demux (read only)."""
        return self._by_address

    def __len__(self) -> int:
        return len(self._by_ufrag)

    def __contains__(self, ufrag: object) -> bool:
        return ufrag in self._by_ufrag

    def new_ice(self, now: float, consent_timeout: float = CONSENT_TIMEOUT) -> IceLite:
        """An IceLite whose local ufrag is not in the table (not added)."""
        while True:
            ufrag = random_ice_string(UFRAG_LENGTH)
            if ufrag not in self._by_ufrag:
                return IceLite(now, local_ufrag=ufrag, consent_timeout=consent_timeout)

    def add(self, ice: IceLite, transport: T) -> None:
        """Register a transport under its local ufrag (ValueError if taken)."""
        if ice.local_ufrag in self._by_ufrag:
            raise ValueError(f"ufrag already registered: {ice.local_ufrag}")
        self._by_ufrag[ice.local_ufrag] = (ice, transport)
        if ice.selected_address is not None:
            self._by_address[ice.selected_address] = transport

    def remove(self, ice: IceLite) -> T | None:
        """Forget a transport and the address it owns; returns it, or None if absent."""
        entry = self._by_ufrag.pop(ice.local_ufrag, None)
        if entry is None:
            return None
        transport = entry[1]
        addr = ice.selected_address
        if addr is not None and self._by_address.get(addr) is transport:
            del self._by_address[addr]
        prov = self._provisional.pop(ice.local_ufrag, None)
        if prov is not None and self._by_address.get(prov) is transport:
            del self._by_address[prov]
        self._failures.forget(ice.local_ufrag)
        return transport

    def get_by_ufrag(self, ufrag: str) -> T | None:
        entry = self._by_ufrag.get(ufrag)
        return None if entry is None else entry[1]

    def get_by_address(self, addr: Address) -> T | None:
        return self._by_address.get(addr)

    def handle_stun(
        self, buf: bytes, addr: Address, now: float
    ) -> tuple[T | None, bytes | None, int]:
        """Route and answer one STUN datagram: (transport or None, response, event).

        A request naming an unknown ufrag is dropped unanswered (we hold no key to
        sign with, and answering strangers only reflects traffic), and before the
        message is parsed: one walk of the attribute headers and a dict lookup.
        """
        ufrag = stun.username_ufrag(buf)
        if ufrag is not None:
            known = self._by_ufrag.get(ufrag)
            if known is None:
                return None, None, DROP_UNKNOWN_UFRAG
            if known[0].selected_address != addr and self._failures.limited(ufrag, now):
                return None, None, DROP_UFRAG_LIMITED
        msg = stun.parse_message(buf)
        if msg is None:
            return None, None, DROP_MALFORMED
        username = msg.attributes.get(stun.ATTR_USERNAME)
        if username is not None:
            entry = self._by_ufrag.get(username.partition(":")[0])
            if entry is None:
                return None, None, DROP_UNKNOWN_USERNAME
            ice, transport = entry
        else:
            found = self._by_address.get(addr)
            if found is None:
                return None, None, DROP_UNKNOWN_ADDRESS
            # Indication or a request without USERNAME: answered without credentials.
            early = _precheck(msg, buf)
            if early is None:  # unreachable: USERNAME is missing
                return found, None, DROP_BAD_REQUEST
            return found, early[0], early[1]
        old = ice.selected_address
        response, event = ice.handle_message(msg, buf, addr, now)
        if event == DROP_BAD_INTEGRITY:
            self._failures.charge(ice.local_ufrag, now)
        if event == EVENT_CHECK and ice.selected_address is None:
            # A valid check before any nomination: route this address to the transport
            # provisionally (one address at most), so a DTLS flight sent as soon as the peer
            # sees the check succeed is not dropped. Nomination decides and releases it.
            if addr not in self._by_address and ice.local_ufrag not in self._provisional:
                self._by_address[addr] = transport
                self._provisional[ice.local_ufrag] = addr
            return transport, response, event
        prov = self._provisional.pop(ice.local_ufrag, None) if ice.selected_address is not None else None
        if prov is not None and prov != ice.selected_address and self._by_address.get(prov) is transport:
            del self._by_address[prov]
        # A valid check from the selected address claims it, also back from a
        # transport that took it over meanwhile.
        if event <= EVENT_ADDRESS_CHANGED and ice.selected_address == addr:
            by_address = self._by_address
            if by_address.get(addr) is not transport:
                if old is not None and old != addr and by_address.get(old) is transport:
                    del by_address[old]
                by_address[addr] = transport
        return transport, response, event

    def expired(self, now: float) -> list[T]:
        """Transports whose consent expired (not removed); for a periodic ticker."""
        return [t for ice, t in self._by_ufrag.values() if ice.consent_expired(now)]


# A nomination of a lower-priority pair than the selected one moves the selection only once
# the selected address has sent no valid check for this long: Chromium checks its selected pair
# every 2.5 s, Firefox its consent about every 5 s, and a dead path sends none.
SELECTED_STALE_SECONDS = 6.0

DEFAULT_FAILURE_RATE = 20.0  # failed STUN requests a second a source host may cost us
DEFAULT_FAILURE_BURST = 40.0
DEFAULT_FAILURE_SOURCES = 4096  # hosts remembered (oldest forgotten first)
UFRAG_FAILURE_RATE = 50.0  # failed integrity checks a second one local ufrag may cost us, from any sources
UFRAG_FAILURE_BURST = 100.0
UFRAG_FAILURE_ENTRIES = 65536  # ufrags with failures remembered; a removed transport's entry is forgotten


class FailureLimiter:
    """Per source host, a token bucket of failed STUN requests (malformed, unauthenticated).

    ``limited`` is checked before a STUN datagram is parsed or any HMAC computed: a host
    whose bucket is empty is dropped at the cost of one dict lookup. ``charge`` spends a token
    for each failure that cost a parse or an HMAC (an unknown ufrag costs one lookup and is
    not charged); a valid check costs nothing, so a browser's checks are never limited unless
    its host also sends failures (a host, not a port: ports are free to vary). The table holds
    at most ``max_sources`` hosts: a new one evicts the oldest entry. 20/s with a burst of 40
    is far above what a peer with a wrong password retries, and bounds one host to ~20 HMACs/s.
    """

    __slots__ = ("rate", "burst", "max_sources", "_hosts")

    def __init__(self, rate: float = DEFAULT_FAILURE_RATE, burst: float = DEFAULT_FAILURE_BURST,
                 max_sources: int = DEFAULT_FAILURE_SOURCES) -> None:
        if rate < 0 or burst < 1 or max_sources < 1:
            raise ValueError("rate must be >= 0, burst >= 1 and max_sources >= 1")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._hosts: dict[str, list[float]] = {}  # host -> [tokens, at]

    def _refill(self, entry: list[float], now: float) -> float:
        tokens = entry[0] + (now - entry[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        entry[0] = tokens
        entry[1] = now
        return tokens

    def limited(self, host: str, now: float) -> bool:
        """True when ``host`` spent its failures: drop its STUN unread."""
        entry = self._hosts.get(host)
        return entry is not None and self._refill(entry, now) < 1.0

    def charge(self, host: str, now: float) -> None:
        """One failed request from ``host``."""
        hosts = self._hosts
        entry = hosts.get(host)
        if entry is None:
            if len(hosts) >= self.max_sources:
                del hosts[next(iter(hosts))]
            hosts[host] = [self.burst - 1.0, now]
            return
        entry[0] = self._refill(entry, now) - 1.0

    def forget(self, key: str) -> None:
        self._hosts.pop(key, None)

    def __len__(self) -> int:
        return len(self._hosts)
