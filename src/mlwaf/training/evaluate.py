"""Side-by-side evaluation of detectors on the untouched test split.

Every detector answers the same question for each labelled test item, a
value or a whole request ("would you block this?"), so their rates are
directly comparable:

* ``mlwaf``: a trained model at its calibrated block threshold;
* ``libinjection``: libinjection's SQL injection and XSS detectors (the
  engine behind ModSecurity's ``@detectSQLi`` / ``@detectXSS``), either one
  firing counts as a block. It has no notion of command injection or path
  traversal, which the table shows as such rather than hiding;
* ``appliance_detector``: a running appliance over HTTP (a 403 is a block),
  which ``scripts/evaluate-appliance.py`` uses for CRS PL1/PL2 and ML.

Rates are per value (each labelled test value alone) and per request (a
request is blocked when any of its values is): TPR per attack family, FPR on
benign values or requests, and the balanced accuracy (TPR + TNR) / 2 of each
family against all benign ones, overall and per source. The benign requests
are CSIC 2010's held-back normal requests; the attack requests are copies of
them with one argument's value replaced by a test attack.

``inference_ms`` times the model the way the analyzer runs it (no score
cache), on one CPU, in batches of 32 requests.
"""

from __future__ import annotations

import os
import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from pathlib import Path

import numpy as np

from mlwaf.inputs import header_inputs, model_inputs, unwrap
from mlwaf.learn import Tally, observations
from mlwaf.model import AttackModel
from mlwaf.profile import Profile, observe
from mlwaf.request import Limits, from_wire
from mlwaf.training.datasets import (
    FAMILIES,
    HttpRequest,
    Sample,
    csic_split,
    real_agents,
    training_and_test,
    unseen_agents,
)
from mlwaf.training.placement import placed
from mlwaf.training.tamper import tamper
from mlwaf.training.traffic import inputs_of, multilingual_values, real_requests, role, source_label


@dataclass(frozen=True)
class LabelledRequest:
    """A whole request, labelled: benign, or carrying one attack in one of its values."""

    request: HttpRequest
    family: str
    source: str


@dataclass(frozen=True)
class ScoredRequest:
    """A request already read as the analyzer reads it (``mlwaf.inputs``): the texts it scores."""

    values: tuple[str, ...]
    family: str
    source: str
    record: dict = field(default_factory=dict, compare=False)  # the request as sent, for appliance replays


Item = Sample | LabelledRequest | ScoredRequest
# A detector: one block decision per labelled item (a value or a whole request).
Detector = Callable[[Sequence[Item]], list[bool]]
# What most detectors really judge: values; a request is blocked when any of its values is.
ValueDetector = Callable[[Sequence[str]], list[bool]]


def per_value(detect: ValueDetector) -> Detector:
    """A detector of items from a detector of values."""

    def detect_items(items: Sequence[Item]) -> list[bool]:
        texts: list[str] = []
        owner: list[int] = []
        for index, item in enumerate(items):
            if isinstance(item, LabelledRequest):  # read as the analyzer reads it
                request = item.request.as_request()
                values = tuple(a.value for a in model_inputs(request, request.args, Limits()))
            else:
                values = item.values if isinstance(item, ScoredRequest) else (item.text,)
            texts += values
            owner += [index] * len(values)
        decisions = detect(texts)
        if len(decisions) != len(texts):
            raise EvaluationError(f"a detector answered {len(decisions)} of {len(texts)} values")
        hits = np.bincount(np.asarray(owner, dtype=np.intp), weights=np.asarray(decisions, float), minlength=len(items))
        return (hits > 0).tolist()

    return detect_items


class EvaluationError(RuntimeError):
    """A detector that cannot run here (missing library, unreadable model)."""


def _blocks(model: AttackModel) -> ValueDetector:
    """The model's block decision on each value, at its calibrated threshold."""
    threshold = model.thresholds.get("block", 0.5)

    def detect(values: Sequence[str]) -> list[bool]:
        scores, _ = model.score(list(values))
        return (scores >= threshold).tolist()

    return detect


