"""Calls through an HTTP proxy: a CONNECT tunnel for https, absolute-form requests for http.

Twisted has no tunnelling agent, so :class:`TunnelEndpoint` is one: an
``IStreamClientEndpoint`` that connects to the proxy, asks for ``CONNECT
host:port``, and on a 2xx answer starts TLS inside the tunnel with the
webhook's own policy for the *real* host (``policy.creatorForNetloc(host,
port)``), so the trust settings (certCA, mutual TLS, serverName) apply end to
end and the proxy sees only ciphertext. :class:`ProxyEndpointFactory` gives
one per URL to ``Agent.usingEndpointFactory``, so the webhook's connection
pool keeps tunnelled connections like direct ones. http URLs go through
Twisted's ``ProxyAgent`` with a ``Proxy-Authorization`` header added.

A proxy that cannot be reached, or that answers CONNECT with anything but
2xx, fails the connection with :class:`ProxyError`, whose text is safe to
log: it names the proxy's host and port and the status, never credentials.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error as neterror
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IAddress, IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web.client import URI, ProxyAgent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IBodyProducer, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from butler_tw.config import Proxy

#: The most bytes of a CONNECT answer's status line and headers read.
MAX_CONNECT_RESPONSE = 16 * 1024


class ProxyError(Exception):
    """The proxy could not be used. ``str()`` is safe to log (no credentials).

    :ivar timedOut: connecting to the proxy timed out.
    """

    def __init__(self, message: str, timedOut: bool = False) -> None:
        super().__init__(message)
        self.timedOut = timedOut


def _proxy_endpoint(reactor: Any, proxy: Proxy, connectTimeout: float) -> IStreamClientEndpoint:
    endpoint: IStreamClientEndpoint = HostnameEndpoint(
        reactor, proxy.host.encode("idna"), proxy.port, timeout=connectTimeout
    )
    return endpoint


def _connect_failed(failure: Failure, proxy: Proxy) -> Failure:
    """A failure to reach the proxy, said as such (``str`` safe to log)."""
    exc = failure.value
    where = f"proxy {proxy.host}:{proxy.port}"
    if isinstance(exc, (CancelledError, ProxyError)):
        return failure
    if isinstance(exc, neterror.ConnectionRefusedError):
        return Failure(ProxyError(f"{where}: connection refused"))
    if isinstance(exc, neterror.DNSLookupError):
        return Failure(ProxyError(f"{where}: DNS lookup failed"))
    if isinstance(exc, neterror.TimeoutError):
        return Failure(ProxyError(f"{where}: connect timed out", timedOut=True))
    return Failure(ProxyError(f"{where}: cannot connect ({type(exc).__name__})"))


@implementer(IStreamClientEndpoint)
class _ReportingEndpoint:
    """The proxy's endpoint, its connect failures turned into :class:`ProxyError`."""

    def __init__(self, endpoint: IStreamClientEndpoint, proxy: Proxy) -> None:
        self._endpoint = endpoint
        self._proxy = proxy

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        d: Deferred[IProtocol] = self._endpoint.connect(protocolFactory)
        return d.addErrback(_connect_failed, self._proxy)


@implementer(IStreamClientEndpoint)
class TunnelEndpoint:
    """Connects to ``host:port`` through ``proxy`` with CONNECT, then TLS with ``creator``."""

    def __init__(
        self, proxyEndpoint: IStreamClientEndpoint, proxy: Proxy, host: bytes, port: int, creator: Any
    ) -> None:
        self._proxyEndpoint = proxyEndpoint
        self._proxy = proxy
        self._host = host
        self._port = port
        self._creator = creator

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """Fires with the protocol ``protocolFactory`` built, connected over TLS inside the tunnel."""
        tunnel = _TunnelProtocol(self, protocolFactory)
        connecting: Deferred[IProtocol] = self._proxyEndpoint.connect(_OneProtocol(tunnel))

        def cancel(d: Deferred[IProtocol]) -> None:
            connecting.cancel()
            tunnel.abort()

        ready: Deferred[IProtocol] = Deferred(cancel)
        tunnel.ready = ready
        connecting.addErrback(_connect_failed, self._proxy)
        connecting.addErrback(lambda f: None if ready.called else ready.errback(f))
        return ready

    def _request(self) -> bytes:
        authority = self._host + b":" + str(self._port).encode("ascii")
        lines = [b"CONNECT " + authority + b" HTTP/1.1", b"Host: " + authority]
        if self._proxy.credentials is not None:
            lines.append(b"Proxy-Authorization: " + self._proxy.credentials)
        return b"\r\n".join(lines) + b"\r\n\r\n"


