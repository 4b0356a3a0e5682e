"""The shared outbox: PostgreSQL, for two or more daemons (docs/high-availability.md).

Every daemon of a site receives every datagram (Qlik sends each to all of
them) and writes to the same database. What keeps them from sending twice:

- **One alert, once.** An alert is inserted with ``ON CONFLICT DO NOTHING``
  on its id (derived from kind, taskId and executionId): the daemon whose
  insert lands creates its deliveries; the other is told
  :class:`~butler_tw.delivery.outbox.AlreadyTaken` and sends nothing.
- **One rate-limit window per task, for the cluster.** In the same
  transaction, the task's window row is taken only if it is free or over.
- **Leases.** A delivery belongs to the daemon that created (or took over)
  it until ``lease_until``; the owner renews the lease of every delivery it
  holds while it holds it. A daemon that dies stops renewing; once a lease
  runs out, another daemon claims the delivery (``FOR UPDATE SKIP LOCKED``,
  so two never claim the same row) and delivers it. A clean stop hands its
  unattempted deliveries back at once. Lease times are the database's
  clock, so the daemons' clocks need not agree.
- Every update of a delivery says ``AND owner = <this daemon>``: one whose
  lease was taken over can no longer overwrite the new owner's record.

Writes are group-committed on one thread (:mod:`~butler_tw.delivery.stores.groupcommit`),
as with SQLite; when the database is unreachable they are kept and retried
with backoff, reconnecting, while deliveries carry on from memory.
"""

# The SQL names one fixed schema (SCHEMA, DB_NOW are constants of this module);
# every value goes in as a parameter.
# ruff: noqa: S608

from __future__ import annotations

import os
import socket
from typing import Any, Callable, Iterable, Mapping, Sequence

import psycopg
import psycopg.conninfo
from psycopg import errors as pgerrors
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from butler_tw import __version__
from butler_tw.core.alert import Alert, EventKind
from butler_tw.core.cluster import ClusterView, Member
from butler_tw.core.delivery import REMOVED, Delivery, Page, Rebinding, State, match_webhooks, removed_key
from butler_tw.core.words import count
from butler_tw.delivery.outbox import AlreadyTaken, IOutbox
from butler_tw.delivery.replay import Decision
from butler_tw.delivery.stores.groupcommit import GroupCommit
from butler_tw.delivery.stores.rows import alert_to_json, delivery_from_row, outcome_row

log = Logger(namespace="butler_tw.outbox")

SCHEMA = "butler_tw"
#: The database's clock, in seconds since the epoch: the statement's start (stable within a
#: statement, so that a comparison with it can use an index; clock_timestamp() cannot).
DB_NOW = "extract(epoch from statement_timestamp())"
#: pg_advisory_lock keys: migrations (held by the session while it migrates), rebinding (for a transaction).
_LOCK_MIGRATE = 0x6275746C  # "butl"
_LOCK_REBIND = 0x6275746D
_MOVING = "moving:"
#: The owner of delivery ``d`` is running and has committed within its lease: its
#: deliveries stay its own even if a renewal came late (the daemon was busy).
ALIVE = (
    f"SELECT 1 FROM {SCHEMA}.instances i WHERE i.name = owner AND i.stopped_at IS NULL "
    f"AND i.seen_at > {DB_NOW} - %(lease)s"
)
#: Deliveries claimed per poll, so that a takeover of a huge backlog comes in slices.
CLAIM_BATCH = 1000
#: How long an alert's row is kept after its deliveries end, as the cluster's memory
#: of it: the same datagram reaching a daemon late is still a duplicate.
KEEP_ALERTS = 3600.0

