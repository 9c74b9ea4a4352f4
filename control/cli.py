"""`telesfu` command line: `serve` runs a node, `bench` runs the load harness."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from datetime import timedelta

from control.config import Config, ConfigError, load_config
from control.store.base import StoreError

log = logging.getLogger("telesfu")


def setup_logging() -> None:
    level = os.environ.get("TELESFU_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(_quiet_bad_requests)


def _quiet_bad_requests(record: logging.LogRecord) -> bool:
    """A malformed HTTP request is the client's fault: one line, no traceback."""
    exc = record.exc_info[1] if record.exc_info else None
    if exc is not None and type(exc).__name__ in ("BadHttpMessage", "BadStatusLine", "LineTooLong",
                                                   "InvalidHeader", "BadHttpMethod"):
        record.msg, record.args, record.exc_info, record.exc_text = (
            "malformed HTTP request refused: %s", (type(exc).__name__,), None, None)
        record.levelno, record.levelname = logging.INFO, "INFO"
    return True


def warn_about_dev_secrets(config: Config) -> None:
    defaults = Config()
    if config.auth.api_keys == defaults.auth.api_keys:
        log.warning("auth.api_keys is the development default: set your own before exposing this node")
    if config.tokens.keys == defaults.tokens.keys or any(len(s) < 32 for s in config.tokens.keys.values()):
        log.warning("tokens.keys holds the development default or a key shorter than 32 bytes: "
                    "use long random secrets in production")


async def register_demo(node: object) -> dict[str, str]:
    """A demo provider, client and an appointment starting now; returns their join links."""
    from control.domain.models import Appointment, Client, Provider, Role, utcnow
    from control.node import Node

    assert isinstance(node, Node)
    now = utcnow().replace(microsecond=0)
    await node.store.put_provider(Provider("demo-provider", "Dr. Demo", teletherapy_enabled=True,
                                           waiting_room_enabled=True))
    await node.store.put_client(Client("demo-client", "Demo Client", portal_account_active=True))
    apt = Appointment("demo-appointment", "demo-provider", ("demo-client",), True, now, now + timedelta(hours=1))
    await node.store.put_appointment(apt)
    links = {}
    for pid, role, name in (("demo-provider", Role.PROVIDER, "Dr. Demo"), ("demo-client", Role.CLIENT, "Demo Client")):
        t = node.tokens.mint(pid, role, apt.id, name)
        links[pid] = f"{node.config.public_url()}/join#token={t.token}"
    return links


async def serve(config: Config, demo: bool) -> int:
    from control.api.app import build_app, build_metrics_app
    from control.http_server import HttpServer, ListenError
    from control.node import Node

    warn_about_dev_secrets(config)
    try:
        node = await Node.create(config)
    except StoreError as e:
        print(f"telesfu: {e}", file=sys.stderr)
        return 1
    app = build_app(node)
    http = HttpServer(config, node.metrics)
    try:
        await http.start(app, build_metrics_app(node))
    except ListenError as e:
        print(f"telesfu: {e}", file=sys.stderr)
        return 1
    config.http.port = http.port  # an ephemeral port (0): tell the real one
    base = config.public_url()
    print(f"telesfu {node.node_id} serving (store: {node.store.kind})", flush=True)
    print(f"  control API  {base}/v1/   (Authorization: Bearer <api key>)", flush=True)
    print(f"  OpenAPI      {base}/v1/openapi.json", flush=True)
    metrics_url = f"http://{config.metrics.host}:{http.metrics_port}/metrics" if http.metrics_port else f"{base}/metrics"
    bearer = "   (Authorization: Bearer <metrics.bearer_token>)" if config.metrics.bearer_token else ""
    print(f"  metrics      {metrics_url}{bearer}", flush=True)
    print(f"  health       {base}/healthz  {base}/readyz", flush=True)
    if node.media is not None:
        first = config.media.udp_port
        last = first + len(node.media.workers) - 1
        addr = config.media.announced_ip or ",".join(config.media.listen_ips)
        print(f"  media        {len(node.media.workers)} worker(s), UDP {addr} ports {first}-{last}", flush=True)
    if demo:
        links = await register_demo(node)
        print("  demo appointment 'demo-appointment' (waiting room on); join links, valid 1 hour:", flush=True)
        for pid, link in links.items():
            print(f"    {pid:14} {link}", flush=True)
    stop, hurry = asyncio.Event(), asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        # SIGTERM drains; a second SIGTERM, or SIGINT (Ctrl-C) at any time, ends the wait at once
        if stop.is_set() or sig is signal.SIGINT:
            hurry.set()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    await stop.wait()
    if not hurry.is_set():
        print(f"telesfu: draining: no new joins; sessions in progress may go on for up to "
              f"{config.node.drain_seconds:g} s (signal again to stop now)", flush=True)
    await node.drain(config.node.drain_seconds, hurry)
    print("telesfu: shutting down", flush=True)
    await http.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="telesfu", description="Telehealth WebRTC SFU and control plane")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run a node")
    p_serve.add_argument("--config", help="TOML configuration file (default: the embedded defaults)")
    p_serve.add_argument("--demo", action="store_true",
                         help="register a demo provider, client and appointment and print join links")
    p_bench = sub.add_parser("bench", help="run the load harness (see bench/)")
    p_bench.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    setup_logging()
    if args.command == "bench":
        from bench.cli import main as bench_main

        return bench_main(args.args)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"telesfu: {e}", file=sys.stderr)
        return 2
    try:
        import uvloop

        return uvloop.run(serve(config, args.demo))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
