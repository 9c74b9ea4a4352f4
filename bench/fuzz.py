"""`telesfu bench fuzz`: coverage-guided fuzzing (atheris/libFuzzer) of every parser a remote
party reaches, then the cost of the worst single input.

For each target of tests/fuzz/targets.py, one at a time:

1. A fuzz process (`python -m bench.fuzz _fuzz NAME ...`) imports the parsers under atheris'
   coverage instrumentation and hands libFuzzer a callback that runs the target and catches
   what escapes it: an uncaught exception is a finding (counted by signature, the first
   inputs of each kept as hex). The callback counts the inputs itself and ends the process
   after `--runs` inputs or `--seconds`; libFuzzer's `-timeout` and `-rss_limit_mb` end it on
   an input that hangs or bloats (then the run's status says so and libFuzzer's artifact
   holds the input). New inputs libFuzzer found go to the target's corpus directory.
2. A replay process (not instrumented, so the clock is honest) runs every input of that
   corpus, the seeds and the crafted worst cases through the server path once per datagram
   (`FuzzTarget.cost_cases`), timing each with `time.thread_time_ns` (median of 3) and its
   `tracemalloc` peak, and reports the costliest. libFuzzer only notices seconds; the aim is
   1 ms and 1 MB per input.

Results: a table on stdout and, with `--json`, the figures per target.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import REPO, machine_info

DEFAULT_TARGETS_MODULE = "tests.fuzz.targets"
CPU_BUDGET_NS = 1_000_000  # the aim: no single input costing more than 1 ms of CPU
MEMORY_BUDGET_BYTES = 1 << 20  # ... or 1 MB of memory
INSTRUMENTED = ["sfu", "signaling", "control", "tests.fuzz"]
KEEP_INPUTS_PER_SIGNATURE = 3
MAX_HEX_BYTES = 4096
_STATUS_LINE = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+).*?exec/s: (\d+) rss: (\d+)Mb")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="all", help="a target name, a comma-separated list, or all (default)")
    p.add_argument("--runs", type=int, default=100_000, help="inputs per target (default 100000)")
    p.add_argument("--seconds", type=float, default=0.0, help="stop each target after this many seconds (0: no limit)")
    p.add_argument("--workdir", default=str(REPO / ".fuzz"),
                   help="corpus, artifacts and logs per target (default .fuzz/ in the checkout; kept between runs)")
    p.add_argument("--json", dest="json_path", default=None, help="write the results as JSON to this path")
    p.add_argument("--markdown", dest="markdown_path", default=None, help="write the table as Markdown to this path")
    p.add_argument("--timeout", type=int, default=10, help="libFuzzer -timeout: seconds one input may take")
    p.add_argument("--rss-limit-mb", type=int, default=2048, help="libFuzzer -rss_limit_mb")
    p.add_argument("--seed", type=int, default=0, help="libFuzzer -seed (0: a random one)")
    p.add_argument("--replay-only", action="store_true",
                   help="do not fuzz: replay the corpus a previous run left in --workdir (and report its figures)")
    p.add_argument("--no-replay", action="store_true", help="skip measuring the cost of single inputs")
    p.add_argument("--targets-module", default=DEFAULT_TARGETS_MODULE, help=argparse.SUPPRESS)
    p.add_argument("--list", action="store_true", help="list the targets and exit")


def _load_targets(module: str) -> dict[str, Any]:
    import importlib

    if str(REPO) not in sys.path:  # the targets live in tests/, which is not installed
        sys.path.insert(0, str(REPO))
    return importlib.import_module(module).TARGETS  # type: ignore[no-any-return]


def _signature(exc: BaseException) -> str:
    """Exception type and the innermost frame in this repository: one line per distinct bug."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = "?"
    for fr in reversed(frames):
        if fr.filename.startswith(str(REPO)) and "/bench/fuzz.py" not in fr.filename:
            where = f"{os.path.relpath(fr.filename, REPO)}:{fr.lineno} in {fr.name}"
            break
    return f"{type(exc).__name__} at {where}"


