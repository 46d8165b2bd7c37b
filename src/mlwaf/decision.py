"""The decision engine: scores from the models, thresholds and allowlists, one verdict.

Used unchanged by the daemon and by ``mlwaf score``, so offline and live
verdicts agree. Every verdict says why: the models' scores and the inputs
that drove them (model, family, where the input came from, its name).
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mlwaf.behaviour.engine import Behaviour, Judgement
from mlwaf.config import ConfigError, ParamAllow, Settings
from mlwaf.inputs import generic_name, model_inputs
from mlwaf.model import AttackModel, load_model
from mlwaf.profile import Profile, endpoint_of, observe
from mlwaf.protocol import Reason, Reply
from mlwaf.request import Arg, Request

_UNSAFE = re.compile(r"[^A-Za-z0-9 _.:=()/,+-]")


@dataclass(frozen=True)
class Thresholds:
    block: float
    log: float


class Analyzer:
    """Scores requests with loaded models and turns scores into verdicts."""

    def __init__(self, settings: Settings, models: dict[str, AttackModel], profile: Profile | None = None) -> None:
        self.settings = settings
        self.models = models
        self.profile = profile
        self.load_seconds = 0.0  # how long from_settings took to load the models and the profile
        # made before the daemon forks: its shared memory is every worker's
        self.behaviour = Behaviour(settings.behaviour) if settings.behaviour.enabled else None
        # the headers the attack models read: None for all of them
        self._headers = None if "*" in settings.score_headers else settings.score_headers
        self.thresholds: dict[str, Thresholds] = {}
        for name, model in models.items():
            configured = settings.models.get(name)
            block = (configured and configured.block_threshold) or model.thresholds.get("block", 0.5)
            log = (configured and configured.log_threshold) or model.thresholds.get("log", block)
            self.thresholds[name] = Thresholds(block=block, log=min(log, block))
        known = {family for model in models.values() for family in model.families}
        for entry in settings.allow_params:
            unknown = sorted(set(entry.families) - known)
            if unknown and models:
                raise ConfigError(
                    f"[decision] allow_params {entry.name}: no model has the famil(ies) {', '.join(unknown)}; "
                    f"they are {', '.join(sorted(known))}"
                )

    @classmethod
    def from_settings(cls, settings: Settings) -> Analyzer:
        """Load every configured model and the profile once (raises ModelError or ProfileError)."""
        started = time.perf_counter()
        models = {name: load_model(Path(m.path), m.runtime) for name, m in settings.models.items()}
        profile = Profile.load(Path(settings.profile.path)) if settings.profile.path else None
        analyzer = cls(settings, models, profile)
        analyzer.load_seconds = time.perf_counter() - started
        return analyzer

    def _allowlisted(self, request: Request) -> str:
        if request.client_ip and self.settings.allow_networks:
            try:
                address = ipaddress.ip_address(request.client_ip)
            except ValueError:
                address = None
            if address is not None and any(address in net for net in self.settings.allow_networks):
                return "client network allowlisted"
        if any(request.path.startswith(prefix) for prefix in self.settings.allow_paths):
            return "path allowlisted"
        return ""

    def _exempt(self, request: Request) -> bool:
        """A client the behavioural layer leaves alone (local tools and monitoring by default,
        and requests that name no client at all)."""
        if not request.client_ip:
            return True
        try:
            address = ipaddress.ip_address(request.client_ip)
        except ValueError:
            return False
        return any(address in net for net in self.settings.behaviour.exempt_networks)

    def _allowed(self, request: Request) -> list[ParamAllow]:
        """The allowlist entries that cover this request's path."""
        if not self.settings.allow_params:
            return []
        endpoint = endpoint_of(request.path)
        return [p for p in self.settings.allow_params if p.covers(request.path, endpoint)]

    def _args(self, request: Request, allowed: list[ParamAllow] | None = None) -> list[Arg]:
        """Every argument not allowlisted as a whole."""
        allowed = self._allowed(request) if allowed is None else allowed
        return [a for a in request.args if not any(a.name == p.name and not p.families for p in allowed)]

    def _score(
        self, model: AttackModel, inputs: list[Arg], allowed: list[ParamAllow]
    ) -> tuple[npt.NDArray[np.float32], list[str]]:
        """A model's scores and families; on an input with suppressed families (site tuning),
        what the model gives the other families only."""
        values = [a.value for a in inputs]
        scores, families = model.score(values)
        for entry in allowed:
            hidden = set(entry.families) & set(model.families)
            if not hidden:
                continue
            mine = [i for i, arg in enumerate(inputs) if _derived_from(arg, entry.name)]
            if mine:
                rest, best = model.score_excluding([values[i] for i in mine], hidden)
                for i, score, family in zip(mine, rest, best, strict=True):
                    scores[i], families[i] = score, family
        return scores, families

    def inputs(self, request: Request, args: list[Arg] | None = None) -> list[Arg]:
        """What the attack models score of a request (``mlwaf.inputs``): its path, arguments
        (``args``, default: those not allowlisted) and headers, unwrapped."""
        args = self._args(request) if args is None else args
        return model_inputs(request, args, self.settings.limits, self._headers)

    def analyze(self, request: Request, started: float | None = None, now: float | None = None) -> Reply:
        """The verdict on one request; ``now`` is its arrival time (the behavioural layer's
        clock: the daemon's own, or the recorded ``ts`` when a file is replayed)."""
        started = time.perf_counter() if started is None else started
        reply = Reply(verdict="allow", anomalies=list(request.anomalies))
        note = self._allowlisted(request)
        if note:
            reply.note = note
            reply.ms = (time.perf_counter() - started) * 1000
            return reply
        judgement = self._judge(request, now)
        if judgement is not None and judgement.banned:  # a ban in force: answered at once, no model asked
            reply.reasons = [Reason("behaviour", judgement.banned, 1.0, "client", judgement.client, "banned")]
            return self._finish(reply, "block", started, judgement)
        allowed = self._allowed(request)
        args = self._args(request, allowed)
        inputs = self.inputs(request, args)
        suppressing = [p for p in allowed if p.families]
        candidates: list[Reason] = []
        verdict = "allow"
        for name, model in self.models.items():
            scores, families = self._score(model, inputs, suppressing)
            top = float(scores.max()) if len(scores) else 0.0
            reply.scores[name] = top
            limits = self.thresholds[name]
            if top >= limits.block:
                verdict = "block"
            elif top >= limits.log and verdict == "allow":
                verdict = "log"
            for index in scores.argsort()[::-1][: self.settings.max_reasons]:
                if scores[index] < limits.log:
                    break
                arg = inputs[index]
                candidates.append(
                    Reason(name, families[index], float(scores[index]), arg.source, arg.name, value=arg.value)
                )
        if self.profile is not None:
            verdict = self._profile(request, args, reply, candidates, verdict)
        if judgement is not None:
            verdict = self._behaviour(judgement, reply, candidates, verdict)
        reply.reasons = sorted(candidates, key=lambda r: -r.score)[: self.settings.max_reasons]
        return self._finish(reply, verdict, started, judgement)

    def witness(self, request: Request, now: float | None = None) -> None:
        """A request Apache stopped waiting for (it took the fail mode's path): no model is asked, but the
        behavioural layer counts it and may ban its client, so a flood that overloads the
        analyzer still builds up its history and its ban."""
        if request.reported_status:
            self.report_status(request)
        elif not self._allowlisted(request):
            self._judge(request, now)

    def _judge(self, request: Request, now: float | None) -> Judgement | None:
        """The behavioural layer's judgement of a request arriving at ``now`` (the daemon's clock
        when None); None when the layer is off or the client exempt."""
        if self.behaviour is None or self._exempt(request):
            return None
        return self.behaviour.judge(request, time.time() if now is None else now)

    def report_status(self, request: Request) -> None:
        """A status report for the behavioural layer (ignored when it is off)."""
        if self.behaviour is not None and not self._exempt(request):
            agent = request.headers.get("user-agent", "")
            self.behaviour.report_status(request.client_ip, request.id, request.reported_status, agent)

    def _finish(self, reply: Reply, verdict: str, started: float, judgement: Judgement | None) -> Reply:
        if verdict == "block" and self.settings.mode == "detection-only":
            verdict = "log"
        reply.verdict = verdict
        if verdict == "block" and judgement is not None and judgement.status:
            reply.status, reply.retry_after = judgement.status, judgement.retry_after
        if verdict != "allow":
            reply.summary = summary(reply)
        reply.ms = (time.perf_counter() - started) * 1000
        return reply

    def _behaviour(self, judgement: Judgement, reply: Reply, reasons: list[Reason], verdict: str) -> str:
        """The behavioural layer's say: its findings as reasons, a ban as a block."""
        assert self.behaviour is not None
        confidence = self.behaviour.policy.confidence
        if judgement.features is not None:
            reply.scores["behaviour"] = judgement.findings[0].score if judgement.findings else 0.0
        for finding in judgement.findings[:1]:
            if finding.score >= confidence:
                detail = f"{finding.severity}: {finding.evidence}"
                reasons.append(Reason("behaviour", finding.kind, finding.score, "client", judgement.client, detail))
        if judgement.status:
            return "block"
        if judgement.findings and judgement.findings[0].score >= confidence and verdict == "allow":
            return "log"
        return verdict

    def _profile(self, request: Request, args: list[Arg], reply: Reply, reasons: list[Reason], verdict: str) -> str:
        """Score the request against the application profile; the verdict with its say added."""
        assert self.profile is not None
        settings = self.settings.profile
        observation = observe(Request(method=request.method, path=request.path, args=args))
        deviations = self.profile.score(observation, settings.ignore)
        top = deviations[0].score if deviations else 0.0
        reply.scores["profile"] = top
        for deviation in deviations[: self.settings.max_reasons]:
            if deviation.score < settings.log_threshold:
                break
            reasons.append(
                Reason("profile", deviation.kind, deviation.score, deviation.source, deviation.name, deviation.detail)
            )
        if top >= settings.block_threshold and settings.mode == "block":
            return "block"
        if top >= settings.log_threshold and verdict == "allow":
            return "log"
        return verdict


def _derived_from(arg: Arg, name: str) -> bool:
    """An input that is the argument ``name``'s value or was unwrapped from it (``name.key``,
    ``name:base64``, ``name>inner``), any JSON array element alike; never the argument's name itself."""
    if arg.source.endswith("-name"):
        return False
    mine, name = generic_name(arg.name), generic_name(name)
    return mine == name or (mine.startswith(name) and mine[len(name)] in ".:>[")


def summary(reply: Reply) -> str:
    """One short line an operator can read in the audit log; quote-free, so the Lua bridge can lift it."""
    scores = " ".join(f"{name}={score:.3f}" for name, score in reply.scores.items())
    reasons = "; ".join(
        f"{r.family} in {r.source}{':' + r.name if r.name else ''} ({r.score:.3f})" for r in reply.reasons
    )
    text = f"{scores} {reasons}".strip() if reasons else scores
    if reply.note:
        text = f"{text} {reply.note}".strip()
    return _UNSAFE.sub("?", text)[:300]
