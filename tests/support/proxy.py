"""A small HTTP proxy on loopback for tests: CONNECT tunnels and plain (absolute-form) requests.

:func:`listen_proxy` starts one on ``127.0.0.1``, port 0, and registers a
cleanup that stops it and drops every connection it holds, both sides::

    proxy = listen_proxy(self)
    webhook = make_webhook(receiver.url("/hook"), proxy=Proxy("127.0.0.1", proxy.port))
    ...
    proxy.connects        # [b"CONNECT localhost:1234 HTTP/1.1", ...]
    proxy.authorizations  # the Proxy-Authorization value of each request (None: none)

A CONNECT is answered ``200 Connection established`` once a TCP connection
to the target is open, and then bytes are piped both ways unchanged (so TLS
is between the client and the target). A plain request (``GET
http://host:port/path HTTP/1.1``) has its request line rewritten to origin
form and its ``Proxy-Authorization`` header removed, and is piped to the
target; later requests on the same client connection pass as they are.
``answer=407`` (or any status) answers every request with that status
instead, and closes the connection.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.support.receivers import HOST, _reactor

_REASONS = {407: b"Proxy Authentication Required", 403: b"Forbidden", 502: b"Bad Gateway"}


class TestProxy:
    """What the proxy saw, and its port.

    :ivar connects: the request line of each CONNECT, as bytes.
    :ivar plainRequests: the request line of each plain (absolute-form) request, as received.
    :ivar authorizations: the ``Proxy-Authorization`` value of each request, or ``None``.
    """

    def __init__(self, reactor: Any, answer: int | None) -> None:
        self.reactor = reactor
        self.answer = answer
        self.connects: list[bytes] = []
        self.plainRequests: list[bytes] = []
        self.authorizations: list[str | None] = []
        self.open: set[Protocol] = set()
        self._lost: dict[Protocol, Deferred[None]] = {}
        self._port: IListeningPort | None = None

    @property
    def port(self) -> int:
        assert self._port is not None
        return self._port.getHost().port  # type: ignore[attr-defined, no-any-return]

    def _opened(self, protocol: Protocol) -> None:
        self.open.add(protocol)
        self._lost[protocol] = Deferred()

    def _closed(self, protocol: Protocol) -> None:
        self.open.discard(protocol)
        lost = self._lost.pop(protocol, None)
        if lost is not None:
            lost.callback(None)

    def stop(self) -> Deferred[None]:
        waits: list[Deferred[Any]] = []
        if self._port is not None:
            waits.append(maybeDeferred(self._port.stopListening))
            self._port = None
        for protocol in list(self.open):
            waits.append(self._lost[protocol])
            if protocol.transport is not None:
                protocol.transport.abortConnection()  # type: ignore[attr-defined]
        return gatherResults(waits).addCallback(lambda _: None)


class _Upstream(Protocol):
    """The proxy's connection to the target: what comes back goes to the client."""

    def __init__(self, proxy: TestProxy, client: _ProxyProtocol) -> None:
        self.proxy = proxy
        self.client = client

    def connectionMade(self) -> None:
        self.proxy._opened(self)
        self.client._upstreamReady(self)

    def dataReceived(self, data: bytes) -> None:
        if self.client.transport is not None:
            self.client.transport.write(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.proxy._closed(self)
        if self.client.transport is not None:
            self.client.transport.loseConnection()


class _UpstreamFactory(ClientFactory):
    noisy = False

    def __init__(self, proxy: TestProxy, client: _ProxyProtocol) -> None:
        self.proxy = proxy
        self.client = client

    def buildProtocol(self, addr: Any) -> Protocol:
        return _Upstream(self.proxy, self.client)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.client._reply(502)


class _ProxyProtocol(Protocol):
    """One client connection to the proxy."""

    def __init__(self, proxy: TestProxy) -> None:
        self.proxy = proxy
        self.buffer = b""
        self.upstream: _Upstream | None = None
        self.pending = b""  # bytes for the target before it is connected
        self.tunnel = False

    def connectionMade(self) -> None:
        self.proxy._opened(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.proxy._closed(self)
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.upstream is not None:
            assert self.upstream.transport is not None
            self.upstream.transport.write(data)
            return
        if self.pending or self.tunnel:
            self.pending += data
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head, rest = self.buffer[:end], self.buffer[end + 4 :]
        self.buffer = b""
        first, *headers = head.split(b"\r\n")
        auth = None
        kept = []
        for line in headers:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"proxy-authorization":
                auth = value.strip().decode("latin-1")
            else:
                kept.append(line)
        self.proxy.authorizations.append(auth)
        method, target, version = first.split(b" ", 2)
        if method == b"CONNECT":
            self.proxy.connects.append(first)
        else:
            self.proxy.plainRequests.append(first)
        if self.proxy.answer is not None:
            self._reply(self.proxy.answer)
            return
        if method == b"CONNECT":
            host, _, port = target.decode("ascii").rpartition(":")
            self.tunnel = True
            self.pending = rest
        else:
            parts = urlsplit(target.decode("ascii"))
            host, port = parts.hostname or "", str(parts.port or 80)
            origin = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            line = b" ".join([method, origin.encode("ascii"), version])
            self.pending = b"\r\n".join([line, *kept]) + b"\r\n\r\n" + rest
        self.proxy.reactor.connectTCP(host, int(port), _UpstreamFactory(self.proxy, self), timeout=5)

    def _upstreamReady(self, upstream: _Upstream) -> None:
        if self.transport is None or self.transport.disconnected:  # type: ignore[attr-defined]
            assert upstream.transport is not None
            upstream.transport.loseConnection()
            return
        self.upstream = upstream
        if self.tunnel:
            self.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        pending, self.pending = self.pending, b""
        if pending:
            assert upstream.transport is not None
            upstream.transport.write(pending)

    def _reply(self, status: int) -> None:
        if self.transport is None:
            return
        reason = _REASONS.get(status, b"Refused")
        self.transport.write(
            b'HTTP/1.1 %d %s\r\nProxy-Authenticate: Basic realm="test"\r\n'
            b"Content-Length: 0\r\nConnection: close\r\n\r\n" % (status, reason)
        )
        self.transport.loseConnection()


class _ProxyFactory(Factory):
    noisy = False

    def __init__(self, proxy: TestProxy) -> None:
        self.proxy = proxy

    def buildProtocol(self, addr: Any) -> Protocol:
        return _ProxyProtocol(self.proxy)


def listen_proxy(testCase: TestCase, answer: int | None = None, reactor: Any = None) -> TestProxy:
    """Start a test proxy on loopback; ``answer`` (e.g. 407) refuses every request with that status."""
    reactor = _reactor(reactor)
    proxy = TestProxy(reactor, answer)
    proxy._port = reactor.listenTCP(0, _ProxyFactory(proxy), interface=HOST)
    testCase.addCleanup(proxy.stop)
    return proxy
