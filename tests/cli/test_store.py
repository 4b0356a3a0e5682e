"""``butler-tw deliveries``, ``replay`` and ``store`` on a shared outbox, against a real PostgreSQL.

Two :class:`PostgresOutbox` instances named "a" and "b" on one database stand
for two daemons; the command reads the same database through its config's
``butlerWebhook.store``. That DSN carries ``password=s3cret`` (the test
server trusts every local connection, so it is ignored there): no output may
show it. The SQLite side of ``store`` is at the end; the SQLite side of
``deliveries`` and ``replay`` is test_deliveries.py.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import attrs
from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from butler_tw.config import load_config
from butler_tw.config.store import loggable_dsn
from butler_tw.core.delivery import State
from butler_tw.delivery.stores.postgres import SCHEMA_VERSION
from butler_tw.delivery.stores.sqlite import DB_NAME
from butler_tw.delivery.stores.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA
from tests.support.alerts import ALERT
from tests.support.cli import run_main, write_config
from tests.support.daemon import make_config
from tests.support.postgres import fresh_database, missing_reason, require_postgres

KEY0, KEY1 = (f"reloadTaskFailure.webhooks[{i}]" for i in range(2))
TEAMS = {"description": "Teams", "webhookURL": "http://127.0.0.1:1/x?token=T", "httpMethod": "POST"}
TICKETING = {"description": "Ticketing", "webhookURL": "http://127.0.0.1:1/y", "httpMethod": "PUT"}
PASSWORD = "s3cret"  # noqa: S105 - planted, to be found nowhere in the output


def alert(i: int):  # type: ignore[no-untyped-def]
    return attrs.evolve(ALERT, executionId=f"{i:08x}-0000-4000-8000-000000000000")


def pause(seconds: float):  # type: ignore[no-untyped-def]
    return task.deferLater(reactor, seconds, lambda: None)


def dbname(dsn: str) -> str:
    """The database of a DSN the test server made."""
    return dsn.split("dbname=")[1].split()[0]


def shared_config(testCase: SynchronousTestCase, dsn: str) -> str:
    """A config whose outbox is the PostgreSQL database ``dsn`` (with a password planted in it)."""
    return write_config(
        testCase,
        make_config(
            failure=[TEAMS, TICKETING],
            butlerWebhook={
                "stateDir": os.path.abspath(testCase.mktemp()),
                "store": dsn,
                "instanceName": "admin-host",
            },
        ),
    )


class SharedOutboxTests(TestCase):
    """Deliveries of two daemons in one shared outbox, listed and replayed by the command."""

    skip = missing_reason()

    @inlineCallbacks
    def setUp(self):  # type: ignore[no-untyped-def]
        self.server = require_postgres()
        self.dsn = fresh_database(self)
        self.cliDsn = f"{self.dsn} password={PASSWORD}"
        self.where = loggable_dsn(self.cliDsn)
        self.config = shared_config(self, self.cliDsn)
        self.webhooks = {w.key: w.fingerprint for w in load_config(self.config).webhooks}
        self.a, self.b = self.open("a"), self.open("b")
        for outbox in (self.a, self.b):
            yield outbox.rebind(self.webhooks)  # as each daemon does at its start
        # a took the first alert (to both webhooks), b the second (to Teams).
        self.dead, self.aPending = yield self.a.add(alert(1), [KEY0, KEY1], 1000.0)
        self.a.record(attrs.evolve(self.dead, state=State.DEAD, attempts=6, lastOutcome="HTTP 503"))
        self.a.record(attrs.evolve(self.aPending, attempts=1, dueAt=2000.0, lastOutcome="connection refused"))
        (self.bPending,) = yield self.b.add(alert(2), [KEY0], 1001.0)
        for outbox in (self.a, self.b):
            yield outbox.flushed()

    def open(self, name: str, lease: float = 30.0):  # type: ignore[no-untyped-def]
        from butler_tw.delivery.stores.postgres import PostgresOutbox

        outbox = PostgresOutbox(self.dsn, "test db", name, reactor, leaseSeconds=lease)
        outbox.open()
        self.addCleanup(outbox.close)
        return outbox

    def row(self, deliveryId: str) -> tuple[Any, ...] | None:
        with self.server.connect(dbname(self.dsn)) as conn:
            return conn.execute(
                "SELECT state, attempts, owner, requeued FROM butler_tw.deliveries WHERE id = %s",
                (deliveryId,),
            ).fetchone()

    def held(self, text: str) -> dict[str, str]:
        """The HELD BY column of a listing, by delivery id."""
        header, *rows = text.splitlines()
        start = header.index("HELD BY")
        return {line.split()[0]: line[start:].strip() for line in rows}

    def test_listShowsWhoHoldsEach(self) -> None:
        status, out, err = run_main("deliveries", "-c", self.config)
        self.assertEqual((status, err), (0, ""))
        header = out.splitlines()[0]
        self.assertEqual(header.split()[:3], ["DELIVERY", "ID", "STATE"])
        self.assertTrue(header.endswith("HELD BY"), header)
        self.assertEqual(self.held(out), {self.dead.id: "-", self.aPending.id: "a", self.bPending.id: "b"})
        self.assertIn("Ticketing", out)
        self.assertIn("connection refused", out)
        self.assertNotIn("token", out)
        self.assertNotIn(PASSWORD, out)

    def test_listByState(self) -> None:
        status, out, _ = run_main("deliveries", "-c", self.config, "--state", "dead")
        self.assertEqual(status, 0)
        header, row = out.splitlines()
        self.assertIn(self.dead.id, row)
        self.assertIn("HTTP 503", row)
        self.assertIn(" 6 ", row)
        status, out, _ = run_main("deliveries", "-c", self.config, "--state", "pending", "--limit", "1")
        self.assertEqual(len(out.splitlines()), 2)
        self.assertIn(self.bPending.id, out, "the one due first")

    @inlineCallbacks
    def test_lapsedLeaseIsSaid(self):  # type: ignore[no-untyped-def]
        c = self.open("c", lease=0.05)
        yield c.rebind(self.webhooks)
        (lapsed,) = yield c.add(alert(3), [KEY1], 1002.0)
        yield c.flushed()
        yield pause(0.2)  # c never renews: as if it died
        _, out, _ = run_main("deliveries", "-c", self.config, "--state", "pending")
        self.assertEqual(self.held(out)[lapsed.id], "c (lease ran out)")

    @inlineCallbacks
    def test_replayedIsNobodysThenClaimedByAnother(self):  # type: ignore[no-untyped-def]
        """The dead letter a created goes back pending with no owner; b, polling, takes it once."""
        status, out, err = run_main("replay", "-c", self.config, "--all-dead")
        self.assertEqual((status, out, err), (0, "re-queued 1 dead delivery to Teams\n", ""))
        self.assertEqual(self.row(self.dead.id), ("pending", 0, None, True))
        _, listing, _ = run_main("deliveries", "-c", self.config, "--state", "pending")
        self.assertEqual(self.held(listing)[self.dead.id], "nobody yet")

        (claimed,) = yield self.b.requeued()
        self.assertEqual((claimed.id, claimed.attempts), (self.dead.id, 0))
        self.assertEqual(claimed.alert, alert(1))
        self.assertEqual((yield self.a.requeued()), [], "claimed once")
        self.assertEqual(self.row(self.dead.id), ("pending", 0, "b", False))
        _, listing, _ = run_main("deliveries", "-c", self.config, "--state", "pending")
        self.assertEqual(self.held(listing)[self.dead.id], "b")
        self.assertEqual(self.row(self.aPending.id)[2], "a", "what was not replayed stays a's")

    def test_replayById(self) -> None:
        status, out, _ = run_main("replay", "-c", self.config, alert(1).alertId)
        self.assertEqual((status, out), (0, "re-queued 1 dead delivery to Teams\n"))
        _, out, _ = run_main("deliveries", "-c", self.config, "--state", "dead")
        self.assertIn("no dead deliveries", out)

    def test_replayUnknownId(self) -> None:
        status, out, _ = run_main("replay", "-c", self.config, "nope")
        self.assertEqual(status, 1)
        self.assertIn("not re-queued: no dead delivery has the id nope", out)

    def test_replayAgainFindsNone(self) -> None:
        run_main("replay", "-c", self.config, "--all-dead")
        self.assertEqual(
            run_main("replay", "-c", self.config, "--all-dead"), (0, "no dead deliveries to re-queue\n", "")
        )

    def test_storeStatus(self) -> None:
        status, out, err = run_main("store", "status", "-c", self.config)
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(lines[0], f"outbox      PostgreSQL {self.where}, shared")
        self.assertTrue(
            lines[1].startswith("deliveries  2 pending deliveries, the oldest accepted "), lines[1]
        )
        self.assertTrue(lines[1].endswith("; 1 dead letter"), lines[1])
        self.assertEqual(
            lines[2].split(), ["INSTANCE", "HOST", "PID", "VERSION", "STATE", "LAST", "SEEN", "HOLDS"]
        )
        byName = {line.split()[0]: line.split() for line in lines[3:]}
        self.assertEqual(sorted(byName), ["a", "b"])
        self.assertEqual((byName["a"][4], byName["a"][-1]), ("up", "1"))
        self.assertEqual((byName["b"][4], byName["b"][-1]), ("up", "1"))
        self.assertNotIn(PASSWORD, out)

    @inlineCallbacks
    def test_storeStatusAfterACleanStop(self):  # type: ignore[no-untyped-def]
        yield self.b.close()
        _, out, _ = run_main("store", "status", "-c", self.config)
        self.assertIn("(1 unclaimed: the next daemon to poll takes them)", out)
        byName = {line.split()[0]: line.split() for line in out.splitlines()[3:]}
        self.assertEqual((byName["b"][4], byName["b"][-1]), ("stopped", "0"))

    def test_storeInitOnAnInitialisedStore(self) -> None:
        self.assertEqual(
            run_main("store", "init", "-c", self.config),
            (0, f"outbox schema in {self.where}: already at version {SCHEMA_VERSION}\n", ""),
        )


class SchemaTests(TestCase):
    """``store init`` on an empty database; the other commands create nothing."""

    skip = missing_reason()

    def setUp(self) -> None:
        self.server = require_postgres()
        self.dsn = fresh_database(self)
        self.dbname = dbname(self.dsn)
        self.cliDsn = f"{self.dsn} password={PASSWORD}"
        self.where = loggable_dsn(self.cliDsn)
        self.config = shared_config(self, self.cliDsn)

    def schemas(self) -> list[str]:
        with self.server.connect(self.dbname) as conn:
            return [
                n for (n,) in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = 'butler_tw'")
            ]

    def test_initThenAgain(self) -> None:
        self.assertEqual(
            run_main("store", "init", "-c", self.config),
            (0, f"outbox schema in {self.where}: version 0 -> {SCHEMA_VERSION}\n", ""),
        )
        with self.server.connect(self.dbname) as conn:
            applied = conn.execute(
                "SELECT version, applied_by FROM butler_tw.migrations ORDER BY version"
            ).fetchall()
        self.assertEqual(
            applied, [(v, "butler-tw store init (admin-host)") for v in range(1, SCHEMA_VERSION + 1)]
        )
        self.assertEqual(
            run_main("store", "init", "-c", self.config),
            (0, f"outbox schema in {self.where}: already at version {SCHEMA_VERSION}\n", ""),
        )
        # Now the commands work, before any daemon has run.
        status, out, err = run_main("deliveries", "-c", self.config)
        self.assertEqual((status, err), (0, ""))
        self.assertIn("(no pending or dead deliveries)", out)
        self.assertEqual(
            run_main("replay", "-c", self.config, "--all-dead"), (0, "no dead deliveries to re-queue\n", "")
        )
        status, out, _ = run_main("store", "status", "-c", self.config)
        self.assertEqual(status, 0)
        self.assertEqual(
            out.splitlines()[1:],
            [
                "deliveries  no pending deliveries; no dead letters",
                "instances   none yet (no daemon has run with this store)",
            ],
        )

    def test_noSchemaIsSaidAndNotCreated(self) -> None:
        said = (
            f"butler-tw: no outbox schema in {self.where}: has a daemon run with this store? "
            f"(or run `butler-tw store init -c {self.config}`)\n"
        )
        for argv in (["deliveries"], ["replay", "--all-dead"], ["replay", "some-id"], ["store", "status"]):
            self.assertEqual(run_main(*argv, "-c", self.config), (2, "", said), argv)
        self.assertEqual(self.schemas(), [], "the commands created nothing")

    def test_noPrivilegeIsSaid(self) -> None:
        """A role that may not read the schema: the database's words, not "no schema"."""
        run_main("store", "init", "-c", self.config)
        role = f"{self.dbname}_reader"
        with self.server.connect(self.dbname) as conn:
            conn.execute(f"CREATE ROLE {role} LOGIN")
        self.addCleanup(self.dropRole, role)
        config = shared_config(self, self.cliDsn.replace("user=postgres", f"user={role}"))
        status, out, err = run_main("deliveries", "-c", config)
        self.assertEqual((status, out), (2, ""))
        self.assertEqual(
            err,
            f"butler-tw: the outbox store {loggable_dsn(self.cliDsn).replace('user=postgres', f'user={role}')}: "
            "permission denied for schema butler_tw\n",
        )

    def dropRole(self, role: str) -> None:
        with self.server.connect() as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")

    def test_schemaNewerThanThisVersion(self) -> None:
        run_main("store", "init", "-c", self.config)
        with self.server.connect(self.dbname) as conn:
            conn.execute(
                "INSERT INTO butler_tw.migrations (version, description, applied_by) VALUES (99, 'x', 'y')"
            )
        for argv in (["deliveries"], ["store", "init"]):
            status, out, err = run_main(*argv, "-c", self.config)
            self.assertEqual((status, out), (2, ""), argv)
            self.assertIn("is version 99, newer than this butler-tw", err)
            self.assertIn("upgrade butler-tw", err)
            self.assertEqual(len(err.splitlines()), 1)
            self.assertNotIn(PASSWORD, err)


