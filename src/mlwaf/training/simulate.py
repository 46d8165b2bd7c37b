"""``mlwaf simulate``: labelled traffic for the behavioural layer, as ``mlwaf score`` input lines.

Every record is a request in the score contract (``id``, ``method``, ``path``
with its query string, ``headers``, ``body``) plus ``client_ip``, ``ts``, the
``status`` the site answered (the replay reports it back, as ModSecurity's
logging phase does live) and its ``label`` (the scenario) and ``session``.

Scenarios:

- ``normal``: people browsing: sessions of 3 to 30 page views built from the
  site's real requests (CSIC 2010's normal traffic when the datasets are
  given, else the demo site's pages), each page followed by a burst of its
  assets, with human think times (log-normal, median 8 s); one browser
  User-Agent per session;
- ``flood``: one address sending the same two pages (not a login) at ``rate`` a second;
- ``distributed``: ``sources`` addresses (50 by default) each sending one
  URL a few times a second;
- ``scanner``: one address walking a list of well-known paths, most of them
  answered 404;
- ``crawler``: one address fetching the site's pages on a fixed clock;
- ``headless``: a scripted browser: a browser's User-Agent, every page with
  its assets, a uniformly random wait between pages (the web bots of Iliou
  et al. are of this kind);
- ``stuffing``: one address posting logins with new user names, under
  rotating User-Agents, answered 401.
"""

from __future__ import annotations

import http.client
import ipaddress
import random
import socket
import time
import urllib.parse
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from mlwaf.behaviour.engine import ASSET

SCENARIOS = ("normal", "flood", "distributed", "scanner", "crawler", "headless", "stuffing")
BROWSERS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile Safari/537.36",
)
TOOLS = ("python-requests/2.32", "curl/8.5.0", "Go-http-client/1.1", "okhttp/4.12")
SCAN_PATHS = (
    "/admin/", "/admin.php", "/wp-login.php", "/wp-admin/", "/.git/config", "/.env", "/phpmyadmin/", "/backup.zip",
    "/config.php.bak", "/server-status", "/.svn/entries", "/web.config", "/db.sql", "/console", "/actuator/health",
    "/cgi-bin/test.cgi", "/.htaccess", "/install.php", "/debug", "/api/v1/users", "/old/", "/test/", "/dump.sql",
    "/admin/login.jsp", "/manager/html", "/.DS_Store", "/id_rsa", "/composer.json", "/package.json", "/info.php",
)  # fmt: skip


@dataclass(frozen=True)
class Page:
    """One page of the simulated site: a request and the assets a browser fetches with it."""

    method: str
    target: str  # path and query string, URL-encoded
    body: str = ""
    assets: tuple[str, ...] = ()


DEMO_SITE = (
    Page("GET", "/index.php", assets=("/style.css",)),
    Page("GET", "/search.php?q=coffee", assets=("/style.css",)),
    Page("GET", "/search.php?q=grinder", assets=("/style.css",)),
    Page("GET", "/search.php?q=kettle+filter", assets=("/style.css",)),
    Page("GET", "/login.php", assets=("/style.css",)),
    Page("POST", "/login.php", "username=alice&password=wonderland", ("/style.css",)),
    Page("GET", "/api.php?item=1"),
)


def site_from_requests(requests: Sequence[object]) -> tuple[Page, ...]:
    """Pages from dataset requests (``mlwaf.training.datasets.HttpRequest``): their real paths, queries and
    forms. The dataset's static files become assets: every page gets the style sheets and two
    of the images (the same two for the same path), as a browser would fetch them."""
    files = sorted({r.path for r in requests if ASSET.search(r.path)})  # type: ignore[attr-defined]
    sheets = tuple(f for f in files if f.endswith((".css", ".js")))
    images = [f for f in files if f not in sheets]
    pages = []
    for r in requests:
        if r.path in files:  # type: ignore[attr-defined]
            continue
        query = urllib.parse.urlencode(r.query)  # type: ignore[attr-defined]
        target = urllib.parse.quote(r.path) + (f"?{query}" if query else "")  # type: ignore[attr-defined]
        pick = zlib.crc32(r.path.encode())  # type: ignore[attr-defined]
        shown = tuple(images[(pick + k) % len(images)] for k in range(min(2, len(images))))
        pages.append(Page(r.method, target, urllib.parse.urlencode(r.form), sheets + shown))  # type: ignore[attr-defined]
    return tuple(pages)


