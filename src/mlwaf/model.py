"""Model runtime: load a trained model once, score many inputs per call.

A model is a metadata JSON file next to its weights::

    attack.json   {"name": "attack", "kind": "ngram-linear", "spec": "ngram-hash-v2",
                   "classes": ["benign", "sqli", ...], "bits": 16,
                   "weights": "attack.npz", "sha256": "<hex of attack.npz>",
                   "thresholds": {"block": 0.5, "log": 0.3}, ...}
    attack.npz    W (2**bits x classes, float16/32) and b (classes)

Loading checks the checksum and the feature-spec version, so a damaged or
mismatched model is refused with a readable reason instead of scoring
nonsense. Scoring is a few vectorised numpy operations per batch of values.

Real traffic repeats itself (page numbers, sort keys, user names, search
terms), so each model remembers the scores of the last CACHE_ENTRIES short
values it saw. A score depends only on the value, so the cache changes the
cost of a request, never its verdict.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mlwaf.features import SPEC_VERSION, hash_ngrams

BENIGN = "benign"
CACHE_ENTRIES = 16384  # per model and worker process; oldest entry dropped first
CACHE_MAX_CHARS = 256  # longer values are scored every time (bounds the cache at a few MB)
SCORE_BATCH = 5000  # values hashed together at most (training and evaluation score many)


class ModelError(RuntimeError):
    """A model file that cannot be used."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class AttackModel:
    """Per-value attack probabilities from a hashed n-gram linear (softmax) model."""

    name: str
    version: str
    classes: list[str]
    bits: int
    weights: npt.NDArray[np.float32]
    bias: npt.NDArray[np.float32]
    thresholds: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, object] = field(default_factory=dict)
    _cache: dict[str, tuple[float, str]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if BENIGN not in self.classes:
            raise ModelError(f"model {self.name}: classes must include {BENIGN!r}")
        if self.weights.shape != (1 << self.bits, len(self.classes)) or self.bias.shape != (len(self.classes),):
            raise ModelError(f"model {self.name}: weight shapes do not match {len(self.classes)} classes")
        self._benign = self.classes.index(BENIGN)
        self._attack_columns = [i for i, c in enumerate(self.classes) if c != BENIGN]

    @property
    def families(self) -> list[str]:
        return [self.classes[i] for i in self._attack_columns]

    def probabilities(self, values: list[str]) -> npt.NDArray[np.float32]:
        """Class probabilities, one row per value (in batches, so memory stays bounded)."""
        if len(values) > SCORE_BATCH:
            parts = [self.probabilities(values[i : i + SCORE_BATCH]) for i in range(0, len(values), SCORE_BATCH)]
            return np.concatenate(parts)
        if not values:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        buckets, owner = hash_ngrams(values, self.bits)
        # Sum the n-gram weight rows per value, one class column at a time:
        # memory grows with the number of n-grams, not values x n-grams.
        rows = self.weights[buckets]
        logits = np.empty((len(values), len(self.classes)), dtype=np.float64)
        for column in range(len(self.classes)):
            logits[:, column] = np.bincount(owner, weights=rows[:, column], minlength=len(values))
        logits += self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    def score(self, values: list[str]) -> tuple[npt.NDArray[np.float32], list[str]]:
        """Attack probability (1 - P(benign)) and the most likely family, per value."""
        cache = self._cache
        found: list[tuple[float, str]] = [cache.get(v) for v in values]  # type: ignore[misc]
        missing = [i for i, hit in enumerate(found) if hit is None]
        if missing:
            fresh = [values[i] for i in missing]
            probs = self.probabilities(fresh)
            attack = (1.0 - probs[:, self._benign]).tolist()
            best = probs[:, self._attack_columns].argmax(axis=1)
            for i, value, score, column in zip(missing, fresh, attack, best, strict=True):
                found[i] = (score, self.classes[self._attack_columns[column]])
                if len(value) <= CACHE_MAX_CHARS and CACHE_ENTRIES > 0:
                    if len(cache) >= CACHE_ENTRIES:
                        del cache[next(iter(cache))]
                    cache[value] = found[i]
        return np.array([s for s, _ in found], dtype=np.float32), [f for _, f in found]


def load_model(metadata_path: str | Path) -> AttackModel:
    """Load and verify a model from its metadata JSON file."""
    path = Path(metadata_path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"cannot read model metadata {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ModelError(f"model metadata {path} is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ModelError(f"model metadata {path} must be a JSON object")
    if meta.get("kind") != "ngram-linear":
        raise ModelError(f"model {path}: unsupported kind {meta.get('kind')!r} (this analyzer runs ngram-linear)")
    if meta.get("spec") != SPEC_VERSION:
        raise ModelError(
            f"model {path}: feature spec {meta.get('spec')!r} does not match this analyzer's {SPEC_VERSION!r}"
        )
    weights_path = path.parent / str(meta.get("weights", ""))
    if not weights_path.is_file():
        raise ModelError(f"model {path}: weights file {weights_path} is missing")
    actual = sha256_file(weights_path)
    if actual != meta.get("sha256"):
        raise ModelError(f"model {path}: checksum mismatch for {weights_path.name} (got {actual})")
    try:
        with np.load(weights_path) as arrays:
            weights = arrays["W"].astype(np.float32)
            bias = arrays["b"].astype(np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise ModelError(f"model {path}: cannot read weights: {exc}") from None
    thresholds = meta.get("thresholds") or {}
    return AttackModel(
        name=str(meta.get("name", path.stem)),
        version=str(meta.get("version", "")),
        classes=[str(c) for c in meta.get("classes", [])],
        bits=int(meta.get("bits", 0)),
        weights=weights,
        bias=bias,
        thresholds={str(k): float(v) for k, v in thresholds.items()},
        metadata=meta,
    )
