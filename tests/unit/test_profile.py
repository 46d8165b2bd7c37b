"""The application profile: shapes, learning, every kind of deviation, persistence, mlwaf learn."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from mlwaf.cli import main
from mlwaf.learn import learn
from mlwaf.profile import SPEC, Observation, Profile, ProfileError, char_classes, endpoint_of, novelty, observe
from mlwaf.request import Arg, Request
from mlwaf.training.datasets import HttpRequest
from mlwaf.training.tamper import MUTATIONS, tamper


def shop_request(rng: random.Random) -> Request:
    """A request of a small shop: a product page with numeric ids, a search, a login form."""
    kind = rng.randrange(3)
    if kind == 0:
        args = [Arg("query", "id", str(rng.randint(1, 999))), Arg("query", "view", rng.choice(("grid", "list")))]
        return Request("GET", f"/shop/item/{rng.randint(1, 99999)}", args=args)
    if kind == 1:
        words = " ".join(rng.choice(("red", "Shoes", "tea", "mug", "Größe", "café")) for _ in range(rng.randint(1, 4)))
        return Request(
            "GET", "/shop/search", args=[Arg("query", "q", words), Arg("cookie", "sid", f"{rng.getrandbits(128):032x}")]
        )
    user = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 12)))
    return Request("POST", "/login", args=[Arg("body", "user", user), Arg("body", "password", user[::-1] + "1!")])


@pytest.fixture(scope="module")
def profile() -> Profile:
    rng = random.Random(1)
    return Profile.learn(observe(shop_request(rng)) for _ in range(3000))


def kinds(profile: Profile, request: Request) -> dict[str, float]:
    return {d.kind: d.score for d in profile.score(observe(request))}


def test_char_classes_and_endpoints() -> None:
    assert char_classes("Abc12") == "9Aa"
    assert char_classes("a b<") == " <a"
    assert char_classes("ñ\t\x01€") == "couw"
    assert char_classes("") == ""
    assert endpoint_of("/user/42/orders/0123456789abcdef0123") == "/user/{id}/orders/{id}"
    assert endpoint_of("/static/v2/app.js") == "/static/v2/app.js"


def test_novelty_grows_with_evidence_and_shrinks_with_variety() -> None:
    assert novelty(0, 0) == 0.0
    assert novelty(10, 0) == pytest.approx(0.5)
    assert novelty(1000, 0) > 0.99
    assert novelty(1000, 500) < 0.5
    assert novelty(100, 0) > novelty(10, 0)


def test_normal_traffic_has_no_deviation(profile: Profile) -> None:
    rng = random.Random(99)  # other draws than the learned ones
    flagged = [r for r in (shop_request(rng) for _ in range(2000)) if profile.score(observe(r))]
    assert flagged == []


@pytest.mark.parametrize(
    ("request_", "kind"),
    [
        (Request("GET", "/shop/item/7", args=[Arg("query", "id", "12a"), Arg("query", "view", "grid")]), "charset"),
        (Request("GET", "/shop/item/7", args=[Arg("query", "id", "1" * 40), Arg("query", "view", "grid")]), "length"),
        (Request("GET", "/shop/item/7", args=[Arg("query", "id", "5"), Arg("query", "view", "tiles")]), "value"),
        (Request("GET", "/shop/item/7", args=[Arg("query", "id", "5")]), "missing"),
        (Request("GET", "/shop/item/7", args=[Arg("query", "id", "5"), Arg("query", "veiw", "grid")]), "param"),
        (Request("DELETE", "/shop/search", args=[Arg("query", "q", "tea")]), "method"),
        (Request("GET", "/shop/search.bak"), "endpoint"),
        (Request("GET", "/shop/search", args=[Arg("query", "q", "tea"), Arg("cookie", "sid", "x;y")]), "charset"),
    ],
)
def test_each_kind_of_deviation(profile: Profile, request_: Request, kind: str) -> None:
    found = kinds(profile, request_)
    assert found.get(kind, 0) > 0.95, found
    assert kind not in {d.kind for d in profile.score(observe(request_), ignore=[kind])}


def test_free_text_and_unknown_cookies_are_not_flagged(profile: Profile) -> None:
    # a new search phrase is no deviation; a cookie the site never set is not judged
    request = Request("GET", "/shop/search", args=[Arg("query", "q", "blue tea mug"), Arg("cookie", "_ga", "GA1.2.3")])
    assert profile.score(observe(request)) == []


def test_unknown_folder_deeper_than_the_site_is_judged_by_its_parent(profile: Profile) -> None:
    found = profile.score(observe(Request("GET", "/admin/config.php")))
    assert found[0].kind == "endpoint"
    assert "never requested in /" in found[0].detail


def test_save_load_roundtrip_and_spec_check(profile: Profile, tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    profile.save(path)
    again = Profile.load(path)
    probe = Request("GET", "/shop/item/7", args=[Arg("query", "id", "12a")])
    assert again.score(observe(probe)) == profile.score(observe(probe))
    raw = json.loads(path.read_text())
    raw["spec"] = "profile-v0"
    path.write_text(json.dumps(raw))
    with pytest.raises(ProfileError, match="does not match"):
        Profile.load(path)
    path.write_text(json.dumps({"spec": SPEC, "requests": 1}))
    with pytest.raises(ProfileError, match="malformed"):
        Profile.load(path)
    path.write_text("{")
    with pytest.raises(ProfileError, match="not JSON"):
        Profile.load(path)


def test_observations_keep_shapes_not_values() -> None:
    observation = observe(Request("POST", "/login", args=[Arg("body", "password", "hunter2")]))
    text = json.dumps(observation.as_dict())
    assert "hunter2" not in text
    assert Observation.from_dict(json.loads(text)) == observation
    for bad in ({"m": "GET"}, {"m": "GET", "e": "/", "a": [["arg", "x", "long", "a", ""]]}, [], {"m": 1, "e": "/"}):
        with pytest.raises(ProfileError):
            Observation.from_dict(bad)


def test_learn_from_every_input_kind(tmp_path: Path) -> None:
    rng = random.Random(3)
    requests = [shop_request(rng) for _ in range(50)]
    obs = tmp_path / "observations.jsonl.gz"
    with gzip.open(obs, "wt") as handle:
        for request in requests:
            handle.write(json.dumps(observe(request).as_dict()) + "\n")
        handle.write("not json\n")
    wire = tmp_path / "requests.jsonl"
    wire.write_text('{"method": "GET", "path": "/shop/search?q=tea"}\n{"path": 5}\n\n')
    access = tmp_path / "access.log"
    access.write_text(
        '203.0.113.5 - - [21/Nov/2026:10:00:00 +0000] "GET /news?page=2 HTTP/1.1" 200 512 "-" "curl"\n'
        '203.0.113.5 - - [21/Nov/2026:10:00:01 +0000] "GET /wp-login.php HTTP/1.1" 404 10 "-" "curl"\n'
        "garbage\n"
    )
    profile, tally = learn([(obs, "observations"), (wire, "requests"), (access, "access-log")])
    assert profile.requests == 52
    assert (tally.learned, tally.skipped, tally.ignored) == (52, 3, 1)
    assert "/news" in profile.endpoints
    assert "page" in profile.endpoints["/news"].params
    assert "/wp-login.php" not in profile.endpoints
    (tmp_path / "empty").write_text("")
    with pytest.raises(ProfileError, match="nothing to learn"):
        learn([(tmp_path / "empty", "requests")])
    with pytest.raises(ProfileError, match="cannot read"):
        learn([(tmp_path / "absent.log", "access-log")])


def test_mlwaf_learn_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    access = tmp_path / "access.log"
    access.write_text('1.2.3.4 - - [x] "GET /a?b=1 HTTP/1.1" 200 5\n' * 20)
    out = tmp_path / "profile.json"
    assert main(["learn", "--access-log", str(access), "-o", str(out)]) == 0
    assert "20 requests learned, 1 endpoints, 1 parameters" in capsys.readouterr().out
    assert Profile.load(out).requests == 20
    assert main(["learn", "-o", str(out)]) == 2
    assert "give at least one input" in capsys.readouterr().err


def test_every_mutation_changes_the_request() -> None:
    rng = random.Random(5)
    request = HttpRequest("POST", "/shop/buy.jsp", (("id", "12"),), (("name", "Ann Lee"), ("qty", "3")))
    for kind, mutate in MUTATIONS.items():
        changed = mutate(request, rng)
        assert changed is not None, kind
        assert changed != request, kind
    bare = HttpRequest("GET", "/shop/")
    for _ in range(20):
        kind, changed = tamper(bare, rng)
        assert kind in ("unknown-parameter", "hidden-file", "other-method")
        assert changed != bare


def test_a_path_below_a_known_file_is_an_unknown_endpoint(profile: Profile) -> None:
    found = profile.score(observe(Request("GET", "/shop/search/extra")))
    assert found[0].kind == "endpoint"
    assert found[0].score > 0.95
    assert "goes on below /shop/search" in found[0].detail
    assert Profile().score(observe(Request("GET", "/anything"))) == [], "an empty profile judges nothing"
