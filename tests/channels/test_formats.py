"""The presets (``format:``): each posted to a real loopback receiver and checked against the service's shape and limits."""

from __future__ import annotations

import datetime
import json
from typing import Any

import attrs
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from butler_tw.channels import butler, opsgenie, pagerduty, slack
from butler_tw.channels.formats import FORMATS, render
from butler_tw.channels.request import build_request
from butler_tw.channels.text import MARKER, fit_bytes, truncate, truncate_escaped
from butler_tw.config import Webhook
from butler_tw.config.model import FORMAT_NAMES
from butler_tw.core.alert import FIELD_ORDER, Alert, EventKind
from tests.support.receivers import listen_http, make_alert, make_webhook, start_client

#: 60 KB of log message with what trips escaping: quotes, backslashes, markup, multi-byte text.
HUGE = ('Error: "conn" \\ <b>&amp;</b> {{ 7*7 }} åäö 日本 @everyone ``` ' * 1200)[:60_000]
assert len(HUGE) == 60_000
#: A field as long as the parser lets one be (500), with the same awkward characters.
LONG_FIELD = ("Task <&> ü " * 50)[:500]
TIMESTAMP = 1700000000


def huge_alert(kind: EventKind = EventKind.FAILED) -> Alert:
    return make_alert(kind, logMessage=HUGE, taskName=LONG_FIELD, appName=LONG_FIELD, hostName="qlik-01")


def preset_hook(url: str, fmt: str, **settings: Any) -> Webhook:
    return attrs.evolve(make_webhook(url), format=fmt, **settings)


class PostedTestCase(TestCase):
    timeout = 30

    @inlineCallbacks
    def post(self, fmt: str, alert: Alert, **settings: Any) -> Any:
        """Send ``alert`` in format ``fmt`` through the real client; the JSON the receiver got."""
        receiver = listen_http(self)
        webhook = preset_hook(receiver.url("/hook"), fmt, **settings)
        outcome = yield start_client(self, webhook).send(build_request(alert, webhook, TIMESTAMP))
        self.assertEqual(outcome.status, 200)
        (seen,) = receiver.requests
        self.assertEqual(seen.method, "POST")
        self.assertEqual(seen.header("content-type"), "application/json")
        self.assertEqual(seen.header("webhook-id"), alert.alertId)
        self.seenBytes = seen.body
        return json.loads(seen.body)


class TeamsTests(PostedTestCase):
    @inlineCallbacks
    def test_shape(self) -> Any:
        alert = make_alert(logMessage="Max retries reached")
        body = yield self.post("teams", alert)
        self.assertEqual(body["type"], "message")
        (attachment,) = body["attachments"]
        self.assertEqual(attachment["contentType"], "application/vnd.microsoft.card.adaptive")
        card = attachment["content"]
        self.assertEqual(card["type"], "AdaptiveCard")
        self.assertEqual(card["version"], "1.4")
        self.assertEqual(card["$schema"], "http://adaptivecards.io/schemas/adaptive-card.json")
        heading, factSet, message = card["body"]
        self.assertEqual(heading["type"], "TextBlock")
        self.assertEqual(heading["text"], f"Qlik Sense reload failed: {alert.taskName}")
        self.assertEqual(factSet["type"], "FactSet")
        facts = {f["title"]: f["value"] for f in factSet["facts"]}
        self.assertEqual(
            facts,
            {
                "Host": alert.hostName,
                "User": alert.user,
                "Task": alert.taskName,
                "App": alert.appName,
                "Time": alert.logTimeStamp,
                "Execution ID": alert.executionId,
            },
        )
        self.assertEqual(
            message,
            {"type": "TextBlock", "text": "Max retries reached", "wrap": True, "fontType": "Monospace"},
        )

    @inlineCallbacks
    def test_abortedTitle(self) -> Any:
        body = yield self.post("teams", make_alert(EventKind.ABORTED))
        heading = body["attachments"][0]["content"]["body"][0]
        self.assertTrue(heading["text"].startswith("Qlik Sense reload aborted: "))
        self.assertEqual(heading["color"], "Warning")

    @inlineCallbacks
    def test_hugeMessageFitsUnder28KB(self) -> Any:
        body = yield self.post("teams", huge_alert())
        self.assertLessEqual(len(self.seenBytes), 28_000)
        self.assertLess(len(self.seenBytes), 28 * 1024)
        text = body["attachments"][0]["content"]["body"][2]["text"]
        self.assertTrue(text.endswith(MARKER))
        self.assertTrue(HUGE.startswith(text[: -len(MARKER)]))
        self.assertGreater(len(text), 15_000)  # cut to fit, not thrown away


