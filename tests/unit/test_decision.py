"""The decision engine: thresholds, modes, allowlists, reasons."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from mlwaf.config import ConfigError, ModelSettings, ParamAllow, ProfileSettings, Settings
from mlwaf.decision import Analyzer, summary
from mlwaf.profile import Profile, observe
from mlwaf.request import Arg, Request

MODEL = str(Path(__file__).resolve().parents[2] / "files" / "models" / "attack.json")
ATTACK = "1' union select password from users--"


def analyzer(**overrides) -> Analyzer:
    settings = Settings(models={"attack": ModelSettings(path=MODEL)}, **overrides)
    return Analyzer.from_settings(settings)


def request(*args: Arg, path: str = "/search.php", client_ip: str = "198.51.100.9") -> Request:
    return Request(method="GET", path=path, args=list(args), client_ip=client_ip)


@pytest.fixture(scope="module")
def default() -> Analyzer:
    return analyzer()


def test_attack_is_blocked_with_reasons(default: Analyzer) -> None:
    reply = default.analyze(request(Arg("query", "page", "2"), Arg("query", "q", ATTACK)))
    assert reply.verdict == "block"
    assert reply.scores["attack"] >= default.thresholds["attack"].block
    top = reply.reasons[0]
    assert (top.model, top.family, top.source, top.name) == ("attack", "sqli", "query", "q")
    assert all(r.name != "page" for r in reply.reasons)
    assert reply.ms > 0
    assert '"' not in reply.summary
    assert "sqli in query:q" in reply.summary


def test_benign_request_is_allowed(default: Analyzer) -> None:
    reply = default.analyze(request(Arg("query", "q", "coffee grinder"), Arg("cookie", "session", "a1b2c3")))
    assert reply.verdict == "allow"
    assert reply.reasons == []
    assert reply.scores["attack"] < default.thresholds["attack"].log


def test_no_inputs_scores_zero(default: Analyzer) -> None:
    reply = default.analyze(request(path="/"))
    assert reply.verdict == "allow"
    assert reply.scores == {"attack": 0.0}


def test_the_path_is_scored_too(default: Analyzer) -> None:
    assert default.analyze(request(path="/shop/item.php")).verdict == "allow"
    reply = default.analyze(request(path="/index.php/<script>alert(document.cookie)</script>"))
    assert reply.verdict == "block"
    assert (reply.reasons[0].source, reply.reasons[0].family) == ("path", "xss")


def test_detection_only_logs_instead_of_blocking() -> None:
    reply = analyzer(mode="detection-only").analyze(request(Arg("query", "q", ATTACK)))
    assert reply.verdict == "log"
    assert reply.reasons


def test_configured_thresholds_override_the_model(default: Analyzer) -> None:
    candidates = ["<b>hello</b> and 1=1", "a=1 or b", "1;2", "x' y", "(1)", "<p>", "../a", "a|b"]
    scores = {v: default.analyze(request(Arg("query", "q", v), path="/")).scores["attack"] for v in candidates}
    value, score = next((v, s) for v, s in scores.items() if 0.05 < s < 0.999)
    above = Analyzer.from_settings(Settings(models={"attack": ModelSettings(MODEL, block_threshold=(1 + score) / 2)}))
    below = Analyzer.from_settings(Settings(models={"attack": ModelSettings(MODEL, block_threshold=score / 2)}))
    assert above.analyze(request(Arg("query", "q", value), path="/")).verdict in ("allow", "log")
    assert below.analyze(request(Arg("query", "q", value), path="/")).verdict == "block"
    assert above.thresholds["attack"].block == (1 + score) / 2


def test_allowlisted_network_and_path_skip_the_models() -> None:
    subject = analyzer(allow_networks=(ipaddress.ip_network("10.0.0.0/8"),), allow_paths=("/healthz",))
    reply = subject.analyze(request(Arg("query", "q", ATTACK), client_ip="10.1.2.3"))
    assert (reply.verdict, reply.note, reply.scores) == ("allow", "client network allowlisted", {})
    reply = subject.analyze(request(Arg("query", "q", ATTACK), path="/healthz/deep"))
    assert reply.note == "path allowlisted"
    assert subject.analyze(request(Arg("query", "q", ATTACK), client_ip="not-an-ip")).verdict == "block"


def test_allowlisted_parameter_is_not_scored() -> None:
    subject = analyzer(allow_params=(ParamAllow("sql", "/admin/"),))
    assert subject.analyze(request(Arg("body", "sql", ATTACK), path="/admin/query")).verdict == "allow"
    assert subject.analyze(request(Arg("body", "sql", ATTACK), path="/public")).verdict == "block"


RICH_TEXT = '<p><span style="font-weight:bold">Bold</span> and <font color="red">red</font></p>'
XSS = "<p>Nice post</p><img src=x onerror=alert(1)>"


def test_a_suppressed_family_leaves_the_others_scored() -> None:
    """Site tuning: xss not scored on /post/{id}'s comment; the same field's SQL injection,
    the other fields' XSS and other endpoints' XSS are still refused."""
    subject = analyzer(allow_params=(ParamAllow("comment", endpoint="/post/{id}", families=("xss",)),))
    assert default_verdict(RICH_TEXT) == "block"  # what the tuning is for
    tuned = subject.analyze(request(Arg("body", "comment", RICH_TEXT), path="/post/42"))
    assert tuned.verdict == "allow"
    assert tuned.scores["attack"] < 0.1
    sqli = subject.analyze(request(Arg("body", "comment", "<p>Nice</p>" + ATTACK), path="/post/42"))
    assert (sqli.verdict, sqli.reasons[0].family) == ("block", "sqli")
    assert subject.analyze(request(Arg("body", "name", XSS), path="/post/42")).verdict == "block"
    assert subject.analyze(request(Arg("body", "comment", XSS), path="/post/42/edit")).verdict == "block"
    # unwrapped from the field (JSON inside it) counts as the field; its name does not
    nested = subject.analyze(
        request(Arg("body", "comment", '{"html": "' + RICH_TEXT.replace('"', "'") + '"}'), path="/post/7")
    )
    assert nested.verdict == "allow"
    elements = analyzer(allow_params=(ParamAllow("items.array_*.html", endpoint="/post/{id}", families=("xss",)),))
    body = Arg("json", "items.array_3.html", RICH_TEXT)
    assert elements.analyze(request(body, path="/post/7")).verdict == "allow", "every element alike"


def default_verdict(value: str) -> str:
    return analyzer().analyze(request(Arg("body", "comment", value), path="/post/42")).verdict


def test_a_suppressed_family_no_model_has_is_refused() -> None:
    with pytest.raises(ConfigError, match="no model has the famil"):
        analyzer(allow_params=(ParamAllow("comment", families=("xxs",)),))


def test_reasons_are_capped() -> None:
    subject = analyzer(max_reasons=2)
    args = [Arg("query", f"p{i}", ATTACK) for i in range(5)]
    assert len(subject.analyze(request(*args)).reasons) == 2


def test_summary_is_quote_free(default: Analyzer) -> None:
    reply = default.analyze(request(Arg("query", 'x"y\\z', ATTACK)))
    text = summary(reply)
    assert '"' not in text
    assert "\\" not in text


@pytest.fixture(scope="module")
def site_profile(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A profile of a tiny site: /cart takes a numeric qty and a product name, by POST."""
    learned = [
        observe(
            Request(
                "POST",
                "/cart",
                args=[
                    Arg("body", "qty", str(n % 9 + 1)),
                    Arg("body", "item", ("Green tea", "Earl grey tea", "Coffee beans")[n % 3]),
                ],
            )
        )
        for n in range(500)
    ]
    path = tmp_path_factory.mktemp("profile") / "profile.json"
    Profile.learn(learned).save(path)
    return str(path)


