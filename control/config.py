"""One configuration object for a telesfu node.

Loaded from a TOML file (optional) and then from environment variables
``TELESFU_<SECTION>_<KEY>``. Every section owns its defaults. Unknown sections or keys,
and values of the wrong type or out of range, raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints
from urllib.parse import urlparse


class ConfigError(ValueError):
    """A configuration key is unknown or has an invalid value."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"config {key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(slots=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""  # empty: http://<host>:<port>
    # The API's bodies are small (a provider, a client, an appointment of at most
    # rooms.max_participants client ids: 100 ids of 64 characters are ~7 KB); 64 KiB leaves room,
    # and what a body may hold is bounded by control/jsonparse (1,024 keys and values), so the
    # costliest 64 KiB body parses in ~0.5 ms (bench/RESULTS.md, fuzzing, control_api).
    max_body_bytes: int = 64 * 1024
    # A connection must send a complete request (line and headers) within this long of being
    # accepted or of its last response, or it is closed: the slowloris guard and the idle timeout.
    keepalive_timeout_seconds: float = 20.0  # longer than the 15 s idle pools of aiohttp and Node clients
    body_timeout_seconds: float = 10.0  # a request body must arrive within this long
    max_connections_per_source: int = 128  # open TCP connections per source address; 0: no cap
    # Origins that may embed the join page in a frame (CSP frame-ancestors); empty: none may.
    frame_ancestors: list[str] = field(default_factory=list)

    def check(self) -> None:
        _port("http.port", self.port, allow_zero=True)
        if self.max_body_bytes < 1024:
            raise ConfigError("http.max_body_bytes", "must be at least 1024")
        for name in ("keepalive_timeout_seconds", "body_timeout_seconds"):
            if not 0 < getattr(self, name) <= 3600:
                raise ConfigError(f"http.{name}", "must be more than 0 and at most 3600")
        if self.max_connections_per_source < 0:
            raise ConfigError("http.max_connections_per_source", "must be 0 (no cap) or more")
        for origin in self.frame_ancestors:
            if not _FRAME_ANCESTOR_RE.fullmatch(origin):
                raise ConfigError("http.frame_ancestors", f"{origin[:80]!r} is not 'self' or an origin such as "
                                                          "https://portal.example (no path)")
        if self.public_url and urlparse(self.public_url).scheme not in ("http", "https"):
            raise ConfigError("http.public_url", "must be an http:// or https:// URL")


_FRAME_ANCESTOR_RE = re.compile(r"'self'|https?://(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:[0-9]{1,5})?")


@dataclass(slots=True)
class AuthConfig:
    api_keys: list[str] = field(default_factory=lambda: ["dev-api-key"])

    def check(self) -> None:
        if not self.api_keys:
            raise ConfigError("auth.api_keys", "at least one API key is required")
        for key in self.api_keys:
            if len(key) < 8:
                raise ConfigError("auth.api_keys", "each key must be at least 8 characters")


@dataclass(slots=True)
class TokensConfig:
    # kid -> HS256 secret. The first key mints; every key verifies (rotation).
    keys: dict[str, str] = field(default_factory=lambda: {"dev": "dev-signing-secret-change-me"})
    ttl_seconds: int = 600
    leeway_seconds: int = 30

    def check(self) -> None:
        if not self.keys:
            raise ConfigError("tokens.keys", "at least one signing key is required")
        for kid, secret in self.keys.items():
            if not kid:
                raise ConfigError("tokens.keys", "a key id may not be empty")
            if len(secret) < 16:
                raise ConfigError(f"tokens.keys.{kid}", "secret must be at least 16 characters")
        if not 30 <= self.ttl_seconds <= 86400:
            raise ConfigError("tokens.ttl_seconds", "must be between 30 and 86400")
        if not 0 <= self.leeway_seconds <= 300:
            raise ConfigError("tokens.leeway_seconds", "must be between 0 and 300")


@dataclass(slots=True)
class StoreConfig:
    url: str = "memory://"

    def check(self) -> None:
        scheme = urlparse(self.url).scheme
        if scheme not in ("memory", "redis", "rediss", "unix"):
            raise ConfigError("store.url", "must start with memory://, redis://, rediss:// or unix://")


@dataclass(slots=True)
class WebhooksConfig:
    url: str = ""  # empty: no webhooks
    secret: str = ""
    timeout_seconds: float = 5.0
    max_attempts: int = 12
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 600.0
    max_queue: int = 100_000  # events waiting for delivery; past it, presence events are dropped (counted)

    def check(self) -> None:
        if self.max_queue < 100:
            raise ConfigError("webhooks.max_queue", "must be at least 100")
        if self.url:
            if urlparse(self.url).scheme not in ("http", "https"):
                raise ConfigError("webhooks.url", "must be an http:// or https:// URL")
            if len(self.secret) < 16:
                raise ConfigError("webhooks.secret", "must be at least 16 characters when url is set")
        if self.timeout_seconds <= 0:
            raise ConfigError("webhooks.timeout_seconds", "must be positive")
        if self.max_attempts < 1:
            raise ConfigError("webhooks.max_attempts", "must be at least 1")
        if not 0 < self.backoff_base_seconds <= self.backoff_max_seconds:
            raise ConfigError("webhooks.backoff_base_seconds", "must be positive and at most backoff_max_seconds")


@dataclass(slots=True)
class MediaConfig:
    workers: int = 0  # 0: one per core
    udp_port: int = 40000  # worker i listens on udp_port + i
    listen_ips: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    announced_ip: str = ""
    # Drop datagrams whose source is outside these networks (empty: accept all).
    allowed_source_networks: list[str] = field(default_factory=list)
    # Passive ICE-TCP (RFC 6544) for networks that block UDP: worker i also listens on TCP
    # tcp_port + i; 0 = the same numbers as udp_port (TCP and UDP ports are separate).
    ice_tcp: bool = True
    tcp_port: int = 0

    def check(self) -> None:
        if self.workers < 0:
            raise ConfigError("media.workers", "must be 0 (one per core) or more")
        _port("media.udp_port", self.udp_port, allow_zero=False)
        _port("media.tcp_port", self.tcp_port, allow_zero=True)
        if not self.listen_ips:
            raise ConfigError("media.listen_ips", "at least one address is required")
        import ipaddress

        for ip in [*self.listen_ips, *([self.announced_ip] if self.announced_ip else [])]:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise ConfigError("media.listen_ips" if ip in self.listen_ips else "media.announced_ip",
                                  f"{ip!r} is not an IP address") from None
        for net in self.allowed_source_networks:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ConfigError("media.allowed_source_networks", f"{net!r} is not a network") from None

    def worker_count(self) -> int:
        return self.workers or (os.cpu_count() or 1)

    def worker_tcp_port(self, index: int) -> int | None:
        """Worker `index`'s ICE-TCP port, None when ICE-TCP is off."""
        if not self.ice_tcp:
            return None
        return (self.tcp_port or self.udp_port) + index


@dataclass(slots=True)
class RoomsConfig:
    join_early_minutes: int = 30
    join_late_minutes: int = 30
    reminder_lead_minutes: int = 30
    max_participants: int = 16
    # joins per participant (token bucket, per node): a burst, then one every 1/rate seconds
    join_burst: int = 10
    join_rate_per_second: float = 0.5
    # refused joins per source address (token bucket, per node); past it: rate_limited
    refused_joins_burst_per_source: int = 30
    refused_joins_per_second_per_source: float = 1.0

    def check(self) -> None:
        if not 1 <= self.join_burst <= 1000:
            raise ConfigError("rooms.join_burst", "must be between 1 and 1000")
        if not 0 < self.join_rate_per_second <= 100:
            raise ConfigError("rooms.join_rate_per_second", "must be above 0 and at most 100")
        if not 1 <= self.refused_joins_burst_per_source <= 10000:
            raise ConfigError("rooms.refused_joins_burst_per_source", "must be between 1 and 10000")
        if not 0 < self.refused_joins_per_second_per_source <= 1000:
            raise ConfigError("rooms.refused_joins_per_second_per_source", "must be above 0 and at most 1000")
        for name in ("join_early_minutes", "join_late_minutes"):
            if not 0 <= getattr(self, name) <= 24 * 60:
                raise ConfigError(f"rooms.{name}", "must be between 0 and 1440")
        if not 1 <= self.reminder_lead_minutes <= 24 * 60:
            raise ConfigError("rooms.reminder_lead_minutes", "must be between 1 and 1440")
        if not 2 <= self.max_participants <= 100:
            raise ConfigError("rooms.max_participants", "must be between 2 and 100")


@dataclass(slots=True)
class AuditConfig:
    # entries older than this are dropped, on both stores (0: keep forever). Six years by default,
    # the retention HIPAA asks of documentation; set what your practice's policy says.
    retention_days: int = 2190
    # a refusal repeating the same one (participant, code) within this long of its last time is
    # folded into it (count, last_at) instead of appended
    aggregate_seconds: int = 3600
    # newest entries kept per appointment, per class (decisions; refusals), whatever their age
    max_entries: int = 10_000

    def check(self) -> None:
        if not 0 <= self.retention_days <= 36500:
            raise ConfigError("audit.retention_days", "must be between 0 (keep) and 36500")
        if not 0 <= self.aggregate_seconds <= 30 * 86400:
            raise ConfigError("audit.aggregate_seconds", "must be between 0 and 2592000")
        if not 100 <= self.max_entries <= 1_000_000:
            raise ConfigError("audit.max_entries", "must be between 100 and 1000000")


@dataclass(slots=True)
class SignalingConfig:
    # From WebSocket accept to the first message (join or resume), whatever else is sent.
    join_timeout_seconds: float = 10.0
    # WebSockets not yet joined: per source address, and on the node; an upgrade over a cap is refused.
    max_unjoined_per_source: int = 20
    max_unjoined: int = 1000

    def check(self) -> None:
        if not 0 < self.join_timeout_seconds <= 300:
            raise ConfigError("signaling.join_timeout_seconds", "must be more than 0 and at most 300")
        if self.max_unjoined_per_source < 1:
            raise ConfigError("signaling.max_unjoined_per_source", "must be at least 1")
        if self.max_unjoined < self.max_unjoined_per_source:
            raise ConfigError("signaling.max_unjoined", "must be at least max_unjoined_per_source")


@dataclass(slots=True)
class MetricsConfig:
    # /metrics on its own listener (port 0: on the main listener, http.host:http.port).
    host: str = "127.0.0.1"
    port: int = 0
    # When set, /metrics wants Authorization: Bearer <bearer_token>; empty: open.
    bearer_token: str = ""

    def check(self) -> None:
        _port("metrics.port", self.port, allow_zero=True)
        if self.bearer_token and len(self.bearer_token) < 16:
            raise ConfigError("metrics.bearer_token", "must be empty or at least 16 characters")


@dataclass(slots=True)
class NodeConfig:
    # On SIGTERM the node drains: new joins are refused, rooms already in session may go on
    # for this long, then everybody still in is told and the node exits.
    drain_seconds: float = 30.0

    def check(self) -> None:
        if not 0 <= self.drain_seconds <= 3600:
            raise ConfigError("node.drain_seconds", "must be between 0 and 3600")


@dataclass(slots=True)
class Config:
    http: HttpConfig = field(default_factory=HttpConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tokens: TokensConfig = field(default_factory=TokensConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    rooms: RoomsConfig = field(default_factory=RoomsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    signaling: SignalingConfig = field(default_factory=SignalingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    node: NodeConfig = field(default_factory=NodeConfig)

    def check(self) -> Config:
        for f in dataclasses.fields(self):
            getattr(self, f.name).check()
        return self

    def public_url(self) -> str:
        if self.http.public_url:
            return self.http.public_url.rstrip("/")
        return f"http://{self.http.host}:{self.http.port}"


def _port(key: str, value: int, *, allow_zero: bool) -> None:
    if not (0 if allow_zero else 1) <= value <= 65535:
        raise ConfigError(key, "must be a port number (1-65535)")


def _coerce(key: str, typ: Any, value: Any, *, from_env: bool) -> Any:
    """Coerce a TOML or environment value to the field's declared type."""
    origin = get_origin(typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if from_env and isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_env and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_env and isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(key, f"expected a number, got {value!r}")
    if typ is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"expected a string, got {value!r}")
    if origin is list:
        (item,) = get_args(typ)
        if from_env and isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as e:
                    raise ConfigError(key, f"invalid JSON list: {e.msg}") from None
            else:
                value = [v.strip() for v in text.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {value!r}")
        return [_coerce(key, item, v, from_env=from_env) for v in value]
    if origin is dict:
        _, item = get_args(typ)
        if from_env and isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as e:
                    raise ConfigError(key, f"invalid JSON object: {e.msg}") from None
            else:  # kid=secret,kid2=secret2
                pairs = [p for p in text.split(",") if p.strip()]
                if not all("=" in p for p in pairs):
                    raise ConfigError(key, "expected key=value pairs separated by commas, or a JSON object")
                value = dict(p.strip().split("=", 1) for p in pairs)
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a table, got {value!r}")
        return {str(k): _coerce(f"{key}.{k}", item, v, from_env=from_env) for k, v in value.items()}
    raise ConfigError(key, f"unsupported type {typ!r}")  # pragma: no cover - programming error


def _apply(section_obj: Any, section: str, key: str, value: Any, *, from_env: bool) -> None:
    hints = get_type_hints(type(section_obj))
    if key not in hints:
        raise ConfigError(f"{section}.{key}", "unknown key")
    setattr(section_obj, key, _coerce(f"{section}.{key}", hints[key], value, from_env=from_env))


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the node's Config from an optional TOML file and the environment."""
    cfg = Config()
    sections = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as e:
            raise ConfigError("--config", f"cannot read {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError("--config", f"{path} is not valid TOML: {e}") from None
        for section, values in data.items():
            if section not in sections:
                raise ConfigError(section, "unknown section")
            if not isinstance(values, dict):
                raise ConfigError(section, "must be a table")
            for key, value in values.items():
                _apply(sections[section], section, key, value, from_env=False)
    env = os.environ if env is None else env
    for name, value in env.items():
        if not name.startswith("TELESFU_") or name in _NON_CONFIG_ENV:
            continue
        rest = name[len("TELESFU_"):].lower()
        section, _, key = rest.partition("_")
        if section not in sections or key not in get_type_hints(type(sections[section])):
            raise ConfigError(name, "unknown configuration variable")
        _apply(sections[section], section, key, value, from_env=True)
    return cfg.check()


# Environment variables with the TELESFU_ prefix that are not configuration keys.
_NON_CONFIG_ENV = frozenset({"TELESFU_LOG_LEVEL", "TELESFU_LOG_FORMAT"})
