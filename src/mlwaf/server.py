"""The analyzer daemon: a pre-forked pool of workers on one Unix socket.

Apache's Lua bridge opens one connection per request, so the server is built
for many short connections: the models are loaded once in the parent, the
parent forks one worker per CPU (they share the model pages copy-on-write),
and every worker runs a plain blocking ``accept()`` loop on the same listening
socket. The kernel hands each new connection to one idle worker; there is no
event loop, no thread hand-off and no per-request allocation beyond decoding.

The parent only supervises: it restarts a worker that dies, forwards SIGHUP
(reopen the decision log and the profile observations after rotation) and stops everyone on SIGTERM.
Socket activation is supported: with ``LISTEN_FDS`` from systemd the socket
is inherited, otherwise it is created with the configured group and mode.
Under systemd the parent reports ``READY=1`` once its workers serve and the metrics
endpoint, if any, listens (``notify``).
"""

from __future__ import annotations

import contextlib
import gc
import grp
import os
import pwd
import re
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from mlwaf.behaviour.crowd import Crowd
from mlwaf.behaviour.engine import KINDS as BEHAVIOUR_KINDS
from mlwaf.behaviour.shared import FallbackTracker
from mlwaf.config import Settings
from mlwaf.decision import Analyzer
from mlwaf.metrics import Metrics, ModelInfo, serve_metrics
from mlwaf.profile import KINDS as PROFILE_KINDS
from mlwaf.profile import observe
from mlwaf.protocol import (
    CANARY_PREFIX,
    MAX_MESSAGE_BYTES,
    ProtocolError,
    Reply,
    encode_line,
    error_reply,
    parse_request,
    request_id,
)
from mlwaf.request import Request
from mlwaf.sensitive import SECRET_HEADERS
from mlwaf.sensitive import secret_args as secret_args_pattern
from mlwaf.tuning.record import RecordError, load_key, record

SD_LISTEN_FDS_START = 3
READ_TIMEOUT_S = 2
# A kernel timeout on a blocking socket: no poll() before every recv and send.
_READ_TIMEOUT = struct.pack("ll", READ_TIMEOUT_S, 0)
DRAIN_LIMIT = 64 << 20
BASELINE_EVERY_S = 300
METRICS_SLOT = -1
METRICS_BIND_S = 5.0  # the longest READY waits for the metrics process to bind its port


def log(message: str) -> None:
    """One line to stderr, which systemd sends to the journal."""
    print(message, file=sys.stderr, flush=True)


def notify(state: str) -> None:
    """Tell systemd how the daemon stands (``Type=notify``): ``READY=1`` once the workers
    serve, so that ``systemctl start`` and the playbook's restart return only then. Nothing
    happens outside systemd (no ``$NOTIFY_SOCKET``)."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError as error:
        log(f"mlwaf: cannot tell systemd {state!r} through {path}: {error}")


def handle_line(analyzer: Analyzer, line: bytes) -> tuple[Reply, Request | None]:
    """The reply to one protocol line, and the request it carried; never raises."""
    started = time.perf_counter()
    try:
        request = parse_request(line, analyzer.settings.limits)
    except ProtocolError as exc:
        return error_reply(str(exc), request_id(line)), None
    if request.reported_status:
        analyzer.report_status(request)
        return Reply(verdict="allow", id=request.id), None
    return safe_analyze(analyzer, request, started), request


def witness_line(analyzer: Analyzer, line: bytes) -> Request | None:
    """Hand a line the bridge gave up on to the behavioural layer (Analyzer.witness); the
    request it carried (None for a bad line); never raises."""
    try:
        request = parse_request(line, analyzer.settings.limits)
    except ProtocolError:
        return None  # nothing to count, and nobody waiting for the error
    try:
        analyzer.witness(request)
    except Exception as exc:  # as in safe_analyze: a bug here must not take a worker down
        log(f"mlwaf: error while counting an abandoned request: {exc!r}")
    return request


def safe_analyze(analyzer: Analyzer, request: Request, started: float | None = None, now: float | None = None) -> Reply:
    """The analyzer's reply, or an error reply (allow) if scoring itself fails."""
    try:
        reply = analyzer.analyze(request, started, now)
    except Exception as exc:  # a scoring bug must not take traffic down
        log(f"mlwaf: error while scoring: {exc!r}")
        reply = error_reply(f"internal error: {type(exc).__name__}")
    reply.id = request.id
    return reply


