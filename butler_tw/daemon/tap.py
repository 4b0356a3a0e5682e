"""``twistd butler-webhook``: options, start-up checks, and the service tree.

The start-up checks (:func:`butler_tw.daemon.startup.check`, the same as
``butler-tw check-config``'s) run in ``Options.postOptions``, before twistd
daemonises, so that every problem is printed on the terminal, one line each,
and the exit status is :data:`~butler_tw.daemon.startup.EX_CONFIG`.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from twisted.application import internet, service
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python import usage

from butler_tw import __version__
from butler_tw.config import Config
from butler_tw.config.model import transport_summary
from butler_tw.core.sources import SourceFilter
from butler_tw.core.stats import Stats
from butler_tw.core.words import count
from butler_tw.daemon.logsetup import configure as configure_logging
from butler_tw.daemon.pipeline import Pipeline
from butler_tw.daemon.reloader import Reloader
from butler_tw.daemon.startup import DEFAULT_CONFIG, EX_CONFIG, StartupError, check, hostport, listen_problem
from butler_tw.delivery.outbox import IOutbox
from butler_tw.delivery.stores.memory import MemoryOutbox
from butler_tw.delivery.stores.sqlite import SqliteOutbox, StoreError, connect, db_path
from butler_tw.intake.resolve import RESOLVE_EVERY
from butler_tw.intake.udp import LogAppenderProtocol
from butler_tw.web.health import WebhookState, report
from butler_tw.web.metrics import ButlerCollector, registry_for, webhook_labels
from butler_tw.web.site import HttpService, make_site

log = Logger(namespace="butler_tw")

#: Largest datagram read whole (listenUDP's default of 8192 truncates silently).
MAX_PACKET_SIZE = 65535


class Options(usage.Options):
    synopsis = f"[--config {DEFAULT_CONFIG}]"
    longdesc = (
        "Receive Qlik Sense reload failure and abort datagrams and deliver them to webhooks. "
        "Runs the checks of `butler-tw check-config` first: a problem is printed and the exit "
        f"status is {EX_CONFIG}."
    )
    optParameters = [
        [
            "config",
            "c",
            DEFAULT_CONFIG,
            "Butler config file (YAML) to read: the same production.yaml Butler uses.",
        ],
    ]
    optFlags = [
        [
            "in-memory-outbox",
            None,
            "Keep pending deliveries in memory only (for benchmarks: nothing survives a restart).",
        ],
    ]

    config: Config
    sources: SourceFilter | None = None

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config needs the Butler production.yaml to read")
        try:
            checked = check(self["config"], stateDir=not self["in-memory-outbox"])
            if not self["in-memory-outbox"] and not checked.config.store.shared:
                connect(checked.config.stateDir).close()  # what the checks cannot foresee stops us here
        except (StartupError, StoreError) as e:
            # twistd prints the whole usage text for a UsageError; an admin
            # wants just the problems, on stderr, one line each, and EX_CONFIG.
            problems = e.problems if isinstance(e, StartupError) else (str(e),)
            for problem in problems:
                sys.stderr.write(f"butler-webhook: {problem}\n")
            raise SystemExit(EX_CONFIG) from None
        config = self.config = checked.config
        self.listenAddress = checked.udpAddress
        self.sources = checked.sources
        self.unresolved = checked.unresolved
        self.storeUnreachable = checked.storeUnreachable
        if self.parent is not None:  # under twistd
            configure_logging(self.parent, config.logFormat, config.logLevel)
            # SIGHUP means "reload", never "die": ignored until the reloader takes it
            # at start-up, and again once it gives it back at stop.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)


class UDPServer(internet.UDPServer):
    """``internet.UDPServer`` whose failure to bind is one line and :data:`EX_CONFIG`, not a traceback.

    The start-up checks have bound the port already; this is for a port
    taken in between.
    """

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()  # type: ignore[no-untyped-call]
        except CannotListenError as e:
            log.critical(
                "{problem}. Stopping", problem=listen_problem("UDP", e.interface, e.port, e.socketError)
            )
            raise SystemExit(EX_CONFIG) from None


def makeService(options: Options) -> service.IService:
    from twisted.internet import reactor

    config = options.config
    log_startup(config)
    stats = Stats()
    outbox = make_outbox(
        config, reactor, options["in-memory-outbox"], getattr(options, "storeUnreachable", None)
    )
    configPath = os.path.abspath(options["config"])
    pipeline = Pipeline(reactor, config, outbox, stats, getattr(options, "sources", None), configPath)
    for name, why in sorted(getattr(options, "unresolved", {}).items()):
        log.warn(
            "Allowed source {name} does not resolve ({why}): datagrams from it are refused until it does "
            "(tried again every {every:g} s)",
            name=name,
            why=why,
            every=RESOLVE_EVERY,
        )

    top = service.MultiService()
    pipeline.service.setServiceParent(top)
    intake = LogAppenderProtocol(
        pipeline.admission.datagram,
        receiveBuffer=config.receiveBuffer,
        reactor=reactor,
        intakeProcess=config.intakeProcess,
        onDropped=lambda n: stats.incr("datagrams_rejected", "intake_overflow", n),
    )
    udp = UDPServer(  # type: ignore[no-untyped-call]
        config.udpPort,
        intake,
        interface=options.listenAddress,
        maxPacketSize=MAX_PACKET_SIZE,
    )
    udp.setServiceParent(top)
    if config.httpListen:
        http_service(reactor, config.httpListen, pipeline, outbox, stats, intake).setServiceParent(top)
    listening = hostport(options.listenAddress, config.udpPort)
    Reloader(reactor, configPath, pipeline, listening).setServiceParent(top)
    reactor.callWhenRunning(  # type: ignore[attr-defined]
        log.info,
        "butler-tw is running: {webhooks}, UDP {host}:{port}",
        butler_tw_lifecycle=True,
        n=len(config.webhooks),
        webhooks=count(len(config.webhooks), "webhook", "webhooks"),
        host=options.listenAddress,
        port=config.udpPort,
    )
    # Always there: a reload may bring host names into the allow-list.
    refresh = internet.TimerService(RESOLVE_EVERY, pipeline.refreshSources)  # type: ignore[no-untyped-call]
    refresh.setServiceParent(top)
    return top


def make_outbox(config: Config, reactor: Any, inMemory: bool, unreachable: str | None = None) -> IOutbox:
    """The outbox the config asks for, and a line saying which."""
    if inMemory:
        log.warn("Outbox in memory only (--in-memory-outbox): pending deliveries do not survive a restart")
        return MemoryOutbox()
    if config.store.shared:
        from butler_tw.delivery.stores.postgres import PostgresOutbox

        log.info(
            "Outbox: PostgreSQL {where}, shared; this daemon is instance {name!r} (leases of {lease:g} s)",
            where=config.store.loggable,
            name=config.instanceName,
            lease=config.leaseSeconds,
        )
        if unreachable:
            log.error(
                "Outbox: {why}. Starting anyway: alerts are kept in memory (at most "
                "butlerWebhook.maxBufferedAlerts) and written once it answers",
                why=unreachable,
            )
        return PostgresOutbox(
            config.store.dsn,
            config.store.loggable,
            config.instanceName,
            reactor,
            config.leaseSeconds,
            config.deadLetterRetention,
        )
    if config.storeProcess:
        from butler_tw.delivery.stores.outboxprocess import OutboxProcess

        log.info(
            "Outbox: {path}, written by a process of its own", path=os.path.abspath(db_path(config.stateDir))
        )
        return OutboxProcess(config.stateDir, reactor, config.deadLetterRetention)
    log.info("Outbox: {path}", path=os.path.abspath(db_path(config.stateDir)))
    return SqliteOutbox(config.stateDir, reactor, config.deadLetterRetention)


def http_service(
    reactor: Any, listen: str, pipeline: Pipeline, outbox: IOutbox, stats: Stats, intake: LogAppenderProtocol
) -> service.IService:
    """/metrics, /health and /deliveries on ``listen``, reading the live pipeline (it changes at a reload)."""

    def storeWritable() -> bool:
        return bool(outbox.healthy)

    def health() -> tuple[int, dict[str, Any]]:
        labels = webhook_labels(pipeline.config.webhooks)
        states = [
            WebhookState(
                name=labels.get(key, key),
                key=key,
                health=d.health,
                queued=d.queued,
                inFlight=d.inFlight,
                oldestPendingAt=d.oldestPendingAt(),
                waitingInOutbox=d.waitingInOutbox,
            )
            for key, d in pipeline.dispatchers.items()
        ]
        return report(
            reactor.seconds(),
            intake.listeningOn is not None,
            intake.listeningOn or "",
            storeWritable(),
            outbox.lastError,
            states,
            pipeline.admission.lastShedAt,
            pipeline.admission.backlogged,
            pipeline.admission.lastSourceLimitedAt,
            not_sending(pipeline.config),
            cluster=outbox.cluster,
            instance=pipeline.config.instanceName if outbox.shared else None,
            leaseSeconds=pipeline.config.leaseSeconds,
        )

    collector = ButlerCollector(
        stats,
        lambda: pipeline.config.webhooks,
        pipeline.dispatchers,
        storeWritable,
        lambda: intake.listeningOn is not None,
        reactor.seconds,
        lambda: pipeline.admission.unstored,
        lambda: int(outbox.writeErrors),
        lambda: outbox.cluster,
    )
    site = make_site(
        registry_for(collector), health, outbox, lambda: webhook_labels(pipeline.config.webhooks)
    )
    return HttpService(reactor, listen, site)


def not_sending(config: Config) -> str | None:
    """Why no alert can go out at all, if so."""
    if not config.notificationsEnabled:
        return "Butler.webhookNotification.enable is false: alerts are received and counted only"
    if not config.webhooks:
        return "no webhook is configured: alerts are received and counted only"
    return None


def log_startup(config: Config) -> None:
    """What an admin needs to see once at start: what is on, what is off, what is unsafe."""
    log.info("butler-tw {version} starting", version=__version__)
    if config.ignored:
        log.info(
            "Ignoring config sections this daemon does not use: {sections}",
            sections=", ".join(config.ignored),
        )
    for warning in config.warnings():
        log.warn("{warning}", warning=warning)
    if config.sourceValidation:
        log.info(
            "Reading datagrams only from: {sources}",
            sources=", ".join(str(s) for s in config.allowedSources),
        )
    if config.sourceRateLimit:
        log.info("At most {n} datagrams per minute from each source address", n=config.sourceRateLimit)
    for kind, route in config.routes.items():
        limit = (
            f"at most one alert per task per {route.rateLimit:g} s"
            if route.rateLimit > 0
            else "no rate limit"
        )
        log.info(
            "{block}: {webhooks}, {limit}",
            block=kind.value,
            n=len(route.webhooks),
            webhooks=count(len(route.webhooks), "webhook", "webhooks"),
            limit=limit,
        )
        for w in route.webhooks:
            log.info(
                "  {key}: {name} -> {method} {url} ({transport}, timeout {timeout:g} s)",
                key=w.key,
                name=w.description or "(no description)",
                method=w.method,
                url=w.loggableUrl,
                transport=transport_summary(w),
                timeout=w.timeout,
            )
