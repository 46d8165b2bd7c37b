"""Request rates per endpoint across all clients: what a distributed flood looks like.

A flood spread over many addresses stays under every per-client limit; what
gives it away is the endpoint: far more requests a second than it normally
gets. Per endpoint (hashed into ``ENDPOINTS`` buckets) the crowd keeps the
counts of the last ``SLOTS`` seconds in shared memory, and a baseline of its
requests per second, updated once a second: an exponentially weighted mean
and variance, and an exponentially weighted histogram of the counts (in
``EDGES`` bins) for their quartiles. The endpoint is under attack while its
rate over the last ``span`` seconds is above ``min_rate`` and an outlier by
both tests: over mean + ``z`` standard deviations (z-score 3) and over the
third quartile + ``iqr`` times the interquartile range (Tukey's fence, 1.5;
robust where the z-score is not: traffic that comes in bursts has a large
variance, traffic that is mostly idle a small one); seconds under attack
are not learned, so a long flood does not become the norm. The baseline can be saved and loaded again (the daemon does
so at stop and start, and every few minutes), so a restart does not start
from nothing.
"""

from __future__ import annotations

import mmap
import multiprocessing
from dataclasses import dataclass
from math import sqrt
from pathlib import Path

import numpy as np

ENDPOINTS = 4096
SLOTS = 8
LOCKS = 64
MAX_GAP = 600  # seconds of silence folded into the baseline at most
SAVED = ("mean", "var", "folded", "histogram", "limit")
# Histogram bins of requests per second: [EDGES[i], EDGES[i + 1]); finer where counts are small.
EDGES = np.array(
    [0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512, 640, 768,
     1024, 1536, 2048, 4096, 1 << 40], dtype=np.float64,
)  # fmt: skip
BINS = len(EDGES) - 1


def fence(histogram: np.ndarray, iqr: float) -> float:
    """Q3 + ``iqr`` * (Q3 - Q1) of a histogram over EDGES (quartiles interpolated within a bin);
    0.0 when it is empty."""
    total = float(histogram.sum())
    if total <= 0:
        return 0.0
    cumulative = np.cumsum(histogram) / total

    def quartile(q: float) -> float:
        b = min(int(np.searchsorted(cumulative, q)), BINS - 1)
        below = float(cumulative[b - 1]) if b else 0.0
        share = (q - below) / max(float(cumulative[b]) - below, 1e-12)
        return float(EDGES[b] + share * (min(EDGES[b + 1], 2 * EDGES[b] + 1) - EDGES[b]))

    q1, q3 = quartile(0.25), quartile(0.75)
    return q3 + iqr * (q3 - q1)


@dataclass(frozen=True)
class Surge:
    """An endpoint's current rate and the limit it is judged by."""

    rate: float
    limit: float

    @property
    def alarm(self) -> bool:
        return self.rate > self.limit


class Crowd:
    def __init__(
        self, span: int = 5, min_rate: float = 20.0, z: float = 3.0, iqr: float = 1.5, alpha: float = 0.02
    ) -> None:
        if not 1 <= span < SLOTS:
            raise ValueError(f"span must be 1..{SLOTS - 1} seconds")
        self.span, self.min_rate, self.z, self.iqr, self.alpha = span, min_rate, z, iqr, alpha
        layout = [("counts", "<u4", SLOTS), ("seconds", "<i8", SLOTS), ("mean", "<f8", 1), ("var", "<f8", 1)]
        layout += [("folded", "<i8", 1), ("histogram", "<f8", BINS), ("limit", "<f8", 1)]
        size = sum(np.dtype(kind).itemsize * width * ENDPOINTS for _, kind, width in layout)
        self._memory = mmap.mmap(-1, size)  # shared with the forked workers
        offset, arrays = 0, {}
        for name, kind, width in layout:
            arrays[name] = np.frombuffer(self._memory, kind, ENDPOINTS * width, offset).reshape(ENDPOINTS, width)
            offset += np.dtype(kind).itemsize * width * ENDPOINTS
        self.counts, self.seconds = arrays["counts"], arrays["seconds"]
        self.mean, self.var, self.folded = arrays["mean"][:, 0], arrays["var"][:, 0], arrays["folded"][:, 0]
        self.histogram, self.limit = arrays["histogram"], arrays["limit"][:, 0]
        self.limit[:] = min_rate
        self._locks = [multiprocessing.Lock() for _ in range(LOCKS)]

    def _fold(self, e: int, second: int) -> None:
        """Learn the endpoint's completed seconds up to ``second`` - 1 (not those under attack),
        then set the limit its next seconds are judged by."""
        last = int(self.folded[e])
        if last == 0:
            self.folded[e] = second - 1
            return
        mean, var, histogram = float(self.mean[e]), float(self.var[e]), self.histogram[e]
        limit = float(self.limit[e])
        for past in range(max(last + 1, second - MAX_GAP), second):
            slot = past % SLOTS
            count = int(self.counts[e, slot]) if self.seconds[e, slot] == past else 0
            if count > limit:
                continue
            delta = count - mean
            mean += self.alpha * delta
            var = (1 - self.alpha) * (var + self.alpha * delta * delta)
            histogram *= 1 - self.alpha
            histogram[np.searchsorted(EDGES, count, side="right") - 1] += self.alpha
        self.mean[e], self.var[e], self.folded[e] = mean, var, second - 1
        self.limit[e] = max(self.min_rate, mean + self.z * sqrt(var), fence(histogram, self.iqr))

    def add(self, endpoint: int, now: float, shared: list[int] | None = None) -> Surge:
        """Count one request to an endpoint (its hash) and say how busy the endpoint is. ``shared``:
        the cluster's counts of the endpoint for the last ``span`` seconds, oldest first, this
        request included (RedisTracker.crowd_counts); they stand for this node's where larger."""
        e, second = endpoint % ENDPOINTS, int(now)
        slot = second % SLOTS
        with self._locks[e % LOCKS]:
            if shared is not None:  # before the fold: the seconds it learns are the cluster's
                for past, count in zip(range(second - len(shared) + 1, second), shared, strict=False):
                    self._merge(e, past, count)
            if self.seconds[e, slot] != second:
                self._fold(e, second)
                self.seconds[e, slot], self.counts[e, slot] = second, 0
            self.counts[e, slot] += 1
            if shared is not None:
                self.counts[e, slot] = max(int(self.counts[e, slot]), shared[-1])
            recent = self.counts[e][self.seconds[e] > second - self.span].sum()
            return Surge(float(recent) / self.span, float(self.limit[e]))

    def _merge(self, e: int, second: int, count: int) -> None:
        """Take the cluster's count for a past second where it is larger than this node's own."""
        slot = second % SLOTS
        if self.seconds[e, slot] == second:
            self.counts[e, slot] = max(int(self.counts[e, slot]), count)
        elif self.seconds[e, slot] < second and count and second > self.folded[e]:
            self.seconds[e, slot], self.counts[e, slot] = second, count

    def save(self, path: Path) -> None:
        """Write the baseline (mean, variance, histogram, limit, last learned second per endpoint)
        atomically."""
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **{name: getattr(self, name) for name in SAVED})
        tmp.replace(path)

    def load(self, path: Path) -> bool:
        """Read a saved baseline; False (and nothing changed) when there is none or it does not fit."""
        try:
            with np.load(path) as saved:
                arrays = {name: saved[name] for name in SAVED}
        except (OSError, ValueError, KeyError):
            return False
        if any(arrays[name].shape != getattr(self, name).shape for name in SAVED):
            return False
        for name in SAVED:
            getattr(self, name)[:] = arrays[name]
        return True
