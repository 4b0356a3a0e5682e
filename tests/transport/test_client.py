"""``WebhookClient`` against real loopback HTTP receivers, on the real reactor."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import ILogObserver, eventAsText, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import provider

from butler_tw.channels.butler import USER_AGENT, build_request, query_string
from butler_tw.core.alert import FIELD_ORDER
from butler_tw.core.delivery import Delivery, State
from butler_tw.core.retry import Outcome, RetryPolicy
from butler_tw.core.stats import Stats
from butler_tw.delivery.dispatcher import Dispatcher
from butler_tw.transport.client import MAX_RESPONSE_BODY, WebhookClient
from tests.support.receivers import (
    Receiver,
    RecordingOutbox,
    Reply,
    closed_port,
    listen_http,
    make_alert,
    make_webhook,
    start_client,
)

ALERT = make_alert()


class WebhookClientTests(TestCase):
    timeout = 30

    def client(self, url: str, method: str = "POST", timeout: float = 5.0) -> tuple[WebhookClient, Any]:
        webhook = make_webhook(url, method=method, timeout=timeout)
        return start_client(self, webhook), webhook

    def send(self, url: str, method: str = "POST", timeout: float = 5.0) -> Deferred[Outcome]:
        client, webhook = self.client(url, method, timeout)
        return client.send(build_request(ALERT, webhook, timestamp=1700000000))

    def assertNoLingeringConnection(self, receiver: Receiver) -> Deferred[None]:
        """The client closed (or pooled and then closed) every connection it opened."""
        return receiver.waitForDisconnects().addTimeout(5, reactor)

    # what arrives

    @inlineCallbacks
    def test_postBodyAndHeaders(self) -> Any:
        """POST: the JSON body arrives byte for byte, with the documented headers."""
        receiver = listen_http(self)
        client, webhook = self.client(receiver.url("/hook"))
        request = build_request(ALERT, webhook, timestamp=1700000000)
        outcome = yield client.send(request)
        self.assertEqual(outcome, Outcome(status=200))
        (seen,) = receiver.requests
        self.assertEqual((seen.method, seen.path, seen.query), ("POST", "/hook", ""))
        self.assertEqual(seen.body, request.body)
        self.assertEqual(seen.headers["content-type"], ["application/json"])
        self.assertEqual(seen.headers["user-agent"], [USER_AGENT])
        self.assertEqual(seen.headers["webhook-id"], [ALERT.alertId])
        self.assertEqual(seen.headers["webhook-timestamp"], ["1700000000"])
        self.assertEqual(seen.header("content-length"), str(len(request.body or b"")))
        self.assertNotIn("authorization", seen.headers)

    @inlineCallbacks
    def test_put(self) -> Any:
        receiver = listen_http(self)
        client, webhook = self.client(receiver.url("/hook"), method="PUT")
        request = build_request(ALERT, webhook, timestamp=1)
        outcome = yield client.send(request)
        self.assertEqual(outcome.status, 200)
        (seen,) = receiver.requests
        self.assertEqual((seen.method, seen.body), ("PUT", request.body))
        self.assertEqual(seen.header("content-type"), "application/json")

    @inlineCallbacks
    def test_getQueryAppended(self) -> Any:
        """GET: the alert fields follow the query already in the URL, which is kept."""
        receiver = listen_http(self)
        outcome = yield self.send(receiver.url("/hook?token=abc%2Fdef&x=1"), method="GET")
        self.assertEqual(outcome.status, 200)
        (seen,) = receiver.requests
        self.assertEqual((seen.method, seen.path, seen.body), ("GET", "/hook", b""))
        self.assertEqual(seen.query, "token=abc%2Fdef&x=1&" + query_string(ALERT))
        pairs = parse_qsl(seen.query)
        self.assertEqual(pairs[:2], [("token", "abc/def"), ("x", "1")])
        self.assertEqual(pairs[2:], ALERT.fields())
        self.assertEqual([k for k, _ in pairs[2:]], list(FIELD_ORDER))
        self.assertIsNone(seen.header("content-type"))

    @inlineCallbacks
    def test_userinfoSentAsBasicAuth(self) -> Any:
        """``user:password@`` in the URL becomes Basic credentials, as in Node."""
        receiver = listen_http(self)
        url = f"http://us%40er:p%3Ass@127.0.0.1:{receiver.port}/hook?token=T"
        outcome = yield self.send(url)
        self.assertEqual(outcome.status, 200)
        (seen,) = receiver.requests
        # base64("us@er:p:ss")
        self.assertEqual(seen.header("authorization"), "Basic dXNAZXI6cDpzcw==")
        self.assertEqual(seen.header("host"), f"127.0.0.1:{receiver.port}")
        self.assertEqual((seen.path, seen.query), ("/hook", "token=T"))

    # what comes back

    @inlineCallbacks
    def test_redirectNotFollowed(self) -> Any:
        """A 302 is the outcome; the Location is never requested."""
        receiver = listen_http(self, Reply(302, headers=(("Location", "/elsewhere"),)), Reply(200))
        outcome = yield self.send(receiver.url("/hook"))
        self.assertEqual(outcome.status, 302)
        self.assertEqual([r.path for r in receiver.requests], ["/hook"])

    @inlineCallbacks
    def test_retryAfterOn429(self) -> Any:
        receiver = listen_http(self, Reply(429, headers=(("Retry-After", "1"),)))
        outcome = yield self.send(receiver.url("/hook"))
        self.assertEqual((outcome.status, outcome.retryAfter), (429, 1.0))

    @inlineCallbacks
    def test_retryAfterOn503(self) -> Any:
        receiver = listen_http(self, Reply(503, headers=(("Retry-After", "120"),)))
        outcome = yield self.send(receiver.url("/hook"))
        self.assertEqual((outcome.status, outcome.retryAfter), (503, 120.0))

    @inlineCallbacks
    def test_hugeBodyCapped(self) -> Any:
        """A 5 MB answer still gives its status, and the connection is not left open."""
        receiver = listen_http(self, Reply(200, body=b"y" * (5 * 1024 * 1024)))
        outcome = yield self.send(receiver.url("/hook"))
        self.assertEqual(outcome, Outcome(status=200))
        yield self.assertNoLingeringConnection(receiver)

    @inlineCallbacks
    def test_endlessBodyCapped(self) -> Any:
        """A body that never ends: the cap, not the timeout, ends the read."""
        receiver = listen_http(self, Reply(500, endless=True))
        started = time.monotonic()
        outcome = yield self.send(receiver.url("/hook"), timeout=10.0)
        self.assertEqual(outcome.status, 500)
        self.assertLess(time.monotonic() - started, 8.0)
        self.assertGreater(MAX_RESPONSE_BODY, 0)

    @inlineCallbacks
    def test_keepAlive(self) -> Any:
        """Two sequential requests share one TCP connection."""
        receiver = listen_http(self)
        client, webhook = self.client(receiver.url("/hook"))
        first = yield client.send(build_request(ALERT, webhook, timestamp=1))
        second = yield client.send(build_request(ALERT, webhook, timestamp=2))
        self.assertEqual((first.status, second.status), (200, 200))
        self.assertEqual([r.connection for r in receiver.requests], [1, 1])
        self.assertEqual(receiver.connections, 1)

    @inlineCallbacks
    def test_keepAliveAfterErrorStatus(self) -> Any:
        """A 500 with a body is read to its end, so its connection is reused too."""
        receiver = listen_http(self, Reply(500, body=b"oops" * 100), Reply(200))
        client, webhook = self.client(receiver.url("/hook"))
        first = yield client.send(build_request(ALERT, webhook, timestamp=1))
        second = yield client.send(build_request(ALERT, webhook, timestamp=2))
        self.assertEqual((first.status, second.status), (500, 200))
        self.assertEqual(receiver.connections, 1)

    @inlineCallbacks
    def test_cookiesNotKept(self) -> Any:
        """A cookie set by the receiver is not sent back: each alert stands alone."""
        receiver = listen_http(self, Reply(200, headers=(("Set-Cookie", "session=abc; Path=/"),)), Reply(200))
        client, webhook = self.client(receiver.url("/hook"))
        yield client.send(build_request(ALERT, webhook, timestamp=1))
        yield client.send(build_request(ALERT, webhook, timestamp=2))
        self.assertEqual([r.headers.get("cookie") for r in receiver.requests], [None, None])

    @inlineCallbacks
    def test_closeDropsPooledConnections(self) -> Any:
        receiver = listen_http(self)
        client, webhook = self.client(receiver.url("/hook"))
        yield client.send(build_request(ALERT, webhook, timestamp=1))
        self.assertEqual(receiver.openConnections, 1)
        yield client.close()
        yield self.assertNoLingeringConnection(receiver)

    # what goes wrong

    @inlineCallbacks
    def test_timeoutWhenNoAnswer(self) -> Any:
        """No answer at all: timed out after the webhook's timeout, connection dropped."""
        receiver = listen_http(self, Reply(hang=True))
        started = time.monotonic()
        outcome = yield self.send(receiver.url("/hook"), timeout=0.5)
        elapsed = time.monotonic() - started
        self.assertEqual((outcome.status, outcome.error), (None, "timed out after 0.5 s"))
        self.assertEqual(len(receiver.requests), 1)
        self.assertGreaterEqual(elapsed, 0.4)
        self.assertLess(elapsed, 5.0)
        yield self.assertNoLingeringConnection(receiver)

    @inlineCallbacks
    def test_timeoutCoversTheBody(self) -> Any:
        """Headers come, the body stalls: the one timeout still ends the request."""
        receiver = listen_http(self, Reply(200, body=b"partial", stallBody=True))
        started = time.monotonic()
        outcome = yield self.send(receiver.url("/hook"), timeout=0.5)
        self.assertEqual((outcome.status, outcome.error), (None, "timed out after 0.5 s"))
        self.assertLess(time.monotonic() - started, 5.0)
        yield self.assertNoLingeringConnection(receiver)

    @inlineCallbacks
    def test_timeoutCoversASlowAnswer(self) -> Any:
        receiver = listen_http(self, Reply(200, delay=3.0))
        outcome = yield self.send(receiver.url("/hook"), timeout=0.5)
        self.assertEqual(outcome.error, "timed out after 0.5 s")

    @inlineCallbacks
    def test_connectionRefused(self) -> Any:
        outcome = yield self.send(f"http://127.0.0.1:{closed_port()}/hook")
        self.assertEqual(outcome, Outcome(error="connection refused"))

    @inlineCallbacks
    def test_noSecretInAnyLogEvent(self) -> Any:
        """Failing requests to a URL with secrets log none of them.

        The secrets are in the user info and the query. The attempts go
        through a Dispatcher so that the log lines about them are made too.
        """
        events: list[dict[str, Any]] = []

        @provider(ILogObserver)
        def observe(event: dict[str, Any]) -> None:
            events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

        hanging = listen_http(self, Reply(hang=True))
        failing = listen_http(self, Reply(500, body=b"token=SECRET"))
        ports = [closed_port(), hanging.port, failing.port]
        lines = []
        for port in ports:
            url = f"http://user:secret@127.0.0.1:{port}/p?token=SECRET#frag-secret"
            webhook = make_webhook(url, timeout=0.5, retry=RetryPolicy(schedule=(0.0,)))
            outbox = RecordingOutbox()
            dispatcher = Dispatcher(webhook, start_client(self, webhook), outbox, reactor, Stats())
            dispatcher.submit(Delivery(ALERT, webhook.key, acceptedAt=reactor.seconds()))
            (done,) = yield outbox.waitForRecords(1)
            lines.append((done.state, done.lastOutcome))
            yield dispatcher.stop()
        self.assertEqual(
            lines,
            [
                (State.DEAD, "connection refused"),
                (State.DEAD, "timed out after 0.5 s"),
                (State.DEAD, "HTTP 500"),
            ],
        )
        texts = [eventAsText(e, includeTraceback=True, includeTimestamp=False) or "" for e in events]
        self.assertEqual(len([t for t in texts if "giving up" in t]), 3, texts)  # the observer saw them
        for text in texts:
            self.assertNotIn("secret", text.lower())
            self.assertNotIn("user:", text)
            self.assertNotIn("token", text)
        self.assertTrue(any(f"http://127.0.0.1:{hanging.port}/***" in t for t in texts), texts)
