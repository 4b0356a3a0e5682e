"""``describe``: the request a webhook would send, as text, for ``butler-tw render``."""

from __future__ import annotations

import attrs
from twisted.trial.unittest import SynchronousTestCase

from butler_tw.channels.butler import Request, query_string
from butler_tw.channels.preview import describe
from butler_tw.channels.request import build_request
from tests.support.receivers import make_alert, make_webhook

KEY = "f00dfeedf00dfeedf00dfeedf00dfeed"


class DescribeTests(SynchronousTestCase):
    def test_postExactBodyRedactedUrl(self) -> None:
        webhook = make_webhook("https://hooks.example.com/services/T000/B000/XXXXSECRET?token=abc")
        alert = make_alert()
        request = build_request(alert, webhook, 1700000000)
        text = describe(request, webhook)
        lines = text.splitlines()
        self.assertEqual(lines[0], f"POST {webhook.loggableUrl}")
        self.assertNotIn("XXXXSECRET", text)
        self.assertNotIn("abc", lines[0])
        self.assertIn(f"webhook-id: {alert.alertId}", lines)
        self.assertIn("Content-Type: application/json", lines)
        assert request.body is not None
        self.assertIn(request.body.decode(), lines)
        self.assertEqual(lines[-1], f"({len(request.body)} bytes)")

    def test_getHasNoBody(self) -> None:
        webhook = make_webhook("http://receiver.example/get?token=T0KEN", method="GET")
        alert = make_alert()
        text = describe(build_request(alert, webhook, 1), webhook)
        lines = text.splitlines()
        self.assertEqual(lines[0], f"GET {webhook.loggableUrl}")
        self.assertNotIn("T0KEN", text)
        self.assertEqual(
            lines[-2:],
            ["(no body)", f"the alert's fields, appended to the URL's query: {query_string(alert)}"],
        )

    def test_secretsRedacted(self) -> None:
        webhook = attrs.evolve(
            make_webhook("https://events.pagerduty.com/v2/enqueue"), format="pagerduty", routingKey=KEY
        )
        request = build_request(make_alert(), webhook, 1)
        request = Request(
            request.method,
            request.url,
            (*request.headers, ("Authorization", "GenieKey s3cr3t")),
            request.body,
        )
        text = describe(request, webhook)
        self.assertNotIn(KEY, text)
        self.assertNotIn("s3cr3t", text)
        self.assertIn('"routing_key":"<redacted>"', text)
        self.assertIn("Authorization: <redacted>", text.splitlines())
