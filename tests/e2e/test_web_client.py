"""The reference web client (signaling/web/) in Debian's Chromium against a real `telesfu serve`.

One node (a subprocess on loopback, one media worker) and one browser serve the whole module;
every participant is a browser context of its own with Chromium's fake camera and microphone.
People, appointments and join links come from the control API, as a practice backend would
make them. Media is asserted from the page's `window.telesfu.stats()` (getStats inbound-rtp:
video framesDecoded and audio packetsReceived per remote participant). Each scenario saves
screenshots under test-artifacts/web/.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, WebSocketRoute

from tests.e2e.web_helpers import (  # noqa: F401 - the fixtures are used by their names
    CHROMIUM,
    DESKTOP,
    PHONE,
    TelesfuNode,
    WebPeer,
    telesfu_node_fixture,
    uid,
    web_browser_fixture,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (scripts/setup.sh --test installs it)"),
]


@pytest.fixture
def out(artifacts: Path) -> Path:
    d = artifacts / "web"
    d.mkdir(parents=True, exist_ok=True)
    return d


async def _close(*peers: WebPeer | None) -> None:
    for p in peers:
        if p is not None:
            await p.close()


async def _no_page_errors(*peers: WebPeer) -> None:
    """No script errors, and every subscribe offer of the SFU was accepted by Chromium."""
    for p in peers:
        assert not p.errors, f"{p.name}: errors on the page: {p.errors}"
        rejected = await p.page.evaluate("window.telesfu.failedOffer()")
        assert not rejected, f"{p.name}: Chromium rejected a subscribe offer\n{await p.diagnose()}"


async def _video_shown(peer: WebPeer, pid: str) -> None:
    """The remote participant's tile shows live video (not the initials placeholder)."""
    await peer.wait_for("pid => { const t = document.querySelector(`.tile[data-pid=\"${pid}\"]`);"
                        " return t && !t.classList.contains('no-video') && t.querySelector('video').videoWidth > 0; }",
                        f"live video in the tile of {pid}", arg=pid)


async def test_waiting_room_the_provider_admits_and_both_see_each_other(
        telesfu_node: TelesfuNode, web_browser: Browser, out: Path) -> None:
    node = telesfu_node
    prov, cl, apt = uid("prov"), uid("client"), uid("apt")
    await node.provider(prov, "Dr. Maya Rivera", waiting_room=True)
    await node.client(cl, "Sam Taylor")
    await node.appointment(apt, prov, [cl])
    client = provider = None
    try:
        client = await WebPeer.open(web_browser, await node.join_url(apt, cl), "client", PHONE)
        assert "Sam Taylor" in await client.page.inner_text("#prejoin-who")
        await client.shot(out / "a-client-prejoin-phone.png")
        # the client's WebSocket goes through Playwright, so the test can drop it later
        sockets: list[WebSocketRoute] = []

        def through(ws: WebSocketRoute) -> None:
            ws.connect_to_server()
            sockets.append(ws)

        await client.page.route_web_socket("**/v1/rtc", through)
        await client.join()
        await client.wait_screen("waiting")
        assert await client.page.inner_text("#waiting-title") == "Waiting for your provider"
        await client.shot(out / "a-client-waiting-phone.png")

        provider = await WebPeer.open(web_browser, await node.join_url(apt, prov), "provider", DESKTOP)
        await provider.join()
        await provider.wait_screen("call")
        popup = provider.page.locator(f'.popup[data-pid="{cl}"]')
        await popup.wait_for(timeout=10_000)
        assert "Sam Taylor" in await popup.inner_text()
        assert await provider.page.inner_text("#people-badge") == "1"
        await provider.shot(out / "a-provider-admit-popup.png")
        # a waiting client is let in by the provider only: still waiting, with no peer connection
        state = await client.state()
        assert state["screen"] == "waiting" and state["publish"] == "none", state

        await popup.get_by_role("button", name="Admit Sam Taylor").click()
        await client.wait_screen("call")
        await popup.wait_for(state="detached", timeout=5_000)
        got_client = await client.wait_media_from([prov])
        got_provider = await provider.wait_media_from([cl])
        assert got_client[prov]["framesDecoded"] > 0 and got_provider[cl]["framesDecoded"] > 0
        await _video_shown(client, prov)
        await _video_shown(provider, cl)
        # 1:1 layout: the other person is the main tile, oneself the small one
        assert await client.page.get_attribute("#stage", "data-layout") == "one"
        assert await provider.page.locator(f'.tile.main[data-pid="{cl}"]').count() == 1
        await client.shot(out / "a-client-in-call-phone.png")
        await provider.shot(out / "a-provider-in-call.png")

        # the provider mutes the client from the participants menu
        await provider.page.click("#ctl-people")
        await provider.page.get_by_role("button", name="Mute Sam Taylor").click()
        await client.wait_for("() => window.telesfu.state.micMuted", "the client's microphone turned off by the provider")
        assert await client.page.get_attribute("#ctl-mic", "aria-pressed") == "true"
        await provider.wait_for("pid => !document.querySelector(`.tile[data-pid=\"${pid}\"] .mic-off`).hasAttribute('hidden')",
                                "the muted icon on the client's tile", arg=cl)
        await client.shot(out / "a-client-muted-by-provider-phone.png", settle=0.1)
        await provider.shot(out / "a-provider-participants-menu.png")
        await provider.page.click("#panel-close")
        # the client may unmute again (the provider can mute, never unmute, someone)
        await client.page.click("#ctl-mic")
        await provider.wait_for("pid => document.querySelector(`.tile[data-pid=\"${pid}\"] .mic-off`).hasAttribute('hidden')",
                                "the client unmuted", arg=cl)

        # the socket drops as when the media server restarts (1012): the client resumes with the
        # credential of `joined`, within the grace period, and is not sent back to the waiting room
        before_client, before_provider = await client.decoded_from(), await provider.decoded_from()
        n_events = len(await client.events())
        await sockets[-1].close(code=1012, reason="media restarted")
        await client.wait_for("() => window.telesfu.state.reconnecting", "the reconnecting overlay", timeout=5)
        assert await client.page.is_visible("#reconnecting")
        await client.shot(out / "a-client-reconnecting-phone.png", settle=0.05)
        await client.wait_for("() => window.telesfu.state.phase === 'joined' && !window.telesfu.state.reconnecting",
                              "the client back in the call")
        assert len(sockets) == 2, "the client did not open a new WebSocket"
        await client.wait_media_from([prov], baseline=before_client)
        await provider.wait_media_from([cl], baseline=before_provider)
        after = (await client.events())[n_events:]
        assert not [e for e in after if e.endswith("screen waiting")], after
        assert [e for e in after if e.endswith("send resume")], after
        await _no_page_errors(client, provider)
    finally:
        await _close(client, provider)


