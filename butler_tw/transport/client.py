"""Send one request to one webhook, with treq. Never raises: returns an Outcome.

One ``WebhookClient`` per webhook: its own connection pool and TLS policy,
so a pooled connection is never reused across trust settings. Every
request's timeout covers connect, headers and body together (treq's own
``timeout=`` stops at the headers), and response bodies are read with a
size cap so a connection is always returned to the pool.
"""

from __future__ import annotations

import base64
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from hyperlink import EncodedURL
from OpenSSL import SSL
from service_identity import VerificationError
from treq.client import HTTPClient
from twisted.internet import error as neterror
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web import client as webclient
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from butler_tw.channels.butler import Request
from butler_tw.config import Webhook
from butler_tw.core.retry import Outcome, parse_retry_after
from butler_tw.transport.proxy import ProxiedAgent, ProxyError
from butler_tw.transport.tls import policy_for

#: Most bytes of a response body that are read; the rest is discarded.
MAX_RESPONSE_BODY = 64 * 1024
#: Idle keep-alive connections are closed after this many seconds: shorter
#: than the 5 s of Node and Apache, so a POST never meets a connection the
#: server has just closed (the Agent does not retry a POST on one).
IDLE_CONNECTION_TIMEOUT = 4.0


class _QuietHTTP11ClientFactory(webclient._HTTP11ClientFactory):
    """The pool's connection factory, without a log line per connection."""

    noisy = False


class WebhookClient:
    """Sends requests to one webhook over its own pool and TLS policy."""

    def __init__(self, webhook: Webhook, reactor: Any) -> None:
        self._webhook = webhook
        self._reactor = reactor
        self._pool = webclient.HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = webhook.concurrency
        self._pool.cachedConnectionTimeout = IDLE_CONNECTION_TIMEOUT  # type: ignore[assignment]
        self._pool._factory = _QuietHTTP11ClientFactory
        policy = policy_for(webhook.tls)
        agent: Any
        if webhook.proxy is not None:
            agent = ProxiedAgent(reactor, webhook.proxy, policy, webhook.timeout, self._pool)
        else:
            agent = webclient.Agent(
                reactor, contextFactory=policy, connectTimeout=webhook.timeout, pool=self._pool
            )
        # A jar that keeps nothing: a cookie set by a receiver is never sent back.
        noCookies = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
        self._http = HTTPClient(agent, cookiejar=noCookies)  # type: ignore[arg-type]
        self._lastUrl: str | None = None
        self._lastParsed: tuple[EncodedURL, bytes | None] = (EncodedURL(), None)

    def send(self, request: Request) -> Deferred[Outcome]:
        """Make the request; fires with its :class:`Outcome`, never errbacks or raises."""
        headers = Headers({k.encode("ascii"): [v.encode("latin-1")] for k, v in request.headers})
        if request.url == self._lastUrl:
            # POST and PUT go to the same URL every time: parse it once, not per request.
            url, credentials = self._lastParsed
        else:
            plain, credentials = _split_userinfo(request.url)
            url = EncodedURL.from_text(plain)
            self._lastUrl, self._lastParsed = request.url, (url, credentials)
        if credentials is not None and not headers.hasHeader(b"authorization"):
            headers.setRawHeaders(b"authorization", [credentials])
        try:
            d: Deferred[Any] = self._http.request(
                request.method,
                url,
                headers=headers,
                data=request.body,
                allow_redirects=False,
                unbuffered=True,
            )
        except Exception as e:  # treq refuses some URLs synchronously
            return succeed(Outcome(error=f"the request could not be made ({type(e).__name__})"))
        d.addCallback(self._read)
        # Cancelling a request that is waiting for its response fails it with
        # ResponseNeverReceived, not CancelledError: say "timed out" anyway.
        d.addTimeout(self._webhook.timeout, self._reactor, onTimeoutCancel=_timedOut)
        d.addErrback(self._failed)
        return d

    def _read(self, response: IResponse) -> Deferred[Outcome]:
        def done(_: object) -> Outcome:
            retry_after = None
            if response.code in (429, 503):
                values = response.headers.getRawHeaders(b"retry-after") or [b""]
                retry_after = parse_retry_after(values[0].decode("latin-1"), self._reactor.seconds())
            if response.code == 407 and self._webhook.proxy is not None:
                # Only a proxy answers 407: a failed attempt, retried, not the receiver's verdict.
                return Outcome(error="proxy refused the request: 407 (Proxy Authentication Required)")
            return Outcome(status=response.code, retryAfter=retry_after)

        reading: Deferred[None] = Deferred(lambda d: reader.abort())
        reader = _CappedDiscard(reading, MAX_RESPONSE_BODY)
        response.deliverBody(reader)
        return reading.addCallback(done)

    def _failed(self, failure: Failure) -> Outcome:
        return describe_failure(failure, self._webhook.timeout)

    def close(self) -> Deferred[None]:
        """Close the pooled connections (on shutdown)."""
        closed: Deferred[None] = self._pool.closeCachedConnections()
        return closed


