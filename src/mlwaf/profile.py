"""The application profile: a positive model of the protected site's own traffic.

Signatures and the attack model look for what attacks look like; the profile
learns what the site's requests look like and scores how far a request strays
from that: a parameter never seen on an endpoint, a typo'd one, a required one
missing, letters in a field that only ever held digits, a value ten times
longer than any seen, a value outside a small set (a button label), a method
the endpoint never answered, a file that was never requested in a known
folder (``index.jsp.bak``).

Learning keeps shapes, not content: per value its length, the set of
character classes it uses and, for short values, an 8-byte digest (enough to
learn small sets of values without storing them). Observations of allowed
requests can be recorded by the daemon during a learning period and turned
into a profile with ``mlwaf learn``.

How surprising is something never seen? Every check uses one rule: after
``n`` observations of which ``n1`` were seen exactly once, a new kind of
thing is expected with probability about ``n1 / n`` (Good-Turing), and a
small ``n`` earns little trust; the deviation's score is
``(1 - n1 / n) * n / (n + TRUST)``. A parameter that has taken hundreds of
distinct values scores little for one more; a field that held digits in
5,000 requests scores 0.998 for a letter.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mlwaf.files import read_json
from mlwaf.request import Request

SPEC = "profile-v1"
TRUST = 10  # observations needed before a deviation scores 0.5
ENUM_MAX = 32  # a parameter with more distinct values is not a set of choices
DIGEST_MAX_CHARS = 64  # values longer than this are never treated as choices
KINDS = ("endpoint", "method", "param", "missing", "charset", "length", "value")
_ID_SEGMENT = re.compile(r"^(?:\d+|[0-9a-fA-F]{16,}|[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})$")


class ProfileError(ValueError):
    """A profile or observation file that cannot be used."""


def char_classes(value: str) -> str:
    """The character classes a value uses, as a sorted string: ``a`` ASCII lower case,
    ``A`` upper case, ``9`` digits, ``u`` other letters and digits, ``w`` tabs and
    newlines, ``c`` other control characters, ``o`` other symbols; ASCII
    punctuation and the space stand for themselves."""
    classes = set()
    for char in set(value):
        if "a" <= char <= "z":
            classes.add("a")
        elif "A" <= char <= "Z":
            classes.add("A")
        elif "0" <= char <= "9":
            classes.add("9")
        elif char < "\x7f":
            classes.add(char if char >= " " else "w" if char in "\t\n\r" else "c")
        elif char.isalnum():
            classes.add("u")
        else:
            classes.add("c" if char == "\x7f" else "o")
    return "".join(sorted(classes))


def digest(value: str) -> str:
    """An 8-byte digest of a short value ('' for long ones): lets the profile learn a
    set of choices without keeping the values."""
    if len(value) > DIGEST_MAX_CHARS:
        return ""
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def endpoint_of(path: str) -> str:
    """The path with id-like segments (numbers, long hex, UUIDs) folded: /user/42 -> /user/{id}."""
    return "/".join("{id}" if _ID_SEGMENT.match(part) else part for part in path.split("/"))


@dataclass(frozen=True)
class Shape:
    """What is kept of one input value."""

    kind: str  # "arg" or "cookie"
    name: str
    length: int
    classes: str
    digest: str


@dataclass(frozen=True)
class Observation:
    """What is kept of one request."""

    method: str
    endpoint: str
    shapes: tuple[Shape, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "m": self.method,
            "e": self.endpoint,
            "a": [[s.kind, s.name, s.length, s.classes, s.digest] for s in self.shapes],
        }

    @classmethod
    def from_dict(cls, record: object) -> Observation:
        if not isinstance(record, dict) or not isinstance(record.get("m"), str) or not isinstance(record.get("e"), str):
            raise ProfileError('an observation is {"m": method, "e": endpoint, "a": [...]}')
        items = record.get("a", [])
        if not isinstance(items, list) or not all(
            isinstance(i, list) and len(i) == 5 and i[0] in ("arg", "cookie") and isinstance(i[2], int) for i in items
        ):
            raise ProfileError("observed inputs are [kind, name, length, classes, digest]")
        shapes = [Shape(str(i[0]), str(i[1]), i[2], str(i[3]), str(i[4])) for i in items]
        return cls(record["m"], record["e"], tuple(shapes))


def observe(request: Request) -> Observation:
    """The shape of a decoded request (path, method, every argument and cookie)."""
    shapes = tuple(
        Shape(
            "cookie" if arg.source == "cookie" else "arg",
            arg.name,
            len(arg.value),
            char_classes(arg.value),
            digest(arg.value),
        )
        for arg in request.args
    )
    return Observation(request.method, endpoint_of(request.path), shapes)


def novelty(n: int, singletons: int) -> float:
    """How surprising a never-seen thing is after n observations, n1 of them seen once."""
    if n <= 0:
        return 0.0
    return (1.0 - min(singletons, n) / n) * n / (n + TRUST)


def _singletons(counts: dict[str, int]) -> int:
    return sum(1 for count in counts.values() if count == 1)


@dataclass
class ValueStats:
    """One parameter's learned shape."""

    n: int = 0
    classes: Counter[str] = field(default_factory=Counter)  # class -> values using it
    longest: int = 0
    values: Counter[str] | None = field(default_factory=Counter)  # digest -> count; None: too many to be a set

    def add(self, shape: Shape) -> None:
        self.n += 1
        self.classes.update(shape.classes)
        self.longest = max(self.longest, shape.length)
        if self.values is not None:
            if not shape.digest:
                self.values = None
            else:
                self.values[shape.digest] += 1
                if len(self.values) > ENUM_MAX:
                    self.values = None

    def as_dict(self) -> dict[str, object]:
        return {"n": self.n, "classes": dict(self.classes), "longest": self.longest, "values": self.values}

    @classmethod
    def from_dict(cls, raw: dict) -> ValueStats:
        values = raw.get("values")
        values = None if values is None else Counter(values)
        return cls(int(raw["n"]), Counter(raw["classes"]), int(raw["longest"]), values)


