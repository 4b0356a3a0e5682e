"""The configuration as frozen values: what the rest of the daemon reads.

Nothing here reads a file or YAML: :mod:`butler_tw.config.loader` reads the
file, :mod:`butler_tw.config.schema` says which keys exist, and
:mod:`butler_tw.config.build` turns a checked document into these values.
"""

from __future__ import annotations

import enum
import hashlib
import platform
import re
from typing import TYPE_CHECKING, Mapping, Sequence

import attrs

from butler_tw.config.store import StoreSettings
from butler_tw.core.alert import EventKind
from butler_tw.core.redact import redact_url
from butler_tw.core.retry import RetryPolicy
from butler_tw.core.routing import Routing
from butler_tw.core.sources import Network

if TYPE_CHECKING:
    from butler_tw.channels.templates import BodyTemplate

DEFAULT_RATE_LIMIT = 300.0
DEFAULT_TIMEOUT = 10.0
DEFAULT_CONCURRENCY = 4
DEFAULT_SHUTDOWN_GRACE = 10.0
DEFAULT_STATE_DIR = "./state"
#: Seconds a daemon's claim on a delivery of a shared outbox lasts unless renewed.
DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_DEAD_LETTER_RETENTION = 7 * 86400.0
DEFAULT_DEDUP_TTL = 10 * 60.0
DEFAULT_RECEIVE_BUFFER = 8 * 1024 * 1024
DEFAULT_MAX_MESSAGE_SIZE = 65507  # the largest UDP payload over IPv4
DEFAULT_SOURCE_RATE_LIMIT = 600  # datagrams per minute per source, when rateLimit.enable is true
DEFAULT_MAX_BUFFERED_ALERTS = 20000
DEFAULT_MAX_PENDING_IN_MEMORY = 10000  # per webhook: about 30 MB at most
DEFAULT_BACKPRESSURE_THRESHOLD = 0.8
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
METHODS = ("GET", "POST", "PUT")
#: The ``format`` of a webhook entry: the seed's payload, or a preset for a service.
FORMAT_NAMES = ("butler", "teams", "slack", "discord", "pagerduty", "opsgenie")
SEVERITIES = ("critical", "error", "warning", "info")
PRIORITIES = ("P1", "P2", "P3", "P4", "P5")
#: The values ``cert.minVersion`` takes; the first is the default.
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")


class ConfigError(Exception):
    """The config file cannot be used. ``problems`` lists every reason."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        n = len(self.problems)
        lines = [f"{self.source}: {n} problem{'' if n == 1 else 's'} in the configuration:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class TrustMode(enum.Enum):
    """How a webhook's TLS server certificate is verified."""

    PLATFORM = "platform"  # the system's CA store, host name verified
    CUSTOM_CA = "custom CA"  # exactly the certificates in certCA, host name verified
    NO_VERIFY = "no verification"  # cert.rejectUnauthorized: false


@attrs.frozen
class ClientCertificate:
    """A client certificate for mutual TLS (``cert.clientCert``, ``cert.clientKey``), read at start-up.

    :ivar certificates: PEM text of the certificate, then any intermediates
        after it in the file (sent with it).
    :ivar key: the private key, as unencrypted PKCS#8 PEM: a secret, never
        shown (``repr`` leaves it out).
    """

    certFile: str
    keyFile: str
    certificates: tuple[bytes, ...]
    key: bytes = attrs.field(repr=False)
    #: The certificate's subject, for display: ``CN=butler-tw``.
    subject: str = ""


@attrs.frozen
class TlsSettings:
    mode: TrustMode = TrustMode.PLATFORM
    #: PEM text of each CA certificate (a bundle is split), read at start-up.
    caCertificates: tuple[bytes, ...] = ()
    caFile: str | None = None
    #: Sent when the server asks for one (mutual TLS); https URLs only.
    clientCertificate: ClientCertificate | None = None
    #: The lowest protocol version accepted: ``TLSv1.2`` or ``TLSv1.3``.
    minVersion: str = TLS_VERSIONS[0]
    #: The name the server certificate must hold (and SNI), instead of the URL's host.
    serverName: str | None = None


