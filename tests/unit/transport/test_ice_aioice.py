"""A real aioice agent connects over UDP on 127.0.0.1 to our ICE-lite responder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import aioice
import aioice.ice
import pytest

from sfu.transport import ice_lite
from sfu.transport.ice_lite import IceLite, IceLiteRegistry

pytestmark = pytest.mark.timeout(30)


class LiteServer(asyncio.DatagramProtocol):
    """One socket, demuxed like the worker: STUN by first byte, the rest by address."""

    def __init__(self, registry: IceLiteRegistry[str]) -> None:
        self.registry = registry
        self.transport: asyncio.DatagramTransport | None = None
        self.events: list[tuple[str | None, int]] = []
        self.data: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.unrouted = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        assert self.transport is not None
        addr = (addr[0], addr[1])
        if data and data[0] < 4:
            now = asyncio.get_running_loop().time()
            owner, response, event = self.registry.handle_stun(data, addr, now)
            self.events.append((owner, event))
            if response is not None:
                self.transport.sendto(response, addr)
            return
        owner = self.registry.get_by_address(addr)
        if owner is None:
            self.unrouted += 1
            return
        self.data.put_nowait((owner, data))
        self.transport.sendto(b"\x80echo:" + data[1:], addr)  # reply on the selected pair


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # aioice gathers host candidates from non-loopback interfaces only.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture
async def server(loopback_only: None) -> AsyncIterator[tuple[LiteServer, int]]:
    registry: IceLiteRegistry[str] = IceLiteRegistry()
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: LiteServer(registry), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    yield protocol, port
    transport.close()


async def connect_aioice(
    server: LiteServer, port: int, name: str, *, controlling: bool, remote_is_lite: bool
) -> tuple[aioice.Connection, IceLite]:
    loop = asyncio.get_running_loop()
    ice = server.registry.new_ice(loop.time())
    server.registry.add(ice, name)
    conn = aioice.Connection(ice_controlling=controlling, use_ipv6=False)
    conn.remote_is_lite = remote_is_lite
    await conn.gather_candidates()
    assert [c.host for c in conn.local_candidates] == ["127.0.0.1"]
    # Signalling: each side learns the other's credentials; we offer one host candidate.
    ice.set_remote_credentials(conn.local_username, conn.local_password)
    conn.remote_username = ice.local_ufrag
    conn.remote_password = ice.local_pwd
    await conn.add_remote_candidate(
        aioice.Candidate(
            foundation="lite",
            component=1,
            transport="udp",
            priority=aioice.candidate.candidate_priority(1, "host"),
            host="127.0.0.1",
            port=port,
            type="host",
        )
    )
    await conn.add_remote_candidate(None)
    await asyncio.wait_for(conn.connect(), 10)
    return conn, ice


def local_addr(conn: aioice.Connection) -> tuple[str, int]:
    candidate = conn.local_candidates[0]
    return candidate.host, candidate.port


@pytest.mark.parametrize(
    ("remote_is_lite", "first_events"),
    [
        # Told we are lite, aioice nominates regularly: a check, then USE-CANDIDATE.
        (True, [ice_lite.EVENT_CHECK, ice_lite.EVENT_SELECTED]),
        # Otherwise it nominates aggressively, on its first check.
        (False, [ice_lite.EVENT_SELECTED]),
    ],
    ids=["regular-nomination", "aggressive-nomination"],
)
async def test_aioice_connects_nominates_and_sends(
    server: tuple[LiteServer, int], remote_is_lite: bool, first_events: list[int]
) -> None:
    protocol, port = server
    conn, ice = await connect_aioice(
        protocol, port, "pc-1", controlling=True, remote_is_lite=remote_is_lite
    )
    try:
        addr = local_addr(conn)
        assert ice.selected_address == addr
        assert protocol.registry.get_by_address(addr) == "pc-1"
        assert [e for _, e in protocol.events[: len(first_events)]] == first_events
        assert all(owner == "pc-1" for owner, _ in protocol.events)
        assert all(e < ice_lite.DROP_FIRST for _, e in protocol.events)
        assert not ice.consent_expired(asyncio.get_running_loop().time())

        await conn.send(b"\x80media-1")
        assert await asyncio.wait_for(protocol.data.get(), 5) == ("pc-1", b"\x80media-1")
        assert await asyncio.wait_for(conn.recv(), 5) == b"\x80echo:media-1"
        assert protocol.unrouted == 0
    finally:
        await conn.close()


async def test_aioice_role_conflict_is_repaired(server: tuple[LiteServer, int]) -> None:
    """An agent that starts controlled gets 487 and switches to controlling."""
    protocol, port = server
    conn, ice = await connect_aioice(protocol, port, "pc-1", controlling=False, remote_is_lite=True)
    try:
        events = [e for _, e in protocol.events]
        assert events[0] == ice_lite.DROP_ROLE_CONFLICT
        assert ice_lite.EVENT_SELECTED in events
        assert conn.ice_controlling
        assert ice.selected_address == local_addr(conn)
    finally:
        await conn.close()


async def test_two_aioice_agents_share_one_socket(server: tuple[LiteServer, int]) -> None:
    protocol, port = server
    (c1, i1), (c2, i2) = await asyncio.gather(
        connect_aioice(protocol, port, "pc-1", controlling=True, remote_is_lite=True),
        connect_aioice(protocol, port, "pc-2", controlling=True, remote_is_lite=True),
    )
    try:
        assert i1.selected_address == local_addr(c1)
        assert i2.selected_address == local_addr(c2)
        assert protocol.registry.by_address == {local_addr(c1): "pc-1", local_addr(c2): "pc-2"}
        await c2.send(b"\x80from-2")
        await c1.send(b"\x80from-1")
        got = {await asyncio.wait_for(protocol.data.get(), 5) for _ in range(2)}
        assert got == {("pc-1", b"\x80from-1"), ("pc-2", b"\x80from-2")}
        assert await asyncio.wait_for(c1.recv(), 5) == b"\x80echo:from-1"
        assert await asyncio.wait_for(c2.recv(), 5) == b"\x80echo:from-2"
    finally:
        await asyncio.gather(c1.close(), c2.close())
