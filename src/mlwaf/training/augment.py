"""Training-side variants of attack values: the evasions attackers use.

The analyzer and ``features.normalise`` already undo one layer of URL and
HTML encoding and fold case, so variants that only change those teach the
model nothing. These survive normalisation and are what real evasion looks
like: a second layer of encoding, SQL comments and odd whitespace between
tokens, JavaScript escapes, and the attack planted behind and inside ordinary
text (a search phrase, a name, a sentence) or behind a real benign value
(a User-Agent, a title), a script sent into a JavaScript
context without its markup, its calls written the other ways JavaScript
allows, and a file path in the other forms a server
accepts (absolute, the other separator, drive-relative). Deterministic for a
seed; only ever applied to the training side.
"""

from __future__ import annotations

import random
import re

from mlwaf.training.datasets import Sample, marked

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


_JOINS = (" ", "", ";", ",", "'")
_VALUE_LENGTHS = range(8, 241)  # benign values long enough to hide behind, short enough to leave room


def behind_value(text: str, rng: random.Random, values: list[str]) -> str:
    """The attack appended to a real benign value (a User-Agent, a title, a URL): what a
    model that reads only the start of a value, or weighs the ordinary part, lets through."""
    return rng.choice(values) + rng.choice(_JOINS) + text


_SCRIPTS = (
    re.compile(r"<script[^>]*>([^<]+)</script", re.IGNORECASE),  # a script element's body
    re.compile(r"\bon[a-z]+\s*=\s*[\"'`]?([^\"'`>]+)", re.IGNORECASE),  # an event handler's value
    re.compile(r"javascript:([^\"'>]+)", re.IGNORECASE),  # a javascript: URL's code
)


def script_only(text: str, rng: random.Random) -> str:
    """The script without its markup: what an attacker sends into a quoted string of an inline
    script or into an attribute that already holds code, where ``alert(1)`` runs as it is."""
    found = [m.group(1).strip() for pattern in _SCRIPTS for m in pattern.finditer(text)]
    found = [code for code in found if len(code) >= 4]
    return rng.choice(found) if found else text


_CALL = re.compile(r"\b(alert|prompt|confirm|eval|print)\s*\(([^()]*)\)", re.IGNORECASE)
_PROPERTY = re.compile(r"\b(document|window)\.(cookie|domain|location)\b", re.IGNORECASE)
_CALL_FORMS = (
    "{f}.call(null,{a})",
    "{f}.apply(null,[{a}])",
    "window['{f}']({a})",
    'top["{f}"]({a})',
    "({f})({a})",
    "{f}?.({a})",
    "{f}`{a}`",
)


def js_call(text: str, rng: random.Random) -> str:
    """A script's call and property reads written the other ways JavaScript allows:
    ``alert.call(null,1)``, ``window['alert'](1)``, ``alert?.(1)``, ``document["cookie"]``."""
    form = rng.choice(_CALL_FORMS)
    called = _CALL.sub(lambda m: form.format(f=m.group(1), a=m.group(2)), text, count=1)
    quote = rng.choice("'\"")
    return _PROPERTY.sub(lambda m: f"{m.group(1)}[{quote}{m.group(2)}{quote}]", called)


_CLIMB = re.compile(r"(?:\.\.+[\\/]+)+")
_DRIVE = re.compile(r"\b([a-z]):[\\/]+", re.IGNORECASE)


def other_path(text: str, rng: random.Random) -> str:
    """The same target named another way a server accepts: without the climb (an absolute
    path, for an include that takes one as it is), with the other separator (Windows takes
    both), or drive-relative (``c:boot.ini``)."""
    choice = rng.choice(("absolute", "separator", "drive"))
    if choice == "absolute" and _CLIMB.search(text):
        target = "/" + _CLIMB.sub("", text).lstrip("/\\")
        return target if marked(target, "traversal") else text  # "/index.php" is no attack
    if choice == "drive" and _DRIVE.search(text):
        return _DRIVE.sub(r"\1:", text)
    return text.replace("\\", "/") if "\\" in text else text.replace("/", "\\")


_BY_FAMILY = {
    "sqli": (double_encode, sql_spacing, planted),
    "xss": (double_encode, js_escape, planted, script_only, js_call),
    "cmdi": (double_encode, planted),
    "traversal": (double_encode, planted, other_path),
}


def variants(samples: list[Sample], share: float, seed: int) -> list[Sample]:
    """One variant for about ``share`` of the attack samples (never for benign ones)."""
    rng = random.Random(seed)
    values = [s.text for s in samples if s.family == "benign" and len(s.text) in _VALUE_LENGTHS]
    out = []
    for sample in samples:
        makers = _BY_FAMILY.get(sample.family)
        if makers and rng.random() < share:
            maker = rng.choice((*makers, behind_value) if values else makers)
            text = maker(sample.text, rng, values) if maker is behind_value else maker(sample.text, rng)
            if text != sample.text:
                out.append(Sample(text, sample.family, f"{sample.source}+augmented"))
    return out
