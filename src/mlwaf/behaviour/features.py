"""What a client's recent history says, in numbers: the seed's eight features and a few more.

All are computed from the tracker's records of one client within the window
(oldest first), in a few vectorised numpy operations:

- ``rate``: requests per second over the window's span (at least one second);
  ``burst``: requests in the last second;
- ``endpoint_entropy``, ``param_entropy``, ``method_entropy``: Shannon entropy
  (bits) of the paths, of the parameter-name sets, of the methods;
- ``ua_consistency``: the share of requests carrying the client's most common
  User-Agent (1.0: always the same one);
- ``geo_changes``: how often the country changed from one request to the next
  (unknown countries, 0, are skipped);
- ``regularity``: 1 - the coefficient of variation of the gaps between
  requests, clipped to 0..1 (1.0: a metronome);
- ``similarity``: mean similarity of each request to the one before (0..1);
- ``not_found``, ``denied``: shares of answered requests with status 404, and
  401 or 403; ``login_share``: share of requests to login paths;
  ``distinct_params``: distinct parameter-name sets;
- ``asset_share``: share of requests for static files (browsers fetch a
  page's style sheets, scripts and images; most tools do not);
  ``browser_share``: share under a browser's User-Agent; ``page_gap``: median
  seconds between consecutive requests for pages (not static files).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import asdict, dataclass
from math import log2, sqrt
from operator import mul, ne, sub

import numpy as np

from mlwaf.behaviour.tracker import FLAG_ASSET, FLAG_BROWSER, FLAG_HAS_PREVIOUS, FLAG_LOGIN


@dataclass(slots=True)  # not frozen: a frozen dataclass takes 7 times longer to make, on every request
class Features:
    count: int
    rate: float
    burst: int
    endpoint_entropy: float
    param_entropy: float
    method_entropy: float
    ua_consistency: float
    geo_changes: float
    regularity: float
    similarity: float
    not_found: float
    denied: float
    login_share: float
    distinct_params: int
    asset_share: float = 0.0
    browser_share: float = 0.0
    page_gap: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


NAMES = tuple(Features.__dataclass_fields__)


def entropy(values: list[int]) -> float:
    """Shannon entropy in bits of the values' distribution."""
    if not values or values.count(values[0]) == len(values):  # one value only: the usual case for methods
        return 0.0
    counts = Counter(values).values()
    if len(counts) < 2:
        return 0.0
    n = len(values)
    return log2(n) - sum(c * log2(c) for c in counts) / n


def compute(history: np.ndarray, now: float) -> Features:
    """The features of one client's history (records within the window, oldest first).

    Histories are short (the tracker's depth, 50 by default), so plain Python over
    lists, with the loops in C (``map``, ``count``), beats numpy's per-call overhead."""
    n = int(history.size)
    if n == 0:
        return Features(0, 0.0, 0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
    ts = history["ts"].tolist()
    params = history["params"].tolist()
    flags = history["flags"].tolist()
    status = history["status"].tolist()
    regularity = 0.0
    if n >= 3:
        gaps = list(map(sub, ts[1:], ts[:-1]))
        mean = sum(gaps) / len(gaps)
        if mean > 0:
            variance = max(sum(map(mul, gaps, gaps)) / len(gaps) - mean * mean, 0.0)
            regularity = min(max(1.0 - sqrt(variance) / mean, 0.0), 1.0)
    countries = [c for c in history["country"].tolist() if c]
    changes = sum(map(ne, countries[1:], countries[:-1]))
    similar = [s for s, f in zip(history["similarity"].tolist(), flags, strict=True) if f & FLAG_HAS_PREVIOUS]
    answered = (n - status.count(0)) or 1
    pages = [t for t, f in zip(ts, flags, strict=True) if not f & FLAG_ASSET]
    assets = n - len(pages)
    per_flags = Counter(flags).items()  # a handful of distinct combinations: count each bit once
    agents = history["ua"].tolist()
    page_gaps = sorted(map(sub, pages[1:], pages[:-1]))
    middle = len(page_gaps) // 2
    return Features(
        count=n,
        rate=n / max(now - ts[0], 1.0),
        burst=n - bisect_left(ts, now - 1.0),
        endpoint_entropy=entropy(history["path"].tolist()),
        param_entropy=entropy(params),
        method_entropy=entropy(history["method"].tolist()),
        ua_consistency=1.0 if agents.count(agents[0]) == n else max(Counter(agents).values()) / n,
        geo_changes=changes / (len(countries) - 1) if len(countries) > 1 else 0.0,
        regularity=regularity,
        similarity=sum(similar) / len(similar) / 200 if similar else 0.0,
        not_found=status.count(404) / answered,
        denied=(status.count(401) + status.count(403)) / answered,
        login_share=sum(c for f, c in per_flags if f & FLAG_LOGIN) / n,
        distinct_params=len(set(params)),
        asset_share=assets / n,
        browser_share=sum(c for f, c in per_flags if f & FLAG_BROWSER) / n,
        page_gap=(page_gaps[middle] if len(page_gaps) % 2 else (page_gaps[middle - 1] + page_gaps[middle]) / 2)
        if page_gaps
        else 0.0,
    )
