"""``butler-tw receive``: a local webhook receiver that prints every request readably.

It answers 200 (or ``--status``) to any method on any path. With ``--tls``
it serves a certificate made at start by a throwaway CA (``trustme``), whose
certificate is written to disk for a webhook's ``certCA``; the CA's key is
kept nowhere, so nothing else can ever be signed with it.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import tempfile
import time
from typing import Any, Callable, TextIO
from urllib.parse import parse_qsl

import attrs
import trustme
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

from butler_tw.channels.signing import verify
from butler_tw.cli.text import host_name, reachable
from butler_tw.config.headers import signing_key
from butler_tw.core import words
from butler_tw.daemon.startup import hostport

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

    def __init__(
        self, out: TextIO, status: int, clock: Callable[[], float], verifySecret: str | None = None
    ) -> None:
        Resource.__init__(self)
        self._verifySecret = verifySecret
        self._out = out
        self._status = status
        self._clock = clock
        self.count = 0
        self.failedVerification = 0

    def render(self, request: WebRequest) -> bytes:
        self.count += 1
        headers = {
            name.decode("latin-1").lower(): b", ".join(values).decode("latin-1")
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        content = request.content
        assert content is not None  # noqa: S101 - twisted.web sets it before render
        content.seek(0)
        body = content.read()
        peer = request.getClientAddress()
        client = getattr(peer, "host", "?")
        self._out.write(
            describe_request(
                request.method.decode("latin-1"),
                request.uri.decode("latin-1"),
                headers,
                body,
                client,
                self._clock(),
            )
        )
        if self._verifySecret is not None:
            problem = verify(self._verifySecret, headers, body, now=self._clock())
            self.failedVerification += problem is not None
            self._out.write(
                "  signature: valid (Standard Webhooks)\n\n"
                if problem is None
                else f"  signature: FAILED: {problem}\n\n"
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


def _url_host(host: str, port: int) -> str:
    """``host:port`` as a client here reaches it (``""``, like ``0.0.0.0``, is every IPv4 address)."""
    return hostport(reachable(host or "0.0.0.0"), port)  # noqa: S104 - describing, not binding


_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?")


def _nameable(name: str) -> bool:
    """Whether a certificate can name ``name``: an IP address, or a host name of letters, digits, - and ."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return _HOST_NAME.fullmatch(name) is not None
    return True


def _certificate_names(host: str) -> list[str]:
    names = ["localhost", "127.0.0.1", "::1"]
    if host not in ("", "0.0.0.0", "::"):  # noqa: S104 - describing, not binding
        names.append(host)
    names.append(host_name())
    return [name for name in dict.fromkeys(names) if _nameable(name)]


def make_throwaway_tls(names: list[str], days: int = 30) -> tuple[bytes, ssl.CertificateOptions]:
    """A fresh CA, and TLS options with a server certificate it signs for ``names`` (host names or IPs).

    :returns: the CA's certificate (PEM) and the options to listen with.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = trustme.CA(organization_name="butler-tw receive", organization_unit_name="throwaway CA")
    leaf = ca.issue_cert(
        *names,
        common_name=names[0],
        not_before=now - datetime.timedelta(hours=1),
        not_after=now + datetime.timedelta(days=days),
    )
    private = ssl.PrivateCertificate.loadPEM(leaf.private_key_and_cert_chain_pem.bytes())
    options = ssl.CertificateOptions(privateKey=private.privateKey.original, certificate=private.original)
    return ca.cert_pem.bytes(), options


def listen_receiver(
    reactor: Any,
    out: TextIO,
    host: str = "127.0.0.1",
    port: int = 18080,
    tls: bool = False,
    certDir: str | None = None,
    status: int = 200,
    verifySecret: str | None = None,
) -> RunningReceiver:
    """Start the printing receiver on ``host:port`` (``port`` 0: any free one).

    With ``tls``, a throwaway CA and server certificate are made; the CA is
    written to ``certDir/ca.pem`` (a new temporary directory by default) and
    its path printed, for a webhook's ``cert.certCA``.

    :raises CannotListenError: when the port cannot be listened on.
    """
    site = _ReceiverSite(_PrintingResource(out, status, time.time, verifySecret))
    caFile = None
    if tls:
        ca_pem, options = make_throwaway_tls(_certificate_names(host))
        if certDir is None:
            certDir = tempfile.mkdtemp(prefix="butler-tw-receive-")
        os.makedirs(certDir, exist_ok=True)
        caFile = os.path.abspath(os.path.join(certDir, "ca.pem"))
        with open(caFile, "wb") as f:
            f.write(ca_pem)
        listening: IListeningPort = reactor.listenSSL(port, site, options, interface=host)
    else:
        listening = reactor.listenTCP(port, site, interface=host)
    actual = listening.getHost().port  # type: ignore[attr-defined]
    url = f"{'https' if tls else 'http'}://{_url_host(host, actual)}/"
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
    verifySecret: str | None = None,
) -> Deferred[int]:
    """``butler-tw receive``: fires only on a failure to listen (1); Ctrl-C stops the reactor."""
    if not 0 <= port <= 65535 or not 100 <= status <= 599:
        err.write("butler-tw receive: --port must be 0-65535 and --status an HTTP status (100-599)\n")
        return succeed(2)
    if verifySecret is not None:
        try:
            signing_key(verifySecret if verifySecret.startswith("whsec_") else "whsec_" + verifySecret)
        except ValueError as e:
            err.write(f"butler-tw receive: --verify-secret: {e}\n")
            return succeed(2)
    try:
        running = listen_receiver(reactor, out, host, port, tls, certDir, status, verifySecret)
    except CannotListenError as e:
        reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
        err.write(f"butler-tw receive: cannot listen on {_url_host(host, port)}: {reason}\n")
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
