"""Training pipeline: augmentation, the network, the LiteRT export, checksums."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlwaf.augment import variants
from mlwaf.datasets import FAMILIES, Sample, filled, generated_agents
from mlwaf.features import normalise, windows
from mlwaf.model import KIND, load_model
from mlwaf.train import FILES, write_checksums

ATTACKS = ["1 or 1=1", "union select 1", "' or ''='", "1; drop table x", "admin'--", "1 and sleep(5)"]
BENIGN = ["hello", "coffee", "blue shirt", "paris", "john smith", "page 2"]


def test_variants_are_deterministic_attack_only_and_survive_normalisation() -> None:
    samples = [Sample(t, "sqli", "lists") for t in ATTACKS * 10] + [Sample(t, "benign", "b") for t in BENIGN * 10]
    first, again = variants(samples, 0.5, 3), variants(samples, 0.5, 3)
    assert first == again
    assert 10 < len(first) < 60
    assert all(s.family == "sqli" and s.source == "lists+augmented" for s in first)
    originals = {normalise(t) for t in ATTACKS}
    assert any(normalise(s.text) not in originals for s in first)
    assert variants(samples, 0.0, 3) == []


def test_fuzzing_templates_are_filled_in_as_a_fuzzer_would() -> None:
    template = Sample("/../../../{FILE}", "traversal", "fuzzdb")
    done = filled(template)
    assert "{" not in done.text
    assert done.text.startswith("/../../../")
    assert (done.family, done.source) == ("traversal", "fuzzdb")
    assert filled(template) == done  # the same template always gets the same target
    assert filled(Sample(";{cmd};", "cmdi", "fuzzdb")).text.strip(";") in {
        "id",
        "cat /etc/passwd",
        "uname -a",
        "whoami",
        "ls -la /",
        "ping -c 3 127.0.0.1",
    }
    untouched = Sample("<{Opera}>", "xss", "lists")
    assert filled(untouched) is untouched


def test_generated_agents_look_like_user_agents() -> None:
    agents = generated_agents(300, 5)
    assert agents == generated_agents(300, 5)
    assert {a.family for a in agents} == {"benign"}
    texts = {a.text for a in agents}
    assert len(texts) > 200  # crawlers repeat; browsers and tools vary
    assert sum(t.startswith("Mozilla/5.0 (") for t in texts) > len(texts) // 3
    assert all("{" not in t and "<" not in t for t in texts)


def test_network_trains_exports_and_loads(tmp_path: Path) -> None:
    neural = pytest.importorskip("mlwaf.neural")
    samples = [Sample(t, "sqli", "t") for t in ATTACKS] * 30 + [Sample(t, "benign", "t") for t in BENIGN] * 30
    rows = [windows(s.text)[0] for s in samples]
    labels = np.array([FAMILIES.index(s.family) for s in samples])
    settings = neural.NetworkSettings(embedding=8, filters=8, hidden=8, epochs=12, batch=32, learning_rate=1e-2)
    network = neural.fit(rows, labels, len(FAMILIES), settings)
    again = neural.fit(rows, labels, len(FAMILIES), settings)
    for a, b in zip(network.get_weights(), again.get_weights(), strict=True):
        assert np.array_equal(a, b)  # deterministic
    exported = neural.export_tflite(network, rows[:50], seed=1)
    for runtime in ("litert-float", "litert-int8"):
        (tmp_path / FILES[runtime]).write_bytes(exported[runtime.split("-")[1]])
    network.save(tmp_path / FILES["tensorflow"])
    meta = {
        "name": "attack",
        "kind": KIND,
        "spec": "bytes-v1",
        "classes": list(FAMILIES),
        "files": FILES,
        "sha256": {},
        "thresholds": {"litert-float": {"block": 0.5}},
    }
    write_checksums(tmp_path)
    meta["sha256"] = {
        name: line.split()[0]
        for line in (tmp_path / "SHA256SUMS").read_text().splitlines()
        for name in [line.split()[1]]
    }
    (tmp_path / "attack.json").write_text(json.dumps(meta))
    model = load_model(tmp_path / "attack.json", "litert-float")
    scores, families = model.score(["2 or 2=2--", "tea"])
    assert scores[0] > 0.5 > scores[1]
    assert families[0] == "sqli"
    keras_probs = load_model(tmp_path / "attack.json", "tensorflow").probabilities(["2 or 2=2--", "tea"])
    assert np.abs(keras_probs - model.probabilities(["2 or 2=2--", "tea"])).max() < 1e-4


def test_cli_default_epochs_match_the_network_settings() -> None:
    neural = pytest.importorskip("mlwaf.neural")
    from mlwaf.cli import NETWORK_EPOCHS  # noqa: PLC0415

    assert neural.NetworkSettings().epochs == NETWORK_EPOCHS
