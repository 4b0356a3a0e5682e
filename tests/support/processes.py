"""Commands run as processes of their own, as an admin runs them.

:func:`subprocess_env` lets a child import this tree's ``butler_tw``;
:class:`Collect` gathers a child's output and waits for a text in it;
:func:`kill` ends one that did not stop.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from tests.support import REPO


def subprocess_env() -> dict[str, str]:
    """The environment for a child process: this one's, with the repository first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Collect(ProcessProtocol):
    """A child's stdout and stderr, kept whole; :meth:`waitFor` fires once stdout holds a text."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred[int] = Deferred()
        self._waiting: list[tuple[bytes, Deferred[None]]] = []

    def waitFor(self, text: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._waiting.append((text, d))
        self._check()
        return d.addTimeout(10, reactor)

    def _check(self) -> None:
        still = []
        for text, d in self._waiting:
            if text in self.out:
                d.callback(None)
            else:
                still.append((text, d))
        self._waiting = still

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


def kill(transport: Any, process: Collect) -> Deferred[int]:
    """SIGKILL the child; fires with its exit status once it has ended."""
    transport.signalProcess(signal.SIGKILL)
    return process.ended
