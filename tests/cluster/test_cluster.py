"""Two WAF nodes behind a load balancer, sharing their behavioural state in Redis
(Molecule scenario ``cluster``). The requests come from the controller, each
client from its own loopback source address, through HAProxy on 127.0.0.10;
the nodes are checked over SSH.

These tests take no ``host`` fixture (testinfra would run each once per host):
they reach the hosts they need by name.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import testinfra
from waiting import wait_until

FRONT = "127.0.0.10"
NODES = ("mlwaf-waf1", "mlwaf-waf2")
DECISIONS = "/var/log/mlwaf/decisions.jsonl"
ACCESS_LOG = "/var/log/apache2/waf_access.log"


def node(name: str):
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}")


def get(path: str, source: str = "127.0.0.1", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """One request through the load balancer from ``source`` (any 127.x.y.z address); a
    test's clients each send a few requests, or they would be a flood."""
    conn = http.client.HTTPConnection(FRONT, 80, timeout=10, source_address=(source, 0))
    try:
        agent = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) cluster-test"}
        conn.request("GET", path, headers={**agent, **(headers or {})})
        answer = conn.getresponse()
        answer.read()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}
    finally:
        conn.close()


def access_lines(needle: str) -> list[str]:
    """The access log lines of both nodes that contain ``needle``."""
    return [
        line for name in NODES for line in node(name).run(f"grep {needle} {ACCESS_LOG} || true").stdout.splitlines()
    ]


def decisions(host, needle: str) -> list[dict]:
    out = host.run(f"grep -F {needle} {DECISIONS} || true").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module", autouse=True)
def both_nodes_up() -> None:
    """HAProxy has both nodes in service (its health checks run every second)."""
    lb = node("mlwaf-lb")

    def up() -> bool:
        csv = lb.run(f"curl -s http://{FRONT}:8404/\\;csv").stdout
        return sum(1 for line in csv.splitlines() if line.startswith("waf_nodes,waf") and ",UP," in line) == 2

    assert wait_until(up), "HAProxy does not see both WAF nodes up"


def test_requests_are_spread_over_both_nodes() -> None:
    marker = uuid.uuid4().hex
    statuses = Counter(get(f"/index.php?spread={marker}", source=f"127.2.0.{i + 1}")[0] for i in range(20))
    assert statuses == {200: 20}
    counts = [int(node(name).run(f"grep -c {marker} {ACCESS_LOG} || true").stdout.strip() or 0) for name in NODES]
    assert sum(counts) == 20
    assert min(counts) >= 5, f"round robin over both nodes, got {counts}"


def test_nodes_see_the_client_behind_the_load_balancer() -> None:
    marker = uuid.uuid4().hex
    status, _ = get(f"/search.php?t={marker}&q=%3Cscript%3Ealert(1)%3C/script%3E", source="127.3.0.7")
    assert status == 403
    logged = access_lines(marker)
    assert len(logged) == 1
    assert logged[0].startswith("127.3.0.7 "), "the client's address, from X-Forwarded-For"
    # A client cannot pass itself off as another: only the load balancer's header is believed.
    status, _ = get(f"/index.php?t={marker}-forged", source="127.3.0.8", headers={"X-Forwarded-For": "203.0.113.9"})
    assert status == 200
    assert access_lines(f"{marker}-forged")[0].startswith("127.3.0.8 ")


def paced(paths: list[tuple[str, str]], rate: float) -> list[tuple[float, int, str]]:
    """Send (path, source) requests at ``rate`` a second, each on its own thread at its due
    time, so a slow answer does not hold back the next request (the rate is the test's point);
    (seconds since the start, status, Retry-After) of each, in order."""
    started = time.monotonic()

    def one(path: str, source: str) -> tuple[float, int, str]:
        status, headers = get(path, source=source)
        return time.monotonic() - started, status, headers.get("retry-after", "")

    pending = []
    with ThreadPoolExecutor(max_workers=32) as pool:
        for i, (path, source) in enumerate(paths):
            time.sleep(max(0.0, started + i / rate - time.monotonic()))
            pending.append(pool.submit(one, path, source))
        behind = time.monotonic() - started - (len(paths) - 1) / rate
    assert behind < 1.0, f"the controller fell {behind:.1f} s behind its schedule of {rate} requests a second"
    return [future.result() for future in pending]


