"""Model runtime: load a trained model once, score many inputs per call.

A model is a metadata JSON file next to its weights::

    attack.json   {"name": "attack", "kind": "ngram-linear", "spec": "ngram-hash-v1",
                   "classes": ["benign", "sqli", ...], "bits": 16,
                   "weights": "attack.npz", "sha256": "<hex of attack.npz>",
                   "thresholds": {"block": 0.5, "log": 0.3}, ...}
    attack.npz    W (2**bits x classes, float16/32) and b (classes)

Loading checks the checksum and the feature-spec version, so a damaged or
mismatched model is refused with a readable reason instead of scoring
nonsense. Scoring is a few vectorised numpy operations per batch of values.
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
        """Class probabilities, one row per value."""
        if not values:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        buckets, owner = hash_ngrams(values, self.bits)
        # Sum the n-gram weight rows per value: a one-hot (values x n-grams) matrix product.
        onehot = np.zeros((len(values), owner.size), dtype=np.float32)
        onehot[owner, np.arange(owner.size)] = 1.0
        logits = onehot @ self.weights[buckets] + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def score(self, values: list[str]) -> tuple[npt.NDArray[np.float32], list[str]]:
        """Attack probability (1 - P(benign)) and the most likely family, per value."""
        probs = self.probabilities(values)
        if not values:
            return np.zeros(0, dtype=np.float32), []
        attack = 1.0 - probs[:, self._benign]
        best = probs[:, self._attack_columns].argmax(axis=1)
        return attack, [self.classes[self._attack_columns[i]] for i in best]


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
