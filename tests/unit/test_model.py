"""Model loading, checks and the shipped attack model."""

from __future__ import annotations

import json
import random
import shutil
import string
import uuid
from pathlib import Path

import numpy as np
import pytest

from mlwaf.cli import main
from mlwaf.features import SHAPES, WINDOW, fit_length, windows
from mlwaf.model import RUNTIMES, AttackModel, ModelError, load_model, sha256_file
from mlwaf.training.datasets import DatasetError, extra_samples

MODELS = Path(__file__).resolve().parents[2] / "files" / "models"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    shutil.copytree(MODELS, tmp_path / "models")
    return tmp_path / "models"


def test_shipped_model_loads_and_matches_its_checksums() -> None:
    model = load_model(MODELS / "attack.json")
    assert model.families == ["sqli", "xss", "cmdi", "traversal"]
    sums = dict(reversed(line.split("  ")) for line in (MODELS / "SHA256SUMS").read_text().splitlines())
    assert set(sums) >= {"attack.json", *model.metadata["files"].values()}
    for name, digest in sums.items():
        assert sha256_file(MODELS / name) == digest
        assert (MODELS / name).stat().st_size <= 1_000_000


def test_litert_exports_agree_with_the_keras_model() -> None:
    pytest.importorskip("keras")
    values = ["alice", "1' or '1'='1", "<svg/onload=alert(1)>", "; id", "../../etc/passwd", "x" * 700, ""]
    reference = load_model(MODELS / "attack.json", "tensorflow").probabilities(values)
    assert np.abs(load_model(MODELS / "attack.json", "litert-float").probabilities(values) - reference).max() < 1e-4
    # int8 activations: scores move by a few hundredths at most, the ranking does not
    quantized = load_model(MODELS / "attack.json", "litert-int8").probabilities(values)
    assert np.abs(quantized - reference).max() < 0.08
    assert (quantized.argmax(axis=1) == reference.argmax(axis=1)).all()


def test_batching_and_padding_do_not_change_scores() -> None:
    model = load_model(MODELS / "attack.json", "litert-float")
    values = [f"value {i} <b>" for i in range(37)] + ["1 union select pass from users", "a" * 40, "z"]
    together = model.probabilities(values)
    alone = np.concatenate([model.probabilities([v]) for v in values])
    assert np.abs(together - alone).max() < 1e-5


