"""``butler-tw check-config``: the daemon's start-up checks, and the summary it prints."""

from __future__ import annotations

import io
import os
import socket
import sys

import trustme
from twisted.trial.unittest import SynchronousTestCase

from butler_tw.cli import main as cli
from butler_tw.core.redact import redact_url
from butler_tw.daemon.startup import EX_CONFIG
from tests.support.cli import SECRETS, run_main, write_config
from tests.support.daemon import free_udp_port, make_config, webhook
from tests.support.receivers import write_pems


class CheckConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.caFile = write_pems(self, self.ca.cert_pem.bytes())  # type: ignore[arg-type]
        self.stateDir = os.path.abspath(self.mktemp())
        self.urls = [
            "http://127.0.0.1:18080/butler/failed?token=QUERYSECRET",
            "https://alice:PASSWORDSECRET@hooks.example.com/services/T0AAA/B0BBB/PATHSECRET0123456789xyz",
            "https://localhost:8443/api/v1/alerts",
        ]
        doc = make_config(
            failure=[
                webhook(self.urls[0], "POST", "Teams channel"),
                webhook(
                    self.urls[1],
                    "get",
                    "Slack",
                    timeout=3,
                    concurrency=2,
                    retrySchedule=[0, 60],
                    maxAge=600,
                    match={"taskName": "^Prod "},
                    exclude={"hostName": "^dev-"},
                    headers={"X-Team": "HEADERSECRET"},
                    auth={"type": "bearer", "token": "TOKENSECRET"},
                    signing={"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
                    proxy="http://proxyuser:PROXYSECRET@proxy.example.com:3128",
                ),
            ],
            aborted=[
                webhook(
                    self.urls[2],
                    "PUT",
                    cert={
                        "enable": True,
                        "rejectUnauthorized": True,
                        "certCA": self.caFile,
                        "serverName": "receiver.example",
                    },
                )
            ],
            butlerWebhook={"stateDir": self.stateDir},
        )
        doc["Butler"]["webhookNotification"]["reloadTaskAborted"]["rateLimit"] = 0
        self.config = write_config(self, doc)
        self.udpPort = doc["Butler"]["udpServerConfig"]["portTaskFailure"]

    def test_summary(self) -> None:
        """Every webhook is listed with its redacted URL, method, TLS mode, timeout and retries."""
        status, out, err = run_main("check-config", self.config)
        self.assertEqual((status, err), (0, ""))
        for url in self.urls:
            self.assertIn(redact_url(url), out)
        self.assertIn("https://hooks.example.com:443/services/***/***/***", out)
        for secret in SECRETS:
            self.assertNotIn(secret, out)
        lines = out.splitlines()
        self.assertEqual(lines[0], f"{self.config}: valid")
        self.assertIn(f"UDP             127.0.0.1:{self.udpPort}", lines)
        self.assertIn("sources         any address (enableSourceValidation is off)", lines)
        self.assertIn("per source      no limit (rateLimit.enable is false)", lines)
        self.assertIn("datagrams       up to 65507 bytes; larger ones are dropped", lines)
        self.assertIn(
            "de-duplication  a repeated datagram (same kind and executionId) within 10 min is dropped", lines
        )
        self.assertIn(
            "reloadTaskFailure: 2 webhooks, rate limit: at most one alert per task per 5 min", lines
        )
        self.assertIn("reloadTaskAborted: 1 webhook, no rate limit", lines)
        self.assertIn("  reloadTaskFailure.webhooks[0]: Teams channel", lines)
        self.assertIn("  reloadTaskAborted.webhooks[0]: (no description)", lines)
        self.assertIn("    POST http://127.0.0.1:18080/butler/***  (query string not shown)", lines)
        self.assertIn(
            "    GET https://hooks.example.com:443/services/***/***/***  (user info not shown)", lines
        )
        self.assertIn("    TLS none (http)", lines)
        self.assertIn("    TLS platform: the system's CA store", lines)
        self.assertIn(
            f"    TLS custom CA: only the 1 certificate in {self.caFile}; server name receiver.example", lines
        )
        self.assertIn("    timeout 3 s, concurrency 2", lines)
        self.assertIn("    timeout 10 s, concurrency 4", lines)
        self.assertIn("    attempts at 0 s, 1 min after the alert; given up after 10 min", lines)
        self.assertIn(
            "    attempts at 0 s, 5 s, 30 s, 2 min, 10 min, 30 min after the alert; given up after 1 h", lines
        )
        self.assertIn("    takes every alert", lines)
        self.assertIn("    sends format butler; no auth; not signed", lines)
        self.assertIn(
            "    sends format butler; headers X-Team; auth bearer; signed (Standard Webhooks)", lines
        )
        self.assertIn("    via proxy http://proxy.example.com:3128 (with credentials)", lines)
        for secret in ("HEADERSECRET", "TOKENSECRET", "PROXYSECRET", "MfKQ9r8G"):
            self.assertNotIn(secret, out)
        self.assertIn("    takes match taskName ~ '^Prod '; exclude hostName ~ '^dev-'", lines)
        self.assertIn("ignored sections: Butler.logLevel", lines)
        outbox = f"{self.stateDir}/outbox.sqlite3"
        self.assertIn(f"stateDir        {self.stateDir} (outbox {outbox}; created at start)", lines)
        # The one warning: this entry has both auth and user info in its URL.
        self.assertEqual([line for line in lines if "WARNING" in line], [lines[-1]])
        self.assertIn("webhooks[1].auth: webhookURL also holds a user name and password", lines[-1])

    def test_stateDirNotCreated(self) -> None:
        """check-config checks that the daemon could create the state directory, but does not."""
        status, _, _ = run_main("check-config", self.config)
        self.assertEqual(status, 0)
        self.assertFalse(os.path.exists(self.stateDir))

    def test_configOption(self) -> None:
        """``--config F`` works as well as the positional ``F``."""
        status, out, _ = run_main("check-config", "--config", self.config)
        self.assertEqual(status, 0)
        self.assertIn("Teams channel", out)

    def test_defaultFile(self) -> None:
        """Without a file, the documented default, /etc/butler-tw/butler.yaml, is read."""
        self.assertEqual(cli.DEFAULT_CONFIG, "/etc/butler-tw/butler.yaml")
        self.patch(cli, "DEFAULT_CONFIG", self.config)
        status, out, err = run_main("check-config")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out.splitlines()[0], f"{self.config}: valid")

    def test_twoFiles(self) -> None:
        usage = io.StringIO()
        self.patch(sys, "stderr", usage)
        self.assertRaises(SystemExit, run_main, "check-config", self.config, "-c", "/other.yaml")
        self.assertIn("two config files given", usage.getvalue())

    def test_reload(self) -> None:
        """--reload leaves out what the running daemon holds: its UDP port, say."""
        held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        held.bind(("127.0.0.1", self.udpPort))
        self.addCleanup(held.close)
        status, out, err = run_main("check-config", "-c", self.config)
        self.assertEqual((status, out), (EX_CONFIG, ""))
        self.assertEqual(
            err,
            f"butler-tw: cannot listen on UDP 127.0.0.1:{self.udpPort}: the port is in use "
            "(is Butler still running?)\n",
        )
        status, out, err = run_main("check-config", "-c", self.config, "--reload")
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(lines[0], f"{self.config}: valid for a reload (ports and stateDir not checked)")
        outbox = f"{self.stateDir}/outbox.sqlite3"
        self.assertIn(f"stateDir        {self.stateDir} (outbox {outbox}; not checked: --reload)", lines)

    def test_warnings(self) -> None:
        """Notifications off and an unverified certificate are called out."""
        doc = make_config(
            failure=[
                webhook(
                    "https://10.0.0.5/hook",
                    "POST",
                    "Insecure",
                    cert={"enable": True, "rejectUnauthorized": False, "certCA": self.caFile},
                )
            ],
            enable=False,
        )
        port = free_udp_port()
        doc["Butler"]["udpServerConfig"] = {"enable": True, "serverHost": "::", "portTaskFailure": port}
        doc["Butler"]["udpServerConfig"]["deduplication"] = {"enable": False}
        status, out, err = run_main("check-config", write_config(self, doc))
        self.assertEqual(status, 0, err)
        lines = out.splitlines()
        self.assertIn(f"UDP             [::]:{port} (every IPv4 and IPv6 address)", lines)
        self.assertIn("de-duplication  off", lines)
        self.assertIn("webhook calls   DISABLED", lines)
        self.assertIn("    TLS NO verification (cert.rejectUnauthorized: false)", lines)
        self.assertIn(
            "WARNING: Butler.webhookNotification.enable is false: alerts are received and counted,"
            " but nothing is sent",
            lines,
        )
        self.assertIn(
            "WARNING: reloadTaskFailure.webhooks[0] (Insecure) has cert.rejectUnauthorized: false: its server"
            " certificate is NOT verified, so anyone on the network path can read and change these alerts",
            lines,
        )
        self.assertIn("  (none: alerts of this kind are received and counted only)", lines)

    def test_intakeHardening(self) -> None:
        """The allow-list (names resolved), per-source limit and memory bound are shown."""
        doc = make_config(failure=[webhook("http://127.0.0.1/x", "POST")])
        doc["Butler"]["udpServerConfig"] = {
            "enable": True,
            "serverHost": "127.0.0.1",
            "portTaskFailure": free_udp_port(),
            "enableSourceValidation": True,
            "allowedSources": ["10.0.0.0/8", "192.168.1.100", "localhost", "gone.invalid"],
            "rateLimit": {"enable": True, "maxMessagesPerMinute": 120},
            "messageQueue": {"maxSize": 200},
        }
        doc["butlerWebhook"] = {"maxBufferedAlerts": 5000}
        status, out, err = run_main("check-config", write_config(self, doc))
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        (sources,) = [line for line in lines if line.startswith("sources ")]
        self.assertIn("only 10.0.0.0/8, 192.168.1.100, localhost (", sources)
        self.assertIn("127.0.0.1", sources)
        self.assertIn("gone.invalid (does NOT resolve now)", sources)
        self.assertIn("per source      at most 120 datagrams a minute", lines)
        self.assertIn("memory bound    5000 alerts waiting for the outbox; then new ones are shed", lines)

    def test_allowListFailsClosed(self) -> None:
        """As the daemon: validation on and nothing usable is an error, exit 78."""
        doc = make_config()
        doc["Butler"]["udpServerConfig"] = {
            "enable": True,
            "serverHost": "127.0.0.1",
            "portTaskFailure": free_udp_port(),
            "enableSourceValidation": True,
            "allowedSources": ["gone.invalid"],
        }
        status, out, err = run_main("check-config", write_config(self, doc))
        self.assertEqual((status, out), (EX_CONFIG, ""))
        self.assertIn("butler-tw: Butler.udpServerConfig.allowedSources: no entry is usable", err)

    def test_problems(self) -> None:
        """Every problem on stderr, with its key path, and exit status 78; nothing on stdout."""
        doc = make_config(
            failure=[
                webhook("http://127.0.0.1/x?token=QUERYSECRET", "DELETE"),
                webhook(
                    "https://127.0.0.1/y",
                    "POST",
                    cert={"enable": True, "certCA": "/nonexistent/ca.pem"},
                ),
            ],
            butlerWebhook={"stateDir": self.stateDir},
        )
        status, out, err = run_main("check-config", write_config(self, doc))
        self.assertEqual((status, out), (EX_CONFIG, ""))
        self.assertIn("2 problems in the configuration", err)
        self.assertIn(
            "  - Butler.webhookNotification.reloadTaskFailure.webhooks[0].httpMethod: "
            "must be GET, POST or PUT (any case), got 'DELETE'",
            err.splitlines(),
        )
        self.assertIn(
            "  - Butler.webhookNotification.reloadTaskFailure.webhooks[1].cert.certCA: "
            "file not found: /nonexistent/ca.pem",
            err.splitlines(),
        )
        self.assertNotIn("QUERYSECRET", err)
        self.assertFalse(os.path.exists(self.stateDir))

    def test_unreadable(self) -> None:
        status, out, err = run_main("check-config", "/nonexistent/butler.yaml")
        self.assertEqual((status, out), (EX_CONFIG, ""))
        self.assertIn("/nonexistent/butler.yaml: 1 problem", err)
        self.assertIn("cannot read the file", err)