def model_detector(model: AttackModel) -> Detector:
    return per_value(_blocks(model))


def agent_detector(model: AttackModel) -> Detector:
    """The model on values sent as a User-Agent, read the way the analyzer reads that header
    (``mlwaf.inputs.header_inputs``: a plain browser or tool string is not scored)."""
    blocks = _blocks(model)

    def detect(values: Sequence[str]) -> list[bool]:
        scored = [i for i, v in enumerate(values) if any(header_inputs({"user-agent": v}))]
        blocked = [False] * len(values)
        for i, hit in zip(scored, blocks([values[i] for i in scored]), strict=True):
            blocked[i] = hit
        return blocked

    return per_value(detect)


def agent_items(data: Path, test: Sequence[Sample], seed: int) -> list[Sample]:
    """User-Agent headers: real visitors' (``real_agents``), generated ones the training side
    never drew (``unseen_agents``), and the test attacks sent as a User-Agent."""
    return [
        *real_agents(data),
        *unseen_agents(seed),
        *(s for s in test if s.family != "benign"),
    ]


def libinjection_detector() -> Detector:
    try:
        import libinjection  # type: ignore[import-not-found]  # noqa: PLC0415 - optional
    except ImportError:
        raise EvaluationError(
            "libinjection is not installed: pip install libinjection-python (part of the dev tools)"
        ) from None

    def detect(values: Sequence[str]) -> list[bool]:
        return [bool(libinjection.is_sql_injection(v)["is_sqli"] or libinjection.is_xss(v)["is_xss"]) for v in values]

    return per_value(detect)


@dataclass
class Cell:
    n: int = 0
    blocked: int = 0

    @property
    def rate(self) -> float:
        return self.blocked / self.n if self.n else float("nan")


@dataclass
class Result:
    """Blocked counts per detector, per (source, family) and per family."""

    detectors: list[str]
    by_source: dict[tuple[str, str], dict[str, Cell]] = field(default_factory=dict)
    by_family: dict[str, dict[str, Cell]] = field(default_factory=dict)

    def balanced_accuracy(self, detector: str, family: str) -> float:
        benign = self.by_family.get("benign", {}).get(detector, Cell())
        attack = self.by_family.get(family, {}).get(detector, Cell())
        return (attack.rate + (1 - benign.rate)) / 2


def attack_requests(benign: list[HttpRequest], attacks: list[Sample], seed: int) -> list[LabelledRequest]:
    """Each attack planted in a copy of a benign request, as the value of one of its
    query or form arguments (a new ``q`` argument where it has none)."""
    rng = random.Random(seed)
    out = []
    for sample in attacks:
        request = rng.choice(benign)
        slots = [("query", i) for i in range(len(request.query))] + [("form", i) for i in range(len(request.form))]
        if not slots:
            request = replace(request, query=(("q", sample.text),))
        else:
            part, index = rng.choice(slots)
            args = list(getattr(request, part))
            args[index] = (args[index][0], sample.text)
            request = replace(request, **{part: tuple(args)})
        out.append(LabelledRequest(request, sample.family, sample.source))
    return out


def test_items(data: Path, seed: int) -> tuple[list[Sample], list[LabelledRequest], list[HttpRequest]]:
    """The untouched test values, the test requests (CSIC's held-back normal requests, and
    copies carrying each real test attack), and the held-back benign requests alone."""
    _, values = training_and_test(data, seed)
    benign = csic_split(data)[1]
    attacks = [s for s in values if s.family != "benign" and not s.source.startswith("generated")]
    requests = [LabelledRequest(r, "benign", "csic2010-heldback") for r in benign]
    return values, requests + attack_requests(benign, attacks, seed), benign