async def test_waiting_room_off_the_client_joins_directly(
        telesfu_node: TelesfuNode, web_browser: Browser, out: Path) -> None:
    node = telesfu_node
    prov, cl, apt = uid("prov"), uid("client"), uid("apt")
    await node.provider(prov, "Dr. Alan Brooks", waiting_room=False)
    await node.client(cl, "Priya Natarajan")
    await node.appointment(apt, prov, [cl])
    client = provider = None
    try:
        client = await WebPeer.open(web_browser, await node.join_url(apt, cl), "client", DESKTOP)
        await client.join()
        state = await client.wait_screen("call")
        assert state["role"] == "client" and state["participant_id"] == cl, state
        assert not [e for e in await client.events() if e.endswith("screen waiting")], "the client went through the waiting room"
        assert await client.page.get_attribute("#stage", "data-layout") == "solo"
        assert await client.page.is_visible("#stage-note")
        await client.shot(out / "b-client-alone-first.png")

        provider = await WebPeer.open(web_browser, await node.join_url(apt, prov), "provider", DESKTOP)
        await provider.join()
        await provider.wait_screen("call")
        await client.wait_media_from([prov])
        await provider.wait_media_from([cl])
        await _video_shown(client, prov)
        assert not await client.page.is_visible("#stage-note")
        await client.shot(out / "b-client-in-call.png")
        await _no_page_errors(client, provider)

        # the practice ends the session: everyone sees that it has ended, and the camera goes off
        status, body = await node.call("DELETE", f"/v1/rooms/{apt}")
        assert status in (200, 202, 204), (status, body)
        for p in (client, provider):
            state = await p.wait_screen("message")
            assert state["code"] == "room_closed", state
            assert await p.page.inner_text("#message-title") == "The session has ended"
            assert await p.page.evaluate("document.querySelectorAll('video').length === 0 || "
                                         "[...document.querySelectorAll('video')].every(v => !v.srcObject)")
        await client.shot(out / "b-client-session-ended.png")
    finally:
        await _close(client, provider)


