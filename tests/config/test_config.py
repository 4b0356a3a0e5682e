# ruff: noqa: E501 - the seed example is quoted verbatim, comments and all
"""Tests for :mod:`butler_tw.config`: reading and validating the Butler config file."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import trustme
import yaml
from twisted.trial.unittest import SynchronousTestCase

from butler_tw import config
from butler_tw.config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE_LIMIT,
    DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_TIMEOUT,
    Config,
    ConfigError,
    TlsSettings,
    TrustMode,
    Webhook,
    load_config,
    loader,
    parse_config,
)
from butler_tw.core.alert import EventKind
from butler_tw.core.retry import DEFAULT_MAX_AGE, DEFAULT_SCHEDULE, RetryPolicy
from tests.support import DATA, REPO

EXAMPLE = REPO / "config" / "butler.example.yaml"

WN = "Butler.webhookNotification"
FAILURE = f"{WN}.reloadTaskFailure"
ABORTED = f"{WN}.reloadTaskAborted"

#: The "Settings in config file" block of the seed document, with a udpServerConfig
#: (which the daemon needs) and a real port instead of the ``:port`` placeholder.
SEED_YAML = """\
---
Butler:
  udpServerConfig:
    enable: true
    serverHost: 0.0.0.0
    portTaskFailure: 9998

  # Settings for notifications and messages sent using outgoing webhooks
  webhookNotification:
    enable: false
    reloadTaskFailure:
      rateLimit: 300              # Min seconds between outgoing webhook calls for a given taskID. Defaults to 5 minutes.
      webhooks:
        - description: 'This outgoing webhook is used to...'  # Informational only
          webhookURL: http://host.my.domain:port/some/path    # Outgoing webhook that Butler will call
          httpMethod: POST                                    # GET/POST/PUT
          cert:
            enable: false                                     # Set to true to use a custom CA certificate when calling the webhookURL
            rejectUnauthorized: true                          # Set to false to ignore warnings/errors caused by self-signed certificates used on the webhooks server.
            certCA: /path/to/ca-certificate.pem               # Path to the CA certificate file
        - description: 'This outgoing webhook is used to...'  # Informational only
          webhookURL: http://host.my.domain:port/some/path    # Outgoing webhook that Butler will call
          httpMethod: PUT                                     # GET/POST/PUT
          cert:
            enable: false                                     # Set to true to use a custom CA certificate when calling the webhookURL
            rejectUnauthorized: true                          # Set to false to ignore warnings/errors caused by self-signed certificates used on the webhooks server.
            certCA: /path/to/ca-certificate.pem               # Path to the CA certificate file
        - description: 'This outgoing webhook is used to...'  # Informational only
          webhookURL: http://host.my.domain:port/some/path    # Outgoing webhook that Butler will call
          httpMethod: GET                                     # GET/POST/PUT
          cert:
            enable: false                                     # Set to true to use a custom CA certificate when calling the webhookURL
            rejectUnauthorized: true                          # Set to false to ignore warnings/errors caused by self-signed certificates used on the webhooks server.
            certCA: /path/to/ca-certificate.pem               # Path to the CA certificate file
    reloadTaskAborted:
      rateLimit: 300              # Min seconds between outgoing webhook calls for a given taskID. Defaults to 5 minutes.
      webhooks:
        - description: 'This outgoing webhook is used to...'  # Informational only
          webhookURL: http://host.my.domain:port/some/path    # Outgoing webhook that Butler will call
          httpMethod: PUT                                     # GET/POST/PUT
          cert:
            enable: false                                     # Set to true to use a custom CA certificate when calling the webhookURL
            rejectUnauthorized: true                          # Set to false to ignore warnings/errors caused by self-signed certificates used on the webhooks server.
            certCA: /path/to/ca-certificate.pem               # Path to the CA certificate file
        - description: 'This outgoing webhook is used to...'  # Informational only
          webhookURL: http://host.my.domain:port/some/path    # Outgoing webhook that Butler will call
          httpMethod: POST                                    # GET/POST/PUT
          cert:
            enable: false                                     # Set to true to use a custom CA certificate when calling the webhookURL
            rejectUnauthorized: true                          # Set to false to ignore warnings/errors caused by self-signed certificates used on the webhooks server.
            certCA: /path/to/ca-certificate.pem               # Path to the CA certificate file
        - description: 'This outgoing webhook is used to...'  # Informational only
          webhookURL: http://host.my.domain:port/some/path    # Outgoing webhook that Butler will call
          httpMethod: GET                                     # GET/POST/PUT
          cert:
            enable: false                                     # Set to true to use a custom CA certificate when calling the webhookURL
            rejectUnauthorized: true                          # Set to false to ignore warnings/errors caused by self-signed certificates used on the webhooks server.
            certCA: /path/to/ca-certificate.pem               # Path to the CA certificate file
"""

#: A Butler production.yaml with many sections this daemon does not read.
PRODUCTION_YAML = """\
---
Butler:
  logLevel: info
  fileLogging: true
  logDirectory: log
  anonTelemetry: true
  configVisualisation:
    enable: true
    host: localhost
    port: 3100
    obfuscate: true
  heartbeat:
    enable: false
    remoteURL: http://my.monitoring.server/some/path/
    frequency: every 30 minutes
  dockerHealthCheck:
    enable: false
    port: 12398
  uptimeMonitor:
    enable: false
    frequency: every 15 minutes
    logLevel: verbose
    storeInInfluxdb:
      butlerSOSMemoryInfluxDb: false
  teamsNotification:
    enable: false
    reloadTaskFailure:
      enable: false
      webhookURL: https://outlook.office.com/webhook/secret
      messageType: formatted
      rateLimit: 30
  slackNotification:
    enable: false
    restMessage:
      webhookURL: https://hooks.slack.com/services/T/B/secret
    reloadTaskFailure:
      enable: false
      webhookURL: https://hooks.slack.com/services/T/B/secret
      channel: qlik-sense-alerts
      rateLimit: 60
  emailNotification:
    enable: false
    reloadTaskAborted:
      enable: false
      rateLimit: 600
      recipients:
        - ops@example.com
    smtp:
      host: smtp.example.com
      port: 587
      secure: false
      tls:
        serverName:
        ignoreTLS: false
        requireTLS: true
        rejectUnauthorized: false
      auth:
        enable: true
        user: butler@example.com
        password: secret
  webhookNotification:
    enable: true
    reloadTaskFailure:
      rateLimit: 120
      webhooks:
        - description: 'Ops receiver'
          webhookURL: https://ops.example.com/hooks/qlik?token=abc123
          httpMethod: post
          cert:
            enable: false
            rejectUnauthorized: true
            certCA: /path/to/ca-certificate.pem
    reloadTaskAborted:
      rateLimit: 300
      webhooks:
    serviceMonitor:
      rateLimit: 15
      webhooks:
        - description: 'Windows service monitor'
          webhookURL: http://host.my.domain:port/some/path
          httpMethod: PUT
          cert:
            enable: false
    qlikSenseServerLicenseMonitor:
      rateLimit: 60
      webhooks: []
    qlikSenseServerLicenseExpiryAlert:
      webhooks: []
  scheduler:
    enable: false
    configfile: config/schedule.yaml
  mqttConfig:
    enable: false
    brokerHost: <FQDN or IP of MQTT server>
    brokerPort: 1883
  udpServerConfig:
    enable: true
    serverHost: 0.0.0.0
    portTaskFailure: 9998
  restServerConfig:
    enable: false
    serverHost: <FQDN or IP of Butler server>
    serverPort: 8080
  configEngine:
    engineVersion: 12.170.2
    host: qliksense.example.com
    port: 4747
    useSSL: true
    headers:
      X-Qlik-User: UserDirectory=Internal;UserId=sa_repository
    rejectUnauthorized: false
  configQRS:
    authentication: certificates
    host: qliksense.example.com
    useSSL: true
    port: 4242
    certPaths:
      certPath: /path/client.pem
      keyPath: /path/client_key.pem
  qlikSenseVersion:
    versionMonitor:
      enable: false
  thirdPartyToolsCredentials:
    newRelic:
      - accountName: First NR account
        insertApiKey: secret
