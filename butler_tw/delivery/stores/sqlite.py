"""The durable outbox: SQLite, written by one thread with group commit.

Why this shape:

- SQLite is embedded (nothing to install or run) and its WAL journal lets the
  ``butler-tw`` admin command read and re-queue while the daemon writes.
- Every write happens on one dedicated thread, group-committed
  (:mod:`~butler_tw.delivery.stores.groupcommit`): one fsync covers many alerts.
- ``journal_mode=WAL`` + ``synchronous=FULL``: an alert counts as accepted
  only once its transaction is on disk, so it survives ``kill -9`` *and* a
  power cut. (``NORMAL`` would survive a crash but could lose the last
  commits on power loss.)

Run-time write errors (disk full, I/O error) never stop delivery: they are
logged at error, counted, and the deliveries carry on from memory.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any, Callable, Iterable, Mapping, Sequence

from twisted.internet.defer import Deferred
from zope.interface import implementer

from butler_tw.core.alert import Alert, EventKind
from butler_tw.core.delivery import REMOVED, Delivery, Page, Rebinding, State, match_webhooks, removed_key
from butler_tw.delivery.outbox import IOutbox
from butler_tw.delivery.replay import Decision
from butler_tw.delivery.stores.groupcommit import GroupCommit
from butler_tw.delivery.stores.rows import alert_from_row, alert_to_json, delivery_from_row, outcome_row

DB_NAME = "outbox.sqlite3"
SCHEMA_VERSION = 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    fields TEXT NOT NULL,          -- JSON object of the 11 payload fields
    accepted_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,           -- alert_id/webhook_key
    alert_id TEXT NOT NULL,
    webhook_key TEXT NOT NULL,
    accepted_at REAL NOT NULL,     -- the retry schedule counts from here
    attempts INTEGER NOT NULL,
    due_at REAL NOT NULL,
    state TEXT NOT NULL,           -- pending | dead (delivered rows are deleted)
    last_outcome TEXT NOT NULL,
    updated_at REAL NOT NULL,
    requeued INTEGER NOT NULL DEFAULT 0   -- set by `butler-tw replay` for a running daemon
);
CREATE INDEX IF NOT EXISTS deliveries_by_state ON deliveries (state, requeued);
CREATE INDEX IF NOT EXISTS deliveries_by_alert ON deliveries (alert_id);
CREATE INDEX IF NOT EXISTS deliveries_requeued ON deliveries (requeued) WHERE requeued = 1;
-- due(): a webhook's pending deliveries in due order (version 4)
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (webhook_key, due_at, id) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS dedup_keys (
    kind TEXT NOT NULL, task_id TEXT NOT NULL, execution_id TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (kind, task_id, execution_id)
);
CREATE TABLE IF NOT EXISTS webhooks (
    key TEXT PRIMARY KEY,          -- e.g. reloadTaskFailure.webhooks[0]
    fingerprint TEXT NOT NULL      -- Webhook.fingerprint: where it sends
);
CREATE TABLE IF NOT EXISTS windows (
    kind TEXT NOT NULL, task_id TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (kind, task_id)
);
"""


class StoreError(Exception):
    """The state directory or database cannot be used; the message says what to do."""


def db_path(stateDir: str) -> str:
    return os.path.join(stateDir, DB_NAME)


