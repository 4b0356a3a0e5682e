"""From a YAML document to :class:`~butler_tw.config.model.Config`: check it against the schema, then build.

Every problem is collected, with the key path that holds it, and all are
raised together as one :class:`ConfigError`, so that an admin fixes the file
in one go. Nothing downstream re-reads raw YAML.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from butler_tw.config import schema
from butler_tw.config.loader import read_document, read_file
from butler_tw.config.model import (
    DEFAULT_BACKPRESSURE_THRESHOLD,
    DEFAULT_CONCURRENCY,
    DEFAULT_DEDUP_TTL,
    DEFAULT_RATE_LIMIT,
    Auth,
    Config,
    ConfigError,
    Route,
    Webhook,
    default_instance_name,
)
from butler_tw.config.spec import INVALID, Report, check, file_mode
from butler_tw.config.store import StoreSettings
from butler_tw.core.alert import EventKind
from butler_tw.core.retry import RetryPolicy
from butler_tw.core.routing import Routing

UDP = schema.UDP


def load_config(
    path: str,
    reader: Callable[[str], bytes] = read_file,
    environ: Mapping[str, str] | None = None,
    mode: Callable[[str], int | None] = file_mode,
) -> Config:
    """Read and validate the config file at ``path`` (and the CA and secret files it names).

    :raises ConfigError: naming every problem found.
    """
    return parse_config(read_document(path, reader), source=path, reader=reader, environ=environ, mode=mode)


def parse_config(
    raw: Any,
    source: str = "<config>",
    reader: Callable[[str], bytes] = read_file,
    environ: Mapping[str, str] | None = None,
    mode: Callable[[str], int | None] = file_mode,
) -> Config:
    """Validate an already-loaded YAML document.

    ``reader`` reads CA files and ``${file:...}`` secrets, ``mode`` gives a
    secret file's permission bits; ``${env:...}`` is looked up in ``environ``
    (default: the process environment).
    """
    report = Report(reader, os.environ if environ is None else environ, mode)
    doc = check(schema.FILE, raw, "", report)
    config = None if doc is INVALID else _build(doc, raw, report)
    if report.problems or config is None:
        raise ConfigError(source, report.problems or ["(top level): missing"])
    return config


def _build(doc: dict[str, Any], raw: dict[str, Any], report: Report) -> Config | None:
    butler, ours = doc["Butler"], doc["butlerWebhook"]
    if butler is INVALID or ours is INVALID:
        return None
    udp = butler["udpServerConfig"]
    if udp is INVALID:
        return None
    if udp["enable"] is not True:
        report.problem(
            f"{UDP}.enable",
            "is false or missing: this daemon receives alerts over UDP only, so it has nothing to do."
            " Set it to true.",
        )
    allowed = tuple(e for e in (udp["allowedSources"] or ()) if e is not INVALID)
    if udp["enableSourceValidation"] is True and udp["allowedSources"] == []:
        report.problem(
            f"{UDP}.allowedSources",
            "is empty while enableSourceValidation is true: every datagram would be refused "
            "(Butler would silently accept them all). List the Qlik Sense servers' addresses, "
            "CIDR ranges or host names, or set enableSourceValidation: false",
        )
    queue = udp["messageQueue"]
    concurrency = int(_given(queue.get("maxConcurrent"), DEFAULT_CONCURRENCY))
    delivery = ours["delivery"]
    defaults = RetryPolicy(
        schedule=_given(delivery.get("retrySchedule"), RetryPolicy().schedule),
        maxAge=_given(delivery.get("maxAge"), RetryPolicy().maxAge),
    )
    notifications = butler["webhookNotification"]
    enabled = notifications is not None and notifications is not INVALID and notifications["enable"] is True
    quiet, report.quiet = report.quiet, not enabled  # as below a switched-off section
    routes = {kind: _route(kind, notifications, defaults, concurrency, report) for kind in EventKind}
    report.quiet = quiet
    ignored = list(report.ignored)
    raw_notifications = raw["Butler"].get("webhookNotification")
    if isinstance(raw_notifications, dict):
        ignored += [f"{schema.WN}.{name}" for name in schema.OTHER_BLOCKS if name in raw_notifications]
    if report.problems:
        return None
    dedup = udp["deduplication"]
    limit = udp["rateLimit"]
    listen = ours["http"].get("listen")
    log = ours["log"]
    return Config(
        udpHost=udp["serverHost"],
        udpPort=udp["portTaskFailure"],
        notificationsEnabled=enabled,
        routes=routes,
        shutdownGrace=ours["shutdownGracePeriod"],
        stateDir=ours["stateDir"],
        store=_given(ours.get("store"), StoreSettings()),
        instanceName=_given(ours.get("instanceName"), None) or default_instance_name(),
        leaseSeconds=ours["leaseSeconds"],
        intakeProcess=ours["intakeProcess"],
        storeProcess=ours["storeProcess"],
        deadLetterRetention=delivery.get("deadLetterRetention"),
        dedupTtl=0.0
        if dedup.get("enable") is False
        else 60 * _given(dedup.get("ttlMinutes"), DEFAULT_DEDUP_TTL / 60),
        receiveBuffer=int(udp["receiveBufferBytes"]),
        maxMessageSize=int(udp["maxMessageSize"]),
        sourceValidation=udp["enableSourceValidation"],
        allowedSources=allowed,
        sourceRateLimit=int(limit["maxMessagesPerMinute"]) if limit.get("enable") is True else 0,
        maxBufferedAlerts=int(ours["maxBufferedAlerts"]),
        maxPendingInMemory=int(ours["maxPendingInMemory"]),
        backpressureThreshold=_threshold(queue.get("backpressureThreshold")),
        httpListen=listen,
        logFormat=log.get("format", "text"),
        logLevel=log.get("level", "info"),
        ignored=tuple(ignored),
        notes=tuple(report.warnings),
    )


def _given(value: Any, default: Any) -> Any:
    return default if value is None or value is INVALID else value


def _threshold(value: float | None) -> float:
    # Butler's docs give a percentage (80), its code a fraction (0.8): take either.
    if value is None or value is INVALID:
        return DEFAULT_BACKPRESSURE_THRESHOLD
    return value / 100 if value > 1 else value


def _route(
    kind: EventKind, notifications: Any, defaults: RetryPolicy, concurrency: int, report: Report
) -> Route:
    block = None if notifications in (None, INVALID) else notifications[kind.value]
    if block is None or block is INVALID:
        return Route(kind)
    webhooks = []
    entries = block["webhooks"] if isinstance(block["webhooks"], list) else []
    for i, entry in enumerate(entries):
        hook = _webhook(entry, f"{kind.value}.webhooks[{i}]", defaults, concurrency, report)
        if hook is not None:
            webhooks.append(hook)
    rate = block["rateLimit"]
    return Route(kind, rate if rate is not INVALID else DEFAULT_RATE_LIMIT, tuple(webhooks))


def _rules(value: Any) -> Any:
    # A tuple once the rule compiled it (in a block checked for shape only, the raw value).
    return value if isinstance(value, tuple) else ()


def _webhook(entry: Any, key: str, defaults: RetryPolicy, concurrency: int, report: Report) -> Webhook | None:
    if entry is INVALID or entry is None or any(v is INVALID for v in entry.values()):
        return None
    where = f"{schema.WN}.{key}"
    if not _message_settings(entry, where, report):
        return None
    extra: tuple[tuple[str, str], ...] = entry["headers"] or ()
    auth: Auth | None = entry["auth"]
    if auth is not None:
        clash = [name for name, _ in extra if name.lower() == auth.name.lower()]
        if clash:
            report.problem(
                f"{where}.headers.{clash[0]}",
                f"is also set by auth (type {auth.type}): set it in one place only",
            )
            return None
        if "@" in urlsplit(entry["webhookURL"]).netloc:
            report.warn(
                f"{where}.auth",
                "webhookURL also holds a user name and password: auth wins, and they are not sent",
            )
    return Webhook(
        key=key,
        description=entry["description"],
        url=entry["webhookURL"],
        method=entry["httpMethod"],
        tls=entry["cert"],
        timeout=entry["timeout"],
        concurrency=int(_given(entry["concurrency"], concurrency)),
        retry=RetryPolicy(
            schedule=_given(entry["retrySchedule"], defaults.schedule),
            maxAge=_given(entry["maxAge"], defaults.maxAge),
        ),
        logFullPath=entry["logFullPath"],
        label=entry["name"].strip(),
        routing=Routing(match=_rules(entry["match"]), exclude=_rules(entry["exclude"])),
        headers=extra,
        auth=auth,
        signingKey=entry["signing"],
        format=entry["format"],
        body=entry["body"],
        contentType=entry["contentType"],
        routingKey=entry["routingKey"] or "",
        severity=entry["severity"],
        priority=entry["priority"],
        proxy=entry["proxy"],
    )


#: The entry keys that only one format reads.
_FORMAT_KEYS = {"routingKey": "pagerduty", "severity": "pagerduty", "priority": "opsgenie"}


def _message_settings(entry: dict[str, Any], path: str, report: Report) -> bool:
    """The checks across ``format``, ``body``, ``httpMethod`` and the preset keys. False: unusable."""
    fmt, method, ok = entry["format"], entry["httpMethod"], True
    if fmt != "butler" and method != "POST":
        report.problem(
            f"{path}.format",
            f"format: {fmt} sends with POST only, and httpMethod is {method}: set httpMethod: POST",
        )
        ok = False
    if entry["body"] is not None and method == "GET":
        report.problem(f"{path}.body", "a GET request has no body: set httpMethod: POST or PUT")
        ok = False
    if fmt == "pagerduty" and entry["routingKey"] is None:
        report.problem(
            f"{path}.routingKey",
            "missing: format: pagerduty needs the integration key of an Events API v2 integration",
        )
        ok = False
    for name, owner in _FORMAT_KEYS.items():
        if entry[name] is not None and fmt != owner:
            report.warn(
                f"{path}.{name}", f"only read with format: {owner} (this entry has format: {fmt}); ignored"
            )
    return ok