"""


def minimal(**webhookNotification: Any) -> dict[str, Any]:
    """The smallest valid document, with ``webhookNotification`` filled in."""
    doc: dict[str, Any] = {
        "Butler": {
            "udpServerConfig": {"enable": True, "serverHost": "127.0.0.1", "portTaskFailure": 9998},
        }
    }
    if webhookNotification:
        doc["Butler"]["webhookNotification"] = webhookNotification
    return doc


def hook(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "description": "receiver",
        "webhookURL": "https://receiver.example.com/hook",
        "httpMethod": "POST",
    }
    entry.update(overrides)
    return {k: v for k, v in entry.items() if v is not _DROP}


_DROP = object()


def with_hooks(*hooks: dict[str, Any], **route: Any) -> dict[str, Any]:
    return minimal(enable=True, reloadTaskFailure={"webhooks": list(hooks), **route})


class ConfigTestCase(SynchronousTestCase):
    def write(self, content: str | bytes) -> str:
        path = self.mktemp()
        data = content.encode("utf-8") if isinstance(content, str) else content
        Path(path).write_bytes(data)
        return path

    def problems(self, raw: Any, **kwargs: Any) -> tuple[str, ...]:
        e = self.assertRaises(ConfigError, parse_config, raw, **kwargs)
        return e.problems

    def load_problems(self, text: str | bytes) -> tuple[str, ...]:
        e = self.assertRaises(ConfigError, load_config, self.write(text))
        return e.problems

    def only_hook(self, config: Config) -> Webhook:
        (webhook,) = config.routes[EventKind.FAILED].webhooks
        return webhook


class ValidFileTests(ConfigTestCase):
    """Files that load, and what they load to."""

    def test_shippedExample(self) -> None:
        config = load_config(str(EXAMPLE))
        self.assertEqual(config.udpHost, "127.0.0.1")
        self.assertEqual(config.udpPort, 9998)
        self.assertTrue(config.notificationsEnabled)
        self.assertEqual(config.ignored, ("Butler.logLevel",))
        failure = config.routes[EventKind.FAILED]
        aborted = config.routes[EventKind.ABORTED]
        self.assertEqual(failure.rateLimit, 300.0)
        self.assertEqual(aborted.rateLimit, 300.0)
        self.assertEqual(
            failure.webhooks,
            (
                Webhook(
                    key="reloadTaskFailure.webhooks[0]",
                    description="Example receiver (POST)",
                    url="http://127.0.0.1:18080/butler/failed",
                    method="POST",
                ),
            ),
        )
        self.assertEqual(
            aborted.webhooks,
            (
                Webhook(
                    key="reloadTaskAborted.webhooks[0]",
                    description="Example receiver (GET)",
                    url="http://127.0.0.1:18080/butler/aborted?source=butler-tw",
                    method="GET",
                ),
            ),
        )

    def test_seedExample(self) -> None:
        """The seed's settings block, placeholder CA paths in disabled cert blocks and all."""
        config = load_config(self.write(SEED_YAML.replace(":port/", ":8080/")))
        self.assertFalse(config.notificationsEnabled)
        self.assertEqual(config.ignored, ())
        for kind, methods in (
            (EventKind.FAILED, ["POST", "PUT", "GET"]),
            (EventKind.ABORTED, ["PUT", "POST", "GET"]),
        ):
            route = config.routes[kind]
            self.assertEqual(route.kind, kind)
            self.assertEqual(route.rateLimit, 300.0)
            self.assertEqual([w.method for w in route.webhooks], methods)
            self.assertEqual(
                [w.key for w in route.webhooks], [f"{kind.value}.webhooks[{i}]" for i in range(3)]
            )
            for w in route.webhooks:
                self.assertEqual(w.url, "http://host.my.domain:8080/some/path")
                self.assertEqual(w.description, "This outgoing webhook is used to...")
                self.assertEqual(w.tls, TlsSettings())
                self.assertEqual(w.tls.mode, TrustMode.PLATFORM)
        self.assertEqual(len(config.webhooks), 6)

    def test_seedPlaceholderPort(self) -> None:
        """The seed verbatim has ``:port`` in its URLs, with webhookNotification disabled: not refused."""
        config = load_config(self.write(SEED_YAML))
        self.assertFalse(config.notificationsEnabled)
        self.assertEqual(config.webhooks, ())  # unusable as they stand, and nothing is sent

    def test_seedPlaceholderPortEnabled(self) -> None:
        """Enabled, each ``:port`` is an error at its webhook that says the port is not a number."""
        problems = self.load_problems(
            SEED_YAML.replace("enable: false\n    reloadTaskFailure", "enable: true\n    reloadTaskFailure")
        )
        self.assertEqual(
            [p.partition(": ")[0] for p in problems],
            [
                f"{WN}.{kind}.webhooks[{i}].webhookURL"
                for kind in ("reloadTaskFailure", "reloadTaskAborted")
                for i in range(3)
            ],
        )
        for p in problems:
            self.assertIn("the port is not a number", p)

    def test_productionFile(self) -> None:
        """A real Butler production.yaml: every other section is listed as ignored."""
        config = load_config(self.write(PRODUCTION_YAML))
        self.assertEqual(
            config.ignored,
            (
                "Butler.logLevel",
                "Butler.fileLogging",
                "Butler.logDirectory",
                "Butler.anonTelemetry",
                "Butler.configVisualisation",
                "Butler.heartbeat",
                "Butler.dockerHealthCheck",
                "Butler.uptimeMonitor",
                "Butler.teamsNotification",
                "Butler.slackNotification",
                "Butler.emailNotification",
                "Butler.scheduler",
                "Butler.mqttConfig",
                "Butler.restServerConfig",
                "Butler.configEngine",
                "Butler.configQRS",
                "Butler.qlikSenseVersion",
                "Butler.thirdPartyToolsCredentials",
                f"{WN}.serviceMonitor",
                f"{WN}.qlikSenseServerLicenseMonitor",
                f"{WN}.qlikSenseServerLicenseExpiryAlert",
            ),
        )
        self.assertEqual((config.udpHost, config.udpPort), ("0.0.0.0", 9998))
        self.assertTrue(config.notificationsEnabled)
        self.assertEqual(config.routes[EventKind.FAILED].rateLimit, 120.0)
        self.assertEqual(config.routes[EventKind.ABORTED].rateLimit, 300.0)
        self.assertEqual(config.routes[EventKind.ABORTED].webhooks, ())
        webhook = self.only_hook(config)
        self.assertEqual(webhook.method, "POST")
        self.assertEqual(webhook.url, "https://ops.example.com/hooks/qlik?token=abc123")
        self.assertEqual(webhook.name, "Ops receiver")

    def test_otherTopLevelSectionsRefused(self) -> None:
        """Butler's schema allows only ``Butler`` at the top level (and we add ``butlerWebhook``)."""
        doc = minimal()
        doc["Other"] = {"x": 1}
        self.assertEqual(self.problems(doc), ("Other: unknown key (known keys: Butler, butlerWebhook)",))

    def test_minimal(self) -> None:
        config = parse_config(minimal())
        self.assertEqual(
            config,
            Config(
                udpHost="127.0.0.1",
                udpPort=9998,
                notificationsEnabled=False,
                routes={kind: config.routes[kind] for kind in EventKind},
                shutdownGrace=DEFAULT_SHUTDOWN_GRACE,
                ignored=(),
            ),
        )
        for kind in EventKind:
            self.assertEqual(config.routes[kind].kind, kind)
            self.assertEqual(config.routes[kind].rateLimit, 300.0)
            self.assertEqual(config.routes[kind].webhooks, ())
        self.assertEqual(config.webhooks, ())

    def test_yamlBooleans(self) -> None:
        """YAML 1.1 booleans (yes/on) are booleans, as Butler's js-yaml reads them... and as we do."""
        config = load_config(
            self.write(
                textwrap.dedent(
                    """\
                    Butler:
                      udpServerConfig: {enable: yes, serverHost: localhost, portTaskFailure: 9998}
                      webhookNotification: {enable: on}
                    """
                )
            )
        )
        self.assertTrue(config.notificationsEnabled)

    def test_webhooksNullOrEmpty(self) -> None:
        for hooks in (None, []):
            config = parse_config(minimal(enable=True, reloadTaskFailure={"rateLimit": 5, "webhooks": hooks}))
            self.assertEqual(config.routes[EventKind.FAILED].webhooks, ())
            self.assertEqual(config.routes[EventKind.FAILED].rateLimit, 5.0)

    def test_routeMissingOrNull(self) -> None:
        config = parse_config(minimal(enable=True, reloadTaskFailure=None))
        self.assertEqual(config.routes[EventKind.FAILED].webhooks, ())
        self.assertEqual(config.routes[EventKind.ABORTED].webhooks, ())
        self.assertTrue(config.notificationsEnabled)

    def test_rateLimitDefault(self) -> None:
        config = parse_config(with_hooks(hook()))
        self.assertEqual(config.routes[EventKind.FAILED].rateLimit, 300.0)
        self.assertEqual(DEFAULT_RATE_LIMIT, 300.0)

    def test_rateLimitZeroAndFloat(self) -> None:
        self.assertEqual(parse_config(with_hooks(rateLimit=0)).routes[EventKind.FAILED].rateLimit, 0.0)
        self.assertEqual(parse_config(with_hooks(rateLimit=2.5)).routes[EventKind.FAILED].rateLimit, 2.5)

    def test_webhookDefaults(self) -> None:
        webhook = self.only_hook(parse_config(with_hooks(hook(description=_DROP))))
        self.assertEqual(
            webhook,
            Webhook(
                key="reloadTaskFailure.webhooks[0]",
                description="",
                url="https://receiver.example.com/hook",
                method="POST",
                tls=TlsSettings(),
                timeout=10.0,
                concurrency=DEFAULT_CONCURRENCY,
                retry=RetryPolicy(DEFAULT_SCHEDULE, DEFAULT_MAX_AGE),
            ),
        )
        self.assertEqual(webhook.name, "reloadTaskFailure.webhooks[0]")
        self.assertEqual(DEFAULT_TIMEOUT, 10.0)

    def test_timeoutPerWebhook(self) -> None:
        config = parse_config(with_hooks(hook(timeout=30), hook(timeout=0.5), hook()))
        self.assertEqual([w.timeout for w in config.webhooks], [30.0, 0.5, 10.0])

    def test_concurrencyPerWebhook(self) -> None:
        self.assertEqual(self.only_hook(parse_config(with_hooks(hook(concurrency=2)))).concurrency, 2)

    def test_methodAnyCase(self) -> None:
        config = parse_config(
            with_hooks(hook(httpMethod="get"), hook(httpMethod="Put"), hook(httpMethod="pOsT"))
        )
        self.assertEqual([w.method for w in config.webhooks], ["GET", "PUT", "POST"])

    def test_webhookKeys(self) -> None:
        doc = with_hooks(hook(), hook())
        doc["Butler"]["webhookNotification"]["reloadTaskAborted"] = {"webhooks": [hook()]}
        config = parse_config(doc)
        self.assertEqual(
            [w.key for w in config.webhooks],
            [
                "reloadTaskFailure.webhooks[0]",
                "reloadTaskFailure.webhooks[1]",
                "reloadTaskAborted.webhooks[0]",
            ],
        )

    def test_portUrls(self) -> None:
        config = parse_config(
            with_hooks(hook(webhookURL="HTTPS://h:1/"), hook(webhookURL="http://10.0.0.5:8080/x"))
        )
        self.assertEqual([w.url for w in config.webhooks], ["HTTPS://h:1/", "http://10.0.0.5:8080/x"])

    def test_urlsTheHttpClientRefuses(self) -> None:
        """What treq would refuse at send time is refused at start-up instead."""
        where = f"{FAILURE}.webhooks[0].webhookURL"
        self.assertEqual(
            self.problems(with_hooks(hook(webhookURL="http://[::1]:8080/x"))),
            (f"{where}: IPv6 address literals are not supported by the HTTP client: use a host name",),
        )
        for url in ("http://ho_st.corp/x", "http://-x-/y"):
            (problem,) = self.problems(with_hooks(hook(webhookURL=url)))
            self.assertTrue(problem.startswith(f"{where}: the host name is not valid"), problem)

    def test_shutdownGrace(self) -> None:
        doc = minimal()
        doc["butlerWebhook"] = {"shutdownGracePeriod": 3}
        config = parse_config(doc)
        self.assertEqual(config.shutdownGrace, 3.0)
        self.assertEqual(config.ignored, ())