def connect(stateDir: str, create: bool = True) -> sqlite3.Connection:
    """Open (creating if asked) and check the outbox database.

    :raises StoreError: naming the file and what to do about it.
    """
    path = db_path(stateDir)
    if create:
        try:
            os.makedirs(stateDir, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the state directory {stateDir}: {e.strerror}") from None
    elif not os.path.exists(path):
        raise StoreError(f"no outbox database at {path} (has the daemon run with this stateDir?)")
    try:
        conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        (ok,) = conn.execute("PRAGMA quick_check").fetchone()
        if ok != "ok":
            raise sqlite3.DatabaseError(ok)
        conn.executescript(SCHEMA)
        _upgrade(conn)
        conn.execute("BEGIN IMMEDIATE")  # proves the file is writable
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as e:
        raise StoreError(unusable_database(path, str(e))) from None
    return conn


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a database written by an older version up to :data:`SCHEMA_VERSION`."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if row is not None and int(row[0]) < 2:
        conn.execute("BEGIN IMMEDIATE")
        # Version 1 keyed de-duplication by (kind, executionId): without the
        # task those keys cannot be carried over (a new table holds the new ones).
        conn.execute("DROP TABLE IF EXISTS dedup")
        # An alert without an executionId now has an id of all its fields:
        # re-key the stored ones, or their deliveries' updates would miss them.
        stored = conn.execute(
            "SELECT alert_id, kind, fields FROM alerts WHERE trim(json_extract(fields, '$.executionId')) = ''"
        ).fetchall()
        for old, kind, fields in stored:
            new = alert_from_row(kind, fields).alertId
            conn.execute("UPDATE alerts SET alert_id = ? WHERE alert_id = ?", (new, old))
            conn.execute(
                "UPDATE deliveries SET alert_id = ?, id = ? || '/' || webhook_key WHERE alert_id = ?",
                (new, new, old),
            )
        conn.execute("COMMIT")
    if row is not None and int(row[0]) < 3:
        # Version 3 drops an alert with its last delivery; older ones left that to a sweep.
        conn.execute("DELETE FROM alerts WHERE alert_id NOT IN (SELECT alert_id FROM deliveries)")
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))


def unusable_database(path: str, reason: str) -> str:
    """What to do about an outbox database that cannot be used (also said by ``check-config``)."""
    return (
        f"the outbox database {path} cannot be used ({reason}). If it is corrupt, stop the daemon, "
        f"move the file (and any {DB_NAME}-wal / -shm beside it) aside and start again: "
        "the deliveries pending in it are then not resumed. If it is not writable, fix the "
        "ownership or permissions of the directory and file for the daemon's user."
    )


SELECT_DELIVERIES = (
    "SELECT a.kind, a.fields, d.webhook_key, d.accepted_at, d.attempts, d.due_at, d.state, d.last_outcome "
    "FROM deliveries d JOIN alerts a ON a.alert_id = d.alert_id "
)

#: remember()'s tables: the SQL table and its key columns.
_KEYED = {"dedup": ("dedup_keys", ("task_id", "execution_id")), "windows": ("windows", ("task_id",))}

_MOVING = "moving:"  # temporary key prefix in rebind(); config keys never start with it
#: record() of a delivered delivery: the row goes, and its alert with its last delivery.
_DELIVERED = (
    "DELETE FROM deliveries WHERE id = :id",
    "DELETE FROM alerts WHERE alert_id = :alert"
    " AND NOT EXISTS (SELECT 1 FROM deliveries WHERE alert_id = :alert)",
)