class UnreachableTests(TestCase):
    """A store that does not answer: one line naming it, exit 2, never its password."""

    def setUp(self) -> None:
        self.nowhere = os.path.abspath(self.mktemp())  # a socket directory that does not exist

    def check(self, dsn: str, where: str) -> None:
        config = shared_config(self, dsn)
        for argv in (["deliveries"], ["replay", "--all-dead"], ["store", "init"], ["store", "status"]):
            status, out, err = run_main(*argv, "-c", config)
            self.assertEqual((status, out), (2, ""), argv)
            self.assertTrue(err.startswith(f"butler-tw: cannot connect to the outbox store {where}: "), err)
            self.assertIn(self.nowhere, err)
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertNotIn(PASSWORD, err)

    def test_keyValue(self) -> None:
        self.check(
            f"host={self.nowhere} port=5432 dbname=butler user=butler password={PASSWORD}",
            f"host={self.nowhere} port=5432 dbname=butler user=butler password=***",
        )

    def test_url(self) -> None:
        self.check(
            f"postgresql://butler:{PASSWORD}@/butler?host={self.nowhere}",
            f"postgresql://butler@/butler?host={self.nowhere}",
        )

    @inlineCallbacks
    def test_commandLine(self):  # type: ignore[no-untyped-def]
        """The installed ``butler-tw``, as an admin runs it."""
        config = shared_config(self, f"host={self.nowhere} dbname=butler password={PASSWORD}")
        command = os.path.join(os.path.dirname(sys.executable), "butler-tw")
        out, err, status = yield getProcessOutputAndValue(command, ["deliveries", "-c", config])
        self.assertEqual((status, out), (2, b""))
        self.assertTrue(err.startswith(b"butler-tw: cannot connect to the outbox store host="), err)
        self.assertEqual(len(err.splitlines()), 1)
        self.assertNotIn(PASSWORD.encode(), err)


