"""The attack network in TensorFlow/Keras: build, train, export to LiteRT.

A small character-level CNN: byte embedding, three 1-D convolutions (windows
of 5 and 3 bytes, then 3 taps 4 bytes apart, so each position sees 15
neighbouring bytes: ``1 union select`` and ``from users--`` at once), a global max
over positions, one hidden layer, softmax over the families. Padding is
masked after every layer, so a value's score does not depend on how far its
row is padded, and the max over positions means an attack is found wherever
it sits in a long value. The shipped model averages two such networks trained
from different seeds (``ensemble``).

Only training imports TensorFlow; the appliance runs the exported ``.tflite``
files with LiteRT. The export rebuilds the forward pass from the trained
weights as constants (LiteRT's XNNPACK kernels only take constant weights and
fixed shapes), with one signature per batch shape in ``features.SHAPES``, and
checks that it agrees with the Keras model before writing anything.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from mlwaf.features import SHAPES, VOCABULARY, signature

Progress = Callable[[int, int], None]
Rows = list[npt.NDArray[np.int32]]
DILATION = 4  # the third convolution looks 4 bytes apart: each position sees 15 bytes
CALIBRATION_ROWS = 128  # int8 calibration rows per exported shape (a multiple of every row count)


@dataclass(frozen=True)
class NetworkSettings:
    embedding: int = 24
    filters: int = 96
    hidden: int = 96
    dropout: float = 0.2
    epochs: int = 12
    batch: int = 256
    learning_rate: float = 3e-3
    seed: int = 7


def build(classes: int, settings: NetworkSettings) -> keras.Model:
    ids = keras.Input((None,), dtype="int32", name="ids")
    mask = keras.ops.expand_dims(keras.ops.cast(ids > 0, "float32"), -1)
    h = keras.layers.Embedding(VOCABULARY, settings.embedding, name="bytes")(ids) * mask
    h = keras.layers.Conv1D(settings.filters, 5, padding="same", activation="relu", name="conv5")(h) * mask
    h = keras.layers.Conv1D(settings.filters, 3, padding="same", activation="relu", name="conv3")(h) * mask
    h = (
        keras.layers.Conv1D(
            settings.filters, 3, dilation_rate=DILATION, padding="same", activation="relu", name="context"
        )(h)
        * mask
    )
    h = keras.layers.GlobalMaxPooling1D(name="max_over_positions")(h)
    h = keras.layers.Dense(settings.hidden, activation="relu", name="hidden")(h)
    h = keras.layers.Dropout(settings.dropout, seed=settings.seed)(h)
    probs = keras.layers.Dense(classes, activation="softmax", name="probs")(h)
    return keras.Model(ids, probs, name="attack")


def ensemble(members: list[keras.Model]) -> keras.Model:
    """One model that averages its members' probabilities (a single member is returned as is).

    Networks trained alike from different seeds disagree on the values near the
    boundary; their average depends less on any one seed's luck."""
    if len(members) == 1:
        return members[0]
    ids = keras.Input((None,), dtype="int32", name="ids")
    for number, member in enumerate(members):
        member.name = f"member{number}"
    probs = keras.layers.Average(name="mean_probs")([member(ids) for member in members])
    return keras.Model(ids, probs, name="attack")


def members(network: keras.Model) -> list[keras.Model]:
    """The networks an ensemble averages, or the network itself."""
    return [layer for layer in network.layers if isinstance(layer, keras.Model)] or [network]


def padded_batches(
    rows: Rows, size: int, rng: np.random.Generator | None = None
) -> Iterator[tuple[npt.NDArray[np.int32], npt.NDArray[np.intp]]]:
    """Batches of similar-length rows padded to a power of two, and the rows' indices.
    Shuffled batch order when ``rng`` is given (training), else in length order."""
    order = np.argsort([row.size for row in rows], kind="stable")
    chunks = [order[i : i + size] for i in range(0, len(order), size)]
    if rng is not None:
        rng.shuffle(chunks)
    for chunk in chunks:
        longest = max(8, *(rows[i].size for i in chunk))
        batch = np.zeros((len(chunk), 1 << int(np.ceil(np.log2(longest)))), dtype=np.int32)
        for slot, i in enumerate(chunk):
            batch[slot, : rows[i].size] = rows[i]
        yield batch, chunk


