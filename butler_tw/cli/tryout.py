"""Try butler-tw without Qlik Sense or a real receiver, and test a config's webhooks.

The network parts of the ``butler-tw`` commands that are not about the outbox:

- :func:`send_test` (``butler-tw send-test``): a clearly marked synthetic
  alert, sent now to the configured webhooks with the daemon's own
  :class:`~butler_tw.http.WebhookClient`, bypassing rate limits and the
  outbox; one result line per webhook.
- :func:`emit` (``butler-tw emit``): sample Qlik scheduler datagrams, in the
  wire format, to a daemon's UDP port.
- :func:`listen_receiver` (``butler-tw receive``): a local webhook receiver
  that prints every request readably and answers 200; with TLS, on a
  throwaway certificate from a throwaway CA written to disk for ``certCA``.

Nothing here prints a configured webhook URL whole: only
:func:`~butler_tw.redact.redact_url` of it.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import socket
import tempfile
import time
import uuid
from typing import Any, Callable, Sequence, TextIO
from urllib.parse import parse_qsl

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet import ssl
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request as WebRequest
from twisted.web.server import Site

from butler_tw.channels.butler import build_request
from butler_tw.config import Config, TrustMode, Webhook
from butler_tw.core import words
from butler_tw.core.alert import Alert, EventKind
from butler_tw.core.retry import Outcome, hint_for_status
from butler_tw.transport.client import WebhookClient

#: The taskId of every ``send-test`` alert: recognisably not a real task.
TEST_TASK_ID = "7e57a1e7-0000-4000-8000-b7e57a1e7000"
TEST_APP_ID = "7e57a1e7-0000-4000-8000-b7e57a1e7001"
TEST_TASK_NAME = "butler-tw test alert"

#: The default taskId of ``emit``'s sample datagrams.
SAMPLE_TASK_ID = "5a3b1e00-0000-4000-8000-b7e5a3b1e000"
SAMPLE_APP_ID = "5a3b1e00-0000-4000-8000-b7e5a3b1e001"
SAMPLE_APP_NAME = "butler-tw sample app"
SAMPLE_TASK_NAME = "Reload of butler-tw sample app"

_TOKEN = {EventKind.FAILED: "/scheduler-task-failed/", EventKind.ABORTED: "/scheduler-task-aborted/"}
_MESSAGE = {
    EventKind.FAILED: "Max retries reached",
    EventKind.ABORTED: "Execution State Change to Aborting",
}
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def qlik_timestamp(now: float) -> str:
    """``now`` as log4net writes it: ``yyyy-MM-dd HH:mm:ss,fff``, local time."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{int(now * 1000) % 1000:03d}"


def _host_name() -> str:
    return re.sub(r"[^A-Za-z0-9.\-_]", "-", socket.gethostname()) or "localhost"


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned columns two spaces apart (no cell is cut)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in rows
    )


# --------------------------------------------------------------------------
# send-test


def make_test_alert(kind: EventKind, now: float | None = None) -> Alert:
    """A synthetic alert that says it is one, with a fresh executionId."""
    now = time.time() if now is None else now
    what = "failed" if kind is EventKind.FAILED else "was aborted"
    return Alert(
        kind=kind,
        hostName=_host_name(),
        user="BUTLER-TW\\send-test",
        taskName=TEST_TASK_NAME,
        taskId=TEST_TASK_ID,
        appName="butler-tw test app",
        appId=TEST_APP_ID,
        logTimeStamp=qlik_timestamp(now),
        logLevel="INFO",
        executionId=str(uuid.uuid4()),
        logMessage=f"TEST ALERT sent by butler-tw send-test: no reload {what}, nothing to do",
    )


def _called(w: Webhook, name: str) -> bool:
    """Whether ``--webhook NAME`` means ``w``: its name, description or key."""
    return name in (w.label, w.description, w.key)


