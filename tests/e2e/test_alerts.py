# ruff: noqa: E501 - the seed's examples are quoted verbatim
"""End to end: ``twistd butler-webhook`` as a real subprocess, real UDP, real HTTP(S).

Each test starts the daemon from the working tree (see :mod:`tests.daemon`),
sends it datagrams over loopback UDP, and looks at what a real
``twisted.web`` receiver (:mod:`tests.receivers`) got and at everything the
daemon printed. Every wait is bounded; the daemon is killed and reaped on
cleanup.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import uuid
from typing import Any
from urllib.parse import urlencode

import trustme
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from butler_tw.daemon.startup import EX_CONFIG
from tests.support.alerts import datagram
from tests.support.daemon import (
    HOST,
    LISTENING,
    READY,
    REPO,
    Daemon,
    Exit,
    counters,
    make_config,
    sample_datagrams,
    webhook,
    within,
)
from tests.support.receivers import Reply, closed_port, listen_http, listen_https, write_pems

#: Seconds to wait for deliveries, log lines, exits.
DEADLINE = 20.0

FIELDS = (
    "event",
    "hostName",
    "user",
    "taskName",
    "taskId",
    "appName",
    "appId",
    "logTimeStamp",
    "logLevel",
    "executionId",
    "logMessage",
)

#: The seed document's POST body for its example (the first sample datagram), verbatim.
SEED_JSON = rb'{"event":"Qlik Sense reload failed","hostName":"pro2-win1","user":"LAB\\goran","taskName":"Manually triggered reload of Test failing reloads 2","taskId":"dec2a02a-1680-44ef-8dc2-e2bfb180af87","appName":"Test failing reloads 2","appId":"e7af59a0-c243-480d-9571-08727551a66f","logTimeStamp":"2021-02-16 09:24:59,099","logLevel":"INFO","executionId":"14a81bf5-f81c-4047-b1a1-193b0920de28","logMessage":"Max retries reached"}'

#: The query string of the seed document's GET example, verbatim.
SEED_QUERY = "event=Qlik+Sense+reload+failed&hostName=pro2-win1&user=LAB%5Cgoran&taskName=Manually+triggered+reload+of+Test+failing+reloads+2&taskId=dec2a02a-1680-44ef-8dc2-e2bfb180af87&appName=Test+failing+reloads+2&appId=e7af59a0-c243-480d-9571-08727551a66f&logTimeStamp=2021-02-16+09%3A24%3A59%2C099&logLevel=INFO&executionId=14a81bf5-f81c-4047-b1a1-193b0920de28&logMessage=Max+retries+reached"

EVENTS = {"failed": "Qlik Sense reload failed", "aborted": "Qlik Sense reload aborted"}

TOKEN = "TOKEN-SECRET"
PASSWORD = "pw-SECRET"


def expected_alert(datagram: bytes) -> tuple[str, list[tuple[str, str]]] | None:
    """``("failed"|"aborted", fields in seed order)`` for a sample datagram, else ``None``.

    Independent of the daemon's parser: the samples have no ``;`` before the
    message, so a split into at most 11 fields is exact for them.
    """
    parts = datagram.decode("utf-8").split(";", 10)
    token = parts[0].lower()
    kind = "failed" if "-failed/" in token else "aborted" if "-aborted/" in token else None
    if kind is None:
        return None
    _, host, task, app, user, taskId, appId, stamp, level, execution, message = parts
    values = [EVENTS[kind], host, user, task, taskId, app, appId, stamp, level, execution, message]
    return kind, list(zip(FIELDS, values))


def json_of(fields: list[tuple[str, str]]) -> bytes:
    """What ``JSON.stringify`` makes of the fields: compact, in order, UTF-8."""
    return json.dumps(dict(fields), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class EndToEndTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_samplesRoutedToWebhooks(self) -> Any:
        """The 10 samples: each failure and abort to its block's webhooks, as the seed says; nothing else."""
        receiver = listen_http(self)
        daemon = Daemon(
            self,
            make_config(
                failure=[
                    webhook(receiver.url("/failed"), "POST"),
                    webhook(receiver.url("/failed-get?token=abc"), "GET"),
                ],
                aborted=[
                    webhook(receiver.url("/aborted"), "post"),
                    webhook(receiver.url("/aborted-get?token=abc"), "GET"),
                ],
            ),
        )
        yield daemon.start()
        samples = sample_datagrams()
        self.assertEqual(len(samples), 10)
        expected: dict[str, list[list[tuple[str, str]]]] = {"failed": [], "aborted": []}
        for d in samples:
            alert = expected_alert(d)
            if alert is not None:
                expected[alert[0]].append(alert[1])
        self.assertEqual((len(expected["failed"]), len(expected["aborted"])), (6, 1))

        daemon.send(*samples)
        yield within(receiver.waitForRequests(14), DEADLINE, "14 deliveries", daemon)
        exit = yield daemon.stopCleanly()

        byPath: dict[str, list[Any]] = {}
        for r in receiver.requests:
            byPath.setdefault(r.path, []).append(r)
        self.assertEqual(
            {p: len(rs) for p, rs in byPath.items()},
            {"/failed": 6, "/failed-get": 6, "/aborted": 1, "/aborted-get": 1},
        )
        for kind in ("failed", "aborted"):
            posts = byPath[f"/{kind}"]
            self.assertEqual({r.method for r in posts}, {"POST"})
            self.assertEqual({r.header("content-type") for r in posts}, {"application/json"})
            self.assertEqual({r.query for r in posts}, {""})
            self.assertEqual(sorted(r.body for r in posts), sorted(json_of(f) for f in expected[kind]))
            gets = byPath[f"/{kind}-get"]
            self.assertEqual({r.method for r in gets}, {"GET"})
            self.assertEqual({r.body for r in gets}, {b""})
            self.assertEqual(
                sorted(r.query for r in gets),
                sorted("token=abc&" + urlencode(f) for f in expected[kind]),
            )
        # The seed's own examples, byte for byte.
        self.assertIn(SEED_JSON, [r.body for r in byPath["/failed"]])
        self.assertIn("token=abc&" + SEED_QUERY, [r.query for r in byPath["/failed-get"]])

        counts = counters(exit.output)
        self.assertEqual(counts.get("datagrams_received"), 10)
        self.assertEqual(counts.get("datagrams_success"), 2)
        self.assertEqual(counts.get("datagrams_distribute"), 1)
        self.assertEqual(counts.get("alerts_accepted"), 7)
        self.assertEqual(counts.get("deliveries_delivered"), 14)

    @inlineCallbacks
    def test_routing(self) -> Any:
        """``match:``/``exclude:``: production failures to the pager, the rest to chat, and an
        alert no webhook takes counted as unrouted."""
        receiver = listen_http(self)
        prod = {"taskName": "^Prod "}
        daemon = Daemon(
            self,
            make_config(
                failure=[
                    webhook(receiver.url("/pager"), match=prod),
                    webhook(receiver.url("/chat"), exclude=prod),
                ],
                aborted=[webhook(receiver.url("/pager-aborts"), match=prod)],
            ),
        )
        yield daemon.start()
        daemon.send(
            datagram("failed", str(uuid.uuid4()), str(uuid.uuid4()), taskName="Prod Finance KPIs"),
            datagram("failed", str(uuid.uuid4()), str(uuid.uuid4()), taskName="Test Finance KPIs"),
            datagram("aborted", str(uuid.uuid4()), str(uuid.uuid4()), taskName="Test Finance KPIs"),
        )
        yield within(receiver.waitForRequests(2), DEADLINE, "2 deliveries", daemon)
        yield daemon.waitForOutput(
            "no webhook of Butler.webhookNotification.reloadTaskAborted.webhooks takes it"
        )
        exit = yield daemon.stopCleanly()
        self.assertEqual(
            sorted((r.path, json.loads(r.body)["taskName"]) for r in receiver.requests),
            [("/chat", "Test Finance KPIs"), ("/pager", "Prod Finance KPIs")],
        )
        counts = counters(exit.output)
        self.assertEqual((counts.get("alerts_accepted"), counts.get("alerts_unrouted")), (2, 1))

    @inlineCallbacks
    def test_httpsPrivateCA(self) -> Any:
        """A webhook trusting the server's private CA delivers; one trusting another CA does not."""
        ca, otherCa = trustme.CA(), trustme.CA()
        leaf = ca.issue_cert("localhost", "127.0.0.1")
        trusted = listen_https(self, leaf)
        untrusted = listen_https(self, leaf)
        caFile = os.path.abspath(write_pems(self, ca.cert_pem.bytes()))
        otherFile = os.path.abspath(write_pems(self, otherCa.cert_pem.bytes()))
        daemon = Daemon(
            self,
            make_config(
                failure=[
                    webhook(
                        trusted.url("/tls"),
                        description="trusted",
                        cert={"enable": True, "rejectUnauthorized": True, "certCA": caFile},
                    ),
                    webhook(
                        untrusted.url("/tls"),
                        description="untrusted",
                        cert={"enable": True, "rejectUnauthorized": True, "certCA": otherFile},
                        retrySchedule=[0],
                    ),
                ]
            ),
        )
        yield daemon.start()
        daemon.send(sample_datagrams()[0])
        yield within(trusted.waitForRequests(1), DEADLINE, "the HTTPS delivery", daemon)
        yield daemon.waitForOutput("TLS: certificate verification failed", DEADLINE)
        exit = yield daemon.stopCleanly()

        self.assertEqual([r.body for r in trusted.requests], [SEED_JSON])
        self.assertEqual(untrusted.requests, [])
        failedLines = [
            line for line in exit.output.splitlines() if "TLS: certificate verification failed" in line
        ]
        self.assertEqual(len(failedLines), 1, exit.output)
        self.assertIn("untrusted", failedLines[0])
        counts = counters(exit.output)
        self.assertEqual(counts.get("deliveries_delivered"), 1)
        self.assertEqual(counts.get("deliveries_dead"), 1)

    @inlineCallbacks
    def test_rateLimit(self) -> Any:
        """Five failures of one task: one delivery per webhook; an abort of it still goes out."""
        receiver = listen_http(self)
        daemon = Daemon(
            self,
            make_config(
                failure=[webhook(receiver.url("/f-post"), "POST"), webhook(receiver.url("/f-get"), "GET")],
                aborted=[webhook(receiver.url("/a-post"), "PUT")],
                rateLimit=300,
            ),
        )
        yield daemon.start()
        task = "5f0e8a2b-9c1d-4e3f-b7a6-0d2c4e6f8a1b"
        executions = [f"d2e4f6a8-0b1c-4d3e-9f5a-7b8c0d2e4f6{n}" for n in range(6)]
        daemon.send(*(datagram("failed", task, e) for e in executions[:5]))
        daemon.send(datagram("aborted", task, executions[5]))
        # The abort is sent last: once it is delivered, all six were handled.
        yield within(receiver.waitForRequests(3), DEADLINE, "3 deliveries", daemon)
        exit = yield daemon.stopCleanly()

        got = sorted((r.path, r.method) for r in receiver.requests)
        self.assertEqual(got, [("/a-post", "PUT"), ("/f-get", "GET"), ("/f-post", "POST")])
        post = next(r for r in receiver.requests if r.path == "/f-post")
        self.assertEqual(json.loads(post.body)["executionId"], executions[0])
        put = next(r for r in receiver.requests if r.path == "/a-post")
        self.assertEqual(json.loads(put.body)["event"], "Qlik Sense reload aborted")
        counts = counters(exit.output)
        self.assertEqual(counts.get("datagrams_received"), 6)
        self.assertEqual(counts.get("alerts_rate_limited"), 4)
        self.assertEqual(counts.get("alerts_accepted"), 2)
        # One line for the task, then the other three are summarised (a storm cannot flood the log).
        self.assertEqual(exit.output.count("rate limited: one alert per 300 s per task"), 1)
        self.assertIn("Also not sent in the last 60 s: 3 rate limited (1 task)", exit.output)

    @inlineCallbacks
    def test_dedupNeedsExecutionId(self) -> Any:
        """Two tasks failing without an executionId: both delivered. One datagram twice, with one: once."""
        receiver = listen_http(self)
        daemon = Daemon(self, make_config(failure=[webhook(receiver.url("/hook"))]))
        yield daemon.start()
        tasks = ["5f0e8a2b-9c1d-4e3f-b7a6-0d2c4e6f8a1b", "7d3c2b1a-6e5f-4a3b-8c9d-0e1f2a3b4c5d"]
        copied = datagram(
            "failed", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "d2e4f6a8-0b1c-4d3e-9f5a-7b8c0d2e4f60"
        )
        # The copy first: once the last datagram is delivered, all four were handled.
        daemon.send(copied, copied, *(datagram("failed", t, "", taskName=f"Reload {t[:4]}") for t in tasks))
        yield within(receiver.waitForRequests(3), DEADLINE, "3 deliveries", daemon)
        exit = yield daemon.stopCleanly()

        bodies = [json.loads(r.body) for r in receiver.requests]
        self.assertEqual(
            sorted((b["taskId"], b["executionId"]) for b in bodies),
            sorted(
                [("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "d2e4f6a8-0b1c-4d3e-9f5a-7b8c0d2e4f60")]
                + [(t, "") for t in tasks]
            ),
        )
        self.assertEqual(len({r.header("webhook-id") for r in receiver.requests}), 3)
        counts = counters(exit.output)
        self.assertEqual(counts.get("alerts_accepted"), 3, exit.output)
        self.assertEqual(counts.get("alerts_duplicate"), 1, exit.output)
        self.assertIn("execution d2e4f6a8-0b1c-4d3e-9f5a-7b8c0d2e4f60 was already received", exit.output)

    @inlineCallbacks
    def test_configErrors(self) -> Any:
        """Two mistakes: a quick non-zero exit naming both key paths, and no token printed."""
        url = f"http://user:{PASSWORD}@127.0.0.1:{closed_port()}/hook?token={TOKEN}"
        daemon = Daemon(
            self,
            make_config(
                failure=[
                    webhook(
                        url,
                        cert={
                            "enable": True,
                            "rejectUnauthorized": True,
                            "certCA": "/nonexistent/butler-ca.pem",
                        },
                    ),
                    webhook(url, "DELETE"),
                ]
            ),
        )
        exit: Exit = yield daemon.run(DEADLINE)
        self.assertIsNone(exit.signal, exit.output)
        self.assertEqual(exit.exitCode, EX_CONFIG, exit.output)
        self.assertNotIn("Traceback", exit.output)
        self.assertLess(exit.seconds, 15, "slow to refuse a bad config")
        failure = "Butler.webhookNotification.reloadTaskFailure"
        self.assertIn(f"{failure}.webhooks[1].httpMethod", exit.stderr)
        self.assertIn(f"{failure}.webhooks[0].cert.certCA", exit.stderr)
        self.assertIn("DELETE", exit.stderr)
        self.assertNotIn(TOKEN, exit.output)
        self.assertNotIn(PASSWORD, exit.output)
        self.assertNotIn(LISTENING, exit.output)

    @inlineCallbacks
    def test_udpDisabledRefusesToStart(self) -> Any:
        """``udpServerConfig.enable: false``: nothing to do, so a non-zero exit with the reason."""
        config = make_config()
        config["Butler"]["udpServerConfig"] = {
            "enable": False,
            "serverHost": "127.0.0.1",
            "portTaskFailure": 9998,
        }
        daemon = Daemon(self, config)
        exit: Exit = yield daemon.run(DEADLINE)
        self.assertIsNone(exit.signal, exit.output)
        self.assertEqual(exit.exitCode, EX_CONFIG, exit.output)
        self.assertIn("Butler.udpServerConfig.enable", exit.stderr)
        self.assertIn("UDP", exit.stderr)
        self.assertNotIn(LISTENING, exit.output)

    @inlineCallbacks
    def test_allowedSources(self) -> Any:
        """Only listed sources are read: by name (localhost), not by a range that excludes loopback."""
        receiver = listen_http(self)
        for allowed, delivered in ((["10.0.0.0/8", "2001:db8::/32"], 0), (["localhost"], 1)):
            config = make_config(failure=[webhook(receiver.url("/hook"), "POST")])
            config["Butler"]["udpServerConfig"] = {
                "enableSourceValidation": True,
                "allowedSources": allowed,
            }
            daemon = Daemon(self, config)
            yield daemon.start()
            daemon.send(sample_datagrams()[0])
            if delivered:
                yield within(receiver.waitForRequests(1), DEADLINE, "the allowed alert", daemon)
            else:
                yield daemon.waitForOutput("not in allowedSources")
            exit = yield daemon.stopCleanly()
            counts = counters(exit.output)
            self.assertEqual(counts.get("alerts_accepted", 0), delivered, exit.output)
            self.assertEqual(counts.get("datagrams_source_refused", 0), 1 - delivered, exit.output)
            if not delivered:
                self.assertIn("from 127.0.0.1", exit.output)
                self.assertIn("not in allowedSources", exit.output)
        self.assertEqual(len(receiver.requests), 1)

    @inlineCallbacks
    def test_allowedSourcesFailClosed(self) -> Any:
        """Validation on and no entry usable: refuse to start (Butler would accept everyone)."""
        config = make_config()
        config["Butler"]["udpServerConfig"] = {
            "enableSourceValidation": True,
            "allowedSources": ["no-such-host.invalid"],
        }
        exit: Exit = yield Daemon(self, config).run(DEADLINE)
        self.assertEqual(exit.exitCode, EX_CONFIG, exit.output)
        self.assertIn("Butler.udpServerConfig.allowedSources: no entry is usable", exit.stderr)
        self.assertNotIn(LISTENING, exit.output)

    @inlineCallbacks
    def test_perSourceRateLimit(self) -> Any:
        """rateLimit.maxMessagesPerMinute: the sixth datagram from one address in a minute is dropped."""
        receiver = listen_http(self)
        config = make_config(failure=[webhook(receiver.url("/hook"), "POST")], rateLimit=0)
        config["Butler"]["udpServerConfig"] = {"rateLimit": {"enable": True, "maxMessagesPerMinute": 5}}
        daemon = Daemon(self, config)
        yield daemon.start()
        task = "5f0e8a2b-9c1d-4e3f-b7a6-0d2c4e6f8a1b"
        daemon.send(*(datagram("failed", task, f"d2e4f6a8-0b1c-4d3e-9f5a-7b8c0d2e4f6{n}") for n in range(7)))
        yield within(receiver.waitForRequests(5), DEADLINE, "5 deliveries", daemon)
        exit = yield daemon.stopCleanly()
        counts = counters(exit.output)
        self.assertEqual(counts.get("datagrams_source_rate_limited"), 2, exit.output)
        self.assertEqual(counts.get("alerts_accepted"), 5)
        self.assertEqual(len(receiver.requests), 5)
        self.assertEqual(exit.output.count("more than rateLimit.maxMessagesPerMinute (5)"), 1)

    @inlineCallbacks
    def test_noSecretsLogged(self) -> Any:
        """Neither the query token nor the user-info password reaches any line, whatever happens."""
        ok = listen_http(self)
        refused = listen_http(self, 401)
        port = closed_port()
        secret = f"user:{PASSWORD}@127.0.0.1"
        daemon = Daemon(
            self,
            make_config(
                failure=[
                    webhook(f"http://{secret}:{ok.port}/hook?token={TOKEN}", "POST"),
                    webhook(f"http://{secret}:{refused.port}/hook?token={TOKEN}", "GET"),
                    webhook(f"http://{secret}:{port}/hook?token={TOKEN}", "PUT", retrySchedule=[0]),
                ],
                aborted=[webhook(f"http://{secret}:{ok.port}/hook?token={TOKEN}#frag-{TOKEN}", "GET")],
            ),
        )
        yield daemon.start()
        samples = sample_datagrams()
        daemon.send(samples[0], samples[2], b"/scheduler-bogus/;" + TOKEN.encode())
        yield within(ok.waitForRequests(2), DEADLINE, "the deliveries", daemon)
        yield within(refused.waitForRequests(1), DEADLINE, "the refused delivery", daemon)
        yield daemon.waitForOutput("connection refused", DEADLINE)
        yield daemon.waitForOutput("HTTP 401", DEADLINE)
        exit = yield daemon.stopCleanly()

        # The URLs really were used, secrets and all.
        self.assertEqual(sorted(r.query.split("&")[0] for r in ok.requests), [f"token={TOKEN}"] * 2)
        self.assertIn(f"127.0.0.1:{ok.port}/***", exit.output)  # the redacted URL
        leaks = [line for line in exit.output.splitlines() if TOKEN in line or PASSWORD in line]
        self.assertEqual(leaks, [])

    @inlineCallbacks
    def test_sigtermWithinGracePeriod(self) -> Any:
        """SIGTERM with an attempt hanging: the daemon exits within the grace period, counters logged."""
        receiver = listen_http(self, Reply(hang=True))
        daemon = Daemon(
            self,
            make_config(
                failure=[webhook(receiver.url("/slow"), timeout=60)],
                butlerWebhook={"shutdownGracePeriod": 2},
            ),
        )
        yield daemon.start()
        daemon.send(sample_datagrams()[0])
        yield within(receiver.waitForRequests(1), DEADLINE, "the request", daemon)
        exit: Exit = yield daemon.stopCleanly()

        # A clean SIGTERM: twistd re-raises the signal after shutting down.
        self.assertTrue(exit.signal == signal.SIGTERM or exit.exitCode == 0, (exit.signal, exit.exitCode))
        # The attempt in flight got its grace period, and no more.
        self.assertGreater(exit.seconds, 1.5, exit.output)
        self.assertLess(exit.seconds, 2 + 3, exit.output)
        self.assertIn("waiting up to 2 s for 1 attempt in flight", exit.output)
        self.assertIn("grace period of 2 s over", exit.output)
        self.assertIn("left pending (shutting down)", exit.output)
        self.assertEqual(len(receiver.requests), 1)

    @inlineCallbacks
    def test_notificationsDisabled(self) -> Any:
        """``webhookNotification.enable: false``: a warning at start, alerts counted, nothing sent."""
        receiver = listen_http(self)
        daemon = Daemon(
            self,
            make_config(
                failure=[webhook(receiver.url("/failed"))],
                aborted=[webhook(receiver.url("/aborted"), "GET")],
                enable=False,
            ),
        )
        startup = yield daemon.start()
        self.assertRegex(startup, r"\[butler_tw#warn\][^\n]*webhookNotification\.enable is false")
        samples = sample_datagrams()
        daemon.send(*samples)
        # The last sample is a failure: once it is reported as not sent, all ten were handled.
        yield daemon.waitForOutput("(5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f) not sent", DEADLINE)
        exit = yield daemon.stopCleanly()

        self.assertEqual(receiver.requests, [])
        self.assertEqual(receiver.connections, 0)
        counts = counters(exit.output)
        self.assertEqual(counts.get("datagrams_received"), 10)
        self.assertEqual(counts.get("alerts_not_sent_disabled"), 7)
        self.assertNotIn("deliveries_created", counts)


class StartupCheckTests(TestCase):
    """What stops the daemon at start is one line on stderr and exit status 78, and
    ``butler-tw check-config`` on the same file says the same and exits 78 too."""

    timeout = 60

    def check_config(self, daemon: Daemon) -> Any:
        """Fires with (status, stdout, stderr) of ``butler-tw check-config -c`` the daemon's file."""
        env = dict(os.environ, PYTHONPATH=str(REPO))
        args = ["-m", "butler_tw.cli", "check-config", "-c", daemon.configPath]
        d = getProcessOutputAndValue(sys.executable, args, env=env, path=daemon.directory)
        return d.addCallback(lambda r: (r[2], r[0].decode(), r[1].decode()))

    @inlineCallbacks
    def assertRefused(self, daemon: Daemon, problem: str) -> Any:
        exit: Exit = yield daemon.run(DEADLINE)
        self.assertEqual((exit.signal, exit.exitCode), (None, EX_CONFIG), exit.output)
        self.assertEqual(exit.stderr, f"butler-webhook: {problem}\n")
        self.assertNotIn("Traceback", exit.output)
        self.assertNotIn(LISTENING, exit.output)
        status, out, err = yield self.check_config(daemon)
        self.assertEqual((status, out, err), (EX_CONFIG, "", f"butler-tw: {problem}\n"))

    @inlineCallbacks
    def test_udpPortHeld(self) -> Any:
        """The common case: Butler (here, any socket) still has the port."""
        daemon = Daemon(self, make_config())
        held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        held.bind(("127.0.0.1", daemon.udpPort))
        self.addCleanup(held.close)
        yield self.assertRefused(
            daemon,
            f"cannot listen on UDP 127.0.0.1:{daemon.udpPort}: the port is in use (is Butler still running?)",
        )

    @inlineCallbacks
    def test_addressNotOnThisHost(self) -> Any:
        """192.0.2.1 (TEST-NET-1) is never a local address; it is only bound, never sent to."""
        config = make_config()
        config["Butler"]["udpServerConfig"] = {"serverHost": "192.0.2.1"}
        daemon = Daemon(self, config)
        yield self.assertRefused(
            daemon, f"cannot listen on UDP 192.0.2.1:{daemon.udpPort}: that address is not on this host"
        )

    @inlineCallbacks
    def test_stateDirCannotBeCreated(self) -> Any:
        daemon = Daemon(self, make_config())
        with open(os.path.join(daemon.directory, "afile"), "w"):
            pass
        stateDir = os.path.join(daemon.directory, "afile", "state")
        daemon.rewrite(make_config(butlerWebhook={"stateDir": stateDir}))
        yield self.assertRefused(
            daemon,
            f"butlerWebhook.stateDir: cannot create the state directory {stateDir}: "
            f"{daemon.directory}/afile is not a directory",
        )

    @inlineCallbacks
    def test_configErrorKeyPath(self) -> Any:
        """A config error: 78, its key path on stderr, the same text from check-config."""
        config = make_config(failure=[webhook("http://127.0.0.1:1/x", "DELETE")])
        daemon = Daemon(self, config)
        exit: Exit = yield daemon.run(DEADLINE)
        self.assertEqual(exit.exitCode, EX_CONFIG, exit.output)
        self.assertIn("Butler.webhookNotification.reloadTaskFailure.webhooks[0].httpMethod", exit.stderr)
        self.assertNotIn("Traceback", exit.output)
        status, out, err = yield self.check_config(daemon)
        self.assertEqual((status, out), (EX_CONFIG, ""))
        self.assertEqual(err.replace("butler-tw: ", "", 1), exit.stderr.replace("butler-webhook: ", "", 1))

    @inlineCallbacks
    def test_misindentedFile(self) -> Any:
        """A Butler file as typed by hand, with ``webhooks:`` two spaces short: 78, the key path, where it belongs."""
        daemon = Daemon(self, make_config())
        with open(daemon.configPath, "w", encoding="utf-8") as f:
            f.write(
                "Butler:\n"
                "  udpServerConfig:\n"
                "    enable: true\n"
                f"    serverHost: {HOST}\n"
                f"    portTaskFailure: {daemon.udpPort}\n"
                "  webhookNotification:\n"
                "    enable: true\n"
                "    reloadTaskFailure:\n"
                "      rateLimit: 300\n"
                "    webhooks:\n"
                "      - description: 'Teams'\n"
                "        webhookURL: http://127.0.0.1:1/x\n"
                "        httpMethod: POST\n"
                "butlerWebhook:\n"
                f"  stateDir: {os.path.join(daemon.directory, 'state')}\n"
            )
        yield self.assertRefused(
            daemon,
            f"{daemon.configPath}: 1 problem in the configuration:\n"
            "  - Butler.webhookNotification.webhooks: belongs inside a block: "
            "indent it one more level, under Butler.webhookNotification.reloadTaskFailure "
            "or Butler.webhookNotification.reloadTaskAborted",
        )

    @inlineCallbacks
    def test_validStarts(self) -> Any:
        """check-config says valid (and leaves the port free), and the daemon starts on the same file."""
        daemon = Daemon(self, make_config())
        status, out, err = yield self.check_config(daemon)
        self.assertEqual((status, err), (0, ""), out)
        self.assertEqual(out.splitlines()[0], f"{daemon.configPath}: valid")
        output = yield daemon.start()
        self.assertIn(READY, output)
        yield daemon.stopCleanly()