def balanced_weights(labels: npt.NDArray[np.intp], classes: int) -> npt.NDArray[np.float32]:
    """Per class, the weight that makes every class count as much as the others in the loss."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    return (counts.sum() / (classes * np.maximum(counts, 1))).astype(np.float32)


def trainer(
    network: keras.Model, learning_rate: float, total_steps: int, clipnorm: float | None = None
) -> Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]:
    """One weighted training step (Adam, cosine-decayed learning rate, sparse cross-entropy)."""
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, total_steps, alpha=0.02)
    optimizer = keras.optimizers.Adam(schedule, clipnorm=clipnorm)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    @tf.function(reduce_retracing=True)
    def step(batch: tf.Tensor, target: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(target, network(batch, training=True), sample_weight=weight)
        grads = tape.gradient(loss, network.trainable_variables)
        optimizer.apply_gradients(zip(grads, network.trainable_variables, strict=True))
        return loss

    return step


def fit(
    rows: Rows,
    labels: npt.NDArray[np.intp],
    classes: int,
    settings: NetworkSettings,
    *,
    progress: Progress | None = None,
    weights: npt.NDArray[np.float32] | None = None,
) -> keras.Model:
    """Train deterministically (fixed seeds, deterministic ops, fixed batch order).
    ``weights``: each row's weight in the loss (default: ``balanced_weights`` of its class)."""
    keras.utils.set_random_seed(settings.seed)
    tf.config.experimental.enable_op_determinism()
    network = build(classes, settings)
    if weights is None:
        weights = balanced_weights(labels, classes)[labels]
    total = settings.epochs * -(-len(rows) // settings.batch)
    step = trainer(network, settings.learning_rate, total, clipnorm=1.0)
    rng = np.random.default_rng(settings.seed)
    done = 0
    for _ in range(settings.epochs):
        for batch, chunk in padded_batches(rows, settings.batch, rng):
            step(batch, labels[chunk], weights[chunk])
            done += 1
            if progress:
                progress(done, total)
    return network


def predict(network: keras.Model, rows: Rows) -> npt.NDArray[np.float32]:
    """Class probabilities of the Keras model, one row per input row."""
    out = np.zeros((len(rows), network.output_shape[-1]), dtype=np.float32)
    for batch, chunk in padded_batches(rows, 512):
        out[chunk] = network(batch, training=False).numpy()
    return out


def _constant_forward(network: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """The forward pass with the trained weights as constants: one network's, or the mean of an ensemble's."""
    forwards = [_member_forward(member) for member in members(network)]
    if len(forwards) == 1:
        return forwards[0]
    return lambda ids: tf.add_n([forward(ids) for forward in forwards]) / len(forwards)


def _member_forward(network: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    embed, conv5_k, conv5_b, conv3_k, conv3_b, context_k, context_b, hidden_k, hidden_b, out_k, out_b = (
        tf.constant(w) for w in network.get_weights()
    )

    def forward(ids: tf.Tensor) -> tf.Tensor:
        mask = tf.expand_dims(tf.cast(ids > 0, tf.float32), -1)
        h = tf.gather(embed, ids) * mask
        h = tf.nn.relu(tf.nn.conv1d(h, conv5_k, 1, "SAME") + conv5_b) * mask
        h = tf.nn.relu(tf.nn.conv1d(h, conv3_k, 1, "SAME") + conv3_b) * mask
        h = tf.nn.relu(tf.nn.conv1d(h, context_k, 1, "SAME", dilations=DILATION) + context_b) * mask
        h = tf.nn.relu(tf.reduce_max(h, axis=1) @ hidden_k + hidden_b)
        return tf.nn.softmax(h @ out_k + out_b)

    return forward


def export_tflite(network: keras.Model, examples: Rows, seed: int) -> dict[str, bytes]:
    """The float32 and int8 LiteRT flatbuffers, one signature per batch shape.

    ``examples`` (real training values) calibrate the int8 activation ranges."""
    forward = _constant_forward(network)
    probe = np.zeros((4, 64), dtype=np.int32)
    probe[:, :40] = np.random.default_rng(seed).integers(1, VOCABULARY, (4, 40))
    check_forward(forward, network, probe)
    functions = {}
    for rows, length in SHAPES:
        spec = tf.TensorSpec([rows, length], tf.int32, name="ids")
        functions[signature(rows, length)] = tf.function(lambda ids: {"probs": forward(ids)}, input_signature=[spec])
    return to_litert(functions, lambda: calibration_batches(examples, seed))


def calibration_batches(examples: Rows, seed: int) -> Iterator[tuple[str, dict[str, npt.NDArray[np.int32]]]]:
    """The int8 calibration batches of every exported shape, from ``examples``.

    Every row count of one length gets the same rows: each signature gets its own
    activation ranges, and from the same rows they are the same ranges, so a value
    scores alike whether its request has 1 or 40 values to score."""
    for rows, length in SHAPES:
        fitting = [row for row in examples if row.size <= length] or examples
        picked = np.random.default_rng([seed, length]).integers(len(fitting), size=CALIBRATION_ROWS)
        for start in range(0, CALIBRATION_ROWS, rows):
            batch = np.zeros((rows, length), dtype=np.int32)
            for slot, index in enumerate(picked[start : start + rows]):
                row = fitting[int(index)][:length]
                batch[slot, : row.size] = row
            yield signature(rows, length), {"ids": batch}


def check_forward(forward: Callable[[tf.Tensor], tf.Tensor], network: keras.Model, probe: npt.NDArray) -> None:
    """The rebuilt forward pass must give the trained Keras model's answers."""
    if not np.allclose(forward(probe).numpy(), network(probe, training=False).numpy(), atol=1e-5):
        raise RuntimeError("the export's forward pass disagrees with the trained Keras model")


def to_litert(
    functions: dict[str, Callable[..., dict[str, tf.Tensor]]],
    representative: Callable[[], Iterator[tuple[str, dict[str, npt.NDArray]]]] | None = None,
) -> dict[str, bytes]:
    """Float32 and int8 LiteRT flatbuffers of these signatures (``tf.function``s by signature
    name). The int8 one calibrates its activations on ``representative`` when given (full
    integer), else quantizes the weights only."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="mlwaf-export-") as saved:
        tf.saved_model.save(tf.Module(), saved, signatures={k: f.get_concrete_function() for k, f in functions.items()})
        for variant in ("float", "int8"):
            converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=list(functions))
            if variant == "int8":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                if representative is not None:
                    converter.representative_dataset = representative
            out[variant] = converter.convert()
    return out
