"""Turn decoded input values into hashed character n-grams, many values at once.

The attack model reads each input (an argument value, the path, a cookie) as
text. Text is first normalised the way attackers are known to obfuscate it:
leftover %-escapes (double encoding) and HTML entities are decoded once more,
case is folded and digits collapse to ``0``. The normalised bytes are then
cut into overlapping 1- to 4-byte n-grams, each hashed into one of
``2**bits`` buckets, and each bucket counts once per value (presence, not
count: a value made of one word repeated a hundred times weighs what the
word weighs, so padding neither hides an attack nor makes a benign run of
``testtesttest...`` look like one). All values of one request are hashed in one pass of a few
numpy operations, so the cost per request hardly depends on how many inputs
it has.

``SPEC_VERSION`` names this exact recipe; a model trained on another recipe is
refused at load time.
"""

from __future__ import annotations

import html
import re

import numpy as np
import numpy.typing as npt

SPEC_VERSION = "ngram-hash-v2"
NGRAM_SIZES = (1, 2, 3, 4)  # consecutive, starting at 1: each size extends the previous hash
MAX_CHARS = 2048  # only the first MAX_CHARS bytes of a value are read
_START, _END = 2, 3  # framing bytes, so that n-grams see where a value begins and ends
_PRIMES = np.array([0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F], dtype=np.uint32)
_SEED = 0x165667B1
_HEX = re.compile(r"%([0-9a-fA-F]{2})")
_DIGITS = bytes.maketrans(b"123456789", b"000000000")


def normalise(value: str) -> bytes:
    """The bytes the model reads for one value."""
    if "%" in value:
        value = _HEX.sub(lambda m: chr(int(m.group(1), 16)), value)
    if "&" in value:
        value = html.unescape(value)
    raw = value.lower().encode("utf-8", "replace")[:MAX_CHARS]
    return raw.translate(_DIGITS)


def hash_ngrams(values: list[str], bits: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The distinct n-gram buckets of every value, and which value each belongs to.

    Returns ``(buckets, owner)``, two arrays of equal length, sorted by owner;
    ``owner[i]`` is the index in ``values`` of the value bucket ``i`` came from.
    """
    if not values:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    framed = [bytes((_START,)) + normalise(v) + bytes((_END,)) for v in values]
    lengths = np.fromiter((len(f) for f in framed), dtype=np.intp, count=len(framed))
    data = np.frombuffer(b"".join(framed), dtype=np.uint8).astype(np.uint32)
    owner_of_byte = np.repeat(np.arange(len(framed), dtype=np.intp), lengths)
    mask = np.uint32((1 << bits) - 1)
    buckets, owners = [], []
    h = np.full(data.size, _SEED, dtype=np.uint32)
    for n in NGRAM_SIZES:
        # h[i] extends the (n-1)-gram hash starting at byte i with byte i+n-1.
        count = data.size - n + 1
        if count <= 0:
            break
        h = (h[:count] ^ data[n - 1 : n - 1 + count]) * _PRIMES[n - 1]
        mixed = h ^ (h >> np.uint32(15))
        same_value = owner_of_byte[:count] == owner_of_byte[n - 1 : n - 1 + count]
        buckets.append((mixed[same_value] & mask).astype(np.intp))
        owners.append(owner_of_byte[:count][same_value])
    keys = np.unique((np.concatenate(owners) << bits) | np.concatenate(buckets))
    return keys & int(mask), keys >> bits
