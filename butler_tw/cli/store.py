"""The outbox the admin commands act on: the SQLite file in ``stateDir``, or the shared PostgreSQL one.

``butler-tw deliveries``, ``replay`` and ``store`` reach the store named by
``butlerWebhook.store`` only through :func:`open_outbox`, :func:`init_store`
and :func:`read_cluster`; nowhere else is it asked which store that is.

Neither :func:`open_outbox` nor :func:`read_cluster` creates anything: a
missing SQLite file or PostgreSQL schema is said as such (``store init``,
or a daemon's start, creates it). Every problem is a :class:`StoreUnavailable`
of one line naming the store in its loggable form: a PostgreSQL password is
never in it, not even where the driver's message would quote it.
"""

from __future__ import annotations

import os
import sqlite3
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, TypeVar

import attrs

from butler_tw import __version__
from butler_tw.config import Config
from butler_tw.core.cluster import ClusterView
from butler_tw.core.delivery import Delivery, State
from butler_tw.core.words import DEFAULT_CONFIG, admin_command
from butler_tw.delivery.replay import Decision
from butler_tw.delivery.stores import sqlite

if TYPE_CHECKING:  # psycopg is imported only where a shared store is used
    import psycopg

#: The PostgreSQL application_name of the admin command's connections is "butler-tw cli".
CLIENT_NAME = "cli"
#: Seconds to wait for the database to answer a connection.
CONNECT_TIMEOUT = 5.0
#: The exit status of a command whose store cannot be used (a missing SQLite outbox has always been 2).
EX_STORE = 2

T = TypeVar("T")
Decide = Callable[[list[Delivery], dict[str, str], set[str]], list[Decision]]


class StoreUnavailable(Exception):
    """The outbox cannot be read or written; the message (one line) says which and why."""


@attrs.frozen
class Listed:
    """One delivery as ``butler-tw deliveries`` lists it."""

    delivery: Delivery
    #: With a shared store, the instance whose claim it carries (None: nobody's).
    owner: str | None = None
    #: Whether that claim's lease is still running (over: the next daemon to poll takes it).
    leaseLive: bool = False


class AdminOutbox(Protocol):
    """An open outbox, for one admin command."""

    #: Whether several daemons share it (then :class:`Listed` says who holds what).
    shared: bool
    #: The store in words, without a secret: a file path or a loggable connection string.
    where: str

    def deliveries(self, state: State | None, limit: int) -> list[Listed]:
        """Up to ``limit`` deliveries in ``state`` (None: pending and dead), by state then due."""

    def replay(self, ids: Sequence[str], allDead: bool, decide: Decide, now: float) -> list[Decision]:
        """Re-queue dead deliveries as ``decide`` says, in one transaction.

        See :func:`butler_tw.delivery.stores.sqlite.replay_dead`.
        """

    def close(self) -> None: ...


def open_outbox(config: Config, configPath: str = DEFAULT_CONFIG) -> AdminOutbox:
    """The configured outbox, as it is: nothing is created or migrated.

    :param configPath: for the commands a message suggests.
    :raises StoreUnavailable: it is not there, or cannot be reached.
    """
    if config.store.shared:
        return _PostgresOutbox(config, configPath)
    return _SqliteOutbox(config.stateDir)


def init_store(config: Config) -> str:
    """Create the configured outbox, or bring its schema up to date; what was done, in words.

    :raises StoreUnavailable: it cannot be reached, or holds a schema newer than this version knows.
    """
    if config.store.shared:
        from butler_tw.delivery.stores import postgres

        conn = _connect(config)
        try:
            before, now = _pg(config, lambda: postgres.migrate(conn, _migrated_by(config)))
        except postgres.StoreError as e:
            raise StoreUnavailable(f"{config.store.loggable}: {e}") from None
        finally:
            conn.close()
        where = config.store.loggable
        if before == now:
            return f"outbox schema in {where}: already at version {now}"
        return f"outbox schema in {where}: version {before} -> {now}"
    path = sqlite.db_path(config.stateDir)
    existed = os.path.exists(path)
    try:
        sqlite.connect(config.stateDir).close()
    except sqlite.StoreError as e:
        raise StoreUnavailable(str(e)) from None
    said = "ready" if existed else "created"
    return (
        f"outbox database {os.path.abspath(path)}: {said}, schema version {sqlite.SCHEMA_VERSION} "
        "(SQLite in stateDir, for one daemon)"
    )


