"""``butler-tw send-test``, on the real reactor against real loopback HTTP and HTTPS servers.

Through :func:`butler_tw.cli.main.main_on_reactor` (``react()`` cannot run
inside trial); one test also runs the command as a process of its own.
"""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import parse_qsl

import trustme
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from butler_tw.channels.signing import verify
from butler_tw.cli import sendtest
from butler_tw.core.redact import redact_url
from butler_tw.daemon.startup import EX_CONFIG
from tests.support.cli import run_command, write_config
from tests.support.daemon import make_config, webhook
from tests.support.processes import subprocess_env
from tests.support.receivers import (
    closed_port,
    listen_http,
    listen_https,
    write_pems,
)


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
        self.assertEqual(body["taskName"], sendtest.TEST_TASK_NAME)
        self.assertEqual(body["taskName"], "butler-tw test alert")
        self.assertEqual(body["taskId"], sendtest.TEST_TASK_ID)
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
    def test_asItReallyGoesOut(self) -> Any:
        """Each webhook's format, headers, auth and signature: a Teams card, a signed bearer call."""
        receiver = listen_http(self)
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        config = self.config(
            [
                webhook(receiver.url("/teams"), "POST", "Teams", format="teams"),
                webhook(
                    receiver.url("/api"),
                    "POST",
                    "API",
                    auth={"type": "bearer", "token": "TOKENSECRET"},
                    headers={"X-Team": "qlik"},
                    signing={"secret": secret},
                    body={"summary": "{{ taskName }} {{ kind }}"},
                ),
            ]
        )
        status, out, err = yield run_command("send-test", config)
        self.assertEqual((status, err), (0, ""), out)
        byPath = {r.path: r for r in receiver.requests}
        card = json.loads(byPath["/teams"].body)
        self.assertEqual(card["type"], "message")
        self.assertEqual(card["attachments"][0]["content"]["type"], "AdaptiveCard")
        api = byPath["/api"]
        self.assertEqual(json.loads(api.body), {"summary": "butler-tw test alert failed"})
        self.assertEqual(api.header("authorization"), "Bearer TOKENSECRET")
        self.assertEqual(api.header("x-team"), "qlik")
        headers = {k: api.header(k) or "" for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
        self.assertIsNone(verify(secret, headers, api.body, now=float(headers["webhook-timestamp"])))
        self.assertNotIn("TOKENSECRET", out)

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
