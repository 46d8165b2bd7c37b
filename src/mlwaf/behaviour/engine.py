"""The behavioural layer as the decision engine uses it: one request in, a judgement out.

For each request: is its client banned (then the ban's answer, at once)?
Otherwise the request's shape joins the client's history and its endpoint's
count across all clients (``crowd``), the history's features are computed
and the profile's heuristics judge them, and the flood/bot model when one
is configured (``mlwaf.behaviour.model``). A finding at
or above the confidence threshold, in a profile that blocks, bans the client
for ``ban_seconds``: floods are answered 429 with ``Retry-After``, the rest
403. Clients are addresses, or address plus User-Agent; with ``hash_clients``
the decision log names them by a salted hash instead.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from mlwaf.behaviour.crowd import ENDPOINTS, Crowd
from mlwaf.behaviour.detect import PROFILES, Finding, Policy
from mlwaf.behaviour.features import Features, compute
from mlwaf.behaviour.geo import open_geo
from mlwaf.behaviour.model import MIN_HISTORY as MODEL_MIN_HISTORY
from mlwaf.behaviour.model import PERSISTENCE, WindowModel, load_window_model
from mlwaf.behaviour.shared import FallbackTracker, RedisTracker
from mlwaf.behaviour.tracker import Event, LocalTracker
from mlwaf.config import BehaviourSettings
from mlwaf.profile import char_classes
from mlwaf.request import Request
from mlwaf.sensitive import is_login

KINDS = ("flood", "scanner", "bot", "credential-stuffing", "distributed-flood")


@dataclass
class Judgement:
    client: str  # as the decision log names it
    features: Features | None = None
    findings: list[Finding] = field(default_factory=list)
    status: int = 0  # 0: no action; 403 or 429 while banned
    retry_after: int = 0
    banned: str = ""  # the kind of finding behind a ban in force


ASSET = re.compile(r"(?i)\.(css|js|mjs|png|jpe?g|gif|svg|ico|webp|avif|woff2?|ttf|otf|eot|map)$")
TOOL = re.compile(r"(?i)bot|crawl|spider|slurp|headless|python|curl|wget|scan|http|java/|go-|libwww|perl|ruby|php")


def _unknown(address: str) -> int:
    return 0


def is_browser(user_agent: str) -> bool:
    """A browser's User-Agent: Mozilla/... naming no tool, bot or crawler."""
    return user_agent.startswith("Mozilla/") and TOOL.search(user_agent) is None


def event_of(request: Request, now: float, login: re.Pattern[str], country: int = 0) -> Event:
    """What the tracker keeps of a request (its shape, see mlwaf.behaviour.tracker)."""
    agent = request.headers.get("user-agent", "")
    return Event(
        ts=now,
        method=request.method,
        path=request.path,
        params=tuple(sorted({a.name for a in request.args if a.source != "cookie"})),
        user_agent=agent,
        country=country,
        login=bool(login.search(request.path)) or is_login(request.method, ((a.source, a.name) for a in request.args)),
        skeleton=skeleton(request),
        request_id=request.id,
        asset=ASSET.search(request.path) is not None,
        browser=is_browser(agent),
    )


def skeleton(request: Request) -> str:
    """A request's shape for the similarity of consecutive requests: path, argument
    names and the character classes of their values (no values)."""
    return request.path + "?" + "&".join(f"{a.name}={char_classes(a.value)}" for a in request.args)


class Behaviour:
    def __init__(self, settings: BehaviourSettings) -> None:
        self.settings = settings
        self.policy: Policy = PROFILES[settings.profile]
        local = LocalTracker(settings.max_clients, settings.history, settings.window)
        self.tracker: LocalTracker | FallbackTracker = local
        if settings.redis_url:
            shared = RedisTracker(settings.redis_url, settings.history, settings.window, settings.redis_timeout)
            self.tracker = FallbackTracker(shared, local)
        self.crowd = Crowd()
        self.model = load_window_model(settings.model, settings.model_runtime) if settings.model else None
        self.country: Callable[[str], int] = open_geo(settings.geoip_database) if settings.geoip_database else _unknown
        self.login = re.compile(settings.login_paths)
        self._salt = secrets.token_hex(8)  # per daemon start; workers inherit it

    def client_of(self, request: Request) -> str:
        client = request.client_ip or "-"
        if self.settings.client_key == "ip+ua":
            agent = request.headers.get("user-agent", "")
            client += "|" + hashlib.blake2b(agent.encode("utf-8", "replace"), digest_size=4).hexdigest()
        return client

    def shown(self, client: str) -> str:
        if not self.settings.hash_clients:
            return client
        return "h:" + hashlib.blake2b((self._salt + client).encode(), digest_size=8).hexdigest()

    def judge(self, request: Request, now: float) -> Judgement:
        client = self.client_of(request)
        judgement = Judgement(self.shown(client))
        event = event_of(request, now, self.login, self.country(request.client_ip))
        history = self.tracker.record(client, event)
        endpoint = int(history["path"][-1]) % ENDPOINTS  # the request's path hash, as just recorded
        shared = self.tracker.crowd_counts(endpoint, int(now), self.crowd.span)  # None: node-local
        surge = self.crowd.add(endpoint, now, shared)
        ban = self.tracker.banned(client, now)
        if ban is not None:
            judgement.status, judgement.banned = ban[0], KINDS[ban[1]]
            judgement.retry_after = max(1, round(ban[2] - now))
            return judgement
        judgement.features = compute(history, now)
        judgement.findings = self.policy.judge(judgement.features, surge)
        if self.model is not None and judgement.features.count >= max(self.policy.min_history, MODEL_MIN_HISTORY):
            finding = self._model_finding(self.model, history, judgement.features)
            if finding is not None:
                judgement.findings = sorted([*judgement.findings, finding], key=lambda f: -f.score)
        acting = [f for f in judgement.findings if not f.by_model or self.settings.model_action == "block"]
        top = acting[0] if acting else None
        if top is not None and top.score >= self.policy.confidence and self.policy.block:
            until = now + self.policy.ban_seconds
            self.tracker.ban(client, until, top.status, KINDS.index(top.kind))
            judgement.status = top.status
            judgement.retry_after = round(self.policy.ban_seconds)
        return judgement

    def _model_finding(self, model: WindowModel, history: np.ndarray, features: Features) -> Finding | None:
        """The model's finding, acted on only when it held on the client's last PERSISTENCE
        requests (each judged on the history as it was then): a person can look like a bot
        for a request or three, a bot keeps looking like one. Until then it stays under the
        confidence threshold."""
        finding = model.finding(features)
        if finding is None or finding.score < self.policy.confidence:
            return finding
        size = int(history.size)
        for back in range(1, PERSISTENCE):
            earlier = history[: size - back]
            if earlier.size < MODEL_MIN_HISTORY:
                break
            before = model.finding(compute(earlier, float(earlier["ts"][-1])))
            if before is None or before.score < self.policy.confidence:
                break
        else:
            return finding
        evidence = f"{finding.evidence}; not yet on {PERSISTENCE} requests in a row"
        return replace(finding, score=min(finding.score, self.policy.confidence - 0.01), evidence=evidence)

    def report_status(self, client_ip: str, request_id: str, status: int, user_agent: str = "") -> bool:
        """The answer Apache gave (from ModSecurity's logging phase)."""
        request = Request(method="GET", path="/", client_ip=client_ip, headers={"user-agent": user_agent})
        return self.tracker.set_status(self.client_of(request), request_id, status)
