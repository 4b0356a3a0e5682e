"""``butler-tw check-config``, ``send-test``, ``emit`` and ``receive``.

``send-test`` and ``receive`` run on the real reactor against real loopback
servers, through :func:`butler_tw.cli.main_on_reactor` and
:func:`butler_tw.tryout.listen_receiver` (``react()`` cannot run inside
trial); a few tests also run the installed command as a subprocess, as an
admin would. ``emit`` sends to a real UDP socket.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shlex
import signal
import socket
import sys
from typing import Any
from urllib.parse import parse_qsl

import treq
import trustme
import yaml
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from butler_tw.channels.butler import build_request
from butler_tw.cli import main as cli
from butler_tw.cli import tryout
from butler_tw.cli.main import main, main_on_reactor
from butler_tw.config import TlsSettings, TrustMode
from butler_tw.core.alert import EventKind
from butler_tw.core.redact import redact_url
from butler_tw.core.retry import Outcome
from butler_tw.core.wireformat import Parsed, parse
from butler_tw.core.words import admin_command
from butler_tw.daemon.startup import EX_CONFIG
from tests.support import REPO
from tests.support.daemon import free_udp_port, make_config, webhook
from tests.support.receivers import (
    closed_port,
    listen_http,
    listen_https,
    make_alert,
    make_webhook,
    start_client,
    write_pems,
)

HERE = str(REPO)

#: Secrets planted in webhook URLs: none may appear in any output.
SECRETS = ("QUERYSECRET", "PASSWORDSECRET", "alice", "PATHSECRET")


def write_config(testCase: TestCase | SynchronousTestCase, doc: dict[str, Any]) -> str:
    """``doc`` (a :func:`make_config` document) with a UDP section, as a YAML file.

    The UDP port is one free now (check-config tries to bind it), unless ``doc`` has one.
    """
    udp = doc["Butler"].setdefault("udpServerConfig", {"enable": True, "serverHost": "127.0.0.1"})
    udp.setdefault("portTaskFailure", free_udp_port())
    path = testCase.mktemp() + ".yaml"
    with open(path, "w") as f:
        yaml.safe_dump(doc, f)
    return path


def run_main(*argv: str) -> tuple[int, str, str]:
    """``butler-tw ARGV`` for the commands that need no reactor: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def run_command(*argv: str) -> Deferred[tuple[int, str, str]]:
    """``butler-tw ARGV`` on the running reactor: fires with (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    d = main_on_reactor(list(argv), reactor, out, err)
    return d.addCallback(lambda status: (status, out.getvalue(), err.getvalue()))


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    return env


# --------------------------------------------------------------------------
# check-config


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
                ),
            ],
            aborted=[
                webhook(
                    self.urls[2],
                    "PUT",
                    cert={"enable": True, "rejectUnauthorized": True, "certCA": self.caFile},
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
        self.assertIn(f"    TLS custom CA: only the 1 certificate in {self.caFile}", lines)
        self.assertIn("    timeout 3 s, concurrency 2", lines)
        self.assertIn("    timeout 10 s, concurrency 4", lines)
        self.assertIn("    attempts at 0 s, 1 min after the alert; given up after 10 min", lines)
        self.assertIn(
            "    attempts at 0 s, 5 s, 30 s, 2 min, 10 min, 30 min after the alert; given up after 1 h", lines
        )
        self.assertIn("ignored sections: Butler.logLevel", lines)
        outbox = f"{self.stateDir}/outbox.sqlite3"
        self.assertIn(f"stateDir        {self.stateDir} (outbox {outbox}; created at start)", lines)
        self.assertNotIn("WARNING", out)

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


class ConfigOptionTests(TestCase):
    """Every command that reads the config takes ``-c F`` and ``--config F``, and defaults to the same file."""

    #: Each command that reads the config, with the arguments it needs besides.
    COMMANDS = (
        ("check-config",),
        ("deliveries",),
        ("replay", "--all-dead"),
        ("emit",),
        ("send-test",),
    )

    def setUp(self) -> None:
        doc = make_config()
        doc["Butler"]["udpServerConfig"] = {"enable": True, "serverHost": "127.0.0.1", "portTaskFailure": "x"}
        self.broken = write_config(self, doc)

    @inlineCallbacks
    def run_any(self, *argv: str) -> Any:
        if argv[0] == "send-test":
            result = yield run_command(*argv)
            return result
        return run_main(*argv)

    @inlineCallbacks
    def assertReads(self, path: str, *argv: str) -> Any:
        """``argv`` read ``path``: its config error, with the key path, and exit status 78."""
        status, out, err = yield self.run_any(*argv)
        self.assertEqual((status, out), (EX_CONFIG, ""), (argv, err))
        self.assertIn(f"butler-tw: {path}: 1 problem", err, argv)
        self.assertIn("Butler.udpServerConfig.portTaskFailure", err, argv)

    @inlineCallbacks
    def test_shortAndLong(self) -> Any:
        for command, *rest in self.COMMANDS:
            for flag in ("-c", "--config"):
                yield self.assertReads(self.broken, command, flag, self.broken, *rest)

    @inlineCallbacks
    def test_oneDefault(self) -> Any:
        self.assertEqual(cli.DEFAULT_CONFIG, "/etc/butler-tw/butler.yaml")
        self.patch(cli, "DEFAULT_CONFIG", self.broken)
        for argv in self.COMMANDS:
            yield self.assertReads(self.broken, *argv)

    def test_daemonTheSame(self) -> None:
        """``twistd butler-webhook`` takes -c/--config too, with the same default."""
        from butler_tw.daemon.startup import DEFAULT_CONFIG
        from butler_tw.daemon.tap import Options

        self.assertEqual(Options()["config"], DEFAULT_CONFIG)
        for flag in ("-c", "--config"):
            stderr = io.StringIO()
            self.patch(sys, "stderr", stderr)
            e = self.assertRaises(SystemExit, Options().parseOptions, [flag, self.broken])
            self.assertEqual(e.code, EX_CONFIG)
            self.assertIn(f"butler-webhook: {self.broken}: 1 problem", stderr.getvalue())

    def test_emitToTheConfiguredPort(self) -> None:
        """``emit -c F`` without HOST:PORT sends where F's daemon listens (loopback for 0.0.0.0)."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        doc = make_config()
        doc["Butler"]["udpServerConfig"] = {
            "enable": True,
            "serverHost": "0.0.0.0",  # noqa: S104
            "portTaskFailure": s.getsockname()[1],
        }
        status, out, err = run_main("emit", "-c", write_config(self, doc))
        self.assertEqual((status, err), (0, ""))
        self.assertIn(f"to 127.0.0.1:{s.getsockname()[1]}", out)
        self.assertIsInstance(parse(s.recv(65535)), Parsed)

    def test_adminCommandsParse(self) -> None:
        """The commands log lines build (``words.admin_command``) parse, with the config they name."""
        for path in (cli.DEFAULT_CONFIG, "/srv/qlik butler/production.yaml"):
            for line in (
                admin_command(path, "deliveries", "--state", "dead"),
                admin_command(path, "replay", "0123abcd"),  # an alert id: all its deliveries
            ):
                argv = shlex.split(line)
                self.assertEqual(argv[0], "butler-tw")
                args = cli.build_parser().parse_args(argv[1:])
                self.assertEqual(args.config, path, line)

    def test_suggestedCommandsParse(self) -> None:
        """Every command line a message of the package quotes (`` `butler-tw X ARGS` `` or in
        parentheses) parses as printed; a bare `` `butler-tw replay` `` names a command, not a line."""
        found: list[str] = []
        for path in sorted((REPO / "butler_tw").rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docstrings = {
                id(node.value)
                for node in ast.walk(tree)
                if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            }
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and id(node) not in docstrings
                ):
                    found += re.findall(r"(?<![`\w])[`(]butler-tw ([^`)]+)[`)]", node.value)
        self.assertIn("replay", found)
        for line in found:
            argv = re.sub(r"\{\w+\}", "0123abcd", line).split()
            if len(argv) == 1:
                continue
            args = cli.build_parser().parse_args(argv)
            self.assertEqual(getattr(args, "config", cli.DEFAULT_CONFIG), cli.DEFAULT_CONFIG, line)


