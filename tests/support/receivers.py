"""Real loopback webhook receivers (HTTP and HTTPS) for tests on the real reactor.

A :class:`Receiver` is a ``twisted.web`` server on ``127.0.0.1``, port 0,
that records every request it gets and answers from a script of
:class:`Reply` values (the last one repeats). Start one with
:func:`listen_http` or :func:`listen_https`; both are synchronous, take the
running ``TestCase`` and register a cleanup that stops the listener and
drops every server-side connection, so trial never reports a dirty reactor::

    receiver = listen_http(self, Reply(500), Reply(200))
    client = start_client(self, make_webhook(receiver.url("/hook")))
    outcome = yield client.send(request)
    self.assertEqual(len(receiver.requests), 1)

For HTTPS, issue the server certificate from a ``trustme.CA``::

    ca = trustme.CA()
    receiver = listen_https(self, ca.issue_cert("localhost", "127.0.0.1"))
    receiver.serverNames  # the SNI name of each TLS handshake (None: no SNI)

Also here: :func:`make_alert`, :func:`make_webhook`, :func:`start_client`
(a ``WebhookClient`` closed on cleanup), :class:`RecordingOutbox` (an
outbox whose states can be awaited), :func:`write_pems`,
:func:`tls_settings_for` and :func:`closed_port`.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any, Iterable, Sequence
from urllib.parse import parse_qs

import attrs
import trustme
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IPushProducer
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from butler_tw.config import Proxy, TlsSettings, Webhook
from butler_tw.core.alert import Alert, EventKind
from butler_tw.core.delivery import Delivery
from butler_tw.core.retry import RetryPolicy
from butler_tw.delivery.stores.memory import MemoryOutbox
from butler_tw.transport.client import WebhookClient

HOST = "127.0.0.1"


def _reactor(reactor: Any) -> Any:
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        return global_reactor
    return reactor


# --------------------------------------------------------------------------
# What the receiver answers, and what it records


@attrs.frozen
class Reply:
    """One scripted answer.

    :ivar status: the HTTP status code.
    :ivar headers: extra response headers, e.g. ``(("Retry-After", "1"),)``.
    :ivar body: the response body (sent with a Content-Length).
    :ivar delay: seconds to wait before answering.
    :ivar hang: never answer at all; the connection stays open until the
        client gives up or the receiver stops.
    :ivar stallBody: send the status, headers and ``body``, announce more
        body than that, and never send the rest.
    :ivar endless: stream body bytes until the client disconnects.
    """

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    delay: float = 0.0
    hang: bool = False
    stallBody: bool = False
    endless: bool = False


@attrs.frozen
class RecordedRequest:
    """One request as the receiver saw it.

    :ivar path: the path, without the query.
    :ivar query: the raw (still percent-encoded) query string, ``""`` if none.
    :ivar headers: lower-case header name to its values, in arrival order.
    :ivar connection: serial number (from 1) of the TCP connection it came on.
    :ivar receivedAt: the receiver's clock (``reactor.seconds()``) when the
        request had been read whole.
    """

    method: str
    path: str
    query: str
    headers: dict[str, list[str]]
    body: bytes
    connection: int
    receivedAt: float = 0.0

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or ``None``."""
        values = self.headers.get(name.lower())
        return values[0] if values else None


# --------------------------------------------------------------------------
# The server


