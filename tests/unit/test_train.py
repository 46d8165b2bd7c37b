"""Training pipeline: augmentation, the network, the LiteRT export, checksums."""

from __future__ import annotations

import json
import random
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mlwaf.features import SHAPES, normalise, signature, windows
from mlwaf.model import KIND, AttackModel, load_model
from mlwaf.training.augment import behind_value, js_call, other_path, script_only, variants
from mlwaf.training.datasets import (
    FAMILIES,
    Sample,
    filled,
    generated_agents,
    generated_attacks,
    generated_commands,
    generated_phrases,
    generated_queries,
    generated_references,
    marked,
    training_and_test,
)
from mlwaf.training.train import FILES, calibrate, request_scores, source_weights, write_checksums

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


def test_attacks_are_appended_to_real_benign_values_long_enough_to_hide_behind() -> None:
    agent = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    rng = random.Random(2)
    text = behind_value("' or 1=1--", rng, [agent])
    assert text.startswith(agent)
    assert text.endswith("' or 1=1--")
    samples = [Sample(t, "sqli", "lists") for t in ATTACKS * 40] + [Sample(agent, "benign", "b")]
    assert any(s.text.startswith(agent) for s in variants(samples, 1.0, 3))
    short_only = [Sample(t, "sqli", "lists") for t in ATTACKS * 40] + [Sample("hi", "benign", "b")]
    assert not any(s.text.startswith("hi") for s in variants(short_only, 1.0, 3))  # too short to hide behind


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("<script>alert(document.cookie)</script>", "alert(document.cookie)"),
        ('<img src=x onerror="prompt(1)">', "prompt(1)"),
        ("<a href=javascript:confirm(1)>x</a>", "confirm(1)"),
    ],
)
def test_script_only_keeps_the_code_without_its_markup(payload: str, code: str) -> None:
    assert script_only(payload, random.Random(1)) == code


def test_script_only_leaves_a_value_without_code_alone() -> None:
    assert script_only("<b>bold</b>", random.Random(1)) == "<b>bold</b>"


def test_js_call_writes_the_call_and_property_reads_another_way() -> None:
    seen = {js_call("<svg onload=alert(document.cookie)>", random.Random(seed)) for seed in range(60)}
    assert "<svg onload=alert.call(null,document['cookie'])>" in seen
    assert "<svg onload=window['alert'](document[\"cookie\"])>" in seen
    assert all("document.cookie" not in text and "alert(document" not in text for text in seen)
    assert js_call("<b>bold</b>", random.Random(1)) == "<b>bold</b>"


def test_other_path_names_the_same_target_another_way() -> None:
    seen = {other_path("..\\..\\c:\\windows\\win.ini", random.Random(seed)) for seed in range(30)}
    assert seen == {"/c:\\windows\\win.ini", "../../c:/windows/win.ini", "..\\..\\c:windows\\win.ini"}
    # a climb to an ordinary file is not turned into an ordinary absolute path
    assert {other_path("../../index.php", random.Random(seed)) for seed in range(30)} <= {
        "../../index.php",
        "..\\..\\index.php",
    }


def test_wordlist_lines_without_their_family_mark_are_not_attacks() -> None:
    assert marked("<svg onload=alert(1)>", "xss")
    assert not marked("Exploit Name: Super short XSS variant 1", "xss")
    assert marked("../../etc/passwd", "traversal")
    assert not marked("trace", "cmdi")
    for command in ("; id", "/bin/ls -al", "cat /etc/passwd", "dir+c:\\", "ipconfig /all", "exec('whoami')"):
        assert marked(command, "cmdi"), command
    assert not marked("index.php", "traversal")
    assert marked("anything", "sqli")  # no mark for SQL: its lists hold no descriptions


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


def test_generated_commands_call_out_after_a_separator() -> None:
    commands = generated_commands(200, 5)
    assert commands == generated_commands(200, 5)
    assert {c.family for c in commands} == {"cmdi"}
    assert all(marked(c.text, "cmdi") for c in commands)  # every one has its separator
    assert any("nslookup" in c.text for c in commands)
    assert len({c.text for c in commands}) == len(commands)  # generated host names never repeat


def test_generated_agents_look_like_user_agents() -> None:
    agents = generated_agents(300, 5)
    assert agents == generated_agents(300, 5)
    assert {a.family for a in agents} == {"benign"}
    texts = {a.text for a in agents}
    assert len(texts) > 200  # crawlers repeat; browsers and tools vary
    assert sum(t.startswith("Mozilla/5.0 (") for t in texts) > len(texts) // 3
    assert all("{" not in t and "<" not in t for t in texts)