def real_items(data: Path, side: str = "test") -> list[ScoredRequest]:
    """The real-traffic requests of one side (``mlwaf.training.traffic.role``), each as its scored
    inputs, and the multilingual values of that side's languages, each sent as a search box."""
    out = [
        ScoredRequest(tuple(a.value for a in inputs_of(real)), "benign", source_label(real), real.record)
        for real in real_requests(data)
        if role(real.source) == side
    ]
    for text, source in multilingual_values(data):
        if role(source) == side:
            values = tuple(a.value for a in unwrap("query", "q", text))
            record = {"method": "GET", "path": "/search.php?q=" + urllib.parse.quote_plus(text), "headers": {}}
            out.append(ScoredRequest(values, "benign", "multilingual-values", record))
    return out


def placement_items(attacks: Sequence[Sample], per_family: int, seed: int) -> list[ScoredRequest]:
    """Each of up to ``per_family`` test attacks per family placed in every part of a request
    (``mlwaf.training.placement``), read as the analyzer reads it; the source names the part."""
    rng = random.Random(seed)
    chosen: list[Sample] = []
    for family in FAMILIES[1:]:
        members = [s for s in attacks if s.family == family]
        chosen += rng.sample(members, per_family) if len(members) > per_family else members
    out = []
    for sample in chosen:
        for part, record in placed(sample.text).items():
            request = from_wire(record)
            values = tuple(a.value for a in model_inputs(request, request.args, Limits()))
            out.append(ScoredRequest(values, sample.family, f"part:{part}"))
    return out


def part_rates(result: Result, detector: str) -> dict[str, Cell]:
    """Attacks detected per request part, all families together."""
    out: dict[str, Cell] = {}
    for (source, family), cells in result.by_source.items():
        if source.startswith("part:") and family != "benign":
            cell = out.setdefault(source.removeprefix("part:"), Cell())
            cell.n += cells[detector].n
            cell.blocked += cells[detector].blocked
    return out


def profile_detector(profile: Profile, threshold: float) -> Detector:
    """The application profile at a score threshold, on whole requests."""

    def detect(items: Sequence[Item]) -> list[bool]:
        out = []
        for item in items:
            if not isinstance(item, LabelledRequest):
                raise EvaluationError("the application profile judges whole requests, not values")
            request = item.request
            deviations = profile.score(observe(request.as_request()))
            out.append(bool(deviations) and deviations[0].score >= threshold)
        return out

    return detect


def profile_items(data: Path, seed: int) -> tuple[Profile, list[LabelledRequest]]:
    """The example site's profile, learned from CSIC's training-side normal requests, and the
    test requests: the held-back normal ones and a tampered copy of each (``mlwaf.training.tamper``)."""
    train, held_back = csic_split(data)
    profile = Profile.learn(observe(r.as_request()) for r in train)
    rng = random.Random(seed)
    items = [LabelledRequest(r, "benign", "csic2010-heldback") for r in held_back]
    for request in held_back:
        kind, changed = tamper(request, rng)
        items.append(LabelledRequest(changed, "tampered", f"tampered:{kind}"))
    return profile, items


def real_site_paths(data: Path) -> tuple[Profile, list[HttpRequest]] | None:
    """A real site's check of the profile's false positives (paths and methods only: its logs
    carry no query strings): learned from two days of the Iliou dataset's human visitors,
    tested on a third. None when those logs are not there."""
    folder = data / "webbot-iliou" / "phase1" / "data" / "web_logs" / "humans"
    if not (folder / "access_4.log").exists():
        return None
    tally = Tally()
    learned = [o for name in ("access_2.log", "access_3.log") for o in observations(folder / name, "access-log", tally)]
    test = [HttpRequest(o.method, o.endpoint) for o in observations(folder / "access_4.log", "access-log", tally)]
    return Profile.learn(learned), test