async def test_group_session_everyone_sees_two_remote_videos(
        telesfu_node: TelesfuNode, web_browser: Browser, out: Path) -> None:
    node = telesfu_node
    prov, c1, c2, apt = uid("prov"), uid("client"), uid("client"), uid("apt")
    await node.provider(prov, "Dr. Elena Okafor", waiting_room=False)
    await node.client(c1, "Chris Morgan")
    await node.client(c2, "Dana Whitfield")
    await node.appointment(apt, prov, [c1, c2], minutes=90)
    peers: list[WebPeer] = []
    try:
        urls = [await node.join_url(apt, pid) for pid in (prov, c1, c2)]
        sizes = [DESKTOP, DESKTOP, PHONE]
        peers = list(await asyncio.gather(*(WebPeer.open(web_browser, u, n, v)
                                            for u, n, v in zip(urls, ("provider", "client1", "client2"), sizes, strict=True))))
        for p in peers:
            await p.join()
        ids = [prov, c1, c2]
        for p in peers:
            await p.wait_screen("call")
        for p, me in zip(peers, ids, strict=True):
            others = [i for i in ids if i != me]
            got = await p.wait_media_from(others, timeout=25)
            assert all(got[o]["framesDecoded"] > 0 for o in others), got
            assert await p.page.get_attribute("#stage", "data-layout") == "grid"
        for p, me in zip(peers, ids, strict=True):
            for o in (i for i in ids if i != me):
                await _video_shown(p, o)
        state = await peers[0].state()
        assert sorted(x["participant_id"] for x in state["participants"]) == sorted([c1, c2])
        await peers[0].shot(out / "c-provider-group.png")
        await peers[2].shot(out / "c-client-group-phone.png")

        # one client leaves: they see that they left, the others go back to a 1:1 view
        await peers[2].page.click("#ctl-leave")
        state = await peers[2].wait_screen("message")
        # (a rejoin needs a fresh link from the portal: the token was spent, the credential died)
        assert state["code"] == "left" and not await peers[2].page.is_visible("#retry-btn"), state
        for p in peers[:2]:
            await p.wait_for("pid => !document.querySelector(`.tile[data-pid=\"${pid}\"]`)", "the tile of who left", arg=c2)
            await p.wait_for("() => document.querySelector('#stage').dataset.layout === 'one'", "the 1:1 layout")
        await peers[2].shot(out / "c-client-left-phone.png")
        await _no_page_errors(*peers)
    finally:
        await _close(*peers)


REFUSALS = [
    # (scenario, who joins, code, what they read, viewport)
    ("cancelled", "client", "appointment_cancelled", "This appointment was cancelled", DESKTOP),
    ("no-teletherapy", "client", "telehealth_not_enabled", "Your provider has not enabled telehealth", PHONE),
    ("no-teletherapy", "provider", "telehealth_not_enabled", "Telehealth isn't enabled for your account", DESKTOP),
    ("no-portal", "client", "portal_account_required", "An active client portal account is required", DESKTOP),
    ("tomorrow", "client", "outside_join_window", "Telehealth opens 30 minutes before your appointment", PHONE),
]


async def test_refusal_screens(telesfu_node: TelesfuNode, web_browser: Browser, out: Path) -> None:
    node = telesfu_node
    urls: dict[tuple[str, str], str] = {}
    for scenario in dict.fromkeys(r[0] for r in REFUSALS):
        prov, cl, apt = uid("prov"), uid("client"), uid("apt")
        await node.provider(prov, "Dr. Sofia Lind", waiting_room=False)
        await node.client(cl, "Robin Ellis")
        starts_in = timedelta(days=1) if scenario == "tomorrow" else timedelta(0)
        await node.appointment(apt, prov, [cl], starts_in=starts_in)
        # links are minted while everything is in order, then the practice changes something
        urls[scenario, "client"] = await node.join_url(apt, cl)
        urls[scenario, "provider"] = await node.join_url(apt, prov)
        if scenario == "cancelled":
            await node.appointment(apt, prov, [cl], status="cancelled")
        elif scenario == "no-teletherapy":
            await node.provider(prov, "Dr. Sofia Lind", teletherapy=False)
        elif scenario == "no-portal":
            await node.client(cl, "Robin Ellis", portal=False)
    peers = list(await asyncio.gather(*(WebPeer.open(web_browser, urls[s, who], f"{s}-{who}", v)
                                        for s, who, _, _, v in REFUSALS)))
    try:
        for p in peers:
            await p.join()
        for p, (scenario, who, code, title, _) in zip(peers, REFUSALS, strict=True):
            state = await p.wait_screen("message")
            assert state["code"] == code, (scenario, who, state)
            assert await p.page.inner_text("#message-title") == title
            # the camera is released once the session is refused
            assert await p.page.evaluate("document.querySelector('#preview-video').srcObject === null")
            await p.shot(out / f"d-refused-{scenario}-{who}.png")
        # only a refusal that time will fix offers to try again
        assert await peers[4].page.is_visible("#retry-btn")
        assert not await peers[0].page.is_visible("#retry-btn")
        await _no_page_errors(*peers)
    finally:
        await _close(*peers)


