"""``butler-tw receive``, through :func:`butler_tw.cli.receive.listen_receiver` on the real reactor.

Real clients (treq, the daemon's own webhook client) call it over loopback;
one test runs the command as a process of its own and stops it with Ctrl-C.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from typing import Any

import attrs
import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from butler_tw.channels.butler import build_request
from butler_tw.channels.request import build_request as build_signed
from butler_tw.cli import receive, sendtest
from butler_tw.config import TlsSettings, TrustMode
from butler_tw.config.headers import signing_key
from butler_tw.core.retry import Outcome
from tests.support.cli import run_command, write_config
from tests.support.daemon import make_config, webhook
from tests.support.processes import Collect, kill, subprocess_env
from tests.support.receivers import (
    closed_port,
    listen_http,
    make_alert,
    make_webhook,
    start_client,
)


class ReceiveTests(TestCase):
    timeout = 30

    def start(self, **kwargs: Any) -> tuple[receive.RunningReceiver, io.StringIO]:
        out = io.StringIO()
        running = receive.listen_receiver(reactor, out, port=0, **kwargs)
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
    def test_verifySecret(self) -> Any:
        """--verify-secret: a request the daemon signed is valid, a tampered or unsigned one says why."""
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        running, out = self.start(verifySecret=secret)
        hook = attrs.evolve(make_webhook(running.url + "hook"), signingKey=signing_key(secret))
        request = build_signed(make_alert(), hook, int(time.time()))
        outcome = yield start_client(self, hook).send(request)
        self.assertEqual(outcome.status, 200)
        tampered = attrs.evolve(request, body=(request.body or b"") + b" ")
        yield start_client(self, hook).send(tampered)
        response = yield treq.post(running.url + "plain", data=b"{}", pool=self.pool())
        yield treq.content(response)
        verdicts = [line for line in out.getvalue().splitlines() if line.startswith("  signature: ")]
        self.assertEqual(verdicts[0], "  signature: valid (Standard Webhooks)")
        self.assertTrue(verdicts[1].startswith("  signature: FAILED: "), verdicts)
        self.assertEqual(verdicts[2], "  signature: FAILED: no webhook-id header")
        self.assertNotIn("MfKQ9r8G", out.getvalue())

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
        self.assertIn('  "taskId": "' + sendtest.TEST_TASK_ID + '",\n', text)

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
        process = Collect()
        transport = reactor.spawnProcess(
            process,
            sys.executable,
            [sys.executable, "-m", "butler_tw.cli", "receive", "--port", str(port)],
            env=subprocess_env(),
        )
        self.addCleanup(lambda: process.ended if process.ended.called else kill(transport, process))
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


class CertificateNamesTests(SynchronousTestCase):
    """The names --tls's certificate is for: loopback always, the --host, this machine's name."""

    def test_names(self) -> None:
        self.patch(receive, "host_name", lambda: "sched-01")
        loopback = ["localhost", "127.0.0.1", "::1"]
        self.assertEqual(receive._certificate_names("0.0.0.0"), [*loopback, "sched-01"])
        self.assertEqual(receive._certificate_names("::"), [*loopback, "sched-01"])
        self.assertEqual(receive._certificate_names("127.0.0.1"), [*loopback, "sched-01"])
        self.assertEqual(receive._certificate_names("fe80::1"), [*loopback, "fe80::1", "sched-01"])
        self.assertEqual(
            receive._certificate_names("qlik.example.com"), [*loopback, "qlik.example.com", "sched-01"]
        )

    def test_unnameable(self) -> None:
        """A name no certificate can hold (an underscore, say) is left out, not an error."""
        self.patch(receive, "host_name", lambda: "my_pc")
        self.assertEqual(receive._certificate_names("my_host"), ["localhost", "127.0.0.1", "::1"])
