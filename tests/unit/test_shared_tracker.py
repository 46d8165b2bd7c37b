"""The per-client history on a real Redis server: two trackers (two WAF nodes) share a client;
Redis going away leaves each node on its own state, and it comes back."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from mlwaf.behaviour.engine import Behaviour
from mlwaf.behaviour.features import compute
from mlwaf.behaviour.shared import FallbackTracker, RedisTracker
from mlwaf.behaviour.tracker import Event, LocalTracker
from mlwaf.config import BehaviourSettings
from mlwaf.request import Request

T0 = 1_800_000_000.0


@pytest.fixture
def redis_url(tmp_path: Path):
    """A real redis-server on a Unix socket of its own (scripts/install-host-deps.sh installs it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run scripts/install-host-deps.sh (make host-deps)")
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"unix://{sock}", proc
    proc.terminate()
    proc.wait(timeout=10)


def event(ts: float, path: str = "/", **extra: object) -> Event:
    return Event(ts=ts, method="GET", path=path, **extra)  # type: ignore[arg-type]


def test_two_nodes_see_one_client(redis_url) -> None:
    url, _ = redis_url
    node_a, node_b = (RedisTracker(url, depth=5, window=60, timeout=1.0) for _ in "ab")  # a busy host is slow
    for i in range(4):
        node = node_a if i % 2 else node_b
        history = node.record("203.0.113.7", event(T0 + i, f"/p{i}", skeleton=f"/p{i}", request_id=f"r{i}"))
    assert history.size == 4, "each node sees the requests the other one took"
    assert list(history["ts"]) == [T0 + i for i in range(4)]
    for i in range(4, 9):
        history = node_a.record("203.0.113.7", event(T0 + i, "/same", skeleton="/same"))
    assert history.size == 5, "trimmed to the depth"
    assert history["similarity"].tolist()[1:] == [200] * 4, "similar to the previous request, whichever node took it"
    assert compute(history, T0 + 8).endpoint_entropy == 0.0
    assert node_b.set_status("203.0.113.7", "r3", 404) is False, "r3 was trimmed away"
    node_a.record("198.51.100.1", event(T0, "/x", request_id="q1"))
    assert node_b.set_status("198.51.100.1", "q1", 404)
    assert node_a.record("198.51.100.1", event(T0 + 1))["status"].tolist() == [404, 0]
    assert node_b.banned("198.51.100.1", T0 + 2) is None
    node_a.ban("198.51.100.1", T0 + 60, 429, 0)
    assert node_b.banned("198.51.100.1", T0 + 2) == (429, 0, T0 + 60), "a ban holds on every node"
    assert node_b.banned("198.51.100.1", T0 + 61) is None
    assert node_b.clients(T0) == 2


def test_redis_down_falls_back_to_local_state_and_recovers(redis_url, capsys: pytest.CaptureFixture[str]) -> None:
    url, proc = redis_url
    shared = RedisTracker(url, window=60, timeout=1.0)
    tracker = FallbackTracker(shared, LocalTracker(max_clients=64, window=60), retry=0.2)
    tracker.record("c", event(T0))
    assert tracker.using == "redis"
    proc.terminate()
    proc.wait(timeout=10)
    history = tracker.record("c", event(T0 + 1))  # no exception: the node goes on alone
    assert history.size == 1
    assert tracker.using == "local"
    assert tracker.fallbacks == 1
    assert "Redis unreachable" in capsys.readouterr().err
    assert tracker.banned("c", T0 + 2) is None
    time.sleep(0.25)
    assert tracker.record("c", event(T0 + 3)).size == 2, "local state keeps counting while Redis is away"


def test_a_worker_connects_before_its_first_request(redis_url) -> None:
    url, proc = redis_url
    admin = redis.Redis.from_url(url)
    admin.script_flush()
    shared = RedisTracker(url, window=60, timeout=1.0)
    tracker = FallbackTracker(shared, LocalTracker(max_clients=64, window=60))
    tracker.warm()
    assert len(admin.client_list()) == 2, "the tracker's connection is open"
    assert admin.script_exists(shared._record.sha, shared._status.sha) == [True, True]
    proc.terminate()
    proc.wait(timeout=10)
    late = FallbackTracker(RedisTracker(url), LocalTracker(max_clients=64, window=60))
    late.warm()  # no Redis: no error
    assert (late.using, late.fallbacks) == ("redis", 0), "left to the first request"


def test_a_late_answer_now_and_then_keeps_the_node_on_redis(redis_url, capsys: pytest.CaptureFixture[str]) -> None:
    """A stalled server (stopped with SIGSTOP) answers too late: the calls it misses are served
    locally, and only ``patience`` of them in a row switch the node to local state."""
    url, proc = redis_url
    local = LocalTracker(max_clients=64, window=60)
    tracker = FallbackTracker(RedisTracker(url, window=60, timeout=0.05), local, retry=60, patience=3)
    tracker.record("c", event(T0))
    proc.send_signal(signal.SIGSTOP)
    try:
        for i in (1, 2):
            assert tracker.record("c", event(T0 + i)).size == i, "served from local state"
        assert tracker.using == "redis", "two late answers are not an outage"
    finally:
        proc.send_signal(signal.SIGCONT)
    tracker.record("c", event(T0 + 3))
    assert (tracker.using, tracker.fallbacks) == ("redis", 2), "an answer in time starts the count again"
    assert "Redis unreachable" not in capsys.readouterr().err
    proc.send_signal(signal.SIGSTOP)
    try:
        for i in (4, 5, 6):
            tracker.record("c", event(T0 + i))
        assert tracker.using == "local", "the third late answer in a row is an outage"
        assert "Redis unreachable (Timeout" in capsys.readouterr().err
    finally:
        proc.send_signal(signal.SIGCONT)


def test_a_flood_spread_over_two_nodes_is_caught_on_both(redis_url) -> None:
    url, _ = redis_url
    settings = BehaviourSettings(enabled=True, redis_url=url, max_clients=64, redis_timeout=0.5)
    node_a, node_b = Behaviour(settings), Behaviour(settings)
    verdicts = []
    for i in range(30):  # 20 requests a second, alternating between the nodes: 10 a second on each
        node = node_a if i % 2 else node_b
        verdicts.append(node.judge(Request("GET", "/", client_ip="192.0.2.77", id=f"f{i}"), T0 + i * 0.05).status)
    assert 429 in verdicts
    assert node_b.judge(Request("GET", "/", client_ip="192.0.2.77"), T0 + 2).banned == "flood"
    assert node_a.judge(Request("GET", "/", client_ip="192.0.2.77"), T0 + 2).banned == "flood"


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "node-local"])
def test_a_distributed_flood_spread_over_two_nodes_counts_at_full_size(redis_url, shared: bool) -> None:
    """60 sources, 0.5 requests a second each on one page (30 a second in all, over the fresh limit of
    20), alternating between two nodes: through Redis each node sees 30 a second and refuses them;
    on their own each sees 15, under the limit."""
    url, _ = redis_url
    settings = BehaviourSettings(enabled=True, redis_url=url if shared else "", max_clients=256, redis_timeout=0.5)
    nodes = (Behaviour(settings), Behaviour(settings))
    statuses, kinds = [], set()
    for i in range(300):  # 10 seconds
        judgement = nodes[i % 2].judge(Request("GET", "/catalog", client_ip=f"198.51.100.{i % 60}"), T0 + i / 30)
        statuses.append(judgement.status)
        kinds.update(finding.kind for finding in judgement.findings)
    if shared:
        assert "distributed-flood" in kinds
        assert statuses[-60:].count(429) == 60, "every source refused by the end"
    else:
        assert "distributed-flood" not in kinds
        assert 429 not in statuses