def select_webhooks(
    config: Config, kind: EventKind | None, name: str | None
) -> tuple[list[tuple[EventKind, Webhook]], str | None]:
    """The webhooks ``send-test`` calls, each with its kind; or why there are none.

    ``kind`` None: with a ``name``, every block is searched (each webhook gets
    an alert of its own block's kind); without one, ``reloadTaskFailure``.
    """
    if kind is not None:
        routes = [config.routes[kind]]
    elif name is not None:
        routes = list(config.routes.values())
    else:
        routes = [config.routes[EventKind.FAILED]]
    chosen = [(r.kind, w) for r in routes for w in r.webhooks if name is None or _called(w, name)]
    if chosen:
        return chosen, None
    blocks = " or ".join(r.kind.value for r in routes)
    if name is None:
        return [], f"no webhooks are configured in {blocks}: nothing to test"
    known = [f"{w.description!r} ({w.key})" if w.description else w.key for r in routes for w in r.webhooks]
    problem = f"no webhook in {blocks} has the name, description or key {name!r}"
    elsewhere = [r.kind for r in config.routes.values() for w in r.webhooks if _called(w, name)]
    if elsewhere:
        flag = "failed" if elsewhere[0] is EventKind.FAILED else "aborted"
        problem += f" (it is in {elsewhere[0].value}: use --event {flag})"
    elif known:
        problem += "; there are: " + ", ".join(known)
    return [], problem


def tls_column(webhook: Webhook, outcome: Outcome | None = None) -> str:
    """The webhook's TLS mode and, after a call, whether the certificate was verified."""
    if not webhook.url.lower().startswith("https:"):
        return "none (http)"
    mode = webhook.tls.mode
    if mode is TrustMode.NO_VERIFY:
        return "no verification (NOT verified)"
    name = str(mode.value)
    if outcome is None:
        return name
    if outcome.tlsFailure:
        return f"{name}: FAILED"
    if outcome.status is not None:
        return f"{name}: verified"
    return name


def result_column(outcome: Outcome) -> str:
    """The outcome in plain words, with the daemon's hint for a failing status."""
    if outcome.status is None:
        return outcome.error or "failed"
    text = f"HTTP {outcome.status}"
    hint = "" if 200 <= outcome.status < 300 else hint_for_status(outcome.status)
    return f"{text}: {hint}" if hint else text


def send_test(
    reactor: Any, config: Config, kind: EventKind | None, name: str | None, out: TextIO, err: TextIO
) -> Deferred[int]:
    """Send a test alert to the selected webhooks now; fires with the exit status.

    0 when every webhook answered 2xx, 1 otherwise, 2 when no webhook matched.
    """
    chosen, problem = select_webhooks(config, kind, name)
    if problem is not None:
        err.write(f"butler-tw send-test: {problem}\n")
        return succeed(2)
    alerts = {k: make_test_alert(k) for k in dict.fromkeys(k for k, _ in chosen)}
    if not config.notificationsEnabled:
        out.write(
            "note: Butler.webhookNotification.enable is false: the daemon itself sends nothing;"
            " testing the webhooks anyway\n"
        )
    for k, alert in alerts.items():
        n = sum(1 for kk, _ in chosen if kk is k)
        out.write(
            f"Test alert: {alert.event}, task {alert.taskName!r} ({alert.taskId}),\n"
            f"  executionId {alert.executionId}, webhook-id {alert.alertId}\n"
            f"  sent now to {words.count(n, f'{k.value} webhook', f'{k.value} webhooks')}, "
            "bypassing the rate limit and the outbox\n"
        )
    out.flush()
    clients = [WebhookClient(w, reactor) for _, w in chosen]

    def one(client: WebhookClient, webhook: Webhook, alert: Alert) -> Deferred[tuple[Outcome, float]]:
        started = time.monotonic()
        d = client.send(build_request(alert, webhook, int(time.time())))
        return d.addCallback(lambda outcome: (outcome, time.monotonic() - started))

    sends = [one(c, w, alerts[k]) for c, (k, w) in zip(clients, chosen, strict=True)]
    done: Deferred[list[tuple[Outcome, float]]] = gatherResults(sends, consumeErrors=True)

    def report(results: list[tuple[Outcome, float]]) -> int:
        rows = [("WEBHOOK", "METHOD", "URL", "TLS", "RESULT", "LATENCY")]
        failed = 0
        for (_, w), (outcome, seconds) in zip(chosen, results, strict=True):
            ok = outcome.status is not None and 200 <= outcome.status < 300
            failed += not ok
            rows.append(
                (
                    w.name,
                    w.method,
                    w.loggableUrl,
                    tls_column(w, outcome),
                    result_column(outcome),
                    f"{seconds * 1000:.0f} ms",
                )
            )
        out.write("\n" + format_table(rows) + "\n")
        if failed:
            out.write(f"{failed} of {words.count(len(chosen), 'webhook', 'webhooks')} did not answer 2xx\n")
        elif len(chosen) == 1:
            out.write("the webhook answered 2xx\n")
        else:
            out.write(f"all {len(chosen)} webhooks answered 2xx\n")
        out.flush()
        return 1 if failed else 0

    def close(result: object) -> Deferred[object]:
        closing: Deferred[list[None]] = gatherResults([c.close() for c in clients], consumeErrors=True)
        return closing.addBoth(lambda _: result)

    finished: Deferred[int] = done.addCallback(report)
    finished.addBoth(close)  # the pools are closed before the result passes on
    return finished


