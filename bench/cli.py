"""`telesfu bench`: the load harness's command line."""

from __future__ import annotations

import argparse


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="telesfu bench", description="telesfu load harness")
    sub = parser.add_subparsers(dest="scenario", required=True)
    p_control = sub.add_parser("control", help="control-plane throughput: admission decisions and API latency")
    from bench import control as control_bench

    control_bench.add_arguments(p_control)
    p_media = sub.add_parser("media", help="media plane: SFU CPU per forwarded packet and forwarding delay "
                                           "under synthetic WebRTC load")
    from bench import media as media_bench

    media_bench.add_arguments(p_media)
    p_joins = sub.add_parser("joins", help="join latency to the first remote frame (aiortc and Chromium, with and "
                                           "without the waiting room), and admitted joins per second")
    from bench import joins as joins_bench

    joins_bench.add_arguments(p_joins)
    from bench import faults as faults_bench

    faults_bench.add_arguments(sub.add_parser("faults", help="a media worker SIGKILLed mid-session: time until both "
                                                            "sides of a 1:1 decode video again"))
    from bench import amplify as amplify_bench
    from bench import soak as soak_bench

    amplify_bench.add_arguments(sub.add_parser("amplify", help="bytes out per byte in and CPU per datagram of "
                                                               "every input a remote party can send"))
    soak_bench.add_arguments(sub.add_parser("soak", help="long run at a fraction of capacity with joins and leaves: "
                                                         "RSS and fds per process, loss, pass/fail"))
    p_fuzz = sub.add_parser("fuzz", help="coverage-guided fuzzing (atheris) of every parser a remote party reaches, "
                                         "and the CPU and memory cost of the worst single input")
    from bench import fuzz as fuzz_bench

    fuzz_bench.add_arguments(p_fuzz)
    args = parser.parse_args(argv)
    if args.scenario == "control":
        return control_bench.run(args)
    if args.scenario == "media":
        return media_bench.run(args)
    if args.scenario == "joins":
        return joins_bench.run(args)
    if args.scenario == "faults":
        return faults_bench.run(args)
    if args.scenario == "amplify":
        return amplify_bench.run(args)
    if args.scenario == "soak":
        return soak_bench.run(args)
    if args.scenario == "fuzz":
        return fuzz_bench.run(args)
    return 2
