"""butlerWebhook.store, instanceName, leaseSeconds: what is taken, what is refused, what is logged."""

from __future__ import annotations

import platform
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from butler_tw.config import ConfigError, parse_config
from butler_tw.config.store import POSTGRESQL, SQLITE, dsn_problem, loggable_dsn
from tests.config.test_config import minimal


def with_ours(**ours: Any) -> dict[str, Any]:
    doc = minimal()
    doc["butlerWebhook"] = ours
    return doc


class StoreSettingTests(SynchronousTestCase):
    def problems(self, doc: dict[str, Any], environ: dict[str, str] | None = None) -> tuple[str, ...]:
        with self.assertRaises(ConfigError) as caught:
            parse_config(doc, environ=environ or {})
        return tuple(caught.exception.problems)

    def test_defaultIsSqlite(self) -> None:
        config = parse_config(minimal())
        self.assertEqual(config.store.kind, SQLITE)
        self.assertFalse(config.store.shared)
        self.assertEqual(config.instanceName, platform.node())
        self.assertEqual(config.leaseSeconds, 30.0)

    def test_sqliteByName(self) -> None:
        self.assertEqual(parse_config(with_ours(store=" SQLite ")).store.kind, SQLITE)

    def test_postgresUrlAndKeyValue(self) -> None:
        for dsn in (
            "postgresql://butler@db.example.com/butler_tw?sslmode=verify-full",
            "postgres://db/butler_tw",
            "postgresql://u@pg1:5432,pg2:5433/db?target_session_attrs=read-write",
            "host=/run/postgresql dbname=butler_tw user=butler",
            "host=db dbname='butler tw' password='a b'",
        ):
            config = parse_config(with_ours(store=dsn, instanceName="qs-bt-1", leaseSeconds=10))
            self.assertEqual((config.store.kind, config.store.dsn), (POSTGRESQL, dsn))
            self.assertEqual((config.instanceName, config.leaseSeconds), ("qs-bt-1", 10))

    def test_passwordFromASecretReference(self) -> None:
        config = parse_config(
            with_ours(store="postgresql://butler:${env:PGPW}@db/butler_tw"), environ={"PGPW": "s3cret"}
        )
        self.assertEqual(config.store.dsn, "postgresql://butler:s3cret@db/butler_tw")
        self.assertNotIn("s3cret", config.store.loggable)
        self.assertNotIn("s3cret", repr(config))

    def test_refused(self) -> None:
        key = "butlerWebhook.store"
        cases = {
            "mysql://db/x": f"{key}: a connection URL starts with postgresql:// (not mysql://)",
            "postgresql://u:pw@db:x5/x": f"{key}: the connection URL has a port that is not a number",
            "db.example.com": f"{key}: expected 'sqlite' or a PostgreSQL connection string",
            "host=a b": f"{key}: the key=value connection string cannot be read",
            "": f"{key}: expected 'sqlite' or a PostgreSQL connection string",
        }
        for value, start in cases.items():
            (problem,) = self.problems(with_ours(store=value))
            self.assertTrue(problem.startswith(start), problem)
            self.assertNotIn("pw", problem.removeprefix(key))

    def test_missingReference(self) -> None:
        (problem,) = self.problems(with_ours(store="postgresql://u:${env:NOPE}@db/x"))
        self.assertIn("butlerWebhook.store: ${env:NOPE}", problem)

    def test_instanceNameAndLease(self) -> None:
        self.assertEqual(
            self.problems(with_ours(instanceName="", leaseSeconds=1)),
            (
                "butlerWebhook.instanceName: expected a name for this daemon, e.g. its host name",
                "butlerWebhook.leaseSeconds: must be between 5 and 3600, got 1",
            ),
        )


class LoggableTests(SynchronousTestCase):
    def test_neverThePassword(self) -> None:
        for dsn, shown in (
            (
                "postgresql://butler:s3cret@db:5432/bt?sslmode=require",
                "postgresql://butler@db:5432/bt?sslmode=require",
            ),
            (
                "postgresql://u@h/db?password=s3cret&sslmode=require",
                "postgresql://u@h/db?password=***&sslmode=require",
            ),
            ("host=db password=s3cret dbname=bt", "host=db password=*** dbname=bt"),
            ("host=db password='s3 cret' dbname=bt", "host=db password=*** dbname=bt"),
            ("postgresql://u:s3cret@[::1]:5432/db", "postgresql://u@[::1]:5432/db"),
        ):
            self.assertEqual(loggable_dsn(dsn), shown)
            self.assertIsNone(dsn_problem(dsn))
