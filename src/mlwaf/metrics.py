"""Prometheus metrics of the analyzer daemon.

The daemon is a pool of forked workers, so its counters live in anonymous
shared memory made before the fork: one row per worker slot, each written by
one process only (no locks; a worker that is replaced takes over its slot and
goes on counting), and a row for the parent's gauges. A metrics process,
forked like the workers, sums the rows when it is scraped (HTTP on a local
address) and, if asked, writes the same text for node_exporter's textfile
collector. The exposition format is prometheus_client's.
"""

from __future__ import annotations

import bisect
import gc
import mmap
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import MetricsHandler

from mlwaf.config import parse_listen
from mlwaf.protocol import Reply

VERDICTS = ("allow", "block", "log", "ratelimit", "error")
# the anomalies that mean a limit kept part of a request from the model (Reply.anomalies)
LIMITS = ("bridge_cut", "args_truncated", "value_truncated", "body_truncated", "inputs_truncated", "json_too_deep")
ACTIONS = ("block", "log")
BUCKETS_MS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0)
OTHER = ("other", "other")
TEXTFILE_EVERY_S = 15
# single values per row: summed over the workers, or (workers, load_s, started) the parent's
SCALARS = (
    "ms_sum",
    "status_reports",
    "abandoned",
    "late",
    "refused_peers",
    "gc_s",
    "gc_longest_s",
    "fallbacks",
    "redis_down",
    "workers",
    "load_s",
    "started",
)

# the workers' own families, in exposition order: a counter summed over the worker rows, or
# a gauge that is the worst (largest) worker's value; (kind, name, help, scalar column)
WORKER_FAMILIES = (
    ("sum", "mlwaf_status_reports", "Response statuses reported for the behavioural layer", "status_reports"),
    (
        "sum",
        "mlwaf_abandoned_requests",
        "Requests not analysed because the bridge had given up on them (its timeout) before a worker took them up",
        "abandoned",
    ),
    (
        "sum",
        "mlwaf_late_replies",
        "Requests analysed after the bridge had given up on them (its timeout): Apache took its fallback path",
        "late",
    ),
    (
        "sum",
        "mlwaf_refused_peers",
        "Connections refused because the process at the other end was not one of the allowed users (peer_users)",
        "refused_peers",
    ),
    (
        "sum",
        "mlwaf_gc_seconds",
        "Seconds the workers spent in Python's garbage collector (a worker answers nothing meanwhile)",
        "gc_s",
    ),
    (
        "max",
        "mlwaf_gc_longest_seconds",
        "The longest single garbage collection in any worker since the daemon started",
        "gc_longest_s",
    ),
    (
        "sum",
        "mlwaf_behaviour_redis_fallbacks",
        "Behavioural-layer operations served from node-local state because Redis did not answer",
        "fallbacks",
    ),
    (
        "max",
        "mlwaf_behaviour_redis_down",
        "1 while any worker keeps behavioural state node-local because Redis does not answer",
        "redis_down",
    ),
)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    runtime: str