#: add(), in one statement (one round trip): the alert, unless it is there already; its task's
#: window, if it has one and the window is free or over; then its deliveries, if both went in.
#: Data-modifying WITH clauses always run, in order, and read each other's RETURNING. The last
#: two columns say who has the alert or the window (from before this statement: NULL when the
#: other daemon's insert committed only while this one waited for it).
ADD = f"""
WITH a AS (
    INSERT INTO {SCHEMA}.alerts (alert_id, kind, fields, accepted_at, accepted_by)
    VALUES (%(id)s, %(kind)s, %(fields)s, %(now)s, %(me)s)
    ON CONFLICT (alert_id) DO NOTHING RETURNING 1
), w AS (
    INSERT INTO {SCHEMA}.windows AS w (kind, task_id, alert_id, taken_by, expires_at)
    SELECT %(kind)s, %(task)s, %(id)s, %(me)s, %(now)s + %(window)s
    WHERE %(window)s > 0 AND EXISTS (SELECT 1 FROM a)
    ON CONFLICT (kind, task_id) DO UPDATE SET alert_id = EXCLUDED.alert_id,
        taken_by = EXCLUDED.taken_by, expires_at = EXCLUDED.expires_at
    WHERE w.expires_at <= %(now)s
    RETURNING 1
), d AS (
    INSERT INTO {SCHEMA}.deliveries (id, alert_id, webhook_key, accepted_at, attempts, due_at, state,
        last_outcome, updated_at, owner, lease_until)
    SELECT k.id, %(id)s, k.key, %(now)s, 0, %(now)s, 'pending', '', %(now)s, %(me)s, {DB_NOW} + %(lease)s
    FROM unnest(%(ids)s::text[], %(keys)s::text[]) AS k(id, key)
    WHERE EXISTS (SELECT 1 FROM a) AND (%(window)s <= 0 OR EXISTS (SELECT 1 FROM w))
    ON CONFLICT (id) DO NOTHING
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM a), EXISTS (SELECT 1 FROM w),
    (SELECT accepted_by FROM {SCHEMA}.alerts WHERE alert_id = %(id)s),
    (SELECT taken_by FROM {SCHEMA}.windows WHERE kind = %(kind)s AND task_id = %(task)s)
"""

#: (version, what it does, SQL). Append only: a released migration never changes.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "the shared outbox: alerts, deliveries with leases, webhooks, rate-limit windows, instances",
        f"""
        CREATE TABLE {SCHEMA}.alerts (
            alert_id text PRIMARY KEY,
            kind text NOT NULL,
            fields text NOT NULL,
            accepted_at double precision NOT NULL,
            accepted_by text NOT NULL
        );
        CREATE INDEX alerts_by_age ON {SCHEMA}.alerts (accepted_at);
        CREATE TABLE {SCHEMA}.deliveries (
            id text PRIMARY KEY,
            alert_id text NOT NULL,
            webhook_key text NOT NULL,
            accepted_at double precision NOT NULL,
            attempts integer NOT NULL,
            due_at double precision NOT NULL,
            state text NOT NULL,
            last_outcome text NOT NULL,
            updated_at double precision NOT NULL,
            requeued boolean NOT NULL DEFAULT false,
            owner text,
            lease_until double precision NOT NULL DEFAULT 0
        );
        CREATE INDEX deliveries_by_alert ON {SCHEMA}.deliveries (alert_id);
        CREATE INDEX deliveries_claimable ON {SCHEMA}.deliveries (lease_until) WHERE state = 'pending';
        CREATE INDEX deliveries_by_owner ON {SCHEMA}.deliveries (owner) WHERE state = 'pending';
        CREATE INDEX deliveries_by_state ON {SCHEMA}.deliveries (state, accepted_at);
        CREATE TABLE {SCHEMA}.webhooks (key text PRIMARY KEY, fingerprint text NOT NULL);
        CREATE TABLE {SCHEMA}.windows (
            kind text NOT NULL,
            task_id text NOT NULL,
            alert_id text NOT NULL,
            taken_by text NOT NULL,
            expires_at double precision NOT NULL,
            PRIMARY KEY (kind, task_id)
        );
        CREATE TABLE {SCHEMA}.instances (
            name text PRIMARY KEY,
            host text NOT NULL,
            pid integer NOT NULL,
            version text NOT NULL,
            started_at double precision NOT NULL,
            seen_at double precision NOT NULL,
            stopped_at double precision
        );
        """,
    ),
    (
        2,
        "an index of each webhook's pending deliveries in due order (bounded memory: due())",
        f"CREATE INDEX deliveries_due ON {SCHEMA}.deliveries (webhook_key, due_at, id) "
        "WHERE state = 'pending';",
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


class StoreError(Exception):
    """The database cannot be used as the outbox; the message says what to do."""


#: TCP keepalives, unless the connection string sets its own: a database host that vanished
#: (no FIN, no RST) fails the connection within about half a minute, not the kernel's two hours,
#: so the writer reconnects instead of hanging.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


def open_connection(dsn: str, name: str, timeout: float = 10.0) -> psycopg.Connection[Any]:
    """A connection in autocommit mode (transactions are begun explicitly)."""
    given = psycopg.conninfo.conninfo_to_dict(dsn)
    ours: dict[str, Any] = {key: value for key, value in KEEPALIVES.items() if key not in given}
    ours.setdefault("connect_timeout", given.get("connect_timeout") or max(1, int(timeout)))
    ours["application_name"] = given.get("application_name") or f"butler-tw {name}"[:63]
    return psycopg.connect(psycopg.conninfo.make_conninfo(dsn, **ours), autocommit=True)


def migrate(conn: psycopg.Connection[Any], by: str) -> tuple[int, int]:
    """Create or upgrade the schema to :data:`SCHEMA_VERSION`; safe when daemons start at once.

    :param conn: in autocommit mode (:func:`open_connection`).
    :return: (version before, version now).
    :raises StoreError: when the database holds a newer schema than this version knows.
    """
    # Whoever comes second waits here, then finds the work done. The lock is
    # the session's, taken before the transaction begins, so that the
    # transaction begins after the first one's commit: one begun before it
    # keeps the session's catalog cache, and a session that had looked for
    # the schema while there was none would not see it (CREATE SCHEMA IF NOT
    # EXISTS then fails with a duplicate key).
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_MIGRATE,))
    try:
        return _migrate(conn, by)
    finally:
        if not conn.closed and not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_MIGRATE,))


