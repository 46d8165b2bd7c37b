"""Per-client request history, shared by every worker of one analyzer.

The analyzer's workers are forked processes, and the kernel hands a client's
connections to whichever worker is idle, so the history must live where all
of them see it: one anonymous shared memory map, made before the fork, laid
out as fixed-size numpy records. Nothing grows at run time, so the memory cap
is hard: ``max_clients`` slots of ``HEADER`` (128 bytes) plus ``depth``
``RECORD``s (32 bytes each); with the defaults (50 requests) 1,728 bytes a
client, 86 MB for 50,000 clients.

Slots are grouped in buckets of ``WAYS`` (a set-associative cache): a client
always lands in the bucket its key hashes to; a new client takes the slot of
the bucket's least-recently-seen client (whose history is then forgotten).
A client silent for longer than the window starts over. Each bucket is
guarded by one of ``LOCKS`` striped locks, so workers never tear a record.

What is kept of a request is its shape, never its content: the time, the
method, hashes of the path, of the parameter names and of the User-Agent,
the country code, the response status once known, whether it hit a login
path, a static file or came under a browser's User-Agent, and how similar
it was to the client's previous request (the request's skeleton, path plus
parameter names plus value classes, compared with RapidFuzz; only the last
skeleton is kept).
"""

from __future__ import annotations

import hashlib
import mmap
import multiprocessing
from dataclasses import dataclass
from multiprocessing.synchronize import Lock

import numpy as np
from rapidfuzz.fuzz import ratio

RECORD = np.dtype(
    [
        ("ts", "<f8"),
        ("path", "<u4"),
        ("params", "<u4"),
        ("ua", "<u4"),
        ("rid", "<u4"),  # request id hash: the logging phase's status report finds its record by it
        ("status", "<u2"),
        ("country", "<u2"),
        ("method", "u1"),
        ("flags", "u1"),  # FLAG_LOGIN, FLAG_HAS_PREVIOUS, FLAG_ASSET, FLAG_BROWSER
        ("similarity", "u1"),  # to the client's previous request, 0..200
        ("pad", "V1"),
    ]
)
SKELETON_BYTES = 93
HEADER = np.dtype(
    [
        ("key", "<u8"),
        ("last", "<f8"),
        ("head", "<u4"),
        ("count", "<u4"),
        ("banned_until", "<f8"),  # a temporary ban: until when, with which answer and why
        ("ban_status", "<u2"),
        ("ban_kind", "u1"),
        ("skeleton", f"S{SKELETON_BYTES}"),
    ]
)
WAYS = 8
LOCKS = 64
FLAG_LOGIN = 1
FLAG_HAS_PREVIOUS = 2
FLAG_ASSET = 4  # a static file (style sheet, script, image, font)
FLAG_BROWSER = 8  # under a browser's User-Agent
METHODS = {"GET": 1, "POST": 2, "HEAD": 3, "PUT": 4, "DELETE": 5, "OPTIONS": 6, "PATCH": 7}
OTHER_METHOD = 8


def short_hash(text: str) -> int:
    """A 32-bit hash of a string (paths, parameter names, User-Agents, request ids)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=4).digest(), "little")


def client_key(client: str) -> int:
    """The 64-bit key of a client (never 0: 0 marks an empty slot)."""
    digest = hashlib.blake2b(client.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


@dataclass(slots=True)  # not frozen: made for every request, and frozen ones are slow to make
class Event:
    """What the tracker is told about one request."""

    ts: float
    method: str
    path: str
    params: tuple[str, ...] = ()
    user_agent: str = ""
    country: int = 0
    login: bool = False
    skeleton: str = ""  # path, parameter names, value classes: compared with the previous request
    request_id: str = ""
    asset: bool = False
    browser: bool = False


def row(event: Event, previous: bytes | None, skeleton: bytes) -> tuple:
    """A request as a RECORD row; ``previous``: the client's last skeleton, if it has one."""
    flags = (FLAG_LOGIN if event.login else 0) | (FLAG_ASSET if event.asset else 0)
    flags |= FLAG_BROWSER if event.browser else 0
    similarity = 0
    if previous is not None:
        flags |= FLAG_HAS_PREVIOUS
        similarity = round(2 * ratio(previous, skeleton))
    return (
        event.ts,
        short_hash(event.path),
        short_hash("&".join(event.params)),
        short_hash(event.user_agent),
        short_hash(event.request_id) if event.request_id else 0,
        0,
        event.country,
        METHODS.get(event.method, OTHER_METHOD),
        flags,
        similarity,
        b"",
    )


def bytes_per_client(depth: int) -> int:
    return HEADER.itemsize + depth * RECORD.itemsize


