"""The learning period's recording: one JSON line per request that a CRS rule, an attack
model or the behavioural layer flagged, with shapes and counts only.

A line names the endpoint (id-like segments folded), the CRS rules that fired and on
which variable, the attack models' reasons (family, where, score, whether it reached
the block threshold), the behavioural layer's findings, and the shape (length and
character classes) of each flagged input. It never holds a value, and the client is
kept only as two keyed hashes: its address and its network (IPv4 /24, IPv6 /48), so
that ``mlwaf tune`` can count distinct clients without the recording naming anyone.
The key lives beside the recording, readable by the analyzer alone.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
import time
from pathlib import Path

from mlwaf.inputs import generic_name
from mlwaf.profile import char_classes, endpoint_of
from mlwaf.protocol import CHAINED, Reply
from mlwaf.request import Request

SPEC = 1
KEY_BYTES = 16
NETWORK_PREFIX = {4: 24, 6: 48}  # clients behind one such network count as one


class RecordError(ValueError):
    """A recording or its key that cannot be used."""


def load_key(path: Path) -> bytes:
    """The recording's hashing key, made (0600) on first use; the same one for every worker
    and every restart, so a client seen on two days is counted once."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise RecordError(f"{path}: a recording key is {KEY_BYTES} bytes, this one {len(key)}") from None
        return key
    key = secrets.token_bytes(KEY_BYTES)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


def network_of(address: str) -> str:
    """The network a client address belongs to for counting (the address itself when unreadable)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    return str(ipaddress.ip_network(f"{ip}/{NETWORK_PREFIX[ip.version]}", strict=False))


def _hash(key: bytes, text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "replace"), key=key, digest_size=8).hexdigest()


def _shape(value: str) -> list[object]:
    return [len(value), char_classes(value)]


def crs_target_name(target: str) -> str:
    """The argument a CRS variable names (``ARGS:comment`` -> ``comment``; '' for none)."""
    collection, _, name = target.partition(":")
    return name if collection in ("ARGS", "ARGS_GET", "ARGS_POST", "ARGS_NAMES") else ""


def record(request: Request, reply: Reply, key: bytes, blocks: dict[str, float]) -> dict[str, object] | None:
    """The recording's line for one scored request, or None when nothing flagged it.
    ``blocks`` maps each attack model's name to its block threshold."""
    # A rule's own transaction variables say nothing about the site's inputs; a chained rule is
    # kept whatever its last condition read, since it can only be removed whole.
    crs = sorted({(r, t) for r, t in request.crs_hits if r.endswith(CHAINED) or not t.startswith("TX:")})
    models = [r for r in reply.reasons if r.model in blocks]
    behaviour = sorted({r.family for r in reply.reasons if r.model == "behaviour"})
    if not (crs or models or behaviour):
        return None
    values = {arg.name: arg.value for arg in request.args}
    shapes: dict[str, list[object]] = {}
    for reason in models:
        if reason.value is not None:
            shapes[f"{reason.source}:{generic_name(reason.name)}"] = _shape(reason.value)
    for _, target in crs:
        name = crs_target_name(target)
        if name in values:
            shapes[target] = _shape(values[name])
    line: dict[str, object] = {
        "v": SPEC,
        "t": int(request.ts or time.time()),
        "c": _hash(key, request.client_ip),
        "n": _hash(key, network_of(request.client_ip)),
        "m": request.method,
        "e": endpoint_of(request.path)[:512],
        "cs": request.crs_score,
        "crs": [list(hit) for hit in crs],
        "ml": [
            [r.model, r.family, r.source, r.name, round(r.score, 4), int(r.score >= blocks[r.model])] for r in models
        ],
        "s": shapes,
    }
    if behaviour:
        line["b"] = behaviour
    return line
