"""The ``cert`` block's own keys (clientCert, clientKey, minVersion, serverName) and ``proxy``, at config load."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import trustme
from cryptography.hazmat.primitives import serialization
from twisted.trial.unittest import SynchronousTestCase

from butler_tw.config import ConfigError, Proxy, TrustMode, Webhook, parse_config
from butler_tw.config.model import transport_summary
from butler_tw.config.proxy import EnvProxies, bypasses, parse_no_proxy, parse_proxy_url, proxy_for
from butler_tw.config.reloadplan import webhook_changes
from tests.config.test_config import FAILURE, hook, with_hooks

KEY = f"{FAILURE}.webhooks[0]"


class _Case(SynchronousTestCase):
    def write(self, data: bytes, name: str = "file.pem") -> str:
        path = Path(self.mktemp())
        path.mkdir()
        (path / name).write_bytes(data)
        return str(path / name)

    def webhook(self, environ: dict[str, str] | None = None, **entry: Any) -> Webhook:
        config = parse_config(with_hooks(hook(**entry)), environ=environ or {})
        (webhook,) = config.webhooks
        return webhook

    def problems(self, environ: dict[str, str] | None = None, **entry: Any) -> tuple[str, ...]:
        e = self.assertRaises(ConfigError, parse_config, with_hooks(hook(**entry)), environ=environ or {})
        return e.problems


class ClientCertificateConfigTests(_Case):
    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.leaf = self.ca.issue_cert("butler-tw.example")
        self.certFile = self.write(self.leaf.cert_chain_pems[0].bytes(), "client.pem")
        self.keyPem = self.leaf.private_key_pem.bytes()
        self.keyFile = self.write(self.keyPem, "client.key")

    def test_read(self) -> None:
        tls = self.webhook(cert={"clientCert": self.certFile, "clientKey": self.keyFile}).tls
        client = tls.clientCertificate
        assert client is not None
        self.assertEqual((client.certFile, client.keyFile), (self.certFile, self.keyFile))
        self.assertEqual(client.certificates, (self.leaf.cert_chain_pems[0].bytes().strip(),))
        self.assertIn(b"-----BEGIN PRIVATE KEY-----", client.key)
        self.assertIn("trustme", client.subject)

    def test_enableFalseKeepsOurKeys(self) -> None:
        """``enable: false``: certCA is not read (as in Butler), ours still apply, with platform trust."""
        tls = self.webhook(
            cert={
                "enable": False,
                "certCA": "/does/not/exist.pem",
                "clientCert": self.certFile,
                "clientKey": self.keyFile,
                "minVersion": "TLSv1.3",
                "serverName": "Hooks.Example.",
            }
        ).tls
        self.assertIs(tls.mode, TrustMode.PLATFORM)
        self.assertIsNotNone(tls.clientCertificate)
        self.assertEqual((tls.minVersion, tls.serverName), ("TLSv1.3", "hooks.example"))

    def test_keyNeverShown(self) -> None:
        """The private key is not in the settings' repr, nor in any message."""
        tls = self.webhook(cert={"clientCert": self.certFile, "clientKey": self.keyFile}).tls
        body = self.keyPem.split(b"\n")[1].decode()
        self.assertNotIn(body, repr(tls))
        other = trustme.CA().issue_cert("x").private_key_pem.bytes()
        problems = self.problems(cert={"clientCert": self.certFile, "clientKey": self.write(other)})
        self.assertNotIn(other.split(b"\n")[1].decode(), "\n".join(problems))

    def test_chainKept(self) -> None:
        """Intermediates after the certificate in clientCert are kept, to be sent with it."""
        chain = self.write(b"".join(p.bytes() for p in self.leaf.cert_chain_pems) + self.ca.cert_pem.bytes())
        client = self.webhook(cert={"clientCert": chain, "clientKey": self.keyFile}).tls.clientCertificate
        assert client is not None
        self.assertEqual(len(client.certificates), 2)

    def test_oneWithoutTheOther(self) -> None:
        self.assertEqual(
            self.problems(cert={"clientCert": self.certFile}),
            (
                f"{KEY}.cert.clientKey: missing: clientCert is set, and mutual TLS needs both the "
                "certificate (clientCert) and its private key (clientKey)",
            ),
        )
        self.assertEqual(
            self.problems(cert={"clientKey": self.keyFile})[0].split(":")[0], f"{KEY}.cert.clientCert"
        )

    def test_filesMissing(self) -> None:
        gone = self.mktemp()
        self.assertEqual(
            self.problems(cert={"clientCert": gone, "clientKey": gone + ".key"}),
            (
                f"{KEY}.cert.clientCert: file not found: {gone}",
                f"{KEY}.cert.clientKey: file not found: {gone}.key",
            ),
        )

    def test_notPem(self) -> None:
        junk = self.write(b"not pem at all\n")
        self.assertEqual(
            self.problems(cert={"clientCert": junk, "clientKey": self.keyFile}),
            (f"{KEY}.cert.clientCert: {junk} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",),
        )
        self.assertEqual(
            self.problems(cert={"clientCert": self.certFile, "clientKey": self.certFile}),
            (
                f"{KEY}.cert.clientKey: {self.certFile} holds no PEM private key (-----BEGIN PRIVATE KEY-----)",
            ),
        )

    def test_garbageKey(self) -> None:
        bad = self.write(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
        self.assertEqual(
            self.problems(cert={"clientCert": self.certFile, "clientKey": bad}),
            (f"{KEY}.cert.clientKey: the private key in {bad} cannot be read",),
        )

    def test_keyDoesNotMatch(self) -> None:
        other = self.write(trustme.CA().issue_cert("x").private_key_pem.bytes())
        self.assertEqual(
            self.problems(cert={"clientCert": self.certFile, "clientKey": other}),
            (
                f"{KEY}.cert.clientKey: the key in {other} does not belong to the certificate in "
                f"{self.certFile} (their public keys differ)",
            ),
        )

    def test_encryptedKey(self) -> None:
        key = serialization.load_pem_private_key(self.keyPem, password=None)
        encrypted = self.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
        (problem,) = self.problems(cert={"clientCert": self.certFile, "clientKey": encrypted})
        self.assertTrue(
            problem.startswith(f"{KEY}.cert.clientKey: the key in {encrypted} is encrypted"), problem
        )

    def test_httpUrl(self) -> None:
        """A client certificate is only sent over https: on an http URL it is a mistake."""
        self.assertEqual(
            self.problems(
                webhookURL="http://receiver.example.com/hook",
                cert={"clientCert": self.certFile, "clientKey": self.keyFile},
            ),
            (
                f"{KEY}.cert.clientCert: is set, but webhookURL is http://: a client certificate is only "
                "sent over https",
            ),
        )


class TlsKeyConfigTests(_Case):
    def test_defaults(self) -> None:
        tls = self.webhook().tls
        self.assertEqual((tls.minVersion, tls.serverName, tls.clientCertificate), ("TLSv1.2", None, None))

    def test_minVersionSpellings(self) -> None:
        for given, read in (("TLSv1.3", "TLSv1.3"), ("tlsv1.2", "TLSv1.2"), ("1.3", "TLSv1.3")):
            self.assertEqual(self.webhook(cert={"minVersion": given}).tls.minVersion, read)

    def test_minVersionBad(self) -> None:
        self.assertEqual(
            self.problems(cert={"minVersion": "TLSv1.1"}),
            (f"{KEY}.cert.minVersion: must be TLSv1.2 or TLSv1.3, got 'TLSv1.1'",),
        )

    def test_serverName(self) -> None:
        self.assertEqual(self.webhook(cert={"serverName": "10.0.0.5"}).tls.serverName, "10.0.0.5")
        for bad in ("has space.example", "under_score.example", "-x.example"):
            self.assertEqual(
                self.problems(cert={"serverName": bad}),
                (f"{KEY}.cert.serverName: must be a DNS host name or an IP address",),
                bad,
            )


class ProxyConfigTests(_Case):
    def test_none(self) -> None:
        self.assertIsNone(self.webhook().proxy)
        self.assertIsNone(self.webhook(proxy="").proxy)

    def test_url(self) -> None:
        self.assertEqual(self.webhook(proxy="http://proxy.corp:3128").proxy, Proxy("proxy.corp", 3128))
        self.assertEqual(self.webhook(proxy="http://proxy.corp").proxy, Proxy("proxy.corp", 80))

    def test_credentials(self) -> None:
        proxy = self.webhook(proxy="http://svc%40corp:p%3Ass@proxy.corp:3128").proxy
        assert proxy is not None
        self.assertEqual(proxy.credentials, b"Basic " + base64.b64encode(b"svc@corp:p:ss"))
        self.assertNotIn("p%3Ass", repr(proxy))
        self.assertEqual(proxy.loggable, "http://proxy.corp:3128 (with credentials)")

    def test_credentialsFromReferences(self) -> None:
        """The password from ``${env:...}``: resolved before the URL is parsed, never shown."""
        environ = {"PROXY_PASSWORD": "hunter2"}
        proxy = self.webhook(environ, proxy="http://svc:${env:PROXY_PASSWORD}@proxy.corp:3128").proxy
        assert proxy is not None
        self.assertEqual(proxy.credentials, b"Basic " + base64.b64encode(b"svc:hunter2"))
        (problem,) = self.problems(proxy="http://svc:${env:NOT_SET}@proxy.corp:3128")
        self.assertTrue(problem.startswith(f"{KEY}.proxy: "), problem)
        self.assertIn("NOT_SET", problem)

    def test_bad(self) -> None:
        for value, message in (
            ("https://proxy.corp:3128", "https:// proxies (TLS to the proxy itself) are not supported"),
            ("socks5://user:hunter2@proxy:1080", "must be http://host:port (or env"),
            ("http://user:hunter2@proxy.corp:x", "not a valid proxy URL (bad port or host)"),
            ("http://proxy.corp:3128/path", "with nothing after the port"),
            ("proxy.corp:3128", "must be http://host:port"),
        ):
            (problem,) = self.problems(proxy=value)
            self.assertTrue(problem.startswith(f"{KEY}.proxy: "), problem)
            self.assertIn(message, problem)
            self.assertNotIn("hunter2", problem)
        self.assertEqual(
            self.problems(proxy=3128),
            (f"{KEY}.proxy: expected a proxy URL (http://host:port) or env, got a number (3128)",),
        )

    def test_envByScheme(self) -> None:
        environ = {"HTTPS_PROXY": "http://secure:3128", "http_proxy": "plain:8080"}
        self.assertEqual(
            self.webhook(environ, proxy="env").proxy, Proxy("secure", 3128, source="HTTPS_PROXY")
        )
        self.assertEqual(
            self.webhook(environ, proxy="env", webhookURL="http://receiver.example.com/").proxy,
            Proxy("plain", 8080, source="http_proxy"),
        )

    def test_envLowerCaseFirst(self) -> None:
        environ = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"}
        proxy = self.webhook(environ, proxy="env").proxy
        assert proxy is not None
        self.assertEqual((proxy.host, proxy.loggable), ("lower", "http://lower:2 (from https_proxy)"))

    def test_envNoProxy(self) -> None:
        environ = {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "localhost, .example.com"}
        self.assertIsNone(self.webhook(environ, proxy="env").proxy)  # receiver.example.com
        environ["NO_PROXY"] = "other.example.com"
        self.assertIsNotNone(self.webhook(environ, proxy="env").proxy)

    def test_envUnset(self) -> None:
        """Nothing set for the scheme: direct, and said at start-up."""
        config = parse_config(with_hooks(hook(proxy="env")), environ={"HTTP_PROXY": "http://p:1"})
        self.assertIsNone(config.webhooks[0].proxy)
        self.assertIn(
            f"{KEY}.proxy: is env, but neither HTTPS_PROXY nor https_proxy is set: this webhook is "
            "called directly",
            config.warnings(),
        )

    def test_envBad(self) -> None:
        (problem,) = self.problems({"HTTPS_PROXY": "ftp://user:hunter2@p:21"}, proxy="env")
        self.assertTrue(problem.startswith(f"{KEY}.proxy: is env, and HTTPS_PROXY (from the environment) "))
        self.assertNotIn("hunter2", problem)


class NoProxyTests(SynchronousTestCase):
    """NO_PROXY matching, as curl does it."""

    def test_matching(self) -> None:
        rules = parse_no_proxy("localhost,.corp.example, internal.example:8443 ,10.0.0.0/8,[::1]")
        self.assertEqual(rules, ("localhost", "corp.example", "internal.example", "10.0.0.0/8", "::1"))
        for host, expected in (
            ("localhost", True),
            ("LOCALHOST", True),
            ("corp.example", True),
            ("hooks.corp.example", True),
            ("notcorp.example", False),
            ("internal.example", True),
            ("a.internal.example", True),
            ("10.1.2.3", True),
            ("11.1.2.3", False),
            ("::1", True),
            ("example.com", False),
        ):
            self.assertEqual(bypasses(host, rules), expected, host)

    def test_star(self) -> None:
        self.assertTrue(bypasses("anything.example", parse_no_proxy("*")))
        self.assertFalse(bypasses("anything.example", parse_no_proxy("")))

    def test_proxyFor(self) -> None:
        env = EnvProxies(https=parse_proxy_url("http://p:1"), http=None, noProxy=("skip.example",))
        self.assertEqual(proxy_for(env, "https://hooks.example/x"), Proxy("p", 1))
        self.assertIsNone(proxy_for(env, "https://a.skip.example/x"))
        self.assertIsNone(proxy_for(env, "http://hooks.example/x"))


class SummaryTests(_Case):
    """What start-up lines and reload plans say of these settings: names and files, never secrets."""

    def test_transportSummary(self) -> None:
        leaf = trustme.CA().issue_cert("butler-tw.example")
        cert = self.write(leaf.cert_chain_pems[0].bytes(), "c.pem")
        key = self.write(leaf.private_key_pem.bytes(), "c.key")
        webhook = self.webhook(
            cert={
                "clientCert": cert,
                "clientKey": key,
                "minVersion": "TLSv1.3",
                "serverName": "hooks.example",
            },
            proxy=f"http://svc:{'hunter2'}@proxy.corp:3128",
        )
        self.assertEqual(
            transport_summary(webhook),
            f"TLS: platform, client certificate {cert}, TLSv1.3 minimum, server name hooks.example; "
            "via proxy http://proxy.corp:3128 (with credentials)",
        )
        plain = self.webhook(webhookURL="http://h.example/", proxy="http://proxy.corp:3128")
        self.assertEqual(transport_summary(plain), "TLS: none (http); via proxy http://proxy.corp:3128")

    def test_reloadChanges(self) -> None:
        old = self.webhook(proxy="http://a:pw1@proxy.corp:3128")
        self.assertEqual(
            webhook_changes(
                old, self.webhook(proxy="http://a:pw2@proxy.corp:3128", cert={"minVersion": "1.3"})
            ),
            ["cert.minVersion/serverName TLSv1.2/- -> TLSv1.3/-", "proxy credentials changed"],
        )
        self.assertEqual(
            webhook_changes(old, self.webhook()),
            ["proxy http://proxy.corp:3128 (with credentials) -> none"],
        )
