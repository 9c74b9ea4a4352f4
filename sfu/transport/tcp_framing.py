"""RFC 4571 framing: a 16-bit big-endian length before each datagram on a TCP stream.

ICE-TCP (RFC 6544) carries STUN, DTLS and SRTP over TCP this way. `FrameDecoder` turns the
chunks `data_received` hands over into whole frames and calls `on_frame(frame)` for each:

- a frame that lies whole inside one chunk is sliced from it (one copy, the slice);
- only the tail of a chunk that ends inside a frame is kept, in one bytearray of at most
  2 + 65,535 bytes per connection, and completed by the next chunks.

No exception leaves `feed`: every length 0..65535 is a valid frame, so garbage can only
produce frames the caller then judges (first byte, size). `encode_header` is the sender's
side: the two length bytes for a datagram of at most 65,535 bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

__all__ = ["HEADER_SIZE", "MAX_FRAME", "FrameDecoder", "FrameTooLarge", "encode_header", "frame"]

HEADER_SIZE: Final = 2
MAX_FRAME: Final = 0xFFFF
_LENGTH: Final = struct.Struct("!H")
_unpack_from: Final = _LENGTH.unpack_from
_pack: Final = _LENGTH.pack


class FrameTooLarge(Exception):
    """A datagram longer than 65,535 bytes cannot be framed (code: frame_too_large)."""

    code = "frame_too_large"


def encode_header(size: int) -> bytes:
    """The RFC 4571 length prefix of a `size`-byte datagram."""
    if not 0 <= size <= MAX_FRAME:
        raise FrameTooLarge(f"a framed datagram holds at most {MAX_FRAME} bytes, not {size}")
    return _pack(size)


def frame(datagram: bytes | bytearray | memoryview) -> bytes:
    """Length prefix + datagram, as one bytes object (one allocation)."""
    return encode_header(len(datagram)) + bytes(datagram)


class FrameDecoder:
    """Stateful splitter of one TCP stream into RFC 4571 frames.

    `frames` counts the frames delivered; `buffered` is how many bytes of an unfinished
    frame (header included) are held.
    """

    __slots__ = ("_on_frame", "_partial", "_need", "frames")

    def __init__(self, on_frame: Callable[[bytes], None]) -> None:
        self._on_frame = on_frame
        self._partial = bytearray()
        # Bytes the partial frame needs in total (header included); 0 while the header
        # itself is incomplete (then HEADER_SIZE is what it needs).
        self._need = 0
        self.frames = 0

    @property
    def buffered(self) -> int:
        return len(self._partial)

    def feed(self, data: bytes) -> None:
        """Deliver every frame `data` completes, in order; keep the rest for next time.
        `on_frame` must not raise (an exception would lose the rest of the chunk)."""
        pos = 0
        end = len(data)
        partial = self._partial
        if partial:
            pos = self._complete(data)
            if pos < 0:
                return  # still unfinished; all of data was taken
        on_frame = self._on_frame
        while end - pos >= HEADER_SIZE:
            size = _unpack_from(data, pos)[0]
            start = pos + HEADER_SIZE
            stop = start + size
            if stop > end:
                break
            pos = stop
            self.frames += 1
            on_frame(data[start:stop])
        if pos < end:
            partial += data[pos:] if pos else data
            self._need = HEADER_SIZE + _unpack_from(partial, 0)[0] if len(partial) >= HEADER_SIZE else 0

    def _complete(self, data: bytes) -> int:
        """Feed the head of `data` into the partial frame. Returns the offset after the
        frame it completed (delivered), or -1 if `data` was used up without completing it."""
        partial = self._partial
        pos = 0
        if len(partial) < HEADER_SIZE:
            take = HEADER_SIZE - len(partial)
            partial += data[:take]
            pos = take
            if len(partial) < HEADER_SIZE:
                return -1
            self._need = HEADER_SIZE + _unpack_from(partial, 0)[0]
        missing = self._need - len(partial)
        available = len(data) - pos
        if available < missing:
            partial += data[pos:]
            return -1
        partial += data[pos:pos + missing]
        pos += missing
        payload = bytes(partial[HEADER_SIZE:])
        partial.clear()
        self._need = 0
        self.frames += 1
        self._on_frame(payload)
        return pos

    def reset(self) -> None:
        """Forget an unfinished frame."""
        self._partial.clear()
        self._need = 0