async def test_deny_and_remove_keep_the_client_out_until_admitted_again(
        telesfu_node: TelesfuNode, web_browser: Browser, out: Path) -> None:
    node = telesfu_node
    prov, cl, apt = uid("prov"), uid("client"), uid("apt")
    await node.provider(prov, "Dr. Noah Feld", waiting_room=True)
    await node.client(cl, "Jordan Lee")
    await node.appointment(apt, prov, [cl])
    provider = client = None
    try:
        provider = await WebPeer.open(web_browser, await node.join_url(apt, prov), "provider", DESKTOP)
        await provider.join()
        await provider.wait_screen("call")

        # 1. deny from the popup
        client = await WebPeer.open(web_browser, await node.join_url(apt, cl), "client", PHONE)
        await client.join()
        await client.wait_screen("waiting")
        assert await client.page.inner_text("#waiting-title") == "Your provider will let you in soon"
        popup = provider.page.locator(f'.popup[data-pid="{cl}"]')
        await popup.wait_for(timeout=10_000)
        await popup.get_by_role("button", name="Deny Jordan Lee").click()
        state = await client.wait_screen("message")
        assert state["code"] == "participant_denied", state
        assert await client.page.inner_text("#message-title") == "Your provider did not admit you"
        await client.shot(out / "e-client-denied-phone.png")

        # 2. a fresh link does not get a denied client back in
        await _reopen(client, await node.join_url(apt, cl))
        await client.join()
        state = await client.wait_screen("message")
        assert state["code"] == "participant_denied", state

        # 3. the practice admits them again (control API); then the link works
        status, body = await node.call("POST", f"/v1/rooms/{apt}/participants/{cl}/admit")
        assert status in (200, 202, 204), (status, body)
        await _reopen(client, await node.join_url(apt, cl))
        await client.join()
        await _admit_if_waiting(client, provider, cl)
        await client.wait_screen("call")
        await provider.wait_media_from([cl])

        # 4. remove from the participants menu
        await provider.page.click("#ctl-people")
        row = provider.page.locator(f'#in-list .person[data-pid="{cl}"]')
        await row.wait_for(timeout=5_000)
        await row.get_by_role("button", name="Remove Jordan Lee").click()
        await provider.page.wait_for_selector("#confirm[open]")
        await provider.shot(out / "e-provider-remove-confirm.png")
        await provider.page.click("#confirm-ok")
        state = await client.wait_screen("message")
        assert state["code"] == "removed", state
        assert await client.page.inner_text("#message-title") == "You were removed from the session"
        await client.shot(out / "e-client-removed-phone.png")
        await provider.wait_for("pid => !document.querySelector(`.tile[data-pid=\"${pid}\"]`)", "the removed tile gone", arg=cl)
        await provider.shot(out / "e-provider-after-remove.png")

        # 5. joining again (a fresh link: the used one is spent) does not put them back in the call by itself
        assert not await client.page.is_visible("#retry-btn")
        before = await provider.decoded_from()
        await _reopen(client, await node.join_url(apt, cl))
        await client.join()
        await client.page.wait_for_function("() => ['waiting', 'message'].includes(window.telesfu.state.screen)",
                                            timeout=15_000)
        await asyncio.sleep(1.0)
        state = await client.state()
        assert state["screen"] != "call", state
        if state["screen"] == "waiting":
            popup = provider.page.locator(f'.popup[data-pid="{cl}"]')
            await popup.wait_for(timeout=10_000)
            await popup.get_by_role("button", name="Admit Jordan Lee").click()
            await client.wait_screen("call")
            await client.wait_media_from([prov])
            await provider.wait_media_from([cl], baseline=before)
        else:
            assert state["code"] == "participant_denied", state
        await _no_page_errors(client, provider)
    finally:
        await _close(client, provider)


