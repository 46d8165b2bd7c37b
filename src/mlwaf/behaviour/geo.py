"""Country of a client address, for the ``geo_changes`` feature.

Two database formats, picked by the file name:

- ``*.mmdb``: MaxMind's format (GeoLite2-Country, GeoIP2-Country, or any
  database with ``country.iso_code``), read with the ``maxminddb`` package;
- ``*.dat``: the legacy GeoIP country format of Debian's ``geoip-database``
  (``/usr/share/GeoIP/GeoIP.dat``, and ``GeoIPv6.dat`` next to it for IPv6),
  read here: a binary tree over the address bits whose leaves are country
  numbers.

A country is a number (0: unknown): the two letters packed into 16 bits for
MaxMind databases, the database's own country number for legacy ones; the
feature only asks whether it changed. Private, loopback, link-local and
other non-global addresses are never looked up.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from pathlib import Path

COUNTRY_BEGIN = 16776960  # legacy country edition: a record at or past this is a leaf
LEGACY_TYPES = {1: 32, 12: 128}  # database type -> address bits (country IPv4, country IPv6)
CACHE_ENTRIES = 65536  # addresses remembered per worker
Lookup = Callable[[str], int]


class GeoError(ValueError):
    """A geolocation database that cannot be used."""


class LegacyCountry:
    """A legacy GeoIP country database (``GeoIP.dat``) held in memory (about 2 MB)."""

    def __init__(self, path: Path) -> None:
        try:
            self.data = path.read_bytes()
        except OSError as exc:
            raise GeoError(f"cannot read the GeoIP database {path}: {exc.strerror}") from None
        tail = self.data[-20:]
        marker = tail.rfind(b"\xff\xff\xff")
        kind = tail[marker + 3] if marker >= 0 and marker + 3 < len(tail) else 1
        if kind not in LEGACY_TYPES:
            raise GeoError(f"{path} is not a legacy GeoIP country database (type {kind})")
        self.bits = LEGACY_TYPES[kind]

    def country(self, address: int) -> int:
        data, offset = self.data, 0
        for depth in range(self.bits - 1, -1, -1):
            base = offset * 6 + (3 if address >> depth & 1 else 0)
            if base + 3 > len(data):
                return 0
            record = data[base] | data[base + 1] << 8 | data[base + 2] << 16
            if record >= COUNTRY_BEGIN:
                return record - COUNTRY_BEGIN
            offset = record
        return 0


def _global(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address if address.is_global else None


def _legacy(path: Path) -> Lookup:
    v4 = LegacyCountry(path)
    sibling = path.with_name("GeoIPv6.dat")
    v6 = LegacyCountry(sibling) if v4.bits == 32 and sibling.is_file() else (v4 if v4.bits == 128 else None)

    def lookup(text: str) -> int:
        address = _global(text)
        if address is None:
            return 0
        if address.version == 4:
            return v4.country(int(address)) if v4.bits == 32 else 0
        return v6.country(int(address)) if v6 is not None else 0

    return lookup


def _maxmind(path: Path) -> Lookup:
    try:
        import maxminddb  # noqa: PLC0415 - only MaxMind databases need it
    except ImportError:
        raise GeoError("MaxMind databases need the maxminddb package") from None
    try:
        reader = maxminddb.open_database(str(path))
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise GeoError(f"cannot read the MaxMind database {path}: {exc}") from None

    def lookup(text: str) -> int:
        address = _global(text)
        if address is None:
            return 0
        found = reader.get(address)
        code = ((found or {}).get("country") or {}).get("iso_code", "") if isinstance(found, dict) else ""
        return ord(code[0]) << 8 | ord(code[1]) if len(code) == 2 else 0

    return lookup


def open_geo(path: str | Path) -> Lookup:
    """The country lookup of a database file (see the module's docstring)."""
    path = Path(path)
    if not path.is_file():
        raise GeoError(f"no geolocation database at {path}")
    lookup = _maxmind(path) if path.suffix == ".mmdb" else _legacy(path)
    return functools.lru_cache(maxsize=CACHE_ENTRIES)(lookup)  # clients come back
