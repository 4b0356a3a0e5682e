"""Group commit: every write of a store on one thread, batched into transactions.

Both durable stores (SQLite, PostgreSQL) write this way:

- Every database call happens on one dedicated thread, never on the reactor.
- Writes are batched: while one transaction commits, new writes gather, and
  all of them go in the next transaction. One commit then covers many alerts,
  so thousands of alerts per second cost tens of commits, not thousands, and
  an idle daemon adds no delay at all.
- A failed transaction never stops delivery: it is logged once (at error),
  counted, and retried with backoff until it succeeds; the deliveries carry
  on from memory meanwhile. The retried writes go first, so a later update
  of the same rows still lands after them.

A store subclasses :class:`GroupCommit` and says how to get a connection,
how to begin and roll back a transaction, and what to do with one that broke.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from butler_tw.core.words import count

log = Logger(namespace="butler_tw.outbox")

C = TypeVar("C")
Op = Callable[[C], Any]
#: Writes per transaction at most (a storm's backlog goes in several).
MAX_BATCH = 5000
_FIRST_BACKOFF = 0.5
_MAX_BACKOFF = 30.0


@attrs.frozen
class _ReadFailed:
    """A read's error, carried out of the writer thread without failing the batch."""

    error: Exception


@attrs.define
class _Queued(Generic[C]):
    op: Op[C]
    waiter: Deferred[Any] | None
    read: bool
    #: For rows of one statement (:meth:`GroupCommit._submitRow`): the statement(s), and its rows so far.
    sql: str | tuple[str, ...] | None = None
    rows: list[Any] | None = None
    #: It stores a new alert (counted in ``unsavedAlerts`` once its caller went on from memory).
    add: bool = False

    @property
    def unsaved(self) -> bool:
        """An alert's write whose caller already went on without it."""
        return self.add and (self.waiter is None or self.waiter.called)


