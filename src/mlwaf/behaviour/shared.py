"""The per-client history on Redis, so that several WAF nodes see a client as one.

The same records as the local tracker (``tracker.RECORD``, 32 bytes each),
kept in Redis: per client a list of packed records (``<prefix>r:<key>``) and
a hash (``<prefix>h:<key>``: the last request's skeleton, the ban), both
expiring after the window. One request costs two round trips: the previous
skeleton (the similarity of consecutive requests is computed here, with
RapidFuzz, not in Redis), then one script that appends the record, trims the
list to the history depth, refreshes the expiry and returns the history.

The per-endpoint counts behind the distributed-flood test are shared too: a
hash per second (``<prefix>c:<second>``, endpoint bucket to requests, kept a
few seconds), one pipelined round trip per request that counts it and reads
the endpoint's last seconds. Every node then judges, and learns its
baseline from, the whole cluster's rate of the endpoint, so a flood spread
over the nodes counts once at its full size.

``FallbackTracker`` puts the local tracker behind it: when Redis refuses the
connection, or does not answer (within ``timeout``) ``patience`` times in a
row, the analyzer goes on with node-local state, says so in its log (at once,
then once a minute while it lasts), tries Redis again after ``retry``
seconds, and says when Redis answers again. A late answer now and then (a
busy host) only has that one call served locally: switching the node to
local state for seconds on one slow reply would split a flood spread over
the nodes back into parts each under its limit.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import numpy as np
import redis

from mlwaf.behaviour.crowd import SLOTS
from mlwaf.behaviour.tracker import RECORD, SKELETON_BYTES, Event, LocalTracker, client_key, row, short_hash

_RECORD_SCRIPT = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('HSET', KEYS[2], 's', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return redis.call('LRANGE', KEYS[1], 0, -1)
"""
# rid is at byte 20 of a record, status (2 bytes) at byte 24
_STATUS_SCRIPT = """
local rows = redis.call('LRANGE', KEYS[1], 0, -1)
for i = #rows, 1, -1 do
  if string.sub(rows[i], 21, 24) == ARGV[1] then
    redis.call('LSET', KEYS[1], i - 1, string.sub(rows[i], 1, 24) .. ARGV[2] .. string.sub(rows[i], 27))
    return 1
  end
end
return 0
"""
_STATUS = np.dtype("<u2")
CROWD_KEEP_S = SLOTS + 2


class RedisTracker:
    """The tracker's interface (record, ban, banned, set_status, clients) on a Redis server."""

    def __init__(self, url: str, depth: int = 50, window: float = 300.0, timeout: float = 0.02) -> None:
        self.depth, self.window = depth, window
        self.prefix = "mlwaf:"
        self.redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._record = self.redis.register_script(_RECORD_SCRIPT)
        self._status = self.redis.register_script(_STATUS_SCRIPT)

    def connect(self) -> None:
        """Open this process's connection (connections are per process, made after the fork) and
        load the scripts into the server (loading one already there changes nothing)."""
        for script in (self._record, self._status):
            self.redis.script_load(script.script)

    def _keys(self, client: str) -> tuple[str, str]:
        key = f"{client_key(client):016x}"
        return f"{self.prefix}r:{key}", f"{self.prefix}h:{key}"

    def _ttl(self) -> int:
        return max(1, round(self.window))

    def record(self, client: str, event: Event) -> np.ndarray:
        rows, header = self._keys(client)
        skeleton = event.skeleton.encode("utf-8", "replace")[:SKELETON_BYTES]
        packed = np.array([row(event, self.redis.hget(header, "s"), skeleton)], dtype=RECORD).tobytes()
        history = self._record(keys=[rows, header], args=[packed, self.depth, skeleton, self._ttl()])
        records = np.frombuffer(b"".join(history), dtype=RECORD)
        return records[records["ts"] >= event.ts - self.window]

    def ban(self, client: str, until: float, status: int, kind: int) -> bool:
        _, header = self._keys(client)
        pipe = self.redis.pipeline()
        pipe.hset(header, mapping={"bu": repr(until), "bs": status, "bk": kind})
        pipe.expire(header, max(self._ttl(), round(until - time.time()) + 1))
        pipe.execute()
        return True

    def banned(self, client: str, now: float) -> tuple[int, int, float] | None:
        _, header = self._keys(client)
        until, status, kind = self.redis.hmget(header, ["bu", "bs", "bk"])
        if until is None or float(until) <= now:
            return None
        return int(status or 403), int(kind or 0), float(until)

    def set_status(self, client: str, request_id: str, status: int) -> bool:
        rows, _ = self._keys(client)
        rid = np.array([short_hash(request_id)], dtype="<u4").tobytes()
        code = np.array([min(max(status, 0), 999)], dtype=_STATUS).tobytes()
        return bool(self._status(keys=[rows], args=[rid, code]))

    def crowd_counts(self, endpoint: int, second: int, span: int) -> list[int]:
        """Count one request to an endpoint bucket in ``second``; the cluster's counts of that bucket
        for the last ``span`` seconds, oldest first (this request included)."""
        pipe = self.redis.pipeline(transaction=False)
        for past in range(second - span + 1, second):
            pipe.hget(f"{self.prefix}c:{past}", endpoint)
        key = f"{self.prefix}c:{second}"
        pipe.hincrby(key, endpoint, 1)
        pipe.expire(key, CROWD_KEEP_S)
        counts = pipe.execute()
        return [int(count or 0) for count in counts[:-1]]

    def clients(self, now: float) -> int:
        """Clients with a history in Redis (every node's); ``now`` is unused (Redis expires them)."""
        return sum(1 for _ in self.redis.scan_iter(match=f"{self.prefix}h:*", count=1000))