class SqliteStoreTests(SynchronousTestCase):
    """``store`` when the outbox is SQLite in stateDir."""

    def setUp(self) -> None:
        self.stateDir = os.path.abspath(self.mktemp())
        self.config = write_config(
            self, make_config(failure=[TEAMS], butlerWebhook={"stateDir": self.stateDir})
        )
        self.path = os.path.join(self.stateDir, DB_NAME)

    def test_initCreatesThenOpens(self) -> None:
        self.assertEqual(run_main("deliveries", "-c", self.config)[0], 2, "no database yet")
        self.assertEqual(
            run_main("store", "init", "-c", self.config),
            (
                0,
                f"outbox database {self.path}: created, schema version {SQLITE_SCHEMA} (SQLite in stateDir, for one daemon)\n",
                "",
            ),
        )
        self.assertTrue(os.path.exists(self.path))
        self.assertEqual(
            run_main("store", "init", "-c", self.config),
            (
                0,
                f"outbox database {self.path}: ready, schema version {SQLITE_SCHEMA} (SQLite in stateDir, for one daemon)\n",
                "",
            ),
        )
        status, out, err = run_main("deliveries", "-c", self.config)
        self.assertEqual((status, err), (0, ""))
        self.assertIn("(no pending or dead deliveries)", out)

    def test_initWhereStateDirCannotBeMade(self) -> None:
        blocker = self.mktemp()
        open(blocker, "w").close()
        config = write_config(
            self, make_config(failure=[TEAMS], butlerWebhook={"stateDir": os.path.join(blocker, "state")})
        )
        status, out, err = run_main("store", "init", "-c", config)
        self.assertEqual((status, out), (2, ""))
        self.assertIn("cannot create the state directory", err)

    def test_statusHasNoCluster(self) -> None:
        status, out, err = run_main("store", "status", "-c", self.config)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(
            out,
            f"outbox      SQLite in stateDir ({self.stateDir}), for one daemon: no cluster to show "
            f"(`butler-tw deliveries -c {self.config}` lists what it holds)\n",
        )
        self.assertFalse(os.path.exists(self.path), "status creates nothing")
