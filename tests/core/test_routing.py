"""Which alerts a webhook takes: ``match:`` every rule, ``exclude:`` none."""

from __future__ import annotations

import re

import attrs
from twisted.trial.unittest import SynchronousTestCase

from butler_tw.config.reloadplan import webhook_changes
from butler_tw.core.routing import Routing
from tests.support.receivers import make_alert, make_webhook


def rules(**patterns: str) -> tuple[tuple[str, re.Pattern[str]], ...]:
    return tuple((field, re.compile(p)) for field, p in patterns.items())


class RoutingTests(SynchronousTestCase):
    def test_noRulesTakesEverything(self) -> None:
        self.assertTrue(Routing().accepts(make_alert()))
        self.assertEqual(Routing().describe(), "every alert")

    def test_matchEveryRule(self) -> None:
        routing = Routing(match=rules(taskName="^Prod ", hostName="sched"))
        self.assertTrue(routing.accepts(make_alert(taskName="Prod sales", hostName="qlik-sched-01")))
        self.assertFalse(routing.accepts(make_alert(taskName="Prod sales", hostName="qlik-web-01")))
        self.assertFalse(routing.accepts(make_alert(taskName="Test Prod sales", hostName="qlik-sched-01")))

    def test_excludeAnyRule(self) -> None:
        routing = Routing(exclude=rules(hostName="^dev-", appName="(?i)sandbox"))
        self.assertTrue(routing.accepts(make_alert(hostName="prod-1", appName="Sales")))
        self.assertFalse(routing.accepts(make_alert(hostName="dev-1", appName="Sales")))
        self.assertFalse(routing.accepts(make_alert(hostName="prod-1", appName="My SANDBOX app")))

    def test_matchAndExclude(self) -> None:
        routing = Routing(match=rules(taskName="^Prod "), exclude=rules(taskName="nightly$"))
        self.assertTrue(routing.accepts(make_alert(taskName="Prod sales")))
        self.assertFalse(routing.accepts(make_alert(taskName="Prod sales nightly")))
        self.assertEqual(routing.describe(), "match taskName ~ '^Prod '; exclude taskName ~ 'nightly$'")

    def test_searchedNotAnchored(self) -> None:
        """A pattern is searched anywhere in the value, as ``grep`` would: anchors say otherwise."""
        self.assertTrue(
            Routing(match=rules(logMessage="timeout")).accepts(make_alert(logMessage="a timeout!"))
        )

    def test_equalRulesAreEqual(self) -> None:
        """A reload with the same rules keeps the webhook as it is."""
        self.assertEqual(Routing(match=rules(taskName="^P")), Routing(match=rules(taskName="^P")))
        self.assertNotEqual(Routing(match=rules(taskName="^P")), Routing(exclude=rules(taskName="^P")))


class ReloadWordsTests(SynchronousTestCase):
    def test_routingChangeSaidAtReload(self) -> None:
        old = make_webhook("http://h/x")
        new = attrs.evolve(old, routing=Routing(match=rules(taskName="^Prod ")))
        self.assertEqual(webhook_changes(old, new), ["routing every alert -> match taskName ~ '^Prod '"])
        self.assertEqual(webhook_changes(old, old), [])
