"""The reload plan: a pure diff of two configurations, and how it reads in the log."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import trustme
from twisted.trial.unittest import SynchronousTestCase

from butler_tw.config import Config, parse_config
from butler_tw.config.reloadplan import (
    ReloadPlan,
    Replacement,
    RestartNeeded,
    new_warnings,
    plan_reload,
    restart_warnings,
    summary,
)
from butler_tw.core.delivery import Rebinding, match_webhooks

FAIL = "reloadTaskFailure"
ABORT = "reloadTaskAborted"
A = {"description": "Teams", "webhookURL": "https://hooks.example.com/a?token=SECRET", "httpMethod": "POST"}
B = {"description": "Pager", "webhookURL": "http://10.0.0.5:8080/b", "httpMethod": "PUT"}
C = {"webhookURL": "http://10.0.0.6/c", "httpMethod": "GET"}


def doc(
    failure: Sequence[dict[str, Any]] = (), aborted: Sequence[dict[str, Any]] = (), **udp: Any
) -> dict[str, Any]:
    return {
        "Butler": {
            "udpServerConfig": {"enable": True, "serverHost": "127.0.0.1", "portTaskFailure": 9998, **udp},
            "webhookNotification": {
                "enable": True,
                FAIL: {"rateLimit": 300, "webhooks": [dict(w) for w in failure]},
                ABORT: {"rateLimit": 300, "webhooks": [dict(w) for w in aborted]},
            },
        }
    }


def cfg(raw: dict[str, Any], reader: Any = None) -> Config:
    return parse_config(raw, reader=reader) if reader is not None else parse_config(raw)


def key(kind: str, i: int) -> str:
    return f"{kind}.webhooks[{i}]"


class PlanTests(SynchronousTestCase):
    def plan(self, before: dict[str, Any], after: dict[str, Any]) -> ReloadPlan:
        return plan_reload(cfg(before), cfg(after))

    def keys(self, plan: ReloadPlan) -> dict[str, Any]:
        return {
            "kept": [w.key for w in plan.kept],
            "replaced": [(r.old.key, r.new.key) for r in plan.replaced],
            "removed": [w.key for w in plan.removed],
            "added": [w.key for w in plan.added],
        }

    def test_identical(self) -> None:
        plan = self.plan(doc([A, B]), doc([A, B]))
        self.assertEqual(plan, ReloadPlan(kept=plan.kept))
        self.assertEqual(len(plan.kept), 2)
        self.assertFalse(plan.changesWebhooks)
        self.assertEqual(plan.successors, {})

    def test_added(self) -> None:
        plan = self.plan(doc([A]), doc([A, B], [C]))
        self.assertEqual(
            self.keys(plan),
            {"kept": [key(FAIL, 0)], "replaced": [], "removed": [], "added": [key(FAIL, 1), key(ABORT, 0)]},
        )
        self.assertEqual(plan.successors, {})

    def test_removedLast(self) -> None:
        plan = self.plan(doc([A, B]), doc([A]))
        self.assertEqual(self.keys(plan)["removed"], [key(FAIL, 1)])
        self.assertEqual(plan.successors, {key(FAIL, 1): None})

    def test_removedFirstMovesTheOther(self) -> None:
        """[A, B] -> [B]: B moves to position 0 (its deliveries follow), A is removed."""
        plan = self.plan(doc([A, B]), doc([B]))
        self.assertEqual(
            self.keys(plan),
            {"kept": [], "replaced": [(key(FAIL, 1), key(FAIL, 0))], "removed": [key(FAIL, 0)], "added": []},
        )
        (moved,) = plan.replaced
        self.assertTrue(moved.moved)
        self.assertEqual(moved.changes, [])
        self.assertEqual(plan.successors, {key(FAIL, 1): key(FAIL, 0), key(FAIL, 0): None})

    def test_insertedBefore(self) -> None:
        plan = self.plan(doc([A]), doc([B, A]))
        self.assertEqual(
            self.keys(plan),
            {"kept": [], "replaced": [(key(FAIL, 0), key(FAIL, 1))], "removed": [], "added": [key(FAIL, 0)]},
        )

    def test_swapped(self) -> None:
        plan = self.plan(doc([A, B]), doc([B, A]))
        self.assertEqual(plan.successors, {key(FAIL, 0): key(FAIL, 1), key(FAIL, 1): key(FAIL, 0)})
        self.assertEqual((plan.kept, plan.removed, plan.added), ((), (), ()))

    def test_movedToTheOtherKind(self) -> None:
        """The same receiver now under reloadTaskAborted: its failure deliveries follow it."""
        plan = self.plan(doc([A]), doc([], [A]))
        self.assertEqual(plan.successors, {key(FAIL, 0): key(ABORT, 0)})

    def test_urlChangedIsRemovedAndAdded(self) -> None:
        """Same position, another URL: another receiver. The old one's deliveries must not go there."""
        other = {**A, "webhookURL": "https://hooks.example.com/other"}
        plan = self.plan(doc([A]), doc([other]))
        self.assertEqual(
            self.keys(plan), {"kept": [], "replaced": [], "removed": [key(FAIL, 0)], "added": [key(FAIL, 0)]}
        )

    def test_methodChangedIsRemovedAndAdded(self) -> None:
        plan = self.plan(doc([A]), doc([{**A, "httpMethod": "PUT"}]))
        self.assertEqual(self.keys(plan)["removed"], [key(FAIL, 0)])

    def test_methodCaseIsNoChange(self) -> None:
        plan = self.plan(doc([A]), doc([{**A, "httpMethod": "post"}]))
        self.assertEqual(len(plan.kept), 1)

    def test_changedSettings(self) -> None:
        """Same key, same receiver, other settings: rebuilt, deliveries kept."""
        changed = {
            **A,
            "description": "Teams (ops)",
            "timeout": 3,
            "concurrency": 8,
            "retrySchedule": [0, 1, 2],
            "maxAge": 600,
        }
        plan = self.plan(doc([A]), doc([changed]))
        (r,) = plan.replaced
        self.assertFalse(r.moved)
        self.assertEqual(
            r.changes,
            [
                "description 'Teams' -> 'Teams (ops)'",
                "timeout 10 s -> 3 s",
                "concurrency 4 -> 8",
                "retrySchedule 0, 5, 30, 120, 600, 1800 s -> 0, 1, 2 s",
                "maxAge 3600 s -> 600 s",
            ],
        )
        self.assertEqual(plan.successors, {key(FAIL, 0): key(FAIL, 0)})

    def test_logFullPathIsASettingChange(self) -> None:
        (r,) = plan_reload(cfg(doc([A])), cfg(doc([{**A, "logFullPath": True}]))).replaced
        self.assertEqual((r.moved, r.changes), (False, ["logFullPath false -> true"]))

    def test_secretsChangedKeepTheDeliveries(self) -> None:
        """A rotated token or signing secret: the same receiver, rebuilt; no value in the changes."""
        whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        before = {
            **A,
            "headers": {"X-Key": "old-k", "X-Same": "s"},
            "auth": {"type": "bearer", "token": "old-t"},
        }
        after = {
            **A,
            "headers": {"X-Key": "new-k", "X-Same": "s", "X-Added": "a"},
            "auth": {"type": "bearer", "token": "new-t"},
            "signing": {"secret": whsec},
        }
        plan = self.plan(doc([before]), doc([after]))
        (r,) = plan.replaced
        self.assertEqual(
            (r.moved, r.changes),
            (False, ["headers changed (X-Added, X-Key)", "auth changed", "signing off -> on"]),
        )
        self.assertEqual(plan.successors, {key(FAIL, 0): key(FAIL, 0)})
        (r,) = plan_reload(
            cfg(doc([after])), cfg(doc([{**A, "auth": {"type": "basic", "username": "u", "password": "p"}}]))
        ).replaced
        self.assertEqual(
            r.changes,
            ["headers changed (X-Added, X-Key, X-Same)", "auth bearer -> basic", "signing on -> off"],
        )

    def test_movedAndChanged(self) -> None:
        plan = self.plan(doc([A]), doc([B, {**A, "timeout": 2}]))
        (r,) = plan.replaced
        self.assertEqual(
            (r.old.key, r.new.key, r.moved, r.changes),
            (key(FAIL, 0), key(FAIL, 1), True, ["timeout 10 s -> 2 s"]),
        )

    def test_globalRetryDefaultsChangeEveryWebhook(self) -> None:
        before, after = doc([A, B]), doc([A, B])
        after["butlerWebhook"] = {"delivery": {"retrySchedule": [0, 1], "maxAge": 60}}
        plan = self.plan(before, after)
        self.assertEqual([r.old.key for r in plan.replaced], [key(FAIL, 0), key(FAIL, 1)])

    def test_defaultConcurrencyFromMessageQueue(self) -> None:
        plan = self.plan(doc([A]), doc([A], messageQueue={"maxConcurrent": 2}))
        (r,) = plan.replaced
        self.assertEqual(r.changes, ["concurrency 4 -> 2"])

    def test_tlsChanges(self) -> None:
        ca, other = trustme.CA(), trustme.CA()
        files = {"/ca.pem": ca.cert_pem.bytes(), "/other.pem": other.cert_pem.bytes()}

        def with_ca(path: str | None, files: dict[str, bytes] = files) -> Config:
            hook = dict(A) if path is None else {**A, "cert": {"enable": True, "certCA": path}}
            return parse_config(doc([hook]), reader=lambda p: files[p])

        platform, custom = with_ca(None), with_ca("/ca.pem")
        (r,) = plan_reload(platform, custom).replaced
        self.assertEqual(r.changes, ["TLS platform -> custom CA (/ca.pem)"])
        # The same path with other certificates in it (the file was replaced): rebuilt.
        renewed = with_ca("/ca.pem", {"/ca.pem": other.cert_pem.bytes()})
        (r,) = plan_reload(custom, renewed).replaced
        self.assertEqual(r.changes, ["TLS custom CA (/ca.pem): the CA file's certificates changed"])
        self.assertEqual(len(plan_reload(custom, with_ca("/ca.pem")).kept), 1)

    def test_sameReceiverTwice(self) -> None:
        """Two entries with one URL: paired as the outbox pairs them (settled first, then in key order)."""
        plan = self.plan(doc([A, A, B]), doc([B, A, A]))
        before = {w.key: w.fingerprint for w in cfg(doc([A, A, B])).webhooks}
        after = {w.key: w.fingerprint for w in cfg(doc([B, A, A])).webhooks}
        self.assertEqual(plan.successors, match_webhooks(before, after))
        self.assertEqual([w.key for w in plan.kept], [key(FAIL, 1)])

    def test_everyWebhookAccountedFor(self) -> None:
        """Whatever the edit, each running webhook is kept, replaced or removed once, and each
        new one is kept, a replacement or added once."""
        shapes = [[], [A], [B], [A, B], [B, A], [A, A], [C, A, B], [{**A, "timeout": 1}, C]]
        for old in shapes:
            for new in shapes:
                for olda, newa in (([], []), ([C], []), ([], [A])):
                    before, after = cfg(doc(old, olda)), cfg(doc(new, newa))
                    plan = plan_reload(before, after)
                    olds = (
                        [w.key for w in plan.kept]
                        + [r.old.key for r in plan.replaced]
                        + [w.key for w in plan.removed]
                    )
                    news = (
                        [w.key for w in plan.kept]
                        + [r.new.key for r in plan.replaced]
                        + [w.key for w in plan.added]
                    )
                    self.assertEqual(sorted(olds), sorted(w.key for w in before.webhooks))
                    self.assertEqual(sorted(news), sorted(w.key for w in after.webhooks))
                    for r in plan.replaced:
                        self.assertEqual(r.old.fingerprint, r.new.fingerprint)

    def test_settings(self) -> None:
        before = doc([A])
        after = copy.deepcopy(before)
        after["Butler"]["webhookNotification"][FAIL]["rateLimit"] = 60
        after["Butler"]["webhookNotification"][ABORT]["rateLimit"] = 0
        after["Butler"]["udpServerConfig"].update(
            maxMessageSize=4096,
            deduplication={"ttlMinutes": 5},
            enableSourceValidation=True,
            allowedSources=["10.0.0.0/8", "qlik.example.com"],
            rateLimit={"enable": True, "maxMessagesPerMinute": 100},
            messageQueue={"maxSize": 5000, "backpressureThreshold": 50},
        )
        after["butlerWebhook"] = {
            "shutdownGracePeriod": 3,
            "maxBufferedAlerts": 5000,
            "delivery": {"deadLetterRetention": 86400},
        }
        plan = self.plan(before, after)
        self.assertEqual(
            list(plan.settings),
            [
                "rate limit reloadTaskFailure 300 s -> 60 s",
                "rate limit reloadTaskAborted 300 s -> off",
                "de-duplication 600 s -> 300 s",
                "maxMessageSize 65507 bytes -> 4096 bytes",
                "allowedSources off -> 10.0.0.0/8, qlik.example.com",
                "per-source rate limit off -> 100/min",
                "butlerWebhook.maxBufferedAlerts 20000 -> 5000",
                "messageQueue.backpressureThreshold 80 % -> 50 %",
                "shutdownGracePeriod 10 s -> 3 s",
                "deadLetterRetention 604800 s -> 86400 s",
            ],
        )
        self.assertEqual(plan.restart, ())
        self.assertEqual(len(plan.kept), 1)

    def test_notificationsDisabled(self) -> None:
        after = doc([A])
        after["Butler"]["webhookNotification"]["enable"] = False
        self.assertEqual(
            list(self.plan(doc([A]), after).settings), ["webhookNotification.enable true -> false"]
        )

    def test_restartNeeded(self) -> None:
        after = doc([A], serverHost="::", portTaskFailure=9999, receiveBufferBytes=65536)
        after["butlerWebhook"] = {
            "stateDir": "/var/lib/other",
            "http": {"listen": "tcp:9090:interface=127.0.0.1"},
            "log": {"format": "json", "level": "warn"},
        }
        plan = self.plan(doc([A]), after)
        self.assertEqual(
            list(plan.restart),
            [
                RestartNeeded("Butler.udpServerConfig.serverHost", "127.0.0.1", "::"),
                RestartNeeded("Butler.udpServerConfig.portTaskFailure", 9998, 9999),
                RestartNeeded("Butler.udpServerConfig.receiveBufferBytes", 8 * 1024 * 1024, 65536),
                RestartNeeded("butlerWebhook.stateDir", "./state", "/var/lib/other"),
                RestartNeeded("butlerWebhook.http.listen", None, "tcp:9090:interface=127.0.0.1"),
                RestartNeeded("butlerWebhook.log.format", "text", "json"),
                RestartNeeded("butlerWebhook.log.level", "info", "warn"),
            ],
        )
        self.assertEqual(plan.settings, ())
        self.assertEqual(len(plan.kept), 1)


