"""Real-traffic corpora split by source (mlwaf.training.traffic), on a small folder laid out like shared/datasets."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

from mlwaf.training.traffic import ROLES, benign_values, real_requests, request_inputs, role, source_of, source_roles


def write(root: Path, folder: str, rows: list[dict], name: str = "requests.jsonl.gz") -> None:
    (root / folder).mkdir(parents=True, exist_ok=True)
    with gzip.open(root / folder / name, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)


def test_a_source_is_an_organisation_a_site_or_a_folder() -> None:
    assert source_of("browser-captures", {"source": "GoogleChrome/lighthouse:core/x.json"}) == (
        "browser-captures:GoogleChrome"
    )
    assert source_of("iscx-url2016-benign", {"host": "example.org", "url": "/a"}) == "iscx-url2016-benign:example.org"
    assert source_of("fwaf-goodqueries", {"url": "/shop/item?id=1"}) == "fwaf-goodqueries:shop"
    assert source_of("elastic-apache-logs", {"source": "elastic/examples:x"}) == "elastic-apache-logs"


def test_roles_are_fixed_or_hashed_and_stable() -> None:
    assert role("browser-captures:GoogleChrome") == "test"
    assert role("browser-captures:sitespeedio") == "train"
    hashed = [role(f"iscx-url2016-benign:site{i}.example") for i in range(400)]
    assert set(hashed) == set(ROLES)
    assert 0.5 < hashed.count("train") / len(hashed) < 0.7
    assert hashed == [role(f"iscx-url2016-benign:site{i}.example") for i in range(400)], "a source never moves"


def test_requests_are_read_as_the_analyzer_reads_them(tmp_path: Path) -> None:
    protobuf = base64.b64encode(b"\x08\x96\x01\x12\x07testing").decode()
    write(
        tmp_path,
        "browser-captures",
        [
            {"source": "GoogleChrome/x:a", "method": "GET", "url": "/s?q=%3Csvg%3E", "host": "a.example"},
            {"source": "GoogleChrome/x:a", "method": None, "url": "/p", "headers": {"X-Note": "a b;c"}},
            {"source": "sitespeedio/y:b", "url": "/t", "content_type": "application/x-protobuf", "body_b64": protobuf},
        ],
    )
    requests = real_requests(tmp_path)
    assert [r.source for r in requests] == ["browser-captures:GoogleChrome"] * 2 + ["browser-captures:sitespeedio"]
    assert requests[0].request.headers["host"] == "a.example"
    assert requests[2].request.method == "POST"
    assert "body_binary" in requests[2].request.anomalies
    assert request_inputs(tmp_path, "test") == {"browser-captures:GoogleChrome": [["<svg>"], ["a b;c"]]}
    assert benign_values(tmp_path, "test", 1, seed=1) in (
        [("<svg>", "browser-captures:GoogleChrome")],
        [("a b;c", "browser-captures:GoogleChrome")],
    ), "at most per_folder values of a folder"
    assert benign_values(tmp_path, "train", 10, seed=1) == [], "a binary body gives nothing to learn"
    assert source_roles(tmp_path)["test"] == {"browser-captures:GoogleChrome": 2}
