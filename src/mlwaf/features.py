"""What the attack model reads: each decoded input value as a row of byte ids.

Text is first normalised the way attackers are known to obfuscate it:
leftover %-escapes (double encoding) and HTML entities are decoded once more,
case is folded and digits collapse to ``0``. Each normalised byte ``b``
becomes the id ``b + 1``; ``0`` is padding, which the network masks out, so a
value scores the same whatever row length it is padded to.

LiteRT runs fast only on fixed tensor shapes, so the exported model carries
one signature per (rows, length) pair in ``SHAPES``; a batch of values is
grouped by the shortest length that holds each of them and padded to the
next row count. A value longer than ``WINDOW`` bytes is read as overlapping
windows and scores as its worst window, so nothing past the first 2 KB
escapes the model.

``SPEC_VERSION`` names this exact recipe; a model trained on another recipe is
refused at load time.
"""

from __future__ import annotations

import html
import re

import numpy as np
import numpy.typing as npt

SPEC_VERSION = "bytes-v1"
VOCABULARY = 257  # byte ids 1..256 and the padding id 0
LENGTHS = (16, 32, 64, 128, 256, 512, 1024, 2048)
ROWS = (1, 4, 16, 64)
MAX_POSITIONS = 8192  # rows x length of the largest batch shape (bounds a worker's memory)
SHAPES = tuple((rows, length) for length in LENGTHS for rows in ROWS if rows * length <= MAX_POSITIONS)
_ROWS_BY_LENGTH = {length: [rows for rows, size in SHAPES if size == length] for length in LENGTHS}
WINDOW = LENGTHS[-1]
OVERLAP = 128  # bytes two neighbouring windows of a long value share
_HEX = re.compile(r"%([0-9a-fA-F]{2})")
_DIGITS = bytes.maketrans(b"123456789", b"000000000")


def signature(rows: int, length: int) -> str:
    """The exported model's signature name for one batch shape."""
    return f"rows{rows}_len{length}"


def normalise(value: str) -> bytes:
    """The bytes the model reads for one value."""
    if "%" in value:
        value = _HEX.sub(lambda m: chr(int(m.group(1), 16)), value)
    if "&" in value:
        value = html.unescape(value)
    return value.lower().encode("utf-8", "replace").translate(_DIGITS)


def windows(value: str) -> list[npt.NDArray[np.int32]]:
    """The id rows of one value: one row, or overlapping windows of a long value."""
    data = np.frombuffer(normalise(value), dtype=np.uint8).astype(np.int32) + 1
    if data.size <= WINDOW:
        return [data]
    step = WINDOW - OVERLAP
    return [data[start : start + WINDOW] for start in range(0, data.size - OVERLAP, step)]


def fit_length(size: int) -> int:
    """The shortest exported length that holds ``size`` ids."""
    for length in LENGTHS:
        if size <= length:
            return length
    raise ValueError(f"a row of {size} ids is longer than the window ({WINDOW})")


def fit_rows(count: int, length: int) -> int:
    """How many of ``count`` waiting rows of ``length`` to run next, as an exported row count.

    Rounds up when that wastes at most a quarter of the batch (3 -> 4), else
    runs the largest count that fits (6 -> 4, then 1 and 1): a padded row
    costs compute, an extra call a fixed few microseconds."""
    allowed = _ROWS_BY_LENGTH[length]
    if count >= allowed[-1]:
        return allowed[-1]
    up = next(rows for rows in allowed if rows >= count)
    return up if (up - count) * 4 <= up else max(rows for rows in allowed if rows <= count)