class FallbackTracker:
    """Redis first; the node's own shared-memory tracker while Redis does not answer."""

    def __init__(self, shared: RedisTracker, local: LocalTracker, retry: float = 5.0, patience: int = 3) -> None:
        self.shared, self.local, self.retry, self.patience = shared, local, retry, patience
        self.down_until = 0.0
        self.late = 0  # calls in a row that Redis did not answer in time
        self.fallbacks = 0  # operations served locally because Redis did not answer
        self._said = 0.0

    @property
    def using(self) -> str:
        return "local" if time.monotonic() < self.down_until else "redis"

    def _call(self, name: str, *args: object) -> Any:
        if time.monotonic() >= self.down_until:
            try:
                result = getattr(self.shared, name)(*args)
            except redis.RedisError as exc:
                self.late = self.late + 1 if isinstance(exc, redis.TimeoutError) else self.patience
                if self.late >= self.patience:
                    self._go_local(exc)
            else:
                self.late = 0
                if self._said:  # the end of an outage
                    self._said = 0.0
                    print("mlwaf: Redis answers again; behavioural state is shared", file=sys.stderr)
                return result
        self.fallbacks += 1
        return getattr(self.local, name)(*args)

    def warm(self) -> None:
        """Connect before the first request, so that it does not pay for the connection and the
        scripts (the slowest calls a fresh worker makes); a failure is left to the first request."""
        with contextlib.suppress(redis.RedisError):
            self.shared.connect()

    def _go_local(self, exc: redis.RedisError) -> None:
        self.late, self.down_until = 0, time.monotonic() + self.retry
        if time.monotonic() - self._said > 60:  # an outage's start, then once a minute
            self._said = time.monotonic()
            print(f"mlwaf: Redis unreachable ({exc}); behavioural state is node-local for now", file=sys.stderr)

    def record(self, client: str, event: Event) -> np.ndarray:
        return self._call("record", client, event)

    def ban(self, client: str, until: float, status: int, kind: int) -> bool:
        return self._call("ban", client, until, status, kind)

    def banned(self, client: str, now: float) -> tuple[int, int, float] | None:
        return self._call("banned", client, now)

    def set_status(self, client: str, request_id: str, status: int) -> bool:
        return self._call("set_status", client, request_id, status)

    def crowd_counts(self, endpoint: int, second: int, span: int) -> list[int] | None:
        return self._call("crowd_counts", endpoint, second, span)

    def clients(self, now: float) -> int:
        return self._call("clients", now)