LOGGED_VALUE_CHARS = 1000
LATE, ABANDONED = "late", "abandoned"  # why the bridge never read a reply (decision log: "unanswered")


class AppendFile:
    """A log file every worker appends whole lines to (O_APPEND: lines never interleave);
    reopened after rotation. Failures go to the journal, never up to the caller."""

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self.what = what
        self.fd = -1
        self.reopen()

    def reopen(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if not self.path:
            return
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            log(f"mlwaf: cannot open {self.what} {self.path}: {exc.strerror}; nothing is written to it")

    def append(self, record: dict[str, object]) -> None:
        if self.fd < 0:
            return
        try:
            os.write(self.fd, encode_line(record))
        except OSError as exc:
            log(f"mlwaf: {self.what} write failed: {exc.strerror}")


class DecisionLog(AppendFile):
    """JSON lines, one per decision."""

    def __init__(
        self,
        path: str,
        log_allowed: bool,
        log_values: bool = True,
        name_client: Callable[[str], str] = str,
        secret_args: tuple[str, ...] = (),
    ) -> None:
        self.log_allowed = log_allowed
        self.log_values = log_values
        self.secret = secret_args_pattern(secret_args)
        self.name_client = name_client  # the behavioural layer's hashing, when clients are to be named by a hash
        super().__init__(path, "decision log")

    def write(self, reply: Reply, request: Request | None, unanswered: str = "") -> None:
        """Log a decision: every block, log and error; allows only when asked to. A request
        Apache stopped waiting for (``unanswered``: "late", scored after the bridge's timeout,
        or "abandoned", not scored) is always logged, so that its id joins the line
        ``ml_fallback.log`` has for it (which path Apache took) with what the model said."""
        quiet = reply.verdict == "allow" and not reply.error and not unanswered
        if self.fd < 0 or (quiet and not self.log_allowed):
            return
        record: dict[str, object] = {"ts": round(time.time(), 3)}
        if request is not None:
            record.update(client_ip=self.name_client(request.client_ip), method=request.method, path=request.path[:512])
        record.update(reply.as_dict())
        if unanswered:
            record["unanswered"] = unanswered
            if unanswered == ABANDONED:
                record["verdict"] = "unscored"
        if self.log_values:
            # The inputs behind the verdict, so that `mlwaf feedback` can turn an
            # operator's judgement into training data (LOGGED_VALUE_CHARS at most each).
            # A secret (a password-like argument, a cookie, credentials) is never written.
            for reason, logged in zip(reply.reasons, record["reasons"], strict=True):  # type: ignore[call-overload]
                if reason.value is None:
                    continue
                if self.is_secret(reason.source, reason.name):
                    logged["value_masked"] = True
                else:
                    logged["value"] = reason.value[:LOGGED_VALUE_CHARS]
        self.append(record)

    def is_secret(self, source: str, name: str) -> bool:
        """A cookie, a credentials header, or an argument with a password-like name (what
        was unwrapped from one, ``password:base64``, included)."""
        if source.startswith("cookie"):
            return True
        if source.startswith("header"):
            return re.split(r"[.:\[]", name, maxsplit=1)[0].lower() in SECRET_HEADERS
        return self.secret.search(name) is not None


class ObservationLog(AppendFile):
    """Learning: the shape of every request allowed on its merits (not errors, not
    allowlisted), for ``mlwaf learn --observations``. Shapes only, no values."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "profile observations")

    def write(self, reply: Reply, request: Request | None, unanswered: str = "") -> None:
        if unanswered == ABANDONED:
            return  # not scored: nothing says it was allowed on its merits
        if self.fd >= 0 and request is not None and reply.verdict == "allow" and not (reply.error or reply.note):
            self.append(observe(request).as_dict())


class TuningLog(AppendFile):
    """Learning for site tuning: one line per request a CRS rule, an attack model or the
    behavioural layer flagged (mlwaf.tuning.record), for ``mlwaf tune``. Shapes and
    hashed clients only, no values; the hashing key lives beside the file."""

    def __init__(self, path: str, blocks: dict[str, float]) -> None:
        self.blocks = blocks
        self.key = b""
        if path:
            try:
                self.key = load_key(Path(path + ".key"))
            except (OSError, RecordError) as exc:
                log(f"mlwaf: cannot use the tuning recording's key {path}.key: {exc}; nothing is recorded")
                path = ""
        super().__init__(path, "tuning recording")

    def write(self, reply: Reply, request: Request | None, unanswered: str = "") -> None:
        if self.fd < 0 or request is None or unanswered == ABANDONED or reply.error or reply.note:
            return
        line = record(request, reply, self.key, self.blocks)
        if line is not None:
            self.append(line)


def read_line(conn: socket.socket) -> bytes:
    """One message, up to its newline. An oversize one is read to its end (up to
    DRAIN_LIMIT) but only its first MAX_MESSAGE_BYTES + 1 are kept, so the client
    still gets its error reply instead of a reset connection."""
    chunks: list[bytes] = []
    size = 0
    while size <= DRAIN_LIMIT:
        chunk = conn.recv(65536)
        if not chunk:
            break
        if size <= MAX_MESSAGE_BYTES:
            chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return b"".join(chunks)


def hung_up(conn: socket.socket) -> bool:
    """Whether the client has closed its end: the bridge gives up after its timeout, and
    under overload the backlog fills with such requests. Scoring them would only make
    every later one wait longer (and time out in turn), so they are not scored (Apache
    has already taken the fail mode's path for them), only counted (``witness_line``)."""
    poller = select.poll()
    poller.register(conn, 0)  # a full close only (POLLHUP), not a client's half-close after sending
    return bool(poller.poll(0))


def shared_tracker(analyzer: Analyzer) -> FallbackTracker | None:
    """The behavioural layer's Redis tracker, if it has one, connected for this worker."""
    tracker = analyzer.behaviour.tracker if analyzer.behaviour else None
    if not isinstance(tracker, FallbackTracker):
        return None
    tracker.warm()
    return tracker


def allowed_peers(users: tuple[str, ...]) -> frozenset[int] | None:
    """The user ids whose processes may ask: root, the analyzer's own and ``users``; None
    (anyone who can open the socket) when ``users`` is empty."""
    if not users:
        return None
    return frozenset({0, os.getuid(), *(pwd.getpwnam(name).pw_uid for name in users)})


def peer_uid(conn: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def refuse(conn: socket.socket, peers: frozenset[int] | None, refused: set[int], metrics: Metrics) -> bool:
    """True (counted, and logged once per user) when the peer is not allowed to ask."""
    if peers is None:
        return False
    uid = peer_uid(conn)
    if uid in peers:
        return False
    metrics.refused_peer()
    if uid not in refused:  # a flood of them stays out of the journal
        refused.add(uid)
        log(f"refused a connection from user id {uid} (not in peer_users)")
    return True


def answer(conn: socket.socket, analyzer: Analyzer, metrics: Metrics) -> tuple[Reply, Request | None, str] | None:
    """Read one message and answer it: the reply, the request and, if the bridge never read
    the reply, why (LATE or ABANDONED); None when there is nothing to log."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _READ_TIMEOUT)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _READ_TIMEOUT)
        line = read_line(conn)
    except OSError:
        return None  # the client went away before it had sent its message
    if not line.strip():
        return None
    if hung_up(conn):
        metrics.abandoned()
        request = witness_line(analyzer, line)
        if request is None or request.reported_status:
            return None
        return Reply(verdict="allow", id=request.id), request, ABANDONED
    reply, request = handle_line(analyzer, line)
    try:
        conn.sendall(reply.encode())
    except OSError:  # the bridge gave up meanwhile (its timeout): Apache took its fallback path
        return reply, request, LATE
    return reply, request, ""


def worker(
    listener: socket.socket, analyzer: Analyzer, logs: list[DecisionLog | ObservationLog], metrics: Metrics, slot: int
) -> None:
    reopen = False
    metrics.worker(slot)
    metrics.watch_collector()
    fallback = shared_tracker(analyzer)
    fallbacks_before = metrics.get("fallbacks", slot)  # a replaced worker goes on from its predecessor's count
    peers = allowed_peers(analyzer.settings.peer_users)
    refused: set[int] = set()  # users refused so far, each logged once by this worker

    def on_hup(_signum: int, _frame: object) -> None:
        nonlocal reopen
        reopen = True

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, on_hup)
    while True:
        try:
            conn, _ = listener.accept()
        except InterruptedError:
            continue
        with conn:
            served = None if refuse(conn, peers, refused, metrics) else answer(conn, analyzer, metrics)
        if served is None:
            continue
        reply, request, unanswered = served
        if reopen:
            reopen = False
            for sink in logs:
                sink.reopen()
        if request is not None and request.id.startswith(CANARY_PREFIX):
            continue
        for sink in logs:
            sink.write(reply, request, unanswered)
        if unanswered == ABANDONED:
            continue
        if unanswered:
            metrics.late()
        if request is None and not reply.error:
            metrics.status_report()
        else:
            metrics.count(reply)
        if fallback is not None:
            metrics.set("fallbacks", fallbacks_before + fallback.fallbacks)
            metrics.set("redis_down", float(fallback.using == "local"))


def listening_sockets(settings: Settings) -> tuple[socket.socket, socket.socket | None]:
    """The analyzer's socket and the metrics endpoint's, as systemd passed them (in the socket
    unit's order; the service itself may then be barred from opening Internet sockets), or a
    new one at settings.socket and None (the metrics process opens its own port)."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and int(os.environ.get("LISTEN_FDS", "0")) >= 1:
        passed = int(os.environ["LISTEN_FDS"])
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(key, None)
        metrics = socket.socket(fileno=SD_LISTEN_FDS_START + 1) if passed >= 2 else None
        return socket.socket(fileno=SD_LISTEN_FDS_START), metrics
    path = Path(settings.socket)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    if settings.socket_group:
        os.chown(path, -1, grp.getgrnam(settings.socket_group).gr_gid)
    path.chmod(settings.socket_mode)
    listener.listen(socket.SOMAXCONN)
    return listener, None


class Pool:
    """The parent's side: forks the workers (and the metrics process), replaces one that ends, passes signals on."""

    def __init__(
        self, settings: Settings, analyzer: Analyzer, listener: socket.socket, scrapes: socket.socket | None = None
    ) -> None:
        self.settings, self.analyzer, self.listener, self.scrapes = settings, analyzer, listener, scrapes
        self.logs = [
            DecisionLog(
                settings.decision_log,
                settings.log_allowed,
                settings.log_values,
                analyzer.behaviour.shown if analyzer.behaviour and settings.behaviour.hash_clients else str,
                settings.secret_args,
            ),
            ObservationLog(settings.profile.observations),
            TuningLog(settings.tuning_record, {name: t.block for name, t in analyzer.thresholds.items()}),
        ]
        self.metrics = analyzer_metrics(analyzer, settings.worker_count)
        self.children: dict[int, tuple[float, int]] = {}  # pid: started, worker slot (or METRICS_SLOT)
        self.stopping = False

    def spawn(self, slot: int, bound: Callable[[], object] | None = None) -> None:
        """Fork a worker, or the metrics process (which calls ``bound`` once it has tried its port)."""
        pid = os.fork()
        if pid == 0:
            try:
                if slot == METRICS_SLOT:
                    self.listener.close()
                    for signum in (signal.SIGTERM, signal.SIGINT):
                        signal.signal(signum, signal.SIG_DFL)
                    signal.signal(signal.SIGHUP, signal.SIG_IGN)
                    listen, textfile = self.settings.metrics_listen, self.settings.metrics_textfile
                    serve_metrics(self.metrics, listen, textfile, bound, self.scrapes)
                else:
                    if self.scrapes is not None:
                        self.scrapes.close()
                    worker(self.listener, self.analyzer, self.logs, self.metrics, slot)
            except Exception:  # a child says why it ended, then ends
                traceback.print_exc()
                sys.stderr.flush()
                os._exit(1)
            finally:
                os._exit(0)
        self.children[pid] = (time.monotonic(), slot)
        self.metrics.set("workers", sum(1 for _, s in self.children.values() if s != METRICS_SLOT))

    def forward(self, signum: int, _frame: object = None) -> None:
        if signum != signal.SIGHUP:
            self.stopping = True
            notify("STOPPING=1")
        for pid in list(self.children):
            _kill(pid, signal.SIGTERM if signum == signal.SIGINT else signum)

    def start_metrics(self) -> None:
        """Fork the metrics process and wait until it has bound its port (at most
        ``METRICS_BIND_S``), so that READY means the endpoint answers too."""
        readable, writable = os.pipe()

        def bound() -> None:  # in the child: say so, and keep neither end
            os.write(writable, b".")
            os.close(writable)
            os.close(readable)

        try:
            self.spawn(METRICS_SLOT, bound=bound)
        finally:
            os.close(writable)  # the child holds its copy: its end, or its death, wakes the wait
        select.select([readable], [], [], METRICS_BIND_S)
        os.close(readable)

    def run(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self.forward)
        settings = self.settings
        for slot in range(settings.worker_count):
            self.spawn(slot)
        workers = len(self.children)
        if settings.metrics_listen or settings.metrics_textfile or self.scrapes is not None:
            self.start_metrics()
            url = settings.metrics_listen and f"http://{settings.metrics_listen}/metrics"
            log(f"mlwaf: metrics on {' and '.join(w for w in (url, settings.metrics_textfile) if w)}")
        log(f"mlwaf: serving on {settings.socket} with {workers} workers, mode {settings.mode}")
        notify(f"READY=1\nSTATUS=serving with {workers} workers, mode {settings.mode}")
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            child = self.children.pop(pid, None)
            if self.stopping or child is None:
                continue
            started, slot = child
            what = "metrics process" if slot == METRICS_SLOT else "worker"
            log(f"mlwaf: {what} {pid} ended ({_describe(status)}); starting another")
            if time.monotonic() - started < 1.0:
                time.sleep(1.0)  # a worker that dies at once would otherwise spin
            self.spawn(slot)


def freeze_heap() -> None:
    """Move everything loaded so far (models, settings, imported modules: about 40,000
    objects) out of the garbage collector's reach before the workers fork.

    They live as long as the process, yet every full collection in a worker would walk
    them all (tens of milliseconds, in each worker at about the same request count, as
    they start from the same heap), and touching them would unshare their pages.
    ``mlwaf_gc_longest_seconds`` shows what collections cost."""
    gc.collect()
    gc.freeze()


def serve(settings: Settings, analyzer: Analyzer) -> int:
    pool = Pool(settings, analyzer, *listening_sockets(settings))
    baseline = keep_baseline(settings, analyzer)
    freeze_heap()
    pool.run()
    if baseline is not None and analyzer.behaviour is not None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        save_baseline(analyzer.behaviour.crowd, baseline)
    log("mlwaf: stopped")
    return 0


def analyzer_metrics(analyzer: Analyzer, workers: int) -> Metrics:
    """Shared counters for the workers, labelled with what this analyzer can report."""
    pairs = [(name, family) for name, model in analyzer.models.items() for family in model.families]
    if analyzer.profile is not None:
        pairs += [("profile", kind) for kind in PROFILE_KINDS]
    if analyzer.behaviour is not None:
        pairs += [("behaviour", kind) for kind in BEHAVIOUR_KINDS]
    metrics = Metrics(workers, pairs)
    metrics.models = [
        ModelInfo(name, m.version, analyzer.settings.models[name].runtime)
        for name, m in analyzer.models.items()
        if name in analyzer.settings.models
    ]
    window = analyzer.behaviour.model if analyzer.behaviour else None
    if window is not None:
        metrics.models.append(ModelInfo("behaviour", window.version, analyzer.settings.behaviour.model_runtime))
    if analyzer.behaviour is not None:
        behaviour = analyzer.behaviour
        metrics.clients = lambda: behaviour.tracker.clients(time.time())
    metrics.set("load_s", analyzer.load_seconds)
    metrics.set("started", time.time())
    return metrics


def keep_baseline(settings: Settings, analyzer: Analyzer) -> Path | None:
    """Load the endpoint rate baseline and save it every BASELINE_EVERY_S; its path, or None without one."""
    baseline = Path(settings.behaviour.baseline) if analyzer.behaviour and settings.behaviour.baseline else None
    if baseline is not None and analyzer.behaviour is not None:
        crowd = analyzer.behaviour.crowd
        state = "loaded from" if crowd.load(baseline) else "starts empty, kept in"
        log(f"mlwaf: endpoint rate baseline {state} {baseline}")
        signal.signal(signal.SIGALRM, lambda _s, _f: save_baseline(crowd, baseline))
        signal.setitimer(signal.ITIMER_REAL, BASELINE_EVERY_S, BASELINE_EVERY_S)
    return baseline


def save_baseline(crowd: Crowd, path: Path) -> None:
    """Keep the behavioural layer's endpoint rate baseline (the workers learn it in shared memory)."""
    try:
        crowd.save(path)
    except OSError as exc:
        log(f"mlwaf: cannot save the endpoint rate baseline to {path}: {exc.strerror}")


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
