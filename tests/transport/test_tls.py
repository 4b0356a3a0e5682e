"""Every TLS mode of ``butler_tw.tls`` against a real HTTPS server on loopback.

Certificates are throwaway ones from ``trustme``; the client is the real
``WebhookClient`` on the real reactor, so these tests cover the policy, the
connection pool and the failure description together.
"""

from __future__ import annotations

from typing import Any

import trustme
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from butler_tw.channels.butler import build_request
from butler_tw.config import TlsSettings, TrustMode, parse_config
from butler_tw.core.retry import Outcome
from butler_tw.transport.tls import MINIMUM_TLS, NoVerificationPolicy, VerifyingPolicy, policy_for
from tests.support.receivers import (
    listen_https,
    make_alert,
    make_webhook,
    server_tls_options,
    start_client,
    tls_settings_for,
    webhook_from_config,
    write_pems,
)

CUSTOM = TrustMode.CUSTOM_CA
NO_VERIFY = TlsSettings(mode=TrustMode.NO_VERIFY)


def tls_settings_from_file(path: str, verify: bool = True) -> TlsSettings:
    """The TLS settings the config reader makes of a ``cert`` block naming ``path``."""
    raw = {
        "Butler": {
            "udpServerConfig": {"enable": True, "serverHost": "127.0.0.1", "portTaskFailure": 9998},
            "webhookNotification": {
                "enable": True,
                "reloadTaskFailure": {
                    "webhooks": [
                        {
                            "description": "tls",
                            "webhookURL": "https://localhost/hook",
                            "httpMethod": "POST",
                            "cert": {"enable": True, "rejectUnauthorized": verify, "certCA": path},
                        }
                    ]
                },
            },
        }
    }
    (webhook,) = parse_config(raw).webhooks
    return webhook.tls


def _handshake_in_memory(server: SSL.Connection, client: SSL.Connection) -> None:
    """Run a TLS handshake between two memory-BIO connections; raise on failure."""
    server.set_accept_state()
    client.set_connect_state()
    done = {"client": False, "server": False}
    for _ in range(50):
        for name, conn, peer in (("client", client, server), ("server", server, client)):
            if not done[name]:
                try:
                    conn.do_handshake()
                    done[name] = True
                except SSL.WantReadError:
                    pass
            try:
                data = conn.bio_read(65536)
            except SSL.WantReadError:
                data = b""
            if data:
                peer.bio_write(data)
        if all(done.values()):
            return
    raise RuntimeError("handshake did not complete")


def tls11_unavailable(leaf: trustme.LeafCert) -> str | None:
    """Why a TLS 1.1 test cannot run here, or ``None`` when OpenSSL can still do TLS 1.1.

    The server options are the very ones the TLS 1.1 receiver uses, and the
    client is a plain OpenSSL client allowed TLS 1.1 only, so a pass here
    means a refusal by our client is its own doing.
    """
    try:
        server_ctx = server_tls_options(leaf, maximumTls=ssl.TLSVersion.TLSv1_1).getContext()
        client_ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        client_ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        client_ctx.set_min_proto_version(SSL.TLS1_1_VERSION)
        client_ctx.set_max_proto_version(SSL.TLS1_1_VERSION)
        client = SSL.Connection(client_ctx, None)
        _handshake_in_memory(SSL.Connection(server_ctx, None), client)
        if client.get_protocol_version_name() != "TLSv1.1":
            return f"negotiated {client.get_protocol_version_name()}, not TLS 1.1"
    except Exception as e:  # any failure means: not feasible on this box
        return f"OpenSSL here cannot do a TLS 1.1 handshake ({type(e).__name__}: {e})"
    return None


