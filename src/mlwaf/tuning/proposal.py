"""The tuning file: the proposal ``mlwaf tune`` writes, an operator reviews and
``playbooks/tune.yml`` deploys. YAML, one top-level key ``mlwaf_tuning``.

Every entry that reaches a ModSecurity rule or the analyzer's settings is checked
here first: an endpoint is a plain path (its id-like segments as ``{id}``), a CRS
target a collection with one named variable (any variable for an entry that removes a
chained rule whole, where the target is only evidence), a parameter a plain name, a family one
the models know. A recorded path comes from traffic, so nothing in it may be able
to break out of the rule it is written into.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from mlwaf.tuning.record import RecordError

VERSION = 1
FAMILY = re.compile(r"[a-z]{1,32}")
ENDPOINT = re.compile(r"/(?:[A-Za-z0-9._~%/:@+,=!*$()-]|\{id\}){0,511}")  # braces only as {id}
TARGET = re.compile(
    r"(?:ARGS|ARGS_GET|ARGS_POST|ARGS_NAMES|REQUEST_COOKIES|REQUEST_COOKIES_NAMES|"
    r"REQUEST_HEADERS|XML):[A-Za-z0-9._\-\[\]/@*()]{1,200}"
)
VARIABLE = re.compile(r"[A-Z_]{1,40}(?::[A-Za-z0-9._\-\[\]/@*()]{1,200})?")  # a chained rule's, as evidence
PARAM = re.compile(r"[A-Za-z0-9._\-\[\]:>*]{1,200}")  # array_* stands for any element


class TuningError(RecordError):
    """A tuning file that cannot be deployed."""


def unsafe(entry: dict) -> str:
    """Why an entry cannot be written into a rule or the settings ('' when it can). Families
    are checked against the models when the analyzer loads its settings (``mlwaf check``)."""
    checks = [("endpoint", ENDPOINT, "is not a plain path")]
    if "rule" in entry:
        whole = entry.get("whole_rule", False)
        if not isinstance(whole, bool):
            return f"whole_rule {whole!r} is not true or false"
        checks.append(("target", VARIABLE, "is not a variable") if whole else ("target", TARGET, "is not one variable"))
        rule = entry["rule"]
        if isinstance(rule, bool) or not isinstance(rule, int) or not 900000 <= rule <= 999999:
            return f"rule {rule!r} is not a CRS rule id"
    else:
        checks += [("param", PARAM, "is not a plain parameter name"), ("family", FAMILY, "is not a family name")]
    for key, pattern, why in checks:
        value = entry.get(key)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            return f"{key} {value!r} {why}"
    return ""


def dump(proposal: dict) -> str:
    header = (
        "# mlwaf site tuning proposal (mlwaf tune). Review every entry: its evidence, and what it\n"
        "# would have let through. Delete what you do not want, then deploy with\n"
        "#   ansible-playbook playbooks/tune.yml -e mlwaf_tuning_file=THIS_FILE\n"
    )
    return header + yaml.safe_dump(proposal, sort_keys=False, allow_unicode=True, width=100)


def load(path: Path) -> dict:
    """A tuning file, checked: raises TuningError naming the first entry that cannot be deployed."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TuningError(f"cannot read tuning file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise TuningError(f"tuning file {path} is not YAML: {exc}") from None
    tuning = document.get("mlwaf_tuning") if isinstance(document, dict) else None
    if not isinstance(tuning, dict) or tuning.get("version") != VERSION:
        raise TuningError(f"{path}: not a tuning file (mlwaf_tuning with version {VERSION} expected)")
    for kind in ("crs_exclusions", "model_suppressions"):
        entries = tuning.get(kind) or []
        if not isinstance(entries, list):
            raise TuningError(f"{path}: {kind} must be a list")
        for number, entry in enumerate(entries, 1):
            if not isinstance(entry, dict):
                raise TuningError(f"{path}: {kind} entry {number} is not a mapping")
            if (kind == "crs_exclusions") != ("rule" in entry):
                raise TuningError(f"{path}: {kind} entry {number} is of the other kind")
            why = unsafe(entry)
            if why:
                raise TuningError(f"{path}: {kind} entry {number}: {why}")
        tuning[kind] = entries
    return tuning