def _migrate(conn: psycopg.Connection[Any], by: str) -> tuple[int, int]:
    with conn.transaction():
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA}.migrations (version integer PRIMARY KEY, "
            "description text NOT NULL, applied_by text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.migrations").fetchone()
        before = int(row[0]) if row else 0
        if before > SCHEMA_VERSION:
            raise newer_schema(before)
        for version, description, sql in MIGRATIONS:
            if version <= before:
                continue
            conn.execute(sql)
            conn.execute(
                f"INSERT INTO {SCHEMA}.migrations (version, description, applied_by) VALUES (%s, %s, %s)",
                (version, description, by),
            )
    return before, SCHEMA_VERSION


def instance_lock(conn: psycopg.Connection[Any], name: str) -> bool:
    """Take the session lock that says a daemon named ``name`` is running; False if another has it."""
    row = conn.execute(
        "SELECT pg_try_advisory_lock(hashtext(%s))", (f"butler-tw instance {name}",)
    ).fetchone()
    return bool(row and row[0])


def who_runs(conn: psycopg.Connection[Any], name: str) -> str:
    row = conn.execute(f"SELECT host, pid FROM {SCHEMA}.instances WHERE name = %s", (name,)).fetchone()
    return f"host {row[0]}, pid {row[1]}" if row else "unknown host"


def newer_schema(found: int) -> StoreError:
    return StoreError(
        f"the outbox schema in the database is version {found}, newer than this butler-tw "
        f"({__version__}) knows ({SCHEMA_VERSION}): upgrade butler-tw on this host too"
    )


def check(dsn: str, loggable: str, name: str, timeout: float = 5.0) -> None:
    """At start-up (and ``check-config``): the database answers, the schema is ours, the name is free.

    Reads only: creating or migrating the schema is the daemon's (``PostgresOutbox``), or
    ``butler-tw store init``'s, so that checking a config never changes a shared database.

    :raises StoreError: for a schema too new or a name another running daemon uses.
    :raises psycopg.OperationalError: when the database cannot be reached (the daemon
        still starts then: it keeps what arrives and connects when it can).
    """
    conn = open_connection(dsn, name, timeout)
    try:
        found = schema_version(conn)
        if found > SCHEMA_VERSION:
            raise newer_schema(found)
        if not instance_lock(conn, name):
            raise StoreError(
                f"another butler-tw is running as butlerWebhook.instanceName {name!r} on the store "
                f"{loggable} ({who_runs(conn, name)}): give each daemon its own instanceName"
            )
    finally:
        conn.close()


