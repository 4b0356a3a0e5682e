"""No secret of a webhook URL reaches a log line or a command's output.

Webhook URLs carry their secrets in the user info (``user:password@``), in the
query (``?token=…``) and in the path: Slack, Teams, Discord, Zapier, Home
Assistant and ntfy put the token there. :class:`SecretsEndToEndTests` runs the
real daemon (``twistd butler-webhook``, :mod:`tests.daemon`) with webhooks on
loopback receivers whose deliveries succeed, get HTTP 500, time out, fail the
TLS handshake and are refused; then ``butler-tw emit``, ``check-config``,
``send-test`` and ``deliveries`` as an admin runs them (processes of their
own). Every line the daemon and the commands print, and the outbox files on
disk, are scanned for every secret in every spelling (as written, decoded,
percent-encoded, and the Basic credentials the user info becomes). The secrets
are random per run, so nothing else can contain them by accident.

:class:`ReferencedSecretsEndToEndTests` does the same for secrets that the
config file only refers to (``${env:...}``, ``${file:...}``): a URL token, a
header value, bearer and basic credentials and a Standard Webhooks signing
secret; they reach the receivers (signatures verified, a retry signed anew, a
rotated file re-read on SIGHUP) and are printed nowhere.

The test checks itself: each secret is in the config file, the receivers got
the requests that carry them, and the output does mention every webhook
(redacted), so an empty or truncated output cannot pass.

:class:`PathRuleTests` pins the path rule of :mod:`butler_tw.redact` on real
URL shapes, including tokens that look like words.
"""

from __future__ import annotations

import base64
import glob
import os
import secrets
import string
import sys
import uuid
from typing import Any, Iterable
from urllib.parse import quote, quote_plus, unquote

import treq
import trustme
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from butler_tw.channels.signing import verify
from butler_tw.core.redact import redact_url
from tests.support.alerts import datagram
from tests.support.daemon import (
    REPO,
    Daemon,
    counters,
    deliveries_by_state,
    make_config,
    until,
    webhook,
    within,
)
from tests.support.receivers import Reply, closed_port, listen_http, listen_https, write_pems

#: Seconds to wait for each stage (each takes 1-3 s when all is well).
DEADLINE = 15.0

_ALNUM = string.ascii_letters + string.digits
_UPPER = string.ascii_uppercase + string.digits


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _guid() -> str:
    return str(uuid.uuid4())


def _word(n: int) -> str:
    """Random lower-case letters: a token the old "does it read like a word" rule let through."""
    return _random(string.ascii_lowercase, n)


class Secrets:
    """One run's secrets: random, recognisable, in the shapes real services use."""

    def __init__(self) -> None:
        self.user = "svc" + secrets.token_hex(4)
        # Characters that must be percent-encoded in a URL's user info: the
        # config holds the encoded form, the Authorization header the decoded.
        self.password = f"pw/{secrets.token_hex(12)}:&?"
        self.shortPassword = "Hunter" + _random(string.digits, 4)
        self.queryToken = secrets.token_hex(16)
        self.getToken = secrets.token_urlsafe(18)
        # Slack: /services/T<team>/B<channel>/<24 letters and digits>
        self.slackTeam = "T0" + _random(_UPPER, 8)
        self.slackChannel = "B0" + _random(_UPPER, 9)
        self.slackToken = _random(_ALNUM, 24)
        # Teams: /webhookb2/<guid>@<guid>/IncomingWebhook/<hex>/<guid>/V2<base64url>
        self.teamsGroup, self.teamsTenant, self.teamsOwner = _guid(), _guid(), _guid()
        self.teamsHex = secrets.token_hex(16)
        self.teamsV2 = "V2" + secrets.token_urlsafe(32)
        # Discord: /api/webhooks/<18 digits>/<68 base64url characters, '-' and '_' included>
        self.discordId = _random(string.digits, 18)
        self.discordToken = _random(_ALNUM, 30) + "-" + _random(_ALNUM, 20) + "_" + _random(_ALNUM, 16)
        # Tokens that read like words: a Zapier hook id of letters only,
        # a Home Assistant webhook id, an ntfy topic (the whole path).
        self.zapierUser = _random(string.digits, 8)
        self.zapierHook = _word(7)
        self.homeAssistant = f"{_word(6)}_{_word(6)}_{_word(6)}"
        self.ntfyTopic = _word(14)
        self.dashedWords = f"{_word(5)}-{_word(5)}-{_word(5)}"
        # The failing webhooks' own.
        self.errorPath = secrets.token_urlsafe(20)
        self.errorSig = secrets.token_hex(12)
        self.hangPath = _word(12)
        self.hangCode = secrets.token_hex(12)
        self.tlsPath = _random(_ALNUM, 24)
        self.refusedTopic = _word(13)
        self.refusedAuth = secrets.token_hex(12)

    def values(self) -> list[str]:
        return [v for k, v in vars(self).items() if not k.startswith("_")]

    @property
    def userinfo(self) -> str:
        return f"{quote(self.user, safe='')}:{quote(self.password, safe='')}@"

    @property
    def basic(self) -> str:
        return base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

    def needles(self) -> set[str]:
        """Every spelling of every secret that must never be printed (lower-cased)."""
        found: set[str] = set()
        for value in self.values():
            found |= {value, unquote(value), quote(value, safe=""), quote(value), quote_plus(value)}
        found.add(self.userinfo)
        found.add(self.basic)
        found.add(base64.b64encode(f"{self.user}:{self.shortPassword}".encode()).decode())
        found.add(f"{self.slackTeam}/{self.slackChannel}")
        return {n.lower() for n in found}


