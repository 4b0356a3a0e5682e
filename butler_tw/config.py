"""Read a Butler ``production.yaml`` into frozen, validated value objects.

Only ``Butler.udpServerConfig``, ``Butler.webhookNotification`` and our own
top-level ``butlerWebhook`` section are read; everything else is reported as
ignored. Every problem is collected, with the key path that holds it, and all
are raised together as one :class:`ConfigError` so that an admin fixes the
file in one go. Nothing downstream re-reads raw YAML.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from typing import Any, Callable, Hashable, Mapping, Sequence
from urllib.parse import SplitResult, urlsplit

import attrs
import yaml
from hyperlink import EncodedURL

from butler_tw.alert import EventKind
from butler_tw.redact import redact_url
from butler_tw.retry import RetryPolicy
from butler_tw.sources import Network, parse_entry

DEFAULT_RATE_LIMIT = 300.0
DEFAULT_TIMEOUT = 10.0
DEFAULT_CONCURRENCY = 4
DEFAULT_SHUTDOWN_GRACE = 10.0
DEFAULT_STATE_DIR = "./state"
DEFAULT_DEAD_LETTER_RETENTION = 7 * 86400.0
DEFAULT_DEDUP_TTL = 10 * 60.0
DEFAULT_RECEIVE_BUFFER = 8 * 1024 * 1024
DEFAULT_MAX_MESSAGE_SIZE = 65507  # the largest UDP payload over IPv4
DEFAULT_SOURCE_RATE_LIMIT = 600  # datagrams per minute per source, when rateLimit.enable is true
DEFAULT_MAX_BUFFERED_ALERTS = 20000
MIN_MAX_BUFFERED_ALERTS = 1000
DEFAULT_BACKPRESSURE_THRESHOLD = 0.8
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
METHODS = ("GET", "POST", "PUT")

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s.+?-----END CERTIFICATE-----", re.DOTALL)


class ConfigError(Exception):
    """The config file cannot be used. ``problems`` lists every reason."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s) in the configuration:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class TrustMode(enum.Enum):
    """How a webhook's TLS server certificate is verified."""

    PLATFORM = "platform"  # the system's CA store, host name verified
    CUSTOM_CA = "custom CA"  # exactly the certificates in certCA, host name verified
    NO_VERIFY = "no verification"  # cert.rejectUnauthorized: false


@attrs.frozen
class TlsSettings:
    mode: TrustMode = TrustMode.PLATFORM
    #: PEM text of each CA certificate (a bundle is split), read at start-up.
    caCertificates: tuple[bytes, ...] = ()
    caFile: str | None = None


@attrs.frozen
class Webhook:
    """One outgoing webhook, as configured.

    :ivar key: where it is in the config file, e.g.
        ``reloadTaskFailure.webhooks[0]``; unique, stable across restarts as
        long as the file is.
    :ivar url: the full URL; a secret (tokens hide in its query and path
        segments): log :func:`butler_tw.redact.redact_url` of it instead.
    """

    key: str
    description: str
    url: str
    method: str
    tls: TlsSettings = TlsSettings()
    timeout: float = DEFAULT_TIMEOUT
    concurrency: int = DEFAULT_CONCURRENCY
    retry: RetryPolicy = RetryPolicy()
    #: The owner says the URL's path holds no secret: logs may show all of it.
    logFullPath: bool = False
    #: A short name of our own (the ``name`` key) for logs and metric labels.
    label: str = ""

    @property
    def loggableUrl(self) -> str:
        """What logs and commands show of the URL: see :mod:`butler_tw.redact`."""
        return redact_url(self.url, safePath=self.logFullPath)

    @property
    def name(self) -> str:
        """How logs and metrics name this webhook: its ``name``, else its description, else its key."""
        return self.label or self.description or self.key

    @property
    def fingerprint(self) -> str:
        """Identifies where it sends (method and URL), without revealing the URL.

        The outbox keeps it beside the key so that, after the config file
        changed, a pending delivery follows its webhook to a new position or
        becomes a dead letter, never going to another receiver.
        """
        return hashlib.sha256(f"{self.method} {self.url}".encode()).hexdigest()[:16]


