"""``butler-tw deliveries`` and ``butler-tw replay`` against a real outbox file."""

from __future__ import annotations

import io
import os
import sqlite3
import textwrap

import attrs
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from butler_tw.cli import main
from butler_tw.outbox import State
from butler_tw.sqlitestore import DB_NAME, SqliteOutbox
from tests.test_dedup import ALERT


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
        self.assertEqual((status, text), (0, "re-queued 1 dead deliveries\n"))
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
        self.assertIn("re-queued 0", text)

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

    def test_noDatabase(self) -> None:
        with open(self.config) as f:
            text = f.read().replace(self.stateDir, self.stateDir + "-missing")
        with open(self.config, "w") as f:
            f.write(text)
        status, _ = self.run_cli("deliveries", "--config", self.config)
        self.assertEqual(status, 2)
