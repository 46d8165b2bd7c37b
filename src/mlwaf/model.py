"""Model runtime: load a trained model once, score many input values per call.

A model is a metadata JSON file next to its exported files::

    attack.json         {"name": "attack", "kind": "char-cnn", "spec": "bytes-v1",
                         "classes": ["benign", "sqli", ...],
                         "files": {"litert-int8": "attack-int8.tflite", "litert-float": "attack.tflite",
                                   "tensorflow": "attack.keras"},
                         "sha256": {"attack-int8.tflite": "<hex>", ...},
                         "thresholds": {"litert-int8": {"block": 0.9, "log": 0.7}, ...}, ...}
    attack-int8.tflite  the network, int8-quantized, one signature per batch shape (LiteRT)
    attack.tflite       the same in float32 (LiteRT)
    attack.keras        the trained Keras model (full TensorFlow, only when asked for)

A *runtime* picks one of them: ``litert-int8`` (the default), ``litert-float``
or ``tensorflow``. Loading checks the file's checksum and the feature-spec
version, so a damaged or mismatched model is refused with a readable reason
instead of scoring nonsense. Each runtime has its own calibrated thresholds
(quantization moves scores a little).

Real traffic repeats itself (page numbers, sort keys, user names, search
terms), so each model remembers the scores of the last CACHE_ENTRIES short
values it saw. A score depends only on the value, so the cache changes the
cost of a request, never its verdict.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mlwaf.config import RUNTIMES
from mlwaf.features import SHAPES, SPEC_VERSION, fit_length, fit_rows, signature, windows
from mlwaf.files import read_json

BENIGN = "benign"
FAMILIES = (BENIGN, "sqli", "xss", "cmdi", "traversal")  # the attack model's classes
KIND = "char-cnn"
DEFAULT_RUNTIME = RUNTIMES[0]
CACHE_ENTRIES = 16384  # per model and worker process; oldest entry dropped first
CACHE_MAX_CHARS = 256  # longer values are scored every time (bounds the cache at a few MB)

# A backend maps a batch of id rows (rows x length, int32) to class probabilities (rows x classes).
Backend = Callable[[npt.NDArray[np.int32]], npt.NDArray[np.float32]]


class ModelError(RuntimeError):
    """A model file that cannot be used."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def litert_backend(
    path: Path, threads: int = 1, key: Callable[[int, int], str] = signature, input_name: str = "ids"
) -> Backend:
    """Run an exported ``.tflite`` file with LiteRT, one fixed-shape signature per batch shape
    (``key`` names a shape's signature)."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 - only this runtime needs it
    except ImportError:
        raise ModelError("the litert runtimes need the ai-edge-litert package") from None
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"LiteRT cannot load {path.name}: {exc}") from None
    runners: dict[str, Callable[..., dict[str, npt.NDArray[np.float32]]]] = {}

    def run(batch: npt.NDArray) -> npt.NDArray[np.float32]:
        name = key(*batch.shape)
        runner = runners.get(name)
        if runner is None:
            runner = runners[name] = interpreter.get_signature_runner(name)
        return runner(**{input_name: batch})["probs"]

    return run


def keras_backend(path: Path) -> Backend:
    """Run the trained ``.keras`` model with full TensorFlow (slower to start, same shapes)."""
    try:
        import keras  # noqa: PLC0415 - optional and heavy
    except ImportError:
        raise ModelError("the tensorflow runtime needs TensorFlow (pip install 'mlwaf[tensorflow]')") from None
    try:
        network = keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"Keras cannot load {path.name}: {exc}") from None
    return lambda ids: np.asarray(network(ids, training=False), dtype=np.float32)


@dataclass
class AttackModel:
    """Per-value attack probabilities from the character-level network."""

    name: str
    version: str
    classes: list[str]
    backend: Backend
    thresholds: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, object] = field(default_factory=dict)
    # An OrderedDict, not a dict: dropping a plain dict's oldest key with next(iter(...))
    # scans the deleted slots before it, ~12 us per new value at this size.
    _cache: OrderedDict[str, tuple[float, str]] = field(
        default_factory=OrderedDict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if BENIGN not in self.classes:
            raise ModelError(f"model {self.name}: classes must include {BENIGN!r}")
        self._benign = self.classes.index(BENIGN)
        self._attack_columns = [i for i, c in enumerate(self.classes) if c != BENIGN]

    @property
    def families(self) -> list[str]:
        return [self.classes[i] for i in self._attack_columns]

    def probabilities(self, values: list[str]) -> npt.NDArray[np.float32]:
        """Class probabilities, one row per value (a long value: its most attack-like window)."""
        rows: list[npt.NDArray[np.int32]] = []
        owner: list[int] = []
        for index, value in enumerate(values):
            for row in windows(value):
                rows.append(row)
                owner.append(index)
        # A window seen before in this batch (filler repeated through a long value) is read once.
        first_of: dict[bytes, int] = {}
        same = [first_of.setdefault(row.tobytes(), number) for number, row in enumerate(rows)]
        by_length: dict[int, list[int]] = {}
        for number, row in enumerate(rows):
            if same[number] == number:
                by_length.setdefault(fit_length(max(row.size, 1)), []).append(number)
        row_probs = np.empty((len(rows), len(self.classes)), dtype=np.float32)
        for length, members in by_length.items():
            start = 0
            while start < len(members):
                count = fit_rows(len(members) - start, length)
                chunk = members[start : start + count]
                batch = np.zeros((count, length), dtype=np.int32)
                for slot, number in enumerate(chunk):
                    batch[slot, : rows[number].size] = rows[number]
                row_probs[chunk] = self.backend(batch)[: len(chunk)]
                start += count
        if len(first_of) < len(rows):
            row_probs = row_probs[same]
        if len(rows) == len(values):
            return row_probs
        # Several windows per value: keep each value's window with the lowest P(benign).
        order = np.lexsort((row_probs[:, self._benign], np.asarray(owner)))
        first = np.unique(np.asarray(owner)[order], return_index=True)[1]
        return row_probs[order[first]]

    def warm_up(self) -> None:
        """Run every exported batch shape once. The daemon does this before it forks, so
        the workers inherit ready runners instead of each paying for them (milliseconds
        per shape) on its first requests."""
        for rows, length in SHAPES:
            self.backend(np.zeros((rows, length), dtype=np.int32))

    def score(self, values: list[str]) -> tuple[npt.NDArray[np.float32], list[str]]:
        """Attack probability (1 - P(benign)) and the most likely family, per value."""
        cache = self._cache
        found: list[tuple[float, str]] = [cache.get(v) for v in values]  # type: ignore[misc]
        missing = [i for i, hit in enumerate(found) if hit is None]
        if missing:
            fresh = [values[i] for i in missing]
            probs = self.probabilities(fresh)
            attack = (1.0 - probs[:, self._benign]).clip(0.0, 1.0).tolist()
            best = probs[:, self._attack_columns].argmax(axis=1)
            for i, value, score, column in zip(missing, fresh, attack, best, strict=True):
                found[i] = (score, self.classes[self._attack_columns[column]])
                if len(value) <= CACHE_MAX_CHARS and CACHE_ENTRIES > 0:
                    if len(cache) >= CACHE_ENTRIES:
                        cache.popitem(last=False)
                    cache[value] = found[i]
        return np.array([s for s, _ in found], dtype=np.float32), [f for _, f in found]

    def score_excluding(self, values: list[str], excluded: set[str]) -> tuple[npt.NDArray[np.float32], list[str]]:
        """Like score, with the ``excluded`` families counted as benign: the probability of the
        other attack families, and the likeliest of them (not cached: site tuning's few inputs)."""
        columns = [i for i in self._attack_columns if self.classes[i] not in excluded]
        if not values or not columns:
            return np.zeros(len(values), dtype=np.float32), [BENIGN] * len(values)
        probs = self.probabilities(values)[:, columns]
        best = probs.argmax(axis=1)
        return probs.sum(axis=1).clip(0.0, 1.0).astype(np.float32), [self.classes[columns[i]] for i in best]


def read_metadata(path: Path, kind: str = KIND, spec: str = SPEC_VERSION) -> dict:
    """A model's metadata, refused unless it is of this ``kind`` and feature ``spec``."""
    meta = read_json(path, ModelError, "model metadata")
    if not isinstance(meta, dict):
        raise ModelError(f"model metadata {path} must be a JSON object")
    if meta.get("kind") != kind:
        raise ModelError(f"model {path}: unsupported kind {meta.get('kind')!r} (expected {kind})")
    if meta.get("spec") != spec:
        raise ModelError(f"model {path}: feature spec {meta.get('spec')!r} does not match this analyzer's {spec!r}")
    return meta


def verified_file(path: Path, meta: dict, runtime: str) -> Path:
    """The file a runtime runs, once its checksum matches the metadata's."""
    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    name = str((meta.get("files") or {}).get(runtime, ""))
    if not name:
        raise ModelError(f"model {path}: no file for the {runtime} runtime")
    model_file = path.parent / name
    if not model_file.is_file():
        raise ModelError(f"model {path}: {runtime} file {model_file} is missing")
    actual = sha256_file(model_file)
    if actual != (meta.get("sha256") or {}).get(name):
        raise ModelError(f"model {path}: checksum mismatch for {name} (got {actual})")
    return model_file


def load_model(metadata_path: str | Path, runtime: str = DEFAULT_RUNTIME) -> AttackModel:
    """Load and verify a model from its metadata JSON file, for one runtime."""
    path = Path(metadata_path)
    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    meta = read_metadata(path)
    model_file = verified_file(path, meta, runtime)
    backend = keras_backend(model_file) if runtime == "tensorflow" else litert_backend(model_file)
    thresholds = (meta.get("thresholds") or {}).get(runtime) or {}
    return AttackModel(
        name=str(meta.get("name", path.stem)),
        version=str(meta.get("version", "")),
        classes=[str(c) for c in meta.get("classes", [])],
        backend=backend,
        thresholds={str(k): float(v) for k, v in thresholds.items()},
        metadata=meta,
    )
