"""Start-up checks of a shared store (PostgreSQL), against a real throwaway server."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from butler_tw.config import parse_config
from butler_tw.daemon.startup import StartupError, preflight
from tests.config.test_config import minimal
from tests.support.postgres import fresh_database, missing_reason, require_postgres


def config(dsn: str, name: str) -> Any:
    doc = minimal()
    doc["butlerWebhook"] = {"store": dsn, "instanceName": name}
    return parse_config(doc)


class SharedStoreStartupTests(TestCase):
    skip = missing_reason()

    def setUp(self) -> None:
        require_postgres()
        self.dsn = fresh_database(self)

    def test_reachableAndFree(self) -> None:
        checked = preflight(config(self.dsn, "a"), listen=False)
        self.assertIsNone(checked.storeUnreachable)

    def test_checkingChangesNothing(self) -> None:
        """check-config and the start-up check read: the schema is the daemon's to create."""
        from butler_tw.delivery.stores.postgres import open_connection, schema_version

        preflight(config(self.dsn, "a"), listen=False)
        conn = open_connection(self.dsn, "test")
        try:
            self.assertEqual(schema_version(conn), 0)
        finally:
            conn.close()

    def test_aConnectionStringLibpqRefusesIsAProblem(self) -> None:
        dsn = self.dsn + " dbnmae=x password=s3cret"
        with self.assertRaises(StartupError) as caught:
            preflight(config(dsn, "a"), listen=False)
        (problem,) = caught.exception.problems
        self.assertTrue(problem.startswith("butlerWebhook.store: "), problem)
        self.assertIn("dbnmae", problem)
        self.assertNotIn("s3cret", problem)

    @inlineCallbacks
    def test_nameInUseIsRefused(self):  # type: ignore[no-untyped-def]
        from butler_tw.delivery.stores.postgres import PostgresOutbox

        running = PostgresOutbox(self.dsn, "test db", "a", reactor)
        running.open()
        self.addCleanup(running.close)
        yield running.rebind({})  # connected: it holds its name's lock
        with self.assertRaises(StartupError) as caught:
            preflight(config(self.dsn, "a"), listen=False)
        (problem,) = caught.exception.problems
        self.assertTrue(
            problem.startswith(
                "butlerWebhook.store: another butler-tw is running as butlerWebhook.instanceName 'a'"
            ),
            problem,
        )
        self.assertIn("give each daemon its own instanceName", problem)
        preflight(config(self.dsn, "b"), listen=False)  # another name is fine

    def test_unreachableIsSaidNotFatal(self) -> None:
        dsn = "host=/nonexistent/socket/dir dbname=x user=u password=s3cret"
        checked = preflight(config(dsn, "a"), listen=False)
        assert checked.storeUnreachable is not None
        self.assertTrue(checked.storeUnreachable.startswith("cannot connect to host=/nonexistent/socket/dir"))
        self.assertNotIn("s3cret", checked.storeUnreachable)
