"""Accepted callbacks in Redis, shared by several routers (``[state] backend = "redis"``).

Same contract as :class:`~agi_router.callbacks.store.CallbackStore` (SQLite, one router), plus what
several routers need:

* **survives the router that took it:** a callback lives in Redis, not in the router's process or disk;
  any router connected to the same Redis and to the same Asterisk (AMI) places it;
* **at most once:** a router claims a callback before it rings the caller with one atomic script
  (``pending`` → ``placing`` only if still ``pending``), so two routers never ring the same caller for
  the same callback;
* **a claim is a lease:** a router that dies while placing leaves a ``placing`` callback whose lease
  (``lease_s``, longer than an Originate can take) runs out; any router then puts it back to ``pending``
  (the SQLite store does that at start-up, which would be wrong with several routers running).

The number is sealed with the same AES-GCM scheme (key derived from the pseudonymisation key: every router
of a deployment shares that key) and wiped once the callback is placed, failed or expired. Keys::

    <prefix>seq                 INCR: callback ids
    <prefix>cb:<id>             HASH: the callback (number sealed, base64)
    <prefix>due                 ZSET: pending ids by next attempt time
    <prefix>leases              ZSET: placing ids by lease end
    <prefix>active:<caller>:<queue>   the id of that caller's pending/placing callback (de-duplication)

Durability is Redis's: run it with append-only persistence (``appendonly yes``, ``appendfsync
everysec``: at most one second of accepted callbacks lost if the Redis host itself crashes). Every call
has a time budget; a Redis that does not answer raises :class:`~agi_router.exceptions.StateStoreError`
and the caller keeps their place in the queue instead of a callback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from typing import Any

import redis
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.exceptions import RedisError

from ..exceptions import StateStoreError
from .store import Callback

__all__ = ["RedisCallbackStore"]

_ADD = """
local existing = redis.call('GET', KEYS[1])
if existing then
  local st = redis.call('HGET', ARGV[1] .. 'cb:' .. existing, 'status')
  if st == 'pending' or st == 'placing' then return tonumber(existing) end
end
local id = redis.call('INCR', ARGV[1] .. 'seq')
local key = ARGV[1] .. 'cb:' .. id
redis.call('HSET', key, 'created_at', ARGV[2], 'call_id', ARGV[3], 'caller', ARGV[4], 'number', ARGV[5],
           'queue', ARGV[6], 'motive', ARGV[7], 'status', 'pending', 'attempts', 0, 'next_attempt_at', ARGV[2],
           'last_error', '', 'lease_until', 0)
redis.call('ZADD', ARGV[1] .. 'due', ARGV[2], id)
redis.call('SET', KEYS[1], id)
return id
"""

_CLAIM = """
local key = ARGV[1] .. 'cb:' .. ARGV[2]
if redis.call('HGET', key, 'status') ~= 'pending' then return 0 end
redis.call('HSET', key, 'status', 'placing', 'lease_until', ARGV[3])
redis.call('HINCRBY', key, 'attempts', 1)
redis.call('ZREM', ARGV[1] .. 'due', ARGV[2])
redis.call('ZADD', ARGV[1] .. 'leases', ARGV[3], ARGV[2])
return 1
"""

_RECLAIM = """
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', ARGV[1] .. 'leases', '-inf', ARGV[2])) do
  local key = ARGV[1] .. 'cb:' .. id
  redis.call('ZREM', ARGV[1] .. 'leases', id)
  local lease = tonumber(redis.call('HGET', key, 'lease_until') or '0')
  if redis.call('HGET', key, 'status') == 'placing' and lease <= tonumber(ARGV[2]) then
    redis.call('HSET', key, 'status', 'pending', 'next_attempt_at', ARGV[2], 'lease_until', 0)
    redis.call('ZADD', ARGV[1] .. 'due', ARGV[2], id)
    n = n + 1
  end
end
return n
"""

_FINISH = """
local key = ARGV[1] .. 'cb:' .. ARGV[2]
if redis.call('EXISTS', key) == 0 then return 0 end
redis.call('ZREM', ARGV[1] .. 'due', ARGV[2])
redis.call('ZREM', ARGV[1] .. 'leases', ARGV[2])
if ARGV[3] == 'pending' then
  redis.call('HSET', key, 'status', 'pending', 'next_attempt_at', ARGV[4], 'last_error', ARGV[5], 'lease_until', 0)
  if ARGV[7] == '0' then redis.call('HINCRBY', key, 'attempts', -1) end
  redis.call('ZADD', ARGV[1] .. 'due', ARGV[4], ARGV[2])
else
  redis.call('HSET', key, 'status', ARGV[3], 'last_error', ARGV[5], 'number', '')
  local active = ARGV[1] .. 'active:' .. redis.call('HGET', key, 'caller') .. ':' .. redis.call('HGET', key, 'queue')
  if redis.call('GET', active) == ARGV[2] then redis.call('DEL', active) end
  redis.call('PEXPIRE', key, ARGV[6])
