"""Log capture: what the code under test logged, in one namespace, as the lines an admin reads."""

from __future__ import annotations

from typing import Any

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase


class LogCapture:
    def __init__(self, test: SynchronousTestCase, namespace: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.namespace = namespace
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e.get("log_namespace") == self.namespace]
