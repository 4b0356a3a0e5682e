"""The reload shell: Reloader, Pipeline.apply and DeliveryService.replaceWebhooks on a memory reactor.

Real config files, a real ``Pipeline`` (real clients, whose connections go
to a ``MemoryReactorClock``), a ``MemoryOutbox``; the file is read
synchronously unless a test holds the read to see what overlaps it.
"""

from __future__ import annotations

import signal
import uuid
from typing import Any, Callable

import yaml
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from butler_tw.config import load_config
from butler_tw.core.delivery import State
from butler_tw.core.sources import SourceFilter
from butler_tw.core.stats import Stats
from butler_tw.daemon.logsetup import LIFECYCLE
from butler_tw.daemon.pipeline import Pipeline
from butler_tw.daemon.reloader import KEEPING, Reloader
from butler_tw.daemon.startup import Loaded, read_config
from butler_tw.delivery.stores.memory import MemoryOutbox
from tests.support.alerts import datagram

FAIL = "reloadTaskFailure"


def hook(port: int, description: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "webhookURL": f"http://10.0.0.1:{port}/hook",
        "httpMethod": "POST",
        **extra,
    }


def document(*hooks: dict[str, Any], rateLimit: float = 300, **udp: Any) -> dict[str, Any]:
    return {
        "Butler": {
            "udpServerConfig": {"enable": True, "serverHost": "127.0.0.1", "portTaskFailure": 9998, **udp},
            "webhookNotification": {"enable": True, FAIL: {"rateLimit": rateLimit, "webhooks": list(hooks)}},
        },
        "butlerWebhook": {"delivery": {"retrySchedule": [0, 60], "maxAge": 600}},
    }


