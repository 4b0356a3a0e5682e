"""The daemon's side of the outbox process (``butlerWebhook.storeProcess``).

:class:`OutboxProcess` is an ``IOutbox`` whose SQLite outbox runs in a child process
(:mod:`~butler_tw.delivery.stores.outboxchild`). Why: the writer's Python work (binding
rows, running statements, the group commit) otherwise shares one interpreter lock with the
reactor, and both slow down by more than the writer's own share; in a process of its own
it uses the second core.

- Calls go over a pipe in order, one frame per reactor turn; ``add`` builds its deliveries
  here, so only the alert crosses, and its Deferred fires when the child says the alert is
  stored (or going on from memory while the database fails, as in the daemon).
- Every call is kept until the child says its writes are committed. If the child dies, the
  daemon logs it, goes on from memory (new alerts count against maxBufferedAlerts as when
  the disk fails), starts it again with a backoff, and sends again, in order, what was not
  committed: the writes are idempotent (upserts by id, updates, deletes), so nothing accepted
  is lost.
- ``remembered()`` reads the database here, once, at start-up (before the first datagram).
"""

from __future__ import annotations

import os
import sqlite3
import sys
from typing import Any, Callable, Mapping, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from butler_tw.core.alert import Alert, EventKind
from butler_tw.core.delivery import Delivery, Page, Rebinding, State
from butler_tw.delivery.outbox import IOutbox
from butler_tw.delivery.stores.framing import Unframer, frame
from butler_tw.delivery.stores.sqlite import StoreError, connect, db_path, remembered_rows

log = Logger(namespace="butler_tw.outbox")

#: Seconds before a child that died is started again (doubling, up to a minute).
RESTART_AFTER = 1.0
#: Seconds a clean stop waits for the child to flush and end before it is killed.
CLOSE_TIMEOUT = 15.0


class OutboxProcessError(Exception):
    """The outbox process answered a call with an error (its message, one line)."""


