#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris, libFuzzer) of what reads attacker-sent bytes.

    .venv/bin/python tests/fuzz/fuzz_decoder.py -runs=1000000 -print_final_stats=1   # make fuzz

Each input is read two ways; its first byte chooses which:
- **protocol**: the input is one socket message for `mlwaf.protocol.parse_request`
  (which may only refuse it with `ProtocolError`), and the request it gives is
  turned into the model's inputs (`mlwaf.inputs.model_inputs`: base64, JSON, JWT,
  URL and query unwrapping);
- **decoder**: the next byte picks a content type (form, multipart, JSON, XML,
  text, binary, vendor `+json`, gzip-encoded) and the rest splits at its first
  newline into a query string and a body, which go through the request decoder
  (`mlwaf.request.decode_body`, `parse_urlencoded`, `parse_cookies`, `cap_args`)
  and the same input extraction.

Any other exception is a crash, and so is an input that takes longer than
`-timeout` seconds or memory past `-rss_limit_mb` (defaults here: 2 s and
1024 MB; the target checks its own resident memory against 1024 MB every
1,000 inputs too): libFuzzer stops, writes the input to `crash-<sha1>` (or
`timeout-`, `oom-`) and exits non-zero. With `-runs=N` it stops after N
inputs; `-print_final_stats=1` prints the count (`number_of_executed_units`)
and the peak memory (`peak_rss_mb`). Without a corpus directory on the command
line, the seeds in tests/fuzz/corpus (protocol lines and bodies from the unit
tests' data) start a corpus in a temporary directory, which is removed after.
"""

from __future__ import annotations

import resource
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["mlwaf"]):
    from mlwaf.inputs import model_inputs
    from mlwaf.protocol import ProtocolError, parse_request
    from mlwaf.request import Limits, Request, cap_args, decode_body, parse_cookies, parse_urlencoded

LIMITS = Limits()
CONTENT_TYPES = (
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xYz",
    'multipart/form-data; boundary="a b"',
    "application/json",
    "application/vnd.api+json",
    "text/xml",
    "text/plain",
    "application/octet-stream",
)
SEEDS = Path(__file__).parent / "corpus"
DEFAULTS = ("-timeout=2", "-rss_limit_mb=1024", "-max_len=16384")
# The target's own memory bound, on the current resident set: libFuzzer's -rss_limit_mb reads
# the peak, which a process started from a big one (pytest) inherits across exec.
RSS_LIMIT_MB = 1024
CHECK_EVERY = 1000
runs = 0


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def protocol(data: bytes) -> None:
    try:
        request = parse_request(data, LIMITS)
    except ProtocolError:
        return
    model_inputs(request, request.args, LIMITS)


def decoder(data: bytes) -> None:
    content_type = CONTENT_TYPES[data[0] % len(CONTENT_TYPES)] if data else CONTENT_TYPES[0]
    encoding = "gzip" if data and data[0] & 0x80 else ""
    query, _, body = data[1:].partition(b"\n")
    anomalies: list[str] = []
    args = [*parse_urlencoded(query, "query"), *decode_body(body, content_type, LIMITS, anomalies, encoding)]
    args += parse_cookies(query.decode("utf-8", "replace"))
    args = cap_args(args, LIMITS, anomalies)
    request = Request(id="fuzz", method="POST", path=query.decode("utf-8", "replace"), query="", args=args)
    model_inputs(request, args, LIMITS)


def one_input(data: bytes) -> None:
    global runs  # noqa: PLW0603 - one counter for the whole run
    runs += 1
    if runs % CHECK_EVERY == 0 and resident_mb() > RSS_LIMIT_MB:
        raise MemoryError(f"resident memory past {RSS_LIMIT_MB} MB after {runs} inputs")
    if not data:
        return
    (protocol if data[0] & 1 else decoder)(data[1:])


def main() -> None:
    flags = [a for a in sys.argv[1:] if a.startswith("-")]
    given = {f.split("=", 1)[0] for f in flags}
    flags += [d for d in DEFAULTS if d.split("=", 1)[0] not in given]
    dirs = [a for a in sys.argv[1:] if not a.startswith("-")]
    with tempfile.TemporaryDirectory(prefix="mlwaf-fuzz-") as corpus:
        atheris.Setup([sys.argv[0], *flags, *(dirs or [corpus, str(SEEDS)])], one_input)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
