"""``mlwaf train flood``: the flood/bot model, from generated traffic, checked on real logs.

Training data is traffic from ``mlwaf.training.simulate`` with its settings
drawn at random per run (rates, clocks, jitter, waits, how many URLs), so the
model learns kinds of clients rather than one generator's constants:

- normal: browsing sessions on CSIC 2010's site and on the demo site, plus
  the Iliou human sessions the dataset's annotations put on the training side;
- flood (1-4 URLs, 5-150 req/s), scanner (0.5-15 req/s), bot (crawlers on a
  clock of 0.2-5 s with 0-30% jitter, and scripted browsers waiting between
  ``w`` and 1.2-2 ``w`` seconds between pages, ``w`` from 0.5 to 4 s),
  credential stuffing (0.3-10 logins a second).

A scripted browser that waits like a person (seconds, as irregularly) has
nothing left in these features that tells it from one: with such bots in
the bot class the model learned to call quick human sessions bots (1 in
4,000 over the block threshold), so the bot class holds the ones that are
faster or more regular than people.

Every run is replayed through the tracker as the daemon would see it, and
every request of a client with at least five in its window gives one row of
features (``mlwaf.behaviour.model.vector``) labelled with the run's class.
Three generations with different seeds: training, validation (10,000 normal
sessions; sets the thresholds: no validation normal session may reach the
block threshold) and test. Then the real logs, which training never saw as attacks: the Iliou bot
sessions and the held-back Iliou humans, and the three scanners' logs.

Deterministic: fixed seeds, deterministic TensorFlow ops, fixed data order.
Writes ``flood.keras``, ``flood.tflite``, ``flood-int8.tflite``,
``flood.json`` and updates ``SHA256SUMS``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from mlwaf import __version__
from mlwaf.behaviour.engine import event_of
from mlwaf.behaviour.features import NAMES, compute
from mlwaf.behaviour.model import (
    BATCHES,
    CLASSES,
    KIND,
    MIN_HISTORY,
    NORMAL,
    PERSISTENCE,
    SPEC,
    batch_key,
    load_window_model,
    vector,
)
from mlwaf.behaviour.tracker import LocalTracker
from mlwaf.config import BehaviourSettings
from mlwaf.model import sha256_file
from mlwaf.request import RequestError, from_wire
from mlwaf.training.datasets import csic_split
from mlwaf.training.neural import balanced_weights, check_forward, to_litert, trainer
from mlwaf.training.reallogs import annotated_training, iliou, scanners
from mlwaf.training.simulate import DEMO_SITE, Generator, Page, site_from_requests
from mlwaf.training.train import SIZE_LIMIT, write_checksums

Progress = Callable[[int, int], None]
FILES = {"litert-int8": "flood-int8.tflite", "litert-float": "flood.tflite", "tensorflow": "flood.keras"}
NORMAL_WEIGHT = 6.0  # on top of balancing the classes: a false block costs more than a late one
CLASS_OF = {
    "normal": NORMAL,
    "human": NORMAL,
    "flood": "flood",
    "scanner": "scanner",
    "crawler": "bot",
    "headless": "bot",
    "moderate_bot": "bot",
    "advanced_bot": "bot",
    "stuffing": "credential-stuffing",
}


@dataclass(frozen=True)
class FloodSettings:
    seed: int = 7
    epochs: int = 12
    hidden: int = 32
    batch: int = 256
    learning_rate: float = 3e-3
    sessions: int = 4000  # normal sessions per generation on CSIC's site (a third as many on the demo site)
    # the validation generation's (it sets the block threshold, for a target of no false block in 10,000)
    validation_sessions: int = 10_000
    runs: int = 150  # runs of each attack kind per generation


@dataclass
class Rows:
    """Feature rows with their class and the session they came from."""

    x: npt.NDArray[np.float32]
    label: npt.NDArray[np.intp]
    session: list[str]

    @staticmethod
    def join(parts: list[Rows]) -> Rows:
        return Rows(
            np.concatenate([p.x for p in parts]).astype(np.float32),
            np.concatenate([p.label for p in parts]).astype(np.intp),
            [s for p in parts for s in p.session],
        )


def generated(sites: list[tuple[Page, ...]], seed: int, settings: FloodSettings) -> Iterator[dict]:
    """One generation of labelled traffic (records of every run, each run its own client)."""
    rng = np.random.default_rng(seed)
    for number, site in enumerate(sites):
        sessions = settings.sessions if number == 0 else settings.sessions // 3
        for record in Generator(site, seed=seed * 100 + number).normal(sessions):
            record["session"] = f"{seed}-{number}-{record['session']}"
            yield record

    def u(low: float, high: float) -> float:
        return float(rng.uniform(low, high))

    def n(low: int, high: int) -> int:
        return int(rng.integers(low, high))

    kinds: list[Callable[[Generator], Iterator[dict]]] = [
        lambda g: g.flood(seconds=u(3, 15), rate=u(5, 150), targets=n(1, 5)),
        lambda g: g.scanner(n(20, 80), rate=u(0.5, 15)),
        lambda g: g.crawler(n(30, 120), interval=u(0.2, 5), jitter=u(0, 0.3)),
        lambda g: g.headless(n(10, 40), wait=(w := u(0.5, 4), w * u(1.2, 2))),
        lambda g: g.stuffing(n(20, 80), rate=u(0.3, 10)),
    ]
    for run in range(settings.runs):
        for index, make in enumerate(kinds):
            site = sites[int(rng.integers(len(sites)))]
            generator = Generator(site, seed=seed * 100_000 + run * 10 + index, start=1_800_000_000.0)
            for record in make(generator):
                record["session"] = f"{seed}-{record['label']}-{run}"
                yield record


def replay(records: Iterator[dict] | list[dict], settings: BehaviourSettings | None = None) -> Rows:
    """Feature rows of every request of a client with MIN_HISTORY or more in its window, in
    ``ts`` order, as the daemon computes them (statuses reported after each request). The
    client is the session (real logs without addresses, and runs kept apart)."""
    settings = settings or BehaviourSettings(enabled=True)
    ordered = sorted(records, key=lambda r: r["ts"])
    clients = {r["session"] for r in ordered}
    tracker = LocalTracker(max(64, len(clients) * 4), settings.history, settings.window)  # no evictions
    login = re.compile(settings.login_paths)
    x, labels, sessions = [], [], []
    for record in ordered:
        try:
            request = from_wire({**record, "client_ip": "192.0.2.1"})
        except RequestError:
            continue
        client = record["session"]
        history = tracker.record(client, event_of(request, record["ts"], login))
        if history.size >= MIN_HISTORY:
            x.append(vector(compute(history, record["ts"])))
            labels.append(CLASSES.index(CLASS_OF[record["label"]]))
            sessions.append(client)
        if record.get("status"):
            tracker.set_status(client, request.id, int(record["status"]))
    return Rows(np.array(x, dtype=np.float32).reshape(-1, len(NAMES)), np.array(labels, dtype=np.intp), sessions)


def build(mean: npt.NDArray[np.float32], variance: npt.NDArray[np.float32], settings: FloodSettings) -> keras.Model:
    features = keras.Input((len(NAMES),), dtype="float32", name="features")
    h = keras.layers.Normalization(mean=mean, variance=variance, name="standardise")(features)
    h = keras.layers.Dense(settings.hidden, activation="relu", name="hidden1")(h)
    h = keras.layers.Dense(settings.hidden, activation="relu", name="hidden2")(h)
    probs = keras.layers.Dense(len(CLASSES), activation="softmax", name="probs")(h)
    return keras.Model(features, probs, name="flood")


def fit(rows: Rows, settings: FloodSettings, progress: Progress | None = None) -> keras.Model:
    keras.utils.set_random_seed(settings.seed)
    tf.config.experimental.enable_op_determinism()
    # A feature that never varies in the training data (the generated clients have no
    # country: geo_changes) must not steer the model when it does live: scaled to nothing.
    mean, variance = rows.x.mean(axis=0), rows.x.var(axis=0)
    variance = np.where(variance < 1e-9, 1e12, np.maximum(variance, 1e-6))
    network = build(mean, variance, settings)
    class_weight = balanced_weights(rows.label, len(CLASSES))
    class_weight[0] *= NORMAL_WEIGHT
    step = trainer(network, settings.learning_rate, settings.epochs * -(-len(rows.label) // settings.batch))

    rng = np.random.default_rng(settings.seed)
    for epoch in range(settings.epochs):
        order = rng.permutation(len(rows.label))
        for start in range(0, len(order), settings.batch):
            chunk = order[start : start + settings.batch]
            step(rows.x[chunk], rows.label[chunk], class_weight[rows.label[chunk]])
        if progress:
            progress(epoch + 1, settings.epochs)
    return network


def export_tflite(network: keras.Model, examples: npt.NDArray[np.float32]) -> dict[str, bytes]:
    """Float and int8 LiteRT flatbuffers with a signature per batch size in BATCHES, the
    forward pass rebuilt from the trained weights as constants and checked against Keras
    on ``examples``. The int8 file quantizes the weights only (dynamic range): with the
    activations in int8 too, probabilities moved by up to 0.14 against float."""
    layer = network.get_layer
    mean = tf.constant(np.asarray(layer("standardise").mean, dtype=np.float32).reshape(-1))
    sd = tf.constant(np.sqrt(np.asarray(layer("standardise").variance, dtype=np.float32)).reshape(-1))
    (k1, b1), (k2, b2), (k3, b3) = (
        [tf.constant(w) for w in layer(name).get_weights()] for name in ("hidden1", "hidden2", "probs")
    )

    def forward(x: tf.Tensor) -> tf.Tensor:
        h = tf.nn.relu(((x - mean) / sd) @ k1 + b1)
        return tf.nn.softmax(tf.nn.relu(h @ k2 + b2) @ k3 + b3)

    check_forward(forward, network, examples[: BATCHES[-1]])
    functions = {
        batch_key(rows): tf.function(
            lambda features: {"probs": forward(features)},
            input_signature=[tf.TensorSpec([rows, len(NAMES)], tf.float32, name="features")],
        )
        for rows in BATCHES
    }
    return to_litert(functions)  # int8 weights, float activations: full integer lost up to 0.14 here


Held = dict[str, tuple[int, npt.NDArray[np.float32]]]  # session -> (class, score held over PERSISTENCE rows)


def held_scores(probs: npt.NDArray[np.float32], rows: Rows) -> Held:
    """Per session: its class and, from its PERSISTENCE-th row on, the lowest attack probability
    (of its likeliest attack class) over that row and the ones before: what the analyzer acts on,
    as it acts only on PERSISTENCE findings in a row."""
    attack = probs[:, 1:].max(axis=1)
    members: dict[str, list[int]] = {}
    for i, session in enumerate(rows.session):
        members.setdefault(session, []).append(i)
    out: Held = {}
    for session, index in members.items():
        scores = attack[index]
        if len(scores) < PERSISTENCE:
            held = np.zeros(0, dtype=np.float32)
        else:
            held = np.lib.stride_tricks.sliding_window_view(scores, PERSISTENCE).min(axis=1)
        out[session] = (int(rows.label[index[0]]), held)
    return out


def calibrate(sessions: Held) -> dict[str, float]:
    """Block just above the highest held score of any normal validation session (never under
    0.9, never over 0.999: a model that cannot keep every normal session under that says so
    in ``normal_over``, the validation sessions still over the threshold)."""
    normal = [float(held.max()) for label, held in sessions.values() if label == 0 and held.size]
    block = round(float(min(0.999, max(0.9, max(normal, default=0.0) + 1e-3))), 4)
    over = sum(1 for best in normal if best >= block)
    return {"block": block, "log": round(max(0.5, block - 0.2), 4), "normal_over": over}


def detection(sessions: Held, block: float) -> dict[str, dict[str, float]]:
    """Sessions flagged per class (normal: false positives) and the median request of detection."""
    table: dict[str, dict[str, float]] = {}
    for column, name in enumerate(CLASSES):
        members = [held for label, held in sessions.values() if label == column]
        if not members:
            continue
        caught = [
            int(np.argmax(held >= block)) + MIN_HISTORY + PERSISTENCE - 1 for held in members if (held >= block).any()
        ]
        row = {"sessions": len(members), "flagged": len(caught), "share": round(len(caught) / len(members), 4)}
        if caught and column:
            row["median_request"] = float(np.median(caught))
        table[name] = row
    return table


def assess(metadata_path: Path, data: Path, settings: FloodSettings) -> dict:
    """Set the thresholds per runtime on a validation generation (seed + 1) and measure on a
    test generation (seed + 2) and on the real logs; writes them into the metadata."""
    meta = json.loads(metadata_path.read_text(encoding="utf-8"))
    sites = _sites(data)
    validation = replay(generated(sites, settings.seed + 1, replace(settings, sessions=settings.validation_sessions)))
    test = replay(generated(sites, settings.seed + 2, settings))
    people, trained_on = iliou(data), annotated_training(data)
    held_back = [r for (label, session), rs in people.items() if session not in trained_on for r in rs]
    real = {
        f"iliou {label.replace('_', ' ')}s": replay([r for r in held_back if r["label"] == label])
        for label in ("human", "moderate_bot", "advanced_bot")
    }
    real["scanner logs"] = replay([r for rs in scanners(data).values() for r in rs])
    for key in ("thresholds", "validation", "test", "real"):
        meta[key] = {}
    for runtime in FILES:
        model = load_window_model(metadata_path, runtime, calibrated=False)
        checked = held_scores(model.probabilities(validation.x), validation)
        limits = meta["thresholds"][runtime] = calibrate(checked)
        meta["validation"][runtime] = detection(checked, limits["block"])
        meta["test"][runtime] = detection(held_scores(model.probabilities(test.x), test), limits["block"])
        meta["real"][runtime] = {
            name: detection(held_scores(model.probabilities(rows.x), rows), limits["block"])
            for name, rows in real.items()
            if len(rows.label)
        }
    metadata_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    write_checksums(metadata_path.parent)
    return meta


def _sites(data: Path) -> list[tuple[Page, ...]]:
    return [site_from_requests(csic_split(data)[0]), DEMO_SITE] if (data / "csic2010").is_dir() else [DEMO_SITE]


def _data_hash(rows: Rows) -> str:
    return hashlib.sha256(rows.x.tobytes() + rows.label.tobytes()).hexdigest()


def train_flood(data: Path, out_dir: Path, settings: FloodSettings, progress: Progress | None = None) -> dict:
    """Generate, replay, train, export, then calibrate and evaluate (``assess``); returns the metadata."""
    people, trained_on = iliou(data), annotated_training(data)
    humans_train = [r for (label, s), rs in people.items() if label == "human" and s in trained_on for r in rs]
    train = Rows.join([replay(generated(_sites(data), settings.seed, settings)), replay(humans_train)])
    network = fit(train, settings, progress)

    out_dir.mkdir(parents=True, exist_ok=True)
    exported = export_tflite(network, train.x[:: max(1, len(train.x) // 4096)])
    (out_dir / FILES["litert-float"]).write_bytes(exported["float"])
    (out_dir / FILES["litert-int8"]).write_bytes(exported["int8"])
    network.save(out_dir / FILES["tensorflow"])
    standardise = network.get_layer("standardise")  # its constants are not among the weights
    constants = [np.asarray(standardise.mean), np.asarray(standardise.variance), *network.get_weights()]
    weights = hashlib.sha256(b"".join(np.asarray(w, dtype=np.float32).tobytes() for w in constants)).hexdigest()
    normal = train.x[train.label == 0]
    meta: dict = {
        "name": "flood",
        "kind": KIND,
        "spec": SPEC,
        "version": f"mlp-{weights[:12]}",
        "release": __version__,  # the mlwaf release the model ships with
        "classes": list(CLASSES),
        "features": list(NAMES),
        "normal": {name: [round(float(normal[:, i].mean()), 5), round(float(normal[:, i].std()), 5)]
                   for i, name in enumerate(NAMES)},
        "files": FILES,
        "sha256": {name: sha256_file(out_dir / name) for name in FILES.values()},
        "bytes": {name: (out_dir / name).stat().st_size for name in FILES.values()},
        "training": {
            "rows": len(train.label),
            "rows_per_class": {c: int((train.label == i).sum()) for i, c in enumerate(CLASSES)},
            "iliou_human_sessions": len({r["session"] for r in humans_train}),
            "data_sha256": _data_hash(train),
            "settings": asdict(settings),
        },
    }  # fmt: skip
    metadata_path = out_dir / "flood.json"
    metadata_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    too_big = [name for name, size in meta["bytes"].items() if size > SIZE_LIMIT]
    if too_big:
        raise RuntimeError(f"model files over {SIZE_LIMIT} bytes: {', '.join(too_big)}")
    return assess(metadata_path, data, settings)