class Metrics:
    """Shared-memory counters for ``workers`` worker slots and the given (model, family) pairs."""

    def __init__(self, workers: int, pairs: list[tuple[str, str]]) -> None:
        self.pairs = [*dict.fromkeys([*pairs, OTHER])]
        self._pair = {pair: i for i, pair in enumerate(self.pairs)}
        # columns: verdicts | limits hit | detections (pair x action) | histogram buckets (+Inf last) | scalars
        self._limits = len(VERDICTS)
        self._detections = self._limits + len(LIMITS)
        self._buckets = self._detections + len(self.pairs) * len(ACTIONS)
        self._scalars = self._buckets + len(BUCKETS_MS) + 1
        self.columns = self._scalars + len(SCALARS)
        self.rows = workers + 1  # the last row: the parent's gauges
        self._memory = mmap.mmap(-1, self.rows * self.columns * 8)
        self.table = np.frombuffer(self._memory, dtype=np.float64).reshape(self.rows, self.columns)
        self.row = self.rows - 1
        self.models: list[ModelInfo] = []
        self.clients = lambda: 0  # tracked clients, asked at scrape time

    def worker(self, slot: int) -> None:
        """Count into ``slot`` from now on (called in the worker after the fork)."""
        self.row = slot

    def _add(self, column: int, amount: float = 1.0) -> None:
        self.table[self.row, column] += amount

    def scalar(self, name: str) -> int:
        return self._scalars + SCALARS.index(name)

    def count(self, reply: Reply) -> None:
        """One answered request: its verdict, what drove it, how long the analysis took."""
        verdict = "error" if reply.error else ("ratelimit" if reply.status == 429 else reply.verdict)
        self._add(VERDICTS.index(verdict))
        for anomaly in set(reply.anomalies).intersection(LIMITS):
            self._add(self._limits + LIMITS.index(anomaly))
        if reply.verdict in ACTIONS:
            action = ACTIONS.index(reply.verdict)
            for pair in {(r.model, r.family) for r in reply.reasons}:
                index = self._pair.get(pair, self._pair[OTHER])
                self._add(self._detections + index * len(ACTIONS) + action)
        self._add(self._buckets + bisect.bisect_left(BUCKETS_MS, reply.ms))
        self._add(self.scalar("ms_sum"), reply.ms)

    def status_report(self) -> None:
        self._add(self.scalar("status_reports"))

    def abandoned(self) -> None:
        self._add(self.scalar("abandoned"))

    def late(self) -> None:
        self._add(self.scalar("late"))

    def refused_peer(self) -> None:
        self._add(self.scalar("refused_peers"))

    def watch_collector(self) -> None:
        """Time every garbage collection of this process (a worker): total and longest."""
        began = [0.0]

        def timed(phase: str, _info: dict[str, int]) -> None:
            if phase == "start":
                began[0] = time.perf_counter()
                return
            took = time.perf_counter() - began[0]
            self._add(self.scalar("gc_s"), took)
            longest = self.scalar("gc_longest_s")
            self.table[self.row, longest] = max(self.table[self.row, longest], took)

        gc.callbacks.append(timed)

    def set(self, name: str, value: float) -> None:
        self.table[self.row, self.scalar(name)] = value

    def get(self, name: str, row: int) -> float:
        return float(self.table[row, self.scalar(name)])

    def collect(self) -> Iterator[Metric]:
        """The metric families, summed over the worker rows (prometheus_client's collector protocol)."""
        workers = self.table[:-1].sum(axis=0)
        parent = self.table[-1]
        requests = CounterMetricFamily(
            "mlwaf_requests", "Requests the analyzer answered, by verdict", labels=["verdict"]
        )
        for i, verdict in enumerate(VERDICTS):
            requests.add_metric([verdict], workers[i])
        yield requests
        limited = CounterMetricFamily(
            "mlwaf_limited_requests",
            "Requests a limit kept partly from the model (ModSecurity then checks them in-process), by limit",
            labels=["limit"],
        )
        for i, limit in enumerate(LIMITS):
            limited.add_metric([limit], workers[self._limits + i])
        yield limited
        detections = CounterMetricFamily(
            "mlwaf_detections",
            "Requests blocked or logged, by the model and family among their reasons",
            labels=["model", "family", "action"],
        )
        for p, (model, family) in enumerate(self.pairs):
            for a, action in enumerate(ACTIONS):
                detections.add_metric([model, family, action], workers[self._detections + p * len(ACTIONS) + a])
        yield detections
        cumulative = np.cumsum(workers[self._buckets : self._scalars])
        bounds = [*(str(b / 1000) for b in BUCKETS_MS), "+Inf"]
        histogram = HistogramMetricFamily("mlwaf_processing_seconds", "Time the analyzer took per request")
        histogram.add_metric(
            [],
            buckets=list(zip(bounds, cumulative.tolist(), strict=True)),
            sum_value=workers[self.scalar("ms_sum")] / 1000,
        )
        yield histogram
        for kind, name, documentation, column in WORKER_FAMILIES:
            values = self.table[:-1, self.scalar(column)]
            if kind == "sum":
                yield CounterMetricFamily(name, documentation, value=float(values.sum()))
            else:
                yield GaugeMetricFamily(name, documentation, value=float(values.max()))
        yield GaugeMetricFamily("mlwaf_tracked_clients", "Clients with a behavioural history", value=self.clients())
        yield GaugeMetricFamily("mlwaf_workers", "Worker processes running", value=parent[self.scalar("workers")])
        yield GaugeMetricFamily(
            "mlwaf_model_load_seconds", "Seconds the models took to load at start", value=parent[self.scalar("load_s")]
        )
        yield GaugeMetricFamily(
            "mlwaf_start_time_seconds", "When the daemon started (Unix time)", value=parent[self.scalar("started")]
        )
        info = GaugeMetricFamily(
            "mlwaf_model_info", "The models in use (value 1)", labels=["model", "version", "runtime"]
        )
        for model in self.models:
            info.add_metric([model.name, model.version, model.runtime], 1.0)
        yield info

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return registry


def write_textfile(metrics: Metrics, path: str) -> None:
    """The exposition in ``path``, replaced atomically (node_exporter must never read half a file)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(generate_latest(metrics.registry()))
    os.chmod(temporary, 0o644)  # for node_exporter's user, whatever the service's umask
    os.replace(temporary, path)


class _Scrapes(ThreadingHTTPServer):
    daemon_threads = True
    # the socket the constructor makes and this one drops: a Unix one, since the service may
    # not be allowed to open Internet sockets (it is handed its port by systemd)
    address_family = socket.AF_UNIX

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a scraper that hung up early is no error
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def serve_on(metrics: Metrics, listener: socket.socket) -> None:
    """Answer scrapes on a socket that is already listening (systemd's), in a thread."""
    server = _Scrapes(listener.getsockname()[:2], MetricsHandler.factory(metrics.registry()), bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    threading.Thread(target=server.serve_forever, daemon=True).start()


def serve_metrics(
    metrics: Metrics,
    listen: str,
    textfile: str,
    bound: Callable[[], object] | None = None,
    listener: socket.socket | None = None,
) -> None:
    """The metrics process: answer scrapes on ``listener`` (a socket systemd opened) or else on
    ``listen``, and keep ``textfile`` fresh (each may be absent). ``bound`` is called once the
    port is listening, or could not be."""
    if listener is not None:
        serve_on(metrics, listener)
    elif listen:
        host, port = parse_listen(listen)
        try:
            start_http_server(port, addr=host, registry=metrics.registry())
        except OSError as exc:  # said once; a restart would not free the address
            print(f"mlwaf: no metrics endpoint: cannot listen on {listen}: {exc.strerror}", file=sys.stderr, flush=True)
    if bound:
        bound()
    while True:
        if textfile:
            try:
                write_textfile(metrics, textfile)
            except OSError as exc:
                print(
                    f"mlwaf: cannot write the metrics textfile {textfile}: {exc.strerror}", file=sys.stderr, flush=True
                )
        time.sleep(TEXTFILE_EVERY_S if textfile else 3600)