class TlsDeliveryTests(TestCase):
    """One webhook, one real HTTPS receiver, each trust mode."""

    timeout = 30

    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.leaf = self.ca.issue_cert("localhost", "127.0.0.1")

    def send(self, url: str, tls: TlsSettings) -> Any:
        webhook = make_webhook(url, tls=tls, timeout=5.0)
        client = start_client(self, webhook)
        return client.send(build_request(make_alert(), webhook, timestamp=1))

    def assertDelivered(self, outcome: Outcome) -> None:
        self.assertEqual((outcome.status, outcome.error, outcome.tlsFailure), (200, None, False))

    def assertRefused(self, outcome: Outcome, mentions: str) -> None:
        self.assertIsNone(outcome.status)
        self.assertTrue(outcome.tlsFailure, outcome)
        self.assertIn(mentions, outcome.error or "")

    @inlineCallbacks
    def test_customCaTrusted(self) -> Any:
        """The CA from ``certCA`` is trusted: delivered, with SNI, body intact."""
        receiver = listen_https(self, self.leaf)
        outcome = yield self.send(receiver.url("/hook", host="localhost"), tls_settings_for(self.ca))
        self.assertDelivered(outcome)
        (request,) = receiver.requests
        self.assertEqual(request.path, "/hook")
        self.assertEqual(request.header("content-type"), "application/json")
        self.assertIn(b"localhost", receiver.serverNames)

    @inlineCallbacks
    def test_customCaTrustedByIpAddress(self) -> Any:
        """An IP address URL is verified against the certificate's IP SAN; no SNI."""
        receiver = listen_https(self, self.leaf)
        outcome = yield self.send(receiver.url("/hook", host="127.0.0.1"), tls_settings_for(self.ca))
        self.assertDelivered(outcome)
        self.assertEqual(len(receiver.requests), 1)
        self.assertNotIn(b"127.0.0.1", receiver.serverNames)

    @inlineCallbacks
    def test_bundleWithUnrelatedCaFirst(self) -> Any:
        """A ``certCA`` bundle is split: the right CA in second place is trusted too."""
        unrelated = trustme.CA()
        path = write_pems(self, unrelated.cert_pem.bytes(), self.ca.cert_pem.bytes(), name="bundle.pem")
        tls = tls_settings_from_file(path)
        self.assertEqual((tls.mode, len(tls.caCertificates)), (CUSTOM, 2))
        receiver = listen_https(self, self.leaf)
        outcome = yield self.send(receiver.url("/hook", host="localhost"), tls)
        self.assertDelivered(outcome)
        self.assertEqual(len(receiver.requests), 1)

    @inlineCallbacks
    def test_bundleWithOnlyUnrelatedCaRefused(self) -> Any:
        """The control for the bundle test: without the right CA it is refused."""
        path = write_pems(self, trustme.CA().cert_pem.bytes(), trustme.CA().cert_pem.bytes())
        receiver = listen_https(self, self.leaf)
        outcome = yield self.send(receiver.url("/hook", host="localhost"), tls_settings_from_file(path))
        self.assertRefused(outcome, "verification")
        self.assertEqual(receiver.requests, [])

    @inlineCallbacks
    def test_untrustedCaRefused(self) -> Any:
        """A server certificate from a CA not in ``certCA`` is refused; nothing is sent."""
        receiver = listen_https(self, self.leaf)
        outcome = yield self.send(receiver.url("/hook", host="localhost"), tls_settings_for(trustme.CA()))
        self.assertRefused(outcome, "verification")
        self.assertEqual(receiver.requests, [])

    @inlineCallbacks
    def test_wrongHostNameRefused(self) -> Any:
        """A trusted certificate for another name is refused, and the payload is not sent."""
        receiver = listen_https(self, self.ca.issue_cert("other.example"))
        outcome = yield self.send(receiver.url("/hook", host="localhost"), tls_settings_for(self.ca))
        self.assertRefused(outcome, "host name")
        self.assertEqual(receiver.requests, [])

    @inlineCallbacks
    def test_wrongIpAddressRefused(self) -> Any:
        """A certificate for ``localhost`` only does not cover ``127.0.0.1``."""
        receiver = listen_https(self, self.ca.issue_cert("localhost"))
        outcome = yield self.send(receiver.url("/hook", host="127.0.0.1"), tls_settings_for(self.ca))
        self.assertRefused(outcome, "host name")
        self.assertEqual(receiver.requests, [])

    @inlineCallbacks
    def test_noVerifyAcceptsUntrustedAndSendsSni(self) -> Any:
        """``rejectUnauthorized: false``: any certificate is accepted, SNI still sent."""
        leaf = trustme.CA().issue_cert("other.example")  # untrusted, and for another name
        receiver = listen_https(self, leaf)
        outcome = yield self.send(receiver.url("/hook", host="localhost"), NO_VERIFY)
        self.assertDelivered(outcome)
        self.assertEqual(len(receiver.requests), 1)
        self.assertEqual(receiver.serverNames, [b"localhost"])

    @inlineCallbacks
    def test_noVerifyFromConfigFile(self) -> Any:
        """``rejectUnauthorized: false`` read from a config: the CA file does not matter."""
        tls = tls_settings_from_file(write_pems(self, trustme.CA().cert_pem.bytes()), verify=False)
        self.assertIs(tls.mode, TrustMode.NO_VERIFY)
        receiver = listen_https(self, self.leaf)
        outcome = yield self.send(receiver.url("/hook", host="localhost"), tls)
        self.assertDelivered(outcome)

    @inlineCallbacks
    def test_noVerifyByIpAddressSendsNoSni(self) -> Any:
        """SNI carries DNS names only: an IP literal is not sent as SNI."""
        receiver = listen_https(self, self.leaf)
        outcome = yield self.send(receiver.url("/hook", host="127.0.0.1"), NO_VERIFY)
        self.assertDelivered(outcome)
        self.assertNotIn(b"127.0.0.1", receiver.serverNames)

    @inlineCallbacks
    def test_platformTrustRefusesPrivateCa(self) -> Any:
        """No ``cert`` block: the platform store, which knows no throwaway CA."""
        receiver = listen_https(self, self.leaf)
        outcome = yield self.send(receiver.url("/hook", host="localhost"), TlsSettings())
        self.assertRefused(outcome, "verification")
        self.assertEqual(receiver.requests, [])

    @inlineCallbacks
    def test_tls12ServerAccepted(self) -> Any:
        """TLS 1.2 is the minimum, not more: a TLS 1.2-only server is fine."""
        receiver = listen_https(self, self.leaf, maximumTls=ssl.TLSVersion.TLSv1_2)
        outcome = yield self.send(receiver.url("/hook", host="localhost"), tls_settings_for(self.ca))
        self.assertDelivered(outcome)

    @inlineCallbacks
    def test_tls11ServerRefusedWhenVerifying(self) -> Any:
        """A server that only speaks TLS 1.1 is refused, although its certificate is trusted."""
        reason = tls11_unavailable(self.leaf)
        if reason:
            raise self.skipTest(reason)
        receiver = listen_https(self, self.leaf, maximumTls=ssl.TLSVersion.TLSv1_1)
        outcome = yield self.send(receiver.url("/hook", host="localhost"), tls_settings_for(self.ca))
        self.assertRefused(outcome, "TLS")
        self.assertEqual(receiver.requests, [])

    @inlineCallbacks
    def test_tls11ServerRefusedWithoutVerification(self) -> Any:
        """TLS 1.2 stays the minimum with ``rejectUnauthorized: false`` too."""
        reason = tls11_unavailable(self.leaf)
        if reason:
            raise self.skipTest(reason)
        receiver = listen_https(self, self.leaf, maximumTls=ssl.TLSVersion.TLSv1_1)
        outcome = yield self.send(receiver.url("/hook", host="localhost"), NO_VERIFY)
        self.assertRefused(outcome, "TLS")
        self.assertEqual(receiver.requests, [])


