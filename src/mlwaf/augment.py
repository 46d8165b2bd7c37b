"""Training-side variants of attack values: the evasions attackers use.

The analyzer and ``features.normalise`` already undo one layer of URL and
HTML encoding and fold case, so variants that only change those teach the
model nothing. These survive normalisation and are what real evasion looks
like: a second layer of encoding, SQL comments and odd whitespace between
tokens, JavaScript escapes, and the attack planted behind and inside ordinary
text (a search phrase, a name, a sentence). Deterministic for a seed; only
ever applied to the training side.
"""

from __future__ import annotations

import random
import re

from mlwaf.datasets import Sample

_SPECIAL = re.compile(r"[<>'\"();|&/.\\ ]")
_SPACES = re.compile(r" +")
_PREFIXES = ("john", "search term ", "1", "red shoes", "O'Neil ", "hello world", "2024-01-01 ", "admin", "test ")
_SUFFIXES = ("", "", " thanks", "&page=2", " -- sent from my phone", " 42")


def double_encode(text: str, rng: random.Random) -> str:
    """Special characters as %25XX: one %-decoding pass still leaves them encoded."""
    return _SPECIAL.sub(lambda m: f"%25{ord(m.group()):02X}" if rng.random() < 0.7 else m.group(), text)


def sql_spacing(text: str, rng: random.Random) -> str:
    """Spaces replaced by inline comments, tabs, newlines or plus signs."""
    choice = rng.choice(("/**/", "\t", "\n", "+", "/*x*/", "%0b"))
    return _SPACES.sub(choice, text)


def js_escape(text: str, rng: random.Random) -> str:
    """Markup characters as JavaScript unicode or hex escapes."""
    style = rng.choice(("\\u00{:02x}", "\\x{:02x}"))
    return re.sub(r"[<>\"'()]", lambda m: style.format(ord(m.group())), text)


def planted(text: str, rng: random.Random) -> str:
    """The attack behind (and sometimes before) ordinary text, as it arrives in a real field."""
    return rng.choice(_PREFIXES) + text + rng.choice(_SUFFIXES)


_BY_FAMILY = {
    "sqli": (double_encode, sql_spacing, planted),
    "xss": (double_encode, js_escape, planted),
    "cmdi": (double_encode, planted),
    "traversal": (double_encode, planted),
}


def variants(samples: list[Sample], share: float, seed: int) -> list[Sample]:
    """One variant for about ``share`` of the attack samples (never for benign ones)."""
    rng = random.Random(seed)
    out = []
    for sample in samples:
        makers = _BY_FAMILY.get(sample.family)
        if makers and rng.random() < share:
            text = rng.choice(makers)(sample.text, rng)
            if text != sample.text:
                out.append(Sample(text, sample.family, f"{sample.source}+augmented"))
    return out
