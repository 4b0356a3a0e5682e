"""The webhook keys of message formats: ``format``, ``body``, ``contentType``, ``routingKey``, ``severity``, ``priority``."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from butler_tw.config import ConfigError, Webhook, parse_config
from butler_tw.core.alert import EventKind
from tests.config.test_config import hook, minimal, with_hooks

ENTRY = "Butler.webhookNotification.reloadTaskFailure.webhooks[0]"
SECRET = "f00dfeedf00dfeedf00dfeedf00dfeed"


class MessageKeyTests(SynchronousTestCase):
    def problems(self, **entry: Any) -> tuple[str, ...]:
        return self.assertRaises(ConfigError, parse_config, with_hooks(hook(**entry))).problems

    def only(self, **entry: Any) -> Webhook:
        (webhook,) = parse_config(with_hooks(hook(**entry))).routes[EventKind.FAILED].webhooks
        return webhook

    def test_defaults(self) -> None:
        webhook = self.only()
        self.assertEqual(
            (
                webhook.format,
                webhook.body,
                webhook.contentType,
                webhook.routingKey,
                webhook.severity,
                webhook.priority,
            ),
            ("butler", None, None, "", None, None),
        )

    def test_presets(self) -> None:
        for fmt in ("teams", "Slack", " DISCORD ", "opsgenie"):
            self.assertEqual(self.only(format=fmt).format, fmt.strip().lower())
        webhook = self.only(format="pagerduty", routingKey=SECRET, severity="Critical")
        self.assertEqual(
            (webhook.format, webhook.routingKey, webhook.severity), ("pagerduty", SECRET, "critical")
        )
        self.assertEqual(self.only(format="opsgenie", priority="p1").priority, "P1")

    def test_unknownFormat(self) -> None:
        (problem,) = self.problems(format="msteams")
        self.assertEqual(
            problem,
            f"{ENTRY}.format: must be butler, teams, slack, discord, pagerduty or opsgenie, got 'msteams'",
        )

    def test_presetOnGetOrPutRefused(self) -> None:
        for method in ("GET", "put"):
            (problem,) = self.problems(format="slack", httpMethod=method)
            self.assertEqual(
                problem,
                f"{ENTRY}.format: format: slack sends with POST only, and httpMethod is {method.upper()}: "
                "set httpMethod: POST",
            )

    def test_pagerdutyNeedsRoutingKey(self) -> None:
        (problem,) = self.problems(format="pagerduty")
        self.assertIn(f"{ENTRY}.routingKey: missing", problem)

    def test_routingKeyNeverShown(self) -> None:
        for bad in (12345678901234567890, "", ["x"]):
            (problem,) = self.problems(format="pagerduty", routingKey=bad)
            self.assertTrue(problem.startswith(f"{ENTRY}.routingKey: expected a non-empty string"), problem)
            self.assertNotIn("12345678901234567890", problem)
        webhook = self.only(format="pagerduty", routingKey=SECRET)
        self.assertNotIn(SECRET, repr(webhook))

    def test_severityAndPriorityChoices(self) -> None:
        (problem,) = self.problems(format="pagerduty", routingKey=SECRET, severity="high")
        self.assertEqual(problem, f"{ENTRY}.severity: must be critical, error, warning or info, got 'high'")
        (problem,) = self.problems(format="opsgenie", priority="P9")
        self.assertEqual(problem, f"{ENTRY}.priority: must be one of P1 to P5, got 'P9'")

    def test_keyOfAnotherFormatWarned(self) -> None:
        config = parse_config(with_hooks(hook(format="teams", priority="P2", routingKey=SECRET)))
        warnings = config.warnings()
        self.assertIn(
            f"{ENTRY}.priority: only read with format: opsgenie (this entry has format: teams); ignored",
            warnings,
        )
        self.assertIn(
            f"{ENTRY}.routingKey: only read with format: pagerduty (this entry has format: teams); ignored",
            warnings,
        )
        self.assertFalse(any(SECRET in w for w in warnings))

    def test_contentType(self) -> None:
        self.assertEqual(
            self.only(contentType="application/json; charset=utf-8").contentType,
            "application/json; charset=utf-8",
        )
        for bad in ("json", "text/plain\r\nX-Evil: 1", 5):
            (problem,) = self.problems(contentType=bad)
            self.assertEqual(
                problem, f"{ENTRY}.contentType: expected a media type such as 'application/json'"
            )

    def test_switchedOffNotificationsCheckShapeOnly(self) -> None:
        doc = minimal(enable=False, reloadTaskFailure={"webhooks": [hook(format="teams", httpMethod="GET")]})
        self.assertFalse(parse_config(doc).notificationsEnabled)