class LocalTracker:
    """The history of up to ``max_clients`` clients in shared memory (see the module's docstring)."""

    def __init__(self, max_clients: int = 50_000, depth: int = 50, window: float = 300.0) -> None:
        if max_clients < WAYS or depth < 2 or window <= 0:
            raise ValueError(f"max_clients >= {WAYS}, depth >= 2 and a positive window, please")
        self.buckets = -(-max_clients // WAYS)
        self.capacity = self.buckets * WAYS
        self.depth = depth
        self.window = window
        size = self.capacity * bytes_per_client(depth)
        self._memory = mmap.mmap(-1, size)  # anonymous and MAP_SHARED: forked workers share it
        self.headers = np.frombuffer(self._memory, HEADER, self.capacity, 0)
        offset = self.capacity * HEADER.itemsize
        self.records = np.frombuffer(self._memory, RECORD, self.capacity * depth, offset).reshape(self.capacity, depth)
        self._keys = self.headers["key"]
        self._last = self.headers["last"]
        self._locks = [multiprocessing.Lock() for _ in range(LOCKS)]
        # the ring's slots oldest first, for each position of its head
        self._order = (np.arange(depth)[None, :] + np.arange(depth)[:, None]) % depth

    @property
    def memory_bytes(self) -> int:
        return len(self._memory)

    def clients(self, now: float) -> int:
        """Clients seen within the window."""
        return int(np.count_nonzero((self._keys != 0) & (self._last >= now - self.window)))

    def _slot(self, key: int, now: float) -> int:
        low = (key % self.buckets) * WAYS
        keys = self._keys[low : low + WAYS]
        found = np.flatnonzero(keys == key)
        if found.size:
            slot = low + int(found[0])
            if self._last[slot] >= now - self.window:
                return slot
        else:
            slot = low + int(np.argmin(self._last[low : low + WAYS]))  # empty slots have last == 0
        header = self.headers[slot]
        header["key"], header["head"], header["count"], header["skeleton"] = key, 0, 0, b""
        header["banned_until"], header["ban_status"], header["ban_kind"] = 0.0, 0, 0
        return slot

    def record(self, client: str, event: Event) -> np.ndarray:
        """Add a request to the client's history; its history within the window, oldest first."""
        key = client_key(client)
        skeleton = event.skeleton.encode("utf-8", "replace")[:SKELETON_BYTES]
        with self._lock(key):
            slot = self._slot(key, event.ts)
            header = self.headers[slot]
            head, count = int(header["head"]), int(header["count"])
            self.records[slot, head] = row(event, bytes(header["skeleton"]) if count else None, skeleton)
            header["head"] = (head + 1) % self.depth
            header["count"] = min(count + 1, self.depth)
            header["skeleton"] = skeleton
            self._last[slot] = max(float(self._last[slot]), event.ts)
            return self._window(slot, event.ts)

    def _window(self, slot: int, now: float) -> np.ndarray:
        count, head = int(self.headers[slot]["count"]), int(self.headers[slot]["head"])
        rows = self.records[slot]
        # oldest first: until the ring is full its records are in order from 0, then from head
        history = rows[:count].copy() if count < self.depth else rows.take(self._order[head])  # take: 4x faster
        if history["ts"][0] >= now - self.window:  # the usual case: nothing has aged out
            return history
        return history[history["ts"] >= now - self.window]

    def _find(self, key: int) -> int:
        """The client's slot, or -1 (call with its bucket's lock held)."""
        low = (key % self.buckets) * WAYS
        found = np.flatnonzero(self._keys[low : low + WAYS] == key)
        return low + int(found[0]) if found.size else -1

    def _lock(self, key: int) -> Lock:
        return self._locks[(key % self.buckets) % LOCKS]

    def crowd_counts(self, endpoint: int, second: int, span: int) -> list[int] | None:
        """No cluster to ask: the crowd counts on its own (see RedisTracker.crowd_counts)."""
        return None

    def ban(self, client: str, until: float, status: int, kind: int) -> bool:
        """Answer the client's requests with ``status`` until ``until`` (``kind``: the caller's code
        for why). Only a tracked client can be banned; the ban goes when its slot does."""
        key = client_key(client)
        with self._lock(key):
            slot = self._find(key)
            if slot < 0:
                return False
            header = self.headers[slot]
            header["banned_until"], header["ban_status"], header["ban_kind"] = until, status, kind
            return True

    def banned(self, client: str, now: float) -> tuple[int, int, float] | None:
        """(status, kind, until) while the client is banned."""
        key = client_key(client)
        with self._lock(key):
            slot = self._find(key)
            if slot < 0 or self.headers[slot]["banned_until"] <= now:
                return None
            header = self.headers[slot]
            return int(header["ban_status"]), int(header["ban_kind"]), float(header["banned_until"])

    def set_status(self, client: str, request_id: str, status: int) -> bool:
        """The response status of a request, reported after the fact; False if it is forgotten."""
        key, rid = client_key(client), short_hash(request_id)
        with self._lock(key):
            slot = self._find(key)
            if slot < 0:
                return False
            rows = self.records[slot]
            match = np.flatnonzero(rows["rid"] == rid)
            if not match.size:
                return False
            rows["status"][match[-1]] = min(max(status, 0), 999)
            return True