@implementer(IOutbox)
class PostgresOutbox(GroupCommit[psycopg.Connection[Any]]):
    """``IOutbox`` on PostgreSQL, shared by every daemon of a site.

    :param dsn: the libpq connection string (a secret: never logged);
        ``where`` is what may be logged instead.
    :param instanceName: this daemon's name, unique among those sharing the store.
    :param leaseSeconds: how long a claim lasts unless renewed.
    """

    maxBackoff = 5.0

    def __init__(
        self,
        dsn: str,
        where: str,
        instanceName: str,
        reactor: Any,
        leaseSeconds: float = 30.0,
        deadLetterRetention: float = 7 * 86400,
    ) -> None:
        super().__init__(reactor, where, "butler-tw-outbox")
        self._dsn = dsn
        self.instanceName = instanceName
        self.leaseSeconds = leaseSeconds
        self.deadLetterRetention = deadLetterRetention
        self._keys: list[str] = []
        self._lastRenewal = float("-inf")
        self._conflicts = 0
        self._startedAt = reactor.seconds()
        self.shared = True
        #: The last :class:`ClusterView` read (None until the first).
        self.cluster: ClusterView | None = None
        #: Deliveries taken over from daemons whose lease ran out.
        self.takenOver = 0

    # -- connection

    def open(self) -> None:
        """Start the writer thread; it connects on its first transaction (and after a loss)."""
        self._startWriter()

    def _connect(self) -> psycopg.Connection[Any]:
        conn = open_connection(self._dsn, self.instanceName)
        try:
            before, now = migrate(conn, self.instanceName)
            if not instance_lock(conn, self.instanceName):
                raise StoreError(
                    f"another butler-tw is running as instanceName {self.instanceName!r} "
                    f"({who_runs(conn, self.instanceName)}): this one does not write until it stops"
                )
            conn.execute(
                f"INSERT INTO {SCHEMA}.instances (name, host, pid, version, started_at, seen_at) "
                f"VALUES (%s, %s, %s, %s, %s, {DB_NOW}) ON CONFLICT (name) DO UPDATE SET "
                "host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version, "
                "started_at = EXCLUDED.started_at, seen_at = EXCLUDED.seen_at, stopped_at = NULL",
                (self.instanceName, socket.gethostname(), os.getpid(), __version__, self._startedAt),
            )
        except BaseException:
            conn.close()
            raise
        if before != now:
            self._reactor.callFromThread(
                log.info,
                "Outbox schema in {where}: version {before} -> {now}",
                where=self.where,
                before=before,
                now=now,
            )
        return conn

    def _begin(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("BEGIN")

    def _finish(self, conn: psycopg.Connection[Any]) -> None:
        # Every transaction says this daemon is alive: a busy one whose lease renewals
        # come late still keeps its deliveries (see _claim).
        conn.execute(
            f"UPDATE {SCHEMA}.instances SET seen_at = {DB_NOW} WHERE name = %s", (self.instanceName,)
        )
        conn.execute("COMMIT")
        self._conflicts = 0

    def _abandon(self, conn: psycopg.Connection[Any]) -> None:
        if not conn.broken and not conn.closed:
            try:
                conn.execute("ROLLBACK")
                return
            except psycopg.Error:
                pass
        # A lost connection: the next transaction connects again.
        self._conn = None
        try:
            conn.close()
        except psycopg.Error:
            pass

    def _describe(self, error: BaseException) -> str:
        return describe_error(error, self._dsn)

    def _retryAtOnce(self, error: BaseException) -> bool:
        # Two daemons inserting the same alerts in a different order can deadlock:
        # PostgreSQL aborts one transaction, which is simply run again.
        if (
            isinstance(error, pgerrors.DeadlockDetected | pgerrors.SerializationFailure)
            and self._conflicts < 5
        ):
            self._conflicts += 1
            return True
        return False

    def _closeConnection(self, conn: psycopg.Connection[Any]) -> None:
        conn.close()

    def _executemany(self, conn: psycopg.Connection[Any], sql: str, rows: list[Any]) -> None:
        with conn.cursor() as cur:
            cur.executemany(sql, rows)  # psycopg pipelines them: one round trip, not one per row

    def _beforeClose(self) -> None:
        """A clean stop: hand back what this daemon holds, so another takes it at once."""
        me = self.instanceName

        def op(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                f"UPDATE {SCHEMA}.deliveries SET owner = NULL, lease_until = 0 "
                "WHERE owner = %s AND state = 'pending'",
                (me,),
            )
            conn.execute(f"UPDATE {SCHEMA}.instances SET stopped_at = {DB_NOW} WHERE name = %s", (me,))

        self._submit(op)

    # -- IOutbox

    def add(
        self, alert: Alert, webhookKeys: Sequence[str], now: float, window: float = 0.0
    ) -> Deferred[list[Delivery]]:
        deliveries = [Delivery(alert, key, acceptedAt=now, dueAt=now) for key in webhookKeys]
        fields = alert_to_json(alert)
        me, lease = self.instanceName, self.leaseSeconds

        params = {
            "id": alert.alertId,
            "kind": alert.kind.value,
            "task": alert.taskId.lower(),
            "fields": fields,
            "now": now,
            "me": me,
            "window": float(window),
            "lease": lease,
            "ids": [d.id for d in deliveries],
            "keys": [d.webhookKey for d in deliveries],
        }

        def op(conn: psycopg.Connection[Any]) -> AlreadyTaken | None:
            row = conn.execute(ADD, params).fetchone()
            assert row is not None
            created, windowTaken, acceptedBy, windowBy = row
            if not created:
                return AlreadyTaken("duplicate", acceptedBy or "another instance")
            if window > 0 and not windowTaken:
                return AlreadyTaken("rate_limited", windowBy or "another instance")
            return None

        d = self._submit(op, wait=True, add=True)
        assert d is not None

        def taken(result: AlreadyTaken | None) -> list[Delivery]:
            if isinstance(result, AlreadyTaken):
                raise result
            return deliveries  # also when the write failed: delivered from memory, retried

        return d.addCallback(taken)

    def record(self, delivery: Delivery) -> None:
        me = self.instanceName
        if delivery.state is State.DELIVERED:
            self._submitRow(
                f"DELETE FROM {SCHEMA}.deliveries WHERE id = %s AND owner = %s", (delivery.id, me)
            )
            return
        self._submitRow(
            f"UPDATE {SCHEMA}.deliveries SET attempts = %s, due_at = %s, state = %s, last_outcome = %s, "
            "updated_at = %s WHERE id = %s AND owner = %s",
            (*outcome_row(delivery, self._reactor.seconds()), me),
        )

    def recent(self, state: State | None, limit: int) -> Deferred[list[Delivery]]:
        def op(conn: psycopg.Connection[Any]) -> list[Delivery]:
            return recent_deliveries(conn, state, limit)

        d = self._submit(op, wait=True, read=True)
        assert d is not None
        return d

    def due(self, webhookKey: str, limit: int, count: bool = False) -> Deferred[Page]:
        """A webhook's pending deliveries in due order, claimed: this daemon's own (from before a
        restart, or waiting in the outbox only), and those nobody holds."""
        me, lease, now = self.instanceName, self.leaseSeconds, self._reactor.seconds()
        params = {"key": webhookKey, "me": me, "lease": lease, "now": now, "limit": limit}

        def op(conn: psycopg.Connection[Any]) -> tuple[list[tuple[Delivery, str | None]], int | None]:
            claimed = _claim_rows(
                conn,
                # What `butler-tw replay` re-queued is requeued()'s to take up: never both.
                "webhook_key = %(key)s AND NOT requeued AND (owner = %(me)s OR owner IS NULL OR "
                f"(lease_until < {DB_NOW} AND NOT EXISTS ({ALIVE})))",
                "due_at, id",
                params,
            )
            if not count:
                return claimed, None
            row = conn.execute(
                f"SELECT count(*) FROM {SCHEMA}.deliveries WHERE webhook_key = %(key)s AND state = 'pending' "
                "AND (owner = %(me)s OR owner IS NULL)",
                params,
            ).fetchone()
            return claimed, int(row[0]) if row else 0

        d = self._submit(op, wait=True, read=True)
        assert d is not None
        return d.addCallback(lambda result: Page(self._claimed(result[0]), result[1]))

    def requeued(self) -> Deferred[list[Delivery]]:
        """Deliveries nobody holds: re-queued by ``butler-tw replay``, handed back, or their lease over."""
        me, lease, now, keys = self.instanceName, self.leaseSeconds, self._reactor.seconds(), list(self._keys)
        params = {"keys": keys, "me": me, "lease": lease, "now": now, "limit": CLAIM_BATCH}

        def op(conn: psycopg.Connection[Any]) -> list[tuple[Delivery, str | None]]:
            return _claim_rows(
                conn,
                "webhook_key = ANY(%(keys)s) AND "
                f"(owner IS NULL OR (lease_until < {DB_NOW} AND NOT EXISTS ({ALIVE})))",
                # Oldest lease first: the claimable index's order, so a huge backlog costs
                # a slice of the index per poll, not a sort (the dispatcher orders by due time).
                "lease_until",
                params,
            )

        d = self._submit(op, wait=True, read=True)
        assert d is not None
        return d.addCallback(self._claimed)

    def _claimed(self, claimed: list[tuple[Delivery, str | None]] | None) -> list[Delivery]:
        byOwner: dict[str, int] = {}
        for _, was in claimed or []:
            if was is not None and was != self.instanceName:
                byOwner[was] = byOwner.get(was, 0) + 1
        for was, n in sorted(byOwner.items()):
            self.takenOver += n
            log.warn(
                "Took over {deliveries} from instance {was}, whose lease ran out (is it down?)",
                deliveries=count(n, "pending delivery", "pending deliveries"),
                n=n,
                was=was,
                butler_tw_takeover=True,
            )
        return [delivery for delivery, _ in claimed or []]

    def renew(self, held: Callable[[], Sequence[str]]) -> None:
        """Renew the leases of what this daemon holds (every third of a lease), and read the cluster."""
        now = self._reactor.seconds()
        if now - self._lastRenewal < self.leaseSeconds / 3:
            return
        self._lastRenewal = now
        ids, me, lease = list(held()), self.instanceName, self.leaseSeconds

        def renewal(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                f"UPDATE {SCHEMA}.deliveries SET lease_until = {DB_NOW} + %s "
                "WHERE id = ANY(%s) AND owner = %s AND state = 'pending'",
                (lease, ids, me),
            )

        if ids:  # ahead of any backlog: a live daemon's leases must not run out behind it
            self._submit(renewal, read=True, first=True)  # a failed one is not retried: the next comes
        # The cluster's view (a count over the outbox, for /health and /metrics) waits its turn.
        d = self._submit(lambda conn: read_cluster(conn, now), wait=True, read=True)
        assert d is not None
        d.addCallbacks(self._viewed, lambda _: None)

    def _viewed(self, view: ClusterView | None) -> None:
        if view is not None:
            self.cluster = view

    def rebind(self, webhooks: Mapping[str, str]) -> Deferred[Rebinding | None]:
        """As :meth:`SqliteOutbox.rebind <butler_tw.delivery.stores.sqlite.SqliteOutbox.rebind>`.

        The webhooks table is the cluster's: every daemon must run the same
        webhooks (docs/high-availability.md), or each rebind undoes the other's.
        """
        now = self._reactor.seconds()
        target = dict(webhooks)
        self._keys = list(target)

        def op(conn: psycopg.Connection[Any]) -> Rebinding:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_REBIND,))
            stored = dict(conn.execute(f"SELECT key, fingerprint FROM {SCHEMA}.webhooks").fetchall())
            changes = match_webhooks(stored, target)
            removed: dict[str, int] = {}
            for old, new in changes.items():
                if new is None:
                    removed[old] = conn.execute(
                        f"UPDATE {SCHEMA}.deliveries SET state = 'dead', updated_at = %s, last_outcome = %s "
                        "WHERE webhook_key = %s AND state = 'pending'",
                        (now, REMOVED, old),
                    ).rowcount
                    _move(conn, old, removed_key(old, stored[old]))
                else:  # via a temporary key, so that swapped positions never collide
                    _move(conn, old, _MOVING + new)
            for (key,) in conn.execute(
                f"SELECT DISTINCT webhook_key FROM {SCHEMA}.deliveries WHERE webhook_key LIKE %s",
                (_MOVING + "%",),
            ).fetchall():
                _move(conn, key, key[len(_MOVING) :])
            conn.execute(f"DELETE FROM {SCHEMA}.webhooks")
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {SCHEMA}.webhooks (key, fingerprint) VALUES (%s, %s)", list(target.items())
                )
            return Rebinding({old: new for old, new in changes.items() if new is not None}, removed)

        d = self._submit(op, wait=True)
        assert d is not None
        return d

    def remember(self, table: str, kind: EventKind, key: tuple[str, ...], expiresAt: float) -> None:
        """The cluster decides in :meth:`add`; here only a released window is ended for all."""
        if table != "windows":
            return
        me = self.instanceName
        self._submit(
            lambda conn: conn.execute(
                f"UPDATE {SCHEMA}.windows SET expires_at = LEAST(expires_at, %s) "
                "WHERE kind = %s AND task_id = %s AND taken_by = %s",
                (expiresAt, kind.value, key[0], me),
            )
        )

    def remembered(self, table: str, now: float) -> list[tuple[EventKind, tuple[str, ...], float]]:
        """Nothing to re-arm in memory: the cluster's keys and windows are checked at every :meth:`add`."""
        return []

    def prune(self) -> None:
        now = self._reactor.seconds()
        keptSince = now - self.deadLetterRetention

        def op(conn: psycopg.Connection[Any]) -> None:
            conn.execute(f"DELETE FROM {SCHEMA}.windows WHERE expires_at <= %s", (now,))
            conn.execute(
                f"DELETE FROM {SCHEMA}.deliveries WHERE state = 'dead' AND updated_at < %s", (keptSince,)
            )
            conn.execute(
                f"DELETE FROM {SCHEMA}.alerts a WHERE a.accepted_at < %s AND NOT EXISTS "
                f"(SELECT 1 FROM {SCHEMA}.deliveries d WHERE d.alert_id = a.alert_id)",
                (now - KEEP_ALERTS,),
            )
            conn.execute(
                f"DELETE FROM {SCHEMA}.instances WHERE seen_at < {DB_NOW} - 7 * 86400 AND name <> %s",
                (self.instanceName,),
            )

        self._submit(op)