def test_generated_queries_are_textbook_sql_injections() -> None:
    queries = generated_queries(300, 5)
    assert queries == generated_queries(300, 5)
    assert {q.family for q in queries} == {"sqli"}
    assert all(marked(q.text, "sqli") for q in queries)
    assert any("union" in q.text and "password" in q.text for q in queries)


def test_generated_references_quote_urls_paths_and_names_without_attack_words() -> None:
    references = generated_references(400, 5)
    assert references == generated_references(400, 5)
    assert {r.family for r in references} == {"benign"}
    texts = [r.text for r in references]
    assert any("://" in t and "&" in t.split("?", 1)[-1] for t in texts)  # URLs with several parameters
    assert any(t.startswith("C:\\fakepath\\") for t in texts)
    assert not any(re.search(r"\b(select|union|script|alert|ping|passwd|etc)\b", t) for t in texts)
    assert not any(".." in t for t in texts)


def test_source_weights_balance_families_and_temper_large_sources() -> None:
    samples = [Sample("a", "benign", "b")] * 10 + [Sample("x", "xss", "big")] * 90
    samples += [Sample("y", "xss", "small")] * 6 + [Sample("y2", "xss", "small+augmented")] * 3
    families = np.array([s.family for s in samples])
    sources = np.array([s.source.removesuffix("+augmented") for s in samples])
    for balance in (0.0, 0.5, 1.0):
        weights = source_weights(samples, balance)
        # every family present weighs len(samples) / len(FAMILIES) in all, whatever the balance
        assert weights[families == "benign"].sum() == pytest.approx(len(samples) / len(FAMILIES))
        assert weights[families == "xss"].sum() == pytest.approx(len(samples) / len(FAMILIES))
        big, small = (weights[sources == name].sum() for name in ("big", "small"))
        assert big / small == pytest.approx((90 / 9) ** (1 - balance))  # augmented variants count with their source
    assert np.allclose(source_weights(samples, 0.0)[families == "xss"], len(samples) / (len(FAMILIES) * 99))


def test_network_trains_exports_and_loads(tmp_path: Path) -> None:
    neural = pytest.importorskip("mlwaf.training.neural")
    samples = [Sample(t, "sqli", "t") for t in ATTACKS] * 30 + [Sample(t, "benign", "t") for t in BENIGN] * 30
    rows = [windows(s.text)[0] for s in samples]
    labels = np.array([FAMILIES.index(s.family) for s in samples])
    settings = neural.NetworkSettings(embedding=8, filters=8, hidden=8, epochs=12, batch=32, learning_rate=1e-2)
    network = neural.fit(rows, labels, len(FAMILIES), settings)
    again = neural.fit(rows, labels, len(FAMILIES), settings)
    for a, b in zip(network.get_weights(), again.get_weights(), strict=True):
        assert np.array_equal(a, b)  # deterministic
    varied = [windows(f"{a} {b} {n}")[0] for n in range(8) for a in ATTACKS for b in BENIGN]  # int8 calibration
    exported = neural.export_tflite(network, varied, seed=1)
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
        "thresholds": {"litert-float": {"block": 0.5}, "litert-int8": {"block": 0.5}},
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
    # int8: a value scores the same alone and among a request's other values (every batch
    # shape of one length is calibrated on the same rows)
    int8 = load_model(tmp_path / "attack.json", "litert-int8")
    crowd = ["2 or 2=2--", *(f"{word} {n}" for n in range(20) for word in BENIGN)][:40]
    assert np.array_equal(int8.probabilities(crowd[:1]), int8.probabilities(crowd)[:1])


def test_int8_calibration_gives_every_row_count_of_a_length_the_same_rows() -> None:
    neural = pytest.importorskip("mlwaf.training.neural")
    examples = [windows(f"{a} {b} {n}")[0] for n in range(40) for a in ATTACKS for b in BENIGN]
    rows_by_shape: dict[str, list[np.ndarray]] = {}
    for name, feed in neural.calibration_batches(examples, seed=3):
        rows_by_shape.setdefault(name, []).append(feed["ids"])
    assert set(rows_by_shape) == {signature(rows, length) for rows, length in SHAPES}
    for length in {length for _, length in SHAPES}:
        seen = [np.concatenate(rows_by_shape[signature(rows, size)]) for rows, size in SHAPES if size == length]
        assert all(np.array_equal(seen[0], other) for other in seen[1:]), length
        assert seen[0].shape == (neural.CALIBRATION_ROWS, length)