@attrs.frozen
class Route:
    """Where alerts of one kind go, and how often per task."""

    kind: EventKind
    rateLimit: float = DEFAULT_RATE_LIMIT
    webhooks: tuple[Webhook, ...] = ()


@attrs.frozen
class Config:
    udpHost: str
    udpPort: int
    notificationsEnabled: bool
    routes: Mapping[EventKind, Route]
    shutdownGrace: float = DEFAULT_SHUTDOWN_GRACE
    #: Where the outbox database lives (relative paths: to the working directory).
    stateDir: str = DEFAULT_STATE_DIR
    #: Seconds a dead letter is kept for inspection and replay.
    deadLetterRetention: float = DEFAULT_DEAD_LETTER_RETENTION
    #: Seconds a (kind, executionId) is remembered to drop duplicates; 0 = off.
    dedupTtl: float = DEFAULT_DEDUP_TTL
    #: Bytes of kernel receive buffer asked for the UDP socket.
    receiveBuffer: int = DEFAULT_RECEIVE_BUFFER
    #: Larger datagrams are counted and dropped unread.
    maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE
    #: Only datagrams from ``allowedSources`` are read (``enableSourceValidation``).
    sourceValidation: bool = False
    #: Addresses, CIDR ranges (as networks) and host names (as strings).
    allowedSources: tuple[Network | str, ...] = ()
    #: Datagrams per minute accepted from each source address; 0 = no limit.
    sourceRateLimit: int = 0
    #: Alerts held in memory while the outbox catches up; beyond, new ones are shed.
    maxBufferedAlerts: int = DEFAULT_MAX_BUFFERED_ALERTS
    #: Fraction of ``maxBufferedAlerts`` at which a warning says the store is falling behind.
    backpressureThreshold: float = DEFAULT_BACKPRESSURE_THRESHOLD
    #: Twisted endpoint description for /metrics, /health, /deliveries; None = off.
    httpListen: str | None = None
    #: "text" or "json" (one JSON object per line).
    logFormat: str = "text"
    #: The lowest level logged: debug, info, warn, error or critical.
    logLevel: str = "info"
    #: Config sections present in the file that this daemon does not use.
    ignored: tuple[str, ...] = ()
    #: Settings accepted but changed or not used, each said at start-up.
    notes: tuple[str, ...] = ()

    @property
    def webhooks(self) -> tuple[Webhook, ...]:
        return tuple(w for r in self.routes.values() for w in r.webhooks)

    def warnings(self) -> list[str]:
        """What is valid but an admin must know: shown at start-up and by ``check-config``."""
        found = list(self.notes)
        if not self.notificationsEnabled:
            found.append(
                "Butler.webhookNotification.enable is false: "
                "alerts are received and counted, but nothing is sent"
            )
        if self.httpListen and not _loopback_only(self.httpListen):
            found.append(
                f"butlerWebhook.http.listen is {self.httpListen!r}: /metrics, /health and /deliveries have "
                "no authentication and can be reached from other hosts; add interface=127.0.0.1 unless "
                "that is what you want"
            )
        for w in self.webhooks:
            if w.tls.mode is TrustMode.NO_VERIFY and w.url.lower().startswith("https:"):
                found.append(
                    f"{w.key} ({w.name}) has cert.rejectUnauthorized: false: its server certificate is NOT "
                    "verified, so anyone on the network path can read and change these alerts"
                )
        return found


def _loopback_only(listen: str) -> bool:
    """Whether an endpoint description binds loopback only (a unix socket counts)."""
    if listen.startswith("unix:"):
        return True
    match = re.search(r"(?:^|:)interface=([^:]+)", listen.replace("\\:", "%3A"))
    interface = match.group(1).replace("%3A", ":") if match else ""
    return interface in ("127.0.0.1", "::1", "localhost") or interface.startswith("127.")


# --------------------------------------------------------------------------
# YAML


