"""SIGHUP: re-read the config file and apply it without a restart.

The file is read and validated off the reactor thread (it may name CA files,
and allowed sources may be host names to resolve); only a valid file is
applied, in one reactor turn, by :meth:`Pipeline.apply`. An invalid one
changes nothing: every problem is logged, and the daemon goes on with the
configuration it has. Reloads never overlap: a SIGHUP during one queues one
more.
"""

from __future__ import annotations

import signal
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet import threads
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger

from butler_tw.config import ConfigError
from butler_tw.config.reloadplan import new_warnings, plan_reload, restart_warnings, summary
from butler_tw.core.words import count
from butler_tw.daemon.pipeline import Pipeline
from butler_tw.daemon.startup import Loaded, StartupError, allowed_sources, read_config

log = Logger(namespace="butler_tw.reload")

KEEPING = "keeping the running configuration"


class Reloader(Service):
    """Reloads the configuration on SIGHUP (``systemctl reload``).

    Twisted's reactor handles SIGINT and SIGTERM, not SIGHUP: the handler is
    installed at start and the previous one put back at stop. It only hops
    to the reactor thread (:meth:`reload` runs there).

    :param path: the config file, as given to ``--config``.
    :param listening: where the UDP port is bound (``host:port``), for the
        warning when the file asks for another address.
    :param read: reads and checks the file; run in a thread by ``inThread``.
    :param setSignal: ``signal.signal``, or a fake in tests.
    """

    def __init__(
        self,
        reactor: Any,
        path: str,
        pipeline: Pipeline,
        listening: str,
        read: Callable[[str], Loaded] = read_config,
        inThread: Callable[..., Deferred[Any]] = threads.deferToThread,
        setSignal: Callable[..., Any] = signal.signal,
    ) -> None:
        self._reactor = reactor
        self._path = path
        self._pipeline = pipeline
        self._started = pipeline.config
        self._listening = listening
        self._read = read
        self._inThread = inThread
        self._setSignal = setSignal
        self._previousHandler: Any = None
        self._installed = False
        self._busy = False
        self._queued: list[Deferred[None]] = []

    def startService(self) -> None:
        super().startService()
        self._previousHandler = self._setSignal(signal.SIGHUP, self._onSignal)
        self._installed = True

    def stopService(self) -> None:
        """Put the previous SIGHUP handler back. A reload in progress is not applied."""
        super().stopService()
        if self._installed:
            self._installed = False
            # None: the previous handler was not set from Python (the default, then).
            self._setSignal(signal.SIGHUP, self._previousHandler or signal.SIG_DFL)

    def _onSignal(self, signum: int, frame: Any) -> None:
        # In a signal handler: do nothing but wake the reactor.
        self._reactor.callFromThread(self.reload)

    def reload(self) -> Deferred[None]:
        """Reload now, or once the reload in progress has ended.

        Any number of requests during one reload make one more reload.
        Fires when the reload that covers this request has ended (applied
        or refused); never fails.
        """
        done: Deferred[None] = Deferred()
        if self._busy:
            if not self._queued:
                log.info(
                    "SIGHUP during a reload: reading {path} again when this one is done", path=self._path
                )
            self._queued.append(done)
        else:
            self._run([done])
        return done

    def _run(self, waiting: list[Deferred[None]]) -> None:
        self._busy = True

        def finished(_: object) -> None:
            self._busy = False
            for d in waiting:
                d.callback(None)
            if self._queued:
                again, self._queued = self._queued, []
                if self.running:
                    self._run(again)
                else:
                    for d in again:
                        d.callback(None)

        self._reloadOnce().addErrback(
            lambda f: log.failure("Reloading {path} failed; {keeping}", f, path=self._path, keeping=KEEPING)
        ).addBoth(finished)

    @inlineCallbacks
    def _reloadOnce(self):  # type: ignore[no-untyped-def]
        log.info("SIGHUP: reading {path}", path=self._path, butler_tw_lifecycle=True)
        running = self._pipeline.config
        try:
            loaded = yield self._inThread(self._read, self._path)
            sources = allowed_sources(loaded, self._pipeline.sources)
        except (ConfigError, StartupError) as e:  # StartupError: no allowed source is usable
            self._refuse(e)
            return
        if not self.running:
            return  # stopping: nothing to apply it to
        plan = plan_reload(running, loaded.config, started=self._started)
        rebinding = yield self._pipeline.apply(plan, loaded.config, sources)
        log.info("{summary}", summary=summary(self._path, plan, rebinding), butler_tw_lifecycle=True)
        for warning in restart_warnings(plan, self._listening):
            log.warn("{detail}", detail=warning)
        for warning in new_warnings(running, loaded.config):
            log.warn("{detail}", detail=warning)
        for name, why in sorted(loaded.unresolved.items()):
            known = sources is not None and bool(sources.names.get(name))
            log.warn(
                "Allowed source {name} does not resolve ({why}): "
                + ("keeping its last addresses" if known else "datagrams from it are refused until it does"),
                name=name,
                why=why,
            )

    def _refuse(self, error: ConfigError | StartupError) -> None:
        log.error(
            "Not reloading {path}: {problems} in the configuration; {keeping}",
            path=self._path,
            problems=count(len(error.problems), "problem", "problems"),
            n=len(error.problems),
            keeping=KEEPING,
        )
        for problem in error.problems:
            log.error("  {path}: {problem}; {keeping}", path=self._path, problem=problem, keeping=KEEPING)