def cart(qty: str, method: str = "POST") -> Request:
    return Request(method, "/cart", args=[Arg("body", "qty", qty), Arg("body", "item", "Green tea")])


def test_profile_is_a_third_verdict_source(site_profile: str) -> None:
    engine = analyzer(profile=ProfileSettings(path=site_profile))
    assert engine.analyze(cart("4")).verdict == "allow"
    assert engine.analyze(cart("4")).scores["profile"] == 0.0
    reply = engine.analyze(cart("4x"))
    assert reply.verdict == "block"
    assert reply.scores["attack"] < engine.thresholds["attack"].log, "the attack model has nothing against it"
    top = reply.reasons[0]
    assert (top.model, top.family, top.source, top.name) == ("profile", "charset", "arg", "qty")
    assert "x" not in top.detail  # classes, not the value: "a" for lower-case letters
    assert top.as_dict()["detail"] == "characters never seen here: a"
    assert "charset in arg:qty" in reply.summary


def test_profile_modes_thresholds_and_allowlists(site_profile: str) -> None:
    logging = analyzer(profile=ProfileSettings(path=site_profile, mode="detection-only"))
    assert logging.analyze(cart("4x")).verdict == "log"
    assert logging.analyze(cart("1' union select password from users--")).verdict == "block", "models still block"
    ignoring = analyzer(profile=ProfileSettings(path=site_profile, ignore=("charset", "value", "method")))
    assert ignoring.analyze(cart("4x")).verdict == "allow"
    assert ignoring.analyze(cart("4", method="PUT")).verdict == "allow"
    strict = analyzer(profile=ProfileSettings(path=site_profile))
    assert strict.analyze(cart("4", method="PUT")).reasons[0].family == "method"
    allowed = analyzer(profile=ProfileSettings(path=site_profile), allow_params=(ParamAllow("qty", "/cart"),))
    reply = allowed.analyze(cart("4x"))
    assert reply.verdict == "block", "an allowlisted parameter that was always sent counts as missing"
    assert reply.reasons[0].family == "missing"
    assert analyzer().analyze(cart("4x")).scores.keys() == {"attack"}, "no profile configured, no profile score"


def test_selected_headers_are_scored(default: Analyzer) -> None:
    browser = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    plain = Request(method="GET", path="/shop/item.php", headers={"user-agent": browser}, client_ip="198.51.100.9")
    assert default.analyze(plain).verdict == "allow"
    shellshock = Request(method="GET", path="/", headers={"user-agent": "() { :; }; /bin/cat /etc/passwd"})
    reply = default.analyze(shellshock)
    assert reply.verdict == "block"
    assert (reply.reasons[0].source, reply.reasons[0].name) == ("header", "user-agent")
    referer = {"referer": f"https://shop.example/search?page=2&q={ATTACK.replace(' ', '+')}#top"}
    reply = default.analyze(Request(method="GET", path="/", headers=referer))
    assert reply.verdict == "block"
    assert (reply.reasons[0].source, reply.reasons[0].name) == ("header", "referer>q")
    # headers not selected are not read
    assert analyzer(score_headers=()).analyze(shellshock).verdict == "allow"