# What a browser sends with every request (CRS at paranoia 2 blocks scripted clients
# and requests without Accept, which would say nothing about the payloads).
# printable ASCII a recorded URL may already carry as sent; anything else is percent-encoded
_URL_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"<>\\^`{|}')
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_HOP_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding", "keep-alive", "upgrade", "te"})
BROWSER_HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-US,en;q=0.5",
}


def appliance_detector(base_url: str, host: str = "", workers: int = 16, timeout: float = 10.0) -> Detector:
    """Each item sent through a running appliance, with a browser's headers; blocked means
    HTTP 403. A value goes in as ``GET /search.php?q=...``; a request as it is (method, path,
    query, form, cookies); a recorded real request with its own method, headers and body."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy

    def send(item: Item) -> bool:
        if isinstance(item, ScoredRequest):
            return send_record(item.record)
        r = (
            item.request
            if isinstance(item, LabelledRequest)
            else HttpRequest("GET", "/search.php", (("q", item.text),))
        )
        url = base_url.rstrip("/") + urllib.parse.quote(r.path, safe="/;=,~!$&'()*+:@")
        if r.query:
            url += "?" + urllib.parse.urlencode(r.query)
        headers = {**BROWSER_HEADERS, **({"Host": host} if host else {})}
        return post(url, headers, r)

    def send_record(record: dict) -> bool:
        """A recorded request as it was sent (its own headers; the appliance's Host)."""
        url = base_url.rstrip("/") + urllib.parse.quote(str(record.get("path") or "/"), safe=_URL_SAFE)
        headers = {
            k: str(v).encode("latin-1", "replace").decode("latin-1")  # what HTTP/1.1 can carry
            for k, v in (record.get("headers") or {}).items()
            if k.lower() not in _HOP_HEADERS and _HEADER_NAME.fullmatch(k)
        }
        headers.update({"Host": host} if host else {})
        body = str(record.get("body") or "").encode("utf-8", "surrogateescape") or None
        return answer(urllib.request.Request(url, body, headers, method=str(record.get("method") or "GET")))

    def post(url: str, headers: dict[str, str], r: HttpRequest) -> bool:
        if r.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in r.cookies)
        data = urllib.parse.urlencode(r.form).encode() if r.form else None
        if data is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return answer(urllib.request.Request(url, data, headers, method=r.method))

    def answer(request: urllib.request.Request) -> bool:
        try:
            with opener.open(request, timeout=timeout):
                return False
        except urllib.error.HTTPError as exc:
            return exc.code == HTTPStatus.FORBIDDEN
        except (urllib.error.URLError, OSError) as exc:
            raise EvaluationError(f"the appliance at {base_url} did not answer: {exc}") from None

    def detect(items: Sequence[Item]) -> list[bool]:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(send, items))

    return detect


def evaluate(items: Sequence[Item], detectors: dict[str, Detector]) -> Result:
    """Blocked counts per detector, per (source, family) and per family."""
    result = Result(list(detectors))
    for name, detect in detectors.items():
        decisions = detect(items)
        if len(decisions) != len(items):
            raise EvaluationError(f"detector {name} answered {len(decisions)} of {len(items)} items")
        for sample, blocked in zip(items, decisions, strict=True):
            for table, key in ((result.by_source, (sample.source, sample.family)), (result.by_family, sample.family)):
                cell = table.setdefault(key, {}).setdefault(name, Cell())  # type: ignore[arg-type]
                cell.n += 1
                cell.blocked += int(blocked)
    return result


def inference_ms(
    model: AttackModel, requests: Sequence[HttpRequest | ScoredRequest], batch: int = 32, repeat: int = 3
) -> float:
    """Milliseconds of model time per request, scoring ``batch`` requests' values per call on
    one CPU (no score cache); the best of ``repeat`` passes over all requests."""
    with one_cpu():
        groups = [[v for r in requests[i : i + batch] for v in r.values] for i in range(0, len(requests), batch)]
        groups = [group for group in groups if group] or [[""]]
        model.probabilities(groups[0])  # warm-up: the first call of each batch shape allocates it
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            for values in groups:
                model.probabilities(values)
            best = min(best, time.perf_counter() - started)
    return 1000 * best / len(requests)


