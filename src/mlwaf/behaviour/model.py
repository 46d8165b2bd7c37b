"""The flood/bot model at run time: a client's features in, the kind of client out.

A small dense network (``mlwaf train flood``) reads one client's window
features (``mlwaf.behaviour.features``, spec ``window-v1``: the fields in
``NAMES`` order, counts and rates and times as ``log1p``) and gives the
probability of each class: a normal visitor, a flood, a scanner, a bot
(crawler or scripted browser), credential stuffing. Files and checks are the
attack model's (``mlwaf.model``): a metadata JSON, ``.tflite`` files for
LiteRT (float and int8), the ``.keras`` file, checksums and the spec verified
at load time.

The model's probability is put on the behavioural layer's score scale, so
its findings sit with the heuristics' and the same confidence threshold
acts on them: a probability at the model's calibrated block threshold scores
0.6 (the confidence threshold), 1.0 scores 1.0; between its log threshold and
its block threshold it scores 0.3 to 0.6 (logged only). The evidence names
the model, the probability and the three features furthest from the normal
visitors the model learned from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mlwaf.behaviour.detect import Finding
from mlwaf.behaviour.features import NAMES, Features
from mlwaf.model import Backend, ModelError, keras_backend, litert_backend, read_metadata, verified_file

KIND = "window-mlp"
SPEC = "window-v1"
NORMAL = "normal"
CLASSES = (NORMAL, "flood", "scanner", "bot", "credential-stuffing")
LOGGED = frozenset({"count", "rate", "burst", "distinct_params", "page_gap"})  # fed as log1p
BATCHES = (1, 256)  # exported signatures: one client at a time (the daemon), many (evaluation)
CONFIDENCE = 0.6  # the policy's confidence threshold the block threshold is mapped to
PERSISTENCE = 5  # findings in a row before the model's verdict is acted on (see the engine)
MIN_HISTORY = 20  # requests in the window before the model judges (at ten, quick people passed for bots)


def batch_key(rows: int, width: int = len(NAMES)) -> str:
    return f"rows_{rows}"


def vector(features: Features) -> npt.NDArray[np.float32]:
    """The model's input for one client (spec window-v1)."""
    values = [float(getattr(features, name)) for name in NAMES]
    return np.array(
        [np.log1p(max(v, 0.0)) if name in LOGGED else v for name, v in zip(NAMES, values, strict=True)],
        dtype=np.float32,
    )


@dataclass
class WindowModel:
    version: str
    classes: list[str]
    backend: Backend
    block: float
    log: float
    normal: dict[str, tuple[float, float]] = field(default_factory=dict)  # per feature: mean and sd of normal
    metadata: dict[str, object] = field(default_factory=dict)

    def probabilities(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Class probabilities, one row per input row (any number of rows)."""
        out = np.empty((len(rows), len(self.classes)), dtype=np.float32)
        for start in range(0, len(rows), BATCHES[-1]):
            chunk = rows[start : start + BATCHES[-1]]
            if len(chunk) == 1:
                out[start] = self.backend(np.ascontiguousarray(chunk, dtype=np.float32))[0]
                continue
            batch = np.zeros((BATCHES[-1], len(NAMES)), dtype=np.float32)
            batch[: len(chunk)] = chunk
            out[start : start + len(chunk)] = self.backend(batch)[: len(chunk)]
        return out

    def finding(self, features: Features) -> Finding | None:
        """The most likely kind of attacker, when the model is sure enough to log it."""
        x = vector(features)
        probs = self.probabilities(x[None, :])[0]
        column = 1 + int(probs[1:].argmax())
        p = float(probs[column])
        if p < self.log:
            return None
        kind = self.classes[column]
        if p >= self.block:
            score = CONFIDENCE + (1.0 - CONFIDENCE) * (p - self.block) / max(1.0 - self.block, 1e-6)
        else:
            score = 0.3 + (CONFIDENCE - 0.3) * (p - self.log) / max(self.block - self.log, 1e-6)
        evidence = f"model {self.version} p({kind}) {p:.3f}; {self.unusual(x)}"
        return Finding(kind, min(score, 1.0), evidence, self.status(kind), by_model=True)

    def unusual(self, x: npt.NDArray[np.float32]) -> str:
        """The three features furthest from normal visitors (in their standard deviations)."""
        far = []
        for index, name in enumerate(NAMES):
            mean, sd = self.normal.get(name, (0.0, 1.0))
            far.append((abs(float(x[index]) - mean) / max(sd, 1e-3), name))
        raw = {name: float(x[i]) for i, name in enumerate(NAMES)}
        shown = []
        for _, name in sorted(far, reverse=True)[:3]:
            value = np.expm1(raw[name]) if name in LOGGED else raw[name]
            shown.append(f"{name} {value:.2f}")
        return ", ".join(shown)

    @staticmethod
    def status(kind: str) -> int:
        return 429 if kind == "flood" else 403

    def warm_up(self) -> None:
        for rows in BATCHES:
            self.backend(np.zeros((rows, len(NAMES)), dtype=np.float32))


def load_window_model(metadata_path: str | Path, runtime: str = "litert-int8", calibrated: bool = True) -> WindowModel:
    """Load and verify the flood/bot model from its metadata JSON file (``calibrated=False``:
    one still without thresholds, for training to set them)."""
    path = Path(metadata_path)
    meta = read_metadata(path, KIND, SPEC)
    if list(meta.get("features") or []) != list(NAMES):
        raise ModelError(f"model {path}: its features differ from this analyzer's ({', '.join(NAMES)})")
    classes = [str(c) for c in meta.get("classes") or []]
    if not classes or classes[0] != NORMAL:
        raise ModelError(f"model {path}: the first class must be {NORMAL!r}")
    model_file = verified_file(path, meta, runtime)
    if runtime == "tensorflow":
        backend = keras_backend(model_file)
    else:
        backend = litert_backend(model_file, key=batch_key, input_name="features")
    limits = (meta.get("thresholds") or {}).get(runtime) or ({} if calibrated else {"block": 1.0, "log": 1.0})
    if not {"block", "log"} <= set(limits):
        raise ModelError(f"model {path}: no thresholds for the {runtime} runtime")
    normal = {str(k): (float(v[0]), float(v[1])) for k, v in (meta.get("normal") or {}).items()}
    return WindowModel(
        version=str(meta.get("version", "")),
        classes=classes,
        backend=backend,
        block=float(limits["block"]),
        log=float(limits["log"]),
        normal=normal,
        metadata=meta,
    )
