"""Train the attack network, export it for LiteRT and write its files.

Deterministic: fixed seeds, deterministic TensorFlow ops, fixed data order,
no network. Writes ``attack.keras``, ``attack.tflite`` (float32),
``attack-int8.tflite``, the metadata JSON the runtime checks at load time
(feature spec, per-runtime thresholds, data hash, test rates) and
``SHA256SUMS``; the model card is ``files/models/README.md``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mlwaf import __version__
from mlwaf.features import SPEC_VERSION, windows
from mlwaf.model import KIND, AttackModel, load_model, read_metadata, sha256_file
from mlwaf.training.augment import variants
from mlwaf.training.datasets import FAMILIES, Sample, training_and_test
from mlwaf.training.neural import NetworkSettings, ensemble, export_tflite, fit
from mlwaf.training.traffic import request_inputs, source_roles

Progress = Callable[[int, int], None]
MIN_BLOCK_THRESHOLD = 0.9
MAX_BLOCK_THRESHOLD = 0.99
FILES = {"litert-int8": "attack-int8.tflite", "litert-float": "attack.tflite", "tensorflow": "attack.keras"}
SIZE_LIMIT = 1_000_000  # bytes per model file


@dataclass(frozen=True)
class TrainSettings:
    network: NetworkSettings = field(default_factory=NetworkSettings)
    augment_share: float = 0.3  # of the attack values get one evasion variant
    target_fpr: float = 0.001  # block threshold: at most this share of held-out benign values above it
    members: int = 2  # networks averaged (seeds seed, seed + 1, ...): each one adds ~0.06 ms per request
    source_balance: float = 0.5  # 0: a family's sources weigh as many values as they have; 1: all alike

    @property
    def seed(self) -> int:
        return self.network.seed


def rates(model: AttackModel, samples: list[Sample], threshold: float) -> dict[str, dict[str, float]]:
    """Detection rate per attack family and false-positive rate on benign values."""
    scores = model.score([s.text for s in samples])[0]
    table: dict[str, dict[str, float]] = {}
    for family in FAMILIES:
        mask = np.array([s.family == family for s in samples])
        if mask.any():
            key = "fpr" if family == "benign" else "tpr"
            table[family] = {"n": int(mask.sum()), key: float((scores[mask] >= threshold).mean())}
    return table


def request_scores(model: AttackModel, requests: list[list[str]]) -> npt.NDArray[np.float32]:
    """Each request's top score (the one its verdict depends on); 0 for a request with no input."""
    values = [value for inputs in requests for value in inputs]
    scores = model.score(values)[0] if values else np.zeros(0, dtype=np.float32)
    out = np.zeros(len(requests), dtype=np.float32)
    start = 0
    for number, inputs in enumerate(requests):
        if inputs:
            out[number] = scores[start : start + len(inputs)].max()
        start += len(inputs)
    return out


def calibrate(model: AttackModel, sources: dict[str, list[list[str]]], target_fpr: float) -> dict[str, float]:
    """Block at the lowest threshold that refuses at most ``target_fpr`` of each source's benign
    requests (each its scored inputs), the constraint being per source as the target is; never
    below MIN_BLOCK_THRESHOLD (attacks score near 1.0, so a high bar costs little) nor above
    MAX_BLOCK_THRESHOLD. A source that no threshold up to that maximum keeps within its share
    (requests scored near 1.0) has no say: raising the bar for it would cost detection and still
    leave it over. Log 0.2 lower."""
    block = MIN_BLOCK_THRESHOLD
    for requests in sources.values():
        scores = np.sort(request_scores(model, requests))
        allowed = int(np.floor(target_fpr * scores.size))
        if scores.size > allowed:
            needed = float(scores[scores.size - allowed - 1]) + 1e-4
            block = max(block, needed) if needed <= MAX_BLOCK_THRESHOLD else block
    return {"block": round(block, 4), "log": round(max(0.5, block - 0.2), 4)}


def source_weights(samples: list[Sample], balance: float) -> npt.NDArray[np.float32]:
    """Each value's weight in the loss. Every family weighs the same in all (as
    ``neural.balanced_weights``); within a family, a source of n values weighs in
    proportion to n ** (1 - balance), its augmented variants counted with it. A large
    template-made source then no longer drowns the small real ones that unseen traffic
    resembles more."""
    families = np.array([FAMILIES.index(s.family) for s in samples])
    # a real-traffic folder is one source here, however many sites it holds ("folder:site")
    groups = [(s.family, s.source.removesuffix("+augmented").split(":", 1)[0]) for s in samples]
    sizes = Counter(groups)
    raw = np.array([float(sizes[g]) ** -balance for g in groups])
    out = np.empty(len(samples), dtype=np.float64)
    for family in np.unique(families):
        mask = families == family
        out[mask] = raw[mask] * len(samples) / (len(FAMILIES) * raw[mask].sum())
    return out.astype(np.float32)


def _share(progress: Progress | None, number: int, members: int) -> Progress | None:
    """Member ``number``'s part of the progress bar over all ``members`` networks."""
    if progress is None:
        return None
    return lambda done, total: progress(number * total + done, members * total)


def _rows(samples: list[Sample]) -> list[npt.NDArray[np.int32]]:
    return [windows(s.text)[0] for s in samples]


def _data_hash(samples: list[Sample]) -> str:
    digest = hashlib.sha256()
    for s in samples:
        digest.update(f"{s.source}\t{s.family}\t{s.text}\n".encode())
    return digest.hexdigest()