class FindingLog:
    """Uncaught exceptions by signature; the first inputs of each, and counts, on disk at once
    (the fuzz process ends without running Python's exit handlers)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[dict[str, Any]]] = {}

    def add(self, exc: BaseException, data: bytes) -> None:
        sig = _signature(exc)
        n = self.counts.get(sig, 0) + 1
        self.counts[sig] = n
        if n <= KEEP_INPUTS_PER_SIGNATURE:
            self.examples.setdefault(sig, []).append({
                "exception": f"{type(exc).__name__}: {str(exc)[:300]}",
                "input_len": len(data),
                "input_hex": data[:MAX_HEX_BYTES].hex(),
                "traceback": "".join(traceback.format_exception(exc))[-3000:],
            })
        if n <= KEEP_INPUTS_PER_SIGNATURE or n & (n - 1) == 0:  # 1, 2, 3, 4, 8, 16, ...
            self.flush()

    def flush(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"counts": self.counts, "examples": self.examples}, indent=1))
        tmp.replace(self.path)


def _fuzz_process(argv: list[str]) -> int:
    """The child: `_fuzz NAME WORKDIR RUNS SECONDS MODULE -- libFuzzer args...`."""
    name, workdir, runs_s, seconds_s, module = argv[:5]
    libfuzzer_args = argv[argv.index("--") + 1:] if "--" in argv else []
    import atheris

    with atheris.instrument_imports(include=INSTRUMENTED):
        targets = _load_targets(module)
    target = targets[name]
    tdir = Path(workdir) / name
    findings = FindingLog(tdir / "findings.json")
    findings.flush()
    stats_path = tdir / "stats.json"
    runs_wanted, seconds = int(runs_s), float(seconds_s)
    state: dict[str, Any] = {"runs": 0, "start": 0.0, "last": 0.0}
    fn = target.fn

    def write_stats(done: bool) -> None:
        elapsed = time.monotonic() - state["start"]
        tmp = stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"runs": state["runs"], "seconds": round(elapsed, 3), "done": done,
                                   "findings": sum(findings.counts.values())}))
        tmp.replace(stats_path)

    def one(data: bytes) -> None:
        if not state["runs"]:
            state["start"] = state["last"] = time.monotonic()
        state["runs"] += 1
        try:
            fn(data)
        except Exception as exc:  # the finding: anything but the documented refusal escaped
            findings.add(exc, data)
        if state["runs"] & 1023 == 0 or state["runs"] >= runs_wanted:
            now = time.monotonic()
            finished = state["runs"] >= runs_wanted or (seconds > 0 and now - state["start"] >= seconds)
            if finished or now - state["last"] >= 2.0:
                state["last"] = now
                write_stats(finished)
            if finished:
                findings.flush()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)

    atheris.Setup([sys.argv[0], *libfuzzer_args], one)
    atheris.Fuzz()
    write_stats(True)  # libFuzzer returned on its own (its -runs ran out)
    return 0


def _median3(fn: Any, data: bytes) -> tuple[int, int]:
    """(median, max) CPU ns of three calls of fn(data) on this thread."""
    clock = time.thread_time_ns
    times = []
    for _ in range(3):
        t0 = clock()
        try:
            fn(data)
        except Exception:
            pass
        times.append(clock() - t0)
    times.sort()
    return times[1], times[2]


def _replay_process(argv: list[str]) -> int:
    """The child: `_replay NAME WORKDIR MODULE`: the cost of every input, one at a time."""
    import gc
    import tracemalloc

    name, workdir, module = argv[:3]
    target = _load_targets(module)[name]
    tdir = Path(workdir) / name
    inputs: list[tuple[str, bytes]] = [(f"seed-{i}", d) for i, d in enumerate(target.seeds())]
    inputs += [(f"worst-{i}", d) for i, d in enumerate(target.worst())]
    corpus = tdir / "corpus"
    if corpus.is_dir():
        inputs += [(p.name, p.read_bytes()) for p in sorted(corpus.iterdir()) if p.is_file()]
    inputs += [(p.name, p.read_bytes()) for p in sorted(tdir.glob("artifacts/*")) if p.is_file()]
    findings = FindingLog(tdir / "replay-findings.json")
    worst_cpu: dict[str, Any] = {"ns": -1, "max_single_ns": 0, "input": "", "len": 0, "hex": ""}
    worst_mem: dict[str, Any] = {"bytes": -1, "retained_bytes": 0, "input": "", "len": 0, "hex": ""}
    over_cpu = over_mem = cases = 0
    max_single = 0
    for label, data in inputs:
        for fn, wire in target.cost_cases(data):
            cases += 1
            try:
                fn(wire)  # warm: first-call caches are not the input's cost
            except Exception as exc:
                findings.add(exc, wire)
            gc.collect()
            gc.disable()
            try:
                med, mx = _median3(fn, wire)
            finally:
                gc.enable()
            max_single = max(max_single, mx)
            if med > CPU_BUDGET_NS:
                over_cpu += 1
            if med > worst_cpu["ns"]:
                worst_cpu = {"ns": med, "max_single_ns": mx, "input": label, "len": len(wire),
                             "hex": wire[:MAX_HEX_BYTES].hex()}
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                try:
                    fn(wire)
                except Exception:
                    pass
                current, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            grew = peak - base
            if grew > MEMORY_BUDGET_BYTES:
                over_mem += 1
            if grew > worst_mem["bytes"]:
                worst_mem = {"bytes": grew, "retained_bytes": current - base, "input": label, "len": len(wire),
                             "hex": wire[:MAX_HEX_BYTES].hex()}
    findings.flush()
    out = {"inputs": len(inputs), "cases": cases, "cpu_worst": worst_cpu, "cpu_max_single_ns": max_single,
           "memory_worst": worst_mem, "over_cpu_budget": over_cpu, "over_memory_budget": over_mem,
           "findings": sum(findings.counts.values()), "finding_counts": findings.counts}
    (tdir / "replay.json").write_text(json.dumps(out, indent=1))
    return 0


def _python() -> str:
    return sys.executable


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONHASHSEED"] = "0"
    return env


def _fuzz_once(name: str, target: Any, args: argparse.Namespace, tdir: Path, log: Any) -> None:
    corpus, artifacts = tdir / "corpus", tdir / "artifacts"
    for stale in ("stats.json", "findings.json", "run.json"):
        (tdir / stale).unlink(missing_ok=True)
    for i, seed in enumerate(target.seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)
    libfuzzer = [f"-max_len={target.max_len}", f"-timeout={args.timeout}", f"-rss_limit_mb={args.rss_limit_mb}",
                 f"-malloc_limit_mb={args.rss_limit_mb}", "-use_value_profile=1", "-print_final_stats=1",
                 f"-artifact_prefix={artifacts}/", "-runs=-1", "-close_fd_mask=1",
                 *([f"-seed={args.seed}"] if args.seed else []), str(corpus)]
    cmd = [_python(), "-m", "bench.fuzz", "_fuzz", name, str(tdir.parent), str(args.runs), str(args.seconds),
           args.targets_module, "--", *libfuzzer]
    log_path = tdir / "libfuzzer.log"
    started = time.monotonic()
    last_print = 0.0
    status: dict[str, int] = {}
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, errors="replace", start_new_session=True)
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                logf.write(line)
                m = _STATUS_LINE.match(line)
                if m:
                    status = {"libfuzzer_execs": int(m.group(1)), "cov": int(m.group(3)), "ft": int(m.group(4)),
                              "corpus": int(m.group(5)), "exec_s": int(m.group(7)), "rss_mb": int(m.group(8))}
                    now = time.monotonic()
                    if now - last_print >= 10.0:
                        last_print = now
                        log(f"  {name}: {status['libfuzzer_execs']:,} execs, cov {status['cov']}, corpus "
                            f"{status['corpus']}, {status['exec_s']:,} exec/s, rss {status['rss_mb']} MB "
                            f"({now - started:.0f} s)")
            rc = proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    stats = _read_json(tdir / "stats.json") or {}
    text = log_path.read_text(errors="replace")
    if stats.get("done") and rc == 0:
        outcome = "ok"
    elif "ERROR: libFuzzer: timeout" in text:
        outcome = "timeout"
    elif "out-of-memory" in text:
        outcome = "out_of_memory"
    else:
        outcome = f"exit_{rc}"
    (tdir / "run.json").write_text(json.dumps({"outcome": outcome, "returncode": rc, "status": status}))


def fuzz_target(name: str, target: Any, args: argparse.Namespace, log: Any = print) -> dict[str, Any]:
    """Fuzz one target in a child process (unless --replay-only), then replay its corpus; the figures."""
    workdir = Path(args.workdir).resolve()
    tdir = workdir / name
    corpus = tdir / "corpus"
    artifacts = tdir / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    if not args.replay_only:
        _fuzz_once(name, target, args, tdir, log)
    for stale in ("replay.json", "replay-findings.json"):
        (tdir / stale).unlink(missing_ok=True)
    run_info = _read_json(tdir / "run.json") or {"outcome": "not_run", "status": {}}
    status = run_info["status"]
    outcome = run_info["outcome"]
    stats = _read_json(tdir / "stats.json") or {"runs": 0, "seconds": 0.0, "done": False}
    found = _read_json(tdir / "findings.json") or {"counts": {}, "examples": {}}
    log_path = tdir / "libfuzzer.log"
    runs, secs = int(stats.get("runs", 0)), float(stats.get("seconds", 0.0))
    result: dict[str, Any] = {
        "target": name, "parsers": target.parsers, "outcome": outcome, "inputs_run": runs,
        "seconds": round(secs, 1), "exec_per_s": round(runs / secs) if secs > 0 else 0,
        "uncaught_exceptions": sum(found["counts"].values()), "finding_signatures": found["counts"],
        "finding_examples": found["examples"], "coverage": status.get("cov", 0), "features": status.get("ft", 0),
        "corpus_size": sum(1 for p in corpus.iterdir() if p.is_file()), "peak_rss_mb": status.get("rss_mb", 0),
        "artifacts": sorted(p.name for p in artifacts.iterdir()), "log": str(log_path),
    }
    if not args.no_replay:
        rc2 = subprocess.run([_python(), "-m", "bench.fuzz", "_replay", name, str(workdir), args.targets_module],
                             cwd=REPO, env=_env(), capture_output=True, text=True)
        replay = _read_json(tdir / "replay.json")
        if rc2.returncode != 0 or replay is None:
            result["replay_error"] = (rc2.stderr or "")[-2000:]
        else:
            result["replay"] = replay
            result["cpu_worst_us"] = round(replay["cpu_worst"]["ns"] / 1000, 1)
            result["memory_worst_kb"] = round(replay["memory_worst"]["bytes"] / 1024, 1)
            result["uncaught_exceptions_in_replay"] = replay["findings"]
    return result


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def table(results: list[dict[str, Any]]) -> str:
    head = (f"{'target':<14} {'outcome':<9} {'inputs':>10} {'exec/s':>7} {'uncaught':>8} {'cov':>5} "
            f"{'corpus':>6} {'worst CPU':>10} {'worst mem':>10} {'>1ms':>5} {'>1MB':>5}  worst input")
    lines = [head, "-" * len(head)]
    for r in results:
        cpu = f"{r['cpu_worst_us']:.0f} us" if "cpu_worst_us" in r else "-"
        mem = f"{r['memory_worst_kb']:.0f} KB" if "memory_worst_kb" in r else "-"
        worst = ""
        if "replay" in r:
            c, m = r["replay"]["cpu_worst"], r["replay"]["memory_worst"]
            worst = f"cpu: {c['input']} ({c['len']} B), mem: {m['input']} ({m['len']} B)"
        uncaught = r["uncaught_exceptions"] + r.get("uncaught_exceptions_in_replay", 0)
        over_cpu = r["replay"]["over_cpu_budget"] if "replay" in r else "-"
        over_mem = r["replay"]["over_memory_budget"] if "replay" in r else "-"
        lines.append(f"{r['target']:<14} {r['outcome']:<9} {r['inputs_run']:>10,} {r['exec_per_s']:>7,} "
                     f"{uncaught:>8} {r['coverage']:>5} {r['corpus_size']:>6} {cpu:>10} {mem:>10} {over_cpu:>5} "
                     f"{over_mem:>5}  {worst}")
    return "\n".join(lines)


def _label(name: str) -> str:
    """seed-N and worst-N as they are; a file libFuzzer named by its hash: where it came from."""
    if name.startswith(("seed-", "worst-")):
        return name
    return "an artifact" if name.startswith(("crash-", "timeout-", "oom-", "slow-unit-")) else "a fuzzer input"


def markdown(results: list[dict[str, Any]]) -> str:
    """The figures as a Markdown table (for bench/RESULTS.md)."""
    lines = ["| target | inputs run | exec/s | uncaught exceptions | coverage (edges) | corpus | costliest input: "
             "CPU (median of 3) | largest memory peak of one input | inputs over 1 ms / 1 MB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |"]
    for r in results:
        uncaught = r["uncaught_exceptions"] + r.get("uncaught_exceptions_in_replay", 0)
        cpu = mem = over = "-"
        if "replay" in r:
            c, m = r["replay"]["cpu_worst"], r["replay"]["memory_worst"]
            cpu = f"{c['ns'] / 1000:,.0f} µs ({_label(c['input'])}, {c['len']:,} B)"
            mem = f"{m['bytes'] / 1024:,.0f} KB ({_label(m['input'])}, {m['len']:,} B)"
            over = f"{r['replay']['over_cpu_budget']} / {r['replay']['over_memory_budget']}"
        lines.append(f"| {r['target']} | {r['inputs_run']:,} | {r['exec_per_s']:,} | {uncaught} | {r['coverage']} | "
                     f"{r['corpus_size']} | {cpu} | {mem} | {over} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    targets = _load_targets(args.targets_module)
    if args.list:
        for name, t in targets.items():
            print(f"{name:<14} {t.parsers}")
        return 0
    names = list(targets) if args.target == "all" else [n.strip() for n in args.target.split(",") if n.strip()]
    unknown = [n for n in names if n not in targets]
    if unknown:
        print(f"unknown target(s): {', '.join(unknown)}; known: {', '.join(targets)}", file=sys.stderr)
        return 2
    meta = {"machine": machine_info(), "runs_per_target": args.runs, "seconds_per_target": args.seconds,
            "cpu_budget_us": CPU_BUDGET_NS / 1000, "memory_budget_kb": MEMORY_BUDGET_BYTES / 1024,
            "command": "telesfu bench fuzz " + " ".join(sys.argv[3:] if sys.argv[1:3] == ["bench", "fuzz"] else [])}
    results: list[dict[str, Any]] = []

    def save() -> None:
        if args.json_path:
            Path(args.json_path).write_text(json.dumps({**meta, "targets": results}, indent=1))

    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] fuzzing {name} ({targets[name].parsers}): {args.runs:,} inputs"
              + (f" or {args.seconds:g} s" if args.seconds else ""), flush=True)
        r = fuzz_target(name, targets[name], args, log=lambda s: print(s, flush=True))
        results.append(r)
        save()
        extra = ""
        if "cpu_worst_us" in r:
            extra = f", worst input {r['cpu_worst_us']:.0f} us CPU / {r['memory_worst_kb']:.0f} KB"
        print(f"  {name}: {r['outcome']}, {r['inputs_run']:,} inputs, {r['exec_per_s']:,} exec/s, "
              f"{r['uncaught_exceptions']} uncaught{extra}", flush=True)
        for sig, n in r["finding_signatures"].items():
            print(f"    FINDING x{n}: {sig}", flush=True)
    print()
    print(table(results))
    save()
    if args.markdown_path:
        Path(args.markdown_path).write_text(markdown(results) + "\n")
    bad = any(r["outcome"] != "ok" or r["uncaught_exceptions"] or r.get("uncaught_exceptions_in_replay")
              or r["inputs_run"] == 0 for r in results)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_fuzz":
        return _fuzz_process(argv[1:])
    if argv and argv[0] == "_replay":
        return _replay_process(argv[1:])
    parser = argparse.ArgumentParser(prog="telesfu bench fuzz")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