def leaks(text: str, needles: Iterable[str]) -> list[str]:
    """The lines of ``text`` that contain any needle (compared lower-cased)."""
    needles = list(needles)
    return [line for line in text.splitlines() if any(n in line.lower() for n in needles)]


def butler_tw(*argv: str, environ: dict[str, str] | None = None) -> Any:
    """``butler-tw ARGV`` as a process of its own; fires with (stdout, stderr, status)."""
    env = dict(os.environ)
    env.update(environ or {})
    env["PYTHONPATH"] = str(REPO)
    return getProcessOutputAndValue(sys.executable, ["-m", "butler_tw.cli", *argv], env=env)


class SecretsEndToEndTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_noSecretInAnyOutput(self) -> Any:
        """Deliveries that succeed, fail, time out, fail TLS and are refused: no secret in any output."""
        s = Secrets()
        ok = listen_http(self)
        error = listen_http(self, Reply(500, body=b"busy"))
        hang = listen_http(self, Reply(hang=True))
        ca, otherCa = trustme.CA(), trustme.CA()
        tls = listen_https(self, ca.issue_cert("localhost", "127.0.0.1"))
        otherCaFile = os.path.abspath(write_pems(self, otherCa.cert_pem.bytes()))
        refused = closed_port()
        fail = {"retrySchedule": [0, 0.3]}

        withUser = f"http://{s.userinfo}127.0.0.1:{ok.port}"
        okHooks = {
            # description: (URL, method); each answered 200
            "Basic and token": (f"{withUser}/butler/failed?token={s.queryToken}", "POST"),
            "GET with token": (f"{ok.url('/butler_get')}?source=qlik&key={s.getToken}", "GET"),
            "Short password": (
                f"http://{s.user}:{s.shortPassword}@127.0.0.1:{ok.port}/hook",
                "POST",
            ),
            "Slack": (ok.url(f"/services/{s.slackTeam}/{s.slackChannel}/{s.slackToken}"), "POST"),
            "Teams": (
                ok.url(
                    f"/webhookb2/{s.teamsGroup}@{s.teamsTenant}/IncomingWebhook/"
                    f"{s.teamsHex}/{s.teamsOwner}/{s.teamsV2}"
                ),
                "POST",
            ),
            "Discord": (ok.url(f"/api/webhooks/{s.discordId}/{s.discordToken}"), "POST"),
            "Zapier": (ok.url(f"/hooks/catch/{s.zapierUser}/{s.zapierHook}/"), "POST"),
            "Home Assistant": (ok.url(f"/api/webhook/{s.homeAssistant}"), "PUT"),
            "ntfy": (ok.url(f"/{s.ntfyTopic}"), "POST"),
            "Passphrase": (ok.url(f"/hook/{s.dashedWords}"), "POST"),
        }
        failing = [
            webhook(f"{error.url('/hooks/' + s.errorPath)}?sig={s.errorSig}", "POST", "Busy", **fail),
            webhook(
                f"{hang.url('/api/webhook/' + s.hangPath)}?code={s.hangCode}",
                "POST",
                "Hung",
                timeout=1,
                **fail,
            ),
            webhook(
                f"https://{s.userinfo}127.0.0.1:{tls.port}/services/{s.tlsPath}",
                "POST",
                "Untrusted",
                cert={"enable": True, "certCA": otherCaFile},
                **fail,
            ),
            webhook(
                f"http://127.0.0.1:{refused}/{s.refusedTopic}?auth={s.refusedAuth}", "GET", "Refused", **fail
            ),
        ]
        httpPort = closed_port()
        config = make_config(
            failure=[webhook(url, method, name) for name, (url, method) in okHooks.items()] + failing,
            aborted=[webhook(f"{withUser}/butler/aborted?token={s.queryToken}", "PUT", "Aborted")],
            rateLimit=0,
            butlerWebhook={
                "shutdownGracePeriod": 1,
                "log": {"level": "debug"},
                "delivery": {"retrySchedule": [0, 0.3], "maxAge": 60},
                "http": {"listen": f"tcp:{httpPort}:interface=127.0.0.1"},
            },
        )
        daemon = Daemon(self, config)

        # The secrets really are in the config: a scan for them means something.
        with open(daemon.configPath, encoding="utf-8") as f:
            configText = f.read()
        for value in s.values():
            self.assertTrue(
                value in configText or quote(value, safe="") in configText, f"{value!r} not in the config"
            )

        yield daemon.start()
        out, err, status = yield butler_tw("emit", f"127.0.0.1:{daemon.udpPort}")
        self.assertEqual(status, 0, err)
        emitted = (out + err).decode("utf-8", "replace")
        daemon.send(datagram("aborted", _guid(), _guid()))

        yield within(ok.waitForRequests(len(okHooks) + 1), DEADLINE, "the successful deliveries", daemon)
        yield until(
            lambda: deliveries_by_state(daemon.outboxPath) == {"pending": 0, "dead": len(failing)},
            DEADLINE,
            "the failing deliveries to be given up",
            daemon,
        )
        # What /metrics, /health and /deliveries show while the dead letters are there.
        pool = HTTPConnectionPool(reactor, persistent=False)
        endpoints = {}
        for path in ("/metrics", "/health", "/deliveries", "/deliveries?state=dead"):
            response = yield treq.get(f"http://127.0.0.1:{httpPort}{path}", pool=pool)
            endpoints[path] = (yield treq.content(response)).decode("utf-8")
            self.assertEqual(response.code, 200, path)
        self.assertIn('outcome="tls_error",webhook="Untrusted"', endpoints["/metrics"])
        self.assertIn('"lastFailureReason": "timed out after 1 s"', endpoints["/health"])
        exit = yield daemon.stopCleanly()

        # The requests carried the secrets: the URLs were used, not mangled.
        requests = {r.path: r for r in ok.requests}
        paths = {name: url.split(str(ok.port), 1)[1].split("?")[0] for name, (url, _) in okHooks.items()}
        for name, path in paths.items():
            self.assertIn(path, requests, name)
        self.assertEqual(requests["/butler/failed"].header("authorization"), f"Basic {s.basic}")
        self.assertEqual(requests["/butler/failed"].query, f"token={s.queryToken}")
        self.assertIn(f"key={s.getToken}&", requests["/butler_get"].query)
        self.assertEqual(len(error.requests), 2)
        self.assertEqual(error.requests[0].path, f"/hooks/{s.errorPath}")
        self.assertEqual(error.requests[0].query, f"sig={s.errorSig}")
        self.assertEqual(len(hang.requests), 2)
        self.assertEqual(hang.requests[0].path, f"/api/webhook/{s.hangPath}")
        self.assertGreaterEqual(tls.connections, 2)  # handshakes that failed: no request
        self.assertEqual(tls.requests, [])

        # The outcomes happened, and their lines are there to be scanned.
        output = exit.output
        for text in (
            "HTTP 200",
            "HTTP 500",
            "timed out after 1 s",
            "TLS: certificate verification failed",
            "connection refused",
            "retries exhausted",
        ):
            self.assertIn(text, output)
        counts = counters(output)
        self.assertEqual(counts.get("deliveries_delivered"), len(okHooks) + 1)
        self.assertEqual(counts.get("deliveries_dead"), len(failing))
        for w in config["Butler"]["webhookNotification"]["reloadTaskFailure"]["webhooks"]:
            self.assertIn(redact_url(w["webhookURL"]), output, w["description"])

        # The admin commands, run while the outbox holds the dead letters.
        results = yield gatherResults(
            [
                butler_tw("check-config", daemon.configPath),
                butler_tw("send-test", daemon.configPath),
                butler_tw("send-test", daemon.configPath, "--event", "aborted"),
                butler_tw("deliveries", "--config", daemon.configPath),
                butler_tw("deliveries", "--config", daemon.configPath, "--state", "dead"),
            ]
        )
        commands = {}
        for name, (out, err, status) in zip(
            ("check-config", "send-test", "send-test aborted", "deliveries", "deliveries dead"),
            results,
            strict=True,
        ):
            commands[name] = (out + err).decode("utf-8", "replace")
            self.assertEqual(status, 1 if name == "send-test" else 0, f"{name}:\n{commands[name]}")
        self.assertIn("Untrusted", commands["deliveries dead"])
        self.assertIn("timed out after 1 s", commands["send-test"])
        self.assertIn(redact_url(okHooks["Slack"][0]), commands["check-config"])
        self.assertIn(redact_url(okHooks["Discord"][0]), commands["send-test"])

        # The scan: daemon (stdout and stderr, exit summary included), commands, outbox files.
        needles = s.needles()
        self.assertEqual(leaks(f"x {s.slackToken} y", needles), [f"x {s.slackToken} y"])  # the scan works
        found = {"daemon": leaks(output, needles), "emit": leaks(emitted, needles)}
        found.update({path: leaks(text, needles) for path, text in endpoints.items()})
        found.update({name: leaks(text, needles) for name, text in commands.items()})
        for path in glob.glob(os.path.join(daemon.stateDir, "*")):
            with open(path, "rb") as f:
                found[path] = leaks(f.read().decode("latin-1").replace("\0", "\n"), needles)
        leaked = [f"{where}: {line}" for where, lines in found.items() for line in lines]
        if leaked:
            self.fail("a secret was printed or stored:\n" + "\n".join(leaked))


