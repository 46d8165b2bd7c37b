"""The request fields that carry secrets: what the logs mask, and what makes a POST a login.

An argument is secret when its name holds one of ``SECRET_ARGS`` (any case,
anywhere in the name: ``user_password``, ``api_token``), or one of the
operator's own names; the Cookie, Authorization and Proxy-Authorization
headers always are. A password field (``password``, ``passwd``, ``passphrase``,
or ``pass`` and ``pwd`` as a word of the name: ``login[pass]``, not
``passport``) in a POST body makes the request a login attempt, whatever its
path."""

from __future__ import annotations

import re
from collections.abc import Iterable

SECRET_ARGS = ("password", "passwd", "pwd", "pass", "secret", "token")
SECRET_HEADERS = ("cookie", "authorization", "proxy-authorization")
MASK = "***"
PASSWORD_FIELD = re.compile(r"(?i)passw(?:or)?d|passphrase|(?:^|[^a-z])(?:pass|pwd)(?:$|[^a-z])")
_BODY_SOURCES = ("body", "json", "xml")


def secret_args(extra: Iterable[str] = ()) -> re.Pattern[str]:
    """Matches an argument name that holds any of the secret names, ``extra`` included."""
    names = sorted({*SECRET_ARGS, *(n.strip().lower() for n in extra if n.strip())}, key=len, reverse=True)
    return re.compile("|".join(re.escape(n) for n in names), re.IGNORECASE)


def is_login(method: str, args: Iterable[tuple[str, str]]) -> bool:
    """A POST whose body carries a password field; ``args`` as (source, name) pairs."""
    return method.upper() == "POST" and any(s in _BODY_SOURCES and PASSWORD_FIELD.search(n) for s, n in args)