def _claim_rows(
    conn: psycopg.Connection[Any], where: str, order: str, params: Mapping[str, Any]
) -> list[tuple[Delivery, str | None]]:
    """Make this daemon the owner of up to ``limit`` pending deliveries ``where`` says, in ``order``.

    :return: each with who held it before (``None``: nobody), in due order. A
        re-queued one's age starts now (its retrySchedule and maxAge count from here).
    """
    rows = conn.execute(
        f"WITH chosen AS (SELECT id, owner AS was FROM {SCHEMA}.deliveries "
        f"WHERE state = 'pending' AND {where} ORDER BY {order} LIMIT %(limit)s FOR UPDATE SKIP LOCKED), "
        f"claimed AS (UPDATE {SCHEMA}.deliveries d SET owner = %(me)s, lease_until = {DB_NOW} + %(lease)s, "
        "accepted_at = CASE WHEN d.requeued THEN %(now)s ELSE d.accepted_at END, "
        "due_at = CASE WHEN d.requeued THEN %(now)s ELSE d.due_at END, requeued = false "
        "FROM chosen WHERE d.id = chosen.id RETURNING d.*, chosen.was) "
        "SELECT a.kind, a.fields, c.webhook_key, c.accepted_at, c.attempts, c.due_at, c.state, "
        f"c.last_outcome, c.was FROM claimed c JOIN {SCHEMA}.alerts a ON a.alert_id = c.alert_id "
        "ORDER BY c.due_at, c.id",
        params,
    ).fetchall()
    return [(delivery_from_row(row[:8]), row[8]) for row in rows]


