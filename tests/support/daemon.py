"""Run ``twistd -n --pidfile= butler-webhook`` as a real subprocess, for end-to-end tests.

A :class:`Daemon` writes a Butler YAML config into a fresh temporary
directory, picks a free UDP port for it, starts the ``twistd`` next to the
running interpreter with ``reactor.spawnProcess`` (``PYTHONPATH`` set to the
repository root, so the working tree is what runs), collects everything it
prints, sends it datagrams over real UDP, and stops it with SIGTERM, using
SIGKILL if it has not exited within a bounded time. Every wait is bounded,
and the process is always reaped on cleanup, so trial never sees a dirty
reactor::

    daemon = Daemon(self, make_config(failure=[webhook(receiver.url("/hook"))]))
    yield daemon.start()
    daemon.send(DATAGRAM)
    yield within(receiver.waitForRequests(1), 20, "the delivery", daemon)
    exit = yield daemon.stop()
    self.assertIn("Stopped. Counters", exit.output)

Its ``stateDir`` is ``<directory>/state``, written into the config as an
absolute path (:attr:`Daemon.outboxPath` is the SQLite file), so that
``butler-tw`` run from the test finds it. For restarts, :meth:`Daemon.kill`
ends it with SIGKILL and :meth:`Daemon.successor` makes a second daemon on the
same directory, config, state and UDP port::

    exit = yield daemon.kill()
    again = daemon.successor(self)
    yield again.start()

For a configuration reload, :meth:`Daemon.rewrite` replaces the file and
:meth:`Daemon.hangup` sends SIGHUP::

    daemon.rewrite(make_config(failure=[...]))
    mark = daemon.hangup()
    yield daemon.waitForOutput("Reloaded", since=mark)
"""

from __future__ import annotations

import ast
import io
import os
import re
import signal
import socket
import sqlite3
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import attrs
import yaml
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from butler_tw.cli.main import main as butler_tw
from tests.support import DATA, REPO

SAMPLES = DATA / "datagrams.txt"
HOST = "127.0.0.1"

#: What the daemon logs once its UDP port is open.
LISTENING = "Listening for Qlik Sense log-appender datagrams"
#: What the daemon logs once the reactor runs (signal handlers installed: SIGTERM is a clean stop).
READY = "butler-tw is running"
#: What the daemon logs as the last thing its service does on a clean stop.
STOPPED = "Stopped. Counters"

#: Seconds allowed for start-up (imports, config, binding the port).
START_TIMEOUT = 20.0
#: Seconds after SIGTERM before SIGKILL.
STOP_TIMEOUT = 20.0
#: Seconds allowed for a process to end after SIGKILL.
KILL_TIMEOUT = 5.0


def twistd() -> str:
    """The ``twistd`` script installed next to the running interpreter."""
    return os.path.join(os.path.dirname(sys.executable), "twistd")


def sample_datagrams() -> list[bytes]:
    """The example datagrams, one per line, exactly as a Qlik node sends them."""
    return [line for line in SAMPLES.read_bytes().split(b"\n") if line.strip()]


def free_udp_port() -> int:
    """A loopback UDP port that was free a moment ago."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]  # type: ignore[no-any-return]
    finally:
        s.close()


# --------------------------------------------------------------------------
# Config


def webhook(url: str, method: str = "POST", description: str | None = None, **extra: Any) -> dict[str, Any]:
    """One entry of a ``webhooks`` list; ``extra`` adds keys such as ``cert``."""
    entry: dict[str, Any] = {"webhookURL": url, "httpMethod": method}
    if description is not None:
        entry["description"] = description
    entry.update(extra)
    return entry


def make_config(
    failure: Sequence[Mapping[str, Any]] = (),
    aborted: Sequence[Mapping[str, Any]] = (),
    enable: bool = True,
    rateLimit: float = 300,
    butlerWebhook: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Butler config document (``udpServerConfig`` is filled in by :class:`Daemon`)."""
    doc: dict[str, Any] = {
        "Butler": {
            "logLevel": "info",
            "webhookNotification": {
                "enable": enable,
                "reloadTaskFailure": {"rateLimit": rateLimit, "webhooks": [dict(w) for w in failure]},
                "reloadTaskAborted": {"rateLimit": rateLimit, "webhooks": [dict(w) for w in aborted]},
            },
        },
        "butlerWebhook": {"shutdownGracePeriod": 5},
    }
    if butlerWebhook is not None:
        doc["butlerWebhook"] = dict(butlerWebhook)
    return doc


# --------------------------------------------------------------------------
# The process


class DaemonError(Exception):
    """The daemon did not do what was waited for; the message holds its output."""