class ReferencedSecretsEndToEndTests(TestCase):
    """Secrets from ``${env:...}`` and ``${file:...}``: sent, signed, re-read on SIGHUP, never printed."""

    timeout = 60

    def secret_file(self, directory: str, name: str, content: str, mode: int) -> str:
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content + "\n")
        os.chmod(path, mode)
        return path

    @inlineCallbacks
    def test_referencedSecrets(self) -> Any:
        urlToken = secrets.token_urlsafe(18)
        bearer = secrets.token_hex(16)
        headerValue, rotatedValue = secrets.token_hex(12), secrets.token_hex(12)
        signingSecret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        password = secrets.token_hex(10)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        headerFile = self.secret_file(directory, "api-key", headerValue, 0o644)  # warned about
        signingFile = self.secret_file(directory, "signing", signingSecret, 0o600)
        passwordFile = self.secret_file(directory, "password", password, 0o600)
        environ = {"BTW_E2E_URL_TOKEN": urlToken, "BTW_E2E_BEARER": bearer}

        ok = listen_http(self)
        flaky = listen_http(self, Reply(500), Reply(200))
        httpPort = closed_port()
        config = make_config(
            failure=[
                webhook(
                    ok.url("/hooks/${env:BTW_E2E_URL_TOKEN}"),
                    "POST",
                    "Referenced",
                    headers={"X-Api-Key": f"${{file:{headerFile}}}"},
                    auth={"type": "bearer", "token": "${env:BTW_E2E_BEARER}"},
                    signing={"secret": f"${{file:{signingFile}}}"},
                ),
                webhook(
                    flaky.url("/signed"),
                    "GET",
                    "Signed retry",
                    auth={"type": "basic", "username": "svc", "password": f"${{file:{passwordFile}}}"},
                    signing={"secret": f"${{file:{signingFile}}}"},
                    retrySchedule=[0, 1.5],
                ),
                webhook(  # given up: a dead letter for `deliveries` to show
                    f"http://127.0.0.1:{closed_port()}/dead/${{env:BTW_E2E_URL_TOKEN}}",
                    "POST",
                    "Refused",
                    auth={"type": "bearer", "token": "${env:BTW_E2E_BEARER}"},
                    retrySchedule=[0, 0.3],
                ),
            ],
            rateLimit=0,
            butlerWebhook={
                "shutdownGracePeriod": 1,
                "log": {"level": "debug"},
                "http": {"listen": f"tcp:{httpPort}:interface=127.0.0.1"},
            },
        )
        daemon = Daemon(self, config, environ=environ)
        with open(daemon.configPath, encoding="utf-8") as f:
            configText = f.read()
        for value in (urlToken, bearer, headerValue, signingSecret, password):
            self.assertNotIn(value, configText)  # only references are in the file

        yield daemon.start()
        daemon.send(datagram("failed", _guid(), _guid()))
        yield within(ok.waitForRequests(1), DEADLINE, "the referenced delivery", daemon)
        yield within(flaky.waitForRequests(2), DEADLINE, "the signed retry", daemon)

        # Rotate the header file and reload: the new value is read and sent.
        with open(headerFile, "w", encoding="utf-8") as f:
            f.write(rotatedValue + "\n")
        mark = daemon.hangup()
        yield daemon.waitForOutput("Reloaded", DEADLINE, since=mark)
        daemon.send(datagram("failed", _guid(), _guid()))
        yield within(ok.waitForRequests(2), DEADLINE, "the delivery after the reload", daemon)
        yield until(
            lambda: deliveries_by_state(daemon.outboxPath) == {"pending": 0, "dead": 2},
            DEADLINE,
            "the refused deliveries to be given up",
            daemon,
        )

        response = yield treq.get(
            f"http://127.0.0.1:{httpPort}/deliveries", pool=HTTPConnectionPool(reactor, persistent=False)
        )
        deliveriesEndpoint = (yield treq.content(response)).decode("utf-8")
        out, err, status = yield butler_tw("deliveries", "--config", daemon.configPath, environ=environ)
        deliveriesCommand = (out + err).decode("utf-8", "replace")
        self.assertEqual(status, 0, deliveriesCommand)
        exit = yield daemon.stopCleanly()
        out, err, status = yield butler_tw("check-config", daemon.configPath, environ=environ)
        checkConfig = (out + err).decode("utf-8", "replace")
        self.assertEqual(status, 0, checkConfig)

        # What the receivers got: the secrets, resolved; signatures that verify.
        first, second = ok.requests
        for request, value in ((first, headerValue), (second, rotatedValue)):
            self.assertEqual(request.path, f"/hooks/{urlToken}")
            self.assertEqual(request.header("authorization"), f"Bearer {bearer}")
            self.assertEqual(request.header("x-api-key"), value)
            headers = {k: v[0] for k, v in request.headers.items()}
            self.assertIsNone(verify(signingSecret, headers, request.body, now=request.receivedAt))
        basic = base64.b64encode(f"svc:{password}".encode()).decode()
        attempt1, attempt2 = flaky.requests[:2]
        self.assertEqual(attempt1.header("webhook-id"), attempt2.header("webhook-id"))
        self.assertGreater(
            int(attempt2.header("webhook-timestamp") or 0), int(attempt1.header("webhook-timestamp") or 0)
        )
        for request in (attempt1, attempt2):
            self.assertEqual(request.header("authorization"), f"Basic {basic}")
            headers = {k: v[0] for k, v in request.headers.items()}
            self.assertEqual((request.method, request.body), ("GET", b""))
            self.assertIsNone(verify(signingSecret, headers, b"", now=request.receivedAt))
        self.assertNotEqual(attempt1.header("webhook-signature"), attempt2.header("webhook-signature"))

        # The world-readable file is warned about, by name; nothing secret is printed anywhere.
        output = exit.output
        self.assertIn(f"${{file:{headerFile}}}: the file is readable by every user of this host", output)
        self.assertIn(f"${{file:{headerFile}}}: the file is readable by every user", checkConfig)
        self.assertNotIn(f"${{file:{signingFile}}}: the file is readable", output)
        self.assertIn("Refused", deliveriesCommand)
        self.assertIn("Refused", deliveriesEndpoint)
        needles = {
            n.lower()
            for v in (
                urlToken,
                bearer,
                headerValue,
                rotatedValue,
                signingSecret,
                signingSecret[6:],
                password,
                basic,
            )
            for n in (v, quote(v, safe=""))
        }
        self.assertEqual(leaks(f"x {bearer} y", needles), [f"x {bearer} y"])  # the scan works
        found = {
            "daemon": leaks(output, needles),
            "/deliveries": leaks(deliveriesEndpoint, needles),
            "butler-tw deliveries": leaks(deliveriesCommand, needles),
            "butler-tw check-config": leaks(checkConfig, needles),
        }
        for path in glob.glob(os.path.join(daemon.stateDir, "*")):
            with open(path, "rb") as f:
                found[path] = leaks(f.read().decode("latin-1").replace("\0", "\n"), needles)
        leaked = [f"{where}: {line}" for where, lines in found.items() for line in lines]
        if leaked:
            self.fail("a secret was printed or stored:\n" + "\n".join(leaked))