# --------------------------------------------------------------------------
# send-test


class SendTestTests(TestCase):
    timeout = 30

    def config(self, failure: Any = (), aborted: Any = (), **kwargs: Any) -> str:
        return write_config(self, make_config(failure=failure, aborted=aborted, **kwargs))

    @inlineCallbacks
    def test_delivered(self) -> Any:
        """A marked test alert arrives; the table shows the 200, the redacted URL and the latency."""
        receiver = listen_http(self)
        url = receiver.url("/butler/failed?token=QUERYSECRET")
        config = self.config([webhook(url, "POST", "Teams channel")])
        status, out, err = yield run_command("send-test", config)
        self.assertEqual((status, err), (0, ""))
        (request,) = receiver.requests
        self.assertEqual((request.method, request.path), ("POST", "/butler/failed"))
        body = json.loads(request.body)
        self.assertEqual(body["event"], "Qlik Sense reload failed")
        self.assertEqual(body["taskName"], tryout.TEST_TASK_NAME)
        self.assertEqual(body["taskName"], "butler-tw test alert")
        self.assertEqual(body["taskId"], tryout.TEST_TASK_ID)
        self.assertIn("TEST ALERT", body["logMessage"])
        self.assertIn("no reload failed", body["logMessage"])
        self.assertIn(body["executionId"], out)
        self.assertIn(request.header("webhook-id"), out)
        header, row = [line for line in out.splitlines() if line.startswith(("WEBHOOK", "Teams"))]
        self.assertEqual(header.split(), ["WEBHOOK", "METHOD", "URL", "TLS", "RESULT", "LATENCY"])
        self.assertRegex(
            row,
            r"^Teams channel  POST    http://127\.0\.0\.1:\d+/butler/\*\*\*  none \(http\)  HTTP 200  \d+ ms$",
        )
        self.assertIn(redact_url(url), row)
        self.assertIn("the webhook answered 2xx", out)
        self.assertNotIn("QUERYSECRET", out)

    @inlineCallbacks
    def test_freshExecutionId(self) -> Any:
        """Each test alert is a new one: a fresh executionId, so a fresh webhook-id."""
        receiver = listen_http(self)
        config = self.config([webhook(receiver.url("/hook"))])
        yield run_command("send-test", config)
        yield run_command("send-test", config)
        first, second = (json.loads(r.body) for r in receiver.requests)
        self.assertNotEqual(first["executionId"], second["executionId"])
        self.assertNotEqual(
            receiver.requests[0].header("webhook-id"), receiver.requests[1].header("webhook-id")
        )
        self.assertEqual(first["taskId"], second["taskId"])

    @inlineCallbacks
    def test_connectionRefused(self) -> Any:
        config = self.config([webhook(f"http://127.0.0.1:{closed_port()}/hook", "POST", "Down")])
        status, out, _ = yield run_command("send-test", config)
        self.assertEqual(status, 1)
        self.assertRegex(
            out, r"\nDown +POST +http://127\.0\.0\.1:\d+/\*\*\* +none \(http\) +connection refused +\d+ ms\n"
        )
        self.assertIn("1 of 1 webhook did not answer 2xx", out)

    @inlineCallbacks
    def test_errorStatusWithHint(self) -> Any:
        """A failing status comes with the daemon's hint; any non-2xx is exit status 1."""
        ok, missing = listen_http(self), listen_http(self, 404)
        config = self.config(
            [webhook(ok.url("/a"), "POST", "Fine"), webhook(missing.url("/b"), "PUT", "Gone")]
        )
        status, out, _ = yield run_command("send-test", config)
        self.assertEqual(status, 1)
        self.assertIn("HTTP 404: check the URL", out)
        self.assertIn("HTTP 200", out)
        self.assertIn("1 of 2 webhooks did not answer 2xx", out)
        self.assertEqual((len(ok.requests), len(missing.requests)), (1, 1))

    @inlineCallbacks
    def test_untrustedCertificate(self) -> Any:
        """An HTTPS receiver whose certificate the system store does not trust: the TLS error, plainly."""
        receiver = listen_https(self, trustme.CA().issue_cert("127.0.0.1"))
        config = self.config([webhook(receiver.url("/hook?token=QUERYSECRET"), "POST", "Self-signed")])
        status, out, _ = yield run_command("send-test", config)
        self.assertEqual(status, 1)
        self.assertIn("TLS: certificate verification failed (untrusted or expired)", out)
        self.assertRegex(
            out, r"\nSelf-signed +POST +https://127\.0\.0\.1:\d+/\*\*\* +platform: FAILED +TLS: "
        )
        self.assertEqual(receiver.requests, [])
        self.assertNotIn("QUERYSECRET", out)

    @inlineCallbacks
    def test_customCaVerified(self) -> Any:
        ca = trustme.CA()
        receiver = listen_https(self, ca.issue_cert("127.0.0.1"))
        caFile = write_pems(self, ca.cert_pem.bytes())  # type: ignore[arg-type]
        config = self.config(
            [webhook(receiver.url("/hook"), "POST", "Private", cert={"enable": True, "certCA": caFile})]
        )
        status, out, _ = yield run_command("send-test", config)
        self.assertEqual(status, 0)
        self.assertRegex(
            out, r"\nPrivate +POST +https://127\.0\.0\.1:\d+/\*\*\* +custom CA: verified +HTTP 200 "
        )
        self.assertEqual(len(receiver.requests), 1)

    @inlineCallbacks
    def test_webhookFilter(self) -> Any:
        """``--webhook`` picks one webhook, by description or by key."""
        first, second = listen_http(self), listen_http(self)
        config = self.config(
            [
                webhook(first.url("/first"), "POST", "First hook"),
                webhook(second.url("/second"), "POST", "Second hook"),
            ]
        )
        status, out, _ = yield run_command("send-test", config, "--webhook", "Second hook")
        self.assertEqual(status, 0)
        self.assertEqual((len(first.requests), len(second.requests)), (0, 1))
        self.assertIn("Second hook", out)
        self.assertNotIn("First hook", out)
        status, out, _ = yield run_command(
            "send-test", "--config", config, "--webhook", "reloadTaskFailure.webhooks[0]"
        )
        self.assertEqual(status, 0)
        self.assertEqual((len(first.requests), len(second.requests)), (1, 1))
        self.assertIn("First hook", out)
        self.assertNotIn("Second hook", out)

    @inlineCallbacks
    def test_unknownWebhook(self) -> Any:
        receiver = listen_http(self)
        config = self.config([webhook(receiver.url("/x"), "POST", "Teams")])
        status, out, err = yield run_command("send-test", config, "--webhook", "Slack")
        self.assertEqual((status, out), (2, ""))
        self.assertIn(
            "no webhook in reloadTaskFailure or reloadTaskAborted has the name, description or key 'Slack'",
            err,
        )
        self.assertIn("'Teams' (reloadTaskFailure.webhooks[0])", err)
        self.assertEqual(receiver.requests, [])

    @inlineCallbacks
    def test_abortedEvent(self) -> Any:
        """``--event aborted`` calls the reloadTaskAborted webhooks only, with an aborted alert."""
        failed, aborted = listen_http(self), listen_http(self)
        config = self.config(
            [webhook(failed.url("/failed"), "POST", "On failure")],
            [webhook(aborted.url("/aborted?source=QUERYSECRET"), "GET", "On abort")],
        )
        status, out, _ = yield run_command("send-test", config, "--event", "aborted")
        self.assertEqual(status, 0)
        self.assertEqual(failed.requests, [])
        (request,) = aborted.requests
        query = dict(parse_qsl(request.query))
        self.assertEqual(query["source"], "QUERYSECRET")
        self.assertEqual(query["event"], "Qlik Sense reload aborted")
        self.assertEqual(query["taskName"], "butler-tw test alert")
        self.assertIn("no reload was aborted", query["logMessage"])
        self.assertIn("sent now to 1 reloadTaskAborted webhook,", out)
        self.assertNotIn("QUERYSECRET", out)

    @inlineCallbacks
    def test_webhookOfTheOtherKind(self) -> Any:
        """Named without --event, a webhook gets an alert of its own block's kind; with the wrong one, a hint."""
        aborted = listen_http(self)
        config = self.config([], [webhook(aborted.url("/aborted"), "POST", "On abort")])
        status, _, err = yield run_command("send-test", config, "--event", "failed", "--webhook", "On abort")
        self.assertEqual(status, 2)
        self.assertIn("(it is in reloadTaskAborted: use --event aborted)", err)
        self.assertEqual(aborted.requests, [])
        status, _, _ = yield run_command("send-test", config, "--webhook", "On abort")
        self.assertEqual(status, 0)
        self.assertEqual(json.loads(aborted.requests[0].body)["event"], "Qlik Sense reload aborted")

    @inlineCallbacks
    def test_noWebhooks(self) -> Any:
        status, out, err = yield run_command("send-test", self.config())
        self.assertEqual((status, out), (2, ""))
        self.assertIn("no webhooks are configured in reloadTaskFailure: nothing to test", err)

    @inlineCallbacks
    def test_notificationsDisabled(self) -> Any:
        """The webhooks are tested even when the daemon would send nothing, with a note saying so."""
        receiver = listen_http(self)
        config = self.config([webhook(receiver.url("/x"))], enable=False)
        status, out, _ = yield run_command("send-test", config)
        self.assertEqual(status, 0)
        self.assertIn("Butler.webhookNotification.enable is false", out)
        self.assertEqual(len(receiver.requests), 1)

    @inlineCallbacks
    def test_invalidConfig(self) -> Any:
        config = self.config([webhook("http://127.0.0.1/x", "DELETE")])
        status, out, err = yield run_command("send-test", config)
        self.assertEqual((status, out), (EX_CONFIG, ""))
        self.assertIn("httpMethod: must be GET, POST or PUT", err)

    @inlineCallbacks
    def test_commandLine(self) -> Any:
        """``butler-tw send-test`` as an admin runs it: a process of its own, exit status 0, then 1."""
        receiver = listen_http(self)
        config = self.config([webhook(receiver.url("/x?token=QUERYSECRET"), "POST", "Up")])
        args = ["-m", "butler_tw.cli", "send-test", config]
        out, err, status = yield getProcessOutputAndValue(sys.executable, args, env=subprocess_env())
        self.assertEqual((status, err), (0, b""))
        self.assertRegex(
            out.decode(), r"\nUp +POST +http://127\.0\.0\.1:\d+/\*\*\* +none \(http\) +HTTP 200 "
        )
        self.assertEqual(len(receiver.requests), 1)
        self.assertNotIn(b"QUERYSECRET", out)
        yield receiver.stop()
        out, err, status = yield getProcessOutputAndValue(sys.executable, args, env=subprocess_env())
        self.assertEqual(status, 1)
        self.assertIn(b"connection refused", out)