async def _admit_if_waiting(client: WebPeer, provider: WebPeer, pid: str) -> None:
    await client.page.wait_for_function("() => ['waiting', 'call'].includes(window.telesfu.state.screen)", timeout=15_000)
    if (await client.state())["screen"] == "waiting":
        popup = provider.page.locator(f'.popup[data-pid="{pid}"]')
        await popup.wait_for(timeout=10_000)
        await popup.get_by_role("button", name="Admit").click()


async def _reopen(peer: WebPeer, url: str) -> None:
    """The client opens a fresh join link from the portal in the same tab."""
    await peer.page.goto("about:blank")
    await peer.page.goto(url)
    await peer.wait_screen("prejoin")
    await peer.page.wait_for_function("() => !document.querySelector('#join-btn').disabled")


async def test_a_drop_after_the_join_token_expired_resumes(
        telesfu_node: TelesfuNode, web_browser: Browser, out: Path) -> None:
    """Minute 45 of a session, in short: the client's token is past exp + leeway when its socket
    drops (1012); the page resumes with its credential, back in the call without the waiting
    room, and media flows both ways again."""
    import secrets
    import time

    import jwt

    from tests.e2e.web_helpers import SIGNING_SECRET

    node = telesfu_node
    prov, cl, apt = uid("prov"), uid("client"), uid("apt")
    await node.provider(prov, "Dr. Ada Brook", waiting_room=True)
    await node.client(cl, "Kim Park")
    await node.appointment(apt, prov, [cl])
    # a token the portal minted ten minutes ago: it expires (exp + the node's 30 s leeway) in 6 s
    now = int(time.time())
    exp = now - 30 + 6
    token = jwt.encode({"sub": cl, "role": "client", "apt": apt, "name": "Kim Park", "aud": "telesfu",
                        "iat": exp - 600, "nbf": exp - 600, "exp": exp, "jti": secrets.token_urlsafe(16)},
                       SIGNING_SECRET, algorithm="HS256", headers={"kid": "k1"})
    client = provider = None
    try:
        provider = await WebPeer.open(web_browser, await node.join_url(apt, prov), "provider", DESKTOP)
        await provider.join()
        await provider.wait_screen("call")
        client = await WebPeer.open(web_browser, f"{node.url}/join#token={token}", "client", PHONE)
        sockets: list[WebSocketRoute] = []

        def through(ws: WebSocketRoute) -> None:
            ws.connect_to_server()
            sockets.append(ws)

        await client.page.route_web_socket("**/v1/rtc", through)
        await client.join()
        await client.wait_screen("waiting")
        popup = provider.page.locator(f'.popup[data-pid="{cl}"]')
        await popup.wait_for(timeout=10_000)
        await popup.get_by_role("button", name="Admit Kim Park").click()
        await client.wait_screen("call")
        await client.wait_media_from([prov])
        await provider.wait_media_from([cl])
        # wait out the token (a subprocess's clock cannot be moved; this is not a timed assertion)
        while time.time() < exp + 30 + 1:
            await asyncio.sleep(0.25)
        before_client, before_provider = await client.decoded_from(), await provider.decoded_from()
        n_events = len(await client.events())
        await sockets[-1].close(code=1012, reason="media restarted")
        await client.wait_for("() => window.telesfu.state.reconnecting", "the reconnecting overlay", timeout=5)
        await client.wait_for("() => window.telesfu.state.phase === 'joined' && !window.telesfu.state.reconnecting",
                              "the client back in the call")
        await client.wait_media_from([prov], baseline=before_client)
        await provider.wait_media_from([cl], baseline=before_provider)
        after = (await client.events())[n_events:]
        assert [e for e in after if e.endswith("send resume")], after
        assert not [e for e in after if e.endswith("screen waiting") or e.split(" ", 1)[-1].startswith("end ")], after
        await client.shot(out / "f-client-resumed-after-token-expiry-phone.png")
        await _no_page_errors(client, provider)

        # a reload of the page within the grace resumes too (the credential is in sessionStorage;
        # the spent token is not used again)
        before_provider = await provider.decoded_from()
        await client.page.reload()
        await client.wait_screen("prejoin")
        await client.page.wait_for_function("() => !document.querySelector('#join-btn').disabled")
        await client.join()
        await client.wait_screen("call")
        await client.wait_media_from([prov])
        await provider.wait_media_from([cl], baseline=before_provider)
        events = await client.events()
        assert [e for e in events if e.endswith("send resume")] and not [e for e in events if e.endswith("send join")]
        await _no_page_errors(client, provider)
    finally:
        await _close(client, provider)