def _timedOut(result: object, timeout: float) -> object:
    if isinstance(result, Failure):
        raise TimeoutError(f"no complete response within {timeout:g} s")
    return result


def _split_userinfo(url: str) -> tuple[str, bytes | None]:
    """``url`` without its user info, and that user info as Basic credentials.

    A ``user:password@`` in the URL is sent as ``Authorization: Basic``, as
    Node (and so Butler) does; left in the URL, the Agent cannot connect.
    """
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode())
    return urlunsplit(parts._replace(netloc=hostport)), b"Basic " + token


class _CappedDiscard(Protocol):
    """Reads and discards a response body, up to a cap; fires when done."""

    def __init__(self, finished: Deferred[None], cap: int) -> None:
        self._finished = finished
        self._left = cap

    def dataReceived(self, data: bytes) -> None:
        self._left -= len(data)
        if self._left < 0:
            self.abort()  # too big: drop the connection, keep the status

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self._finished.called:
            self._finished.callback(None)

    def abort(self) -> None:
        # A response body's transport is an IPushProducer (TransportProxyProducer).
        producer: Any = self.transport
        if producer is not None:
            producer.stopProducing()


def describe_failure(failure: Failure, timeout: float) -> Outcome:
    """Turn a transport failure into a short, secret-free :class:`Outcome`."""
    exc = failure.value
    if isinstance(exc, ProxyError):
        return Outcome(error=str(exc), timedOut=exc.timedOut)
    if isinstance(exc, (TimeoutError, CancelledError, neterror.TimeoutError)):
        return Outcome(error=f"timed out after {timeout:g} s", timedOut=True)
    if isinstance(exc, neterror.ConnectionRefusedError):
        return Outcome(error="connection refused")
    if isinstance(exc, neterror.DNSLookupError):
        return Outcome(error="DNS lookup failed")
    if isinstance(exc, neterror.NoRouteError):
        return Outcome(error="no route to host")
    reasons = getattr(exc, "reasons", None) or [failure]
    for reason in reasons:
        inner = reason.value if isinstance(reason, Failure) else reason
        if isinstance(inner, ProxyError):
            return Outcome(error=str(inner), timedOut=inner.timedOut)
        if isinstance(inner, VerificationError):
            return Outcome(error="TLS: the certificate does not match the host name", tlsFailure=True)
        if isinstance(inner, SSL.Error):
            text = str(inner)
            if "certificate verify failed" in text:
                return Outcome(
                    error="TLS: certificate verification failed (untrusted or expired)", tlsFailure=True
                )
            return Outcome(error="TLS handshake failed", tlsFailure=True)
    if isinstance(exc, (webclient.ResponseNeverReceived, webclient.RequestTransmissionFailed)):
        return Outcome(error="connection lost before a response")
    if isinstance(exc, (neterror.ConnectionLost, neterror.ConnectionDone)):
        return Outcome(error="connection lost")
    if isinstance(exc, webclient.ResponseFailed):
        return Outcome(error="connection lost while reading the response")
    return Outcome(error=f"{type(exc).__name__}")
