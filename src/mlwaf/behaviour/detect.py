"""Verdicts from a client's features: the seed's heuristics, scored and explained.

Each heuristic is a set of conditions on the features ("more than 10 requests
a second", "endpoint entropy under 1 bit"). A heuristic fires when all of
its conditions hold; its score says by how much: 0.5 when the weakest
condition is only just met, rising to 1.0 when every condition is met twice
over (a condition's margin is how far past its limit the feature is,
relative to the limit). Findings under the confidence threshold (0.6, a
margin of a fifth) are logged, never acted on. Scores map to severities (critical >= 0.9, high >=
0.7, medium >= 0.3, else low). Nothing is judged before the client has
``min_history`` requests in the window.

Profiles (``development``, ``staging``, ``production``) set the limits and
what a finding does: floods are answered 429 with ``Retry-After``, the rest
403, for ``ban_seconds``; development only logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlwaf.behaviour.crowd import Surge
from mlwaf.behaviour.features import Features

SEVERITIES = ((0.9, "critical"), (0.7, "high"), (0.3, "medium"))


def severity(score: float) -> str:
    for limit, name in SEVERITIES:
        if score >= limit:
            return name
    return "low"


@dataclass(frozen=True)
class Condition:
    feature: str
    above: bool  # True: feature > limit; False: feature < limit
    limit: float

    def margin(self, features: Features) -> float:
        """How far past its limit the feature is (relative; < 0: not met)."""
        value = float(getattr(features, self.feature))
        scale = abs(self.limit) or 1.0
        return (value - self.limit) / scale if self.above else (self.limit - value) / scale

    def describe(self, features: Features) -> str:
        return (
            f"{self.feature} {float(getattr(features, self.feature)):.2f} {'>' if self.above else '<'} {self.limit:g}"
        )


@dataclass(frozen=True)
class Heuristic:
    name: str  # flood, scanner, bot, credential-stuffing
    conditions: tuple[Condition, ...]
    status: int = 403

    def judge(self, features: Features) -> Finding | None:
        margins = [c.margin(features) for c in self.conditions]
        weakest = min(margins)
        if weakest <= 0:
            return None
        score = 0.5 + 0.5 * min(weakest, 1.0)
        evidence = ", ".join(c.describe(features) for c in self.conditions)
        return Finding(self.name, score, evidence, self.status)


@dataclass(frozen=True)
class Finding:
    kind: str
    score: float
    evidence: str
    status: int
    by_model: bool = False  # the flood/bot model's, not a heuristic's

    @property
    def severity(self) -> str:
        return severity(self.score)


def _heuristics(flood_rate: float, stuffing_rate: float) -> tuple[Heuristic, ...]:
    def over(feature: str, limit: float) -> Condition:
        return Condition(feature, True, limit)

    def under(feature: str, limit: float) -> Condition:
        return Condition(feature, False, limit)

    return (
        # many requests to few URLs (the seed: > 10 req/s, diversity < 1.0; 1 bit would let a
        # flood over two URLs through, so up to four equally used ones count as few)
        Heuristic("flood", (over("rate", flood_rate), under("endpoint_entropy", 2.0)), status=429),
        Heuristic("flood", (over("burst", 2 * flood_rate), under("endpoint_entropy", 2.0)), status=429),
        # many different URLs, most of them missing
        Heuristic("scanner", (over("not_found", 0.3), over("endpoint_entropy", 2.5))),
        # a metronome sending near-identical requests (the seed: regularity > 0.9, similarity > 0.8)
        Heuristic("bot", (over("regularity", 0.9), over("similarity", 0.8), over("count", 9))),
        # login after login: fast, or refused, or under changing User-Agents
        Heuristic("credential-stuffing", (over("login_share", 0.5), over("rate", stuffing_rate))),
        Heuristic("credential-stuffing", (over("login_share", 0.5), over("denied", 0.5))),
        Heuristic("credential-stuffing", (over("login_share", 0.5), under("ua_consistency", 0.5))),
    )


@dataclass(frozen=True)
class Policy:
    """One profile's limits and actions."""

    name: str
    min_history: int = 5
    confidence: float = 0.6  # findings below this score are only logged
    block: bool = True
    ban_seconds: float = 60.0
    heuristics: tuple[Heuristic, ...] = field(default_factory=lambda: _heuristics(10.0, 5.0))

    def judge(self, features: Features, surge: Surge | None = None) -> list[Finding]:
        """Every finding for this client, strongest first (none before min_history requests).
        ``surge``: how busy the requested endpoint is across all clients; while it is under
        attack, a client that keeps to it (one or two URLs, at least a request every two
        seconds) is taken for one of the flood's sources."""
        if features.count < self.min_history:
            return []
        found = [f for h in self.heuristics if (f := h.judge(features)) is not None]
        if surge is not None and surge.alarm and features.endpoint_entropy < 1.0 and features.rate >= 0.5:
            margin = (surge.rate - surge.limit) / surge.limit
            evidence = f"endpoint at {surge.rate:.0f} req/s from all clients > {surge.limit:.0f}, " + ", ".join(
                (f"endpoint_entropy {features.endpoint_entropy:.2f} < 1", f"rate {features.rate:.2f} >= 0.5")
            )
            found.append(Finding("distributed-flood", 0.5 + 0.5 * min(margin, 1.0), evidence, 429))
        return sorted(found, key=lambda f: -f.score)


PROFILES = {
    "development": Policy("development", block=False, heuristics=_heuristics(50.0, 20.0)),
    "staging": Policy("staging", ban_seconds=30.0, heuristics=_heuristics(20.0, 10.0)),
    "production": Policy("production"),
}
