"""sfu.heap.trim hands the free pages inside glibc's heap back to the system: the RSS a
churned heap keeps (long-lived chunks scattered among freed ones) is released (issue 13)."""

from __future__ import annotations

import pytest

from sfu import heap


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not heap.available, reason="no glibc malloc_trim")
def test_trim_returns_the_pages_freed_around_long_lived_chunks() -> None:
    heap.trim()
    # ~48 MB of 1 KB objects (bytes over 512 B come from malloc, like packets), every 64th kept:
    # the kept ones pin the heap, so free() alone cannot shrink it.
    chunks = [bytes(1024) for _ in range(48 * 1024)]
    kept = chunks[::64]
    del chunks
    before = _rss_kb()
    assert heap.trim() is True
    after = _rss_kb()
    assert before - after > 24 * 1024, (before, after)
    assert len(kept) == 768


def test_trim_without_glibc_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_malloc_trim", None)
    assert heap.trim() is False
