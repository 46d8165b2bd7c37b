"""A short run of the decoder's fuzz target (`make fuzz` runs a million inputs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TARGET = Path(__file__).parents[1] / "fuzz" / "fuzz_decoder.py"


def test_the_decoder_survives_twenty_thousand_fuzzed_inputs(tmp_path: Path) -> None:
    done = subprocess.run(
        # libFuzzer's memory limit reads the peak resident set, which this child inherits from
        # pytest; the target's own check of its current memory stays on
        [
            sys.executable,
            str(TARGET),
            "-runs=20000",
            "-max_len=4096",
            "-print_final_stats=1",
            "-rss_limit_mb=0",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stat::number_of_executed_units: 20000" in done.stderr