class SlackTests(PostedTestCase):
    @inlineCallbacks
    def test_shapeAndEscaping(self) -> Any:
        alert = make_alert(taskName="A <b> & <!channel>", logMessage="x > y & <@U123>")
        body = yield self.post("slack", alert)
        self.assertEqual(body["text"], "Qlik Sense reload failed: A &lt;b&gt; &amp; &lt;!channel&gt;")
        header, fields, message = body["blocks"]
        self.assertEqual(header["type"], "header")
        self.assertEqual(header["text"]["type"], "plain_text")
        self.assertIn("&lt;!channel&gt;", header["text"]["text"])
        self.assertEqual(fields["type"], "section")
        self.assertIn(
            {"type": "mrkdwn", "text": "*Task*\nA &lt;b&gt; &amp; &lt;!channel&gt;"}, fields["fields"]
        )
        self.assertEqual(
            message["text"], {"type": "mrkdwn", "text": "```\nx &gt; y &amp; &lt;@U123&gt;\n```"}
        )
        for value in _strings(body):
            self.assertNotRegex(value, r"<|>|&(?!amp;|lt;|gt;)")

    @inlineCallbacks
    def test_hugeValuesWithinBlockLimits(self) -> Any:
        body = yield self.post("slack", huge_alert())
        header, fields, message = body["blocks"]
        self.assertLessEqual(len(header["text"]["text"]), 150)
        self.assertLessEqual(len(fields["fields"]), 10)
        for field in fields["fields"]:
            self.assertLessEqual(len(field["text"]), 2000)
        text = message["text"]["text"]
        self.assertLessEqual(len(text), 3000)
        self.assertTrue(text.endswith(MARKER + "\n```"))
        self.assertTrue(text.startswith("```\nError: &quot;".replace("&quot;", '"')))
        self.assertNotIn("```", text[3:-3])  # the message cannot close the fence early
        for value in _strings(body):
            self.assertNotRegex(value, r"<|>|&(?!amp;|lt;|gt;)")


class DiscordTests(PostedTestCase):
    @inlineCallbacks
    def test_shape(self) -> Any:
        alert = make_alert(logMessage="boom @everyone")
        body = yield self.post("discord", alert)
        (embed,) = body["embeds"]
        self.assertEqual(embed["title"], f"Qlik Sense reload failed: {alert.taskName}")
        self.assertEqual(embed["description"], "boom @everyone")
        self.assertEqual(body["allowed_mentions"], {"parse": []})
        names = [f["name"] for f in embed["fields"]]
        self.assertEqual(names, ["Host", "User", "Task", "App", "Time", "Execution ID"])
        self.assertEqual(embed["timestamp"], "2023-11-14T22:13:20+00:00")

    @inlineCallbacks
    def test_hugeWithinLimits(self) -> Any:
        body = yield self.post("discord", huge_alert())
        (embed,) = body["embeds"]
        self.assertLessEqual(len(embed["title"]), 256)
        self.assertLessEqual(len(embed["description"]), 4096)
        self.assertTrue(embed["description"].endswith(MARKER))
        self.assertLessEqual(len(embed["fields"]), 25)
        for field in embed["fields"]:
            self.assertLessEqual(len(field["name"]), 256)
            self.assertLessEqual(len(field["value"]), 1024)
            self.assertGreater(len(field["value"]), 0)
        total = len(embed["title"]) + len(embed["description"])
        total += sum(len(f["name"]) + len(f["value"]) for f in embed["fields"])
        self.assertLessEqual(total, 6000)
        self.assertLessEqual(len(body.get("content", "")), 2000)


class PagerDutyTests(PostedTestCase):
    @inlineCallbacks
    def test_shape(self) -> Any:
        alert = make_alert()
        body = yield self.post("pagerduty", alert, routingKey="R0UTINGKEY0123456789abcdef012345")
        self.assertEqual(body["routing_key"], "R0UTINGKEY0123456789abcdef012345")
        self.assertEqual(body["event_action"], "trigger")
        self.assertEqual(body["dedup_key"], f"butler-tw/failed/{alert.taskId}")
        payload = body["payload"]
        self.assertEqual(payload["summary"], f"Qlik Sense reload failed: {alert.taskName}")
        self.assertEqual(payload["source"], alert.hostName)
        self.assertEqual(payload["severity"], "error")
        self.assertEqual(datetime.datetime.fromisoformat(payload["timestamp"]).timestamp(), TIMESTAMP)
        for name in FIELD_ORDER:
            self.assertEqual(payload["custom_details"][name], getattr(alert, name))
        self.assertEqual(payload["custom_details"]["kind"], "failed")

    @inlineCallbacks
    def test_severity(self) -> Any:
        aborted = yield self.post("pagerduty", make_alert(EventKind.ABORTED), routingKey="k")
        self.assertEqual(aborted["payload"]["severity"], "warning")
        self.assertEqual(aborted["dedup_key"].split("/")[1], "aborted")
        chosen = yield self.post("pagerduty", make_alert(), routingKey="k", severity="critical")
        self.assertEqual(chosen["payload"]["severity"], "critical")

    @inlineCallbacks
    def test_hugeWithinLimits(self) -> Any:
        body = yield self.post("pagerduty", huge_alert(), routingKey="k")
        self.assertLessEqual(len(body["payload"]["summary"]), 1024)
        self.assertLessEqual(len(body["dedup_key"]), 255)
        self.assertEqual(body["payload"]["custom_details"]["logMessage"], HUGE)  # all of it: 512 KB allowed
        self.assertLess(len(self.seenBytes), 512 * 1024)

    def test_dedupKeyStablePerTaskAndKind(self) -> None:
        one = make_alert(executionId="e1", logMessage="first")
        two = make_alert(executionId="e2", logMessage="second")
        self.assertEqual(pagerduty.dedup_key(one), pagerduty.dedup_key(two))
        self.assertNotEqual(pagerduty.dedup_key(one), pagerduty.dedup_key(make_alert(EventKind.ABORTED)))
        self.assertNotEqual(pagerduty.dedup_key(one), pagerduty.dedup_key(make_alert(taskId="other")))
        self.assertLessEqual(len(pagerduty.dedup_key(make_alert(taskId="t" * 500))), 255)