def test_one_client_spread_over_both_nodes_is_one_client() -> None:
    """14 requests a second, half to each node: under the flood limit (10 a second) on either
    node alone, over it for the client, which the nodes only see in Redis."""
    source = "127.4.0.9"
    answers = paced([(f"/index.php?page={i % 2}", source) for i in range(14 * 4)], rate=14)
    limited = [(t, retry) for t, status, retry in answers if status == 429]
    assert limited, f"never answered 429: {Counter(s for _, s, _ in answers)}"
    assert limited[0][0] <= 2.5, f"first 429 after {limited[0][0]:.2f} s"
    assert all(retry.isdigit() for _, retry in limited)
    for name in NODES:
        blocked = [d for d in decisions(node(name), source) if d.get("verdict") == "block"]
        assert blocked, f"{name} never blocked the client: the ban is shared"
        assert {r.get("family") for d in blocked for r in d.get("reasons", [])} & {"flood"}


def test_a_distributed_flood_over_both_nodes_is_seen_whole() -> None:
    """60 sources at 0.6 requests a second each on one page: 36 a second in all, 18 on each node,
    under the endpoint's fresh limit (20 a second) on either node alone; the nodes count the
    endpoint's requests in Redis, see 36 and refuse the sources (after their 5th request)."""
    sources = [f"127.8.0.{i}" for i in range(1, 61)]  # a range no other test uses
    answers = paced([(f"/search.php?q=lamp{i}", sources[i % len(sources)]) for i in range(360)], rate=36)
    statuses = [status for _, status, _ in answers]
    late = statuses[len(sources) * 4 :]  # each source's 5th and 6th request
    assert late.count(429) >= 0.9 * len(late), Counter(late)
    for name in NODES:
        refused = [d for d in decisions(node(name), "distributed-flood") if d["client_ip"] in sources]
        assert refused, f"{name} never refused the flood: the endpoint's rate is shared"


@pytest.fixture
def one_node_down() -> Iterator[None]:
    waf1 = node("mlwaf-waf1")
    assert waf1.run("systemctl stop apache2").rc == 0
    yield
    waf1.run("systemctl start apache2")
    lb = node("mlwaf-lb")
    assert wait_until(lambda: lb.run(f"curl -s http://{FRONT}:8404/\\;csv | grep -c ',UP,'").stdout.strip() == "2")


def test_the_service_answers_with_one_node_down(one_node_down: None) -> None:
    lb = node("mlwaf-lb")
    assert wait_until(lambda: "waf1" in lb.run(f"curl -s http://{FRONT}:8404/\\;csv | grep ',DOWN,'").stdout)
    statuses = Counter(get(f"/index.php?down={i}", source=f"127.6.0.{i + 1}")[0] for i in range(20))
    assert statuses == {200: 20}


@pytest.fixture
def redis_down() -> Iterator[None]:
    redis = node("mlwaf-redis")
    assert redis.run("systemctl stop redis-server").rc == 0
    assert not redis.service("redis-server").is_running
    yield
    redis.run("systemctl start redis-server")
    assert wait_until(lambda: get("/index.php", source="127.7.1.1")[0] == 200)

    def shared_again() -> bool:  # a round of requests that no worker serves from local state
        before = redis_fallbacks()
        for i in range(8):
            get(f"/index.php?back={i}", source="127.7.1.2")
        return redis_fallbacks() == before

    assert wait_until(shared_again), "the nodes went back to Redis"


def redis_fallbacks() -> float:
    """Both nodes' mlwaf_behaviour_redis_fallbacks_total (their metrics listen on their own address)."""
    total = 0.0
    for name in NODES:
        address = node(name).ansible.get_variables()["ansible_host"]
        with urllib.request.urlopen(f"http://{address}:9464/metrics", timeout=10) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith("mlwaf_behaviour_redis_fallbacks_total "):
                    total += float(line.split()[1])
    return total


def test_redis_down_leaves_the_nodes_working_on_local_state(redis_down: None) -> None:
    since = node(NODES[0]).run("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    marker = uuid.uuid4().hex
    statuses = Counter(get(f"/index.php?noredis={marker}", source=f"127.7.0.{i + 10}")[0] for i in range(12))
    assert statuses == {200: 12}, "no request fails while Redis is away"
    status, _ = get(f"/search.php?t={marker}&q=%27%20union%20select%201--", source="127.7.0.2")
    assert status == 403, "and attacks are still blocked"
    said = "".join(
        node(name).run(f"journalctl -u mlwaf-analyzer --since '{since}' --no-pager").stdout for name in NODES
    )
    assert "Redis unreachable" in said
    assert "node-local" in said