class _Channel(HTTPChannel):
    """An HTTP/1.1 channel that tells its receiver when it comes and goes."""

    serial = 0
    receiver: Receiver

    def connectionMade(self) -> None:
        self.receiver = self.factory.receiver  # type: ignore[attr-defined]
        self.serial = self.receiver._connected(self)
        HTTPChannel.connectionMade(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        try:
            HTTPChannel.connectionLost(self, reason)
        finally:
            self.receiver._disconnected(self)


class _Site(Site):
    """A quiet site: no access log (it would hold the URL), no idle timer."""

    noisy = False
    protocol = _Channel  # type: ignore[assignment]

    def __init__(self, receiver: Receiver) -> None:
        Site.__init__(self, _RecordingResource(receiver), timeout=None)
        self.receiver = receiver

    def log(self, request: Request) -> None:
        pass


class _RecordingResource(Resource):
    isLeaf = True

    def __init__(self, receiver: Receiver) -> None:
        Resource.__init__(self)
        self._receiver = receiver

    def render(self, request: Request) -> Any:
        uri = request.uri.decode("latin-1")
        path, _, query = uri.partition("?")
        headers: dict[str, list[str]] = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            headers[name.decode("latin-1").lower()] = [v.decode("latin-1") for v in values]
        request.content.seek(0)
        recorded = RecordedRequest(
            method=request.method.decode("ascii"),
            path=path,
            query=query,
            headers=headers,
            body=request.content.read(),
            connection=request.channel.serial,
            receivedAt=self._receiver._clock.seconds(),
        )
        index = len(self._receiver.requests)
        reply = self._receiver._record(recorded)
        if reply.hang:
            return NOT_DONE_YET
        if reply.delay > 0:
            call = self._receiver._clock.callLater(reply.delay, self._receiver._answer, index, request, reply)
            self._receiver._calls.append(call)
            request.notifyFinish().addBoth(lambda _: call.cancel() if call.active() else None)
            return NOT_DONE_YET
        self._receiver._answer(index, request, reply)
        return NOT_DONE_YET


def _answer(request: Request, reply: Reply, clock: Any) -> None:
    request.setResponseCode(reply.status)
    for name, value in reply.headers:
        request.setHeader(name, value)
    if reply.endless:
        request.registerProducer(_Endless(request, clock), True)
        return
    if reply.stallBody:
        request.setHeader("Content-Length", str(len(reply.body) + 1_000_000))
        if reply.body:
            request.write(reply.body)
        return
    request.setHeader("Content-Length", str(len(reply.body)))
    if reply.body:
        request.write(reply.body)
    request.finish()


@implementer(IPushProducer)
class _Endless:
    """Writes 64 KiB chunks for as long as the transport wants them."""

    CHUNK = b"x" * 65536

    def __init__(self, request: Request, clock: Any) -> None:
        self._request = request
        self._clock = clock
        self._paused = False
        self._stopped = False
        self._call: IDelayedCall | None = None
        request.notifyFinish().addBoth(lambda _: self.stopProducing())
        self._schedule()

    def _schedule(self) -> None:
        if self._call is None and not self._paused and not self._stopped:
            self._call = self._clock.callLater(0, self._write)

    def _write(self) -> None:
        self._call = None
        if self._paused or self._stopped:
            return
        for _ in range(4):
            self._request.write(self.CHUNK)
        self._schedule()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


class Receiver:
    """A recording webhook receiver on ``127.0.0.1``.

    :ivar requests: every request received, in order (:class:`RecordedRequest`).
    :ivar replies: the :class:`Reply` each of :attr:`requests` got (or is to get), in the same order.
    :ivar answeredAt: for each of :attr:`requests`, when its reply was written (the
        receiver's clock), or ``None`` while it has not been (a delay, a hang, a
        client that went away first).
    :ivar connections: how many TCP connections were accepted.
    :ivar serverNames: HTTPS only: the SNI name of each TLS handshake, as
        bytes, or ``None`` when the client sent none.
    """

    def __init__(self, replies: Sequence[Reply | int], scheme: str, reactor: Any) -> None:
        self.scheme = scheme
        self.requests: list[RecordedRequest] = []
        self.replies: list[Reply] = []
        self.answeredAt: list[float | None] = []
        self.connections = 0
        self.serverNames: list[bytes | None] = []
        self._replies: list[Reply] = []
        self._scriptFrom = 0
        self.answer(*replies)
        self._clock = reactor
        self._calls: list[IDelayedCall] = []
        self._open: dict[_Channel, Deferred[None]] = {}
        self._waiting: list[tuple[int, Deferred[list[RecordedRequest]]]] = []
        self._idle: list[Deferred[None]] = []
        self._port: IListeningPort | None = None
        self.site = _Site(self)

    @property
    def port(self) -> int:
        assert self._port is not None
        return self._port.getHost().port  # type: ignore[attr-defined, no-any-return]

    def url(self, path: str = "/", host: str = HOST) -> str:
        """The URL of ``path`` (which may hold a query) on this receiver."""
        return f"{self.scheme}://{host}:{self.port}{path}"

    def answer(self, *replies: Reply | int) -> None:
        """From the next request on, answer ``replies`` in turn (the last repeats; none: 200).

        Switches a running receiver between working and failing (``answer(503)``,
        ``answer(200)``); requests already waiting for a delayed reply keep theirs.
        """
        self._replies = [r if isinstance(r, Reply) else Reply(status=r) for r in replies] or [Reply()]
        self._scriptFrom = len(self.requests)

    def waitForRequests(self, count: int = 1) -> Deferred[list[RecordedRequest]]:
        """Fires with :attr:`requests` once at least ``count`` have arrived."""
        d: Deferred[list[RecordedRequest]] = Deferred()
        self._waiting.append((count, d))
        self._wake()
        return d

    @property
    def openConnections(self) -> int:
        """Connections accepted and not yet closed."""
        return len(self._open)

    def waitForDisconnects(self) -> Deferred[None]:
        """Fires once no connection is open (at once if none is)."""
        d: Deferred[None] = Deferred()
        if not self._open:
            d.callback(None)
        else:
            self._idle.append(d)
        return d

    def stop(self) -> Deferred[None]:
        """Stop listening, drop every open connection, cancel pending replies."""
        for call in self._calls:
            if call.active():
                call.cancel()
        waits: list[Deferred[Any]] = []
        if self._port is not None:
            waits.append(maybeDeferred(self._port.stopListening))
            self._port = None
        for channel, lost in list(self._open.items()):
            waits.append(lost)
            if channel.transport is not None:
                channel.transport.abortConnection()
        return gatherResults(waits).addCallback(lambda _: None)

    # called by the server parts

    def _listening(self, port: IListeningPort) -> None:
        self._port = port

    def _connected(self, channel: _Channel) -> int:
        self.connections += 1
        self._open[channel] = Deferred()
        return self.connections

    def _disconnected(self, channel: _Channel) -> None:
        lost = self._open.pop(channel, None)
        if lost is not None:
            lost.callback(None)
        if not self._open:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def _record(self, recorded: RecordedRequest) -> Reply:
        reply = self._replies[min(len(self.requests) - self._scriptFrom, len(self._replies) - 1)]
        self.requests.append(recorded)
        self.replies.append(reply)
        self.answeredAt.append(None)
        self._wake()
        return reply

    def _answer(self, index: int, request: Request, reply: Reply) -> None:
        self.answeredAt[index] = self._clock.seconds()
        _answer(request, reply, self._clock)

    def _wake(self) -> None:
        still = []
        for count, d in self._waiting:
            if len(self.requests) >= count:
                d.callback(self.requests)
            else:
                still.append((count, d))
        self._waiting = still


def listen_http(testCase: TestCase, *replies: Reply | int, reactor: Any = None, port: int = 0) -> Receiver:
    """Start a plain HTTP receiver answering ``replies`` in turn (the last repeats).

    With no replies it answers 200 with an empty body. ``port`` 0 picks a
    free one; a given port (e.g. from :func:`closed_port`, that a client has
    been refused on) is listened on as it is. Stopped on cleanup.
    """
    reactor = _reactor(reactor)
    receiver = Receiver(replies, "http", reactor)
    receiver._listening(reactor.listenTCP(port, receiver.site, interface=HOST))
    testCase.addCleanup(receiver.stop)
    return receiver


def server_tls_options(
    leaf: trustme.LeafCert,
    serverNames: list[bytes | None] | None = None,
    maximumTls: ssl.TLSVersion | None = None,
    clientCa: trustme.CA | None = None,
) -> ssl.CertificateOptions:
    """Server TLS options serving ``leaf`` (and its chain).

    :param serverNames: if given, the SNI name of every handshake is
        appended to it (``None`` when the client sent no SNI).
    :param maximumTls: cap the server's protocol version (e.g. TLS 1.1, to
        check that clients refuse it); weak versions need OpenSSL security
        level 0, which is then set.
    :param clientCa: demand a client certificate issued by this CA (mutual
        TLS): a client without one fails the handshake.
    """
    private = ssl.PrivateCertificate.loadPEM(leaf.private_key_and_cert_chain_pem.bytes())
    chain = [ssl.Certificate.loadPEM(p.bytes()).original for p in leaf.cert_chain_pems[1:]]
    kwargs: dict[str, Any] = {}
    if maximumTls is not None:
        kwargs = {"insecurelyLowerMinimumTo": ssl.TLSVersion.TLSv1_0, "lowerMaximumSecurityTo": maximumTls}
    if clientCa is not None:
        kwargs.update(
            verify=True,
            caCerts=[ssl.Certificate.loadPEM(clientCa.cert_pem.bytes()).original],
            requireCertificate=True,
        )
    options = ssl.CertificateOptions(
        privateKey=private.privateKey.original,
        certificate=private.original,
        extraCertChain=chain,
        **kwargs,
    )
    context = options.getContext()  # cached by the options, so changes stick
    if maximumTls is not None:
        context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    if serverNames is not None:

        def sawName(connection: SSL.Connection) -> None:
            serverNames.append(connection.get_servername())

        context.set_tlsext_servername_callback(sawName)
    return options


def listen_https(
    testCase: TestCase,
    leaf: trustme.LeafCert,
    *replies: Reply | int,
    maximumTls: ssl.TLSVersion | None = None,
    clientCa: trustme.CA | None = None,
    reactor: Any = None,
) -> Receiver:
    """Start an HTTPS receiver serving ``leaf``; records SNI in ``serverNames``.

    ``maximumTls`` caps the protocol version the server accepts;
    ``clientCa`` demands a client certificate from that CA. Stopped on
    cleanup.
    """
    reactor = _reactor(reactor)
    receiver = Receiver(replies, "https", reactor)
    options = server_tls_options(leaf, receiver.serverNames, maximumTls, clientCa)
    receiver._listening(reactor.listenSSL(0, receiver.site, options, interface=HOST))
    testCase.addCleanup(receiver.stop)
    return receiver


# --------------------------------------------------------------------------
# Fixtures


def make_alert(kind: EventKind = EventKind.FAILED, **fields: str) -> Alert:
    """An alert with plausible field values; override any by keyword."""
    values = dict(
        hostName="qlik-sched-01",
        user="INTERNAL\\sa_scheduler",
        taskName="Reload sales \u00e5\u00e4\u00f6 & co",
        taskId="a1b2c3d4-0000-4000-8000-000000000001",
        appName="Sales dashboard",
        appId="f0e1d2c3-0000-4000-8000-000000000002",
        logTimeStamp="2024-05-01 03:00:00,123",
        logLevel="ERROR",
        executionId="e9d8c7b6-0000-4000-8000-000000000003",
        logMessage="Reload failed: connector error; see script log",
    )
    values.update(fields)
    return Alert(kind=kind, **values)


def make_webhook(
    url: str,
    method: str = "POST",
    tls: TlsSettings = TlsSettings(),
    timeout: float = 5.0,
    concurrency: int = 4,
    retry: RetryPolicy = RetryPolicy(),
    key: str = "reloadTaskFailure.webhooks[0]",
    description: str = "test webhook",
    proxy: Proxy | None = None,
) -> Webhook:
    """A webhook for ``url``, with test-friendly defaults (5 s timeout)."""
    return Webhook(
        key=key,
        description=description,
        url=url,
        method=method,
        tls=tls,
        timeout=timeout,
        concurrency=concurrency,
        retry=retry,
        proxy=proxy,
    )


class RecordingOutbox(MemoryOutbox):
    """A :class:`MemoryOutbox` that keeps every recorded delivery state, in order.

    :ivar history: each :class:`Delivery` passed to ``record``.
    """

    def __init__(self, keepDead: int = 1000) -> None:
        MemoryOutbox.__init__(self, keepDead)
        self.history: list[Delivery] = []
        self._waiting: list[tuple[int, Deferred[list[Delivery]]]] = []

    def record(self, delivery: Delivery) -> None:
        MemoryOutbox.record(self, delivery)
        self.history.append(delivery)
        still = []
        for count, d in self._waiting:
            if len(self.history) >= count:
                d.callback(self.history)
            else:
                still.append((count, d))
        self._waiting = still

    def waitForRecords(self, count: int = 1) -> Deferred[list[Delivery]]:
        """Fires with :attr:`history` once ``count`` states have been recorded."""
        d: Deferred[list[Delivery]] = Deferred()
        if len(self.history) >= count:
            d.callback(self.history)
        else:
            self._waiting.append((count, d))
        return d


def start_client(testCase: TestCase, webhook: Webhook, reactor: Any = None) -> WebhookClient:
    """A :class:`WebhookClient` on the real reactor whose pool is closed on cleanup."""
    client = WebhookClient(webhook, _reactor(reactor))
    testCase.addCleanup(client.close)
    return client


def write_pems(testCase: TestCase, *pems: bytes, name: str = "ca.pem") -> str:
    """Write PEM blobs, concatenated, to a fresh file under ``testCase.mktemp()``."""
    directory = testCase.mktemp()
    os.makedirs(directory)
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(b"".join(pems))
    return path


def closed_port() -> int:
    """A loopback TCP port nothing listens on (connections to it are refused)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]  # type: ignore[no-any-return]
    finally:
        s.close()


def webhook_from_config(environ: dict[str, str] | None = None, **entry: Any) -> Webhook:
    """The webhook the config reader makes of one entry (``webhookURL``, ``cert``, ``proxy``, ...).

    ``environ`` stands for the process environment (default: empty).
    """
    from butler_tw.config import parse_config

    raw = {
        "Butler": {
            "udpServerConfig": {"enable": True, "serverHost": "127.0.0.1", "portTaskFailure": 9998},
            "webhookNotification": {
                "enable": True,
                "reloadTaskFailure": {
                    "webhooks": [{"description": "test webhook", "httpMethod": "POST", "timeout": 5, **entry}]
                },
            },
        }
    }
    (webhook,) = parse_config(raw, environ=environ or {}).webhooks
    return webhook


def tls_settings_for(ca: trustme.CA) -> TlsSettings:
    """CUSTOM_CA settings trusting exactly ``ca``."""
    from butler_tw.config import TrustMode

    return TlsSettings(mode=TrustMode.CUSTOM_CA, caCertificates=(ca.cert_pem.bytes(),))


__all__: Iterable[str] = (
    "HOST",
    "RecordedRequest",
    "Receiver",
    "RecordingOutbox",
    "Reply",
    "closed_port",
    "listen_http",
    "listen_https",
    "make_alert",
    "make_webhook",
    "server_tls_options",
    "start_client",
    "tls_settings_for",
    "webhook_from_config",
    "write_pems",
)


def execution_of(request: RecordedRequest) -> str:
    """The ``executionId`` an alert request carries (JSON body, or query for GET)."""
    if request.method == "GET":
        return parse_qs(request.query)["executionId"][0]
    return json.loads(request.body)["executionId"]  # type: ignore[no-any-return]
