"""The allow-list's host names, resolved: blocking at start-up and at a reload, and every few minutes.

The names and the decision are in :mod:`butler_tw.core.sources`; this is the
DNS part. A name that stops resolving keeps its last known addresses, so a
DNS hiccup neither opens nor closes the gate.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Iterable, Mapping

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from butler_tw.core.sources import SourceFilter

log = Logger(namespace="butler_tw.sources")

#: How often host names in the allow-list are resolved again.
RESOLVE_EVERY = 300.0


def resolve_blocking(name: str) -> list[str]:
    """Every address ``name`` resolves to (IPv4 and IPv6). Blocks: call off the reactor."""
    infos = socket.getaddrinfo(name, None, type=socket.SOCK_DGRAM)
    return sorted({str(info[4][0]) for info in infos})


def resolve_all(
    names: Iterable[str], resolve: Callable[[str], list[str]] = resolve_blocking
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Resolve each name, blocking: (name -> addresses, name -> why it did not resolve)."""
    failed: dict[str, str] = {}
    resolved: dict[str, list[str]] = {}
    for name in names:
        try:
            resolved[name] = resolve(name)
        except OSError as e:
            failed[name] = e.strerror or str(e)
    return resolved, failed


def update(sources: SourceFilter, resolved: Mapping[str, Iterable[str]]) -> None:
    """:meth:`~butler_tw.core.sources.SourceFilter.update`, logging each name that moved."""
    for name, addresses in sources.update(resolved).items():
        log.info(
            "Allowed source {name} now resolves to {addresses}",
            name=name,
            addresses=", ".join(sorted(map(str, addresses))),
        )


def refresh(sources: SourceFilter, resolve: Callable[[str], Deferred[list[str]]]) -> Deferred[None]:
    """Resolve every name of ``sources`` again; failures keep the old addresses and are logged."""
    names = list(sources.names)

    def done(results: list[tuple[bool, Any]]) -> None:
        resolved: dict[str, list[str]] = {}
        for name, (ok, value) in zip(names, results, strict=True):
            if ok and isinstance(value, list) and value:
                resolved[name] = value
            else:
                log.warn(
                    "Allowed source {name} did not resolve ({error}); keeping its last addresses",
                    name=name,
                    error=getattr(getattr(value, "value", None), "strerror", None) or "no address",
                )
        update(sources, resolved)

    d = DeferredList([resolve(name) for name in names], consumeErrors=True)
    return d.addCallback(done)