class RetryPolicyConfigTests(ConfigTestCase):
    """butlerWebhook.delivery sets the defaults; a webhook may override them."""

    def test_defaults(self) -> None:
        webhook = self.only_hook(parse_config(with_hooks(hook())))
        self.assertEqual(webhook.retry, RetryPolicy())
        self.assertEqual(webhook.retry.schedule, (0.0, 5.0, 30.0, 120.0, 600.0, 1800.0))
        self.assertEqual(webhook.retry.maxAge, 3600.0)

    def test_globalDelivery(self) -> None:
        doc = with_hooks(hook(), hook(retrySchedule=[0, 1], maxAge=60), hook(maxAge=10))
        doc["butlerWebhook"] = {"delivery": {"retrySchedule": [0, 10, 20], "maxAge": 120}}
        config = parse_config(doc)
        self.assertEqual(
            [w.retry for w in config.webhooks],
            [
                RetryPolicy((0.0, 10.0, 20.0), 120.0),
                RetryPolicy((0.0, 1.0), 60.0),
                RetryPolicy((0.0, 10.0, 20.0), 10.0),
            ],
        )

    def test_perWebhookWithoutGlobal(self) -> None:
        webhook = self.only_hook(parse_config(with_hooks(hook(retrySchedule=[0, 0.5]))))
        self.assertEqual(webhook.retry, RetryPolicy((0, 0.5), 3600.0))

    def test_badSchedules(self) -> None:
        bad = "expected a non-empty list of seconds (numbers >= 0)"
        for schedule, message in (
            ([], bad),
            ("0, 5", bad),
            ([0, -1], bad),
            ([0, "5"], bad),
            ([0, True], bad),
            ([0, 30, 5], "must be in increasing order"),
            ([0, float("nan")], bad),
            ([0, float("inf")], bad),
            ([5, 30], "must start with 0: the first attempt is made at once"),
        ):
            self.assertEqual(
                self.problems(with_hooks(hook(retrySchedule=schedule))),
                (f"{FAILURE}.webhooks[0].retrySchedule: {message}",),
                schedule,
            )

    def test_badGlobalDelivery(self) -> None:
        doc = minimal()
        doc["butlerWebhook"] = {
            "delivery": {"retrySchedule": [5, 0], "maxAge": 0, "retries": 3},
            "shutdown": 1,
        }
        self.assertEqual(
            self.problems(doc),
            (
                "butlerWebhook.shutdown: unknown key (known keys: shutdownGracePeriod, stateDir, store, instanceName, leaseSeconds, intakeProcess, storeProcess, maxBufferedAlerts, maxPendingInMemory, delivery, http, log)",
                "butlerWebhook.delivery.retries: unknown key (known keys: retrySchedule, maxAge, deadLetterRetention)",
                "butlerWebhook.delivery.retrySchedule: must be in increasing order",
                "butlerWebhook.delivery.maxAge: must be between 1 and 2592000, got 0",
            ),
        )

    def test_stateAndDeadLetterDefaults(self) -> None:
        config = parse_config(minimal())
        self.assertEqual(config.stateDir, "./state")
        self.assertEqual(config.deadLetterRetention, 7 * 86400)
        self.assertEqual(config.dedupTtl, 600)

    def test_stateAndDeadLetterSettings(self) -> None:
        doc = minimal()
        doc["butlerWebhook"] = {"stateDir": "/var/lib/butler-tw", "delivery": {"deadLetterRetention": 3600}}
        config = parse_config(doc)
        self.assertEqual(config.stateDir, "/var/lib/butler-tw")
        self.assertEqual(config.deadLetterRetention, 3600)

    def test_deduplication(self) -> None:
        """Butler's own udpServerConfig.deduplication keys: enable, ttlMinutes."""
        doc = minimal()
        doc["Butler"]["udpServerConfig"]["deduplication"] = {"enable": True, "ttlMinutes": 2}
        self.assertEqual(parse_config(doc).dedupTtl, 120)
        doc["Butler"]["udpServerConfig"]["deduplication"] = {"enable": False, "ttlMinutes": 2}
        self.assertEqual(parse_config(doc).dedupTtl, 0)
        doc["Butler"]["udpServerConfig"]["deduplication"] = {"ttlMinutes": "ten"}
        self.assertEqual(
            self.problems(doc),
            ("Butler.udpServerConfig.deduplication.ttlMinutes: expected a number, got a string",),
        )