end
return 1
"""

_EXPIRE = """
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', ARGV[1] .. 'due', '-inf', '+inf')) do
  local key = ARGV[1] .. 'cb:' .. id
  if tonumber(redis.call('HGET', key, 'created_at') or '0') < tonumber(ARGV[2]) then
    redis.call('ZREM', ARGV[1] .. 'due', id)
    redis.call('HSET', key, 'status', 'expired', 'number', '')
    local active = ARGV[1] .. 'active:' .. redis.call('HGET', key, 'caller') .. ':' .. redis.call('HGET', key, 'queue')
    if redis.call('GET', active) == id then redis.call('DEL', active) end
    redis.call('PEXPIRE', key, ARGV[3])
    n = n + 1
  end
end
return n
"""


class RedisCallbackStore:
    """Callbacks shared by several routers through Redis (synchronous calls, each within ``timeout``)."""

    recovered = 0  # nothing to reset at start-up: expired leases are taken back by due()

    def __init__(
        self,
        key: bytes,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "agi-router:callbacks:",
        timeout: float = 0.25,
        lease_s: float = 300.0,
        keep_done_s: float = 7 * 86400,
        client: Any = None,
    ) -> None:
        self.prefix = prefix
        self.lease_s = lease_s
        self.keep_done_ms = int(keep_done_s * 1000)
        self._aead = AESGCM(hmac.new(key, b"agi-router callbacks v1", hashlib.sha256).digest())
        self._redis = client or redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )
        self._add = self._redis.register_script(_ADD)
        self._claim = self._redis.register_script(_CLAIM)
        self._reclaim = self._redis.register_script(_RECLAIM)
        self._finish_script = self._redis.register_script(_FINISH)
        self._expire = self._redis.register_script(_EXPIRE)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RedisError as exc:
            raise StateStoreError(f"callback store (Redis) could not {what}: {exc}") from None

    def _seal(self, number: str) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, number.encode(), None)).decode()

    def _open(self, sealed: str) -> str:
        if not sealed:
            return ""
        blob = base64.b64decode(sealed)
        return self._aead.decrypt(blob[:12], blob[12:], None).decode()

    def add(self, *, call_id: str, caller: str, number: str, queue: str, motive: str, now: float) -> int:
        """Record an accepted callback; a caller already waiting for one in that queue keeps the first."""
        active = f"{self.prefix}active:{caller}:{queue}"
        args = [self.prefix, repr(now), call_id, caller, self._seal(number), queue, motive]
        return int(self._call("record a callback", self._add, keys=[active], args=args))

    def _row(self, cid: str, h: dict[str, str]) -> Callback:
        return Callback(
            int(cid),
            float(h.get("created_at", 0)),
            h.get("call_id", ""),
            h.get("caller", ""),
            self._open(h.get("number", "")),
            h.get("queue", ""),
            h.get("motive", ""),
            h.get("status", ""),
            int(h.get("attempts", 0)),
            float(h.get("next_attempt_at", 0)),
            h.get("last_error", ""),
        )

    def due(self, now: float, limit: int = 50) -> list[Callback]:
        """Pending callbacks whose time has come, oldest first; placements whose lease ran out (their
        router died) count as pending again."""
        self._call("take back expired leases", self._reclaim, args=[self.prefix, repr(now)])
        ids = self._call(
            "list due callbacks", self._redis.zrangebyscore, f"{self.prefix}due", "-inf", now, start=0, num=limit
        )
        rows = [self.get(int(i)) for i in ids]
        return sorted((r for r in rows if r is not None and r.status == "pending"), key=lambda r: r.created_at)

    def get(self, callback_id: int) -> Callback | None:
        h = self._call("read a callback", self._redis.hgetall, f"{self.prefix}cb:{callback_id}")
        return self._row(str(callback_id), h) if h else None

    def count(self, status: str) -> int:
        if status == "pending":
            return int(self._call("count callbacks", self._redis.zcard, f"{self.prefix}due"))
        if status == "placing":
            return int(self._call("count callbacks", self._redis.zcard, f"{self.prefix}leases"))
        n = 0
        for key in self._call("count callbacks", self._redis.scan_iter, f"{self.prefix}cb:*", count=500):
            n += self._call("count callbacks", self._redis.hget, key, "status") == status
        return n

    def mark_placing(self, callback_id: int, now: float | None = None) -> bool:
        """Claim a callback for this router (at most one router wins); the claim lasts ``lease_s``."""
        until = (time.time() if now is None else now) + self.lease_s
        return bool(self._call("claim a callback", self._claim, args=[self.prefix, callback_id, repr(until)]))

    def mark_placed(self, callback_id: int) -> None:
        self._finish(callback_id, "placed", "", 0.0)

    def mark_failed(
        self, callback_id: int, error: str, *, retry_at: float | None, counted: bool = True
    ) -> None:
        """A failed attempt: back to pending at ``retry_at``, or ``failed`` for good when it is None;
        ``counted=False``: the attempt does not count (the PBX was lost, not the caller)."""
        if retry_at is None:
            self._finish(callback_id, "failed", error, 0.0)
        else:
            self._finish(callback_id, "pending", error, retry_at, counted)

    def _finish(self, callback_id: int, status: str, error: str, retry_at: float, counted: bool = True) -> None:
        args = [self.prefix, callback_id, status, repr(retry_at), error[:200], self.keep_done_ms, int(counted)]
        self._call("update a callback", self._finish_script, args=args)

    def expire(self, older_than: float) -> int:
        args = [self.prefix, repr(older_than), self.keep_done_ms]
        return int(self._call("expire callbacks", self._expire, args=args))

    def close(self) -> None:
        self._redis.close()
