"""The README's loop, every command run as a user runs it: each ``butler-tw`` a process of its own.

``butler-tw check-config`` on the shipped example and on the test's config,
``butler-tw receive`` as the webhook receiver, ``twistd butler-webhook`` as
the daemon, ``butler-tw emit`` standing in for Qlik Sense, then
``butler-tw deliveries`` to look at the outbox.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.daemon import REPO, Daemon, make_config, webhook
from tests.support.processes import Collect, kill, subprocess_env
from tests.support.receivers import closed_port

CLI = [sys.executable, "-m", "butler_tw.cli"]


def butler_tw(*args: str) -> Any:
    """Fires with (stdout, stderr, exit status) of ``butler-tw ARGS``."""
    return getProcessOutputAndValue(CLI[0], [*CLI[1:], *args], env=subprocess_env(), path=str(REPO))


class QuickStartTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_exampleConfigIsValid(self) -> Any:
        # check-config tries the example's UDP port, as the daemon would: it must be free here.
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(("127.0.0.1", 9998))
        except OSError as e:
            raise SkipTest(f"the example's UDP port 127.0.0.1:9998 is not free on this host ({e})") from None
        finally:
            probe.close()
        out, err, status = yield butler_tw("check-config", os.path.join("config", "butler.example.yaml"))
        self.assertEqual((status, err), (0, b""), out)
        self.assertIn(b"config/butler.example.yaml: valid", out)

    @inlineCallbacks
    def test_receiveDaemonEmitDeliveries(self) -> Any:
        port = closed_port()
        receiver = Collect()
        transport = reactor.spawnProcess(  # type: ignore[attr-defined]
            receiver,
            CLI[0],
            [*CLI, "receive", "--port", str(port)],
            env=subprocess_env(),
        )
        self.addCleanup(lambda: receiver.ended if receiver.ended.called else kill(transport, receiver))
        yield receiver.waitFor(b"Ctrl-C stops")

        daemon = Daemon(
            self,
            make_config(
                failure=[webhook(f"http://127.0.0.1:{port}/butler/failed", "POST", "Local receiver")],
                aborted=[webhook(f"http://127.0.0.1:{port}/butler/aborted", "GET", "Local receiver")],
            ),
        )
        out, err, status = yield butler_tw("check-config", daemon.configPath)
        self.assertEqual((status, err), (0, b""), out)
        self.assertIn(b"reloadTaskFailure.webhooks[0]: Local receiver", out)
        yield daemon.start()

        out, err, status = yield butler_tw("emit", f"127.0.0.1:{daemon.udpPort}", "--count", "2")
        self.assertEqual((status, err), (0, b""), out)
        out, err, status = yield butler_tw("emit", f"127.0.0.1:{daemon.udpPort}", "--event", "aborted")
        self.assertEqual(status, 0, err)
        yield receiver.waitFor(b"GET /butler/aborted")
        yield receiver.waitFor(b"POST /butler/failed")
        # emit sends two failures of one task: the rate limit lets the first through.
        yield daemon.waitForOutput("rate limited")

        out, err, status = yield butler_tw("deliveries", "--config", daemon.configPath)
        self.assertEqual((status, err), (0, b""), out)
        self.assertIn(b"no pending or dead deliveries", out.lower())

        yield daemon.stopCleanly()
        transport.signalProcess("INT")
        status = yield receiver.ended
        self.assertEqual(status, 0)
        text = receiver.out.decode()
        self.assertEqual(text.count("POST /butler/failed"), 1, text)
        self.assertEqual(text.count("GET /butler/aborted"), 1, text)
        self.assertIn('"event": "Qlik Sense reload failed"', text)
        self.assertIn("butler-tw receive: stopped, 2 requests received", text)
