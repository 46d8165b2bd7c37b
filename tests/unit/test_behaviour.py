"""The behavioural layer's tracker and features."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import pytest

from mlwaf.behaviour.crowd import Crowd, fence
from mlwaf.behaviour.detect import PROFILES, severity
from mlwaf.behaviour.engine import Behaviour, event_of, is_browser
from mlwaf.behaviour.features import compute, entropy
from mlwaf.behaviour.geo import GeoError, open_geo
from mlwaf.behaviour.tracker import WAYS, Event, LocalTracker, bytes_per_client
from mlwaf.cli import score_lines
from mlwaf.config import BehaviourSettings, ModelSettings, Settings
from mlwaf.decision import Analyzer
from mlwaf.protocol import Reply
from mlwaf.request import Request, from_wire
from mlwaf.server import DecisionLog
from mlwaf.training.simulate import DEMO_SITE, Generator, SimulationError, check_target

MODEL = str(Path(__file__).resolve().parents[2] / "files" / "models" / "attack.json")

T0 = 1_800_000_000.0


def event(ts: float, path: str = "/", **extra: object) -> Event:
    return Event(ts=ts, method=str(extra.pop("method", "GET")), path=path, **extra)  # type: ignore[arg-type]


def test_history_is_per_client_ordered_and_bounded() -> None:
    tracker = LocalTracker(max_clients=64, depth=5, window=60)
    for i in range(8):
        history = tracker.record("203.0.113.1", event(T0 + i, f"/p{i}"))
    tracker.record("203.0.113.2", event(T0 + 8))
    assert history.size == 5, "the last depth requests"
    assert list(history["ts"]) == [T0 + i for i in range(3, 8)]
    assert tracker.record("203.0.113.2", event(T0 + 9)).size == 2
    assert tracker.clients(T0 + 9) == 2


def test_window_and_silence_forget() -> None:
    tracker = LocalTracker(max_clients=64, depth=10, window=30)
    for i in range(3):
        tracker.record("a", event(T0 + i))
    assert tracker.record("a", event(T0 + 20)).size == 4
    assert tracker.record("a", event(T0 + 40)).size == 2, "requests older than the window drop out"
    assert tracker.record("a", event(T0 + 100)).size == 1, "a client silent for a window starts over"
    assert tracker.clients(T0 + 200) == 0


def test_memory_is_capped_and_least_recent_clients_are_evicted() -> None:
    tracker = LocalTracker(max_clients=WAYS * 4, depth=4, window=1000)
    assert tracker.memory_bytes == tracker.capacity * bytes_per_client(4)
    for i in range(tracker.capacity * 10):
        tracker.record(f"10.0.{i // 256}.{i % 256}", event(T0 + i * 0.001))
    assert tracker.clients(T0 + 100) <= tracker.capacity
    # the newest client is always there; a bucket never holds more than its ways
    assert (
        tracker.record(
            f"10.0.{(tracker.capacity * 10 - 1) // 256}.{(tracker.capacity * 10 - 1) % 256}", event(T0 + 101)
        ).size
        == 2
    )


def test_workers_share_the_history() -> None:
    tracker = LocalTracker(max_clients=64)
    pid = os.fork()
    if pid == 0:  # a forked worker records; the parent sees it
        try:
            tracker.record("shared", event(T0, "/from-child"))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert tracker.record("shared", event(T0 + 1)).size == 2


def test_status_reports_find_their_request() -> None:
    tracker = LocalTracker(max_clients=64)
    tracker.record("c", event(T0, "/a", request_id="r1"))
    tracker.record("c", event(T0 + 1, "/b", request_id="r2"))
    assert tracker.set_status("c", "r1", 404)
    assert not tracker.set_status("c", "unknown", 404)
    assert not tracker.set_status("nobody", "r1", 404)
    history = tracker.record("c", event(T0 + 2, "/c"))
    assert list(history["status"]) == [404, 0, 0]


def test_entropy() -> None:
    assert entropy([]) == 0.0
    assert entropy([7, 7, 7]) == 0.0
    assert entropy([1, 2]) == pytest.approx(1.0)
    assert entropy([1, 2, 3, 4]) == pytest.approx(2.0)


def test_features_of_a_flood_a_browser_and_a_scanner() -> None:
    tracker = LocalTracker(max_clients=64, depth=50)
    for i in range(50):  # one URL, 20 times a second, a metronome
        flood = tracker.record("flood", event(T0 + i * 0.05, "/", user_agent="x", skeleton="/"))
    f = compute(flood, T0 + 49 * 0.05)
    assert f.rate > 19
    assert f.burst == 21  # inclusive: the last second holds 21 requests 50 ms apart
    assert f.endpoint_entropy == 0.0
    assert f.regularity > 0.99
    assert f.similarity == 1.0
    assert f.ua_consistency == 1.0

    pages = ["/", "/shop", "/shop/item?id=1", "/cart", "/login"]
    for i, page in enumerate(pages * 2):  # a person: a few pages, irregular pauses, two browsers' worth of UAs
        human = tracker.record(
            "human",
            event(
                T0 + i * 7 + (i % 3) * 5,
                page.split("?")[0],
                user_agent="ff" if i < 9 else "chrome",
                login=page == "/login",
                skeleton=page,
                country=49,
            ),
        )
    f = compute(human, T0 + 90)
    assert f.rate < 1
    assert f.endpoint_entropy == pytest.approx(entropy(list(range(5)) * 2))
    assert f.regularity < 0.8
    assert f.login_share == pytest.approx(0.2)
    assert f.ua_consistency == pytest.approx(0.9)
    assert f.geo_changes == 0.0

    for i in range(20):
        tracker.record("scanner", event(T0 + i * 0.2, f"/admin{i}.php", request_id=f"s{i}", country=i % 2 + 1))
        tracker.set_status("scanner", f"s{i}", 404 if i % 4 else 200)
    f = compute(tracker.record("scanner", event(T0 + 4.0, "/x")), T0 + 4.0)
    assert f.not_found == pytest.approx(15 / 20)
    assert f.endpoint_entropy > 4
    assert f.geo_changes == 1.0
    assert compute(flood[:0], T0).count == 0


def test_assets_browsers_and_page_gaps() -> None:
    generator = Generator(DEMO_SITE, seed=5)
    engine = Behaviour(BehaviourSettings(enabled=True))
    for record in generator.headless(6, wait=(4.0, 4.0)):
        judgement = engine.judge(from_wire(record), float(record["ts"]))  # type: ignore[arg-type]
    f = judgement.features
    assert f is not None
    assert 0.3 < f.asset_share < 0.6, "most demo pages come with their style sheet"
    assert f.browser_share == 1.0
    assert 4.0 < f.page_gap < 4.3, "pages 4 s apart (plus the assets' fetch times)"
    assert is_browser("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
    for agent in ("Mozilla/5.0 (compatible; Googlebot/2.1)", "curl/8.5.0", "python-requests/2.32", ""):
        assert not is_browser(agent), agent


def test_heuristic_scores_severities_and_minimum_history() -> None:
    assert [severity(s) for s in (0.95, 0.75, 0.4, 0.1)] == ["critical", "high", "medium", "low"]
    production = PROFILES["production"]
    tracker = LocalTracker(max_clients=64)
    for i in range(4):
        early = tracker.record("f", event(T0 + i * 0.01, "/"))
    assert production.judge(compute(early, T0 + 0.03)) == [], "no verdict before min_history requests"
    for i in range(4, 60):
        flood = tracker.record("f", event(T0 + i * 0.01, "/"))
    found = production.judge(compute(flood, T0 + 0.59))
    assert found[0].kind == "flood"
    assert found[0].status == 429
    assert found[0].score == 1.0, "every condition met twice over"
    assert "rate" in found[0].evidence
    assert PROFILES["development"].judge(compute(flood, T0 + 0.59))[0].score < found[0].score


def replay(records: list[dict], profile: str = "production") -> list[dict]:
    analyzer = Analyzer.from_settings(
        Settings(
            models={"attack": ModelSettings(path=MODEL)}, behaviour=BehaviourSettings(enabled=True, profile=profile)
        )
    )
    lines = [json.dumps(r) for r in records]
    return [out for out, _ in score_lines(analyzer, lines)]


def test_replay_blocks_attackers_and_spares_people() -> None:
    generator = Generator(DEMO_SITE[:4], seed=3)  # the home page and searches: a flood of logins is stuffing
    records = [*generator.flood(seconds=3), *generator.scanner(30), *generator.stuffing(30)]
    records += Generator(seed=4).normal(60)
    random.Random(1).shuffle(records)  # the replay sorts by ts itself
    outputs = replay(records)
    by_label: dict[str, list[dict]] = {}
    for record, out in zip(records, outputs, strict=True):
        assert out["id"] == record["id"], "output stays in input order"
        by_label.setdefault(record["label"], []).append(out)
    assert all(o["verdict"] != "block" for o in by_label["normal"])
    floods = [o for o in by_label["flood"] if o["verdict"] == "block"]
    assert len(floods) > 0.9 * len(by_label["flood"])
    assert {o["status"] for o in floods} == {429}
    assert all(o["retry_after"] >= 1 for o in floods)
    assert any(r["family"] == "flood" and r["model"] == "behaviour" for o in floods for r in o["reasons"])
    for label, family in (("scanner", "scanner"), ("stuffing", "credential-stuffing")):
        # the attack model may block a probe too (``/.htaccess``); the ban is the behaviour layer's
        banned = [o for o in by_label[label] if any(r["model"] == "behaviour" for r in o["reasons"])]
        assert len(banned) > 15, label
        assert all(o["verdict"] == "block" and o["status"] == 403 for o in banned), label
        assert all(r["family"] == family for o in banned for r in o["reasons"] if r["model"] == "behaviour")
    assert all(o["verdict"] != "block" for o in replay(records, "development") if o["id"].startswith("flood"))


def test_bans_expire() -> None:
    analyzer = Analyzer.from_settings(
        Settings(models={"attack": ModelSettings(path=MODEL)}, behaviour=BehaviourSettings(enabled=True))
    )
    flood = [Request("GET", "/", client_ip="192.0.2.9") for _ in range(40)]
    verdicts = [analyzer.analyze(r, now=T0 + i * 0.01).verdict for i, r in enumerate(flood)]
    assert verdicts[-1] == "block"
    banned = analyzer.analyze(Request("GET", "/other", client_ip="192.0.2.9"), now=T0 + 30)
    assert (banned.verdict, banned.reasons[0].detail, banned.status) == ("block", "banned", 429)
    assert analyzer.analyze(Request("GET", "/", client_ip="192.0.2.9"), now=T0 + 61).verdict == "allow"
    assert analyzer.analyze(Request("GET", "/", client_ip="192.0.2.10"), now=T0 + 1).verdict == "allow"


def test_witnessed_requests_count_without_a_verdict() -> None:
    """Analyzer.witness (the requests the bridge gave up on): the behavioural layer counts a
    client's flood and bans it, but not an exempt client's."""
    analyzer = Analyzer.from_settings(
        Settings(models={"attack": ModelSettings(path=MODEL)}, behaviour=BehaviourSettings(enabled=True))
    )
    for who in ("192.0.2.11", "127.0.0.1"):  # loopback is exempt by default
        for i in range(20):
            analyzer.witness(Request("GET", "/", client_ip=who), T0 + i * 0.01)
    banned = analyzer.analyze(Request("GET", "/", client_ip="192.0.2.11"), now=T0 + 1)
    assert (banned.verdict, banned.reasons[0].detail, banned.status) == ("block", "banned", 429)
    assert analyzer.analyze(Request("GET", "/", client_ip="127.0.0.1"), now=T0 + 1).verdict == "allow"


def test_simulated_live_traffic_only_goes_to_loopback() -> None:
    with pytest.raises(SimulationError, match="loopback"):
        check_target("http://192.0.2.1/")
    with pytest.raises(SimulationError, match="not an http"):
        check_target("ftp://127.0.0.1/")
    assert check_target("http://127.0.0.1:8080/").port == 8080


def test_crowd_learns_an_endpoints_baseline_and_flags_a_surge() -> None:
    crowd = Crowd(span=5, min_rate=20.0)
    quiet = [crowd.add(7, T0 + second + k / 10) for second in range(120) for k in range(10)]  # 10 req/s for 2 min
    assert not any(s.alarm for s in quiet[50:])
    assert 9 < crowd.mean[7] < 11
    surge = [crowd.add(7, T0 + 120 + k / 200) for k in range(400)]  # then 200 req/s
    assert surge[-1].alarm
    assert surge[-1].rate > surge[-1].limit >= 20
    assert not crowd.add(8, T0 + 121).alarm, "other endpoints are not affected"
    later = crowd.add(7, T0 + 200)
    assert not later.alarm
    assert crowd.mean[7] < 11, "seconds under attack are not learned"


def test_bursty_endpoints_are_judged_by_their_quartiles_too() -> None:
    """Ten requests one second, none the next: mean 5, standard deviation 5, so the z-score
    alone would flag 24 req/s (over 5 + 3 * 5 = 20); Tukey's fence (Q3 + 1.5 IQR, about 27)
    does not. A real surge is over both."""
    crowd = Crowd(span=5, min_rate=10.0)
    for second in range(600):
        for k in range(10 if second % 2 == 0 else 0):
            crowd.add(3, T0 + second + k / 10)
    assert 4 < crowd.mean[3] < 6
    assert 24 < crowd.limit[3] < 30
    assert fence(crowd.histogram[3], 1.5) == pytest.approx(crowd.limit[3])
    busy = [crowd.add(3, T0 + 600 + k / 24) for k in range(24 * 5)]  # 24 req/s
    assert not busy[-1].alarm
    surge = [crowd.add(3, T0 + 606 + k / 60) for k in range(60 * 5)]  # 60 req/s
    assert surge[-1].alarm


def test_a_distributed_flood_is_caught_by_its_endpoint() -> None:
    generator = Generator(DEMO_SITE[:4], seed=5)
    records = [*generator.distributed(seconds=20, sources=50, rate=3), *Generator(seed=6).normal(80)]
    outputs = replay(records)
    sources = {r["client_ip"] for r, o in zip(records, outputs, strict=True) if o["verdict"] == "block"}
    flooders = {r["client_ip"] for r in records if r["label"] == "distributed"}
    assert sources <= flooders, "no one else"
    assert len(sources) >= 45
    first = min(r["ts"] for r, o in zip(records, outputs, strict=True) if o["verdict"] == "block")
    assert first - min(r["ts"] for r in records if r["label"] == "distributed") < 10


def test_clients_can_be_named_by_a_salted_hash(tmp_path: Path) -> None:
    engine = Behaviour(BehaviourSettings(enabled=True, hash_clients=True, max_clients=64))
    named = engine.shown("198.51.100.7")
    assert named.startswith("h:")
    assert "198.51.100.7" not in named
    assert engine.shown("198.51.100.7") == named
    assert Behaviour(BehaviourSettings(enabled=True, hash_clients=True, max_clients=64)).shown("198.51.100.7") != named
    log = DecisionLog(str(tmp_path / "d.jsonl"), log_allowed=True, name_client=engine.shown)
    log.write(Reply(verdict="allow"), Request("GET", "/", client_ip="198.51.100.7"))
    assert json.loads((tmp_path / "d.jsonl").read_text())["client_ip"] == named


def test_the_crowd_baseline_survives_a_restart(tmp_path: Path) -> None:
    crowd = Crowd()
    for second in range(100):
        crowd.add(3, T0 + second)
        crowd.add(3, T0 + second + 0.5)
    crowd.save(tmp_path / "baseline.npz")
    again = Crowd()
    assert again.load(tmp_path / "baseline.npz")
    assert again.mean[3] == pytest.approx(crowd.mean[3])
    assert again.mean[3] > 1.0
    assert not Crowd().load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not numpy")
    assert not Crowd().load(tmp_path / "bad.npz")


DEBIAN_GEOIP = Path("/usr/share/GeoIP/GeoIP.dat")


@pytest.mark.skipif(not DEBIAN_GEOIP.is_file(), reason="Debian's geoip-database is not installed (make host-deps)")
def test_countries_from_debians_geoip_database() -> None:
    country = open_geo(DEBIAN_GEOIP)
    us, gb, de = country("8.8.8.8"), country("81.2.69.160"), country("193.99.144.80")
    assert len({us, gb, de}) == 3
    assert 0 not in {us, gb, de}
    assert country("::ffff:8.8.8.8") == us
    for private in ("10.1.2.3", "192.168.0.1", "127.0.0.1", "::1", "fe80::1", "not an address", ""):
        assert country(private) == 0, private
    engine = Behaviour(BehaviourSettings(enabled=True, geoip_database=str(DEBIAN_GEOIP)))
    engine.judge(Request("GET", "/", client_ip="81.2.69.160"), T0)
    history = engine.tracker.record("81.2.69.160", event(T0 + 1))
    assert list(history["country"]) == [gb, 0], "the daemon records each request's country"


def test_bad_geolocation_databases_say_why(tmp_path: Path) -> None:
    with pytest.raises(GeoError, match="no geolocation database"):
        open_geo(tmp_path / "missing.dat")
    bad = tmp_path / "GeoLite2-Country.mmdb"
    bad.write_bytes(b"not a database")
    with pytest.raises(GeoError, match="cannot read the MaxMind database"):
        open_geo(bad)
    other = tmp_path / "GeoIPCity.dat"
    other.write_bytes(b"\x00" * 64 + b"\xff\xff\xff\x02")
    with pytest.raises(GeoError, match="not a legacy GeoIP country database"):
        open_geo(other)


def test_a_post_carrying_a_password_is_a_login_whatever_its_path() -> None:
    login = re.compile(BehaviourSettings().login_paths)

    def event(method: str, target: str, body: str = "") -> bool:
        headers = {"content-type": "application/x-www-form-urlencoded"}
        return event_of(
            from_wire({"method": method, "path": target, "headers": headers, "body": body}), 0.0, login
        ).login

    assert event("POST", "/konto/anmelden", "benutzer=anna&login%5Bpass%5D=x"), "a password field, not the path"
    assert event("POST", "/compte", "email=a%40b.c&user_password=x")
    assert event("GET", "/signin"), "the path rule still holds"
    assert not event("POST", "/profil", "passport=X123&compass=north"), "pass inside a longer word is not a password"
    assert not event("GET", "/konto", ""), "a GET is never a login by its fields"
    assert not event("POST", "/search", "q=password"), "the value does not count, the name does"
