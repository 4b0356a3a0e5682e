"""The throwaway PostgreSQL server of :mod:`tests.support.postgres`: it starts, it serves
databases that are independent of each other, a restart keeps their data, and where it
cannot start the tests skip with a reason that says why."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import psycopg
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import postgres
from tests.support.postgres import PostgresServer, fresh_database, require_postgres


class SharedServerTests(SynchronousTestCase):
    """The process's shared server, as the store tests use it."""

    def setUp(self) -> None:
        self.server = require_postgres()

    def test_acceptsConnectionsOnItsSocketOnly(self) -> None:
        with psycopg.connect(self.server.dsn()) as conn:
            self.assertEqual(conn.execute("SELECT current_user").fetchone(), ("postgres",))
            self.assertEqual(conn.execute("SHOW listen_addresses").fetchone(), ("",))
            self.assertEqual(conn.execute("SHOW fsync").fetchone(), ("off",))
            self.assertEqual(conn.execute("SHOW server_encoding").fetchone(), ("UTF8",))
        assert self.server.sockdir is not None
        self.assertTrue((self.server.sockdir / f".s.PGSQL.{self.server.port}").is_socket())

    def test_dsn(self) -> None:
        self.assertEqual(
            self.server.dsn("outbox"),
            f"host={self.server.sockdir} port={self.server.port} dbname=outbox user=postgres",
        )

    def test_sharedPerProcess(self) -> None:
        self.assertIs(postgres.postgres_server(), self.server)
        self.assertIs(require_postgres(), self.server)
        self.assertIsNone(postgres.skip_reason())

    def test_databaseRoundTrip(self) -> None:
        dsn = fresh_database(self)
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE TABLE outbox (id serial PRIMARY KEY, body text NOT NULL)")
            conn.execute("INSERT INTO outbox (body) VALUES (%s), (%s)", ("one", "twø"))
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT id, body FROM outbox ORDER BY id").fetchall()
        self.assertEqual(rows, [(1, "one"), (2, "twø")])

    def test_databasesAreIndependent(self) -> None:
        first, second = fresh_database(self), fresh_database(self)
        self.assertNotEqual(first, second)
        with psycopg.connect(first) as conn:
            conn.execute("CREATE TABLE outbox (id int)")
            conn.execute("INSERT INTO outbox VALUES (1)")
        with psycopg.connect(second) as conn:
            present = conn.execute("SELECT to_regclass('outbox')").fetchone()
            conn.execute("CREATE TABLE outbox (id int)")
            count = conn.execute("SELECT count(*) FROM outbox").fetchone()
        self.assertEqual(present, (None,))
        self.assertEqual(count, (0,))

    def test_createDatabaseByName(self) -> None:
        dsn = self.server.create_database("named_db")
        self.addCleanup(self.server.drop_database, "named_db")
        self.assertTrue(dsn.endswith("dbname=named_db user=postgres"))
        with psycopg.connect(dsn) as conn:
            self.assertEqual(conn.execute("SELECT current_database()").fetchone(), ("named_db",))

    def test_dropDatabase(self) -> None:
        dsn = self.server.create_database()
        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        client = psycopg.connect(dsn)
        self.addCleanup(client.close)
        self.server.drop_database(str(name))  # WITH (FORCE): its clients are disconnected
        with self.server.connect() as conn:
            found = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()
        self.assertEqual(found, (0,))

    def test_restartKeepsDataAndClientsReconnect(self) -> None:
        dsn = fresh_database(self)
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE TABLE outbox (id int)")
            conn.execute("INSERT INTO outbox VALUES (1), (2)")
        before = psycopg.connect(dsn, autocommit=True)
        self.addCleanup(before.close)
        dsnBefore = self.server.dsn()
        self.server.restart()
        # A connection from before the restart is gone...
        with self.assertRaises(psycopg.OperationalError):
            before.execute("SELECT 1")
        # ...and a new one, with the same DSN, finds the data.
        self.assertEqual(self.server.dsn(), dsnBefore)
        with psycopg.connect(dsn) as conn:
            self.assertEqual(conn.execute("SELECT count(*) FROM outbox").fetchone(), (2,))

    def test_stoppedServerRefusesConnections(self) -> None:
        dsn = fresh_database(self)
        self.server.stop()
        self.assertFalse(self.server.running)
        with self.assertRaises(psycopg.OperationalError):
            psycopg.connect(dsn, connect_timeout=2)
        self.server.start()
        with psycopg.connect(dsn) as conn:
            self.assertEqual(conn.execute("SELECT 1").fetchone(), (1,))

    def test_requireStartsAStoppedServerAgain(self) -> None:
        """A test that stops the server and leaves it stopped does not skip the tests after it."""
        self.server.stop()
        self.assertIs(require_postgres(), self.server)
        self.assertTrue(self.server.running)

    def test_immediateStopIsACrashRecoveredAtStart(self) -> None:
        dsn = fresh_database(self)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE outbox (id int)")
            conn.execute("INSERT INTO outbox VALUES (1)")
            conn.execute("CHECKPOINT")  # synchronous_commit is off: a crash may lose the commits before
        self.server.restart("immediate")
        with psycopg.connect(dsn) as conn:
            self.assertEqual(conn.execute("SELECT count(*) FROM outbox").fetchone(), (1,))
        assert self.server.logfile is not None
        self.assertIn("was interrupted", self.server.logfile.read_text())