def _move(conn: psycopg.Connection[Any], old: str, new: str) -> None:
    """Move every delivery of webhook ``old`` to ``new``; one at ``new`` for the same alert gives way."""
    conn.execute(
        f"DELETE FROM {SCHEMA}.deliveries WHERE webhook_key = %s AND alert_id IN "
        f"(SELECT alert_id FROM {SCHEMA}.deliveries WHERE webhook_key = %s)",
        (new, old),
    )
    conn.execute(
        f"UPDATE {SCHEMA}.deliveries SET webhook_key = %s, id = alert_id || '/' || %s WHERE webhook_key = %s",
        (new, new, old),
    )


def read_cluster(conn: psycopg.Connection[Any], readAt: float) -> ClusterView:
    """Who is there, what each holds, how deep the shared outbox is."""
    members = conn.execute(
        f"SELECT i.name, i.host, i.pid, i.version, {DB_NOW} - i.seen_at, i.stopped_at IS NOT NULL, "
        f"(SELECT count(*) FROM {SCHEMA}.deliveries d WHERE d.owner = i.name AND d.state = 'pending' "
        f"AND d.lease_until >= {DB_NOW}) FROM {SCHEMA}.instances i ORDER BY i.name"
    ).fetchall()
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'dead'), "
        "min(accepted_at) FILTER (WHERE state = 'pending'), "
        f"count(*) FILTER (WHERE state = 'pending' AND (owner IS NULL OR lease_until < {DB_NOW})) "
        f"FROM {SCHEMA}.deliveries"
    ).fetchone()
    assert row is not None
    return ClusterView(
        readAt=readAt,
        members=tuple(
            Member(m[0], m[1], int(m[2]), m[3], float(m[4]), bool(m[5]), int(m[6])) for m in members
        ),
        pending=int(row[0]),
        dead=int(row[1]),
        oldestPendingAt=float(row[2]) if row[2] is not None else None,
        unowned=int(row[3]),
    )