@attrs.frozen
class Proxy:
    """An HTTP proxy a webhook goes through (``proxy``): CONNECT for https, absolute-form for http.

    :ivar credentials: the ``Proxy-Authorization`` value (``Basic ...``) from
        the proxy URL's user info: a secret, never shown.
    :ivar source: where it came from: ``proxy`` (the key) or the
        environment variable read for ``proxy: env`` (e.g. ``HTTPS_PROXY``).
    """

    host: str
    port: int
    credentials: bytes | None = attrs.field(default=None, repr=False)
    source: str = "proxy"

    @property
    def loggable(self) -> str:
        """``http://proxy.corp:3128`` and where it came from; never the credentials."""
        shown = f"http://{self.host}:{self.port}"
        if self.credentials is not None:
            shown += " (with credentials)"
        return shown if self.source == "proxy" else f"{shown} (from {self.source})"


@attrs.frozen
class Auth:
    """A webhook's ``auth:``: how each request says who sends it.

    :ivar type: ``bearer`` (``Authorization: Bearer <secret>``), ``basic``
        (``Authorization: Basic base64(<username>:<secret>)``) or ``header``
        (``<name>: <secret>``, e.g. ``Authorization: GenieKey ...``).
    :ivar secret: the token, the password or the header value; never shown.
    """

    type: str
    secret: str = attrs.field(repr=False)
    username: str = attrs.field(default="", repr=False)
    #: The header it is sent in (``Authorization`` unless ``type`` is ``header``).
    name: str = "Authorization"


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
    #: Which alerts of its block it takes (``match:`` / ``exclude:``).
    routing: Routing = Routing()
    #: Extra request headers (``headers:``), in file order; values may be secrets.
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=False)
    #: ``auth:``; wins over user info in the URL.
    auth: Auth | None = attrs.field(default=None, repr=False)
    #: The Standard Webhooks signing key (``signing.secret`` decoded); None: not signed.
    signingKey: bytes | None = attrs.field(default=None, repr=False)
    #: How the body is written: ``butler`` (the seed's payload) or a preset (``teams``, ...).
    format: str = "butler"
    #: The compiled ``body:`` tree: when set, it is the body, whatever the format.
    body: BodyTemplate | None = None
    #: The request's Content-Type for a body (None: ``application/json``).
    contentType: str | None = None
    #: PagerDuty's integration key (``routingKey``): a secret, never shown.
    routingKey: str = attrs.field(default="", repr=False)
    #: PagerDuty's ``payload.severity`` (None: error for a failure, warning for an abort).
    severity: str | None = None
    #: Opsgenie's ``priority`` P1..P5 (None: P3 for a failure, P4 for an abort).
    priority: str | None = None
    #: The HTTP proxy this webhook's calls go through; None: direct.
    proxy: Proxy | None = None

    @property
    def usesTls(self) -> bool:
        """Whether its calls use TLS (an https URL), and so its ``cert`` block."""
        return self.url.lower().startswith("https:")

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

        Headers, ``auth`` and the signing key are not part of it: they say how
        the sender proves itself to the same receiver, so a rotated token
        leaves pending deliveries with their webhook (they go with the new one).
        """
        return hashlib.sha256(f"{self.method} {self.url}".encode()).hexdigest()[:16]


@attrs.frozen
class Route:
    """Where alerts of one kind go, and how often per task."""

    kind: EventKind
    rateLimit: float = DEFAULT_RATE_LIMIT
    webhooks: tuple[Webhook, ...] = ()


def default_instance_name() -> str:
    """``butlerWebhook.instanceName`` when not given: the host name."""
    return platform.node() or "butler-tw"


@attrs.frozen
class Config:
    udpHost: str
    udpPort: int
    notificationsEnabled: bool
    routes: Mapping[EventKind, Route]
    shutdownGrace: float = DEFAULT_SHUTDOWN_GRACE
    #: Where the outbox database lives (relative paths: to the working directory).
    stateDir: str = DEFAULT_STATE_DIR
    #: The outbox store (SQLite in ``stateDir`` unless PostgreSQL is given).
    store: StoreSettings = StoreSettings()
    #: This daemon's name among those sharing a store (``butlerWebhook.instanceName``).
    instanceName: str = attrs.field(factory=lambda: default_instance_name())
    #: Seconds a claim on a shared delivery lasts unless renewed.
    leaseSeconds: float = DEFAULT_LEASE_SECONDS
    #: Whether a process of its own reads the UDP socket (``butlerWebhook.intakeProcess``).
    intakeProcess: bool = True
    #: Whether the SQLite outbox runs in a process of its own (``butlerWebhook.storeProcess``).
    storeProcess: bool = True
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
    #: Pending deliveries each webhook holds in memory; beyond, they wait in the outbox only.
    maxPendingInMemory: int = DEFAULT_MAX_PENDING_IN_MEMORY
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
        elif not self.webhooks:
            found.append(
                "Butler.webhookNotification is enabled, but no webhook is configured for any kind: "
                "alerts are received and counted, but nothing is sent. Add an entry under "
                "Butler.webhookNotification.reloadTaskFailure.webhooks or .reloadTaskAborted.webhooks"
            )
        if self.httpListen and not _loopback_only(self.httpListen):
            found.append(
                f"butlerWebhook.http.listen is {self.httpListen!r}: /metrics, /health and /deliveries have "
                "no authentication and can be reached from other hosts; add interface=127.0.0.1 unless "
                "that is what you want"
            )
        for w in self.webhooks:
            if w.tls.mode is TrustMode.NO_VERIFY and w.usesTls:
                found.append(
                    f"{w.key} ({w.name}) has cert.rejectUnauthorized: false: its server certificate is NOT "
                    "verified, so anyone on the network path can read and change these alerts"
                )
        return found


def tls_extras(webhook: Webhook) -> list[str]:
    """The TLS settings beyond whom to trust, in words (none for an http URL)."""
    tls = webhook.tls
    if not webhook.usesTls:
        return []
    found = []
    if tls.clientCertificate is not None:
        found.append(f"client certificate {tls.clientCertificate.certFile}")
    if tls.minVersion != TLS_VERSIONS[0]:
        found.append(f"{tls.minVersion} minimum")
    if tls.serverName:
        found.append(f"server name {tls.serverName}")
    return found


def transport_summary(webhook: Webhook) -> str:
    """How a webhook connects, in one phrase for start-up lines and ``check-config``; no secret.

    ``TLS: custom CA (/etc/ca.pem), client certificate /etc/c.pem, TLSv1.3 minimum;
    via proxy http://proxy.corp:3128 (from HTTPS_PROXY)``
    """
    if webhook.usesTls:
        tls = webhook.tls
        parts = [tls.mode.value + (f" ({tls.caFile})" if tls.caFile else ""), *tls_extras(webhook)]
        summary = "TLS: " + ", ".join(parts)
    else:
        summary = "TLS: none (http)"
    if webhook.proxy is not None:
        summary += f"; via proxy {webhook.proxy.loggable}"
    return summary


def _loopback_only(listen: str) -> bool:
    """Whether an endpoint description binds loopback only (a unix socket counts)."""
    if listen.startswith("unix:"):
        return True
    match = re.search(r"(?:^|:)interface=([^:]+)", listen.replace("\\:", "%3A"))
    interface = match.group(1).replace("%3A", ":") if match else ""
    return interface in ("127.0.0.1", "::1", "localhost") or interface.startswith("127.")
