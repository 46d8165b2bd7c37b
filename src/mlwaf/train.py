"""Train the hashed n-gram attack model (softmax regression) and write it out.

Deterministic: fixed seed, fixed data order, no network. The result is a
weights file, a metadata JSON the runtime checks at load time, and a model
card with the evaluation on the untouched test split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mlwaf.datasets import FAMILIES, Sample, training_and_test
from mlwaf.features import SPEC_VERSION, hash_ngrams
from mlwaf.model import AttackModel, sha256_file

Progress = Callable[[int, int], None]
MIN_BLOCK_THRESHOLD = 0.9


@dataclass(frozen=True)
class TrainSettings:
    bits: int = 16
    epochs: int = 6
    batch: int = 1024
    learning_rate: float = 0.05
    l2: float = 1e-6
    seed: int = 7
    target_fpr: float = 0.001  # block threshold: at most this share of held-out benign values above it


def _csr(texts: list[str], bits: int, chunk: int = 20000) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Bucket ids of all texts, grouped per text, and the row offsets."""
    parts, lengths = [], []
    for start in range(0, len(texts), chunk):
        batch = texts[start : start + chunk]
        buckets, owner = hash_ngrams(batch, bits)
        order = np.argsort(owner, kind="stable")
        parts.append(buckets[order])
        lengths.append(np.bincount(owner, minlength=len(batch)))
    indptr = np.concatenate(([0], np.cumsum(np.concatenate(lengths))))
    return np.concatenate(parts), indptr


def _gather(rows: npt.NDArray[np.intp], indices: npt.NDArray[np.intp], indptr: npt.NDArray[np.intp]):
    starts, ends = indptr[rows], indptr[rows + 1]
    lengths = ends - starts
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    positions = np.repeat(starts - offsets, lengths) + np.arange(lengths.sum())
    return indices[positions], offsets, np.repeat(np.arange(rows.size), lengths)


