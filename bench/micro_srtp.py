"""Micro-benchmark: CPU cost of SRTP per forwarded packet on this machine.

For each DTLS-SRTP profile, times (with time.process_time, over a bounded loop):
protect only, protect + unprotect through `SrtpContext`, and the same pair straight on
pylibsrtp sessions to show what the wrapper adds. The cost of building each packet
(writing the sequence number into a template and copying it) is measured alone and
subtracted. Run: `python -m bench.micro_srtp [--iterations 200000] [--size 1200]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
import time
from collections.abc import Callable

from pylibsrtp import Policy, Session

from sfu.transport.srtp import SRTP_PROFILES, SrtpContext, SrtpProfile

_RTP_HEADER = struct.Struct("!BBHII")
_SEQ = struct.Struct("!H")
_PROGRESS_STEPS = 10


def _template(size: int) -> bytearray:
    if size < 12:
        raise ValueError("size must be at least the 12-byte RTP header")
    packet = bytearray(size)
    _RTP_HEADER.pack_into(packet, 0, 0x80, 96, 0, 0, 0x1234ABCD)
    for i in range(12, size):
        packet[i] = i & 0xFF
    return packet


def _timed(label: str, iterations: int, step: Callable[[int], object]) -> float:
    """CPU seconds for `iterations` calls of step(i), with a progress line on stderr."""
    chunk = max(1, iterations // _PROGRESS_STEPS)
    total = 0.0
    done = 0
    while done < iterations:
        n = min(chunk, iterations - done)
        start = time.process_time()
        for i in range(done, done + n):
            step(i)
        total += time.process_time() - start
        done += n
        print(f"\r  {label:<34} {done * 100 // iterations:3d}%", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return total


def _keys(profile: SrtpProfile) -> tuple[bytes, bytes]:
    k1 = hashlib.sha256(b"a").digest()[: profile.master_length]
    k2 = hashlib.sha256(b"b").digest()[: profile.master_length]
    return k1, k2


def bench_profile(profile: SrtpProfile, iterations: int, size: int) -> dict[str, float]:
    """Microseconds of CPU per operation for one profile."""
    template = _template(size)
    k1, k2 = _keys(profile)

    def build(i: int) -> bytes:
        _SEQ.pack_into(template, 2, i & 0xFFFF)
        return bytes(template)

    baseline = _timed(f"{profile.name} build", iterations, build)

    sender = SrtpContext(profile, k2, k1)

    def protect(i: int) -> None:
        sender.protect_rtp(build(i))

    t_protect = _timed(f"{profile.name} protect", iterations, protect)

    a = SrtpContext(profile, k2, k1)
    b = SrtpContext(profile, k1, k2)

    def round_trip(i: int) -> None:
        if b.unprotect_rtp(a.protect_rtp(build(i))) is None:
            raise RuntimeError("unprotect failed in benchmark")

    t_pair = _timed(f"{profile.name} protect+unprotect", iterations, round_trip)

    tx_policy = Policy(key=k1, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile.libsrtp_profile)
    rx_policy = Policy(key=k1, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile.libsrtp_profile)
    raw_tx, raw_rx = Session(tx_policy), Session(rx_policy)

    def raw_round_trip(i: int) -> None:
        raw_rx.unprotect(raw_tx.protect(build(i)))

    t_raw = _timed(f"{profile.name} raw pylibsrtp pair", iterations, raw_round_trip)
    if a.rtp_auth_failed or b.rtp_auth_failed or b.rtp_replay or b.rtp_bad_packet:
        raise RuntimeError("unexpected drops during benchmark")
    per = 1e6 / iterations
    return {
        "build_us": baseline * per,
        "protect_us": (t_protect - baseline) * per,
        "protect_unprotect_us": (t_pair - baseline) * per,
        "unprotect_us": (t_pair - t_protect) * per,
        "raw_pylibsrtp_pair_us": (t_raw - baseline) * per,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iterations", type=int, default=200_000, help="packets per measurement")
    parser.add_argument("--size", type=int, default=1200, help="RTP packet size in bytes")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    if args.iterations <= 0:
        print("--iterations must be positive", file=sys.stderr)
        return 2
    results: dict[str, dict[str, float]] = {}
    for profile in SRTP_PROFILES.values():
        results[profile.name] = bench_profile(profile, args.iterations, args.size)
    if args.json:
        print(json.dumps({"iterations": args.iterations, "size": args.size, "profiles": results}, indent=2))
        return 0
    print(f"SRTP CPU cost per {args.size}-byte RTP packet, {args.iterations} iterations (time.process_time)")
    print(f"{'profile':<26}{'protect':>10}{'unprotect':>11}{'pair':>9}{'raw pair':>10}{'build':>8}  (us)")
    for name, r in results.items():
        print(
            f"{name:<26}{r['protect_us']:>10.2f}{r['unprotect_us']:>11.2f}"
            f"{r['protect_unprotect_us']:>9.2f}{r['raw_pylibsrtp_pair_us']:>10.2f}{r['build_us']:>8.2f}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro_srtp", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
