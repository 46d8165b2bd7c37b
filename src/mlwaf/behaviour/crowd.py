"""Request rates per endpoint across all clients: what a distributed flood looks like.

A flood spread over many addresses stays under every per-client limit; what
gives it away is the endpoint: far more requests a second than it normally
gets. Per endpoint (hashed into ``ENDPOINTS`` buckets) the crowd keeps the
counts of the last ``SLOTS`` seconds in shared memory, and a baseline of its
requests per second: an exponentially weighted mean and variance, updated
once a second. The endpoint is under attack while its rate over the last
``span`` seconds is above both ``min_rate`` and mean + ``z`` standard
deviations; seconds under attack are not learned, so a long flood does not
become the norm. The baseline can be saved and loaded again (the daemon does
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


@dataclass(frozen=True)
class Surge:
    """An endpoint's current rate and the limit it is judged by."""

    rate: float
    limit: float

    @property
    def alarm(self) -> bool:
        return self.rate > self.limit


class Crowd:
    def __init__(self, span: int = 5, min_rate: float = 20.0, z: float = 3.0, alpha: float = 0.02) -> None:
        if not 1 <= span < SLOTS:
            raise ValueError(f"span must be 1..{SLOTS - 1} seconds")
        self.span, self.min_rate, self.z, self.alpha = span, min_rate, z, alpha
        layout = [("counts", "<u4", SLOTS), ("seconds", "<i8", SLOTS), ("mean", "<f8", 1), ("var", "<f8", 1)]
        layout += [("folded", "<i8", 1)]
        size = sum(np.dtype(kind).itemsize * width * ENDPOINTS for _, kind, width in layout)
        self._memory = mmap.mmap(-1, size)  # shared with the forked workers
        offset, arrays = 0, {}
        for name, kind, width in layout:
            arrays[name] = np.frombuffer(self._memory, kind, ENDPOINTS * width, offset).reshape(ENDPOINTS, width)
            offset += np.dtype(kind).itemsize * width * ENDPOINTS
        self.counts, self.seconds = arrays["counts"], arrays["seconds"]
        self.mean, self.var, self.folded = arrays["mean"][:, 0], arrays["var"][:, 0], arrays["folded"][:, 0]
        self._locks = [multiprocessing.Lock() for _ in range(LOCKS)]

    def _fold(self, e: int, second: int) -> None:
        """Learn the endpoint's completed seconds up to ``second`` - 1 (not those under attack)."""
        last = int(self.folded[e])
        if last == 0:
            self.folded[e] = second - 1
            return
        mean, var = float(self.mean[e]), float(self.var[e])
        limit = max(self.min_rate, mean + self.z * sqrt(var))
        for past in range(max(last + 1, second - MAX_GAP), second):
            slot = past % SLOTS
            count = int(self.counts[e, slot]) if self.seconds[e, slot] == past else 0
            if count > limit:
                continue
            delta = count - mean
            mean += self.alpha * delta
            var = (1 - self.alpha) * (var + self.alpha * delta * delta)
        self.mean[e], self.var[e], self.folded[e] = mean, var, second - 1

    def add(self, endpoint: int, now: float) -> Surge:
        """Count one request to an endpoint (its hash) and say how busy the endpoint is."""
        e, second = endpoint % ENDPOINTS, int(now)
        slot = second % SLOTS
        with self._locks[e % LOCKS]:
            if self.seconds[e, slot] != second:
                self._fold(e, second)
                self.seconds[e, slot], self.counts[e, slot] = second, 0
            self.counts[e, slot] += 1
            recent = self.counts[e][self.seconds[e] > second - self.span].sum()
            limit = max(self.min_rate, float(self.mean[e]) + self.z * sqrt(float(self.var[e])))
            return Surge(float(recent) / self.span, limit)

    def save(self, path: Path) -> None:
        """Write the baseline (mean, variance, last learned second per endpoint) atomically."""
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, mean=self.mean, var=self.var, folded=self.folded)
        tmp.replace(path)

    def load(self, path: Path) -> bool:
        """Read a saved baseline; False (and nothing changed) when there is none or it does not fit."""
        try:
            with np.load(path) as saved:
                arrays = {name: saved[name] for name in ("mean", "var", "folded")}
        except (OSError, ValueError, KeyError):
            return False
        if any(a.shape != (ENDPOINTS,) for a in arrays.values()):
            return False
        self.mean[:], self.var[:], self.folded[:] = arrays["mean"], arrays["var"], arrays["folded"]
        return True
