"""The flood/bot model: its input spec, its score scale, training and export, the shipped model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mlwaf.behaviour.engine import Behaviour
from mlwaf.behaviour.features import NAMES, Features
from mlwaf.behaviour.model import CLASSES, LOGGED, WindowModel, load_window_model, vector
from mlwaf.config import BehaviourSettings
from mlwaf.model import ModelError
from mlwaf.request import from_wire
from mlwaf.training.simulate import DEMO_SITE, Generator

SHIPPED = Path(__file__).resolve().parents[2] / "files" / "models" / "flood.json"
QUIET = Features(8, 0.1, 1, 1.5, 1.0, 0.0, 1.0, 0.0, 0.2, 0.4, 0.0, 0.0, 0.0, 2, 0.4, 1.0, 9.0)


def test_vector_follows_the_spec() -> None:
    x = vector(QUIET)
    assert x.dtype == np.float32
    assert x.shape == (len(NAMES),)
    for index, name in enumerate(NAMES):
        raw = float(getattr(QUIET, name))
        assert x[index] == pytest.approx(np.log1p(raw) if name in LOGGED else raw), name


def fixed(probs: list[float]) -> WindowModel:
    """A model whose network always answers ``probs`` (the score mapping alone)."""
    answer = np.array([probs], dtype=np.float32)
    return WindowModel("test", list(CLASSES), lambda rows: np.repeat(answer, len(rows), axis=0), block=0.95, log=0.75)


def test_probabilities_are_put_on_the_policy_scale() -> None:
    assert fixed([0.9, 0.05, 0.05, 0, 0]).finding(QUIET) is None, "under the log threshold"
    logged = fixed([0.15, 0, 0, 0.85, 0]).finding(QUIET)
    assert logged is not None
    assert logged.kind == "bot"
    assert 0.3 < logged.score < 0.6
    assert logged.status == 403
    at_block = fixed([0.05, 0.95, 0, 0, 0]).finding(QUIET)
    assert at_block is not None
    assert at_block.kind == "flood"
    assert at_block.score == pytest.approx(0.6)
    assert at_block.status == 429
    sure = fixed([0, 0, 1.0, 0, 0]).finding(QUIET)
    assert sure is not None
    assert sure.score == pytest.approx(1.0)
    assert sure.severity == "critical"
    assert sure.evidence.startswith("model test p(scanner) 1.000; ")
    assert fixed([0, 0, 1.0, 0, 0]).probabilities(np.zeros((300, len(NAMES)), np.float32)).shape == (300, 5)


def test_training_exports_every_runtime_and_loading_checks_them(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from mlwaf.training.flood import FILES, FloodSettings, train_flood  # noqa: PLC0415 - needs TensorFlow

    out = tmp_path / "models"
    settings = FloodSettings(sessions=40, runs=4, epochs=3, hidden=8)
    meta = train_flood(tmp_path / "no-datasets", out, settings)  # the demo site alone
    assert meta["classes"] == list(CLASSES)
    assert meta["features"] == list(NAMES)
    assert set(meta["thresholds"]) == set(FILES)
    assert all(size < 100_000 for size in meta["bytes"].values())
    assert (out / "SHA256SUMS").read_text().count("flood") == 4
    rows = np.random.default_rng(1).uniform(0, 3, (5, len(NAMES))).astype(np.float32)
    answers = {runtime: load_window_model(out / "flood.json", runtime).probabilities(rows) for runtime in FILES}
    for probs in answers.values():
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    assert np.allclose(answers["litert-float"], answers["tensorflow"], atol=1e-4)
    assert np.allclose(answers["litert-int8"], answers["tensorflow"], atol=0.05)

    original = json.loads((out / "flood.json").read_text())
    for change, message in (
        ({"spec": "window-v0"}, "feature spec"),
        ({"features": list(NAMES)[:-1]}, "features differ"),
        ({"kind": "char-cnn"}, "unsupported kind"),
        ({"classes": ["flood", "normal"]}, "first class"),
    ):
        (out / "flood.json").write_text(json.dumps({**original, **change}))
        with pytest.raises(ModelError, match=message):
            load_window_model(out / "flood.json")
    (out / "flood.json").write_text(json.dumps(original))
    (out / FILES["litert-int8"]).write_bytes(b"not a model")
    with pytest.raises(ModelError, match="checksum mismatch"):
        load_window_model(out / "flood.json")


@pytest.mark.skipif(not SHIPPED.exists(), reason="no trained flood/bot model in files/models")
def test_shipped_model_flags_a_crawler_and_spares_people() -> None:
    settings = BehaviourSettings(enabled=True, model=str(SHIPPED), model_action="block")
    engine = Behaviour(settings)
    plain = Behaviour(replace(settings, model=""))
    logging = Behaviour(replace(settings, model_action="log"))
    records = list(Generator(DEMO_SITE, seed=21).normal(200))
    records += Generator(DEMO_SITE, seed=22).crawler(60, interval=2.0, jitter=0.1)
    blocked: dict[str, set[str]] = {"model": set(), "heuristics": set(), "logging": set()}
    evidence = []
    for record in sorted(records, key=lambda r: r["ts"]):
        request = from_wire(record)
        for name, judge in (("model", engine), ("heuristics", plain), ("logging", logging)):
            judgement = judge.judge(request, float(record["ts"]))  # type: ignore[arg-type]
            if judgement.status:
                blocked[name].add(str(record["label"]))
            if name == "logging" and judgement.findings and judgement.findings[0].by_model:
                evidence.append(judgement.findings[0])
    assert "normal" not in blocked["model"]
    assert "crawler" in blocked["model"], "a crawler on a 2 s clock over every page"
    assert "crawler" not in blocked["heuristics"], "what the model adds"
    assert "crawler" not in blocked["logging"], "model_action log: findings, no ban"
    assert any(f.kind == "bot" and f.score >= 0.6 and f.evidence.startswith("model ") for f in evidence)