class WordsTests(SynchronousTestCase):
    """The summary line and the warnings: every change, and never a whole URL."""

    def test_summary(self) -> None:
        before = cfg(doc([A], [{**C, "description": "Ops"}]))
        after_doc = doc([A, B], [])
        after_doc["Butler"]["webhookNotification"][FAIL]["rateLimit"] = 60
        plan = plan_reload(before, cfg(after_doc))
        line = summary("/etc/butler-tw/butler.yaml", plan, Rebinding(removed={key(ABORT, 0): 3}))
        self.assertEqual(
            line,
            "Reloaded /etc/butler-tw/butler.yaml: "
            "1 webhook added (reloadTaskFailure.webhooks[1] 'Pager': PUT http://10.0.0.5:8080/***), "
            "1 removed (reloadTaskAborted.webhooks[0] 'Ops': 3 pending deliveries kept as dead letters), "
            "1 unchanged, rate limit reloadTaskFailure 300 s -> 60 s",
        )

    def test_summaryMovedChangedAndUrlChanged(self) -> None:
        before = cfg(doc([A, B, C]))
        after = cfg(
            doc([{**B, "timeout": 5}, {**A, "description": ""}, {**C, "webhookURL": "http://10.0.0.7/c"}])
        )
        line = summary("butler.yaml", plan_reload(before, after), Rebinding(removed={key(FAIL, 2): 1}))
        self.assertEqual(
            line,
            "Reloaded butler.yaml: "
            "1 webhook added (reloadTaskFailure.webhooks[2]: GET http://10.0.0.7:80/***), "
            "1 removed (reloadTaskFailure.webhooks[2]: 1 pending delivery kept as a dead letter), "
            "2 moved (reloadTaskFailure.webhooks[0] 'Teams' -> reloadTaskFailure.webhooks[1], "
            "description 'Teams' -> '', deliveries follow; "
            "reloadTaskFailure.webhooks[1] 'Pager' -> reloadTaskFailure.webhooks[0], timeout 10 s -> 5 s, "
            "deliveries follow)",
        )

    def test_summaryChanged(self) -> None:
        plan = plan_reload(cfg(doc([A])), cfg(doc([{**A, "concurrency": 1}])))
        self.assertEqual(
            summary("b.yaml", plan, Rebinding()),
            "Reloaded b.yaml: 1 webhook changed (reloadTaskFailure.webhooks[0] 'Teams': concurrency 4 -> 1, "
            "pending deliveries kept)",
        )

    def test_summaryRemovedWithNothingPending(self) -> None:
        """A removed webhook with nothing pending: said plainly, not '0 pending deliveries kept'."""
        plan = plan_reload(cfg(doc([A, B])), cfg(doc([A])))
        self.assertEqual(
            summary("b.yaml", plan, Rebinding(removed={key(FAIL, 1): 0})),
            "Reloaded b.yaml: 1 webhook removed (reloadTaskFailure.webhooks[1] 'Pager': no pending "
            "deliveries), 1 unchanged",
        )

    def test_summaryUnknownDeadLetters(self) -> None:
        """The outbox write failed (it is retried): no count, but what happens is said."""
        plan = plan_reload(cfg(doc([A])), cfg(doc([])))
        self.assertIn("its pending deliveries kept as dead letters", summary("b.yaml", plan, None))

    def test_noSecretsInSummary(self) -> None:
        """URLs as the logs show them (Webhook.loggableUrl): no query, no path unless the owner allows it."""
        plan = plan_reload(
            cfg(doc([])), cfg(doc([{**A, "webhookURL": "https://hooks.example.com/a/b?token=SECRET"}]))
        )
        line = summary("b.yaml", plan, Rebinding())
        self.assertNotIn("SECRET", line)
        self.assertIn("POST https://hooks.example.com:443/a/***)", line)
        plan = plan_reload(cfg(doc([])), cfg(doc([{**A, "logFullPath": True}])))
        line = summary("b.yaml", plan, Rebinding())
        self.assertNotIn("SECRET", line)
        self.assertIn("POST https://hooks.example.com:443/a)", line)

    def test_summaryNoChange(self) -> None:
        self.assertEqual(
            summary("b.yaml", plan_reload(cfg(doc([A])), cfg(doc([A]))), Rebinding()),
            "Reloaded b.yaml: no change",
        )
        plan = plan_reload(cfg(doc([A])), cfg(doc([A], portTaskFailure=9999)))
        self.assertEqual(
            summary("b.yaml", plan, Rebinding()), "Reloaded b.yaml: no change that takes effect now"
        )

    def test_restartWarnings(self) -> None:
        after = doc([A], portTaskFailure=9999)
        after["butlerWebhook"] = {"log": {"level": "debug"}}
        plan = plan_reload(cfg(doc([A])), cfg(after))
        self.assertEqual(
            restart_warnings(plan, "127.0.0.1:9998"),
            [
                "Butler.udpServerConfig.portTaskFailure changed, takes effect after a restart "
                "(running with 9998, the file says 9999): still listening on UDP 127.0.0.1:9998",
                "butlerWebhook.log.level changed, takes effect after a restart "
                "(running with info, the file says debug)",
            ],
        )

    def test_newWarnings(self) -> None:
        after = doc([A])
        after["Butler"]["webhookNotification"]["enable"] = False
        self.assertEqual(
            new_warnings(cfg(doc([A])), cfg(after)),
            [
                "Butler.webhookNotification.enable is false: alerts are received and counted, but nothing is sent"
            ],
        )
        self.assertEqual(new_warnings(cfg(after), cfg(after)), [])


class ReplacementTests(SynchronousTestCase):
    def test_onlyMoved(self) -> None:
        a0, a1 = cfg(doc([A])).webhooks[0], cfg(doc([B, A])).webhooks[1]
        r = Replacement(a0, a1)
        self.assertEqual((r.moved, r.changes), (True, []))