_COLUMNS = "a.kind, a.fields, d.webhook_key, d.accepted_at, d.attempts, d.due_at, d.state, d.last_outcome"
_FROM = f"FROM {SCHEMA}.deliveries d JOIN {SCHEMA}.alerts a ON a.alert_id = d.alert_id "
SELECT_DELIVERIES = f"SELECT {_COLUMNS} {_FROM}"


def _listed(
    conn: psycopg.Connection[Any], state: State | None, limit: int, order: str, extra: str = ""
) -> list[tuple[Any, ...]]:
    """Rows of up to ``limit`` deliveries (of ``state`` only, if given): the 8 columns of a
    :class:`Delivery`, then ``extra``'s."""
    where = "WHERE d.state = %s " if state is not None else ""
    args: list[Any] = ([state.value] if state is not None else []) + [limit]
    return conn.execute(
        f"SELECT {_COLUMNS}{extra} {_FROM}{where}ORDER BY {order} LIMIT %s", tuple(args)
    ).fetchall()


def recent_deliveries(conn: psycopg.Connection[Any], state: State | None, limit: int) -> list[Delivery]:
    """``/deliveries``: the most recently accepted first."""
    return [delivery_from_row(r) for r in _listed(conn, state, limit, "d.accepted_at DESC, d.id")]