def test_ensemble_averages_its_members_in_keras_and_in_the_export(tmp_path: Path) -> None:
    neural = pytest.importorskip("mlwaf.training.neural")
    samples = [Sample(t, "sqli", "t") for t in ATTACKS] * 10 + [Sample(t, "benign", "t") for t in BENIGN] * 10
    rows = [windows(s.text)[0] for s in samples]
    labels = np.array([FAMILIES.index(s.family) for s in samples])
    settings = neural.NetworkSettings(embedding=8, filters=8, hidden=8, epochs=2, batch=32)
    first, second = (neural.fit(rows, labels, len(FAMILIES), replace(settings, seed=n)) for n in (1, 2))
    assert neural.members(first) == [first]
    assert neural.ensemble([first]) is first
    probe = np.zeros((3, 16), dtype=np.int32)
    probe[:, :9] = [list(normalise(t)[:9]) for t in ("1 or 1=1 ", "hello wor", "union sel")]
    mean = (first(probe, training=False).numpy() + second(probe, training=False).numpy()) / 2
    both = neural.ensemble([first, second])
    both.save(tmp_path / "attack.keras")
    loaded = neural.keras.models.load_model(tmp_path / "attack.keras", compile=False)
    assert len(neural.members(loaded)) == 2
    assert np.allclose(loaded(probe, training=False).numpy(), mean, atol=1e-6)
    neural.check_forward(neural._constant_forward(loaded), loaded, probe)  # what the export runs


def test_cli_defaults_match_the_training_settings() -> None:
    neural = pytest.importorskip("mlwaf.training.neural")
    from mlwaf.training.cli import NETWORK_EPOCHS, NETWORK_MEMBERS  # noqa: PLC0415
    from mlwaf.training.train import TrainSettings  # noqa: PLC0415

    assert neural.NetworkSettings().epochs == NETWORK_EPOCHS
    assert TrainSettings().members == NETWORK_MEMBERS


SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"


@pytest.mark.skipif(not (SHARED / "httpparams").is_dir(), reason="needs ../shared/datasets beside the checkout")
def test_the_test_split_never_reaches_training() -> None:
    train, test = training_and_test(SHARED)
    assert not {s.text for s in train} & {s.text for s in test}
    assert not any("{file}" in s.text.lower() for s in train + test)  # templates filled in on both sides
    assert {s.family for s in test} == set(FAMILIES)


def scored_by_length() -> AttackModel:
    """A model whose attack score of a value is its length / 100 (a stand-in for the network)."""

    def backend(ids: np.ndarray) -> np.ndarray:
        attack = np.minimum((ids > 0).sum(axis=1) / 100.0, 1.0).astype(np.float32)
        return np.stack([1 - attack, attack], axis=1)

    return AttackModel("t", "", ["benign", "sqli"], backend=backend)


def test_the_threshold_keeps_every_calibration_source_within_its_share() -> None:
    model = scored_by_length()
    quiet = [["a" * 10]] * 2000  # scores 0.10
    loud = [["b" * 10]] * 997 + [["c" * 95], ["c" * 96], ["c" * 97]]  # three requests at 0.95-0.97
    # 0.1% of 1,000 allows one refused request: the bar goes just above the second highest
    assert calibrate(model, {"quiet": quiet, "loud": loud}, 0.001)["block"] == pytest.approx(0.9601, abs=1e-3)
    assert calibrate(model, {"quiet": quiet}, 0.001)["block"] == 0.9, "never below the floor"
    beyond = {"loud": loud, "over at any bar": [["d" * 100]] * 5}
    assert calibrate(model, beyond, 0.001)["block"] == pytest.approx(0.9601, abs=1e-3), "a lost cause has no say"
    assert request_scores(model, [[], ["e" * 50, "e" * 20]]).tolist() == pytest.approx([0.0, 0.5])


def test_generated_phrases_carry_nothing_active_and_generated_attacks_are_labelled() -> None:
    phrases = generated_phrases(3000, seed=1)
    assert any(s.text.lower().startswith("select ") for s in phrases)
    active = re.compile(r"<script|javascript:|\bon[a-z]+\s*=|[;|]|\$\(", re.IGNORECASE)
    assert not [s.text for s in phrases if active.search(s.text)]
    attacks = generated_attacks(2000, seed=1)
    assert {s.family for s in attacks} == {"cmdi", "xss", "traversal"}
    handlers = [s.text for s in attacks if s.family == "xss"]
    assert all(active.search(text) or text.endswith("``>") for text in handlers)
