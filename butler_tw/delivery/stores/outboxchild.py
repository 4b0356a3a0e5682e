"""The outbox process (``butlerWebhook.storeProcess``): the SQLite outbox, in a process of its own.

``python -m butler_tw.delivery.stores.outboxchild STATE_DIR DEAD_LETTER_RETENTION``, started by
:class:`~butler_tw.delivery.stores.outboxprocess.OutboxProcess`. It runs the same
:class:`~butler_tw.delivery.stores.sqlite.SqliteOutbox` as the daemon would, on a reactor of
its own, so the writer's Python work never waits for the daemon's interpreter lock, nor the
daemon's for it. On stdin come frames of calls ``(id, method, args)``, in order; on stdout go
frames of ``(answers, done, status)``:

- an answer ``(id, ok, value)`` fires the caller's Deferred (a read's rows; for ``add``, once
  its transaction is committed, or at once while the database fails, as in the daemon);
- ``done`` lists the ids of calls whose writes are committed: the daemon forgets them then,
  and sends again what was not done if this process dies;
- ``status``: healthy, lastError, writeErrors, unsavedAlerts, commits.

Its log lines go to stderr as ``LEVEL<TAB>text``; the daemon logs them as its own. Stdin closing
(the daemon went away) closes the outbox and ends the process.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import stdio
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import ILogObserver, formatEvent, globalLogBeginner
from twisted.python.failure import Failure
from zope.interface import implementer

from butler_tw.delivery.stores.framing import Unframer, frame
from butler_tw.delivery.stores.sqlite import SqliteOutbox

#: What the daemon may call.
CALLS = frozenset(
    {"add", "record", "recent", "due", "rebind", "requeued", "remember", "prune", "flushed", "set", "close"}
)


class Serve(Protocol):
    def __init__(self, outbox: SqliteOutbox, reactor: Any) -> None:
        self._outbox = outbox
        self._reactor = reactor
        self._unframer = Unframer()
        self._answers: list[tuple[int, bool, Any]] = []
        self._done: list[int] = []
        self._sending: Any = None
        self._closing = False

    def dataReceived(self, data: bytes) -> None:
        for calls in self._unframer.feed(data):
            writes = []
            for callId, name, args in calls:
                if self._call(callId, name, args):
                    writes.append(callId)
            if writes:
                # A read after the writes: it answers once the transaction that has them is
                # committed. If that commit fails, the writes are retried: ask again behind them.
                self._whenCommitted(writes)

    def _call(self, callId: int, name: str, args: tuple[Any, ...]) -> bool:
        """Run one call; True when it is a write that is done only once committed."""
        if name not in CALLS:
            self._answer(callId, False, f"unknown call {name!r}")
            return False
        if name == "set":
            setattr(self._outbox, args[0], args[1])
            self._answer(callId, True, None)
            return False
        if name == "close":
            self._closing = True
            self._outbox.close().addBoth(lambda _: self._closed(callId))
            return False
        result = getattr(self._outbox, name)(*args)
        if isinstance(result, Deferred):
            result.addCallbacks(
                lambda value: self._answer(callId, True, None if name == "add" else value),
                lambda f: self._answer(callId, False, _describe(f)),
            )
        return name in ("add", "record", "rebind", "remember", "prune")

    def _whenCommitted(self, ids: list[int]) -> None:
        marker = self._outbox._submit(lambda conn: None, wait=True, read=True)
        assert marker is not None

        def again(_: Failure) -> None:
            if not self._closing:
                self._whenCommitted(ids)

        marker.addCallbacks(lambda _: self._markDone(ids), again)

    def _markDone(self, ids: list[int]) -> None:
        self._done.extend(ids)
        self._send()

    def _answer(self, callId: int, ok: bool, value: Any) -> None:
        self._answers.append((callId, ok, value))
        self._send()

    def _send(self) -> None:
        if self._sending is None:
            self._sending = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._sending = None
        answers, self._answers = self._answers, []
        done, self._done = self._done, []
        o = self._outbox
        status = {
            "healthy": o.healthy,
            "lastError": o.lastError,
            "writeErrors": o.writeErrors,
            "unsavedAlerts": o.unsavedAlerts,
            "commits": o.commits,
        }
        assert self.transport is not None
        self.transport.write(frame((answers, done, status)))

    def _closed(self, callId: int) -> None:
        self._answer(callId, True, None)
        self._flush()
        self._reactor.callLater(0, self._reactor.stop)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self._closing:  # the daemon went away without a close
            self._closing = True
            self._outbox.close().addBoth(lambda _: self._reactor.stop())


def _describe(f: Failure) -> str:
    return " ".join(str(f.value).split()) or type(f.value).__name__


@implementer(ILogObserver)
def _log(event: dict[str, Any]) -> None:
    text = formatEvent(event)
    level = event.get("log_level")
    name = level.name if level is not None else "info"
    for line in text.splitlines() or [""]:
        sys.stderr.write(f"{name}\t{line}\n")
    sys.stderr.flush()


def main(argv: list[str]) -> None:
    from twisted.internet import reactor

    stateDir, retention = argv[1], float(argv[2])
    globalLogBeginner.beginLoggingTo([_log], redirectStandardIO=False)
    outbox = SqliteOutbox(stateDir, reactor, retention)
    outbox.open()
    stdio.StandardIO(Serve(outbox, reactor))
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv)
