"""A short run of the decoder's fuzz target (`make fuzz` runs a million inputs)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

TARGET = Path(__file__).parents[1] / "fuzz" / "fuzz_decoder.py"


def test_the_decoder_survives_twenty_thousand_fuzzed_inputs() -> None:
    done = subprocess.run(
        [sys.executable, str(TARGET), "-runs=20000", "-max_len=4096", "-print_final_stats=1", "-seed=1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stat::number_of_executed_units: 20000" in done.stderr
    peak = int(re.search(r"stat::peak_rss_mb:\s+(\d+)", done.stderr)[1])  # type: ignore[index]
    assert peak < 1024, f"peak memory {peak} MB"