class _StrictLoader(yaml.SafeLoader):
    """``safe_load`` that refuses duplicate keys instead of keeping the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    # Only the keys written in this mapping count: a key that overrides one
    # brought in by a ``<<:`` merge is deliberate, not a duplicate.
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(None, None, "found unhashable key", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)  # type: ignore[no-untyped-call]


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """Where and what, without PyYAML's quote of the line (it may hold a token)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or type(e).__name__
    if mark is None:
        return str(problem)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def load_config(path: str, reader: Callable[[str], bytes] = read_file) -> Config:
    """Read and validate the config file at ``path`` (and the CA files it names).

    :raises ConfigError: naming every problem found.
    """
    try:
        text = reader(path)
    except OSError as e:
        raise ConfigError(path, [f"cannot read the file: {e.strerror}"]) from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        raise ConfigError(path, [f"not valid YAML: {_yaml_problem(e)}"]) from None
    return parse_config(raw, source=path, reader=reader)


def parse_config(raw: Any, source: str = "<config>", reader: Callable[[str], bytes] = read_file) -> Config:
    """Validate an already-loaded YAML document. ``reader`` reads CA files."""
    v = _Validator(reader)
    config = v.config(raw)
    if v.problems or config is None:
        raise ConfigError(source, v.problems)
    return config


# --------------------------------------------------------------------------
# Validation