@contextmanager
def one_cpu() -> Iterator[None]:
    """Run the block pinned to one CPU (timings "per core"), then give the others back."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def _rate(cell: Cell, family: str) -> str:
    label = "FPR" if family == "benign" else "TPR"
    return f"{label} {100 * cell.rate:.2f}% ({cell.blocked}/{cell.n})"


def markdown(result: Result, unit: str = "values", families: Sequence[str] = FAMILIES) -> str:
    names = result.detectors
    head = f"| family | {unit} | " + " | ".join(names) + " |"
    rule = "|---|---:|" + "---|" * len(names)
    lines = [f"Per family (all test sources), per {unit.rstrip('s')}:", "", head, rule]
    for family in families:
        cells = result.by_family.get(family)
        if cells:
            n = next(iter(cells.values())).n
            lines.append(f"| {family} | {n:,} | " + " | ".join(_rate(cells[d], family) for d in names) + " |")
    lines += ["", f"Balanced accuracy, each family against all benign {unit}:", "", head.replace(unit, "-"), rule]
    for family in families[1:]:
        if family in result.by_family:
            scores = " | ".join(f"{100 * result.balanced_accuracy(d, family):.2f}%" for d in names)
            lines.append(f"| {family} | | {scores} |")
    lines += ["", "Per source:", "", head.replace("family", "source / family"), rule]
    for (source, family), cells in sorted(result.by_source.items()):
        n = next(iter(cells.values())).n
        lines.append(f"| {source} / {family} | {n:,} | " + " | ".join(_rate(cells[d], family) for d in names) + " |")
    return "\n".join(lines) + "\n"


def chart(result: Result, path: Path, unit: str = "values") -> None:
    """Detection rate against false-positive rate, one point per detector and family."""
    try:
        import matplotlib  # noqa: PLC0415 - optional, only for the picture

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise EvaluationError("matplotlib is not installed: pip install matplotlib (part of the dev tools)") from None
    fig, axis = plt.subplots(figsize=(7, 5))
    markers = dict(zip(FAMILIES[1:], "osD^", strict=True))
    for index, name in enumerate(result.detectors):
        fpr = 100 * result.by_family["benign"][name].rate
        for family in FAMILIES[1:]:
            if family in result.by_family:
                tpr = 100 * result.by_family[family][name].rate
                axis.scatter([fpr], [tpr], color=f"C{index}", marker=markers[family], s=60)
        axis.scatter([], [], color=f"C{index}", label=name)
    for family, marker in markers.items():
        axis.scatter([], [], color="grey", marker=marker, label=family)
    worst = max(100 * result.by_family["benign"][name].rate for name in result.detectors)
    axis.set_xlim(-0.02 * max(worst, 0.5), 1.15 * max(worst, 0.5))
    axis.set_xlabel(f"false-positive rate on benign {unit} (%)")
    axis.set_ylabel("detection rate (%)")
    axis.set_ylim(-2, 102)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    axis.set_title(f"Detection vs false positives, per {unit.rstrip('s')}, test split")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def overall(result: Result, families: Sequence[str] = FAMILIES) -> dict[str, dict[str, float]]:
    """Machine-readable rates: per detector, FPR and each family's TPR and balanced accuracy."""
    out: dict[str, dict[str, float]] = {}
    for name in result.detectors:
        row = {"fpr": result.by_family["benign"][name].rate} if "benign" in result.by_family else {}
        for family in families[1:]:
            if family in result.by_family:
                row[f"tpr_{family}"] = result.by_family[family][name].rate
                row[f"balanced_accuracy_{family}"] = result.balanced_accuracy(name, family)
        out[name] = {k: round(v, 6) for k, v in row.items()}
    return out