@attrs.frozen
class Exit:
    """How the daemon ended.

    :ivar exitCode: its exit status, or ``None`` when a signal ended it.
    :ivar signal: the signal that ended it, or ``None``.
    :ivar killed: whether it had to be killed with SIGKILL after the timeout.
    :ivar seconds: seconds from SIGTERM (or, if none was sent, from the
        start) to the end.
    :ivar stdout: everything it wrote on stdout, decoded (UTF-8, replaced).
    :ivar stderr: everything it wrote on stderr.
    """

    exitCode: int | None
    signal: int | None
    killed: bool
    seconds: float
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class _Protocol(ProcessProtocol):
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def outReceived(self, data: bytes) -> None:
        self._daemon._received(1, data)

    def errReceived(self, data: bytes) -> None:
        self._daemon._received(2, data)

    def processEnded(self, reason: Failure) -> None:
        self._daemon._ended(reason)


class Daemon:
    """One ``twistd butler-webhook`` subprocess, killed and reaped on cleanup.

    :param config: the config document (see :func:`make_config`); unless it
        has its own, a ``Butler.udpServerConfig`` listening on
        ``127.0.0.1:``:attr:`udpPort` is added.
    :param environ: environment variables added to the process's (a
        successor has its predecessor's).
    """

    def __init__(
        self,
        testCase: TestCase,
        config: Mapping[str, Any] | None,
        reactor: Any = None,
        previous: Daemon | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self._reactor = reactor
        #: Extra environment variables of the process (``${env:...}`` secrets, say).
        self.environ: dict[str, str] = dict(previous.environ if previous is not None else environ or {})
        self.directory: str
        self.udpPort: int
        self.configPath: str
        self.stateDir: str
        if previous is not None:
            # The same directory, config file, state and UDP port: a restart.
            self.directory = previous.directory
            self.udpPort = previous.udpPort
            self.configPath = previous.configPath
            self.stateDir = previous.stateDir
        else:
            assert config is not None, "a config document, or previous="
            self.directory = os.path.abspath(testCase.mktemp())
            os.makedirs(self.directory)
            self.udpPort = free_udp_port()
            self.configPath = os.path.join(self.directory, "butler.yaml")
            self.udpPort, self.stateDir = self._write(config)
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._all = bytearray()
        self._waiters: list[tuple[bytes, int, Deferred[str]]] = []
        self._endWaiters: list[Deferred[Exit]] = []
        self._transport: Any = None
        self._exit: Exit | None = None
        self._startedAt = 0.0
        self._termAt: float | None = None
        self._killed = False
        self._killCall: Any = None
        testCase.addCleanup(self._cleanup)

    def _write(self, config: Mapping[str, Any]) -> tuple[int, str]:
        """Write ``config`` to :attr:`configPath`, completed; its UDP port and state directory."""
        doc = _deepcopy(config)
        butler = doc.setdefault("Butler", {})
        # Keys the test gives (hardening settings, say) are kept; the rest are filled in.
        udp = butler.setdefault("udpServerConfig", {})
        udp.setdefault("enable", True)
        udp.setdefault("serverHost", HOST)
        port = udp.setdefault("portTaskFailure", self.udpPort)
        # The daemon's default (./state in its working directory), made
        # absolute so that `butler-tw` run by the test finds it too.
        ours = doc.get("butlerWebhook")
        if ours is None:
            ours = doc["butlerWebhook"] = {}
        if isinstance(ours, dict):
            ours.setdefault("stateDir", os.path.join(self.directory, "state"))
            stateDir = os.path.join(self.directory, str(ours["stateDir"]))
        else:
            stateDir = os.path.join(self.directory, "state")
        with open(self.configPath, "w", encoding="utf-8") as f:
            yaml.safe_dump(doc, f, allow_unicode=True, sort_keys=False)
        return port, stateDir

    def rewrite(self, config: Mapping[str, Any]) -> None:
        """Replace the config file, completed as at start (same UDP port and stateDir unless given).

        The running daemon reads it at the next :meth:`hangup`.
        """
        self._write(config)

    def hangup(self) -> int:
        """SIGHUP (what ``systemctl reload`` sends); returns :meth:`mark`, to wait for what follows."""
        mark = self.mark()
        self._signal("HUP")
        return mark

    @property
    def outboxPath(self) -> str:
        """The daemon's SQLite outbox (``outbox.sqlite3`` in its ``stateDir``)."""
        return os.path.join(self.stateDir, "outbox.sqlite3")

    def successor(self, testCase: TestCase) -> Daemon:
        """A new, not yet started daemon on this one's directory, config, state and UDP port.

        Start it once this one has ended, to test what survives a restart.
        """
        return Daemon(testCase, None, self._reactor, previous=self)

    # -- output

    @property
    def output(self) -> str:
        """Everything printed so far, stdout and stderr interleaved as it came."""
        return self._all.decode("utf-8", "replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output.splitlines()[-lines:])

    def _received(self, fd: int, data: bytes) -> None:
        (self._stdout if fd == 1 else self._stderr).extend(data)
        self._all.extend(data)
        still = []
        for needle, since, d in self._waiters:
            if self._all.find(needle, since) >= 0:
                d.callback(self.output)
            else:
                still.append((needle, since, d))
        self._waiters = still

    def mark(self) -> int:
        """Where the output is now: give it to :meth:`waitForOutput` to wait for what comes after."""
        return len(self._all)

    def waitForOutput(self, text: str, timeout: float = START_TIMEOUT, since: int = 0) -> Deferred[str]:
        """Fires with the output once ``text`` is in it (after :meth:`mark` ``since``);
        fails on exit or after ``timeout``."""
        needle = text.encode("utf-8")
        if self._all.find(needle, since) >= 0:
            return succeed(self.output)
        if self._exit is not None:
            return _failed(DaemonError(f"the daemon exited without printing {text!r}:\n{self.tail()}"))
        entry: tuple[bytes, int, Deferred[str]]

        def cancel(d: Deferred[str]) -> None:
            if entry in self._waiters:
                self._waiters.remove(entry)

        d: Deferred[str] = Deferred(cancel)
        entry = (needle, since, d)
        self._waiters.append(entry)
        return within(d, timeout, f"the line {text!r}", self)

    # -- running

    def spawn(self) -> None:
        """Start the process (use :meth:`start` to also wait until it listens)."""
        assert self._transport is None, "already started"
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.environ)
        args = [twistd(), "-n", "--pidfile=", "butler-webhook", "--config", self.configPath]
        self._startedAt = time.monotonic()
        self._transport = self._reactor.spawnProcess(
            _Protocol(self), args[0], args, env=env, path=self.directory
        )
        self._transport.closeStdin()

    def start(self, timeout: float = START_TIMEOUT) -> Deferred[str]:
        """Spawn and wait for the "running" line; fires with the output so far.

        Not the "Listening" line: twistd binds the port before the reactor
        runs, and a SIGTERM before then kills the process uncleanly.
        """
        self.spawn()
        return self.waitForOutput(READY, timeout)

    def run(self, timeout: float = START_TIMEOUT) -> Deferred[Exit]:
        """Spawn and wait for the process to exit on its own (e.g. a config error)."""
        self.spawn()
        return within(self.ended(), timeout, "the daemon to exit by itself", self)

    def send(self, *datagrams: bytes | str) -> None:
        """Send each datagram to the daemon's UDP port, in order."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for datagram in datagrams:
                data = datagram.encode("utf-8") if isinstance(datagram, str) else datagram
                s.sendto(data, (HOST, self.udpPort))
        finally:
            s.close()

    def ended(self) -> Deferred[Exit]:
        """Fires with the :class:`Exit` once the process has ended."""
        if self._exit is not None:
            return succeed(self._exit)
        d: Deferred[Exit] = Deferred(lambda d: self._endWaiters.remove(d) if d in self._endWaiters else None)
        self._endWaiters.append(d)
        return d

    def stop(self, timeout: float = STOP_TIMEOUT) -> Deferred[Exit]:
        """SIGTERM; SIGKILL after ``timeout`` seconds; fires with the :class:`Exit`."""
        if self._transport is None:
            return _failed(DaemonError("the daemon was never started"))
        if self._exit is None and self._termAt is None:
            self._termAt = time.monotonic()
            self._signal("TERM")
            self._killCall = self._reactor.callLater(timeout, self._kill)
        return within(self.ended(), timeout + KILL_TIMEOUT, "the daemon to exit after SIGTERM", self)

    def stopCleanly(self) -> Deferred[Exit]:
        """SIGTERM; fails unless the daemon stopped by itself, said so, and raised nothing."""

        def check(exit: Exit) -> Exit:
            problems = [
                what
                for what, bad in (
                    ("needed SIGKILL", exit.killed),
                    (f"no {STOPPED!r} line", STOPPED not in exit.output),
                    ("an unhandled error", "Unhandled error" in exit.output),
                    ("a traceback", "Traceback" in exit.output),
                    ("a critical line", "#critical]" in exit.output),
                )
                if bad
            ]
            if problems:
                raise AssertionError(f"unclean stop ({', '.join(problems)}):\n{exit.output}")
            return exit

        return self.stop().addCallback(check)

    def kill(self, timeout: float = KILL_TIMEOUT) -> Deferred[Exit]:
        """SIGKILL at once (a crash: no clean-up at all); fires with the :class:`Exit`."""
        if self._transport is None:
            return _failed(DaemonError("the daemon was never started"))
        if self._exit is None:
            self._termAt = time.monotonic()
            self._killed = True
            self._signal("KILL")
        return within(self.ended(), timeout, "the daemon to exit after SIGKILL", self)

    def _signal(self, name: str) -> None:
        try:
            self._transport.signalProcess(name)
        except ProcessExitedAlready:
            pass

    def _kill(self) -> None:
        self._killCall = None
        if self._exit is None:
            self._killed = True
            self._signal("KILL")

    def _ended(self, reason: Failure) -> None:
        if self._killCall is not None and self._killCall.active():
            self._killCall.cancel()
        self._killCall = None
        exitCode: int | None = None
        sig: int | None = None
        if isinstance(reason.value, (ProcessDone, ProcessTerminated)):
            exitCode = reason.value.exitCode
            sig = reason.value.signal
        since = self._termAt if self._termAt is not None else self._startedAt
        self._exit = Exit(
            exitCode=exitCode,
            signal=sig,
            killed=self._killed,
            seconds=time.monotonic() - since,
            stdout=self._stdout.decode("utf-8", "replace"),
            stderr=self._stderr.decode("utf-8", "replace"),
        )
        waiters, self._waiters = self._waiters, []
        for needle, _, d in waiters:
            d.errback(
                DaemonError(
                    f"the daemon exited ({_describe(self._exit)}) without printing "
                    f"{needle.decode()!r}:\n{self.tail()}"
                )
            )
        endWaiters, self._endWaiters = self._endWaiters, []
        for d in endWaiters:
            d.callback(self._exit)

    def _cleanup(self) -> Deferred[Any] | None:
        if self._transport is None or self._exit is not None:
            return None
        # The test is over: no grace needed. SIGKILL if SIGTERM is not enough.
        return self.stop(timeout=5.0).addErrback(lambda _: None)


# --------------------------------------------------------------------------
# Waiting


def within(d: Deferred[Any], seconds: float, what: str, daemon: Daemon | None = None) -> Deferred[Any]:
    """``d``, failing with a :class:`DaemonError` (daemon output included) after ``seconds``."""
    from twisted.internet import reactor

    def timedOut(result: Any, timeout: float) -> Failure:
        text = f"gave up after {timeout:g} s waiting for {what}"
        if daemon is not None:
            text += f"; the daemon's last output:\n{daemon.tail()}"
        return Failure(DaemonError(text))

    return d.addTimeout(seconds, reactor, onTimeoutCancel=timedOut)


@inlineCallbacks
def until(
    predicate: Callable[[], Any],
    seconds: float,
    what: str,
    daemon: Daemon | None = None,
    interval: float = 0.1,
) -> Any:
    """Poll ``predicate`` every ``interval`` s; fires with its first true value.

    Fails with a :class:`DaemonError` (daemon output included) after ``seconds``.
    """
    from twisted.internet import reactor

    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = f"gave up after {seconds:g} s waiting for {what}"
            if daemon is not None:
                text += f"; the daemon's last output:\n{daemon.tail()}"
            raise DaemonError(text)
        yield deferLater(reactor, interval, lambda: None)


def query_outbox(path: str, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]] | None:
    """Rows of ``sql`` on the outbox at ``path``, opened read-only; ``None`` if
    the file is missing or busy (poll again)."""
    if not os.path.exists(path):
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return None
    try:
        return conn.execute(sql, tuple(args)).fetchall()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()


def deliveries_by_state(path: str) -> dict[str, int] | None:
    """``{"pending": n, "dead": m}`` from the outbox at ``path`` (delivered rows are deleted)."""
    rows = query_outbox(path, "SELECT state, count(*) FROM deliveries GROUP BY state")
    if rows is None:
        return None
    counts = {"pending": 0, "dead": 0}
    counts.update({state: n for state, n in rows})
    return counts


def _failed(e: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(e)
    return d


def _describe(exit: Exit) -> str:
    if exit.signal is not None:
        return f"signal {signal.Signals(exit.signal).name}"
    return f"status {exit.exitCode}"


def _deepcopy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_deepcopy(v) for v in value]
    return value


__all__: Iterable[str] = (
    "Daemon",
    "DaemonError",
    "Exit",
    "LISTENING",
    "STOPPED",
    "free_udp_port",
    "deliveries_by_state",
    "make_config",
    "query_outbox",
    "sample_datagrams",
    "twistd",
    "until",
    "webhook",
    "within",
)


def counters(output: str) -> dict[str, int]:
    """The counters from the daemon's last ``Stopped. Counters: {...}`` line."""
    found = re.findall(re.escape(STOPPED) + r": (\{.*\})", output)
    if not found:
        raise AssertionError(f"no {STOPPED!r} line in the output:\n{output}")
    return ast.literal_eval(found[-1])  # type: ignore[no-any-return]


def cli(*argv: str) -> tuple[int, str]:
    """Run ``butler-tw ARGV`` in-process; its exit status and output."""
    out = io.StringIO()
    return butler_tw(list(argv), out=out), out.getvalue()
