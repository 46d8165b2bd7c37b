"""Real benign web traffic for training and testing the attack model, split by source.

Reads the request folders of the project's ``shared/datasets`` (browser
recordings, API replay cassettes, API fixtures, crawled and logged URLs; see
its README) and the multilingual form values. Every request belongs to a
*source*: the organisation whose repository recorded it, the site it was sent
to, or the folder itself where it holds one site. A source is used whole on
one side only (``ROLES``):

* ``train``: its requests' inputs are benign training values;
* ``calibration``: held back from training; sets the block threshold;
* ``test``: held back from training and calibration; only reported.

Sources named in ``FIXED_ROLES`` have their role by hand (a folder of one site,
or organisations whose repositories share fixtures); the others by a hash of
their name (``role``), so that adding data never moves an existing source.
"""

from __future__ import annotations

import base64
import gzip
import json
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mlwaf.inputs import model_inputs
from mlwaf.request import Arg, Limits, Request, RequestError, from_wire

ROLES = ("train", "calibration", "test")
REQUEST_FOLDERS = (
    "browser-captures",
    "api-replay-cassettes",
    "api-fixtures",
    "adblock-rust-test-urls",
    "elastic-apache-logs",
    "fwaf-goodqueries",
    "iscx-url2016-benign",
)
# Sources whose role is fixed. Browser recordings: Lighthouse's two repositories share
# fixtures, as do sitespeed.io's five, so each organisation is one source.
FIXED_ROLES = {
    "browser-captures:GoogleChrome": "test",
    "browser-captures:sitespeedio": "train",
    "browser-captures:mrname": "calibration",
    "browser-captures:janodvarko": "calibration",
    "adblock-rust-test-urls": "test",
    "elastic-apache-logs": "test",
}
_SINGLE_SITE = frozenset({"adblock-rust-test-urls", "elastic-apache-logs"})


def role(source: str) -> str:
    """A source's side: fixed, or 6 in 10 train, 2 calibration, 2 test by a hash of its name."""
    fixed = FIXED_ROLES.get(source)
    if fixed is not None:
        return fixed
    bucket = zlib.crc32(source.encode()) % 10
    return "train" if bucket < 6 else "calibration" if bucket < 8 else "test"


@dataclass(frozen=True)
class RealRequest:
    """One real request as the analyzer decodes it, and the source it belongs to."""

    request: Request
    source: str
    folder: str
    record: dict = field(default_factory=dict, compare=False)  # as ``mlwaf score`` reads it (for replays)


def source_of(folder: str, row: dict) -> str:
    """The source a row belongs to: its folder for one-site folders, the site for crawled and
    logged URL lists, else the organisation whose repository recorded it."""
    if folder in _SINGLE_SITE:
        return folder
    if folder == "iscx-url2016-benign":
        return f"{folder}:{row.get('host') or '-'}"
    if folder == "fwaf-goodqueries":  # one list of many sites' paths: its first segment stands for a site
        return f"{folder}:{str(row.get('url') or '/').lstrip('/').partition('/')[0].partition('?')[0][:40]}"
    return f"{folder}:{str(row.get('source') or '-').split('/', 1)[0]}"


def wire_record(row: dict) -> dict:
    """A dataset row in the ``mlwaf score`` input contract."""
    headers = {str(k).lower(): str(v) for k, v in (row.get("headers") or {}).items()}
    if row.get("host") and "host" not in headers:
        headers["host"] = str(row["host"])
    if row.get("content_type") and "content-type" not in headers:
        headers["content-type"] = str(row["content_type"])
    body = row.get("body")
    if body is None and row.get("body_b64"):
        body = base64.b64decode(row["body_b64"]).decode("utf-8", "surrogateescape")
    return {
        "method": row.get("method") or ("POST" if body else "GET"),
        "path": row.get("url") or "/",
        "headers": headers,
        "body": body or "",
    }


def _rows(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def real_requests(root: Path, folders: tuple[str, ...] = REQUEST_FOLDERS) -> list[RealRequest]:
    """Every decodable request of the real-traffic folders present under ``root``."""
    out = []
    for folder in folders:
        for name in ("requests.jsonl.gz", "bodies.jsonl.gz"):
            path = root / folder / name
            if not path.exists():
                continue
            for row in _rows(path):
                record = wire_record(row)
                try:
                    request = from_wire(record)
                except RequestError:
                    continue
                out.append(RealRequest(request, source_of(folder, row), folder, record))
    return out


SITE_LISTS = frozenset({"fwaf-goodqueries", "iscx-url2016-benign", "multilingual-values"})


def label(source: str) -> str:
    """How reports name a source: the organisation for recorded traffic, the folder for lists
    of many sites' URLs and for the languages of the multilingual values (one line per site or
    language would drown a table)."""
    folder = source.partition(":")[0]
    return folder if folder in SITE_LISTS else source


def source_label(real: RealRequest) -> str:
    """``label`` of a real request's source."""
    return label(real.source)


def source_roles(root: Path) -> dict[str, dict[str, int]]:
    """Per role, the requests of each source (``source_label``; a site list counts on every
    side its sites fall on), and the multilingual values' languages."""
    out: dict[str, dict[str, int]] = {side: {} for side in ROLES}
    for real in real_requests(root):
        table = out[role(real.source)]
        table[source_label(real)] = table.get(source_label(real), 0) + 1
    languages: dict[str, set[str]] = {side: set() for side in ROLES}
    for _, source in multilingual_values(root):
        languages[role(source)].add(source)
    for side, found in languages.items():
        if found:
            out[side]["multilingual-values (languages)"] = len(found)
    return out


def inputs_of(real: RealRequest, limits: Limits | None = None) -> list[Arg]:
    """What the analyzer scores of a real request (every part, unwrapped)."""
    return model_inputs(real.request, real.request.args, limits or Limits())


def request_inputs(root: Path, side: str) -> dict[str, list[list[str]]]:
    """The scored inputs of each real request on one side (calibration, say), by source (``source_label``)."""
    out: dict[str, list[list[str]]] = {}
    for real in real_requests(root):
        if role(real.source) == side:
            out.setdefault(source_label(real), []).append([a.value for a in inputs_of(real)])
    return out


def multilingual_values(root: Path) -> list[tuple[str, str]]:
    """(value, source) of the multilingual form values, one source per language."""
    path = root / "multilingual-values" / "values.jsonl.gz"
    if not path.exists():
        return []
    return [(str(row["text"]), f"multilingual-values:{row.get('lang') or '-'}") for row in _rows(path)]


def benign_values(root: Path, side: str, per_folder: int, seed: int) -> list[tuple[str, str]]:
    """(value, source) of the distinct inputs of one side's real requests and multilingual
    values, at most ``per_folder`` from each folder (drawn with ``seed``)."""
    by_folder: dict[str, dict[str, str]] = {}
    for real in real_requests(root):
        if role(real.source) == side:
            seen = by_folder.setdefault(real.folder, {})
            for arg in inputs_of(real):
                seen.setdefault(arg.value, real.source)
    for text, source in multilingual_values(root):
        if role(source) == side:
            by_folder.setdefault("multilingual-values", {}).setdefault(text, source)
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    for folder in sorted(by_folder):
        items = sorted(by_folder[folder].items())
        out += rng.sample(items, per_folder) if len(items) > per_folder else items
    return out