def read_cluster(config: Config, readAt: float, configPath: str = DEFAULT_CONFIG) -> ClusterView | None:
    """The daemons sharing the store and what each holds; None for SQLite (one daemon, no cluster).

    :raises StoreUnavailable: as :func:`open_outbox`.
    """
    if not config.store.shared:
        return None
    outbox = _PostgresOutbox(config, configPath)
    try:
        return outbox.cluster(readAt)
    finally:
        outbox.close()


# -- SQLite


class _SqliteOutbox:
    shared = False

    def __init__(self, stateDir: str) -> None:
        self.where = sqlite.db_path(stateDir)
        try:
            self._conn = sqlite.connect(stateDir, create=False)
        except sqlite.StoreError as e:
            raise StoreUnavailable(str(e)) from None

    def deliveries(self, state: State | None, limit: int) -> list[Listed]:
        return [Listed(d) for d in self._run(lambda: sqlite.list_deliveries(self._conn, state, limit))]

    def replay(self, ids: Sequence[str], allDead: bool, decide: Decide, now: float) -> list[Decision]:
        return self._run(lambda: sqlite.replay_dead(self._conn, ids, allDead, decide, now))

    def _run(self, op: Callable[[], T]) -> T:
        try:
            return op()
        except sqlite3.Error as e:
            raise StoreUnavailable(f"the outbox database {self.where}: {e}") from None

    def close(self) -> None:
        self._conn.close()


# -- PostgreSQL


class _PostgresOutbox:
    shared = True

    def __init__(self, config: Config, configPath: str) -> None:
        from butler_tw.delivery.stores import postgres

        self._config = config
        self.where = config.store.loggable
        self._conn = _connect(config)
        try:
            version = _pg(config, lambda: postgres.schema_version(self._conn))
            problem = _schema_problem(version, postgres.SCHEMA_VERSION, self.where, configPath)
            if problem:
                raise StoreUnavailable(problem)
        except BaseException:
            self._conn.close()
            raise

    def deliveries(self, state: State | None, limit: int) -> list[Listed]:
        from butler_tw.delivery.stores import postgres

        rows = _pg(self._config, lambda: postgres.list_held(self._conn, state, limit))
        return [Listed(d, owner, live) for d, owner, live in rows]

    def replay(self, ids: Sequence[str], allDead: bool, decide: Decide, now: float) -> list[Decision]:
        from butler_tw.delivery.stores import postgres

        return _pg(self._config, lambda: postgres.replay_dead(self._conn, ids, allDead, decide, now))

    def cluster(self, readAt: float) -> ClusterView:
        from butler_tw.delivery.stores import postgres

        return _pg(self._config, lambda: postgres.read_cluster(self._conn, readAt))

    def close(self) -> None:
        self._conn.close()


def _schema_problem(version: int, known: int, where: str, configPath: str) -> str | None:
    init = admin_command(configPath, "store init")
    if version == 0:
        return f"no outbox schema in {where}: has a daemon run with this store? (or run `{init}`)"
    if version > known:
        return (
            f"the outbox schema in {where} is version {version}, newer than this butler-tw "
            f"({__version__}) knows ({known}): upgrade butler-tw on this host too"
        )
    if version < known:
        return (
            f"the outbox schema in {where} is version {version}, older than this butler-tw's ({known}): "
            f"run `{init}` (or start a daemon of this version), then again"
        )
    return None


def _connect(config: Config) -> psycopg.Connection[Any]:
    import psycopg

    from butler_tw.delivery.stores import postgres

    try:
        return postgres.open_connection(config.store.dsn, CLIENT_NAME, CONNECT_TIMEOUT)
    except psycopg.Error as e:
        raise StoreUnavailable(
            f"cannot connect to the outbox store {config.store.loggable}: {_reason(e, config.store.dsn)}"
        ) from None


def _pg(config: Config, op: Callable[[], T]) -> T:
    """``op()``, a database error said in one line as :class:`StoreUnavailable`."""
    import psycopg

    try:
        return op()
    except psycopg.Error as e:
        raise StoreUnavailable(
            f"the outbox store {config.store.loggable}: {_reason(e, config.store.dsn)}"
        ) from None


def _migrated_by(config: Config) -> str:
    """Who ``store init`` says ran a migration (the migrations table's applied_by)."""
    return f"butler-tw store init ({config.instanceName})"


def _reason(error: Exception, dsn: str) -> str:
    from butler_tw.delivery.stores.postgres import describe_error

    return describe_error(error, dsn)
