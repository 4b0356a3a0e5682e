"""Webhooks through an HTTP proxy: a real CONNECT proxy on loopback (tests/support/proxy.py), real receivers.

https goes through a CONNECT tunnel with TLS to the receiver verified end to
end by the webhook's own policy; http is sent in absolute form to the proxy.
"""

from __future__ import annotations

import base64
from typing import Any

import trustme
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from butler_tw.channels.butler import build_request
from butler_tw.config import Proxy, Webhook
from butler_tw.core.retry import Verdict
from butler_tw.transport.client import Outcome
from tests.support.proxy import listen_proxy
from tests.support.receivers import (
    HOST,
    closed_port,
    listen_http,
    listen_https,
    make_alert,
    make_webhook,
    start_client,
    tls_settings_for,
    webhook_from_config,
    write_pems,
)

SECRET = "s3cr3t-pa55"


class ProxyTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.leaf = self.ca.issue_cert("localhost", "127.0.0.1")

    def send(self, webhook: Webhook, times: int = 1) -> Any:
        client = start_client(self, webhook)

        @inlineCallbacks
        def run() -> Any:
            outcomes = []
            for _ in range(times):
                outcomes.append((yield client.send(build_request(make_alert(), webhook, timestamp=1))))
            return outcomes if times > 1 else outcomes[0]

        return run()

    def assertFailedAttempt(self, outcome: Outcome, text: str) -> None:
        self.assertIsNone(outcome.status)
        self.assertIs(outcome.verdict, Verdict.RETRY)
        self.assertEqual(outcome.error, text)
        self.assertNotIn(SECRET, outcome.describe())

    @inlineCallbacks
    def test_httpsThroughTunnel(self) -> Any:
        """CONNECT host:port with Host, then TLS to the receiver verified via certCA; the pool reuses the tunnel."""
        proxy = listen_proxy(self)
        receiver = listen_https(self, self.leaf)
        webhook = make_webhook(
            receiver.url("/hook", host="localhost"),
            tls=tls_settings_for(self.ca),
            proxy=Proxy(HOST, proxy.port),
        )
        outcomes = yield self.send(webhook, times=2)
        self.assertEqual([o.status for o in outcomes], [200, 200])
        self.assertEqual(proxy.connects, [f"CONNECT localhost:{receiver.port} HTTP/1.1".encode()])
        self.assertEqual(proxy.authorizations, [None])
        self.assertEqual([r.path for r in receiver.requests], ["/hook", "/hook"])
        self.assertEqual(receiver.connections, 1)
        self.assertEqual(receiver.serverNames, [b"localhost"])

    @inlineCallbacks
    def test_credentialsSentToProxyOnly(self) -> Any:
        """Credentials in the proxy URL go as Proxy-Authorization Basic to the proxy, not to the receiver."""
        proxy = listen_proxy(self)
        receiver = listen_https(self, self.leaf)
        webhook = webhook_from_config(
            webhookURL=receiver.url("/hook", host="localhost"),
            cert={"enable": True, "certCA": write_pems(self, self.ca.cert_pem.bytes())},
            proxy=f"http://svc:{SECRET}@{HOST}:{proxy.port}",
        )
        outcome = yield self.send(webhook)
        self.assertEqual(outcome.status, 200)
        self.assertEqual(
            proxy.authorizations, ["Basic " + base64.b64encode(f"svc:{SECRET}".encode()).decode()]
        )
        self.assertIsNone(receiver.requests[0].header("proxy-authorization"))

    @inlineCallbacks
    def test_wrongCaFailsThroughTunnel(self) -> Any:
        """TLS is end to end: a certificate the webhook does not trust is refused even through the proxy."""
        proxy = listen_proxy(self)
        receiver = listen_https(self, self.leaf)
        webhook = make_webhook(
            receiver.url("/hook", host="localhost"),
            tls=tls_settings_for(trustme.CA()),
            proxy=Proxy(HOST, proxy.port),
        )
        outcome = yield self.send(webhook)
        self.assertTrue(outcome.tlsFailure, outcome)
        self.assertIn("verification", outcome.error or "")
        self.assertEqual(len(proxy.connects), 1)
        self.assertEqual(receiver.requests, [])

    @inlineCallbacks
    def test_mutualTlsThroughTunnel(self) -> Any:
        """The client certificate is offered to the receiver through the tunnel."""
        clientCa = trustme.CA()
        client = clientCa.issue_cert("butler-tw.example")
        proxy = listen_proxy(self)
        receiver = listen_https(self, self.leaf, clientCa=clientCa)
        cert = {
            "enable": True,
            "certCA": write_pems(self, self.ca.cert_pem.bytes()),
            "clientCert": write_pems(self, client.cert_chain_pems[0].bytes(), name="c.pem"),
            "clientKey": write_pems(self, client.private_key_pem.bytes(), name="c.key"),
        }
        url = receiver.url("/hook", host="localhost")
        proxyUrl = f"http://{HOST}:{proxy.port}"
        outcome = yield self.send(webhook_from_config(webhookURL=url, cert=cert, proxy=proxyUrl))
        self.assertEqual(outcome.status, 200)
        del cert["clientCert"], cert["clientKey"]
        refused = yield self.send(webhook_from_config(webhookURL=url, cert=cert, proxy=proxyUrl))
        self.assertTrue(refused.tlsFailure, refused)
        self.assertEqual(len(receiver.requests), 1)

    @inlineCallbacks
    def test_proxyRefusesConnect(self) -> Any:
        """407 to CONNECT: a failed attempt (retried), saying so; nothing reaches the receiver."""
        proxy = listen_proxy(self, answer=407)
        receiver = listen_https(self, self.leaf)
        webhook = webhook_from_config(
            webhookURL=receiver.url("/hook", host="localhost"),
            proxy=f"http://svc:{SECRET}@{HOST}:{proxy.port}",
        )
        outcome = yield self.send(webhook)
        self.assertFailedAttempt(
            outcome,
            "proxy refused CONNECT: 407 (Proxy Authentication Required: check the proxy's user and password)",
        )
        self.assertEqual(receiver.connections, 0)

    @inlineCallbacks
    def test_proxyForbidsConnect(self) -> Any:
        proxy = listen_proxy(self, answer=403)
        webhook = make_webhook("https://localhost:1/hook", proxy=Proxy(HOST, proxy.port))
        outcome = yield self.send(webhook)
        self.assertFailedAttempt(
            outcome, "proxy refused CONNECT: 403 (Forbidden: the proxy does not allow this host or port)"
        )

    @inlineCallbacks
    def test_proxyDown(self) -> Any:
        """No proxy listening: a failed attempt naming the proxy, for https and http alike."""
        port = closed_port()
        for url in ("https://localhost/hook", "http://localhost/hook"):
            webhook = webhook_from_config(webhookURL=url, proxy=f"http://svc:{SECRET}@{HOST}:{port}")
            outcome = yield self.send(webhook)
            self.assertFailedAttempt(outcome, f"proxy {HOST}:{port}: connection refused")

    @inlineCallbacks
    def test_proxyClosesBeforeAnswering(self) -> Any:
        """The target is unreachable from the proxy (it answers 502): a failed attempt."""
        proxy = listen_proxy(self)
        webhook = make_webhook(f"https://localhost:{closed_port()}/hook", proxy=Proxy(HOST, proxy.port))
        outcome = yield self.send(webhook)
        self.assertFailedAttempt(
            outcome, "proxy refused CONNECT: 502 (Bad Gateway: the proxy could not reach the host)"
        )

    @inlineCallbacks
    def test_plainHttpThroughProxy(self) -> Any:
        """http URLs: the request in absolute form to the proxy, with Proxy-Authorization; no CONNECT."""
        proxy = listen_proxy(self)
        receiver = listen_http(self)
        webhook = webhook_from_config(
            webhookURL=receiver.url("/hook?token=abc"), proxy=f"http://svc:{SECRET}@{HOST}:{proxy.port}"
        )
        outcome = yield self.send(webhook)
        self.assertEqual(outcome.status, 200)
        self.assertEqual(proxy.connects, [])
        self.assertEqual(proxy.plainRequests, [f"POST {receiver.url('/hook?token=abc')} HTTP/1.1".encode()])
        self.assertEqual(
            proxy.authorizations, ["Basic " + base64.b64encode(f"svc:{SECRET}".encode()).decode()]
        )
        (request,) = receiver.requests
        self.assertEqual((request.path, request.query), ("/hook", "token=abc"))
        self.assertEqual(request.header("host"), f"{HOST}:{receiver.port}")

    @inlineCallbacks
    def test_plainHttpProxyRefuses(self) -> Any:
        """A 407 on the plain path is the proxy's, not the receiver's: a failed attempt, retried."""
        proxy = listen_proxy(self, answer=407)
        receiver = listen_http(self)
        webhook = make_webhook(receiver.url("/hook"), proxy=Proxy(HOST, proxy.port))
        outcome = yield self.send(webhook)
        self.assertFailedAttempt(outcome, "proxy refused the request: 407 (Proxy Authentication Required)")
        self.assertEqual(receiver.requests, [])

    @inlineCallbacks
    def test_proxyFromEnvironment(self) -> Any:
        """``proxy: env``: HTTPS_PROXY is used; a NO_PROXY match goes direct."""
        proxy = listen_proxy(self)
        receiver = listen_https(self, self.leaf)
        cert = {"enable": True, "certCA": write_pems(self, self.ca.cert_pem.bytes())}
        url = receiver.url("/hook", host="localhost")
        environ = {"HTTPS_PROXY": f"{HOST}:{proxy.port}", "NO_PROXY": "example.com"}
        outcome = yield self.send(webhook_from_config(environ, webhookURL=url, cert=cert, proxy="env"))
        self.assertEqual(outcome.status, 200)
        self.assertEqual(len(proxy.connects), 1)
        environ["no_proxy"] = "example.com,localhost"
        direct = webhook_from_config(environ, webhookURL=url, cert=cert, proxy="env")
        self.assertIsNone(direct.proxy)
        outcome = yield self.send(direct)
        self.assertEqual(outcome.status, 200)
        self.assertEqual((len(proxy.connects), len(receiver.requests)), (1, 2))

    @inlineCallbacks
    def test_silentProxyTimesOut(self) -> Any:
        """A proxy that accepts and never answers CONNECT: the request timeout still ends the attempt."""
        from twisted.internet import reactor
        from twisted.internet.protocol import Factory, Protocol

        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface=HOST)  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        webhook = make_webhook("https://localhost/hook", timeout=0.5, proxy=Proxy(HOST, port.getHost().port))
        outcome = yield self.send(webhook)
        self.assertTrue(outcome.timedOut, outcome)