class CrashSafeServerTests(SynchronousTestCase):
    """A server of its own, with synchronous_commit on: a crash loses no commit."""

    def setUp(self) -> None:
        require_postgres()  # skips where no server can start
        self.server = PostgresServer(settings={"synchronous_commit": "on"})
        self.addCleanup(self.server.cleanup)

    def test_immediateStopKeepsEveryCommit(self) -> None:
        dsn = self.server.create_database()
        with psycopg.connect(dsn, autocommit=True) as conn:
            self.assertEqual(conn.execute("SHOW synchronous_commit").fetchone(), ("on",))
            conn.execute("CREATE TABLE outbox (id int)")
            for i in range(20):
                conn.execute("INSERT INTO outbox VALUES (%s)", (i,))
        self.server.restart("immediate")
        with psycopg.connect(dsn) as conn:
            self.assertEqual(conn.execute("SELECT count(*) FROM outbox").fetchone(), (20,))
        self.assertIsNot(self.server, postgres.postgres_server())
        base = self.server.base
        assert base is not None
        self.server.cleanup()
        self.assertFalse(base.exists())
        self.assertFalse(self.server.running)


def _emptyDir(testcase: SynchronousTestCase) -> Path:
    path = Path(testcase.mktemp())
    path.mkdir(parents=True)
    return path


class UnavailableTests(SynchronousTestCase):
    """Where no server can be had, the reason says which and what to do."""

    def test_binariesMissing(self) -> None:
        empty = _emptyDir(self)
        (empty / "15" / "bin").mkdir(parents=True)  # a version directory without the server
        self.patch(postgres, "PG_CONFIG", str(empty / "pg_config"))
        self.patch(postgres, "DEBIAN_BINDIRS", str(empty / "*" / "bin"))
        self.assertIsNone(postgres.find_bindir())
        expected = (
            "PostgreSQL server binaries not found (looked in pg_config --bindir and "
            f"{empty}/*/bin): install the Debian package postgresql (make test does it when run as root)"
        )
        self.assertEqual(postgres.missing_reason(), expected)
        server = PostgresServer()
        self.assertEqual(server.skip_reason(), expected)
        self.assertEqual(server.skip_reason(), expected)  # asked again: the same, not tried again
        self.assertIsNone(server.base)

    def test_givenDirectoryWithoutBinaries(self) -> None:
        empty = _emptyDir(self)
        reason = PostgresServer(bindir=empty).skip_reason()
        self.assertEqual(
            reason, f"PostgreSQL server binaries not found in {empty} (no executable initdb and postgres)"
        )

    def test_newestDebianVersionWins(self) -> None:
        root = _emptyDir(self)
        for version in ("9.6", "15", "13"):
            bindir = root / version / "bin"
            bindir.mkdir(parents=True)
            for name in ("initdb", "postgres"):
                (bindir / name).write_text("#!/bin/sh\n")
                (bindir / name).chmod(0o755)
        self.patch(postgres, "PG_CONFIG", str(root / "pg_config"))
        self.assertEqual(postgres.find_bindir(debian_bindirs=str(root / "*" / "bin")), root / "15" / "bin")

    def test_psycopgMissing(self) -> None:
        self.patch(postgres, "psycopg", None)
        reason = postgres.missing_reason()
        assert reason is not None
        self.assertIn("psycopg is not installed", reason)
        self.assertEqual(PostgresServer().skip_reason(), reason)

    def test_initdbFailureGivesItsStderr(self) -> None:
        # Somewhere the server's user (postgres when we are root) can read and run it.
        bindir = Path(tempfile.mkdtemp(prefix="butler-tw-fake-pg-"))
        self.addCleanup(shutil.rmtree, bindir, True)
        bindir.chmod(0o755)
        for name, body in (
            ("initdb", "echo 'initdb: error: the disk is on fire' >&2\nexit 1\n"),
            ("postgres", ""),
        ):
            (bindir / name).write_text("#!/bin/sh\n" + body)
            (bindir / name).chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        server = PostgresServer(bindir=bindir)
        reason = server.skip_reason()
        assert reason is not None
        self.assertIn("initdb failed (exit status 1, run as ", reason)
        self.assertIn("initdb: error: the disk is on fire", reason)
        self.assertIsNone(server.base)  # its temporary directory is gone
        with self.assertRaises(SkipTest):
            self.patch(postgres, "_shared", server)
            require_postgres()

    def test_rootRunsThePostgresUser(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("only as root")
        runAs = postgres._runAs()
        assert runAs is not None
        self.assertIn(runAs[0], ("postgres", "nobody"))
        self.assertNotEqual(runAs[1], 0)