class PolicyTests(SynchronousTestCase):
    """The policy objects themselves: built once, the right kind per mode."""

    def test_modes(self) -> None:
        ca = trustme.CA()
        self.assertIsInstance(policy_for(TlsSettings()), VerifyingPolicy)
        self.assertIsInstance(policy_for(tls_settings_for(ca)), VerifyingPolicy)
        self.assertIsInstance(policy_for(NO_VERIFY), NoVerificationPolicy)

    def test_creatorCachedPerHostName(self) -> None:
        """The OpenSSL context is built once per host name, not per connection."""
        policy = policy_for(tls_settings_for(trustme.CA()))
        first = policy.creatorForNetloc(b"localhost", 443)
        self.assertIs(policy.creatorForNetloc(b"localhost", 8443), first)
        self.assertIsNot(policy.creatorForNetloc(b"example.com", 443), first)

    def test_minimumIsTls12(self) -> None:
        self.assertEqual(MINIMUM_TLS, ssl.TLSVersion.TLSv1_2)

    def handshake(self, settings: TlsSettings, maximumTls: ssl.TLSVersion) -> None:
        """Handshake, in memory, a policy's client connection with a capped server.

        The client's cipher security level is lowered to 0 first, and
        Twisted's own default minimum (TLS 1.2 today, lower in older
        releases) to TLS 1.0, so that only our floor can refuse an old server.
        """
        makeContext = ssl.CertificateOptions._makeContext

        def lowSecurityContext(options: ssl.CertificateOptions, *a: Any, **kw: Any) -> SSL.Context:
            context = makeContext(options, *a, **kw)
            context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
            return context

        leaf = trustme.CA().issue_cert("localhost")
        server = SSL.Connection(server_tls_options(leaf, maximumTls=maximumTls).getContext(), None)
        self.patch(ssl.CertificateOptions, "_makeContext", lowSecurityContext)
        self.patch(ssl.CertificateOptions, "_defaultMinimumTLSVersion", ssl.TLSVersion.TLSv1_0)
        creator = policy_for(settings).creatorForNetloc(b"localhost", 443)
        _handshake_in_memory(server, creator.clientConnectionForTLS(_FakeTlsProtocol()))

    def test_versionFloor(self) -> None:
        """Every mode refuses TLS 1.1 because of its version floor, and accepts TLS 1.2."""
        reason = tls11_unavailable(trustme.CA().issue_cert("localhost"))
        if reason:
            raise self.skipTest(reason)
        for settings in (tls_settings_for(trustme.CA()), NO_VERIFY):
            with self.subTest(mode=settings.mode):
                self.assertRaises(SSL.Error, self.handshake, settings, ssl.TLSVersion.TLSv1_1)
        self.handshake(NO_VERIFY, ssl.TLSVersion.TLSv1_2)  # the control: no error