class Visitor(NamedTuple):
    label: str  # the scenario
    session: str
    ip: str
    agent: str


class Generator:
    """Deterministic (seeded) traffic; every address it uses is in a documentation or private range."""

    def __init__(self, site: Sequence[Page] = DEMO_SITE, seed: int = 7, start: float = 1_800_000_000.0) -> None:
        self.site = tuple(site)
        self.rng = random.Random(seed)
        self.start = start
        self.counter = 0

    def _address(self) -> str:
        return f"10.{self.rng.randint(0, 255)}.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}"

    def _record(self, who: Visitor, ts: float, page: Page, status: int = 200) -> dict[str, object]:
        self.counter += 1
        label, session, ip, agent = who
        headers = {"User-Agent": agent}
        if page.body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return {
            "id": f"{label}-{self.counter}",
            "method": page.method,
            "path": page.target,
            "headers": headers,
            "body": page.body,
            "client_ip": ip,
            "ts": round(ts, 4),
            "status": status,
            "label": label,
            "session": session,
        }

    def normal(self, sessions: int, duration: float = 3600.0) -> Iterator[dict[str, object]]:
        for number in range(sessions):
            who = Visitor("normal", f"normal-{number}", self._address(), self.rng.choice(BROWSERS))
            ts = self.start + self.rng.uniform(0, duration)
            for _ in range(self.rng.randint(3, 30)):
                page = self.rng.choice(self.site)
                yield self._record(who, ts, page)
                for asset in page.assets:
                    ts += self.rng.uniform(0.02, 0.3)
                    yield self._record(who, ts, Page("GET", asset))
                ts += self.rng.lognormvariate(2.08, 1.0)  # median e^2.08 = 8 s

    def flood(self, seconds: float = 10.0, rate: float = 100.0, targets: int = 2) -> Iterator[dict[str, object]]:
        who = Visitor("flood", "flood", self._address(), self.rng.choice(TOOLS))
        pages = [p for p in self.site if "login" not in p.target.lower()] or list(self.site)  # a flood, not stuffing
        chosen = self.rng.sample(pages, min(targets, len(pages)))
        for i in range(int(seconds * rate)):
            yield self._record(who, self.start + i / rate, self.rng.choice(chosen))

    def distributed(self, seconds: float = 20.0, sources: int = 50, rate: float = 3.0) -> Iterator[dict[str, object]]:
        page = self.rng.choice(self.site)
        records = []
        for source in range(sources):
            who = Visitor("distributed", f"distributed-{source}", self._address(), self.rng.choice(BROWSERS + TOOLS))
            offset = self.rng.uniform(0, 1 / rate)
            for i in range(int(seconds * rate)):
                ts = self.start + offset + i / rate + self.rng.uniform(-0.05, 0.05)
                records.append(self._record(who, ts, page))
        yield from sorted(records, key=lambda r: r["ts"])  # type: ignore[arg-type, return-value]

    def scanner(self, requests: int = 60, rate: float = 10.0) -> Iterator[dict[str, object]]:
        who = Visitor("scanner", "scanner", self._address(), self.rng.choice(TOOLS))
        paths = list(SCAN_PATHS)
        self.rng.shuffle(paths)
        for i in range(requests):
            if i % 5 == 4:  # now and then a page that exists
                page, status = self.rng.choice(self.site), 200
            else:
                page, status = Page("GET", paths[i % len(paths)]), 404
            yield self._record(who, self.start + i / rate, page, status)

    def crawler(self, requests: int = 60, interval: float = 2.0, jitter: float = 0.02) -> Iterator[dict[str, object]]:
        agent = "Mozilla/5.0 (compatible; ExampleBot/2.1; +https://bot.example/)"
        who = Visitor("crawler", "crawler", self._address(), agent)
        ts = self.start
        for i in range(requests):
            yield self._record(who, ts, self.site[i % len(self.site)])
            ts += interval * self.rng.uniform(1 - jitter, 1 + jitter)

    def headless(self, pages: int = 30, wait: tuple[float, float] = (1.0, 10.0)) -> Iterator[dict[str, object]]:
        who = Visitor("headless", "headless", self._address(), self.rng.choice(BROWSERS))
        ts = self.start
        for _ in range(pages):
            page = self.rng.choice(self.site)
            yield self._record(who, ts, page)
            for asset in page.assets:
                ts += self.rng.uniform(0.01, 0.1)
                yield self._record(who, ts, Page("GET", asset))
            ts += self.rng.uniform(*wait)

    def stuffing(self, requests: int = 60, rate: float = 8.0, login: str = "/login.php") -> Iterator[dict[str, object]]:
        ip = self._address()
        for i in range(requests):
            user = "".join(self.rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(self.rng.randint(5, 10)))
            body = urllib.parse.urlencode({"username": f"{user}{self.rng.randint(1, 99)}", "password": f"pw{i}"})
            who = Visitor("stuffing", "stuffing", ip, self.rng.choice(BROWSERS + TOOLS))
            yield self._record(who, self.start + i / rate, Page("POST", login, body), 401)

    def scenario(self, name: str, count: int) -> Iterator[dict[str, object]]:
        """``count`` sessions (normal) or requests (others; seconds for the floods) of one scenario."""
        if name == "normal":
            return self.normal(count)
        if name == "flood":
            return self.flood(seconds=count)
        if name == "distributed":
            return self.distributed(seconds=count)
        if name in ("scanner", "crawler", "headless", "stuffing"):
            return getattr(self, name)(count)
        raise ValueError(f"unknown scenario {name!r}; scenarios are {', '.join(SCENARIOS)}")


