"""``butler-tw deliveries`` and ``butler-tw replay`` against a real outbox file."""

from __future__ import annotations

import io
import os
import sqlite3
import sys
import textwrap
from typing import Any

import attrs
import yaml
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from butler_tw.cli.main import main
from butler_tw.config import load_config
from butler_tw.core.delivery import State
from butler_tw.delivery.stores.sqlite import DB_NAME, SqliteOutbox
from tests.support.alerts import ALERT
from tests.support.stores import all_pending

KEY0, KEY1, KEY2 = (f"reloadTaskFailure.webhooks[{i}]" for i in range(3))


class CliTests(TestCase):
    @inlineCallbacks
    def setUp(self):  # type: ignore[no-untyped-def]
        self.stateDir = os.path.abspath(self.mktemp())
        self.config = self.mktemp()
        with open(self.config, "w") as f:
            f.write(
                textwrap.dedent(
                    f"""\
                    Butler:
                      udpServerConfig: {{enable: true, serverHost: 127.0.0.1, portTaskFailure: 9998}}
                      webhookNotification:
                        enable: true
                        reloadTaskFailure:
                          webhooks:
                            - {{description: Teams, webhookURL: 'http://127.0.0.1:1/x?token=T', httpMethod: POST}}
                            - {{description: Ticketing, webhookURL: 'http://127.0.0.1:1/y', httpMethod: PUT}}
                    butlerWebhook:
                      stateDir: {self.stateDir}
                    """
                )
            )
        outbox = SqliteOutbox(self.stateDir, reactor)
        outbox.open()
        # As the daemon does at its start: the webhooks it sends to are bound.
        yield outbox.rebind({w.key: w.fingerprint for w in load_config(self.config).webhooks})
        self.first, self.second = yield outbox.add(
            ALERT, ["reloadTaskFailure.webhooks[0]", "reloadTaskFailure.webhooks[1]"], 1000.0
        )
        outbox.record(attrs.evolve(self.first, state=State.DEAD, attempts=6, lastOutcome="HTTP 503"))
        outbox.record(attrs.evolve(self.second, attempts=1, dueAt=2000.0, lastOutcome="connection refused"))
        yield outbox.close()

    def run_cli(self, *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        return main(list(argv), out=out), out.getvalue()

    def test_listDead(self) -> None:
        status, text = self.run_cli("deliveries", "--config", self.config, "--state", "dead")
        self.assertEqual(status, 0)
        header, row = text.splitlines()
        self.assertEqual(header.split()[:3], ["DELIVERY", "ID", "STATE"])
        self.assertIn(self.first.id, row)
        self.assertIn("Teams", row)
        self.assertIn("HTTP 503", row)
        self.assertIn(" 6 ", row)
        self.assertNotIn("token", text)

    def test_listAll(self) -> None:
        status, text = self.run_cli("deliveries", "--config", self.config)
        self.assertEqual(status, 0)
        self.assertEqual(len(text.splitlines()), 3)
        self.assertIn("Ticketing", text)
        self.assertIn("connection refused", text)

    def test_replayAllDead(self) -> None:
        status, text = self.run_cli("replay", "--config", self.config, "--all-dead")
        self.assertEqual((status, text), (0, "re-queued 1 dead delivery to Teams\n"))
        conn = sqlite3.connect(os.path.join(self.stateDir, DB_NAME))
        row = conn.execute(
            "SELECT state, attempts, requeued FROM deliveries WHERE id = ?", (self.first.id,)
        ).fetchone()
        conn.close()
        self.assertEqual(row, ("pending", 0, 1))

    def test_replayById(self) -> None:
        status, _ = self.run_cli("replay", "--config", self.config, self.first.id)
        self.assertEqual(status, 0)
        status, text = self.run_cli("deliveries", "--config", self.config, "--state", "dead")
        self.assertIn("no dead deliveries", text)

    def test_replayUnknownId(self) -> None:
        status, text = self.run_cli("replay", "--config", self.config, "nope")
        self.assertEqual(status, 1)
        self.assertEqual(
            text,
            f"not re-queued: no dead delivery has the id nope (see `butler-tw deliveries -c {self.config} --state dead`)\n",
        )

    def test_replayAllDeadWithNone(self) -> None:
        self.run_cli("replay", "--config", self.config, "--all-dead")
        self.assertEqual(
            self.run_cli("replay", "--config", self.config, "--all-dead"),
            (0, "no dead deliveries to re-queue\n"),
        )

    def test_replayedIsPickedUpByOutbox(self):  # type: ignore[no-untyped-def]
        """What the command re-queues, a running daemon's outbox hands back once."""
        self.run_cli("replay", "--config", self.config, "--all-dead")
        outbox = SqliteOutbox(self.stateDir, reactor)
        outbox.open()
        self.addCleanup(outbox.close)

        @inlineCallbacks
        def check():  # type: ignore[no-untyped-def]
            first = yield outbox.requeued()
            again = yield outbox.requeued()
            self.assertEqual([d.id for d in first], [self.first.id])
            self.assertEqual(first[0].attempts, 0)
            self.assertEqual(again, [])

        return check()

    @inlineCallbacks
    def test_replayAgeCountsFromPickUp(self):  # type: ignore[no-untyped-def]
        """Replayed while the daemon was stopped, started later than maxAge: its age starts at the start."""
        self.run_cli("replay", "--config", self.config, "--all-dead")
        conn = sqlite3.connect(os.path.join(self.stateDir, DB_NAME))
        with conn:  # as if replayed two hours ago
            conn.execute(
                "UPDATE deliveries SET accepted_at = accepted_at - 7200, due_at = due_at - 7200 WHERE id = ?",
                (self.first.id,),
            )
        conn.close()
        outbox = SqliteOutbox(self.stateDir, reactor)
        outbox.open()
        self.addCleanup(outbox.close)
        before = reactor.seconds()
        replayed = yield outbox.requeued()  # the daemon's poll takes up what was re-queued
        pending = yield all_pending(outbox)
        byId = {d.id: d for d in [*replayed, *pending]}
        self.assertEqual(
            [d.id for d in replayed], [self.first.id], "not also in due(): never handed out twice"
        )
        self.assertGreaterEqual(byId[self.first.id].acceptedAt, before)
        self.assertGreaterEqual(byId[self.first.id].dueAt, before)
        self.assertEqual(byId[self.second.id].acceptedAt, 1000.0, "what was not replayed keeps its age")

    def test_noDatabase(self) -> None:
        with open(self.config) as f:
            text = f.read().replace(self.stateDir, self.stateDir + "-missing")
        with open(self.config, "w") as f:
            f.write(text)
        status, _ = self.run_cli("deliveries", "--config", self.config)
        self.assertEqual(status, 2)


class ReplayRemovedTests(TestCase):
    """Dead letters of a removed webhook, kept under ``<key>@removed-<fingerprint>``."""

    TEAMS = {"description": "Teams", "webhookURL": "http://127.0.0.1:1/x?token=T", "httpMethod": "POST"}
    OLD = {
        "description": "Old pager",
        "webhookURL": "http://127.0.0.1:1/old?token=OLDSECRET",
        "httpMethod": "POST",
    }
    PAGER = {"description": "Pager", "webhookURL": "http://127.0.0.1:1/pager", "httpMethod": "POST"}

    @inlineCallbacks
    def setUp(self):  # type: ignore[no-untyped-def]
        """The daemon ran with Teams and Old pager; Old pager was removed with a delivery pending."""
        self.stateDir = os.path.abspath(self.mktemp())
        self.config = self.mktemp()
        outbox = SqliteOutbox(self.stateDir, reactor)
        outbox.open()
        yield self.bind(outbox, [self.TEAMS, self.OLD])
        (self.teams, self.old) = yield outbox.add(ALERT, [KEY0, KEY1], 1000.0)
        outbox.record(attrs.evolve(self.teams, state=State.DEAD, attempts=6, lastOutcome="HTTP 503"))
        yield self.bind(outbox, [self.TEAMS])
        yield outbox.close()
        self.removedId = self.old.id + "@removed-" + self.fingerprint(self.OLD)

    def write(self, webhooks: list[dict[str, str]], path: str | None = None) -> str:
        doc = {
            "Butler": {
                "udpServerConfig": {"enable": True, "serverHost": "127.0.0.1", "portTaskFailure": 9998},
                "webhookNotification": {"enable": True, "reloadTaskFailure": {"webhooks": webhooks}},
            },
            "butlerWebhook": {"stateDir": self.stateDir},
        }
        path = path or self.config
        with open(path, "w") as f:
            yaml.safe_dump(doc, f)
        return path

    def fingerprint(self, webhook: dict[str, str]) -> str:
        return load_config(self.write([webhook], self.mktemp())).webhooks[0].fingerprint

    def bind(self, outbox: SqliteOutbox, webhooks: list[dict[str, str]]) -> Any:
        """Write the config and bind the outbox to it, as a daemon's start or reload does."""
        self.write(webhooks)
        return outbox.rebind({w.key: w.fingerprint for w in load_config(self.config).webhooks})

    @inlineCallbacks
    def rebound(self, webhooks: list[dict[str, str]]):  # type: ignore[no-untyped-def]
        outbox = SqliteOutbox(self.stateDir, reactor)
        outbox.open()
        yield self.bind(outbox, webhooks)
        yield outbox.close()

    def rows(self) -> dict[str, tuple[str, int]]:
        conn = sqlite3.connect(os.path.join(self.stateDir, DB_NAME))
        rows = conn.execute("SELECT id, state, requeued FROM deliveries").fetchall()
        conn.close()
        return {i: (state, requeued) for i, state, requeued in rows}

    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        return main(list(argv), out=out, err=err), out.getvalue(), err.getvalue()

    def test_refusedWithoutAMatch(self) -> None:
        status, out, err = self.run_cli("replay", "-c", self.config, self.removedId)
        self.assertEqual(
            (status, out, err),
            (
                1,
                "not re-queued: 1 dead delivery of reloadTaskFailure.webhooks[1] (removed): no webhook in "
                "the config sends where it sent (the same method and URL): name one with --to NAME\n",
                "",
            ),
        )
        self.assertEqual(self.rows()[self.removedId], ("dead", 0))

    def test_allDeadSaysBoth(self) -> None:
        status, out, _ = self.run_cli("replay", "-c", self.config, "--all-dead")
        self.assertEqual(status, 1)
        self.assertEqual(
            out.splitlines(),
            [
                "re-queued 1 dead delivery to Teams",
                "not re-queued: 1 dead delivery of reloadTaskFailure.webhooks[1] (removed): no webhook in "
                "the config sends where it sent (the same method and URL): name one with --to NAME",
            ],
        )

    @inlineCallbacks
    def test_fingerprintMatch(self):  # type: ignore[no-untyped-def]
        """Old pager's URL is back, at [2], and the daemon reloaded: its dead letter goes there."""
        yield self.rebound([self.TEAMS, self.PAGER, self.OLD])
        status, out, _ = self.run_cli("replay", "-c", self.config, self.removedId)
        self.assertEqual(
            (status, out),
            (0, "re-queued 1 dead delivery of reloadTaskFailure.webhooks[1] (removed) to Old pager\n"),
        )
        rows = self.rows()
        self.assertNotIn(self.removedId, rows)
        self.assertEqual(rows[f"{ALERT.alertId}/{KEY2}"], ("pending", 1))

    @inlineCallbacks
    def test_to(self):  # type: ignore[no-untyped-def]
        yield self.rebound([self.TEAMS, self.PAGER])
        status, out, _ = self.run_cli("replay", "-c", self.config, self.removedId, "--to", "Pager")
        self.assertEqual(
            (status, out),
            (0, "re-queued 1 dead delivery of reloadTaskFailure.webhooks[1] (removed) to Pager\n"),
        )
        self.assertEqual(self.rows()[self.old.id], ("pending", 1))  # at [1], Pager's key now

    def test_toNotLoadedByTheDaemon(self) -> None:
        """Pager is in the file, but the daemon has not reloaded: the row would only die again."""
        self.write([self.TEAMS, self.PAGER])
        status, out, _ = self.run_cli("replay", "-c", self.config, self.removedId, "--to", KEY1)
        self.assertEqual(status, 1)
        self.assertEqual(
            out,
            "not re-queued: 1 dead delivery of reloadTaskFailure.webhooks[1] (removed): Pager is not in the "
            "configuration the daemon runs with yet: reload the daemon (systemctl reload butler-webhook) or "
            "start it, then replay again\n",
        )
        self.assertEqual(self.rows()[self.removedId], ("dead", 0))

    def test_toUnknownWebhook(self) -> None:
        status, out, err = self.run_cli("replay", "-c", self.config, "--all-dead", "--to", "Nope")
        self.assertEqual((status, out), (2, ""))
        self.assertIn("--to: no webhook in reloadTaskFailure or reloadTaskAborted has the name", err)
        self.assertEqual(self.rows()[self.removedId], ("dead", 0))

    def test_toWhereItsAlertIsAlready(self) -> None:
        """--to Teams: the alert's own Teams delivery is a dead letter there already."""
        status, out, _ = self.run_cli("replay", "-c", self.config, self.removedId, "--to", "Teams")
        self.assertEqual(status, 1)
        self.assertEqual(
            out,
            "not re-queued: 1 dead delivery of reloadTaskFailure.webhooks[1] (removed): its alert already has "
            "a delivery to Teams\n",
        )

    def test_noUrlOrFingerprintInOutput(self) -> None:
        for argv in (["--all-dead"], [self.removedId, "--to", "Teams"], ["--all-dead", "--to", "Nope"]):
            _, out, err = self.run_cli("replay", "-c", self.config, *argv)
            for secret in ("OLDSECRET", "token=", self.fingerprint(self.OLD), "127.0.0.1"):
                self.assertNotIn(secret, out + err)

    @inlineCallbacks
    def test_commandLine(self):  # type: ignore[no-untyped-def]
        """The installed ``butler-tw``, as an admin runs it: refused (exit 1), then --to (exit 0)."""
        yield self.rebound([self.TEAMS, self.PAGER])
        command = os.path.join(os.path.dirname(sys.executable), "butler-tw")
        out, err, status = yield getProcessOutputAndValue(
            command, ["replay", "-c", self.config, self.removedId]
        )
        self.assertEqual((status, err), (1, b""))
        self.assertIn(
            b"not re-queued: 1 dead delivery of reloadTaskFailure.webhooks[1] (removed): no webhook", out
        )
        out, err, status = yield getProcessOutputAndValue(
            command, ["replay", "-c", self.config, self.removedId, "--to", "Pager"]
        )
        self.assertEqual(
            (status, out, err),
            (0, b"re-queued 1 dead delivery of reloadTaskFailure.webhooks[1] (removed) to Pager\n", b""),
        )
        self.assertEqual(self.rows()[self.old.id], ("pending", 1))