class OpsgenieTests(PostedTestCase):
    @inlineCallbacks
    def test_shape(self) -> Any:
        alert = make_alert()
        body = yield self.post("opsgenie", alert)
        self.assertEqual(body["message"], f"Qlik Sense reload failed: {alert.taskName}")
        self.assertEqual(body["alias"], f"butler-tw/failed/{alert.taskId}")
        self.assertIn(alert.logMessage, body["description"])
        self.assertIn(f"Host: {alert.hostName}", body["description"])
        for name in FIELD_ORDER:
            self.assertEqual(body["details"][name], getattr(alert, name))
        self.assertEqual(body["priority"], "P3")

    @inlineCallbacks
    def test_priority(self) -> Any:
        aborted = yield self.post("opsgenie", make_alert(EventKind.ABORTED))
        self.assertEqual(aborted["priority"], "P4")
        chosen = yield self.post("opsgenie", make_alert(), priority="P1")
        self.assertEqual(chosen["priority"], "P1")

    @inlineCallbacks
    def test_hugeWithinLimits(self) -> Any:
        body = yield self.post("opsgenie", huge_alert())
        self.assertLessEqual(len(body["message"]), 130)
        self.assertTrue(body["message"].endswith(MARKER))
        self.assertLessEqual(len(body["alias"]), 512)
        self.assertLessEqual(len(body["description"]), 15000)
        self.assertTrue(body["description"].endswith(MARKER))
        self.assertLessEqual(sum(len(k) + len(v) for k, v in body["details"].items()), 8000)
        self.assertLessEqual(len(body["entity"]), 512)
        self.assertLessEqual(len(body["source"]), 100)

    def test_aliasStablePerTaskAndKind(self) -> None:
        one, two = make_alert(executionId="e1"), make_alert(executionId="e2")
        self.assertEqual(opsgenie.alias(one), opsgenie.alias(two))
        self.assertNotEqual(opsgenie.alias(one), opsgenie.alias(make_alert(EventKind.ABORTED)))


class RegistryTests(SynchronousTestCase):
    def test_everyConfigNameHasAFormat(self) -> None:
        self.assertEqual(tuple(FORMATS), FORMAT_NAMES)

    def test_butlerFormatUnchanged(self) -> None:
        """``format: butler`` is the seed's request, byte for byte, for each method."""
        alert = make_alert()
        for method in ("GET", "POST", "PUT"):
            webhook = make_webhook("http://receiver.example/hook?token=1#frag", method=method)
            self.assertEqual(render(alert, webhook, 5), butler.build_request(alert, webhook, 5))
            self.assertEqual(build_request(alert, webhook, 5), butler.build_request(alert, webhook, 5))

    def test_contentType(self) -> None:
        alert = make_alert()
        for fmt in ("butler", "teams"):
            webhook = preset_hook("http://receiver.example/hook", fmt, contentType="application/vnd.x+json")
            types = [v for k, v in render(alert, webhook, 5).headers if k.lower() == "content-type"]
            self.assertEqual(types, ["application/vnd.x+json"])


class TruncationTests(SynchronousTestCase):
    def test_truncate(self) -> None:
        self.assertEqual(truncate("short", 10), "short")
        cut = truncate("x" * 100, 30)
        self.assertEqual(len(cut), 30)
        self.assertTrue(cut.endswith(MARKER))
        self.assertEqual(truncate("abcdef", 3), "abc")

    def test_truncateEscapedLeavesNoHalfEntity(self) -> None:
        text = "a" * (40 - len(MARKER) - 2) + "&&&&&&"
        cut = truncate_escaped(text, 40, slack.escape)
        self.assertLessEqual(len(cut), 40)
        self.assertNotRegex(cut[: -len(MARKER)], r"&(?!amp;)")

    def test_fitBytes(self) -> None:
        for message in ("é" * 50_000, "\\" * 50_000, "x" * 50_000, "\u0001" * 20_000):
            tree = fit_bytes(lambda m: {"m": m}, message, 10_000)
            size = len(json.dumps(tree, ensure_ascii=False, separators=(",", ":")).encode())
            self.assertLessEqual(size, 10_000)
            self.assertGreater(size, 9_000)
            self.assertTrue(tree["m"].endswith(MARKER))


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []
