"""Tampered requests: held-back normal requests of the example site, changed the way
CSIC 2010's anomalous requests change them, for testing the application profile.

Each mutation is one a signature will rarely see: letters in a numeric field,
an odd character in a plain field, an overlong value, a parameter added,
misspelt or dropped, a backup copy or unknown file requested next to a real
page, or a method the page does not take. Which mutation a request gets is
drawn at random among those that apply to it.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import replace

from mlwaf.training.datasets import HttpRequest

_SYMBOLS = "<>;|'\"{}[]$\\`^~%*"
_NEW_NAMES = ("debug", "admin", "test", "role", "user_id", "isAdmin", "redirect", "cmd", "lang", "discount", "x")
_BACKUP_SUFFIXES = (".bak", ".old", "~", ".orig", ".swp", ".save", ".inc", ".zip", ".tmp", "_old", ".1")
_HIDDEN_FILES = ("web.xml", "config.inc", ".htaccess", "admin.jsp", "backup.sql", "install.jsp", "test.jsp", ".git")
_METHODS = ("PUT", "DELETE", "PATCH", "TRACE", "OPTIONS", "PROPFIND")

Mutation = Callable[[HttpRequest, random.Random], "HttpRequest | None"]


def _args(request: HttpRequest) -> list[tuple[str, int]]:
    """Every (part, index) of a query or form argument."""
    return [("query", i) for i in range(len(request.query))] + [("form", i) for i in range(len(request.form))]


def _with_arg(request: HttpRequest, part: str, index: int, name: str, value: str) -> HttpRequest:
    args = list(getattr(request, part))
    args[index] = (name, value)
    return replace(request, **{part: tuple(args)})


def _pick(request: HttpRequest, rng: random.Random, test: Callable[[str], bool]) -> tuple[str, int] | None:
    slots = [(p, i) for p, i in _args(request) if test(getattr(request, p)[i][1])]
    return rng.choice(slots) if slots else None


def letters_in_number(request: HttpRequest, rng: random.Random) -> HttpRequest | None:
    slot = _pick(request, rng, str.isdigit)
    if slot is None:
        return None
    name, value = getattr(request, slot[0])[slot[1]]
    at = rng.randint(0, len(value))
    letters = "".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(1, 3)))
    return _with_arg(request, *slot, name, value[:at] + letters + value[at:])


def odd_character(request: HttpRequest, rng: random.Random) -> HttpRequest | None:
    slot = _pick(request, rng, lambda v: bool(v) and v.replace(" ", "").isalnum())
    if slot is None:
        return None
    name, value = getattr(request, slot[0])[slot[1]]
    at = rng.randint(0, len(value))
    return _with_arg(request, *slot, name, value[:at] + rng.choice(_SYMBOLS) + value[at:])


def overlong(request: HttpRequest, rng: random.Random) -> HttpRequest | None:
    slot = _pick(request, rng, lambda v: True)
    if slot is None:
        return None
    name, value = getattr(request, slot[0])[slot[1]]
    filler = value or rng.choice(string.ascii_letters)
    size = max(64, len(value)) * rng.randint(3, 20)
    return _with_arg(request, *slot, name, (filler * (size // len(filler) + 1))[:size])


def unknown_param(request: HttpRequest, rng: random.Random) -> HttpRequest | None:
    part = "form" if request.form else "query"
    value = rng.choice(("1", "true", "yes", str(rng.randint(0, 9999)), "es", "0"))
    extra = ((rng.choice(_NEW_NAMES), value),)
    return replace(request, **{part: getattr(request, part) + extra})


def misspelt_param(request: HttpRequest, rng: random.Random) -> HttpRequest | None:
    slot = _pick(request, rng, lambda v: True)
    if slot is None:
        return None
    name, value = getattr(request, slot[0])[slot[1]]
    at = rng.randrange(len(name)) if name else 0
    edit = rng.choice(("drop", "double", "swap", "replace")) if len(name) > 1 else "double"
    if edit == "drop":
        typo = name[:at] + name[at + 1 :]
    elif edit == "double":
        typo = name[: at + 1] + name[at:]
    elif edit == "swap" and at + 1 < len(name) and name[at] != name[at + 1]:
        typo = name[:at] + name[at + 1] + name[at] + name[at + 2 :]
    else:
        typo = name[:at] + rng.choice([c for c in string.ascii_lowercase if c != name[at].lower()]) + name[at + 1 :]
    return _with_arg(request, *slot, typo, value)


def missing_param(request: HttpRequest, rng: random.Random) -> HttpRequest | None:
    slot = _pick(request, rng, lambda v: True)
    if slot is None:
        return None
    part, index = slot
    args = getattr(request, part)
    return replace(request, **{part: args[:index] + args[index + 1 :]})


def hidden_file(request: HttpRequest, rng: random.Random) -> HttpRequest | None:
    if request.path.endswith("/"):
        return replace(request, path=request.path + rng.choice(_HIDDEN_FILES), query=(), form=())
    if rng.random() < 0.5:
        return replace(request, path=request.path + rng.choice(_BACKUP_SUFFIXES), query=(), form=())
    folder = request.path.rsplit("/", 1)[0]
    return replace(request, method="GET", path=f"{folder}/{rng.choice(_HIDDEN_FILES)}", query=(), form=())


def other_method(request: HttpRequest, rng: random.Random) -> HttpRequest | None:
    return replace(request, method=rng.choice(_METHODS))


MUTATIONS: dict[str, Mutation] = {
    "letters-in-number": letters_in_number,
    "odd-character": odd_character,
    "overlong-value": overlong,
    "unknown-parameter": unknown_param,
    "misspelt-parameter": misspelt_param,
    "missing-parameter": missing_param,
    "hidden-file": hidden_file,
    "other-method": other_method,
}


def tamper(request: HttpRequest, rng: random.Random) -> tuple[str, HttpRequest]:
    """One mutation of a request, drawn among those that apply; its name and the result."""
    kinds = list(MUTATIONS)
    rng.shuffle(kinds)
    for kind in kinds:
        changed = MUTATIONS[kind](request, rng)
        if changed is not None and changed != request:
            return kind, changed
    raise ValueError(f"no mutation applies to {request}")  # other_method always does
