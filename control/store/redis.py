"""The Redis store, for several nodes sharing state and for state that survives restarts.

Room changes are optimistic WATCH/MULTI transactions, retried on conflict; the webhook queue
is a sorted set scored by the next delivery time, claimed with a lease by a Lua script so a
node that dies mid-delivery leaves the event to be delivered again (at least once).
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from control.domain.models import Appointment, AuditEntry, Client, Provider, Room
from control.store.base import (
    AGGREGATE_LOOKBACK,
    DEFAULT_AUDIT,
    AuditPolicy,
    PendingWebhook,
    RoomUpdate,
    StoreError,
    T,
    WebhookEvent,
)

_ROOM_TTL_SECONDS = 7 * 24 * 3600  # a room's record outlives its session for a week
_MAX_TX_RETRIES = 64

# KEYS: due zset, events hash, attempts hash; ARGV: now, lease, limit
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local body = redis.call('HGET', KEYS[2], id)
  if body then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
    table.insert(out, id)
    table.insert(out, body)
    table.insert(out, redis.call('HGET', KEYS[3], id) or '0')
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""


# KEYS: reminders zset; ARGV: appointment id, the due time it was read with
_FINISH_REMINDER = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""


# Compare-and-set of a room: KEYS room, open set; ARGV expected raw value ("" = absent), new
# value, ttl, room id, "1" if open. Returns 1 when written, 0 when the room changed meanwhile.
_ROOM_CAS = """
local current = redis.call('GET', KEYS[1])
if (current or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
if ARGV[5] == '1' then redis.call('SADD', KEYS[2], ARGV[4]) else redis.call('SREM', KEYS[2], ARGV[4]) end
return 1
"""

# Append an audit entry: KEYS seq, the entry's list (decisions or refusals), the other list;
# ARGV entry JSON (with numeric "ts" = "lts" = its time), max entries, "1" for a refusal,
# aggregate seconds, retention cutoff (unix; "" = keep all), key TTL seconds ("" = none),
# lookback. A refusal matching one of the newest `lookback` refusals within the window is
# folded into it (count, last_at). Returns the stored entry's JSON.
_AUDIT = """
local entry = cjson.decode(ARGV[1])
local list = KEYS[2]
local out
if ARGV[3] == '1' then
  local n = redis.call('LLEN', list)
  for i = n - 1, math.max(0, n - tonumber(ARGV[7])), -1 do
    local e = cjson.decode(redis.call('LINDEX', list, i))
    if e['action'] == entry['action'] and e['actor_id'] == entry['actor_id'] and
       e['subject_id'] == entry['subject_id'] and e['code'] == entry['code'] and
       tonumber(entry['ts']) - (tonumber(e['lts']) or 0) <= tonumber(ARGV[4]) then
      e['count'] = (tonumber(e['count']) or 1) + 1
      e['last_at'] = entry['at']
      e['lts'] = entry['ts']
      out = cjson.encode(e)
      redis.call('LSET', list, i, out)
      break
    end
  end
end
if not out then
  entry['id'] = tostring(redis.call('INCR', KEYS[1]))
  out = cjson.encode(entry)
  redis.call('RPUSH', list, out)
  redis.call('LTRIM', list, -tonumber(ARGV[2]), -1)
end
if ARGV[5] ~= '' then
  local cutoff = tonumber(ARGV[5])
  for _, key in ipairs({KEYS[2], KEYS[3]}) do
    for _ = 1, 1000 do
      local head = redis.call('LINDEX', key, 0)
      if not head or (tonumber(cjson.decode(head)['lts']) or cutoff) >= cutoff then break end
      redis.call('LPOP', key)
    end
  end
end
if ARGV[6] ~= '' then
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
end
return out
"""

# Drop the entries of one list whose latest time is before ARGV[1]; returns how many.
_PRUNE_AUDIT = """
local before = tonumber(ARGV[1])
local kept = {}
local values = redis.call('LRANGE', KEYS[1], 0, -1)
for _, v in ipairs(values) do
  if (tonumber(cjson.decode(v)['lts']) or before) >= before then table.insert(kept, v) end
end
local dropped = #values - #kept
if dropped > 0 then
  redis.call('DEL', KEYS[1])
  for i = 1, #kept, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(kept, i, math.min(i + 999, #kept)))
  end
end
return dropped
"""


# A participant's new resume credential: KEYS record, owner index; ARGV record JSON, ttl, key
# prefix of records. The owner's previous record is deleted, so one credential is live per
# participant and appointment.
_PUT_RESUME = """
local previous = redis.call('GET', KEYS[2])
if previous then redis.call('DEL', ARGV[3] .. previous) end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('SET', KEYS[2], ARGV[4], 'EX', tonumber(ARGV[2]))
return 1
"""


class RedisStore:
    kind = "redis"

    def __init__(self, client: aioredis.Redis, prefix: str = "telesfu:") -> None:
        self._r = client
        self._p = prefix
        self._claim = client.register_script(_CLAIM)
        self._finish_reminder = client.register_script(_FINISH_REMINDER)
        self._room_cas = client.register_script(_ROOM_CAS)
        self._audit = client.register_script(_AUDIT)
        self._prune_audit = client.register_script(_PRUNE_AUDIT)
        self._put_resume = client.register_script(_PUT_RESUME)

    @classmethod
    def from_url(cls, url: str, prefix: str = "telesfu:") -> RedisStore:
        return cls(aioredis.from_url(url, decode_responses=True, socket_timeout=5,
                                     socket_connect_timeout=5, health_check_interval=30), prefix)

    def _k(self, *parts: str) -> str:
        return self._p + ":".join(parts)

    async def _run(self, coro: Any) -> Any:
        try:
            return await coro
        except RedisError as e:
            raise StoreError(f"redis: {e}") from e

    async def ping(self) -> bool:
        return bool(await self._run(self._r.ping()))

    async def close(self) -> None:
        await self._r.aclose()

    async def _put(self, key: str, value: str) -> str | None:
        return await self._run(self._r.set(key, value, get=True))  # type: ignore[no-any-return]

    async def put_provider(self, provider: Provider) -> Provider | None:
        prev = await self._put(self._k("provider", provider.id), _dump(provider.to_json()))
        return Provider.from_json(_load(prev)) if prev else None

    async def get_provider(self, provider_id: str) -> Provider | None:
        v = await self._run(self._r.get(self._k("provider", provider_id)))
        return Provider.from_json(_load(v)) if v else None

    async def put_client(self, client: Client) -> Client | None:
        prev = await self._put(self._k("client", client.id), _dump(client.to_json()))
        return Client.from_json(_load(prev)) if prev else None

    async def get_client(self, client_id: str) -> Client | None:
        v = await self._run(self._r.get(self._k("client", client_id)))
        return Client.from_json(_load(v)) if v else None

    async def put_appointment(self, appointment: Appointment) -> Appointment | None:
        prev = await self._put(self._k("appointment", appointment.id), _dump(appointment.to_json()))
        return Appointment.from_json(_load(prev)) if prev else None

    async def get_appointment(self, appointment_id: str) -> Appointment | None:
        v = await self._run(self._r.get(self._k("appointment", appointment_id)))
        return Appointment.from_json(_load(v)) if v else None

    async def get_room(self, appointment_id: str) -> Room | None:
        v = await self._run(self._r.get(self._k("room", appointment_id)))
        return Room.from_json(_load(v)) if v else None

    async def get_many(self, appointment_id: str, client_id: str) -> tuple[Appointment | None, Client | None]:
        """An appointment and a client in one round trip (the join path)."""
        a, c = await self._run(self._r.mget([self._k("appointment", appointment_id), self._k("client", client_id)]))
        return (Appointment.from_json(_load(a)) if a else None, Client.from_json(_load(c)) if c else None)

    async def get_references(self, provider_id: str, client_ids: tuple[str, ...], appointment_id: str
                             ) -> tuple[Provider | None, list[Client | None], Appointment | None]:
        keys = [self._k("provider", provider_id), *(self._k("client", c) for c in client_ids),
                self._k("appointment", appointment_id)]
        values = await self._run(self._r.mget(keys))
        provider = Provider.from_json(_load(values[0])) if values[0] else None
        clients = [Client.from_json(_load(v)) if v else None for v in values[1:-1]]
        apt = Appointment.from_json(_load(values[-1])) if values[-1] else None
        return provider, clients, apt

    async def update_room(self, appointment_id: str, fn: RoomUpdate[T]) -> T:
        # Optimistic: read, decide in Python, then a compare-and-set script that writes only if
        # the room is still what was read (two round trips; a conflict retries).
        key = self._k("room", appointment_id)
        open_set = self._k("rooms", "open")
        for attempt in range(_MAX_TX_RETRIES):
            raw = await self._run(self._r.get(key))
            new, result = fn(Room.from_json(_load(raw)) if raw else None)
            if new is None:
                return result
            written = await self._run(self._room_cas(
                keys=[key, open_set],
                args=[raw or "", _dump(new.to_json()), _ROOM_TTL_SECONDS, appointment_id, "1" if new.is_open else "0"]))
            if written:
                return result
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise StoreError(f"room {appointment_id}: too much contention")

    async def list_open_rooms(self) -> list[Room]:
        ids = sorted(await self._run(self._r.smembers(self._k("rooms", "open"))))
        if not ids:
            return []
        values = await self._run(self._r.mget([self._k("room", i) for i in ids]))
        rooms = [Room.from_json(_load(v)) for v in values if v]
        return [r for r in rooms if r.is_open]

    def _audit_keys(self, appointment_id: str) -> tuple[str, str]:
        """(decisions, refusals): two lists, so refusals never push a decision out."""
        return self._k("audit", appointment_id), self._k("audit-refused", appointment_id)

    async def append_audit(self, entry: AuditEntry, refusal: bool = False,
                           policy: AuditPolicy = DEFAULT_AUDIT) -> AuditEntry:
        decisions, refusals = self._audit_keys(entry.appointment_id)
        ts = entry.at.timestamp()
        stored = {**entry.to_json(), "ts": ts, "lts": ts}
        retention = policy.retention_seconds
        raw = await self._run(self._audit(
            keys=[self._k("audit", "seq"), *((refusals, decisions) if refusal else (decisions, refusals))],
            args=[_dump(stored), policy.max_entries, "1" if refusal else "0", policy.aggregate_seconds,
                  repr(ts - retention) if retention else "", int(retention) + 86400 if retention else "",
                  AGGREGATE_LOOKBACK]))
        return AuditEntry.from_json(_load(raw))

    async def list_audit(self, appointment_id: str, limit: int = 1000, after: int | None = None) -> list[AuditEntry]:
        async with self._r.pipeline(transaction=False) as pipe:
            for key in self._audit_keys(appointment_id):
                pipe.lrange(key, 0, -1)
            lists = await self._run(pipe.execute())
        entries = sorted((AuditEntry.from_json(_load(v)) for values in lists for v in values), key=lambda e: int(e.id))
        if after is not None:
            return [e for e in entries if int(e.id) > after][:limit]
        return entries[-limit:]

    async def prune_audit(self, before: float) -> int:
        dropped = 0
        seq = self._k("audit", "seq")
        for pattern in (self._k("audit", "*"), self._k("audit-refused", "*")):
            async for key in self._r.scan_iter(match=pattern, count=500, _type="list"):
                if key != seq:
                    dropped += int(await self._run(self._prune_audit(keys=[key], args=[repr(before)])))
        return dropped

    async def enqueue_webhook(self, event: WebhookEvent, due: float) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(self._k("webhooks", "events"), event.id, event.to_json())
            pipe.hset(self._k("webhooks", "attempts"), event.id, 0)
            pipe.zadd(self._k("webhooks", "due"), {event.id: due})
            await self._run(pipe.execute())

    async def claim_webhooks(self, now: float, lease_seconds: float, limit: int) -> list[PendingWebhook]:
        flat = await self._run(self._claim(
            keys=[self._k("webhooks", "due"), self._k("webhooks", "events"), self._k("webhooks", "attempts")],
            args=[now, lease_seconds, limit]))
        return [PendingWebhook(WebhookEvent.from_json(flat[i + 1]), int(flat[i + 2]))
                for i in range(0, len(flat), 3)]

    async def complete_webhook(self, event_id: str) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.zrem(self._k("webhooks", "due"), event_id)
            pipe.hdel(self._k("webhooks", "events"), event_id)
            pipe.hdel(self._k("webhooks", "attempts"), event_id)
            await self._run(pipe.execute())

    async def retry_webhook(self, event_id: str, due: float, attempts: int) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.zadd(self._k("webhooks", "due"), {event_id: due}, xx=True)
            pipe.hset(self._k("webhooks", "attempts"), event_id, attempts)
            await self._run(pipe.execute())

    async def dead_letter_webhook(self, event_id: str) -> None:
        body = await self._run(self._r.hget(self._k("webhooks", "events"), event_id))
        async with self._r.pipeline(transaction=True) as pipe:
            if body:
                pipe.rpush(self._k("webhooks", "dead"), body)
                pipe.ltrim(self._k("webhooks", "dead"), -1000, -1)
            pipe.zrem(self._k("webhooks", "due"), event_id)
            pipe.hdel(self._k("webhooks", "events"), event_id)
            pipe.hdel(self._k("webhooks", "attempts"), event_id)
            await self._run(pipe.execute())

    async def webhook_queue_depth(self) -> int:
        return int(await self._run(self._r.zcard(self._k("webhooks", "due"))))

    async def dead_letters(self) -> list[WebhookEvent]:
        values = await self._run(self._r.lrange(self._k("webhooks", "dead"), 0, -1))
        return [WebhookEvent.from_json(v) for v in values]

    async def schedule_reminder(self, appointment_id: str, due: float) -> None:
        await self._run(self._r.zadd(self._k("reminders"), {appointment_id: due}))

    async def cancel_reminder(self, appointment_id: str) -> None:
        await self._run(self._r.zrem(self._k("reminders"), appointment_id))

    async def due_reminders(self, now: float, limit: int) -> list[tuple[str, float]]:
        rows = await self._run(self._r.zrangebyscore(self._k("reminders"), "-inf", now, start=0, num=limit,
                                                     withscores=True))
        return [(a, float(d)) for a, d in rows]

    async def finish_reminder(self, appointment_id: str, due: float) -> None:
        await self._run(self._finish_reminder(keys=[self._k("reminders")], args=[appointment_id, repr(due)]))

    async def claim_once(self, key: str, ttl_seconds: int) -> bool:
        return bool(await self._run(self._r.set(self._k("once", key), "1", nx=True, ex=ttl_seconds)))

    async def put_resume(self, key: str, record: dict[str, str], ttl_seconds: int) -> None:
        await self._run(self._put_resume(
            keys=[self._k("resume", key), self._k("resume_of", f"{record['apt']}/{record['pid']}")],
            args=[_dump(record), max(1, ttl_seconds), self._k("resume", ""), key]))

    async def get_resume(self, key: str) -> dict[str, str] | None:
        v = await self._run(self._r.get(self._k("resume", key)))
        return _load(v) if v else None

    async def take_resume(self, key: str) -> bool:
        return bool(await self._run(self._r.delete(self._k("resume", key))))


def _dump(d: dict[str, Any]) -> str:
    return json.dumps(d, separators=(",", ":"))


def _load(s: str) -> dict[str, Any]:
    return json.loads(s)  # type: ignore[no-any-return]