def fit(samples: list[Sample], settings: TrainSettings, progress: Progress | None = None) -> AttackModel:
    rng = np.random.default_rng(settings.seed)
    labels = np.array([FAMILIES.index(s.family) for s in samples], dtype=np.intp)
    indices, indptr = _csr([s.text for s in samples], settings.bits)
    classes = len(FAMILIES)
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    class_weight = (counts.sum() / (classes * np.maximum(counts, 1))).astype(np.float32)
    weights = np.zeros((1 << settings.bits, classes), dtype=np.float32)
    bias = np.zeros(classes, dtype=np.float32)
    m, v = np.zeros_like(weights), np.zeros_like(weights)
    steps = settings.epochs * -(-len(samples) // settings.batch)
    beta1, beta2, eps, step = 0.9, 0.999, 1e-8, 0
    for _ in range(settings.epochs):
        order = rng.permutation(len(samples))
        for start in range(0, len(samples), settings.batch):
            rows = order[start : start + settings.batch]
            cols, offsets, owner = _gather(rows, indices, indptr)
            logits = np.add.reduceat(weights[cols], offsets, axis=0) + bias
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(axis=1, keepdims=True)
            probs[np.arange(rows.size), labels[rows]] -= 1.0
            grad_rows = probs * class_weight[labels[rows], None] / rows.size
            touched, inverse = np.unique(cols, return_inverse=True)
            grad = np.stack(
                [np.bincount(inverse, weights=grad_rows[owner, c], minlength=touched.size) for c in range(classes)],
                axis=1,
            ).astype(np.float32)
            grad += settings.l2 * weights[touched]
            step += 1
            # Lazy Adam: only the rows this batch touched move.
            m[touched] = beta1 * m[touched] + (1 - beta1) * grad
            v[touched] = beta2 * v[touched] + (1 - beta2) * grad * grad
            scale = settings.learning_rate * np.sqrt(1 - beta2**step) / (1 - beta1**step)
            weights[touched] -= scale * m[touched] / (np.sqrt(v[touched]) + eps)
            bias -= settings.learning_rate * grad_rows.sum(axis=0)
            if progress:
                progress(step, steps)
    return AttackModel("attack", "", list(FAMILIES), settings.bits, weights, bias)


def rates(model: AttackModel, samples: list[Sample], threshold: float) -> dict[str, dict[str, float]]:
    """Detection rate per attack family and false-positive rate on benign values."""
    scores = _scores(model, samples)
    table: dict[str, dict[str, float]] = {}
    for family in FAMILIES:
        mask = np.array([s.family == family for s in samples])
        if mask.any():
            key = "fpr" if family == "benign" else "tpr"
            table[family] = {"n": int(mask.sum()), key: float((scores[mask] >= threshold).mean())}
    return table


def _scores(model: AttackModel, samples: list[Sample]) -> npt.NDArray[np.float32]:
    return model.score([s.text for s in samples])[0]


def calibrate(model: AttackModel, benign: list[Sample], target_fpr: float) -> float:
    """The lowest threshold at which at most ``target_fpr`` of these benign values score above it."""
    scores = np.sort(_scores(model, benign))
    allowed = int(np.floor(target_fpr * scores.size))
    # Never below MIN_BLOCK_THRESHOLD: the calibration values are easier than real traffic, and
    # attacks score near 1.0 anyway, so a high bar costs little detection.
    return float(min(0.99, max(MIN_BLOCK_THRESHOLD, scores[scores.size - allowed - 1] + 1e-4)))


def train_attack(
    data_root: Path,
    out_dir: Path,
    settings: TrainSettings,
    progress: Progress | None = None,
    extra: list[Sample] | None = None,
) -> dict:
    """Train, calibrate, evaluate and write the attack model; returns its metadata.
    ``extra`` (operator-labelled values) joins the training side only."""
    train, test = training_and_test(data_root, settings.seed)
    test_texts = {s.text for s in test}
    train += [s for s in extra or [] if s.text not in test_texts]
    rng = np.random.default_rng(settings.seed)
    held_out = set(rng.choice(len(train), size=len(train) // 10, replace=False).tolist())
    fit_part = [s for i, s in enumerate(train) if i not in held_out]
    # Calibrate on real benign values only: the generated ones are too easy to set a threshold with.
    calibration = [
        s
        for i, s in enumerate(train)
        if i in held_out and s.family == "benign" and not s.source.startswith("generated")
    ]
    model = fit(fit_part, settings, progress)
    block = calibrate(model, calibration, settings.target_fpr)
    log = round(max(0.5, block - 0.2), 4)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / "attack.npz"
    np.savez_compressed(weights_path, W=model.weights.astype(np.float16), b=model.bias)
    digest = hashlib.sha256()
    for s in train:
        digest.update(f"{s.source}\t{s.family}\t{s.text}\n".encode())
    meta = {
        "name": "attack",
        "kind": "ngram-linear",
        "spec": SPEC_VERSION,
        "version": f"ngram-{sha256_file(weights_path)[:12]}",
        "classes": list(FAMILIES),
        "bits": settings.bits,
        "weights": weights_path.name,
        "sha256": sha256_file(weights_path),
        "thresholds": {"block": round(block, 4), "log": log},
        "training": {
            "samples": len(fit_part),
            "calibration_benign": len(calibration),
            "data_sha256": digest.hexdigest(),
            "extra_samples": len(extra or []),
            "settings": settings.__dict__,
        },
        "test": rates(model, test, block),
    }
    (out_dir / "attack.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    write_checksums(out_dir)
    return meta


def write_checksums(folder: Path) -> None:
    """SHA256SUMS for every model file in the folder, in sha256sum's format."""
    files = sorted(p for p in folder.iterdir() if p.suffix in {".json", ".npz", ".tflite", ".keras"})
    lines = [f"{sha256_file(p)}  {p.name}\n" for p in files]
    (folder / "SHA256SUMS").write_text("".join(lines), encoding="utf-8")
