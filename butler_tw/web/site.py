"""``butlerWebhook.http.listen``: /metrics, /health and /deliveries, served with twisted.web.

Read-only and unauthenticated: listen on 127.0.0.1 (or a management network)
only. Every answer is computed from the live parts on the reactor thread;
/deliveries reads the outbox on its own thread, never blocking the reactor.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from butler_tw.core.delivery import Delivery, State, shown_key
from butler_tw.daemon.startup import EX_CONFIG, listen_problem
from butler_tw.delivery.outbox import IOutbox
from butler_tw.web.health import iso

log = Logger(namespace="butler_tw.web")

MAX_LIMIT = 1000


def _json(request: Request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"


class _Leaf(Resource):
    isLeaf = True
    allowedMethods = (b"GET", b"HEAD")


class MetricsPage(_Leaf):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self._registry)


class HealthPage(_Leaf):
    def __init__(self, report: Callable[[], tuple[int, dict[str, Any]]]) -> None:
        super().__init__()
        self._report = report

    def render_GET(self, request: Request) -> bytes:
        status, body = self._report()
        return _json(request, status, body)


def delivery_json(d: Delivery, names: dict[str, str]) -> dict[str, Any]:
    a = d.alert
    return {
        "id": f"{a.alertId}/{shown_key(d.webhookKey)}",
        "alertId": a.alertId,
        "event": a.event,
        "taskName": a.taskName,
        "taskId": a.taskId,
        "hostName": a.hostName,
        "executionId": a.executionId,
        "webhook": names.get(d.webhookKey, shown_key(d.webhookKey)),
        "webhookKey": shown_key(d.webhookKey),
        "state": d.state.value,
        "attempts": d.attempts,
        "lastOutcome": d.lastOutcome,
        "acceptedAt": iso(d.acceptedAt),
        "nextAttemptAt": iso(d.dueAt) if d.state is State.PENDING else None,
    }


class DeliveriesPage(_Leaf):
    """``/deliveries?state=pending|dead&limit=N``: what ``butler-tw deliveries`` shows, grouped by alert."""

    def __init__(self, outbox: IOutbox, names: Callable[[], dict[str, str]]) -> None:
        super().__init__()
        self._outbox = outbox
        self._names = names

    def render_GET(self, request: Request) -> bytes | int:
        args = request.args or {}
        stateArg = (args.get(b"state") or [b""])[0].decode("ascii", "replace")
        limitArg = (args.get(b"limit") or [b"100"])[0].decode("ascii", "replace")
        try:
            state = State(stateArg) if stateArg else None
            if state is State.DELIVERED:
                raise ValueError("delivered")
            limit = int(limitArg)
            if not 1 <= limit <= MAX_LIMIT:
                raise ValueError("limit")
        except ValueError:
            return _json(
                request,
                400,
                {"error": f"state must be pending or dead, limit a number from 1 to {MAX_LIMIT}"},
            )

        if not self._outbox.healthy:
            return _json(request, 503, {"error": "the outbox cannot be read or written now; see /health"})
        finished: list[bool] = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))

        def done(rows: list[Delivery]) -> None:
            if finished:
                return  # the client went away
            names = self._names()
            alerts: dict[str, dict[str, Any]] = {}
            for d in rows:
                entry = alerts.setdefault(
                    d.alert.alertId,
                    {
                        "alertId": d.alert.alertId,
                        "event": d.alert.event,
                        "taskName": d.alert.taskName,
                        "taskId": d.alert.taskId,
                        "acceptedAt": iso(d.acceptedAt),
                        "deliveries": [],
                    },
                )
                entry["deliveries"].append(delivery_json(d, names))
            body = {"deliveries": len(rows), "alerts": list(alerts.values())}
            request.write(_json(request, 200, body))
            request.finish()

        def failed(f: Failure) -> None:
            log.error("Could not read the outbox for /deliveries: {error}", error=str(f.value))
            if finished:
                return
            request.write(_json(request, 503, {"error": "the outbox could not be read"}))
            request.finish()

        self._outbox.recent(state, limit).addCallbacks(done, failed)
        return NOT_DONE_YET


class Root(Resource):
    def render_GET(self, request: Request) -> bytes:
        return _json(request, 200, {"endpoints": ["/metrics", "/health", "/deliveries"]})


class _QuietSite(Site):
    """No access-log line per request: a scrape every 15 s would write thousands a day."""

    def log(self, request: Any) -> None:
        pass


def make_site(
    registry: CollectorRegistry,
    health: Callable[[], tuple[int, dict[str, Any]]],
    outbox: IOutbox,
    names: Callable[[], dict[str, str]],
) -> Site:
    root = Root()
    root.putChild(b"metrics", MetricsPage(registry))
    root.putChild(b"health", HealthPage(health))
    root.putChild(b"deliveries", DeliveriesPage(outbox, names))
    site = _QuietSite(root)
    site.noisy = False
    site.displayTracebacks = False
    return site


class HttpService(StreamServerEndpointService):
    """Listens on ``butlerWebhook.http.listen``; a port that cannot be had stops the start-up."""

    def __init__(self, reactor: Any, listen: str, site: Site) -> None:
        super().__init__(serverFromString(reactor, listen), site)
        self._raiseSynchronously = True
        self.description = listen

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            # One line and EX_CONFIG, not a traceback: as the start-up checks
            # say it (they tried the port; this is for one taken in between,
            # or an endpoint kind they do not try).
            interface = e.interface
            if isinstance(e.port, int) and not interface:
                interface = "0.0.0.0"  # noqa: S104 - describing, not binding
            problem = listen_problem(
                "HTTP",
                interface,
                e.port,
                e.socketError,
                f" (butlerWebhook.http.listen {self.description!r})",
            )
            log.critical("{problem}. Stopping", problem=problem)
            raise SystemExit(EX_CONFIG) from None
        self._waitingForPort.addCallback(self._listening)  # type: ignore[union-attr]

    def _listening(self, port: Any) -> Any:
        host = port.getHost()
        log.info(
            "Serving /metrics, /health and /deliveries on http://{host}:{port}/",
            host=getattr(host, "host", "?"),
            port=getattr(host, "port", "?"),
        )
        return port
