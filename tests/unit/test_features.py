"""Text normalisation and hashed n-grams."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from mlwaf.features import MAX_CHARS, NGRAM_SIZES, hash_ngrams, normalise


def test_normalise_undoes_obfuscation() -> None:
    assert normalise("UNION%2520SeLeCt") == b"union%00select"  # one extra decoding pass, then digits fold
    assert normalise("%3Cscript%3E") == b"<script>"
    assert normalise("&lt;img src=x onerror=alert(1)&gt;") == b"<img src=x onerror=alert(0)>"
    assert normalise("id=42") == b"id=00"
    assert len(normalise("a" * (MAX_CHARS + 10))) == MAX_CHARS


def test_ngrams_per_value_and_no_crossing() -> None:
    values = ["ab", "", "xyz"]
    buckets, owner = hash_ngrams(values, 12)
    assert buckets.shape == owner.shape
    assert buckets.max() < 1 << 12
    # A framed value of length L+2 has L+2-n+1 n-grams of each size n (all
    # distinct here, barring a hash collision).
    expected = [sum(max(0, len(v) + 2 - n + 1) for n in NGRAM_SIZES) for v in values]
    assert np.bincount(owner, minlength=3).tolist() == expected


def test_each_bucket_counts_once_per_value() -> None:
    short, _ = hash_ngrams(["test" * 3], 16)
    long, _ = hash_ngrams(["test" * 300], 16)
    assert short.tolist() == long.tolist()
    buckets, owner = hash_ngrams(["aaaaaaaa", "aaaaaaaa"], 16)
    for value in (0, 1):
        mine = buckets[owner == value]
        assert len(set(mine.tolist())) == mine.size


def test_ngrams_are_deterministic_and_order_free() -> None:
    one, _ = hash_ngrams(["select"], 16)
    two, owner = hash_ngrams(["hello", "select"], 16)
    assert sorted(one.tolist()) == sorted(two[owner == 1].tolist())


def test_no_values() -> None:
    buckets, owner = hash_ngrams([], 16)
    assert buckets.size == owner.size == 0


@given(st.lists(st.text(), max_size=8))
def test_any_text_hashes(values: list[str]) -> None:
    buckets, owner = hash_ngrams(values, 10)
    assert buckets.size == owner.size
    assert (buckets < 1 << 10).all()
    if values:
        assert set(owner.tolist()) == set(range(len(values)))