@implementer(IOutbox)
class OutboxProcess(ProcessProtocol):
    """``IOutbox`` on SQLite, in a child process. See the module docstring."""

    shared = False
    cluster = None

    def __init__(self, stateDir: str, reactor: Any, deadLetterRetention: float = 7 * 86400) -> None:
        self.stateDir = stateDir
        self.where = db_path(stateDir)
        self._reactor = reactor
        self._deadLetterRetention = deadLetterRetention
        self.healthy = True
        self.lastError: str | None = None
        self.writeErrors = 0
        self.commits = 0
        self._childUnsaved = 0
        self._unsavedHere = 0  # alerts that went on while no child ran, not yet committed
        self._nextId = 0
        # Every call not yet committed (or answered, for a read): id -> (name, args, waiter, unsaved here).
        self._open: dict[int, tuple[str, tuple[Any, ...], Deferred[Any] | None, bool]] = {}
        self._outgoing: list[tuple[int, str, tuple[Any, ...]]] = []
        self._sending: Any = None
        self._unframer = Unframer()
        self._running = False
        self._closing = False
        self._restartAfter = RESTART_AFTER
        self._restartCall: Any = None
        self._ended: list[Deferred[None]] = []
        self.pid: int | None = None
        self.restarts = 0

    # -- what the daemon reads

    @property
    def unsavedAlerts(self) -> int:
        return self._childUnsaved + self._unsavedHere

    @property
    def deadLetterRetention(self) -> float:
        return self._deadLetterRetention

    @deadLetterRetention.setter
    def deadLetterRetention(self, value: float) -> None:
        self._deadLetterRetention = value
        self._call("set", ("deadLetterRetention", value))

    # -- the child

    def open(self) -> None:
        """Check the database here (a problem stops the start with its message), then start the child."""
        connect(self.stateDir).close()
        self._start()

    def _start(self) -> None:
        self._restartCall = None
        if self._closing:
            return
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "LANG", "LC_ALL")}
        self._reactor.spawnProcess(
            self,
            sys.executable,
            [
                sys.executable,
                "-m",
                "butler_tw.delivery.stores.outboxchild",
                self.stateDir,
                repr(self._deadLetterRetention),
            ],
            env=env,
            childFDs={0: "w", 1: "r", 2: "r"},
        )

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.pid = self.transport.pid
        self._running = True
        self._unframer = Unframer()
        if not self.restarts:
            log.info("Outbox process {pid} writes {where}", pid=self.pid, where=self.where)
        else:
            log.info(
                "Outbox process {pid} started again: sending it the {calls} not yet stored",
                pid=self.pid,
                calls=len(self._open),
            )
        # Everything not committed, in order: what a dead child may have lost, and what waited for it.
        self._outgoing = [(callId, name, args) for callId, (name, args, _, _) in self._open.items()]
        self._schedule()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 1:
            for answers, done, status in self._unframer.feed(data):
                self._received(answers, done, status)
        elif childFD == 2:
            for line in data.decode("utf-8", "replace").splitlines():
                level, _, text = line.partition("\t")
                if text.strip():
                    log.emit(
                        LogLevel.levelWithName(level) if level in _LEVELS else LogLevel.warn,
                        "{text}",
                        text=text,
                    )

    def _received(
        self, answers: list[tuple[int, bool, Any]], done: list[int], status: dict[str, Any]
    ) -> None:
        self._restartAfter = RESTART_AFTER
        self.healthy = bool(status["healthy"]) and self._running
        self.lastError = status["lastError"]
        self.writeErrors = int(status["writeErrors"])
        self._childUnsaved = int(status["unsavedAlerts"])
        self.commits = int(status["commits"])
        for callId, ok, value in answers:
            entry = self._open.get(callId)
            if entry is None:
                continue
            name, _, waiter, _ = entry
            if name not in _WRITES:
                del self._open[callId]  # a read: answered is done
            if waiter is not None and not waiter.called:
                if ok:
                    waiter.callback(value)
                else:
                    waiter.errback(Failure(OutboxProcessError(value)))
        for callId in done:
            entry = self._open.pop(callId, None)
            if entry is not None and entry[3]:
                self._unsavedHere -= 1

    def processEnded(self, reason: Failure) -> None:
        self.pid = None
        self._running = False
        ended, self._ended = self._ended, []
        for d in ended:
            d.callback(None)
        if self._closing:
            return
        # Callers waiting for an alert to be stored go on from memory, as when the disk fails.
        for callId, (name, args, waiter, unsaved) in list(self._open.items()):
            if name == "add" and not unsaved:
                self._open[callId] = (name, args, waiter, True)
                self._unsavedHere += 1
                if waiter is not None and not waiter.called:
                    waiter.callback(None)
        self.restarts += 1
        self.healthy = False
        self.lastError = f"the outbox process ended ({reason.value})"
        log.error(
            "The outbox process ended ({why}); deliveries go on from memory, and what it had not stored "
            "is sent to it again once it is started again, in {after:g} s",
            why=str(reason.value),
            after=self._restartAfter,
        )
        self._restartCall = self._reactor.callLater(self._restartAfter, self._start)
        self._restartAfter = min(self._restartAfter * 2, 60.0)

    # -- calls

    def _call(
        self, name: str, args: tuple[Any, ...], wait: bool = False, unsaved: bool = False
    ) -> Deferred[Any] | None:
        self._nextId += 1
        callId = self._nextId
        waiter: Deferred[Any] | None = Deferred() if wait else None
        self._open[callId] = (name, args, waiter, unsaved)
        if self._running:
            self._outgoing.append((callId, name, args))
            self._schedule()
        return waiter

    def _schedule(self) -> None:
        if self._sending is None:
            self._sending = self._reactor.callLater(0, self._send)

    def _send(self) -> None:
        self._sending = None
        if not self._running or not self._outgoing:
            return
        calls, self._outgoing = self._outgoing, []
        assert self.transport is not None
        self.transport.write(frame(calls))

    # -- IOutbox

    def add(
        self, alert: Alert, webhookKeys: Sequence[str], now: float, window: float = 0.0
    ) -> Deferred[list[Delivery]]:
        deliveries = [Delivery(alert, key, acceptedAt=now, dueAt=now) for key in webhookKeys]
        if not self._running:  # no child now: on from memory, stored once it is back
            self._unsavedHere += 1
            self._call("add", (alert, list(webhookKeys), now, window), unsaved=True)
            return succeed(deliveries)
        d = self._call("add", (alert, list(webhookKeys), now, window), wait=True)
        assert d is not None
        return d.addCallback(lambda _: deliveries)

    def record(self, delivery: Delivery) -> None:
        self._call("record", (delivery,))

    def recent(self, state: State | None, limit: int) -> Deferred[list[Delivery]]:
        return self._wait("recent", (state, limit))

    def due(self, webhookKey: str, limit: int, count: bool = False) -> Deferred[Page]:
        return self._wait("due", (webhookKey, limit, count))

    def rebind(self, webhooks: Mapping[str, str]) -> Deferred[Rebinding | None]:
        return self._wait("rebind", (dict(webhooks),))

    def requeued(self) -> Deferred[list[Delivery]]:
        return self._wait("requeued", ())

    def remember(self, table: str, kind: EventKind, key: tuple[str, ...], expiresAt: float) -> None:
        self._call("remember", (table, kind, key, expiresAt))

    def remembered(self, table: str, now: float) -> list[tuple[EventKind, tuple[str, ...], float]]:
        """Read here, synchronously, once at start-up (the child may be writing: WAL lets both)."""
        try:
            conn = sqlite3.connect(self.where, timeout=10)
        except sqlite3.Error as e:
            raise StoreError(f"cannot read {self.where}: {e}") from None
        try:
            return remembered_rows(conn, table, now)
        finally:
            conn.close()

    def renew(self, held: Callable[[], Sequence[str]]) -> None:
        """Nothing to renew: one daemon owns this outbox."""

    def prune(self) -> None:
        self._call("prune", ())

    def flushed(self) -> Deferred[None]:
        """Fires once every write sent so far is committed (or failed), as the store's own."""
        return self._wait("flushed", ())

    def close(self) -> Deferred[None]:
        """Let the child flush and close its outbox, then end it (killed after :data:`CLOSE_TIMEOUT`)."""
        if self._closing:
            return succeed(None)
        self._closing = True
        if self._restartCall is not None and self._restartCall.active():
            self._restartCall.cancel()
        if not self._running or self.transport is None:
            unstored = sum(1 for name, *_ in self._open.values() if name in _WRITES)
            if unstored:
                log.error(
                    "Stopping with {n} outbox writes not stored (the outbox process is down)", n=unstored
                )
            return succeed(None)
        ended: Deferred[None] = Deferred()
        self._ended.append(ended)
        self._call("close", ())
        self._send()
        timer = self._reactor.callLater(CLOSE_TIMEOUT, self._kill)
        return ended.addBoth(lambda _: timer.cancel() if timer.active() else None)

    def _kill(self) -> None:
        if self.transport is not None and self.pid is not None:
            log.error(
                "The outbox process did not end within {s:g} s of the stop: killing it", s=CLOSE_TIMEOUT
            )
            self.transport.signalProcess("KILL")

    def _wait(self, name: str, args: tuple[Any, ...]) -> Deferred[Any]:
        d = self._call(name, args, wait=True)
        assert d is not None
        return d


#: Calls that write: kept until the child says they are committed.
_WRITES = frozenset({"add", "record", "rebind", "remember", "prune"})
_LEVELS = frozenset({"debug", "info", "warn", "error", "critical"})
