"""``plan_replay``: where each dead letter is re-queued, or why not, as the daemon will treat it."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from butler_tw.core.delivery import Delivery, State, removed_key
from butler_tw.delivery.replay import DUPLICATE, NOT_BOUND, NOWHERE, UNKNOWN, Decision, plan_replay
from tests.support.receivers import make_alert, make_webhook

K0, K1, K2 = (f"reloadTaskFailure.webhooks[{i}]" for i in range(3))
TEAMS = make_webhook("http://10.0.0.1/teams?token=T", key=K0, description="Teams")
PAGER = make_webhook("http://10.0.0.2/pager", key=K1, description="Pager")
GONE = make_webhook("http://10.0.0.3/gone", key=K1, description="Gone")
ALERT = make_alert()


def dead(key: str) -> Delivery:
    return Delivery(ALERT, key, acceptedAt=1.0, attempts=3, state=State.DEAD, lastOutcome="HTTP 503")


def bound(*webhooks: object) -> dict[str, str]:
    return {w.key: w.fingerprint for w in webhooks}  # type: ignore[attr-defined]


class PlanReplayTests(SynchronousTestCase):
    def plan(self, d: Delivery, webhooks=(TEAMS, PAGER), bound_=None, existing=None, to=None) -> Decision:  # type: ignore[no-untyped-def]
        bound_ = bound(*webhooks) if bound_ is None else bound_
        existing = {d.id} if existing is None else existing
        (decision,) = plan_replay([d], list(webhooks), bound_, existing, to)
        return decision

    def test_ownWebhook(self) -> None:
        d = dead(K0)
        self.assertEqual(self.plan(d), Decision(d, "Teams", key=K0, target=K0))

    def test_removedMatchedByFingerprint(self) -> None:
        """A removed webhook's dead letter goes to the webhook that now sends where it sent."""
        d = dead(removed_key(K2, PAGER.fingerprint))
        self.assertEqual(self.plan(d), Decision(d, f"{K2} (removed)", key=K1, target=K1))

    def test_removedWithoutMatchRefused(self) -> None:
        d = dead(removed_key(K1, GONE.fingerprint))
        self.assertEqual(self.plan(d), Decision(d, f"{K1} (removed)", refusal=NOWHERE))

    def test_removedTo(self) -> None:
        d = dead(removed_key(K1, GONE.fingerprint))
        self.assertEqual(self.plan(d, to=PAGER), Decision(d, f"{K1} (removed)", key=K1, target=K1))

    def test_toAnotherWebhook(self) -> None:
        d = dead(K0)
        self.assertEqual(self.plan(d, to=PAGER), Decision(d, "Teams", key=K1, target=K1))

    def test_unknownKeyRefused(self) -> None:
        """A key the daemon never bound, not a removed one: where it sent is not known."""
        d = dead("reloadTaskFailure.webhooks[9]")
        decision = self.plan(d)
        self.assertEqual((decision.key, decision.refusal), (None, UNKNOWN))
        self.assertEqual(decision.source, "reloadTaskFailure.webhooks[9] (no longer configured)")

    def test_positionTakenByAnotherReceiver(self) -> None:
        """The daemon bound Gone at [1]; the file has Pager there. Its dead letter is not Pager's."""
        d = dead(K1)
        decision = self.plan(d, bound_=bound(TEAMS, GONE))
        self.assertEqual(decision.source, f"{K1} (removed)")
        self.assertEqual((decision.key, decision.refusal), (None, NOWHERE))

    def test_targetNotBoundYet(self) -> None:
        """Pager is in the file but the daemon has not loaded it: a re-queued row would die again."""
        d = dead(K0)
        decision = self.plan(d, bound_=bound(TEAMS), to=PAGER)
        self.assertEqual((decision.key, decision.refusal), (None, NOT_BOUND.format(target="Pager")))

    def test_staleBindingStoresUnderTheBoundKey(self) -> None:
        """The file swapped Teams and Pager, the daemon not reloaded yet: stored where the
        running daemon has Teams, which its next rebind moves to Teams' new position."""
        teams1 = make_webhook(TEAMS.url, key=K1, description="Teams")
        pager0 = make_webhook(PAGER.url, key=K0, description="Pager")
        d = dead(K0)  # Teams' dead letter, at its old position
        decision = self.plan(d, webhooks=(pager0, teams1), bound_=bound(TEAMS, PAGER))
        self.assertEqual(decision, Decision(d, "Teams", key=K0, target=K1))

    def test_alertAlreadyHasADeliveryThere(self) -> None:
        d = dead(removed_key(K2, PAGER.fingerprint))
        decision = self.plan(d, existing={d.id, f"{ALERT.alertId}/{K1}"})
        self.assertEqual((decision.key, decision.refusal), (None, DUPLICATE.format(target="Pager")))

    def test_twoDeadLettersOfOneAlertToOneWebhook(self) -> None:
        """The first re-queued takes the place; the second is refused, not merged into it."""
        first, second = dead(K1), dead(removed_key(K2, PAGER.fingerprint))
        decisions = plan_replay([first, second], [TEAMS, PAGER], bound(TEAMS, PAGER), {first.id, second.id})
        self.assertEqual([d.key for d in decisions], [K1, None])
        self.assertEqual(decisions[1].refusal, DUPLICATE.format(target="Pager"))

    def test_noUrlOrFingerprintShown(self) -> None:
        d = dead(removed_key(K1, GONE.fingerprint))
        for decision in (self.plan(d), self.plan(dead(K0), bound_=bound(TEAMS), to=PAGER)):
            text = decision.source + decision.refusal
            self.assertNotIn(GONE.fingerprint, text)
            self.assertNotIn("10.0.0", text)