class ErrorTests(ConfigTestCase):
    """Every problem names its full key path; all are reported together."""

    def test_errorMessage(self) -> None:
        e = ConfigError("/etc/butler.yaml", ["a: one", "b: two"])
        self.assertEqual(e.problems, ("a: one", "b: two"))
        self.assertEqual(e.source, "/etc/butler.yaml")
        self.assertEqual(str(e), "/etc/butler.yaml: 2 problems in the configuration:\n  - a: one\n  - b: two")

    def test_fullKeyPath(self) -> None:
        problems = self.problems(with_hooks(hook(), hook(), hook(httpMethod="DELETE")))
        self.assertEqual(
            problems,
            (f"{FAILURE}.webhooks[2].httpMethod: must be GET, POST or PUT (any case), got 'DELETE'",),
        )
        self.assertTrue(
            problems[0].startswith("Butler.webhookNotification.reloadTaskFailure.webhooks[2].httpMethod")
        )

    def test_sourceInMessage(self) -> None:
        e = self.assertRaises(ConfigError, parse_config, {}, source="/etc/x.yaml")
        self.assertEqual(str(e), "/etc/x.yaml: 1 problem in the configuration:\n  - Butler: missing")

    def test_severalAtOnce(self) -> None:
        doc = with_hooks(
            hook(httpMethod="PATCH"),
            hook(webhookURL="ftp://example.com/x", timeout="10"),
            hook(webhookURL=_DROP, httpMethod=_DROP),
            rateLimit="300",
        )
        doc["Butler"]["udpServerConfig"]["portTaskFailure"] = 70000
        doc["Butler"]["webhookNotification"]["reloadTaskAborted"] = {"webhooks": {"url": "x"}}
        self.assertEqual(
            self.problems(doc),
            (
                "Butler.udpServerConfig.portTaskFailure: expected a port number 1-65535, got a number (70000)",
                f"{FAILURE}.rateLimit: expected a number, got a string",
                f"{FAILURE}.webhooks[0].httpMethod: must be GET, POST or PUT (any case), got 'PATCH'",
                f"{FAILURE}.webhooks[1].webhookURL: must start with http:// or https:// (scheme is 'ftp')",
                f"{FAILURE}.webhooks[1].timeout: expected a number, got a string",
                f"{FAILURE}.webhooks[2].webhookURL: missing",
                f"{FAILURE}.webhooks[2].httpMethod: missing",
                f"{ABORTED}.webhooks: expected a list of webhooks, got a mapping",
            ),
        )

    def test_quotedNumberRateLimit(self) -> None:
        problems = self.load_problems(
            textwrap.dedent(
                """\
                Butler:
                  udpServerConfig: {enable: true, serverHost: h, portTaskFailure: 9998}
                  webhookNotification:
                    enable: true
                    reloadTaskAborted:
                      rateLimit: '300'
                """
            )
        )
        self.assertEqual(problems, (f"{ABORTED}.rateLimit: expected a number, got a string",))

    def test_quotedYesIsNotBoolean(self) -> None:
        problems = self.load_problems(
            textwrap.dedent(
                """\
                Butler:
                  udpServerConfig: {enable: true, serverHost: h, portTaskFailure: 9998}
                  webhookNotification:
                    enable: 'yes'
                """
            )
        )
        self.assertEqual(problems, (f"{WN}.enable: expected true or false, got a string",))

    def test_booleanWhereNumberExpected(self) -> None:
        self.assertEqual(
            self.problems(with_hooks(rateLimit=True)),
            (f"{FAILURE}.rateLimit: expected a number, got a boolean (true)",),
        )

    def test_rateLimitRange(self) -> None:
        self.assertEqual(
            self.problems(with_hooks(rateLimit=-1)),
            (f"{FAILURE}.rateLimit: must be between 0 and 31622400, got -1",),
        )
        self.assertEqual(
            self.problems(with_hooks(rateLimit=float("nan"))),
            (f"{FAILURE}.rateLimit: expected a number, got a number (nan)",),
        )

    def test_listInsteadOfMapping(self) -> None:
        doc = minimal()
        doc["Butler"]["webhookNotification"] = [{"enable": True}]
        self.assertEqual(self.problems(doc), (f"{WN}: expected a mapping, got a list",))

    def test_webhookEntryNotMapping(self) -> None:
        self.assertEqual(
            self.problems(with_hooks("http://example.com/", None)),  # type: ignore[arg-type]
            (
                f"{FAILURE}.webhooks[0]: expected a mapping, got a string",
                f"{FAILURE}.webhooks[1]: missing",
            ),
        )

    def test_certNotMapping(self) -> None:
        self.assertEqual(
            self.problems(with_hooks(hook(cert=[True]))),
            (f"{FAILURE}.webhooks[0].cert: expected a mapping, got a list",),
        )

    def test_wrongTypes(self) -> None:
        self.assertEqual(
            self.problems(
                with_hooks(hook(webhookURL=8080, httpMethod=["POST"], description=3, concurrency=1.5))
            ),
            (
                f"{FAILURE}.webhooks[0].description: expected a string, got a number (3)",
                f"{FAILURE}.webhooks[0].webhookURL: expected a string, got a number (8080)",
                f"{FAILURE}.webhooks[0].httpMethod: expected a string, got a list",
                f"{FAILURE}.webhooks[0].concurrency: must be a whole number",
            ),
        )

    def test_unknownMethod(self) -> None:
        self.assertEqual(
            self.problems(with_hooks(hook(httpMethod="HEAD"))),
            (f"{FAILURE}.webhooks[0].httpMethod: must be GET, POST or PUT (any case), got 'HEAD'",),
        )

    def test_missingButler(self) -> None:
        self.assertEqual(
            self.problems({"butler": {}}), ("butler: unknown key (did you mean 'Butler'?)", "Butler: missing")
        )
        self.assertEqual(self.problems({"Butler": None}), ("Butler: missing",))
        self.assertEqual(self.problems({"Butler": "x"}), ("Butler: expected a mapping, got a string",))

    def test_topLevelNotMapping(self) -> None:
        self.assertEqual(self.problems(None), ("(top level): missing",))
        self.assertEqual(self.problems(["Butler"]), ("(top level): expected a mapping, got a list",))

    def test_emptyFile(self) -> None:
        self.assertEqual(self.load_problems(""), ("the file is empty",))
        self.assertEqual(self.load_problems("\n  \n"), ("the file is empty",))
        self.assertEqual(
            self.load_problems("# only a comment\n---\n"), ("the file is empty (it holds only comments)",)
        )

    def test_udpDisabled(self) -> None:
        doc = minimal()
        doc["Butler"]["udpServerConfig"]["enable"] = False
        self.assertEqual(
            self.problems(doc),
            (
                "Butler.udpServerConfig.enable: is false or missing: this daemon receives alerts over UDP only,"
                " so it has nothing to do. Set it to true.",
            ),
        )

    def test_udpEnableMissing(self) -> None:
        doc = minimal()
        del doc["Butler"]["udpServerConfig"]["enable"]
        problems = self.problems(doc)
        self.assertEqual(len(problems), 1)
        self.assertTrue(
            problems[0].startswith("Butler.udpServerConfig.enable: is false or missing"), problems
        )

    def test_udpSectionMissing(self) -> None:
        self.assertEqual(
            self.problems({"Butler": {"logLevel": "info"}}), ("Butler.udpServerConfig: missing",)
        )

    def test_udpFields(self) -> None:
        doc = minimal()
        doc["Butler"]["udpServerConfig"] = {"enable": True}
        self.assertEqual(
            self.problems(doc),
            (
                "Butler.udpServerConfig.serverHost: missing",
                "Butler.udpServerConfig.portTaskFailure: missing (Qlik's log appender usually sends to 9998)",
            ),
        )

    def test_portRange(self) -> None:
        for port, kind in (
            (0, "a number (0)"),
            (65536, "a number (65536)"),
            ("9998", "a string"),
            (True, "a boolean (true)"),
            (99.5, "a number (99.5)"),
        ):
            doc = minimal()
            doc["Butler"]["udpServerConfig"]["portTaskFailure"] = port
            self.assertEqual(
                self.problems(doc),
                (f"Butler.udpServerConfig.portTaskFailure: expected a port number 1-65535, got {kind}",),
                port,
            )
        for port in (1, 65535):
            doc = minimal()
            doc["Butler"]["udpServerConfig"]["portTaskFailure"] = port
            self.assertEqual(parse_config(doc).udpPort, port)

    def test_timeoutRange(self) -> None:
        self.assertEqual(
            self.problems(with_hooks(hook(timeout=0))),
            (f"{FAILURE}.webhooks[0].timeout: must be between 0.1 and 600, got 0",),
        )


class UrlTests(ConfigTestCase):
    """webhookURL checks; an error never echoes the URL, which may hold a token."""

    SECRET = "s3cr3tT0ken"

    def url_problems(self, url: str) -> tuple[str, ...]:
        problems = self.problems(with_hooks(hook(webhookURL=url)))
        for p in problems:
            self.assertNotIn(self.SECRET, p)
            self.assertNotIn(url, p)
        return problems

    def test_notHttp(self) -> None:
        for url, scheme in (
            (f"ftp://example.com/{self.SECRET}", "ftp"),
            (f"file:///etc/{self.SECRET}", "file"),
            (f"example.com/hook?token={self.SECRET}", ""),
            (f"javascript:alert('{self.SECRET}')", "javascript"),
        ):
            self.assertEqual(
                self.url_problems(url),
                (
                    f"{FAILURE}.webhooks[0].webhookURL: must start with http:// or https:// (scheme is {scheme[:10]!r})",
                ),
            )

    def test_whiteSpace(self) -> None:
        for url in (
            f"https://example.com/hook?token={self.SECRET} ",
            f" https://example.com/{self.SECRET}",
            f"https://example.com/a b/{self.SECRET}",
            f"https://example.com/\t{self.SECRET}",
        ):
            self.assertEqual(
                self.url_problems(url), (f"{FAILURE}.webhooks[0].webhookURL: contains white space",)
            )

    def test_badPortOrHost(self) -> None:
        for url, problem in (
            (f"https://example.com:{self.SECRET}/hook", "the port is not a number"),
            (f"https://user:pw@example.com:{self.SECRET}/", "the port is not a number"),
            (f"https://[{self.SECRET}]/hook", "not a valid URL (bad port or host)"),
            (f"https://[::1/{self.SECRET}", "not a valid URL (bad port or host)"),
            ("https://example.com:99999/", "the port must be between 1 and 65535"),
        ):
            self.assertEqual(self.url_problems(url), (f"{FAILURE}.webhooks[0].webhookURL: {problem}",), url)

    def test_templatePlaceholderPort(self) -> None:
        """Butler's template's ``:port``, in an enabled block: the port is not a number."""
        (problem,) = self.url_problems("http://host.my.domain:port/some/path")
        self.assertTrue(
            problem.startswith(
                f"{FAILURE}.webhooks[0].webhookURL: the port is not a number (':port' is the placeholder"
            ),
            problem,
        )

    def test_noHost(self) -> None:
        for url in (f"https:///{self.SECRET}", f"http://{self.SECRET}@/"):
            self.assertEqual(self.url_problems(url), (f"{FAILURE}.webhooks[0].webhookURL: has no host name",))

    def test_tokenUrlAccepted(self) -> None:
        url = f"https://user:{self.SECRET}@example.com:8443/hooks/{self.SECRET}?token={self.SECRET}#frag"
        self.assertEqual(self.only_hook(parse_config(with_hooks(hook(webhookURL=url)))).url, url)