class PathRuleTests(SynchronousTestCase):
    """Only a word-like first path segment with more path after it is shown; the rest is ``***``."""

    def test_realUrls(self) -> None:
        g = _guid()
        cases = {
            "https://hooks.slack.com/services/T0ABCDE12/B0FGHIJ34/aBcDeFgHiJkLmNoPqRsTuVwX": (
                "https://hooks.slack.com:443/services/***/***/***"
            ),
            f"https://contoso.webhook.office.com/webhookb2/{g}@{g}/IncomingWebhook/"
            f"0123456789abcdef0123456789abcdef/{g}/V2abcDEF_ghi-JKL": (
                "https://contoso.webhook.office.com:443/***/***/***/***/***/***"
            ),
            "https://discord.com/api/webhooks/123456789012345678/Ab-cD_ef123": (
                "https://discord.com:443/api/***/***/***"
            ),
            "https://hooks.zapier.com/hooks/catch/1234567/abcdefg/": (
                "https://hooks.zapier.com:443/hooks/***/***/***/"
            ),
            "https://ha.example.com/api/webhook/garage_door_secret": "https://ha.example.com:443/api/***/***",
            "https://ntfy.sh/qlikalertsacme": "https://ntfy.sh:443/***",
            "https://api.telegram.org/bot123456:ABC-DEF/sendMessage?chat_id=1": (
                "https://api.telegram.org:443/***/***"
            ),
            "https://hook.eu1.make.com/abcdefghijklmnopqrstuvwxyz123456": "https://hook.eu1.make.com:443/***",
            "https://h/my-secret-word/send": "https://h:443/my-secret-word/***",
            "http://127.0.0.1:18080/butler/failed?token=x": "http://127.0.0.1:18080/butler/***",
            "http://h/api/v1/alerts/": "http://h:80/api/***/***/",
            "http://h/hook/": "http://h:80/***/",
            "http://h/v2/x": "http://h:80/v2/***",
            "http://h/s%33cr%33t/x": "http://h:80/***/***",
            "http://h//x/y": "http://h:80//x/***",
            "http://h": "http://h:80/",
            "http://h/": "http://h:80/",
        }
        for url, expected in cases.items():
            self.assertEqual(redact_url(url), expected, url)

    def test_safePath(self) -> None:
        """``safePath``: the path as it is; user info, query and fragment still dropped."""
        self.assertEqual(
            redact_url("https://u:p@h/api/v1/alerts?token=t#f", safePath=True), "https://h:443/api/v1/alerts"
        )
        self.assertEqual(redact_url("https://h", safePath=True), "https://h:443/")