def train_attack(
    data_root: Path,
    out_dir: Path,
    settings: TrainSettings,
    progress: Progress | None = None,
    extra: list[Sample] | None = None,
) -> dict:
    """Train, export, calibrate and evaluate the attack model; returns its metadata.

    10% of the training side is held out: its real benign values set the
    thresholds, and all of it gives the validation rates that choose between
    settings (the test split only reports). ``extra`` (operator-labelled
    values) joins the training side only."""
    seed = settings.seed
    train, fit_part, validation, test = split(data_root, settings, extra)
    test_texts = {s.text for s in test}
    fit_part += [s for s in variants(fit_part, settings.augment_share, seed) if s.text not in test_texts]
    # Calibrate on whole requests of real sources that neither training nor the test saw.
    calibration = request_inputs(data_root, "calibration")
    labels = np.array([FAMILIES.index(s.family) for s in fit_part], dtype=np.intp)
    rows = _rows(fit_part)
    weights = source_weights(fit_part, settings.source_balance)
    members = settings.members
    network = ensemble(
        [
            fit(
                rows,
                labels,
                len(FAMILIES),
                replace(settings.network, seed=seed + n),
                progress=_share(progress, n, members),
                weights=weights,
            )
            for n in range(members)
        ]
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    exported = export_tflite(network, _rows(fit_part[:: max(1, len(fit_part) // 2000)]), seed)
    (out_dir / FILES["litert-float"]).write_bytes(exported["float"])
    (out_dir / FILES["litert-int8"]).write_bytes(exported["int8"])
    network.save(out_dir / FILES["tensorflow"])
    weights = hashlib.sha256(b"".join(w.tobytes() for w in network.get_weights())).hexdigest()
    meta: dict = {
        "name": "attack",
        "kind": KIND,
        "spec": SPEC_VERSION,
        "version": f"cnn-{weights[:12]}",
        "release": __version__,  # the mlwaf release the model ships with
        "classes": list(FAMILIES),
        "files": FILES,
        "sha256": {name: sha256_file(out_dir / name) for name in FILES.values()},
        "bytes": {name: (out_dir / name).stat().st_size for name in FILES.values()},
        "thresholds": {},
        "training": {
            "samples": len(fit_part),
            "augmented": sum(s.source.endswith("+augmented") for s in fit_part),
            "calibration_requests": {source: len(requests) for source, requests in calibration.items()},
            "data_sha256": _data_hash(train),
            "extra_samples": len(extra or []),
            "real_sources": source_roles(data_root),  # which real sources trained, calibrated, tested
            "settings": asdict(settings),
        },
        "validation": {},
        "test": {},
    }
    metadata_path = out_dir / "attack.json"
    metadata_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    _thresholds_and_rates(metadata_path, meta, calibration, validation, test, target_fpr=settings.target_fpr)
    too_big = [name for name, size in meta["bytes"].items() if size > SIZE_LIMIT]
    if too_big:
        raise RuntimeError(f"model files over {SIZE_LIMIT} bytes: {', '.join(too_big)}")
    return meta


def split(
    data_root: Path, settings: TrainSettings, extra: list[Sample] | None = None
) -> tuple[list[Sample], list[Sample], list[Sample], list[Sample]]:
    """The training side, the part of it fitted on, the held-out tenth (validation) and the test."""
    train, test = training_and_test(data_root, settings.seed)
    test_texts = {s.text for s in test}
    train += [s for s in extra or [] if s.text not in test_texts]
    rng = np.random.default_rng(settings.seed)
    held_out = set(rng.choice(len(train), size=len(train) // 10, replace=False).tolist())
    fit_part = [s for i, s in enumerate(train) if i not in held_out]
    return train, fit_part, [s for i, s in enumerate(train) if i in held_out], test


def _thresholds_and_rates(
    metadata_path: Path,
    meta: dict,
    calibration: dict[str, list[list[str]]],
    validation: list[Sample],
    test: list[Sample],
    *,
    target_fpr: float,
) -> None:
    """Each runtime's calibrated thresholds, validation and test rates, into the metadata file."""
    for runtime in FILES:
        model = load_model(metadata_path, runtime)
        meta["thresholds"][runtime] = calibrate(model, calibration, target_fpr)
        meta["validation"][runtime] = rates(model, validation, meta["thresholds"][runtime]["block"])
        meta["test"][runtime] = rates(model, test, meta["thresholds"][runtime]["block"])
    metadata_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    write_checksums(metadata_path.parent)


def recalibrate(data_root: Path, metadata_path: Path) -> dict:
    """Thresholds and rates of a trained model set again from the data (the same calibration
    a training run ends with), for the settings it was trained with; returns its metadata."""
    meta = read_metadata(metadata_path)
    saved = meta["training"]["settings"]
    settings = TrainSettings(**{**saved, "network": NetworkSettings(**saved["network"])})
    _, _, validation, test = split(data_root, settings)
    calibration = request_inputs(data_root, "calibration")
    meta["training"]["calibration_requests"] = {source: len(requests) for source, requests in calibration.items()}
    meta["training"]["real_sources"] = source_roles(data_root)
    meta.update(thresholds={}, validation={}, test={})
    _thresholds_and_rates(metadata_path, meta, calibration, validation, test, target_fpr=settings.target_fpr)
    return meta


def write_checksums(folder: Path) -> None:
    """SHA256SUMS for every model file in the folder, in sha256sum's format."""
    files = sorted(p for p in folder.iterdir() if p.suffix in {".json", ".tflite", ".keras"})
    lines = [f"{sha256_file(p)}  {p.name}\n" for p in files]
    (folder / "SHA256SUMS").write_text("".join(lines), encoding="utf-8")