def test_an_attack_deep_inside_a_long_value_is_found() -> None:
    model = load_model(MODELS / "attack.json")
    padding = "lorem ipsum dolor sit amet " * (WINDOW // 10)
    scores, families = model.score([padding, padding + "<script>alert(document.cookie)</script>" + padding])
    assert scores[0] < model.thresholds["block"] <= scores[1]
    assert families[1] == "xss"


def padded(row: np.ndarray) -> np.ndarray:
    batch = np.zeros((1, fit_length(row.size)), dtype=np.int32)
    batch[0, : row.size] = row
    return batch


def test_repeated_windows_are_read_once_and_score_the_same() -> None:
    model = load_model(MODELS / "attack.json", "litert-float")
    calls: list[int] = []
    backend = model.backend
    model.backend = lambda batch: calls.append(len(batch)) or backend(batch)
    filler = "a" * (WINDOW * 20) + ";id"
    repeated = model.probabilities([filler, "b" * (WINDOW * 3)])
    assert sum(calls) <= 6, "twenty identical windows of filler are not read twenty times"
    read_apart = np.array([backend(padded(row))[0] for row in windows(filler)])
    assert np.abs(repeated[0] - read_apart[read_apart[:, model._benign].argmin()]).max() < 1e-5


def test_shipped_model_separates_attacks_from_ordinary_values() -> None:
    model = load_model(MODELS / "attack.json")
    block = model.thresholds["block"]
    attacks = {
        "1' OR '1'='1' -- ": "sqli",
        "1 union select password from users--": "sqli",
        "<script>alert(document.cookie)</script>": "xss",
        "<svg/onload=alert(1)>": "xss",
        "; cat /etc/passwd": "cmdi",
        "`id`": "cmdi",
        "../../../../etc/passwd": "traversal",
    }
    scores, families = model.score(list(attacks))
    for (text, family), score, found in zip(attacks.items(), scores, families, strict=True):
        assert score >= block, text
        assert found == family, text
    benign = ["alice", "wonderland", "coffee grinder", "jean.dupont@example.org", "2024-05-01", "O'Reilly", "42"]
    scores, _ = model.score(benign)
    assert (scores < block).all(), dict(zip(benign, scores.round(3), strict=True))


def test_shipped_model_leaves_short_values_alone() -> None:
    model = load_model(MODELS / "attack.json")
    values = [*string.ascii_letters, *string.digits, *"-_.*+/,:#@!?~=", "id", "en", "de", "asc", "desc", "on", "off"]
    values += ["yes", "no", "ok", "p2", "v1", "us", "fr", "xl", "42", "007", "true", "null", "none", "all", "new"]
    scores, _ = model.score(values)
    blocked = [v for v, s in zip(values, scores, strict=True) if s >= model.thresholds["block"]]
    assert blocked == []


def test_shipped_model_leaves_machine_values_alone() -> None:
    model = load_model(MODELS / "attack.json")
    rng = random.Random(2026)
    alphabet = string.ascii_letters + string.digits + "-_"
    values = [
        *("".join(rng.choice(alphabet) for _ in range(32)) for _ in range(300)),  # base64url tokens
        *(f"{rng.randint(0, 9)}-{rng.getrandbits(32):08x}" for _ in range(300)),  # <n>-<hex> ids
        *(str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(100)),
        "testtesttesttesttesttesttest",
        "x" * 500,
        "aaaaaaaaaaaaaaaaaaaaaaaa",
    ]
    scores, _ = model.score(values)
    blocked = [v for v, s in zip(values, scores, strict=True) if s >= model.thresholds["block"]]
    assert len(blocked) <= 2, blocked  # at most 0.3%


def test_score_cache_changes_cost_not_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mlwaf.model.CACHE_ENTRIES", 4)
    model = load_model(MODELS / "attack.json")
    values = ["alice", "1' or '1'='1", "alice", "<b>", "x" * 300, "page", "sort", "2"]
    first = model.score(values)
    assert len(model._cache) == 4  # bounded; the 300-character value was never cached
    assert "x" * 300 not in model._cache
    again = model.score(values)  # mostly from the cache now
    fresh = load_model(MODELS / "attack.json").score(values)
    for got in (first, again):
        assert got[0].tolist() == fresh[0].tolist()
        assert got[1] == fresh[1]


@pytest.mark.parametrize("runtime", RUNTIMES[:2])
def test_checksum_mismatch_is_refused(model_dir: Path, runtime: str) -> None:
    name = json.loads((model_dir / "attack.json").read_text())["files"][runtime]
    with (model_dir / name).open("ab") as handle:
        handle.write(b"x")
    with pytest.raises(ModelError, match=f"checksum mismatch for {name}"):
        load_model(model_dir / "attack.json", runtime)


def test_unknown_runtime_is_refused() -> None:
    with pytest.raises(ModelError, match="unknown runtime 'onnx'"):
        load_model(MODELS / "attack.json", "onnx")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"spec": "ngram-hash-v2"}, "feature spec"),
        ({"kind": "ngram-linear"}, "unsupported kind"),
        ({"files": {"litert-int8": "missing.tflite"}}, "is missing"),
        ({"files": {}}, "no file for the litert-int8 runtime"),
    ],
)
def test_mismatched_metadata_is_refused(model_dir: Path, change: dict, message: str) -> None:
    meta = json.loads((model_dir / "attack.json").read_text())
    (model_dir / "attack.json").write_text(json.dumps({**meta, **change}))
    with pytest.raises(ModelError, match=message):
        load_model(model_dir / "attack.json")


def test_unreadable_metadata(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read"):
        load_model(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ModelError, match="not JSON"):
        load_model(tmp_path / "bad.json")


def test_classes_must_include_benign() -> None:
    with pytest.raises(ModelError, match="must include 'benign'"):
        AttackModel("a", "", ["sqli", "xss"], backend=lambda ids: np.zeros((len(ids), 2), np.float32))


def test_extra_labelled_values(tmp_path: Path) -> None:
    good = tmp_path / "feedback.jsonl"
    good.write_text('{"text": "O\'Reilly & sons", "family": "benign"}\n\n{"text": "`id`", "family": "cmdi"}\n')
    samples = extra_samples(good)
    assert [(s.text, s.family, s.source) for s in samples] == [
        ("O'Reilly & sons", "benign", "extra:feedback.jsonl"),
        ("`id`", "cmdi", "extra:feedback.jsonl"),
    ]
    for content, message in (
        ("not json\n", "feedback.jsonl:1: not JSON"),
        ('{"text": 1, "family": "benign"}\n', "feedback.jsonl:1: expected"),
        ('{"text": "x", "family": "benign"}\n{"text": "x", "family": "ssti"}\n', "feedback.jsonl:2: family must be"),
    ):
        good.write_text(content)
        with pytest.raises(DatasetError, match=message):
            extra_samples(good)
    with pytest.raises(DatasetError, match="cannot read"):
        extra_samples(tmp_path / "missing.jsonl")


def test_train_command_reports_a_bad_extra_file(tmp_path: Path, capsys) -> None:
    data = tmp_path / "datasets"
    (data / "httpparams").mkdir(parents=True)
    bad = tmp_path / "extra.jsonl"
    bad.write_text('{"text": "x"}\n')
    assert main(["train", "attack", "--data", str(data), "--extra", str(bad), "--out", str(tmp_path)]) == 2
    assert "extra.jsonl:1: family must be one of" in capsys.readouterr().err


def test_warm_up_runs_every_exported_shape() -> None:
    calls: list[tuple[int, ...]] = []
    model = load_model(MODELS / "attack.json")
    inner = model.backend
    model.backend = lambda ids: calls.append(ids.shape) or inner(ids)
    model.warm_up()
    assert set(calls) == set(SHAPES)