class UnknownKeyTests(ConfigTestCase):
    """Typos in a webhook entry or its cert block are refused, with a hint."""

    def test_webhookTypo(self) -> None:
        self.assertEqual(
            self.problems(with_hooks(hook(webhookUrl="https://x.example.com/", webhookURL=_DROP))),
            (
                f"{FAILURE}.webhooks[0].webhookUrl: unknown key (did you mean 'webhookURL'?)",
                f"{FAILURE}.webhooks[0].webhookURL: missing",
            ),
        )

    def test_webhookUnknown(self) -> None:
        """Butler ignores unknown keys in a webhook entry: so do we, with a warning."""
        c = parse_config(with_hooks(hook(extraHeaders={"X": "y"}, enabel=True)))
        self.assertEqual(
            c.warnings(),
            [
                f"{FAILURE}.webhooks[0].extraHeaders: unknown key, ignored (Butler ignores it too)",
                f"{FAILURE}.webhooks[0].enabel: unknown key, ignored (Butler ignores it too)",
            ],
        )

    def test_webhookUnknownWarnedOnce(self) -> None:
        c = parse_config(with_hooks(hook(htttpMethod="GET"), hook(htttpMethod="GET")))
        self.assertEqual(
            c.warnings(),
            [
                f"{FAILURE}.webhooks[{i}].htttpMethod: unknown key, ignored (Butler ignores it too) "
                "(did you mean 'httpMethod'?)"
                for i in (0, 1)
            ],
        )

    def test_certTypo(self) -> None:
        self.assertEqual(
            self.problems(
                with_hooks(hook(cert={"enable": False, "certCa": "/x.pem", "RejectUnauthorized": True}))
            ),
            (
                f"{FAILURE}.webhooks[0].cert.certCa: unknown key (did you mean 'certCA'?)",
                f"{FAILURE}.webhooks[0].cert.RejectUnauthorized: unknown key (did you mean 'rejectUnauthorized'?)",
            ),
        )

    def test_certUnknown(self) -> None:
        self.assertEqual(
            self.problems(with_hooks(hook(cert={"enable": False, "key": "/k.pem"}))),
            (
                f"{FAILURE}.webhooks[0].cert.key: unknown key (known keys: enable, rejectUnauthorized, certCA, "
                "clientCert, clientKey, minVersion, serverName)",
            ),
        )


