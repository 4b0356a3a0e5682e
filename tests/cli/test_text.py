"""The wording the ``butler-tw`` commands share (:mod:`butler_tw.cli.text`)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from butler_tw.cli.text import duration, format_table, reachable, tls_mode, tls_words
from butler_tw.config import TlsSettings, TrustMode
from tests.support.receivers import make_webhook


class TableTests(SynchronousTestCase):
    def test_columns(self) -> None:
        """Left-aligned, two spaces apart, no trailing blanks."""
        self.assertEqual(
            format_table([("A", "LONGER", "C"), ("wide cell", "x", "")]),
            "A          LONGER  C\nwide cell  x\n",
        )

    def test_cut(self) -> None:
        """Cells past ``cut`` are cut, except in the first column."""
        self.assertEqual(
            format_table([("ID", "TEXT"), ("0123456789", "abcdefghij")], cut=4),
            "ID          TEXT\n0123456789  abcd\n",
        )


class WordsTests(SynchronousTestCase):
    def test_duration(self) -> None:
        self.assertEqual(
            [duration(s) for s in (0, 5, 90, 300, 7200, 86400, 172800, 0.5)],
            ["0 s", "5 s", "90 s", "5 min", "2 h", "1 d", "2 d", "0.5 s"],
        )

    def test_reachable(self) -> None:
        self.assertEqual(
            [reachable(h) for h in ("0.0.0.0", "::", "10.0.0.5", "fe80::1", "")],
            ["127.0.0.1", "::1", "10.0.0.5", "fe80::1", ""],
        )

    def test_usesTls(self) -> None:
        self.assertTrue(make_webhook("HTTPS://example.com/").usesTls)
        self.assertFalse(make_webhook("http://example.com/https:").usesTls)


class TlsWordsTests(SynchronousTestCase):
    def test_http(self) -> None:
        """An http URL uses no TLS; a cert block it has is said to be unused, in the summary only."""
        custom = TlsSettings(mode=TrustMode.CUSTOM_CA, caCertificates=(b"pem",), caFile="/ca.pem")
        plain = make_webhook("http://127.0.0.1/x", tls=custom)
        self.assertIsNone(tls_mode(plain))
        self.assertEqual(tls_words(plain), "none (http)")
        self.assertEqual(
            tls_words(plain, summary=True), "none (http) (its cert block is not used: the URL is http)"
        )
        self.assertEqual(tls_words(make_webhook("http://127.0.0.1/x"), summary=True), "none (http)")

    def test_https(self) -> None:
        cases = [
            (TlsSettings(), "platform", "platform: the system's CA store"),
            (
                TlsSettings(mode=TrustMode.CUSTOM_CA, caCertificates=(b"a", b"b"), caFile="/ca.pem"),
                "custom CA",
                "custom CA: only the 2 certificates in /ca.pem",
            ),
            (
                TlsSettings(mode=TrustMode.NO_VERIFY),
                "no verification (NOT verified)",
                "NO verification (cert.rejectUnauthorized: false)",
            ),
        ]
        for tls, short, summary in cases:
            hook = make_webhook("https://127.0.0.1/x", tls=tls)
            self.assertEqual(tls_mode(hook), tls.mode)
            self.assertEqual((tls_words(hook), tls_words(hook, summary=True)), (short, summary))
