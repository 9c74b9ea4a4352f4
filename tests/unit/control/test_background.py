"""Background loops stop even when a cancel is swallowed."""

from __future__ import annotations


async def test_background_stop_survives_a_swallowed_cancel():
    """A loop that ignores the first cancel (as a wait_for racing its inner task can) still stops."""
    import asyncio

    from control.background import Background

    swallowed = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if not swallowed:
                    swallowed.append(True)
                    continue  # the first cancel is lost
                raise

    bg = Background("stubborn", stubborn)
    bg.start()
    await asyncio.sleep(0)
    await asyncio.wait_for(bg.stop(), 3)
    assert swallowed and not bg.running
