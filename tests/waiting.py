"""Polling shared by the suites that run against live hosts (tests/integration, tests/cluster);
on the path through pytest's ``pythonpath`` setting."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Whether ``check`` came true within ``timeout`` seconds, asked every half second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False