# --------------------------------------------------------------------------
# emit


class EmitTests(SynchronousTestCase):
    def listen(self, family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
        s = socket.socket(family, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.bind((host, 0))
        s.settimeout(5)
        return s

    def receive(self, s: socket.socket, count: int) -> list[bytes]:
        datagrams = [s.recv(65535) for _ in range(count)]
        s.settimeout(0.2)
        self.assertRaises(socket.timeout, s.recv, 65535)  # no more than count
        return datagrams

    def test_failed(self) -> None:
        """Sample failure datagrams that the daemon's parser takes as alerts, each a new execution."""
        s = self.listen()
        port = s.getsockname()[1]
        status, out, err = run_main("emit", f"127.0.0.1:{port}", "--count", "3")
        self.assertEqual((status, err), (0, ""))
        datagrams = self.receive(s, 3)
        executions = set()
        for data in datagrams:
            result = parse(data)
            assert isinstance(result, Parsed), result
            self.assertIsNone(result.note)
            alert = result.alert
            self.assertEqual(alert.kind, EventKind.FAILED)
            self.assertEqual(alert.taskId, tryout.SAMPLE_TASK_ID)
            self.assertEqual(alert.taskName, "Reload of butler-tw sample app")
            self.assertEqual(alert.logMessage, "Max retries reached")
            self.assertEqual(alert.logLevel, "INFO")
            self.assertRegex(alert.logTimeStamp, r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}$")
            self.assertTrue(data.startswith(b"/scheduler-task-failed/;"))
            self.assertEqual(data.count(b";"), 10)
            self.assertIn(data.decode(), out)
            executions.add(alert.executionId)
        self.assertEqual(len(executions), 3)
        self.assertIn(f"sent 3/3 to 127.0.0.1:{port}", out)

    def test_abortedWithTaskId(self) -> None:
        s = self.listen()
        task = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
        status, _, _ = run_main(
            "emit", f"127.0.0.1:{s.getsockname()[1]}", "--event", "aborted", "--task-id", task
        )
        self.assertEqual(status, 0)
        (data,) = self.receive(s, 1)
        self.assertTrue(data.startswith(b"/scheduler-task-aborted/;"))
        result = parse(data)
        assert isinstance(result, Parsed), result
        self.assertEqual(result.alert.kind, EventKind.ABORTED)
        self.assertEqual(result.alert.taskId, task)
        self.assertEqual(result.alert.logMessage, "Execution State Change to Aborting")

    def test_ipv6(self) -> None:
        try:
            s = self.listen(socket.AF_INET6, "::1")
        except OSError:
            raise self.skipTest("no IPv6 loopback here") from None
        port = s.getsockname()[1]
        status, out, _ = run_main("emit", f"[::1]:{port}")
        self.assertEqual(status, 0)
        (data,) = self.receive(s, 1)
        self.assertIsInstance(parse(data), Parsed)
        self.assertIn(f"sent 1/1 to [::1]:{port}", out)

    def test_badTargets(self) -> None:
        for target, message in [
            ("::1:9998", "put an IPv6 address in brackets"),
            ("127.0.0.1", "expected HOST:PORT"),
            (":9998", "expected HOST:PORT"),
            ("127.0.0.1:0", "the port must be a number 1-65535"),
            ("127.0.0.1:70000", "the port must be a number 1-65535"),
            ("[::1]:x", "the port must be a number 1-65535, got 'x'"),
            ("[::1]", "expected [IPv6]:PORT"),
            ("[]:9998", "expected [IPv6]:PORT"),
        ]:
            status, out, err = run_main("emit", target)
            self.assertEqual((status, out), (2, ""), target)
            self.assertIn(message, err, target)

    def test_badCount(self) -> None:
        status, out, err = run_main("emit", "127.0.0.1:9998", "--count", "0")
        self.assertEqual((status, out), (2, ""))
        self.assertIn("--count must be at least 1", err)

    def test_nonGuidTaskIdWarned(self) -> None:
        """Sent anyway (to try the daemon's rejection), with a warning."""
        s = self.listen()
        status, _, err = run_main("emit", f"127.0.0.1:{s.getsockname()[1]}", "--task-id", "not-a-guid")
        self.assertEqual(status, 0)
        self.assertIn("is not a lowercase GUID: the daemon will reject these datagrams", err)
        (data,) = self.receive(s, 1)
        self.assertNotIsInstance(parse(data), Parsed)


# --------------------------------------------------------------------------
# receive


class ReceiveTests(TestCase):
    timeout = 30

    def start(self, **kwargs: Any) -> tuple[tryout.RunningReceiver, io.StringIO]:
        out = io.StringIO()
        running = tryout.listen_receiver(reactor, out, port=0, **kwargs)
        self.addCleanup(running.stop)
        return running, out

    def pool(self) -> HTTPConnectionPool:
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        return pool

    @inlineCallbacks
    def test_postJson(self) -> Any:
        """A JSON body is printed pretty, with the method, path and webhook-id."""
        running, out = self.start()
        body = {"event": "Qlik Sense reload failed", "taskName": "Reload sales", "n": [1, 2]}
        response = yield treq.post(
            running.url + "butler/failed",
            data=json.dumps(body).encode(),
            headers={"webhook-id": "msg_0123abcd", "Content-Type": "application/json"},
            pool=self.pool(),
        )
        self.assertEqual(response.code, 200)
        yield treq.content(response)
        text = out.getvalue()
        self.assertRegex(text, r"\n--- \d\d:\d\d:\d\d  POST /butler/failed  \(from 127\.0\.0\.1\)\n")
        self.assertIn("\nwebhook-id: msg_0123abcd\n", text)
        self.assertIn("\ncontent-type: application/json\n", text)
        self.assertIn(
            "body (JSON):\n{\n"
            '  "event": "Qlik Sense reload failed",\n'
            '  "taskName": "Reload sales",\n'
            '  "n": [\n    1,\n    2\n  ]\n}\n',
            text,
        )
        self.assertEqual(running.requests, 1)

    @inlineCallbacks
    def test_getQuery(self) -> Any:
        """Query fields one per line, decoded; control characters escaped, never printed raw."""
        running, out = self.start()
        response = yield treq.get(
            running.url + "butler/aborted?source=butler-tw&event=Qlik+Sense+reload+aborted&evil=%1b%5B31m",
            pool=self.pool(),
        )
        self.assertEqual(response.code, 200)
        yield treq.content(response)
        text = out.getvalue()
        self.assertIn("GET /butler/aborted  (from 127.0.0.1)\n", text)
        self.assertIn(
            "query:\n  source = butler-tw\n  event = Qlik Sense reload aborted\n  evil = \\x1b[31m\n", text
        )
        self.assertNotIn("\x1b", text)

    @inlineCallbacks
    def test_otherBodies(self) -> Any:
        running, out = self.start()
        pool = self.pool()
        response = yield treq.put(running.url + "x", data=b"plain\x07text", pool=pool)
        yield treq.content(response)
        response = yield treq.post(running.url + "y", data=b"", pool=pool)
        yield treq.content(response)
        text = out.getvalue()
        self.assertIn("body (10 bytes, not JSON):\nplain\\x07text\n", text)
        self.assertIn("POST /y  (from 127.0.0.1)\n(no body)\n", text)

    @inlineCallbacks
    def test_authorizationNotShown(self) -> Any:
        running, out = self.start()
        response = yield treq.post(
            running.url + "x", data=b"{}", headers={"Authorization": "Bearer TOKENSECRET"}, pool=self.pool()
        )
        yield treq.content(response)
        self.assertIn("authorization: (present, not shown)", out.getvalue())
        self.assertNotIn("TOKENSECRET", out.getvalue())

    @inlineCallbacks
    def test_status(self) -> Any:
        """``--status`` makes the receiver answer something else, to watch the daemon retry."""
        running, out = self.start(status=503)
        response = yield treq.post(running.url, data=b"{}", pool=self.pool())
        self.assertEqual(response.code, 503)
        yield treq.content(response)
        self.assertIn("answering 503", out.getvalue())

    @inlineCallbacks
    def test_tls(self) -> Any:
        """--tls: a throwaway certificate whose CA, written where printed, makes a client trust it."""
        certDir = self.mktemp()
        running, out = self.start(tls=True, certDir=certDir)
        caFile = os.path.abspath(os.path.join(certDir, "ca.pem"))
        self.assertEqual(running.caFile, caFile)
        self.assertIn(f"Its CA, for the webhook's cert block: {caFile}\n", out.getvalue())
        self.assertIn(f"      certCA: {caFile}\n", out.getvalue())
        self.assertTrue(running.url.startswith("https://127.0.0.1:"))
        with open(caFile, "rb") as f:
            ca = f.read()
        self.assertNotIn(b"PRIVATE KEY", ca)
        trusted = TlsSettings(mode=TrustMode.CUSTOM_CA, caCertificates=(ca,))
        alert = make_alert()
        for host in ("127.0.0.1", "localhost"):
            hook = make_webhook(running.url.replace("127.0.0.1", host) + "hook", tls=trusted)
            outcome = yield start_client(self, hook).send(build_request(alert, hook, 1700000000))
            self.assertEqual(outcome, Outcome(status=200), host)
        self.assertIn("POST /hook", out.getvalue())
        untrusting = make_webhook(running.url + "hook", key="other")
        outcome = yield start_client(self, untrusting).send(build_request(alert, untrusting, 1700000000))
        self.assertTrue(outcome.tlsFailure)
        self.assertEqual(running.requests, 2)

    @inlineCallbacks
    def test_sendTestToReceive(self) -> Any:
        """The loop: send-test to a config pointing at receive; the receiver prints the test alert."""
        running, out = self.start()
        doc = make_config(failure=[webhook(running.url + "butler/failed?token=QUERYSECRET", "POST", "Local")])
        status, table, _ = yield run_command("send-test", write_config(self, doc))
        self.assertEqual(status, 0)
        self.assertIn("HTTP 200", table)
        text = out.getvalue()
        self.assertIn("POST /butler/failed", text)
        self.assertIn("query:\n  token = QUERYSECRET\n", text)  # the receiver is the URL's owner
        self.assertIn('  "taskName": "butler-tw test alert",\n', text)
        self.assertIn('  "taskId": "' + tryout.TEST_TASK_ID + '",\n', text)

    @inlineCallbacks
    def test_cannotListen(self) -> Any:
        """A port in use: a plain message and exit status 1, not a traceback."""
        busy = listen_http(self)
        status, out, err = yield run_command("receive", "--host", "127.0.0.1", "--port", str(busy.port))
        self.assertEqual((status, out), (1, ""))
        self.assertIn(f"butler-tw receive: cannot listen on 127.0.0.1:{busy.port}: ", err)
        self.assertIn("in use", err)

    @inlineCallbacks
    def test_badArguments(self) -> Any:
        for args in (["--port", "70000"], ["--status", "1000"]):
            status, out, err = yield run_command("receive", *args)
            self.assertEqual((status, out), (2, ""), args)
            self.assertIn("--port must be 0-65535 and --status an HTTP status", err)

    @inlineCallbacks
    def test_commandLine(self) -> Any:
        """``butler-tw receive`` as a process: prints requests, stops on Ctrl-C (SIGINT) with status 0."""
        port = closed_port()
        process = _Collect()
        transport = reactor.spawnProcess(
            process,
            sys.executable,
            [sys.executable, "-m", "butler_tw.cli", "receive", "--port", str(port)],
            env=subprocess_env(),
        )
        self.addCleanup(lambda: process.ended if process.ended.called else _kill(transport, process))
        yield process.waitFor(b"Ctrl-C stops")
        response = yield treq.post(
            f"http://127.0.0.1:{port}/hook",
            data=b'{"a": 1}',
            headers={"webhook-id": "msg_x"},
            pool=self.pool(),
        )
        self.assertEqual(response.code, 200)
        yield treq.content(response)
        yield process.waitFor(b'"a": 1')
        transport.signalProcess("INT")
        status = yield process.ended
        self.assertEqual(status, 0)
        text = process.out.decode()
        self.assertIn(f"listening on http://127.0.0.1:{port}/", text)
        self.assertIn("webhook-id: msg_x", text)
        self.assertIn("butler-tw receive: stopped, 1 request received", text)
        self.assertEqual(process.err, b"")


class _Collect(ProcessProtocol):
    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred[int] = Deferred()
        self._waiting: list[tuple[bytes, Deferred[None]]] = []

    def waitFor(self, text: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._waiting.append((text, d))
        self._check()
        return d.addTimeout(10, reactor)

    def _check(self) -> None:
        still = []
        for text, d in self._waiting:
            if text in self.out:
                d.callback(None)
            else:
                still.append((text, d))
        self._waiting = still

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


def _kill(transport: Any, process: _Collect) -> Deferred[int]:
    transport.signalProcess(signal.SIGKILL)
    return process.ended
