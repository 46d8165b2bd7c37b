"""Real traffic for checking the behavioural layer: the web bot sessions of Iliou et al.
and the access logs of three vulnerability scanners, as ``mlwaf score`` records
(``method``, ``path``, ``headers``, ``client_ip``, ``ts``, ``status``) with a
``label`` and a ``session``, each session's records in time order.

- ``iliou``: ``webbot-iliou/phase1``: humans, moderate and advanced bots (a
  session is a PHP session id; the addresses were removed, so the session is
  the client). ``annotated_training()`` names the sessions the dataset's
  annotations put on the training side.
- ``scanners``: ``apache-scan-logs``: Acunetix, Netsparker and w3af against
  one site, one client each (lines are not in time order in the files).
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

ILIOU = Path("webbot-iliou") / "phase1"
_ILIOU_LINE = re.compile(r'\[([^\]]+)\] "(\S+) (\S+) [^"]*" (\d{3}) \S+ "[^"]*" (\S+) "([^"]*)"')
_COMBINED = re.compile(r'^"?(\S+) \S+ \S+ \[([^\]]+)\] "(\S+) (\S+)[^"]*" (\d{3}) \S+ "[^"]*" "([^"]*)"')
_TIME = "%d/%b/%Y:%H:%M:%S %z"
Sessions = dict[tuple[str, str], list[dict]]  # (label, session) -> records


def _record(method: str, path: str, status: str, agent: str, *, when: str, client: str) -> dict:
    ts = datetime.strptime(when, _TIME).timestamp()
    headers = {"User-Agent": agent} if agent not in ("", "-") else {}
    return {"method": method, "path": path, "status": int(status), "headers": headers, "ts": ts, "client_ip": client}


def _sorted(sessions: Sessions) -> Sessions:
    out: Sessions = {}
    for key, records in sessions.items():
        records.sort(key=lambda r: r["ts"])
        for number, record in enumerate(records):
            record.update(id=f"{key[1]}-{number}", label=key[0], session=key[1])
        out[key] = records
    return out


def iliou(data: Path) -> Sessions:
    """Every session with an id in the Iliou logs (empty when the dataset is not there)."""
    root = data / ILIOU / "data" / "web_logs"
    label_of = {"access_moderate_bots.log": "moderate_bot", "access_advanced_bots.log": "advanced_bot"}
    sessions: Sessions = defaultdict(list)
    for path in sorted(root.glob("*/*.log")):
        label = label_of.get(path.name, "human")
        for line in path.read_text(errors="replace").splitlines():
            match = _ILIOU_LINE.search(line)
            if match and match.group(5) != "-":
                when, method, target, status, session, agent = match.groups()
                sessions[label, session].append(_record(method, target, status, agent, when=when, client=session))
    return _sorted(sessions)


def annotated_training(data: Path) -> set[str]:
    """Session ids the Iliou annotations put on the training side."""
    found = set()
    for path in (data / ILIOU / "annotations").glob("*/train"):
        found |= {line.split()[0] for line in path.read_text().splitlines() if line.strip()}
    return found


def scanners(data: Path) -> Sessions:
    """One session per scanner log and client address (empty when the dataset is not there)."""
    sessions: Sessions = defaultdict(list)
    for path in sorted((data / "apache-scan-logs").glob("*.txt")):
        for line in path.read_text(errors="replace").splitlines():
            match = _COMBINED.match(line)
            if match:
                client, when, method, target, status, agent = match.groups()
                sessions["scanner", f"{path.stem}-{client}"].append(
                    _record(method, target, status, agent, when=when, client=client)
                )
    return _sorted(sessions)