class Reactor(MemoryReactorClock):
    """A memory reactor whose ``callFromThread`` runs at the next ``advance``."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.callLater(0, f, *args, **kwargs)


class ReloaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.reactor = Reactor()
        self.path = self.mktemp()
        self.signals: list[tuple[int, Any]] = []
        self.reads: list[Deferred[Loaded]] = []

    def write(self, doc: dict[str, Any]) -> None:
        with open(self.path, "w", encoding="utf-8") as f:
            yaml.safe_dump(doc, f)

    def start(
        self, doc: dict[str, Any], holdReads: bool = False, sources: SourceFilter | None = None
    ) -> None:
        self.write(doc)
        self.outbox = MemoryOutbox()
        self.pipeline = Pipeline(self.reactor, load_config(self.path), self.outbox, Stats(), sources)
        self.pipeline.service.startService()
        self.reloader = Reloader(
            self.reactor,
            self.path,
            self.pipeline,
            "127.0.0.1:9998",
            inThread=self.heldRead if holdReads else lambda f, *a: maybeDeferred(f, *a),
            setSignal=self.setSignal,
        )
        self.reloader.startService()

    def heldRead(self, f: Callable[[str], Loaded], path: str) -> Deferred[Loaded]:
        d: Deferred[Loaded] = Deferred()
        self.reads.append(d)
        return d

    def setSignal(self, signum: int, handler: Any) -> Any:
        self.signals.append((signum, handler))
        return "previous handler"

    def lines(self, namespace: str = "butler_tw.reload") -> list[str]:
        return [formatEvent(e) for e in self.events if e.get("log_namespace") == namespace]

    def alert(self) -> None:
        self.pipeline.admission.datagram(datagram("failed", str(uuid.uuid4()), str(uuid.uuid4())), "10.0.0.9")

    def connectedPorts(self) -> list[int]:
        return [port for _, port, *_ in self.reactor.tcpClients]

    def test_signalHandlerInstalledAndRestored(self) -> None:
        """SIGHUP hops to the reactor thread; the previous handler is back after stop."""
        self.start(document(hook(1)))
        ((signum, handler),) = self.signals
        self.assertEqual(signum, signal.SIGHUP)
        self.write(document(hook(1), hook(2)))
        handler(signal.SIGHUP, None)
        self.assertEqual(len(self.pipeline.dispatchers), 1)  # nothing done in the handler itself
        self.reactor.advance(0)
        self.assertEqual(len(self.pipeline.dispatchers), 2)
        self.reloader.stopService()
        self.assertEqual(self.signals[-1], (signal.SIGHUP, "previous handler"))
        self.reloader.stopService()  # twice, or never started: nothing more
        self.assertEqual(len(self.signals), 2)

    def test_addedWebhookGetsTheNextAlert(self) -> None:
        self.start(document(hook(1, "First")))
        first = self.pipeline.dispatchers[f"{FAIL}.webhooks[0]"]
        self.write(document(hook(1, "First"), hook(2, "Second"), rateLimit=60))
        self.successResultOf(self.reloader.reload())
        self.assertIs(self.pipeline.dispatchers[f"{FAIL}.webhooks[0]"], first)  # kept as it was
        self.alert()
        self.assertEqual(sorted(self.connectedPorts()), [1, 2])
        (event,) = [e for e in self.events if formatEvent(e).startswith("Reloaded")]
        self.assertTrue(event[LIFECYCLE])  # shown whatever butlerWebhook.log.level says
        summary = formatEvent(event)
        self.assertEqual(
            summary,
            f"Reloaded {self.path}: 1 webhook added ({FAIL}.webhooks[1] 'Second': POST http://10.0.0.1:2/***), "
            "1 unchanged, rate limit reloadTaskFailure 300 s -> 60 s",
        )

    def test_inFlightToKeptWebhookNotCancelled(self) -> None:
        self.start(document(hook(1)))
        self.alert()
        dispatcher = self.pipeline.dispatchers[f"{FAIL}.webhooks[0]"]
        (connector,) = self.reactor.connectors
        self.write(document(hook(1), hook(2)))
        self.successResultOf(self.reloader.reload())
        self.assertIs(self.pipeline.dispatchers[f"{FAIL}.webhooks[0]"], dispatcher)
        self.assertEqual(dispatcher.inFlight, 1)
        self.assertFalse(connector.stoppedConnecting)  # the connection attempt goes on
        self.assertEqual([d.attempts for d in self.outbox.live.values()], [0])  # nothing recorded

    def test_removedWebhookPendingBecomesDeadLetter(self) -> None:
        self.start(document(hook(1, "Gone"), hook(2, "Stays")))
        self.alert()
        # Both attempts are in flight on the memory reactor; time them out (10 s): retry at 60 s.
        self.reactor.advance(10)
        self.assertEqual([d.attempts for d in self.outbox.live.values()], [1, 1])
        self.write(document(hook(2, "Stays")))
        self.successResultOf(self.reloader.reload())
        (dead,) = self.outbox.dead
        self.assertEqual((dead.state, dead.attempts), (State.DEAD, 1))
        self.assertIn("removed from the config", dead.lastOutcome)
        (live,) = self.outbox.live.values()
        self.assertEqual(live.webhookKey, f"{FAIL}.webhooks[0]")  # Stays moved up, its delivery with it
        (summary,) = [line for line in self.lines() if line.startswith("Reloaded")]
        self.assertIn(
            f"1 webhook removed ({FAIL}.webhooks[0] 'Gone': 1 pending delivery kept as a dead letter)",
            summary,
        )
        self.assertIn(
            f"1 moved ({FAIL}.webhooks[1] 'Stays' -> {FAIL}.webhooks[0], deliveries follow)", summary
        )
        # The moved delivery is retried at its time, by the webhook at its new position.
        before = len(self.reactor.tcpClients)
        self.reactor.advance(70)
        self.assertEqual(self.connectedPorts()[before:], [2])

    def test_invalidFileKeepsRunningConfig(self) -> None:
        self.start(document(hook(1)))
        running = self.pipeline.config
        bad = document(
            hook(1, httpMethod="FETCH"), hook(2, cert={"enable": True, "certCA": "/no/such/ca.pem"})
        )
        self.write(bad)
        self.successResultOf(self.reloader.reload())
        self.assertIs(self.pipeline.config, running)
        errors = [line for line in self.lines() if KEEPING in line]
        self.assertEqual(len(errors), 3, errors)
        self.assertIn("2 problems", errors[0])
        self.assertIn(
            f"Butler.webhookNotification.{FAIL}.webhooks[0].httpMethod: must be GET, POST or PUT", errors[1]
        )
        self.assertIn(f"{FAIL}.webhooks[1].cert.certCA: file not found: /no/such/ca.pem", errors[2])
        self.alert()
        self.assertEqual(self.connectedPorts(), [1])

    def test_unreadableFile(self) -> None:
        self.start(document(hook(1)))
        self.write({"Butler": "not a mapping"})
        self.successResultOf(self.reloader.reload())
        self.assertTrue(
            any("Butler: expected a mapping" in line and KEEPING in line for line in self.lines())
        )

    def test_restartOnlySettingsWarnedEveryTime(self) -> None:
        self.start(document(hook(1)))
        self.write(document(hook(1), portTaskFailure=9999))
        self.successResultOf(self.reloader.reload())
        self.successResultOf(self.reloader.reload())  # the file still asks for it: still said
        warnings = [line for line in self.lines() if "takes effect after a restart" in line]
        self.assertEqual(len(warnings), 2, self.lines())
        self.assertIn("Butler.udpServerConfig.portTaskFailure changed", warnings[0])
        self.assertIn("still listening on UDP 127.0.0.1:9998", warnings[0])

    def test_reloadsDoNotOverlap(self) -> None:
        """Three SIGHUPs during a read: one more read after it, not three, never two at once."""
        self.start(document(hook(1)), holdReads=True)
        first = self.reloader.reload()
        queued = [self.reloader.reload() for _ in range(3)]
        self.assertEqual(len(self.reads), 1)
        self.write(document(hook(1), hook(2)))
        self.reads[0].callback(read_config(self.path))
        self.successResultOf(first)
        self.assertEqual(len(self.reads), 2)
        for d in queued:
            self.assertNoResult(d)
        self.write(document(hook(1), hook(2), hook(3)))
        self.reads[1].callback(read_config(self.path))
        for d in queued:
            self.successResultOf(d)
        self.assertEqual(len(self.pipeline.dispatchers), 3)
        self.assertEqual(len(self.reads), 2)
        self.assertEqual(len([line for line in self.lines() if "when this one is done" in line]), 1)

    def test_stopDuringReadAppliesNothing(self) -> None:
        self.start(document(hook(1)), holdReads=True)
        d = self.reloader.reload()
        self.reloader.stopService()
        self.write(document(hook(1), hook(2)))
        self.reads[0].callback(read_config(self.path))
        self.successResultOf(d)
        self.assertEqual(len(self.pipeline.dispatchers), 1)

    def test_changedWebhookGetsNewClient(self) -> None:
        """A new timeout: a new dispatcher and client; the old client's attempt finishes first."""
        self.start(document(hook(1)))
        key = f"{FAIL}.webhooks[0]"
        oldDispatcher, oldClient = self.pipeline.dispatchers[key], self.pipeline.clients[key]
        self.alert()
        self.write(document(hook(1, timeout=2)))
        self.successResultOf(self.reloader.reload())
        self.assertIsNot(self.pipeline.dispatchers[key], oldDispatcher)
        self.assertIsNot(self.pipeline.clients[key], oldClient)
        self.assertEqual(self.pipeline.dispatchers[key].webhook.timeout, 2)
        self.assertEqual(oldDispatcher.inFlight, 1)
        self.reactor.advance(10)  # the old attempt times out on the old client: retried by the new one
        self.assertEqual(oldDispatcher.inFlight, 0)
        (pending,) = self.outbox.live.values()
        self.assertEqual((pending.webhookKey, pending.attempts), (key, 1))
        self.assertEqual(self.pipeline.dispatchers[key].queued, 1)
        (summary,) = [line for line in self.lines() if line.startswith("Reloaded")]
        self.assertIn("1 webhook changed", summary)
        self.assertIn("timeout 10 s -> 2 s, pending deliveries kept", summary)

    def test_stopWaitsForRetiredDispatchers(self) -> None:
        """An attempt still in flight on a replaced webhook's client gets the grace period at stop."""
        self.start(document(hook(1)))
        self.alert()
        self.write(document(hook(1, timeout=2)))
        self.successResultOf(self.reloader.reload())
        stopping = self.pipeline.service.stopService()
        self.assertNoResult(stopping)
        self.assertTrue(
            any(
                "waiting up to 10 s for 1 attempt in flight" in line
                for line in self.lines("butler_tw.service")
            )
        )
        self.reactor.advance(10)
        self.successResultOf(stopping)

    def test_ratesAndIntakeSettingsApplied(self) -> None:
        self.start(document(hook(1)))
        self.write(document(hook(1), maxMessageSize=256, deduplication={"enable": False}))
        self.successResultOf(self.reloader.reload())
        self.pipeline.admission.datagram(b"x" * 300, "10.0.0.9")
        self.assertTrue(
            any("larger than maxMessageSize (256 bytes)" in line for line in self.lines("butler_tw.gate"))
        )
        self.assertEqual(self.pipeline.dedup._ttl, 0)

    def test_allowedSourceNameKeepsLastAddresses(self) -> None:
        """A name that does not resolve at the reload keeps the addresses it had."""
        known = SourceFilter.from_entries(["qlik.example.com"])
        known.update({"qlik.example.com": ["10.0.0.9"]})
        doc = document(hook(1), enableSourceValidation=True, allowedSources=["qlik.example.com"])
        self.start(doc, sources=known, holdReads=True)
        d = self.reloader.reload()
        self.reads[0].callback(
            Loaded(load_config(self.path), {}, {"qlik.example.com": "Name or service not known"})
        )
        self.successResultOf(d)
        self.assertIsNot(self.pipeline.sources, known)
        self.assertTrue(self.pipeline.sources is not None and self.pipeline.sources.allows("10.0.0.9"))
        self.assertTrue(any("keeping its last addresses" in line for line in self.lines()))

    def test_allowedSourcesNoneUsableRefused(self) -> None:
        """Fail closed, as at start-up: an allow-list with nothing usable is not applied."""
        self.start(document(hook(1)), holdReads=True)
        self.write(document(hook(1), enableSourceValidation=True, allowedSources=["nowhere.invalid"]))
        d = self.reloader.reload()
        self.reads[0].callback(
            Loaded(load_config(self.path), {}, {"nowhere.invalid": "Name or service not known"})
        )
        self.successResultOf(d)
        self.assertIsNone(self.pipeline.sources)
        self.assertTrue(any("no entry is usable" in line and KEEPING in line for line in self.lines()))