class GroupCommit(Generic[C]):
    """The batching engine; see the module docstring.

    :param where: what to name in log lines (a path, a connection string
        without its password).
    """

    #: The longest wait between two tries of a failing batch (seconds).
    maxBackoff = _MAX_BACKOFF

    def __init__(self, reactor: Any, where: str, threadName: str) -> None:
        self._reactor = reactor
        self.where = where
        self._conn: C | None = None
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=threadName)
        self._queued: list[_Queued[C]] = []
        self._backoff = _FIRST_BACKOFF
        self._retryCall: Any = None
        self._committing = False
        self._idle: list[Deferred[None]] = []
        self._closed = False
        #: False after a write failed and until one succeeds again.
        self.healthy = True
        #: Why the last write failed, while not healthy.
        self.lastError: str | None = None
        self.writeErrors = 0
        self.commits = 0
        #: Alerts handed on to delivery while their write waits for a retry: they
        #: count against butlerWebhook.maxBufferedAlerts, so a dead store cannot grow memory forever.
        self.unsavedAlerts = 0

    # -- what a store says

    def _connect(self) -> C:
        """On the writer thread: a new, ready connection (schema in place)."""
        raise NotImplementedError

    def _begin(self, conn: C) -> None:
        raise NotImplementedError

    def _finish(self, conn: C) -> None:
        """Commit the transaction."""
        raise NotImplementedError

    def _abandon(self, conn: C) -> None:
        """Roll back after an error, if a transaction is open; drop a broken connection."""
        raise NotImplementedError

    def _describe(self, error: BaseException) -> str:
        """An error for a log line and /health: one line, no secret."""
        return " ".join(str(error).split()) or type(error).__name__

    def _retryAtOnce(self, error: BaseException) -> bool:
        """Whether a failed batch is retried at once, as a conflict rather than a failure."""
        return False

    def _closeConnection(self, conn: C) -> None:
        raise NotImplementedError

    def _executemany(self, conn: C, sql: str, rows: list[Any]) -> None:
        raise NotImplementedError

    # -- the engine

    def _startWriter(self) -> None:
        self._pool.start()

    def _submit(
        self, op: Op[C], wait: bool = False, read: bool = False, add: bool = False, first: bool = False
    ) -> Deferred[Any] | None:
        """Queue ``op`` for the next transaction.

        :param wait: return a Deferred that fires with ``op``'s result. A write's
            fires (with ``None``) even when its commit failed: the caller goes on
            from memory while the write is retried.
        :param read: ``op`` answers a question; if its commit fails, its
            Deferred fails instead of the op being retried.
        :param add: ``op`` stores a new alert (counted in :attr:`unsavedAlerts` while it fails).
        :param first: ``op`` goes ahead of what is queued (a read whose order does not
            matter, and that must not wait behind a backlog: renewing leases).
        """
        d: Deferred[Any] | None = Deferred() if wait else None
        if d is not None and not read and not self.healthy:
            # Failing: the caller goes on from memory now, not at the next retry
            # (up to maxBackoff away); the write waits its turn all the same.
            self._queued.append(_Queued(op, None, read, add=add))
            if add:
                self.unsavedAlerts += 1
            self._schedule()
            d.callback(None)
            return d
        queued = _Queued(op, d, read, add=add)
        if first:
            self._queued.insert(0, queued)
        else:
            self._queued.append(queued)
        self._schedule()
        return d

    def _submitRow(self, sql: str | tuple[str, ...], row: Any) -> None:
        """Queue one row of a write statement; rows of the same statement queued one after another
        run as one ``executemany`` (the attempts' outcomes of a busy reactor turn, say).

        :param sql: a statement, or several run one after another over the same rows
            (then ``row`` is a mapping of named parameters).
        """
        last = self._queued[-1] if self._queued else None
        if last is not None and last.rows is not None and last.sql == sql and len(last.rows) < MAX_BATCH:
            last.rows.append(row)  # not yet taken by a transaction: batches take the whole queue
            return
        rows = [row]
        statements = (sql,) if isinstance(sql, str) else sql

        def op(conn: C) -> None:
            for statement in statements:
                self._executemany(conn, statement, rows)

        self._queued.append(_Queued(op, None, False, sql, rows))
        self._schedule()

    def _schedule(self) -> None:
        if not self._committing:
            # Commit at the end of this reactor turn, not now: what one datagram
            # causes then lands in one transaction.
            self._committing = True
            self._retryCall = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._retryCall = None
        # A bounded transaction: its commit, and so every wait behind it, stays short.
        batch, self._queued = self._queued[:MAX_BATCH], self._queued[MAX_BATCH:]
        if not batch:
            self._committing = False
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)
            return
        self._committing = True
        done = deferToThreadPool(self._reactor, self._pool, self._commit, [(q.op, q.read) for q in batch])
        done.addBoth(self._committed, batch)

    def _commit(self, ops: list[tuple[Op[C], bool]]) -> list[Any]:
        """On the writer thread: run ``ops`` in one transaction.

        A read that fails is rolled back to its own savepoint and answers
        with the error (a :class:`_ReadFailed`): it must not undo the writes
        it shares the transaction with.
        """
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        try:
            self._begin(conn)
            results = [self._read(conn, op) if read else op(conn) for op, read in ops]
            self._finish(conn)
        except BaseException:
            self._abandon(conn)
            raise
        return results

    @staticmethod
    def _read(conn: Any, op: Op[C]) -> Any:
        conn.execute("SAVEPOINT read")
        try:
            value = op(conn)
        except Exception as e:
            conn.execute("ROLLBACK TO SAVEPOINT read")
            conn.execute("RELEASE SAVEPOINT read")
            return _ReadFailed(e)
        conn.execute("RELEASE SAVEPOINT read")
        return value

    def _committed(self, result: Any, batch: list[_Queued[C]]) -> None:
        if isinstance(result, list):
            self.commits += 1
            self._backoff = _FIRST_BACKOFF
            if not self.healthy:
                log.info("Outbox writes to {where} work again", where=self.where)
            self.healthy = True
            self.lastError = None
            self.unsavedAlerts -= sum(1 for q in batch if q.unsaved)  # stored now
            for q, value in zip(batch, result, strict=True):
                if q.waiter is None or q.waiter.called:
                    continue
                if isinstance(value, _ReadFailed):
                    q.waiter.errback(value.error)
                else:
                    q.waiter.callback(value)
            self._flush()
            return
        if self._retryAtOnce(result.value):
            self._queued = batch + self._queued
            self._retryCall = self._reactor.callLater(0, self._flush)
            return
        self.writeErrors += 1
        self.lastError = self._describe(result.value)
        if self.healthy:
            log.error(
                "Cannot write to the outbox {where}: {error}. Deliveries carry on from memory and the "
                "writes are retried; until they succeed, what is new would not survive a restart",
                where=self.where,
                error=self.lastError,
            )
        self.healthy = False
        retry = [q for q in batch if not q.read]
        # Retried first, so that a later update of the same rows still lands after them.
        behind = self._queued
        self._queued = retry + behind
        # Every write queued, this batch's and those behind it (a backlog longer than one
        # transaction), now waits for the store: their callers go on from memory, and each
        # alert among them counts against maxBufferedAlerts until it is stored.
        self.unsavedAlerts = sum(1 for q in self._queued if q.add)
        self._retryCall = self._reactor.callLater(self._backoff, self._flush)
        self._backoff = min(self._backoff * 2, self.maxBackoff)
        # Only now the waiters: what they run sees the writes queued again and counted.
        for q in batch:
            if q.waiter is None or q.waiter.called:
                continue
            if q.read:
                q.waiter.errback(result)
            else:
                q.waiter.callback(None)
        for q in behind:  # reads behind wait for the store: they cannot be answered from memory
            if not q.read and q.waiter is not None and not q.waiter.called:
                q.waiter.callback(None)

    def flushed(self) -> Deferred[None]:
        """Fires once every write submitted so far is committed (or failed)."""
        if not self._committing and not self._queued:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def _beforeClose(self) -> None:
        """Queue the last writes of a clean stop (a store may add some)."""

    def close(self, timeout: float = 10.0) -> Deferred[None]:
        """Flush what is queued (waiting at most ``timeout`` seconds), then stop the writer."""
        if self._closed:
            return succeed(None)
        self._closed = True
        self._beforeClose()
        done: Deferred[None] = Deferred()
        self.flushed().addBoth(lambda _: None if done.called else done.callback(None))
        timer = self._reactor.callLater(timeout, lambda: None if done.called else done.callback(None))

        def shut(_: object) -> None:
            if timer.active():
                timer.cancel()
            if self._retryCall is not None and self._retryCall.active():
                self._retryCall.cancel()
            unwritten = len(self._queued)
            if unwritten:
                log.error(
                    "Stopping with {writes} not stored ({where} is failing): "
                    "the deliveries they concern may be attempted again, or not resumed, at the next start",
                    writes=count(unwritten, "outbox write", "outbox writes"),
                    n=unwritten,
                    where=self.where,
                )
            self._pool.stop()
            if self._conn is not None:
                self._closeConnection(self._conn)
                self._conn = None

        return done.addCallback(shut)