class TlsTests(ConfigTestCase):
    """cert blocks: CA files are read and checked at start-up."""

    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.pem = self.ca.cert_pem.bytes()

    def cert_config(self, **cert: Any) -> Config:
        return parse_config(with_hooks(hook(cert=cert)))

    def cert_problems(self, **cert: Any) -> tuple[str, ...]:
        return self.problems(with_hooks(hook(cert=cert)))

    def test_customCa(self) -> None:
        path = self.write(self.pem)
        webhook = self.only_hook(self.cert_config(enable=True, rejectUnauthorized=True, certCA=path))
        self.assertEqual(webhook.tls, TlsSettings(TrustMode.CUSTOM_CA, (self.pem.strip(),), path))

    def test_rejectUnauthorizedDefaultsTrue(self) -> None:
        path = self.write(self.pem)
        self.assertEqual(
            self.only_hook(self.cert_config(enable=True, certCA=path)).tls.mode, TrustMode.CUSTOM_CA
        )

    def test_noVerify(self) -> None:
        path = self.write(self.pem)
        tls = self.only_hook(self.cert_config(enable=True, rejectUnauthorized=False, certCA=path)).tls
        self.assertEqual(tls.mode, TrustMode.NO_VERIFY)
        self.assertEqual(tls.caFile, path)

    def test_bundle(self) -> None:
        other = trustme.CA().cert_pem.bytes()
        path = self.write(b"# my CAs\n" + self.pem + b"\nsome text\n" + other)
        tls = self.only_hook(self.cert_config(enable=True, certCA=path)).tls
        self.assertEqual(len(tls.caCertificates), 2)
        self.assertEqual(tls.caCertificates, (self.pem.strip(), other.strip()))

    def test_crlfBundle(self) -> None:
        path = self.write(self.pem.replace(b"\n", b"\r\n"))
        tls = self.only_hook(self.cert_config(enable=True, certCA=path)).tls
        self.assertEqual(len(tls.caCertificates), 1)

    def test_disabledIgnoresRest(self) -> None:
        """cert.enable false: CA path not read, rejectUnauthorized not applied (as in Butler)."""
        for cert in (
            {"enable": False, "rejectUnauthorized": False, "certCA": "/does/not/exist.pem"},
            {},
        ):
            self.assertEqual(self.only_hook(self.cert_config(**cert)).tls, TlsSettings(), cert)

    def test_disabledIsStillCheckedForShape(self) -> None:
        """As Butler's schema does: the types of a disabled cert block's keys are checked."""
        self.assertEqual(
            self.problems(with_hooks(hook(cert={"rejectUnauthorized": "no", "certCA": 5}))),
            (
                f"{FAILURE}.webhooks[0].cert.rejectUnauthorized: expected true or false, got a string",
                f"{FAILURE}.webhooks[0].cert.certCA: expected a string, got a number (5)",
            ),
        )

    def test_caMissing(self) -> None:
        path = self.mktemp()
        self.assertEqual(
            self.cert_problems(enable=True, certCA=path),
            (f"{FAILURE}.webhooks[0].cert.certCA: file not found: {path}",),
        )

    def test_caPathMissing(self) -> None:
        self.assertEqual(
            self.cert_problems(enable=True, rejectUnauthorized=True),
            (f"{FAILURE}.webhooks[0].cert.certCA: missing",),
        )

    def test_caUnreadable(self) -> None:
        path = self.mktemp()
        os.mkdir(path)
        self.assertEqual(
            self.cert_problems(enable=True, certCA=path),
            (f"{FAILURE}.webhooks[0].cert.certCA: cannot read {path}: Is a directory",),
        )

    def test_caWithoutCertificate(self) -> None:
        key_only = self.ca.private_key_pem.bytes()
        for content in (b"", b"not a certificate\n", key_only):
            path = self.write(content)
            self.assertEqual(
                self.cert_problems(enable=True, certCA=path),
                (
                    f"{FAILURE}.webhooks[0].cert.certCA: {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                ),
                content,
            )

    def test_caGarbagePem(self) -> None:
        path = self.write(
            self.pem + b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
        )
        self.assertEqual(
            self.cert_problems(enable=True, certCA=path),
            (f"{FAILURE}.webhooks[0].cert.certCA: certificate 2 in {path} cannot be read",),
        )

    def test_enableNotBoolean(self) -> None:
        self.assertEqual(
            self.cert_problems(enable="true", certCA="/x.pem"),
            (f"{FAILURE}.webhooks[0].cert.enable: expected true or false, got a string",),
        )

    def test_rejectUnauthorizedNotBoolean(self) -> None:
        path = self.write(self.pem)
        self.assertEqual(
            self.cert_problems(enable=True, rejectUnauthorized="false", certCA=path),
            (f"{FAILURE}.webhooks[0].cert.rejectUnauthorized: expected true or false, got a string",),
        )

    def test_readerInjected(self) -> None:
        """CA files are read through the injected reader."""
        seen: list[str] = []

        def reader(path: str) -> bytes:
            seen.append(path)
            return self.pem

        config = parse_config(
            with_hooks(hook(cert={"enable": True, "certCA": "/virtual/ca.pem"})), reader=reader
        )
        self.assertEqual(seen, ["/virtual/ca.pem"])
        self.assertEqual(self.only_hook(config).tls.caCertificates, (self.pem.strip(),))


class YamlFileTests(ConfigTestCase):
    """load_config: reading and YAML-level problems."""

    def test_duplicateKey(self) -> None:
        problems = self.load_problems(
            textwrap.dedent(
                """\
                Butler:
                  udpServerConfig: {enable: true, serverHost: h, portTaskFailure: 9998}
                  webhookNotification:
                    enable: true
                    enable: false
                """
            )
        )
        self.assertEqual(len(problems), 1)
        self.assertEqual(problems, ("not valid YAML: line 5, column 5: duplicate key 'enable'",))

    def test_duplicateTopLevelSection(self) -> None:
        problems = self.load_problems("Butler: {}\nButler: {}\n")
        self.assertEqual(problems, ("not valid YAML: line 2, column 1: duplicate key 'Butler'",))

    def test_unhashableKey(self) -> None:
        """A complex key is a YAML problem, not a crash."""
        problems = self.load_problems("? [a, b]\n: 1\n")
        self.assertEqual(len(problems), 1)
        self.assertEqual(problems, ("not valid YAML: line 1, column 3: found unhashable key",))

    def test_mergeKeyOverrideIsNotADuplicate(self) -> None:
        """A key overriding one brought in by ``<<:`` is deliberate."""
        raw = yaml.load("base: &b {a: 1, b: 2}\nx:\n  <<: *b\n  a: 3\n", Loader=loader._StrictLoader)
        self.assertEqual(raw["x"], {"a": 3, "b": 2})

    def test_yamlErrorDoesNotQuoteTheLine(self) -> None:
        """PyYAML quotes the offending line; that line may hold a URL token."""
        problems = self.load_problems("Butler:\n  url: [http://h/p?token=SECRET-TOKEN\n  x: 1\n")
        self.assertEqual(len(problems), 1)
        self.assertTrue(problems[0].startswith("not valid YAML: line "), problems)
        self.assertNotIn("SECRET-TOKEN", problems[0])

    def test_notYaml(self) -> None:
        problems = self.load_problems("Butler: [unclosed\n  x: {\n")
        self.assertEqual(len(problems), 1)
        self.assertTrue(problems[0].startswith("not valid YAML: "), problems)

    def test_binaryFile(self) -> None:
        problems = self.load_problems(b"Butler:\n  logLevel: \x80\x81\xc3\n")
        self.assertEqual(len(problems), 1)
        self.assertTrue(problems[0].startswith("not valid YAML: "), problems)

    def test_yamlScalar(self) -> None:
        self.assertEqual(
            self.load_problems("just text\n"), ("(top level): expected a mapping, got a string",)
        )

    def test_unsafeTagsRefused(self) -> None:
        problems = self.load_problems("!!python/object/apply:os.system ['true']\n")
        self.assertTrue(problems[0].startswith("not valid YAML: "), problems)

    def test_missingFile(self) -> None:
        path = self.mktemp()
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(e.source, path)
        self.assertEqual(e.problems, ("cannot read the file: No such file or directory",))

    def test_directory(self) -> None:
        path = self.mktemp()
        os.mkdir(path)
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(e.problems, ("cannot read the file: Is a directory",))

    def test_unreadable(self) -> None:
        def reader(path: str) -> bytes:
            raise PermissionError(13, "Permission denied", path)

        e = self.assertRaises(ConfigError, load_config, "/etc/butler/production.yaml", reader=reader)
        self.assertEqual(e.source, "/etc/butler/production.yaml")
        self.assertEqual(e.problems, ("cannot read the file: Permission denied",))

    def test_sourceIsPath(self) -> None:
        path = self.write("Butler: {}\n")
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(e.source, path)
        self.assertEqual(e.problems, ("Butler.udpServerConfig: missing",))

    def test_utf8Description(self) -> None:
        text = (
            "Butler:\n"
            "  udpServerConfig: {enable: true, serverHost: h, portTaskFailure: 9998}\n"
            "  webhookNotification:\n"
            "    reloadTaskFailure:\n"
            "      webhooks:\n"
            "        - {description: 'Larm f\u00f6r Malm\u00f6 \U0001f6a8', webhookURL: 'http://h/', httpMethod: GET}\n"
        )
        config = load_config(self.write(text))
        self.assertEqual(self.only_hook(config).description, "Larm f\u00f6r Malm\u00f6 \U0001f6a8")
        self.assertFalse(config.notificationsEnabled)


class UdpHardeningTests(ConfigTestCase):
    """Butler.udpServerConfig.receiveBufferBytes and maxMessageSize."""

    def test_badValues(self) -> None:
        doc = minimal()
        doc["Butler"]["udpServerConfig"].update(receiveBufferBytes="8M", maxMessageSize=70000)
        self.assertEqual(
            self.problems(doc),
            (
                "Butler.udpServerConfig.receiveBufferBytes: expected a number, got a string",
                "Butler.udpServerConfig.maxMessageSize: must be between 256 and 65535, got 70000",
            ),
        )


class WebhookNameTests(ConfigTestCase):
    """``name``: how logs and metric labels call a webhook; else its description, else its key."""

    def test_nameDescriptionKey(self) -> None:
        self.assertEqual(self.only_hook(parse_config(with_hooks(hook(name=" Teams ")))).name, "Teams")
        self.assertEqual(self.only_hook(parse_config(with_hooks(hook(description="Chat")))).name, "Chat")
        self.assertEqual(
            self.only_hook(parse_config(with_hooks(hook(description=_DROP)))).name,
            "reloadTaskFailure.webhooks[0]",
        )


class HttpListenWarningTests(ConfigTestCase):
    def test_reachableFromOtherHostsIsWarned(self) -> None:
        for listen, warned in (
            ("tcp:9090:interface=127.0.0.1", False),
            ("tcp6:9090:interface=\\:\\:1", False),
            ("unix:/run/butler-tw.sock", False),
            ("tcp:9090", True),
            ("tcp:9090:interface=0.0.0.0", True),
        ):
            doc = with_hooks(hook())
            doc["butlerWebhook"] = {"http": {"listen": listen}}
            warnings = parse_config(doc).warnings()
            self.assertEqual(any("no authentication" in w for w in warnings), warned, listen)


class LogFullPathTests(ConfigTestCase):
    """``logFullPath: true``: the owner marks the URL's path safe to log; user info and query never are."""

    def test_defaultMasksPath(self) -> None:
        w = self.only_hook(
            parse_config(with_hooks(hook(webhookURL="https://u:pw@h.example/qlik/alerts/in?t=TOKEN")))
        )
        self.assertFalse(w.logFullPath)
        self.assertEqual(w.loggableUrl, "https://h.example:443/qlik/***/***")

    def test_markedSafe(self) -> None:
        doc = with_hooks(hook(webhookURL="https://u:pw@h.example/qlik/alerts/in?t=TOKEN", logFullPath=True))
        self.assertEqual(
            self.only_hook(parse_config(doc)).loggableUrl, "https://h.example:443/qlik/alerts/in"
        )

    def test_mustBeBoolean(self) -> None:
        self.assertEqual(
            self.problems(with_hooks(hook(logFullPath="yes"))),
            (
                "Butler.webhookNotification.reloadTaskFailure.webhooks[0].logFullPath: "
                "expected true or false, got a string",
            ),
        )


class IntakeHardeningKeyTests(ConfigTestCase):
    """Butler's allowedSources, rateLimit and messageQueue keys, and ours under butlerWebhook."""

    def udp(self, **keys: Any) -> dict[str, Any]:
        doc = with_hooks(hook())
        doc["Butler"]["udpServerConfig"].update(keys)
        return doc

    def test_defaults(self) -> None:
        c = parse_config(self.udp())
        self.assertEqual(
            (c.sourceValidation, c.allowedSources, c.sourceRateLimit, c.maxBufferedAlerts),
            (False, (), 0, 20000),
        )
        self.assertEqual(
            (c.backpressureThreshold, c.httpListen, c.logFormat, c.logLevel), (0.8, None, "text", "info")
        )
        self.assertEqual(self.only_hook(c).concurrency, 4)

    def test_allowedSources(self) -> None:
        c = parse_config(
            self.udp(
                enableSourceValidation=True,
                allowedSources=[
                    "192.168.1.100",
                    "10.0.0.0/8",
                    "fe80::1",
                    "2001:db8::/32",
                    "Sense-01.LAB.local.",
                ],
            )
        )
        self.assertTrue(c.sourceValidation)
        self.assertEqual(
            [str(e) for e in c.allowedSources],
            ["192.168.1.100/32", "10.0.0.0/8", "fe80::1/128", "2001:db8::/32", "sense-01.lab.local"],
        )

    def test_badSourcesNamed(self) -> None:
        problems = self.problems(
            self.udp(
                enableSourceValidation=True, allowedSources=["300.1.1.1", "10.0.0.0/33", "bad host", None]
            )
        )
        self.assertEqual(
            problems,
            (
                "Butler.udpServerConfig.allowedSources[0]: '300.1.1.1' is not a valid IP address or CIDR range",
                "Butler.udpServerConfig.allowedSources[1]: '10.0.0.0/33' is not a valid IP address or CIDR range",
                "Butler.udpServerConfig.allowedSources[2]: 'bad host' is neither an IP address, a CIDR range "
                "nor a host name",
                "Butler.udpServerConfig.allowedSources[3]: expected an address, CIDR range or host name, "
                "got nothing (null)",
            ),
        )

    def test_emptyListFailsClosed(self) -> None:
        """Butler turns validation off when the list is empty; we refuse to start."""
        (problem,) = self.problems(self.udp(enableSourceValidation=True, allowedSources=[]))
        self.assertTrue(problem.startswith("Butler.udpServerConfig.allowedSources: is empty while"), problem)
        (problem,) = self.problems(self.udp(enableSourceValidation=True))
        self.assertIn("every datagram would be refused", problem)

    def test_listWithoutValidationIsKeptButOff(self) -> None:
        c = parse_config(self.udp(allowedSources=["10.0.0.1"]))
        self.assertFalse(c.sourceValidation)

    def test_perSourceRateLimit(self) -> None:
        self.assertEqual(
            parse_config(self.udp(rateLimit={"enable": False, "maxMessagesPerMinute": 5})).sourceRateLimit, 0
        )
        self.assertEqual(
            parse_config(self.udp(rateLimit={"enable": True, "maxMessagesPerMinute": 5})).sourceRateLimit, 5
        )
        self.assertEqual(parse_config(self.udp(rateLimit={"enable": True})).sourceRateLimit, 600)
        self.assertEqual(
            self.problems(self.udp(rateLimit={"enable": True, "maxMessagesPerMinute": 0})),
            ("Butler.udpServerConfig.rateLimit.maxMessagesPerMinute: must be between 1 and 10000000, got 0",),
        )

    def test_messageQueueMapping(self) -> None:
        c = parse_config(
            self.udp(
                messageQueue={
                    "enable": True,
                    "maxConcurrent": 7,
                    "maxSize": 5000,
                    "backpressureThreshold": 0.5,
                }
            )
        )
        self.assertEqual((c.maxBufferedAlerts, c.backpressureThreshold), (20000, 0.5))
        self.assertEqual(self.only_hook(c).concurrency, 7)  # the default for webhooks without their own
        self.assertEqual(
            parse_config(self.udp(messageQueue={"backpressureThreshold": 80})).backpressureThreshold, 0.8
        )
        self.assertEqual(c.warnings(), [])

    def test_memoryBoundIsOurs(self) -> None:
        doc = self.udp(messageQueue={"maxSize": 200})
        doc["butlerWebhook"] = {"maxBufferedAlerts": 50000}
        self.assertEqual(parse_config(doc).maxBufferedAlerts, 50000)
        doc["butlerWebhook"] = {"maxBufferedAlerts": 10}
        self.assertEqual(
            self.problems(doc), ("butlerWebhook.maxBufferedAlerts: must be between 100 and 10000000, got 10",)
        )

    def test_butlersMaxSizeIsNoBoundHere(self) -> None:
        """Butler's template's maxSize (200, its in-memory queue) neither sheds alerts nor warns."""
        c = parse_config(
            self.udp(messageQueue={"maxSize": 200, "maxConcurrent": 10, "backpressureThreshold": 80})
        )
        self.assertEqual(c.maxBufferedAlerts, config.DEFAULT_MAX_BUFFERED_ALERTS)
        self.assertEqual(c.warnings(), [])

    def test_webhookConcurrencyWins(self) -> None:
        doc = with_hooks(hook(concurrency=2))
        doc["Butler"]["udpServerConfig"]["messageQueue"] = {"maxConcurrent": 9}
        self.assertEqual(self.only_hook(parse_config(doc)).concurrency, 2)

    def test_httpAndLog(self) -> None:
        doc = with_hooks(hook())
        doc["butlerWebhook"] = {
            "http": {"listen": "tcp:9090:interface=127.0.0.1"},
            "log": {"format": "JSON", "level": "warning"},
        }
        c = parse_config(doc)
        self.assertEqual(
            (c.httpListen, c.logFormat, c.logLevel), ("tcp:9090:interface=127.0.0.1", "json", "warn")
        )

    def test_listenCheckedWithoutTheReactor(self) -> None:
        """Reading a config must not install the global reactor (twistd chooses it later)."""
        import subprocess
        import sys

        code = (
            "import sys; from butler_tw.config import parse_config; "
            "parse_config({'Butler': {'udpServerConfig': {'enable': True, 'serverHost': '127.0.0.1', "
            "'portTaskFailure': 9998}}, 'butlerWebhook': {'http': {'listen': 'tcp:9090'}}}); "
            "print('twisted.internet.reactor' in sys.modules)"
        )

        env = {**os.environ, "PYTHONPATH": str(REPO)}  # this tree, not an installed copy
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        )
        self.assertEqual(out.stdout.strip(), "False")

    def test_badHttpAndLog(self) -> None:
        doc = with_hooks(hook())
        doc["butlerWebhook"] = {
            "http": {"listen": "carrier-pigeon:9090"},
            "log": {"format": "xml", "level": "loud"},
        }
        problems = self.problems(doc)
        self.assertEqual(len(problems), 3, problems)
        self.assertTrue(
            problems[0].startswith("butlerWebhook.http.listen: not a valid endpoint description"), problems
        )
        self.assertEqual(problems[1], "butlerWebhook.log.format: must be text or json, got 'xml'")
        self.assertEqual(
            problems[2],
            "butlerWebhook.log.level: must be one of debug, info, warn, error, critical, got 'loud'",
        )