_MISSING = object()


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _kind_of(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class _Validator:
    """Walks the document, collecting problems with their key paths."""

    def __init__(self, reader: Callable[[str], bytes]) -> None:
        self.reader = reader
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.defaultConcurrency = DEFAULT_CONCURRENCY

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    # typed getters: each returns the default (after recording a problem) when wrong

    def mapping(self, node: Any, path: str, required: bool = False) -> dict[str, Any] | None:
        if node is None or node is _MISSING:
            if required:
                self.problem(path, "missing")
            return None
        if not isinstance(node, dict):
            self.problem(path, f"expected a mapping, got {_kind_of(node)}")
            return None
        return node

    def boolean(self, node: dict[str, Any], key: str, path: str, default: bool | object) -> Any:
        value = node.get(key, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                self.problem(f"{path}.{key}", "missing (expected true or false)")
                return None
            return default
        if not isinstance(value, bool):
            self.problem(f"{path}.{key}", f"expected true or false, got {_kind_of(value)}")
            return default if default is not _MISSING else None
        return value

    def number(
        self, node: dict[str, Any], key: str, path: str, default: float, low: float, high: float
    ) -> float:
        value = node.get(key, _MISSING)
        if value is _MISSING or value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            self.problem(f"{path}.{key}", f"expected a number, got {_kind_of(value)}")
            return default
        if not low <= value <= high:
            self.problem(f"{path}.{key}", f"must be between {_num(low)} and {_num(high)}, got {_num(value)}")
            return default
        return float(value)

    def string(self, node: dict[str, Any], key: str, path: str, default: str | None = None) -> str | None:
        value = node.get(key, _MISSING)
        if value is _MISSING or value is None:
            if default is None:
                self.problem(f"{path}.{key}", "missing")
            return default
        if not isinstance(value, str):
            self.problem(f"{path}.{key}", f"expected a string, got {_kind_of(value)}")
            return default
        return value

    def unknown_keys(self, node: dict[str, Any], path: str, known: Sequence[str]) -> None:
        for key in node:
            if key not in known:
                near = [k for k in known if k.lower() == str(key).lower()]
                hint = f" (did you mean {near[0]!r}?)" if near else f" (known keys: {', '.join(known)})"
                self.problem(f"{path}.{key}", f"unknown key{hint}")

    # sections

    def config(self, raw: Any) -> Config | None:
        top = self.mapping(raw, "(top level)", required=True)
        if top is None:
            return None
        butler = self.mapping(top.get("Butler", _MISSING), "Butler", required=True)
        if butler is None:
            return None
        ignored = [f"Butler.{k}" for k in butler if k not in ("udpServerConfig", "webhookNotification")]
        ignored += [f"{k}" for k in top if k not in ("Butler", "butlerWebhook")]
        ours = self.mapping(top.get("butlerWebhook", _MISSING), "butlerWebhook") or {}
        self.unknown_keys(
            ours, "butlerWebhook", ("shutdownGracePeriod", "stateDir", "delivery", "http", "log")
        )
        httpListen = self.http(ours.get("http", _MISSING))
        logFormat, logLevel = self.log(ours.get("log", _MISSING))
        grace = self.number(ours, "shutdownGracePeriod", "butlerWebhook", DEFAULT_SHUTDOWN_GRACE, 0, 600)
        stateDir = self.string(ours, "stateDir", "butlerWebhook", DEFAULT_STATE_DIR) or DEFAULT_STATE_DIR
        delivery = self.mapping(ours.get("delivery", _MISSING), "butlerWebhook.delivery") or {}
        self.unknown_keys(
            delivery, "butlerWebhook.delivery", ("retrySchedule", "maxAge", "deadLetterRetention")
        )
        defaults = self.retry_policy(delivery, "butlerWebhook.delivery", RetryPolicy())
        retention = self.number(
            delivery,
            "deadLetterRetention",
            "butlerWebhook.delivery",
            DEFAULT_DEAD_LETTER_RETENTION,
            0,
            3660 * 86400,
        )
        udpHost, udpPort = self.udp(butler.get("udpServerConfig", _MISSING))
        dedupTtl = self.dedup(butler.get("udpServerConfig"))
        udpRaw = butler.get("udpServerConfig")
        udpNode: dict[str, Any] = udpRaw if isinstance(udpRaw, dict) else {}
        receiveBuffer = self.number(
            udpNode, "receiveBufferBytes", "Butler.udpServerConfig", DEFAULT_RECEIVE_BUFFER, 65536, 2**30
        )
        maxMessageSize = self.number(
            udpNode, "maxMessageSize", "Butler.udpServerConfig", DEFAULT_MAX_MESSAGE_SIZE, 256, 65535
        )
        sourceValidation, allowedSources = self.sources(udpNode)
        sourceRateLimit = self.source_rate_limit(udpNode)
        maxBuffered, threshold = self.message_queue(udpNode)
        enabled, routes, more_ignored = self.notifications(
            butler.get("webhookNotification", _MISSING), defaults
        )
        if self.problems or udpHost is None:
            return None
        return Config(
            udpHost=udpHost,
            udpPort=udpPort,
            notificationsEnabled=enabled,
            routes=routes,
            shutdownGrace=grace,
            stateDir=stateDir,
            deadLetterRetention=retention,
            dedupTtl=dedupTtl,
            receiveBuffer=int(receiveBuffer),
            maxMessageSize=int(maxMessageSize),
            sourceValidation=sourceValidation,
            allowedSources=allowedSources,
            sourceRateLimit=sourceRateLimit,
            maxBufferedAlerts=maxBuffered,
            backpressureThreshold=threshold,
            httpListen=httpListen,
            logFormat=logFormat,
            logLevel=logLevel,
            ignored=tuple(ignored + more_ignored),
            notes=tuple(self.notes),
        )

    def http(self, raw: Any) -> str | None:
        path = "butlerWebhook.http"
        node = self.mapping(raw, path)
        if node is None:
            return None
        self.unknown_keys(node, path, ("listen",))
        listen = node.get("listen")
        if listen is None or listen == "":
            return None
        if not isinstance(listen, str):
            self.problem(
                f"{path}.listen",
                f"expected a Twisted endpoint description such as 'tcp:9090:interface=127.0.0.1', "
                f"got {_kind_of(listen)}",
            )
            return None
        from twisted.internet.endpoints import serverFromString

        try:
            # Parsed, not listened on: an endpoint only keeps the reactor it is
            # given, so a stand-in keeps this module from importing (and so
            # installing) the global reactor while reading a file.
            serverFromString(object(), listen)
        except Exception as e:  # a missing key file raises OSError, a bad port ValueError, ...
            self.problem(
                f"{path}.listen",
                f"not a valid endpoint description ({e}); e.g. 'tcp:9090:interface=127.0.0.1'",
            )
            return None
        return listen

    def log(self, raw: Any) -> tuple[str, str]:
        path = "butlerWebhook.log"
        node = self.mapping(raw, path)
        if node is None:
            return "text", "info"
        self.unknown_keys(node, path, ("format", "level"))
        fmt = (self.string(node, "format", path, "text") or "text").lower()
        if fmt not in LOG_FORMATS:
            self.problem(f"{path}.format", f"must be text or json, got {fmt[:20]!r}")
            fmt = "text"
        level = (self.string(node, "level", path, "info") or "info").lower()
        level = {"warning": "warn", "verbose": "debug", "silly": "debug"}.get(level, level)
        if level not in LOG_LEVELS:
            self.problem(f"{path}.level", f"must be one of {', '.join(LOG_LEVELS)}, got {level[:20]!r}")
            level = "info"
        return fmt, level

    def sources(self, udp: dict[str, Any]) -> tuple[bool, tuple[Network | str, ...]]:
        """``enableSourceValidation`` and ``allowedSources``; fails closed where Butler fails open."""
        path = "Butler.udpServerConfig"
        enabled = bool(self.boolean(udp, "enableSourceValidation", path, default=False))
        raw = udp.get("allowedSources")
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            self.problem(f"{path}.allowedSources", f"expected a list, got {_kind_of(raw)}")
            return enabled, ()
        entries: list[Network | str] = []
        for i, item in enumerate(raw):
            where = f"{path}.allowedSources[{i}]"
            if not isinstance(item, str):
                if isinstance(item, int) and not isinstance(item, bool):
                    item = str(item)
                else:
                    self.problem(where, f"expected an address, CIDR range or host name, got {_kind_of(item)}")
                    continue
            try:
                entries.append(parse_entry(item))
            except ValueError as e:
                self.problem(where, str(e))
        if enabled and not raw:
            self.problem(
                f"{path}.allowedSources",
                "is empty while enableSourceValidation is true: every datagram would be refused "
                "(Butler would silently accept them all). List the Qlik Sense servers' addresses, "
                "CIDR ranges or host names, or set enableSourceValidation: false",
            )
        return enabled, tuple(entries)

    def source_rate_limit(self, udp: dict[str, Any]) -> int:
        path = "Butler.udpServerConfig.rateLimit"
        node = self.mapping(udp.get("rateLimit", _MISSING), path)
        if node is None or not self.boolean(node, "enable", path, default=False):
            return 0
        n = self.number(node, "maxMessagesPerMinute", path, DEFAULT_SOURCE_RATE_LIMIT, 1, 10**7)
        return int(n)

    def message_queue(self, udp: dict[str, Any]) -> tuple[int, float]:
        """Butler's ``messageQueue``, mapped onto this pipeline (see the README).

        ``maxSize``: alerts held in memory while the outbox catches up;
        ``maxConcurrent``: the default per-webhook concurrency;
        ``backpressureThreshold``: when to warn that the store falls behind;
        ``enable``: accepted (the queue is always on, as in Butler).
        """
        path = "Butler.udpServerConfig.messageQueue"
        node = self.mapping(udp.get("messageQueue", _MISSING), path)
        if node is None:
            return DEFAULT_MAX_BUFFERED_ALERTS, DEFAULT_BACKPRESSURE_THRESHOLD
        self.boolean(node, "enable", path, default=True)
        concurrent = self.number(node, "maxConcurrent", path, DEFAULT_CONCURRENCY, 1, 256)
        if concurrent != int(concurrent):
            self.problem(f"{path}.maxConcurrent", "must be a whole number")
        self.defaultConcurrency = int(concurrent)
        size = int(self.number(node, "maxSize", path, DEFAULT_MAX_BUFFERED_ALERTS, 1, 10**7))
        if size < MIN_MAX_BUFFERED_ALERTS:
            self.notes.append(
                f"{path}.maxSize is {size}: raised to {MIN_MAX_BUFFERED_ALERTS}. It bounds the alerts held "
                "in memory while the outbox catches up, and a burst of failures fills a smaller one even "
                "when all is well (Butler drops alerts at its default of 200; butler-tw does not)"
            )
            size = MIN_MAX_BUFFERED_ALERTS
        threshold = self.number(
            node, "backpressureThreshold", path, DEFAULT_BACKPRESSURE_THRESHOLD * 100, 0.01, 100
        )
        # Butler's docs give a percentage (80), its code a fraction (0.8): take either.
        return size, threshold / 100 if threshold > 1 else threshold

    def udp(self, raw: Any) -> tuple[str | None, int]:
        path = "Butler.udpServerConfig"
        node = self.mapping(raw, path, required=True)
        if node is None:
            return None, 0
        enable = self.boolean(node, "enable", path, default=False)
        if enable is False:
            self.problem(
                f"{path}.enable",
                "is false or missing: this daemon receives alerts over UDP only, so it has nothing to do."
                " Set it to true.",
            )
        host = self.string(node, "serverHost", path)
        port = node.get("portTaskFailure", _MISSING)
        if port is _MISSING or port is None:
            self.problem(f"{path}.portTaskFailure", "missing (Qlik's log appender usually sends to 9998)")
            return host, 0
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            self.problem(f"{path}.portTaskFailure", f"expected a port number 1-65535, got {_kind_of(port)}")
            return host, 0
        return host, port

    def dedup(self, udp: Any) -> float:
        """Butler's ``udpServerConfig.deduplication``: seconds to remember an executionId."""
        path = "Butler.udpServerConfig.deduplication"
        node = self.mapping(udp.get("deduplication", _MISSING), path) if isinstance(udp, dict) else None
        if node is None:
            return DEFAULT_DEDUP_TTL
        if self.boolean(node, "enable", path, default=True) is False:
            return 0.0
        return 60 * self.number(node, "ttlMinutes", path, DEFAULT_DEDUP_TTL / 60, 0, 7 * 24 * 60)

    def notifications(self, raw: Any, retry: RetryPolicy) -> tuple[bool, dict[EventKind, Route], list[str]]:
        path = "Butler.webhookNotification"
        node = self.mapping(raw, path)
        if node is None:
            return False, {kind: Route(kind) for kind in EventKind}, []
        enabled = bool(self.boolean(node, "enable", path, default=False))
        kinds = [k.value for k in EventKind]
        ignored = [f"{path}.{k}" for k in node if k not in ("enable", *kinds)]
        routes = {
            kind: self.route(node.get(kind.value, _MISSING), kind, f"{path}.{kind.value}", retry)
            for kind in EventKind
        }
        return enabled, routes, ignored

    def route(self, raw: Any, kind: EventKind, path: str, retry: RetryPolicy) -> Route:
        node = self.mapping(raw, path)
        if node is None:
            return Route(kind)
        rate = self.number(node, "rateLimit", path, DEFAULT_RATE_LIMIT, 0, 366 * 86400)
        hooks = node.get("webhooks")
        if hooks is None:
            return Route(kind, rate)
        if not isinstance(hooks, list):
            self.problem(f"{path}.webhooks", f"expected a list of webhooks, got {_kind_of(hooks)}")
            return Route(kind, rate)
        webhooks = []
        for i, entry in enumerate(hooks):
            hook = self.webhook(entry, f"{path}.webhooks[{i}]", f"{kind.value}.webhooks[{i}]", retry)
            if hook is not None:
                webhooks.append(hook)
        return Route(kind, rate, tuple(webhooks))

    def webhook(self, raw: Any, path: str, key: str, retry: RetryPolicy) -> Webhook | None:
        node = self.mapping(raw, path, required=True)
        if node is None:
            return None
        self.unknown_keys(
            node,
            path,
            (
                "description",
                "webhookURL",
                "httpMethod",
                "cert",
                "timeout",
                "concurrency",
                "retrySchedule",
                "maxAge",
                "logFullPath",
                "name",
            ),
        )
        description = self.string(node, "description", path, default="") or ""
        label = (self.string(node, "name", path, default="") or "").strip()
        url = self.url(node, path)
        method = self.string(node, "httpMethod", path)
        if method is not None and method.upper() not in METHODS:
            self.problem(f"{path}.httpMethod", f"must be GET, POST or PUT (any case), got {method[:20]!r}")
        tls = self.tls(node.get("cert", _MISSING), f"{path}.cert", url)
        timeout = self.number(node, "timeout", path, DEFAULT_TIMEOUT, 0.1, 600)
        concurrency = self.number(node, "concurrency", path, self.defaultConcurrency, 1, 256)
        if concurrency != int(concurrency):
            self.problem(f"{path}.concurrency", "must be a whole number")
        retry = self.retry_policy(node, path, retry)
        logFullPath = bool(self.boolean(node, "logFullPath", path, default=False))
        if url is None or method is None or tls is None:
            return None
        return Webhook(
            key=key,
            description=description,
            url=url,
            method=method.upper(),
            tls=tls,
            timeout=timeout,
            concurrency=int(concurrency),
            retry=retry,
            logFullPath=logFullPath,
            label=label,
        )

    def url(self, node: dict[str, Any], path: str) -> str | None:
        url = self.string(node, "webhookURL", path)
        if url is None:
            return None
        # Never echo the URL itself in an error: it may hold a token.
        where = f"{path}.webhookURL"
        if url != url.strip() or any(c.isspace() for c in url):
            self.problem(where, "contains white space")
            return None
        try:
            parts: SplitResult = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            self.problem(where, "not a valid URL (bad port or host)")
            return None
        if parts.scheme.lower() not in ("http", "https"):
            self.problem(where, f"must start with http:// or https:// (scheme is {parts.scheme[:10]!r})")
            return None
        if not parts.hostname:
            self.problem(where, "has no host name")
            return None
        if ":" in parts.hostname:
            self.problem(where, "IPv6 address literals are not supported by the HTTP client: use a host name")
            return None
        try:
            # The conversion treq makes before every request: catch here what it would refuse.
            EncodedURL.from_text(url).to_uri()
        except ValueError:
            self.problem(
                where,
                "the host name is not valid (letters, digits and '-' only, no label starting or "
                "ending with '-'; '_' is not allowed)",
            )
            return None
        return url

    def tls(self, raw: Any, path: str, url: str | None) -> TlsSettings | None:
        node = self.mapping(raw, path)
        if node is None:
            return TlsSettings()
        self.unknown_keys(node, path, ("enable", "rejectUnauthorized", "certCA"))
        if not self.boolean(node, "enable", path, default=False):
            return TlsSettings()  # as in Butler, the rest of a disabled block is not read
        verify = self.boolean(node, "rejectUnauthorized", path, default=True)
        ca_path = self.string(node, "certCA", path)
        if ca_path is None:
            return None
        certs = self.ca_bundle(ca_path, f"{path}.certCA")
        if certs is None:
            return None
        mode = TrustMode.CUSTOM_CA if verify is not False else TrustMode.NO_VERIFY
        return TlsSettings(mode=mode, caCertificates=certs, caFile=ca_path)

    def ca_bundle(self, ca_path: str, where: str) -> tuple[bytes, ...] | None:
        try:
            data = self.reader(ca_path)
        except FileNotFoundError:
            self.problem(where, f"file not found: {ca_path}")
            return None
        except OSError as e:
            self.problem(where, f"cannot read {ca_path}: {e.strerror}")
            return None
        certs = tuple(m.group(0) for m in _PEM_CERT.finditer(data))
        if not certs:
            self.problem(where, f"{ca_path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
            return None
        from OpenSSL import crypto  # deferred: only needed when a CA file is configured

        for n, pem in enumerate(certs, 1):
            try:
                crypto.load_certificate(crypto.FILETYPE_PEM, pem)
            except crypto.Error:
                self.problem(where, f"certificate {n} in {ca_path} cannot be read")
                return None
        return certs

    def retry_policy(self, node: dict[str, Any], path: str, default: RetryPolicy) -> RetryPolicy:
        schedule = default.schedule
        raw = node.get("retrySchedule", _MISSING)
        if raw is not _MISSING and raw is not None:
            if (
                not isinstance(raw, list)
                or not raw
                or any(
                    isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0
                    for s in raw
                )
            ):
                self.problem(f"{path}.retrySchedule", "expected a non-empty list of seconds (numbers >= 0)")
            elif list(raw) != sorted(raw):
                self.problem(f"{path}.retrySchedule", "must be in increasing order")
            elif raw[0] != 0:
                self.problem(f"{path}.retrySchedule", "must start with 0: the first attempt is made at once")
            else:
                schedule = tuple(float(s) for s in raw)
        max_age = self.number(node, "maxAge", path, default.maxAge, 1, 30 * 86400)
        return RetryPolicy(schedule=schedule, maxAge=max_age)