class SimulationError(ValueError):
    """A live target this generator must not send to, or cannot reach."""


def check_target(url: str) -> urllib.parse.SplitResult:
    """Live traffic goes to loopback only (the project's test hosts listen there)."""
    target = urllib.parse.urlsplit(url)
    if target.scheme not in ("http", "https") or not target.hostname:
        raise SimulationError(f"{url!r} is not an http(s) URL")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(target.hostname, target.port or 80)}
    except OSError as exc:
        raise SimulationError(f"cannot resolve {target.hostname}: {exc}") from None
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise SimulationError(f"{target.hostname} is not a loopback address: live traffic only goes to test hosts")
    return target


@dataclass
class Outcome:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    first: dict[int, float] = field(default_factory=dict)  # status -> seconds after the start it was first seen
    failed: int = 0


def drive(records: Sequence[dict[str, object]], url: str, max_requests: int, max_seconds: float) -> Outcome:
    """Send records to a live URL on their own clock (``ts`` relative to the first), from this
    machine's address (``client_ip`` cannot be faked), at most ``max_requests`` and ``max_seconds``."""
    target = check_target(url)
    connection = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
    outcome = Outcome()
    ordered = sorted(records, key=lambda r: float(r["ts"]))  # type: ignore[arg-type]
    if not ordered:
        return outcome
    first_ts, started = float(ordered[0]["ts"]), time.monotonic()  # type: ignore[arg-type]
    for record in ordered[:max_requests]:
        due = float(record["ts"]) - first_ts  # type: ignore[arg-type]
        elapsed = time.monotonic() - started
        if due > max_seconds or elapsed > max_seconds:
            break
        if due > elapsed:
            time.sleep(due - elapsed)
        conn = connection(target.hostname, target.port, timeout=10)  # type: ignore[arg-type]
        try:
            conn.request(
                str(record["method"]),
                str(record["path"]),
                str(record.get("body") or "").encode(),
                dict(record.get("headers") or {}),  # type: ignore[call-overload]
            )
            status = conn.getresponse().status
        except OSError:
            outcome.failed += 1
            continue
        finally:
            conn.close()
        outcome.sent += 1
        outcome.statuses[status] += 1
        outcome.first.setdefault(status, round(time.monotonic() - started, 3))
    return outcome