class WarningsTests(ConfigTestCase):
    """Config.warnings: valid settings an admin must know about."""

    def test_none(self) -> None:
        self.assertEqual(parse_config(with_hooks(hook())).warnings(), [])

    def test_disabledAndUnverified(self) -> None:
        ca = self.write(trustme.CA().cert_pem.bytes().decode())
        doc = with_hooks(hook(cert={"enable": True, "rejectUnauthorized": False, "certCA": ca}))
        doc["Butler"]["webhookNotification"]["enable"] = False
        warnings = parse_config(doc).warnings()
        self.assertEqual(len(warnings), 2, warnings)
        self.assertIn("Butler.webhookNotification.enable is false", warnings[0])
        self.assertIn(
            "reloadTaskFailure.webhooks[0] (receiver) has cert.rejectUnauthorized: false", warnings[1]
        )


BUTLER_TEMPLATE = DATA / "butler-16.0.4" / "production_template.yaml"


class ButlerSchemaTests(ConfigTestCase):
    """Butler's schema where Butler is strict, Butler's tolerance where it is not (issue 10)."""

    def filled_template(self) -> dict[str, Any]:
        raw = yaml.safe_load(BUTLER_TEMPLATE.read_text())
        raw["Butler"]["udpServerConfig"].update(enable=True, serverHost="127.0.0.1")
        notifications = raw["Butler"]["webhookNotification"]
        notifications["enable"] = True
        notifications["reloadTaskFailure"]["webhooks"] = [
            {
                "description": "ops",
                "webhookURL": "https://ops.example.com/hook",
                "httpMethod": "POST",
                "cert": {
                    "enable": False,
                    "rejectUnauthorized": True,
                    "certCA": "/path/to/ca-certificate.pem",
                },
            }
        ]
        return raw

    def test_templateStartsClean(self) -> None:
        """Butler's own template, UDP and webhook sections filled in: no warning, only the ignored list."""
        c = parse_config(self.filled_template())
        self.assertEqual(c.warnings(), [])
        self.assertIn("Butler.webhookNotification.serviceMonitor", c.ignored)
        self.assertIn("Butler.restServerConfig", c.ignored)
        self.assertEqual(len(c.webhooks), 1)

    def test_templateAsShipped(self) -> None:
        """The template untouched: the one problem is that UDP is off (its placeholder URLs are fine)."""
        self.assertEqual(
            self.load_problems(BUTLER_TEMPLATE.read_text()),
            (
                "Butler.udpServerConfig.enable: is false or missing: this daemon receives alerts over UDP "
                "only, so it has nothing to do. Set it to true.",
            ),
        )

    def test_webhooksOneLevelTooFarOut(self) -> None:
        text = textwrap.dedent(
            """\
            Butler:
              udpServerConfig: {enable: true, serverHost: 127.0.0.1, portTaskFailure: 9998}
              webhookNotification:
                enable: true
                reloadTaskFailure:
                  rateLimit: 300
                webhooks:
                  - {description: x, webhookURL: 'http://h/x', httpMethod: POST}
            """
        )
        self.assertEqual(
            self.load_problems(text),
            (
                f"{WN}.webhooks: belongs inside a block: indent it one more level, under "
                f"{WN}.reloadTaskFailure or {WN}.reloadTaskAborted",
            ),
        )

    def test_blockDedentedUnderButler(self) -> None:
        doc = with_hooks(hook())
        doc["Butler"]["reloadTaskAborted"] = doc["Butler"]["webhookNotification"].pop("reloadTaskAborted", {})
        self.assertEqual(
            self.problems(doc),
            (
                "Butler.reloadTaskAborted: is a block of Butler.webhookNotification: indent it under "
                "webhookNotification (Butler.webhookNotification.reloadTaskAborted)",
            ),
        )

    def test_sectionDedentedToTopLevel(self) -> None:
        doc = with_hooks(hook())
        doc["webhookNotification"] = doc["Butler"].pop("webhookNotification")
        self.assertEqual(
            self.problems(doc),
            (
                "webhookNotification: belongs under Butler: indent it under 'Butler:' "
                "(Butler.webhookNotification)",
            ),
        )

    def test_webhookKeyAtBlockLevel(self) -> None:
        doc = with_hooks(hook())
        doc["Butler"]["webhookNotification"]["reloadTaskFailure"]["httpMethod"] = "POST"
        (problem,) = self.problems(doc)
        self.assertTrue(
            problem.startswith(f"{FAILURE}.httpMethod: is a webhook setting: it belongs inside an entry of "),
            problem,
        )

    def test_noUnknownKeysInWebhookNotification(self) -> None:
        doc = with_hooks(hook())
        doc["Butler"]["webhookNotification"]["enabel"] = True
        doc["Butler"]["webhookNotification"]["reloadTaskFailure"]["ratelimit"] = 60
        doc["Butler"]["webhookNotification"]["serviceMonitor"] = {"rateLimit": 300, "webhook": []}
        self.assertEqual(
            self.problems(doc),
            (
                f"{WN}.enabel: unknown key (did you mean 'enable'?)",
                f"{FAILURE}.ratelimit: unknown key (did you mean 'rateLimit'?)",
                f"{WN}.serviceMonitor.webhook: unknown key (did you mean 'webhooks'?)",
            ),
        )

    def test_otherBlocksCheckedForShapeOnly(self) -> None:
        """serviceMonitor's webhooks are not ours to send: placeholder URLs pass, wrong types do not."""
        doc = with_hooks(hook())
        doc["Butler"]["webhookNotification"]["serviceMonitor"] = {
            "rateLimit": 300,
            "webhooks": [
                {"description": "x", "webhookURL": "http://host.my.domain:port/p", "httpMethod": "POST"}
            ],
        }
        self.assertEqual(len(parse_config(doc).webhooks), 1)
        doc["Butler"]["webhookNotification"]["serviceMonitor"]["rateLimit"] = "300"
        self.assertEqual(
            self.problems(doc), (f"{WN}.serviceMonitor.rateLimit: expected a number, got a string",)
        )

    def test_udpUnknownKeysWarned(self) -> None:
        doc = with_hooks(hook())
        doc["Butler"]["udpServerConfig"]["portTaskFailur"] = 1
        doc["Butler"]["udpServerConfig"]["rateLimit"] = {"enable": False, "maxMessagesPerMinuet": 5}
        self.assertEqual(
            parse_config(doc).warnings(),
            [
                "Butler.udpServerConfig.portTaskFailur: unknown key, ignored (did you mean 'portTaskFailure'?)",
                "Butler.udpServerConfig.rateLimit.maxMessagesPerMinuet: unknown key, ignored "
                "(did you mean 'maxMessagesPerMinute'?)",
            ],
        )

    def test_misspelledSectionUnderButler(self) -> None:
        doc = with_hooks(hook())
        doc["Butler"]["webhookNotifications"] = {}
        doc["Butler"]["mqttConfig"] = {}  # Butler's own: ignored, not a typo
        c = parse_config(doc)
        self.assertEqual(
            c.warnings(),
            [
                "Butler.webhookNotifications: not a Butler setting this daemon reads, ignored "
                "(did you mean 'webhookNotification'?)"
            ],
        )
        self.assertEqual(c.ignored, ("Butler.mqttConfig",))

    def test_httpMethodTrimmedAnyCase(self) -> None:
        for written, method in ((" post ", "POST"), ("Post", "POST"), ("GET\t", "GET"), ("\nput", "PUT")):
            self.assertEqual(
                self.only_hook(parse_config(with_hooks(hook(httpMethod=written)))).method, method
            )

    def test_enabledWithoutWebhooksWarns(self) -> None:
        (warning,) = parse_config(with_hooks()).warnings()
        self.assertIn("no webhook is configured for any kind", warning)

    def test_disabledNotificationsShapeStillChecked(self) -> None:
        doc = with_hooks(hook(httpMethod="DELETE", webhookURL="http://h:port/x"))
        doc["Butler"]["webhookNotification"]["enable"] = False
        self.assertEqual(
            self.problems(doc),
            (f"{FAILURE}.webhooks[0].httpMethod: must be GET, POST or PUT (any case), got 'DELETE'",),
        )


