"""Text normalisation, byte ids, windows and batch shapes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlwaf.features import LENGTHS, OVERLAP, SHAPES, WINDOW, fit_length, fit_rows, normalise, windows


def test_normalise_undoes_obfuscation() -> None:
    assert normalise("UNION%2520SeLeCt") == b"union%00select"  # one extra decoding pass, then digits fold
    assert normalise("%3Cscript%3E") == b"<script>"
    assert normalise("&lt;img src=x onerror=alert(1)&gt;") == b"<img src=x onerror=alert(0)>"
    assert normalise("id=42") == b"id=00"


def test_byte_ids_leave_zero_for_padding() -> None:
    (row,) = windows("a\x00")
    assert row.tolist() == [ord("a") + 1, 1]


def test_long_values_become_overlapping_windows() -> None:
    text = "".join(chr(97 + i % 26) for i in range(3 * WINDOW))
    parts = windows(text)
    assert all(part.size <= WINDOW for part in parts)
    assert len(parts) == 4
    assert parts[0][-OVERLAP:].tolist() == parts[1][:OVERLAP].tolist()
    assert parts[-1][-1] == ord(text[-1]) + 1  # the end of the value is read too


@given(st.text(max_size=5000))
def test_windows_cover_every_byte(text: str) -> None:
    parts = windows(text)
    size = len(normalise(text))
    assert sum(p.size for p in parts) - OVERLAP * (len(parts) - 1) == size


def test_shapes_and_fitting() -> None:
    assert fit_length(1) == LENGTHS[0]
    assert fit_length(33) == 64
    with pytest.raises(ValueError, match="longer than the window"):
        fit_length(WINDOW + 1)
    assert fit_rows(3, 32) == 4  # one padded row is cheaper than three calls
    assert fit_rows(6, 32) == 4  # ten padded rows are not
    assert fit_rows(500, 32) == 64
    assert fit_rows(9, WINDOW) == max(rows for rows, length in SHAPES if length == WINDOW)
    assert all(rows * length <= 8192 for rows, length in SHAPES)