def replay_dead(
    conn: psycopg.Connection[Any],
    ids: Sequence[str],
    allDead: bool,
    decide: Callable[[list[Delivery], dict[str, str], set[str]], list[Decision]],
    now: float,
) -> list[Decision]:
    """``butler-tw replay`` on the shared outbox; as :func:`butler_tw.delivery.stores.sqlite.replay_dead`.

    A re-queued delivery has no owner: whichever daemon polls first claims it.
    """
    where = "WHERE d.state = 'dead'"
    args: list[Any] = []
    if not allDead:
        where += " AND (d.id = ANY(%s) OR d.alert_id = ANY(%s))"
        args = [list(ids), list(ids)]
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_REBIND,))
        dead = _rows(conn, SELECT_DELIVERIES + where + " ORDER BY d.accepted_at, d.id FOR UPDATE OF d", args)
        bound = dict(conn.execute(f"SELECT key, fingerprint FROM {SCHEMA}.webhooks").fetchall())
        existing = {i for (i,) in conn.execute(f"SELECT id FROM {SCHEMA}.deliveries").fetchall()}
        decisions = decide(dead, bound, existing)
        for decision in decisions:
            if decision.key is None:
                continue
            conn.execute(
                f"UPDATE {SCHEMA}.deliveries SET webhook_key = %s, id = alert_id || '/' || %s, "
                "state = 'pending', attempts = 0, accepted_at = %s, due_at = %s, requeued = true, "
                "updated_at = %s, owner = NULL, lease_until = 0 WHERE id = %s AND state = 'dead'",
                (decision.key, decision.key, now, now, now, decision.delivery.id),
            )
    return decisions


def _rows(conn: psycopg.Connection[Any], sql: str, args: Iterable[Any] = ()) -> list[Delivery]:
    return [delivery_from_row(r) for r in conn.execute(sql, tuple(args)).fetchall()]


# -- for the admin command (butler-tw deliveries, replay, store)


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The version of the outbox schema in the database; 0 when there is none. Creates nothing."""
    row = conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.migrations",)).fetchone()
    if row is None or row[0] is None:
        return 0
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.migrations").fetchone()
    return int(row[0]) if row else 0


def list_held(
    conn: psycopg.Connection[Any], state: State | None, limit: int
) -> list[tuple[Delivery, str | None, bool]]:
    """``butler-tw deliveries`` (by state, then due), each with the instance that holds it.

    :return: (delivery, its owner or None, whether the owner's lease is still running).
    """
    rows = _listed(conn, state, limit, "d.state, d.due_at, d.id", f", d.owner, d.lease_until >= {DB_NOW}")
    return [(delivery_from_row(r[:8]), r[8], bool(r[9])) for r in rows]


def describe_error(error: BaseException, dsn: str) -> str:
    """The driver's message on one line, any password in the connection string masked."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # libpq's second line is a hint ("Is the server running ...?"): a sentence of its own.
    text = " ".join([line if line[-1] in ".?!:;" else line + "." for line in lines[:-1]] + lines[-1:])
    for prefix in ("connection is bad: ", "connection failed: "):
        text = text.removeprefix(prefix)
    for secret in _secrets(dsn):
        text = text.replace(secret, "***")
    return text or type(error).__name__


def _secrets(dsn: str) -> list[str]:
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return []
    return [str(params[k]) for k in ("password", "sslpassword") if params.get(k)]