class FileLimitTests(ConfigTestCase):
    """Where YAML errors are, and files that are refused before they are read whole."""

    def test_positionIsTheFilesOwn(self) -> None:
        text = 'Butler:\n  udpServerConfig:\n    enable: true\n    serverHost: "abc\n  x: 1\n'
        (problem,) = self.load_problems(text)
        self.assertEqual(
            problem,
            "not valid YAML: line 5, column 7: found unexpected end of stream "
            "(while scanning a quoted scalar that starts at line 4, column 17)",
        )

    def test_tabIndentation(self) -> None:
        (problem,) = self.load_problems("Butler:\n  a: 1\n\tb: 2\n")
        self.assertEqual(
            problem, "not valid YAML: line 3, column 1: found character '\\t' that cannot start any token"
        )

    def test_byteOrderMark(self) -> None:
        (problem,) = self.load_problems(b"\xef\xbb\xbfButler:\n  a: 1\n  a: 2\n")
        self.assertEqual(problem, "not valid YAML: line 3, column 3: duplicate key 'a'")

    def test_tooLarge(self) -> None:
        path = self.write(b"#" * (loader.MAX_FILE_SIZE + 10))
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(e.problems, ("the file is larger than 1024 KiB: this is not a Butler config file",))

    def test_tooLargeIsNotReadWhole(self) -> None:
        read: list[int] = []

        class Huge:
            def read(self, n: int = -1) -> bytes:
                read.append(n)
                return b"a" * n

        self.assertEqual(len(loader._read_limited(Huge())), loader.MAX_FILE_SIZE + 1)  # type: ignore[arg-type]
        self.assertEqual(read, [loader.MAX_FILE_SIZE + 1])

    def test_aliasBomb(self) -> None:
        lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
        (problem,) = self.load_problems("\n".join(lines) + "\n")
        self.assertIn("expands to more than 200,000 values through YAML aliases", problem)

    def test_fewAliasesAreFine(self) -> None:
        text = textwrap.dedent(
            """\
            Butler:
              udpServerConfig: {enable: true, serverHost: 127.0.0.1, portTaskFailure: 9998}
              webhookNotification:
                enable: true
                reloadTaskFailure:
                  webhooks:
                    - &w {description: x, webhookURL: 'http://h/x', httpMethod: POST}
                reloadTaskAborted:
                  webhooks: [*w]
            """
        )
        self.assertEqual(len(load_config(self.write(text)).webhooks), 2)


class RoutingConfigTests(ConfigTestCase):
    """``match:`` / ``exclude:``: alert field -> regular expression, compiled and checked at load."""

    P = "Butler.webhookNotification.reloadTaskFailure.webhooks[0]"

    def test_built(self) -> None:
        w = self.only_hook(
            parse_config(with_hooks(hook(match={"taskName": "^Prod "}, exclude={"hostName": "^dev-"})))
        )
        self.assertEqual(w.routing.describe(), "match taskName ~ '^Prod '; exclude hostName ~ '^dev-'")

    def test_defaultTakesEverything(self) -> None:
        self.assertEqual(self.only_hook(parse_config(with_hooks(hook()))).routing.describe(), "every alert")

    def test_unknownField(self) -> None:
        self.assertEqual(
            self.problems(with_hooks(hook(match={"taskname": "x"}))),
            (f"{self.P}.match.taskname: not an alert field (did you mean 'taskName'?)",),
        )

    def test_unknownFieldListsTheFields(self) -> None:
        (problem,) = self.problems(with_hooks(hook(exclude={"severity": "x"})))
        self.assertEqual(
            problem,
            f"{self.P}.exclude.severity: not an alert field (fields: event, hostName, user, taskName, "
            "taskId, appName, appId, logTimeStamp, logLevel, executionId, logMessage)",
        )

    def test_badRegex(self) -> None:
        self.assertEqual(
            self.problems(with_hooks(hook(match={"taskName": "^(Prod"}))),
            (
                f"{self.P}.match.taskName: not a valid regular expression: "
                "missing ), unterminated subpattern at position 1",
            ),
        )

    def test_notAString(self) -> None:
        self.assertEqual(
            self.problems(with_hooks(hook(match={"taskName": 5}))),
            (f"{self.P}.match.taskName: expected a regular expression (a string), got a number (5)",),
        )

    def test_notAMapping(self) -> None:
        self.assertEqual(
            self.problems(with_hooks(hook(exclude=["hostName"]))),
            (f"{self.P}.exclude: expected a mapping of alert field to regular expression, got a list",),
        )