@implementer(IOutbox)
class SqliteOutbox(GroupCommit[sqlite3.Connection]):
    """``IOutbox`` on SQLite, with every write on one thread, group-committed.

    :param reactor: for ``callFromThread``/``seconds``; the thread pool is ours.
    """

    def __init__(self, stateDir: str, reactor: Any, deadLetterRetention: float = 7 * 86400) -> None:
        super().__init__(reactor, db_path(stateDir), "butler-tw-outbox")
        self.stateDir = stateDir
        #: Seconds a dead letter is kept (``butlerWebhook.delivery.deadLetterRetention``).
        self.deadLetterRetention = deadLetterRetention
        self.shared = False
        self.cluster = None  # one daemon: no cluster

    def open(self) -> None:
        """Connect and start the writer thread.

        Called from ``startService``, after twistd has forked (a thread or an
        SQLite connection does not survive a fork).
        """
        self._conn = connect(self.stateDir)
        self._startWriter()

    def _connect(self) -> sqlite3.Connection:
        return connect(self.stateDir)

    def _begin(self, conn: sqlite3.Connection) -> None:
        # IMMEDIATE: take the write lock up front, so a commit by `butler-tw
        # replay` between our reads and writes cannot void the whole batch.
        conn.execute("BEGIN IMMEDIATE")

    def _finish(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    def _abandon(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def _closeConnection(self, conn: sqlite3.Connection) -> None:
        conn.close()

    def _executemany(self, conn: sqlite3.Connection, sql: str, rows: list[Any]) -> None:
        conn.executemany(sql, rows)

    # -- IOutbox

    def add(
        self, alert: Alert, webhookKeys: Sequence[str], now: float, window: float = 0.0
    ) -> Deferred[list[Delivery]]:
        deliveries = [Delivery(alert, key, acceptedAt=now, dueAt=now) for key in webhookKeys]
        fields = alert_to_json(alert)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO alerts (alert_id, kind, fields, accepted_at) VALUES (?, ?, ?, ?)",
                (alert.alertId, alert.kind.value, fields, now),
            )
            conn.executemany(
                "INSERT OR REPLACE INTO deliveries (id, alert_id, webhook_key, accepted_at, attempts, due_at,"
                " state, last_outcome, updated_at, requeued) VALUES (?, ?, ?, ?, 0, ?, 'pending', '', ?, 0)",
                [(d.id, alert.alertId, d.webhookKey, now, now, now) for d in deliveries],
            )

        d = self._submit(op, wait=True, add=True)
        assert d is not None
        return d.addCallback(lambda _: deliveries)

    def record(self, delivery: Delivery) -> None:
        if delivery.state is State.DELIVERED:
            # Its alert goes with its last delivery (an index lookup, not a sweep in prune()).
            self._submitRow(_DELIVERED, {"id": delivery.id, "alert": delivery.alert.alertId})
            return
        self._submitRow(
            "UPDATE deliveries SET attempts = ?, due_at = ?, state = ?, last_outcome = ?, updated_at = ?"
            " WHERE id = ?",
            outcome_row(delivery, self._reactor.seconds()),
        )

    def recent(self, state: State | None, limit: int) -> Deferred[list[Delivery]]:
        def op(conn: sqlite3.Connection) -> list[Delivery]:
            where = "WHERE d.state = ? " if state else ""
            args: list[Any] = ([state.value] if state else []) + [limit]
            return iter_rows(conn, SELECT_DELIVERIES + where + "ORDER BY d.accepted_at DESC LIMIT ?", args)

        d = self._submit(op, wait=True, read=True)
        assert d is not None
        return d

    def due(self, webhookKey: str, limit: int, count: bool = False) -> Deferred[Page]:
        def op(conn: sqlite3.Connection) -> Page:
            # What `butler-tw replay` re-queued is requeued()'s to take up: never both.
            rows = conn.execute(
                SELECT_DELIVERIES + "WHERE d.webhook_key = ? AND d.state = 'pending' AND d.requeued = 0 "
                "ORDER BY d.due_at, d.id LIMIT ?",
                (webhookKey, limit),
            ).fetchall()
            deliveries = [delivery_from_row(r) for r in rows]
            if not count:
                return Page(deliveries)
            (pending,) = conn.execute(
                "SELECT count(*) FROM deliveries WHERE webhook_key = ? AND state = 'pending'", (webhookKey,)
            ).fetchone()
            return Page(deliveries, int(pending))

        d = self._submit(op, wait=True, read=True)
        assert d is not None
        return d

    def rebind(self, webhooks: Mapping[str, str]) -> Deferred[Rebinding | None]:
        """Move stored deliveries to where their webhook is in the config now.

        Webhooks are stored by position (``reloadTaskFailure.webhooks[0]``);
        if the admin reorders, inserts or removes entries, a pending delivery
        must not go to whichever receiver now has its old position. Each
        position's fingerprint (method and URL) is kept: a delivery follows
        its fingerprint to its new position, or becomes a dead letter when no
        configured webhook has it any more.

        On the writer thread, in the same order as every other write, so
        that at a reload nothing written with the old keys is left behind
        and nothing written with the new keys is moved.
        """
        now = self._reactor.seconds()
        target = dict(webhooks)

        def op(conn: sqlite3.Connection) -> Rebinding:
            stored = dict(conn.execute("SELECT key, fingerprint FROM webhooks").fetchall())
            changes = match_webhooks(stored, target)
            removed: dict[str, int] = {}
            for old, new in changes.items():
                if new is None:
                    removed[old] = conn.execute(
                        "UPDATE deliveries SET state = 'dead', updated_at = ?, last_outcome = ? "
                        "WHERE webhook_key = ? AND state = 'pending'",
                        (now, REMOVED, old),
                    ).rowcount
                    gone = removed_key(old, stored[old])
                    conn.execute(
                        "UPDATE OR REPLACE deliveries SET webhook_key = ?, id = alert_id || '/' || ? "
                        "WHERE webhook_key = ?",
                        (gone, gone, old),
                    )
                else:  # via a temporary key, so that swapped positions never collide
                    conn.execute(
                        "UPDATE deliveries SET webhook_key = ?, id = alert_id || '/' || ? "
                        "WHERE webhook_key = ?",
                        (_MOVING + new, _MOVING + new, old),
                    )
            # OR REPLACE: a dead letter left at a position by an older version
            # (which did not move a removed webhook's deliveries away) gives way.
            conn.execute(
                "UPDATE OR REPLACE deliveries SET webhook_key = substr(webhook_key, ?), id = alert_id || '/' "
                "|| substr(webhook_key, ?) WHERE substr(webhook_key, 1, ?) = ?",
                (len(_MOVING) + 1, len(_MOVING) + 1, len(_MOVING), _MOVING),
            )
            conn.execute("DELETE FROM webhooks")
            conn.executemany("INSERT INTO webhooks (key, fingerprint) VALUES (?, ?)", list(target.items()))
            return Rebinding({old: new for old, new in changes.items() if new is not None}, removed)

        d = self._submit(op, wait=True)
        assert d is not None
        return d

    def requeued(self) -> Deferred[list[Delivery]]:
        """Deliveries that ``butler-tw replay`` re-queued since the last call."""
        now = self._reactor.seconds()

        def op(conn: sqlite3.Connection) -> list[Delivery]:
            if not _take_up_replays(conn, now):
                return []
            rows = iter_rows(
                conn, SELECT_DELIVERIES + "WHERE d.state = 'pending' AND d.requeued = 1 ORDER BY d.due_at"
            )
            conn.execute("UPDATE deliveries SET requeued = 0 WHERE requeued = 1")
            return rows

        d = self._submit(op, wait=True, read=True)
        assert d is not None
        return d.addCallback(lambda r: r or [])

    # -- de-duplication keys and rate-limit windows, so restarts forget neither

    def remember(self, table: str, kind: EventKind, key: tuple[str, ...], expiresAt: float) -> None:
        """Store a de-duplication key (``dedup``) or rate-limit window (``windows``)."""
        name, columns = _KEYED[table]
        marks = ", ".join("?" * len(columns))
        self._submit(
            lambda conn: conn.execute(
                f"INSERT OR REPLACE INTO {name} (kind, {', '.join(columns)}, expires_at)"  # noqa: S608
                f" VALUES (?, {marks}, ?)",
                (kind.value, *key, expiresAt),
            )
        )

    def remembered(self, table: str, now: float) -> list[tuple[EventKind, tuple[str, ...], float]]:
        """The unexpired keys of ``table``, for re-arming at start-up.

        Read synchronously, once, before the intake starts: the writer thread
        has nothing to do yet, and no datagram can race the restore.
        """
        assert self._conn is not None, "open() first"
        return remembered_rows(self._conn, table, now)

    def prune(self) -> None:
        """Drop expired keys, old dead letters and alerts no delivery refers to."""
        now = self._reactor.seconds()
        keptSince = now - self.deadLetterRetention

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM dedup_keys WHERE expires_at <= ?", (now,))
            conn.execute("DELETE FROM windows WHERE expires_at <= ?", (now,))
            # The alerts of the dead letters dropped, if nothing else refers to them; by index,
            # so that prune costs what it drops, not the size of the outbox.
            conn.execute(
                "DELETE FROM alerts WHERE alert_id IN (SELECT alert_id FROM deliveries WHERE state = 'dead' "
                "AND updated_at < ?) AND NOT EXISTS (SELECT 1 FROM deliveries d "
                "WHERE d.alert_id = alerts.alert_id AND NOT (d.state = 'dead' AND d.updated_at < ?))",
                (keptSince, keptSince),
            )
            conn.execute("DELETE FROM deliveries WHERE state = 'dead' AND updated_at < ?", (keptSince,))

        self._submit(op)

    def renew(self, held: Callable[[], Sequence[str]]) -> None:
        """Nothing to renew: one daemon owns this outbox."""


def _take_up_replays(conn: sqlite3.Connection, now: float) -> int:
    """Start the age of what ``butler-tw replay`` re-queued now, as the daemon takes it up.

    Its ``retrySchedule`` and ``maxAge`` count from here, not from the replay:
    one replayed while the daemon was stopped is not expired at the next start.
    :return: how many there are.
    """
    return int(
        conn.execute(
            "UPDATE deliveries SET accepted_at = ?, due_at = ? WHERE requeued = 1 AND state = 'pending'",
            (now, now),
        ).rowcount
    )


def remembered_rows(
    conn: sqlite3.Connection, table: str, now: float
) -> list[tuple[EventKind, tuple[str, ...], float]]:
    """The unexpired de-duplication keys (``dedup``) or rate-limit windows (``windows``)."""
    name, columns = _KEYED[table]
    sql = f"SELECT kind, expires_at, {', '.join(columns)} FROM {name} WHERE expires_at > ?"  # noqa: S608
    rows = conn.execute(sql, (now,)).fetchall()
    return [(EventKind(k), tuple(key), exp) for k, exp, *key in rows]


def list_deliveries(conn: sqlite3.Connection, state: State | None, limit: int) -> list[Delivery]:
    """``butler-tw deliveries``: up to ``limit`` deliveries in ``state`` (None: pending and dead).

    Ordered by state, then by when each is due.
    """
    where = "WHERE d.state = ? " if state is not None else ""
    args: list[Any] = ([state.value] if state is not None else []) + [limit]
    return iter_rows(conn, SELECT_DELIVERIES + where + "ORDER BY d.state, d.due_at LIMIT ?", args)


def replay_dead(
    conn: sqlite3.Connection,
    ids: Sequence[str],
    allDead: bool,
    decide: Callable[[list[Delivery], dict[str, str], set[str]], list[Decision]],
    now: float,
) -> list[Decision]:
    """``butler-tw replay``: re-queue dead deliveries as ``decide`` says, in one transaction.

    :param ids: delivery ids or alert ids (with ``allDead`` false).
    :param decide: called with the dead deliveries chosen, the webhooks the
        daemon has bound (key -> fingerprint) and the ids of every delivery;
        see :func:`butler_tw.replay.plan_replay`.
    :return: what ``decide`` said; those with a key are pending under it
        now, flagged for the running daemon to pick up.
    """
    where = "WHERE d.state = 'dead'"
    args: list[str] = []
    if not allDead:
        marks = ", ".join("?" * len(ids))
        where += f" AND (d.id IN ({marks}) OR d.alert_id IN ({marks}))"
        args = [*ids, *ids]
    # IMMEDIATE: the daemon cannot rebind or record between the reads and the writes.
    conn.execute("BEGIN IMMEDIATE")
    try:
        dead = iter_rows(conn, SELECT_DELIVERIES + where + " ORDER BY d.accepted_at, d.id", args)
        bound = dict(conn.execute("SELECT key, fingerprint FROM webhooks").fetchall())
        existing = {i for (i,) in conn.execute("SELECT id FROM deliveries")}
        decisions = decide(dead, bound, existing)
        for decision in decisions:
            if decision.key is None:
                continue
            conn.execute(
                "UPDATE deliveries SET webhook_key = ?, id = alert_id || '/' || ?, state = 'pending', "
                "attempts = 0, accepted_at = ?, due_at = ?, requeued = 1, updated_at = ? "
                "WHERE id = ? AND state = 'dead'",
                (decision.key, decision.key, now, now, now, decision.delivery.id),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return decisions


def iter_rows(conn: sqlite3.Connection, sql: str, args: Iterable[Any] = ()) -> list[Delivery]:
    return [delivery_from_row(r) for r in conn.execute(sql, tuple(args)).fetchall()]
