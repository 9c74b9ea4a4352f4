"""A deliberately broken target, for the test that the fuzz harness reports what escapes a
target: it raises IndexError once the input starts with 0xAB 0xCD, which coverage guidance
finds in a few thousand inputs from the seed."""

from __future__ import annotations

from tests.fuzz.targets import FuzzTarget


def broken(data: bytes) -> None:
    if data[:1] == b"\xab":
        if data[1:2] == b"\xcd":
            raise IndexError("a parser trusted a length")


def _seeds() -> list[bytes]:
    return [b"\x00\x00\x00\x00"]


def _none() -> list[bytes]:
    return []


TARGETS = {"broken": FuzzTarget("broken", broken, _seeds, _none, 64, "nothing: raises on purpose")}
