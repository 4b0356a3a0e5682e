"""``butler-tw check-config``: the daemon's start-up checks on a config file, and a summary of it.

The checks are :func:`butler_tw.daemon.startup.check`'s, exactly; the summary
holds no URL query, user info or header value.
"""

from __future__ import annotations

import os
from typing import TextIO
from urllib.parse import urlsplit

from butler_tw.cli.text import duration, tls_words
from butler_tw.config import Config, Webhook
from butler_tw.config.model import tls_extras
from butler_tw.core.sources import SourceFilter
from butler_tw.core.words import count
from butler_tw.daemon.startup import EX_CONFIG, StartupError, check, hostport
from butler_tw.delivery.stores.sqlite import db_path


def check_config(path: str, out: TextIO, err: TextIO, reload: bool = False) -> int:
    """Run the daemon's start-up checks on ``path`` and print a summary, or every problem.

    :param reload: leave out what a reload does not change (ports, stateDir).
    """
    try:
        checked = check(path, listen=not reload, stateDir=not reload)
    except StartupError as e:
        for problem in e.problems:
            err.write(f"butler-tw: {problem}\n")
        return EX_CONFIG
    out.write(
        describe_config(
            path,
            checked.config,
            checked.udpAddress,
            checked.sources,
            checked=not reload,
            storeUnreachable=checked.storeUnreachable,
        )
    )
    return 0


def _store_line(config: Config, checked: bool, unreachable: str | None) -> str:
    if not checked:
        state = "not checked: --reload"
    elif unreachable:
        state = f"{unreachable}; the daemon would start and keep alerts in memory until it answers"
    else:
        state = "connected, a schema this version knows (the daemon creates or migrates it), the name is free"
    return (
        f"outbox          PostgreSQL {config.store.loggable}, shared: this daemon is instance "
        f"{config.instanceName!r}, leases of {duration(config.leaseSeconds)} ({state})"
    )


def _udp_line(config: Config, address: str) -> str:
    line = hostport(config.udpHost, config.udpPort)
    if address != config.udpHost:
        line += f" (resolves to {address})"
    if address == "0.0.0.0":  # noqa: S104 - describing, not binding
        line += " (every IPv4 address)"
    elif address == "::":
        line += " (every IPv4 and IPv6 address)"
    return line


def _hidden(url: str) -> str:
    parts = urlsplit(url)
    hidden = [
        what for what, there in (("query string", parts.query), ("user info", "@" in parts.netloc)) if there
    ]
    return f"  ({' and '.join(hidden)} not shown)" if hidden else ""


def _sources_line(config: Config, sources: SourceFilter | None) -> str:
    if sources is None:
        return "any address (enableSourceValidation is off)"
    entries = []
    for entry in config.allowedSources:
        if isinstance(entry, str):
            found = sorted(map(str, sources.names.get(entry, ())))
            entries.append(f"{entry} ({', '.join(found) if found else 'does NOT resolve now'})")
        else:
            entries.append(str(entry) if entry.num_addresses > 1 else str(entry.network_address))
    return "only " + ", ".join(entries) + "; names resolved again every 5 min"


def _message(w: Webhook) -> str:
    """What a webhook's requests carry, in words: format, template, headers, auth, signing; no value."""
    parts = [f"format {w.format}" + (", its own body: template" if w.body is not None else "")]
    if w.headers:
        parts.append("headers " + ", ".join(name for name, _ in w.headers))
    parts.append(f"auth {w.auth.type}" if w.auth is not None else "no auth")
    parts.append("signed (Standard Webhooks)" if w.signingKey else "not signed")
    return "; ".join(parts)


def describe_config(
    path: str,
    config: Config,
    address: str,
    sources: SourceFilter | None = None,
    checked: bool = True,
    storeUnreachable: str | None = None,
) -> str:
    """The summary ``check-config`` prints. Holds no URL query, user info or header value.

    :param checked: whether the ports and ``stateDir`` were checked (not for ``--reload``).
    """
    stateDir = config.stateDir
    where = "" if os.path.isabs(stateDir) else ", relative to the working directory"
    if not checked:
        stateState = "not checked: --reload"
    elif os.path.isdir(stateDir):
        stateState = "writable"
    else:
        stateState = "created at start"
    dedup = (
        f"a repeated datagram (same kind and executionId) within {duration(config.dedupTtl)} is dropped"
        if config.dedupTtl > 0
        else "off"
    )
    lines = [
        f"{path}: valid" + ("" if checked else " for a reload (ports and stateDir not checked)"),
        "",
        f"UDP             {_udp_line(config, address)}",
        f"sources         {_sources_line(config, sources)}",
        "per source      "
        + (
            f"at most {config.sourceRateLimit} datagrams a minute"
            if config.sourceRateLimit
            else "no limit (rateLimit.enable is false)"
        ),
        f"datagrams       up to {config.maxMessageSize} bytes; larger ones are dropped",
        f"memory bound    {config.maxBufferedAlerts} alerts waiting for the outbox; then new ones are shed",
        f"de-duplication  {dedup}",
        _store_line(config, checked, storeUnreachable)
        if config.store.shared
        else f"stateDir        {stateDir} (outbox {db_path(stateDir)}{where}; {stateState})",
        f"dead letters    kept {duration(config.deadLetterRetention)}",
        f"shutdown        calls in flight get {duration(config.shutdownGrace)} on SIGTERM",
        f"webhook calls   {'enabled' if config.notificationsEnabled else 'DISABLED'}",
    ]
    warnings = config.warnings()
    for kind, route in config.routes.items():
        limit = (
            f"rate limit: at most one alert per task per {duration(route.rateLimit)}"
            if route.rateLimit > 0
            else "no rate limit"
        )
        lines += ["", f"{kind.value}: {count(len(route.webhooks), 'webhook', 'webhooks')}, {limit}"]
        if not route.webhooks:
            lines.append("  (none: alerts of this kind are received and counted only)")
        for w in route.webhooks:
            schedule = ", ".join(duration(s) for s in w.retry.schedule)
            lines += [
                f"  {w.key}: {w.description or '(no description)'}"
                + (f" [name: {w.label}]" if w.label else ""),
                f"    {w.method} {w.loggableUrl}{_hidden(w.url)}",
                f"    TLS {'; '.join([tls_words(w, summary=True), *tls_extras(w)])}",
                f"    timeout {duration(w.timeout)}, concurrency {w.concurrency}",
                f"    attempts at {schedule} after the alert; given up after {duration(w.retry.maxAge)}",
                f"    takes {w.routing.describe()}",
                f"    sends {_message(w)}",
            ]
            if w.proxy is not None:
                lines.append(f"    via proxy {w.proxy.loggable}")
    lines += ["", "ignored sections: " + (", ".join(config.ignored) if config.ignored else "none")]
    lines += [f"WARNING: {text}" for text in warnings]
    return "\n".join(lines) + "\n"