class _OneProtocol(Factory):
    """A factory for exactly one, already-made protocol."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        return self._protocol


_DONE = Failure(neterror.ConnectionDone())


class _TunnelProtocol(Protocol):
    """Speaks CONNECT to the proxy; then carries the TLS connection to the real host."""

    def __init__(self, endpoint: TunnelEndpoint, appFactory: IProtocolFactory) -> None:
        self._endpoint = endpoint
        self._appFactory = appFactory
        self._buffer = b""
        self._tls: Protocol | None = None
        self.ready: Deferred[IProtocol] | None = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._endpoint._request())

    def dataReceived(self, data: bytes) -> None:
        if self._tls is not None:
            self._tls.dataReceived(data)
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_CONNECT_RESPONSE:
                self._fail("proxy sent an over-long answer to CONNECT")
            return
        head, rest = self._buffer[:end], self._buffer[end + 4 :]
        self._buffer = b""
        status = _status(head.split(b"\r\n", 1)[0])
        if status is None:
            self._fail("proxy sent no HTTP answer to CONNECT")
        elif not 200 <= status < 300:
            self._fail(f"proxy refused CONNECT: {status}{_REASONS.get(status, '')}")
        else:
            self._startTls(rest)

    def _startTls(self, rest: bytes) -> None:
        assert self.transport is not None
        tlsFactory = TLSMemoryBIOFactory(self._endpoint._creator, True, self._appFactory)
        address = self.transport.getPeer()
        tls: Any = tlsFactory.buildProtocol(address)
        if tls is None:  # the application factory refused the connection
            self._fail("the connection was refused by the client")
            return
        self._tls = tls
        tls.makeConnection(self.transport)
        ready, self.ready = self.ready, None
        if ready is not None:
            ready.callback(tls.wrappedProtocol)
        if rest:
            tls.dataReceived(rest)

    def _fail(self, message: str) -> None:
        ready, self.ready = self.ready, None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        if ready is not None:
            ready.errback(ProxyError(message))

    def abort(self) -> None:
        self.ready = None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = _DONE) -> None:
        if self._tls is not None:
            self._tls.connectionLost(reason)
            return
        ready, self.ready = self.ready, None
        if ready is not None:
            ready.errback(ProxyError("proxy closed the connection before answering CONNECT"))


_REASONS = {
    407: " (Proxy Authentication Required: check the proxy's user and password)",
    403: " (Forbidden: the proxy does not allow this host or port)",
    502: " (Bad Gateway: the proxy could not reach the host)",
    503: " (Service Unavailable)",
    504: " (Gateway Timeout: the proxy could not reach the host in time)",
}


def _status(line: bytes) -> int | None:
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return None
    return int(parts[1])


@implementer(IAgentEndpointFactory)
class ProxyEndpointFactory:
    """Endpoints for ``Agent.usingEndpointFactory``: a CONNECT tunnel for each https URL."""

    def __init__(self, reactor: Any, proxy: Proxy, policy: IPolicyForHTTPS, connectTimeout: float) -> None:
        self._proxy = proxy
        self._policy = policy
        self._proxyEndpoint = _proxy_endpoint(reactor, proxy, connectTimeout)

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        if uri.scheme != b"https":
            raise ProxyError("only https URLs are tunnelled")
        creator = self._policy.creatorForNetloc(uri.host, uri.port)
        return TunnelEndpoint(self._proxyEndpoint, self._proxy, uri.host, uri.port, creator)


@implementer(IAgent)
class ProxiedAgent:
    """An ``IAgent`` that sends every request through ``proxy``, over one connection pool.

    https: a CONNECT tunnel with TLS to the real host, verified by ``policy``;
    http: the request in absolute form to the proxy (``ProxyAgent``), with
    ``Proxy-Authorization`` when the proxy URL had credentials.
    """

    def __init__(
        self, reactor: Any, proxy: Proxy, policy: IPolicyForHTTPS, connectTimeout: float, pool: Any
    ) -> None:
        from twisted.web.client import Agent

        self._proxy = proxy
        self._tunnelling = Agent.usingEndpointFactory(
            reactor, ProxyEndpointFactory(reactor, proxy, policy, connectTimeout), pool=pool
        )
        endpoint = _ReportingEndpoint(_proxy_endpoint(reactor, proxy, connectTimeout), proxy)
        self._plain = ProxyAgent(endpoint, reactor, pool=pool)

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        if uri[:6].lower() == b"https:":
            tunnelled: Deferred[IResponse] = self._tunnelling.request(method, uri, headers, bodyProducer)
            return tunnelled
        if self._proxy.credentials is not None:
            headers = headers.copy() if headers is not None else Headers()
            headers.setRawHeaders(b"proxy-authorization", [self._proxy.credentials])
        plain: Deferred[IResponse] = self._plain.request(method, uri, headers, bodyProducer)
        return plain