# --------------------------------------------------------------------------
# emit


class TargetError(ValueError):
    """A HOST:PORT that cannot be used (the message says why)."""


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` into (host, port)."""
    if text.startswith("["):
        bracketed = re.fullmatch(r"\[([^\]]+)\]:(.*)", text)
        if not bracketed:
            raise TargetError(f"expected [IPv6]:PORT, e.g. [::1]:9998, got {text!r}")
        host, port = bracketed.group(1), bracketed.group(2)
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise TargetError(f"expected HOST:PORT, e.g. 127.0.0.1:9998, got {text!r}")
        if ":" in host:
            raise TargetError(f"put an IPv6 address in brackets, e.g. [::1]:9998, got {text!r}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise TargetError(f"the port must be a number 1-65535, got {port!r}")
    return host, int(port)


def sample_datagram(kind: EventKind, taskId: str, executionId: str, now: float, hostName: str) -> bytes:
    """One datagram as the Qlik scheduler's UDP appender sends it."""
    user = "SAMPLE\\reload-account" if kind is EventKind.FAILED else "SAMPLE\\admin"
    fields = (
        _TOKEN[kind],
        hostName,
        SAMPLE_TASK_NAME,
        SAMPLE_APP_NAME,
        user,
        taskId,
        SAMPLE_APP_ID,
        qlik_timestamp(now),
        "INFO",
        executionId,
        _MESSAGE[kind],
    )
    return ";".join(fields).encode("utf-8")


def emit(target: str, kind: EventKind, taskId: str, count: int, out: TextIO, err: TextIO) -> int:
    """Send ``count`` sample datagrams to ``target`` (``HOST:PORT``); the exit status."""
    try:
        host, port = parse_target(target)
    except TargetError as e:
        err.write(f"butler-tw emit: {e}\n")
        return 2
    if count < 1:
        err.write("butler-tw emit: --count must be at least 1\n")
        return 2
    if not _GUID.fullmatch(taskId):
        err.write(
            f"butler-tw emit: warning: --task-id {taskId!r} is not a lowercase GUID: "
            "the daemon will reject these datagrams\n"
        )
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    except socket.gaierror as e:
        err.write(f"butler-tw emit: cannot resolve {host!r}: {e.strerror}\n")
        return 2
    ip, port = str(address[0]), int(address[1])
    shown = f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"
    sender = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for n in range(1, count + 1):
            data = sample_datagram(kind, taskId, str(uuid.uuid4()), time.time(), _host_name())
            try:
                sender.sendto(data, address)
            except OSError as e:
                err.write(f"butler-tw emit: cannot send to {shown}: {e.strerror}\n")
                return 1
            out.write(f"sent {n}/{count} to {shown} ({len(data)} bytes):\n  {data.decode('utf-8')}\n")
    finally:
        sender.close()
    sent = words.count(count, f"{kind.value} datagram", f"{kind.value} datagrams")
    out.write(
        f"{sent} sent for task {taskId}. The daemon delivers at most one alert"
        " per task per rateLimit seconds (300 by default): use --task-id for another task.\n"
    )
    return 0


# --------------------------------------------------------------------------
# receive

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_UNPRINTABLE_IN_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: Most characters of a body that is not JSON that are printed.
MAX_PRINTED_BODY = 8192
_SHOWN_HEADERS = ("webhook-id", "webhook-timestamp", "user-agent", "content-type")


def _escape(text: str, pattern: re.Pattern[str] = _UNPRINTABLE) -> str:
    """Control characters as ``\\xNN``: a request must not drive the terminal."""
    return pattern.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)


def describe_request(
    method: str, uri: str, headers: dict[str, str], body: bytes, client: str, now: float
) -> str:
    """A request as ``butler-tw receive`` prints it. Pure."""
    path, _, query = uri.partition("?")
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    lines = [f"--- {stamp}  {_escape(method)} {_escape(path)}  (from {client})"]
    for name in _SHOWN_HEADERS:
        if name in headers:
            lines.append(f"{name}: {_escape(headers[name])}")
    if "authorization" in headers:
        lines.append("authorization: (present, not shown)")
    if query:
        lines.append("query:")
        fields = parse_qsl(query, keep_blank_values=True)
        lines += [f"  {_escape(k)} = {_escape(v)}" for k, v in fields] or [f"  {_escape(query)}"]
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            text = body.decode("utf-8", errors="replace")
            cut = (
                f"\n(… {len(text) - MAX_PRINTED_BODY} more characters)"
                if len(text) > MAX_PRINTED_BODY
                else ""
            )
            lines.append(f"body ({len(body)} bytes, not JSON):")
            lines.append(_escape(text[:MAX_PRINTED_BODY], _UNPRINTABLE_IN_TEXT) + cut)
        else:
            lines.append("body (JSON):")
            # json.dumps escapes control characters in strings itself.
            lines.append(json.dumps(parsed, indent=2, ensure_ascii=False))
    elif method not in ("GET", "HEAD"):
        lines.append("(no body)")
    return "\n".join(lines) + "\n\n"


class _PrintingResource(Resource):
    isLeaf = True

    def __init__(self, out: TextIO, status: int, clock: Callable[[], float]) -> None:
        Resource.__init__(self)
        self._out = out
        self._status = status
        self._clock = clock
        self.count = 0

    def render(self, request: WebRequest) -> bytes:
        self.count += 1
        headers = {
            name.decode("latin-1").lower(): b", ".join(values).decode("latin-1")
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        content = request.content
        assert content is not None  # noqa: S101 - twisted.web sets it before render
        content.seek(0)
        peer = request.getClientAddress()
        client = getattr(peer, "host", "?")
        self._out.write(
            describe_request(
                request.method.decode("latin-1"),
                request.uri.decode("latin-1"),
                headers,
                content.read(),
                client,
                self._clock(),
            )
        )
        self._out.flush()
        request.setResponseCode(self._status)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return f"butler-tw receive: answered {self._status}\n".encode()


class _Channel(HTTPChannel):
    """Tells its site when it comes and goes, so that a stop can drop it."""

    def connectionMade(self) -> None:
        self.factory._open[self] = Deferred()  # type: ignore[attr-defined]
        HTTPChannel.connectionMade(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        try:
            HTTPChannel.connectionLost(self, reason)
        finally:
            lost = self.factory._open.pop(self, None)  # type: ignore[attr-defined]
            if lost is not None:
                lost.callback(None)


class _ReceiverSite(Site):
    noisy = False
    protocol = _Channel  # type: ignore[assignment]

    def __init__(self, resource: _PrintingResource) -> None:
        Site.__init__(self, resource)
        self.printer = resource
        self._open: dict[_Channel, Deferred[None]] = {}

    def log(self, request: http.Request) -> None:
        pass  # each request is printed whole instead


@attrs.define
class RunningReceiver:
    """A listening ``butler-tw receive`` server.

    :ivar port: the listening port.
    :ivar url: the base URL to put in a ``webhookURL`` (any path works).
    :ivar caFile: with TLS, the PEM file of the throwaway CA (for ``certCA``).
    """

    port: IListeningPort
    url: str
    caFile: str | None
    site: _ReceiverSite

    @property
    def requests(self) -> int:
        """How many requests have been received."""
        return self.site.printer.count

    def stop(self) -> Deferred[None]:
        """Stop listening and drop every open connection."""
        waits: list[Deferred[Any]] = [maybeDeferred(self.port.stopListening)]
        for channel, lost in list(self.site._open.items()):
            waits.append(lost)
            transport: Any = channel.transport
            if transport is not None:
                transport.abortConnection()
        return gatherResults(waits).addCallback(lambda _: None)


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):  # noqa: S104 - describing, not binding
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def make_throwaway_tls(names: Sequence[str], days: int = 30) -> tuple[bytes, bytes, bytes]:
    """A fresh CA and a server certificate it signs for ``names`` (host names or IPs).

    :returns: ``(ca_cert_pem, server_key_pem, server_cert_pem)``. The CA's key
        is not kept anywhere: nothing else can ever be signed with it.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "butler-tw receive throwaway CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    alt: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem = serialization.Encoding.PEM
    return ca.public_bytes(pem), key_pem, leaf.public_bytes(pem)


def _certificate_names(host: str) -> list[str]:
    names = ["localhost", "127.0.0.1", "::1"]
    if host not in ("", "0.0.0.0", "::"):  # noqa: S104 - describing, not binding
        names.append(host)
    local = _host_name()
    if re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?", local):
        names.append(local)
    return names


def listen_receiver(
    reactor: Any,
    out: TextIO,
    host: str = "127.0.0.1",
    port: int = 18080,
    tls: bool = False,
    certDir: str | None = None,
    status: int = 200,
) -> RunningReceiver:
    """Start the printing receiver on ``host:port`` (``port`` 0: any free one).

    With ``tls``, a throwaway CA and server certificate are made; the CA is
    written to ``certDir/ca.pem`` (a new temporary directory by default) and
    its path printed, for a webhook's ``cert.certCA``.

    :raises CannotListenError: when the port cannot be listened on.
    """
    site = _ReceiverSite(_PrintingResource(out, status, time.time))
    caFile = None
    if tls:
        ca_pem, key_pem, cert_pem = make_throwaway_tls(_certificate_names(host))
        if certDir is None:
            certDir = tempfile.mkdtemp(prefix="butler-tw-receive-")
        os.makedirs(certDir, exist_ok=True)
        caFile = os.path.abspath(os.path.join(certDir, "ca.pem"))
        with open(caFile, "wb") as f:
            f.write(ca_pem)
        private = ssl.PrivateCertificate.loadPEM(key_pem + cert_pem)
        options = ssl.CertificateOptions(privateKey=private.privateKey.original, certificate=private.original)
        listening: IListeningPort = reactor.listenSSL(port, site, options, interface=host)
    else:
        listening = reactor.listenTCP(port, site, interface=host)
    actual = listening.getHost().port  # type: ignore[attr-defined]
    url = f"{'https' if tls else 'http'}://{_url_host(host)}:{actual}/"
    out.write(
        f"butler-tw receive: listening on {url} (any path, any method; answering {status}). Ctrl-C stops.\n"
    )
    if caFile is not None:
        out.write(
            f"TLS with a throwaway certificate. Its CA, for the webhook's cert block: {caFile}\n"
            f"    cert:\n      enable: true\n      certCA: {caFile}\n"
        )
    out.write("\n")
    out.flush()
    return RunningReceiver(port=listening, url=url, caFile=caFile, site=site)


def receive(
    reactor: Any,
    out: TextIO,
    err: TextIO,
    host: str,
    port: int,
    tls: bool,
    certDir: str | None,
    status: int,
) -> Deferred[int]:
    """``butler-tw receive``: fires only on a failure to listen (1); Ctrl-C stops the reactor."""
    if not 0 <= port <= 65535 or not 100 <= status <= 599:
        err.write("butler-tw receive: --port must be 0-65535 and --status an HTTP status (100-599)\n")
        return succeed(2)
    try:
        running = listen_receiver(reactor, out, host, port, tls, certDir, status)
    except CannotListenError as e:
        reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
        err.write(f"butler-tw receive: cannot listen on {_url_host(host)}:{port}: {reason}\n")
        return succeed(1)
    except OSError as e:
        err.write(f"butler-tw receive: cannot write the certificate: {e.strerror}\n")
        return succeed(1)

    def stopping() -> None:
        received = words.count(running.requests, "request", "requests")
        out.write(f"\nbutler-tw receive: stopped, {received} received\n")
        out.flush()

    reactor.addSystemEventTrigger("before", "shutdown", stopping)
    return Deferred()