@dataclass
class EndpointStats:
    n: int = 0
    methods: Counter[str] = field(default_factory=Counter)
    present: Counter[str] = field(default_factory=Counter)  # parameter -> requests carrying it
    params: dict[str, ValueStats] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "n": self.n,
            "methods": dict(self.methods),
            "present": dict(self.present),
            "params": {name: stats.as_dict() for name, stats in self.params.items()},
        }

    @classmethod
    def from_dict(cls, raw: dict) -> EndpointStats:
        params = {name: ValueStats.from_dict(stats) for name, stats in raw["params"].items()}
        return cls(int(raw["n"]), Counter(raw["methods"]), Counter(raw["present"]), params)


@dataclass(frozen=True)
class Deviation:
    kind: str  # one of KINDS
    score: float
    source: str  # "path", "method", "arg" or "cookie"
    name: str  # the parameter, cookie or path
    detail: str


def overlong(length: int, longest: int) -> bool:
    """Longer than any value learned, by more than half again (and 8 characters)."""
    return length > longest + max(8, longest // 2)


@dataclass
class Profile:
    """The learned shape of a site; built with Profile.learn(), saved as JSON."""

    requests: int = 0
    endpoints: dict[str, EndpointStats] = field(default_factory=dict)
    cookies: dict[str, ValueStats] = field(default_factory=dict)
    folders: dict[str, Counter[str]] = field(default_factory=dict)  # folder -> child -> requests

    @classmethod
    def learn(cls, observations: Iterable[Observation]) -> Profile:
        profile = cls()
        for observation in observations:
            profile.add(observation)
        return profile

    def add(self, observation: Observation) -> None:
        self.requests += 1
        parts = observation.endpoint.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth]) + "/"
            self.folders.setdefault(folder, Counter())[parts[depth]] += 1
        stats = self.endpoints.setdefault(observation.endpoint, EndpointStats())
        stats.n += 1
        stats.methods[observation.method] += 1
        for name in {s.name for s in observation.shapes if s.kind == "arg"}:
            stats.present[name] += 1
        for shape in observation.shapes:
            table = stats.params if shape.kind == "arg" else self.cookies
            table.setdefault(shape.name, ValueStats()).add(shape)

    def score(self, observation: Observation, ignore: Iterable[str] = ()) -> list[Deviation]:
        """Every deviation of a request from the profile, highest score first."""
        skip = set(ignore)
        found: list[Deviation] = []
        stats = self.endpoints.get(observation.endpoint)
        if stats is None:
            if "endpoint" not in skip:
                found += self._unknown_endpoint(observation.endpoint)
        else:
            found += _request_deviations(stats, observation, skip)
        for shape in observation.shapes:
            if shape.kind == "cookie":
                learned = self.cookies.get(shape.name)
                if learned is not None:  # cookies come and go with other sites' scripts: only known ones are checked
                    found += _value_deviations(shape, learned, skip)
            elif stats is not None:
                learned = stats.params.get(shape.name)
                if learned is None:
                    if "param" not in skip:
                        score = novelty(stats.n, _singletons(stats.present))
                        found.append(Deviation("param", score, "arg", shape.name, "parameter never seen here"))
                else:
                    found += _value_deviations(shape, learned, skip)
        return sorted(found, key=lambda d: -d.score)

    def _unknown_endpoint(self, endpoint: str) -> list[Deviation]:
        """Judged by the deepest known folder on the way: a name never requested in it, or a
        path that goes on below a name that was only ever a file (``/page.jsp/x``)."""
        parts = endpoint.split("/")
        known = "/"
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth]) + "/"
            children = self.folders.get(folder)
            if children is None:
                children, detail = self.folders.get(known), f"goes on below {folder[:-1]}"
            elif parts[depth] not in children:
                detail = f"never requested in {folder}"
            else:
                known = folder
                continue
            if not children:
                return []
            return [
                Deviation("endpoint", novelty(sum(children.values()), _singletons(children)), "path", endpoint, detail)
            ]
        return []

    def as_dict(self) -> dict[str, object]:
        return {
            "spec": SPEC,
            "requests": self.requests,
            "endpoints": {name: stats.as_dict() for name, stats in sorted(self.endpoints.items())},
            "cookies": {name: stats.as_dict() for name, stats in sorted(self.cookies.items())},
            "folders": {name: dict(children) for name, children in sorted(self.folders.items())},
        }

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.as_dict(), separators=(",", ":")) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def from_dict(cls, raw: object) -> Profile:
        if not isinstance(raw, dict) or raw.get("spec") != SPEC:
            spec = raw.get("spec") if isinstance(raw, dict) else None
            raise ProfileError(f"profile spec {spec!r} does not match this analyzer's {SPEC!r}")
        try:
            return cls(
                int(raw["requests"]),
                {name: EndpointStats.from_dict(stats) for name, stats in raw["endpoints"].items()},
                {name: ValueStats.from_dict(stats) for name, stats in raw["cookies"].items()},
                {name: Counter(children) for name, children in raw["folders"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProfileError(f"profile is malformed: {exc!r}") from None

    @classmethod
    def load(cls, path: Path) -> Profile:
        raw = read_json(path, ProfileError, "profile")
        try:
            return cls.from_dict(raw)
        except ProfileError as exc:
            raise ProfileError(f"{path}: {exc}") from None


def _request_deviations(stats: EndpointStats, observation: Observation, skip: set[str]) -> list[Deviation]:
    """A known endpoint: a method it never answered, a parameter it always had missing."""
    out = []
    if observation.method not in stats.methods and "method" not in skip:
        score = novelty(stats.n, _singletons(stats.methods))
        out.append(Deviation("method", score, "method", observation.method, "method never seen here"))
    if "missing" not in skip:
        names = {s.name for s in observation.shapes if s.kind == "arg"}
        for name, count in stats.present.items():
            if count == stats.n and name not in names:
                out.append(Deviation("missing", novelty(stats.n, 0), "arg", name, "always sent, missing"))
    return out


def _value_deviations(shape: Shape, learned: ValueStats, skip: set[str]) -> list[Deviation]:
    out = []
    new = [c for c in shape.classes if c not in learned.classes]
    if new and "charset" not in skip:
        score = novelty(learned.n, sum(1 for count in learned.classes.values() if count == 1))
        shown = "".join(new).replace("w", "\\t\\n").replace("c", "control").replace("o", "symbol")
        out.append(Deviation("charset", score, shape.kind, shape.name, f"characters never seen here: {shown}"))
    if overlong(shape.length, learned.longest) and "length" not in skip:
        detail = f"{shape.length} characters, longest learned {learned.longest}"
        out.append(Deviation("length", novelty(learned.n, 0), shape.kind, shape.name, detail))
    if learned.values is not None and "value" not in skip and shape.digest not in learned.values:
        score = novelty(learned.n, _singletons(learned.values))
        out.append(Deviation("value", score, shape.kind, shape.name, f"not one of the {len(learned.values)} values"))
    return out
