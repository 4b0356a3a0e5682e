"""The naming and pairing of webhook keys: :func:`describe_key`, :func:`match_webhooks`. Pure."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from butler_tw.core.delivery import describe_key, match_webhooks, removed_key


class WebhookKeyTests(SynchronousTestCase):
    def test_describeKey(self) -> None:
        names = {"reloadTaskFailure.webhooks[0]": "Teams"}
        self.assertEqual(describe_key("reloadTaskFailure.webhooks[0]", names), "Teams")
        self.assertEqual(
            describe_key(removed_key("reloadTaskFailure.webhooks[0]", "fa"), names),
            "reloadTaskFailure.webhooks[0] (removed)",
        )
        self.assertEqual(describe_key("x", names), "x (no longer configured)")

    def test_matchWebhooks(self) -> None:
        self.assertEqual(match_webhooks({"a": "1", "b": "2"}, {"a": "1", "b": "2"}), {})
        self.assertEqual(match_webhooks({"a": "1", "b": "2"}, {"a": "2", "b": "1"}), {"a": "b", "b": "a"})
        # Two webhooks with one fingerprint: settled ones first, then in key order.
        self.assertEqual(
            match_webhooks({"a": "1", "b": "1", "c": "3"}, {"b": "1", "c": "1", "d": "3"}),
            {"a": "c", "c": "d"},
        )
        self.assertEqual(match_webhooks({"a": "1"}, {"a": "2"}), {"a": None})
        self.assertEqual(match_webhooks({}, {"a": "1"}), {})