class _FakeTlsFactory:
    wrappedFactory = None


class _FakeTlsProtocol:
    """Stands in for the TLSMemoryBIOProtocol a client connection belongs to."""

    factory = _FakeTlsFactory()

    def failVerification(self, reason: Any) -> None:
        pass


class MutualTlsTests(TestCase):
    """``cert.clientCert``/``clientKey``, ``minVersion`` and ``serverName``, read from a config, on the wire."""

    timeout = 30

    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.clientCa = trustme.CA()
        self.leaf = self.ca.issue_cert("localhost", "127.0.0.1")
        client = self.clientCa.issue_cert("butler-tw.example")
        self.certFile = write_pems(self, *(p.bytes() for p in client.cert_chain_pems), name="client.pem")
        self.keyFile = write_pems(self, client.private_key_pem.bytes(), name="client.key")
        self.caFile = write_pems(self, self.ca.cert_pem.bytes())

    def send(self, url: str, **cert: Any) -> Any:
        webhook = webhook_from_config(webhookURL=url, cert={"enable": True, "certCA": self.caFile, **cert})
        client = start_client(self, webhook)
        return client.send(build_request(make_alert(), webhook, timestamp=1))

    @inlineCallbacks
    def test_clientCertificateAccepted(self) -> Any:
        """A server that demands a client certificate from its CA gets ours: delivered."""
        receiver = listen_https(self, self.leaf, clientCa=self.clientCa)
        outcome = yield self.send(
            receiver.url("/hook", host="localhost"), clientCert=self.certFile, clientKey=self.keyFile
        )
        self.assertEqual((outcome.status, outcome.error), (200, None))
        self.assertEqual(len(receiver.requests), 1)

    @inlineCallbacks
    def test_withoutClientCertificateRefused(self) -> Any:
        """The control: without ``clientCert`` the same server refuses the handshake; nothing is sent."""
        receiver = listen_https(self, self.leaf, clientCa=self.clientCa)
        outcome = yield self.send(receiver.url("/hook", host="localhost"))
        self.assertIsNone(outcome.status)
        self.assertTrue(outcome.tlsFailure, outcome)
        self.assertIn("TLS", outcome.error or "")
        self.assertEqual(receiver.requests, [])

    @inlineCallbacks
    def test_clientCertificateFromAnotherCaRefused(self) -> Any:
        """A client certificate the server does not trust is refused too."""
        other = trustme.CA().issue_cert("butler-tw.example")
        certFile = write_pems(self, other.cert_chain_pems[0].bytes(), name="other.pem")
        keyFile = write_pems(self, other.private_key_pem.bytes(), name="other.key")
        receiver = listen_https(self, self.leaf, clientCa=self.clientCa)
        outcome = yield self.send(
            receiver.url("/hook", host="localhost"), clientCert=certFile, clientKey=keyFile
        )
        self.assertTrue(outcome.tlsFailure, outcome)
        self.assertEqual(receiver.requests, [])

    @inlineCallbacks
    def test_minVersionTls13RefusesTls12Server(self) -> Any:
        """``minVersion: TLSv1.3`` against a server capped at TLS 1.2: refused, nothing sent."""
        receiver = listen_https(self, self.leaf, maximumTls=ssl.TLSVersion.TLSv1_2)
        outcome = yield self.send(receiver.url("/hook", host="localhost"), minVersion="TLSv1.3")
        self.assertTrue(outcome.tlsFailure, outcome)
        self.assertEqual(receiver.requests, [])

    @inlineCallbacks
    def test_minVersionTls13Accepted(self) -> Any:
        """The control: the same setting against a TLS 1.3 server delivers."""
        receiver = listen_https(self, self.leaf)
        outcome = yield self.send(receiver.url("/hook", host="localhost"), minVersion="tlsv1.3")
        self.assertEqual(outcome.status, 200)

    @inlineCallbacks
    def test_serverNameVerifiesAnotherName(self) -> Any:
        """``serverName``: a certificate for another name than the URL's host is verified, and sent as SNI."""
        receiver = listen_https(self, self.ca.issue_cert("hooks.internal.example"))
        url = receiver.url("/hook", host="127.0.0.1")
        outcome = yield self.send(url, serverName="hooks.internal.example")
        self.assertEqual((outcome.status, outcome.error), (200, None))
        self.assertEqual(receiver.serverNames, [b"hooks.internal.example"])
        wrong = yield self.send(url, serverName="other.internal.example")
        self.assertIn("host name", wrong.error or "")
        self.assertEqual(len(receiver.requests), 1)

    @inlineCallbacks
    def test_serverNameWithoutVerification(self) -> Any:
        """With ``rejectUnauthorized: false``, ``serverName`` still picks the SNI sent."""
        receiver = listen_https(self, self.leaf)
        outcome = yield self.send(
            receiver.url("/hook", host="127.0.0.1"), rejectUnauthorized=False, serverName="vhost.example"
        )
        self.assertEqual(outcome.status, 200)
        self.assertEqual(receiver.serverNames, [b"vhost.example"])
