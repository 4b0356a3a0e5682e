"""What a configuration reload changes: a pure diff of the running and the new ``Config``.

:func:`plan_reload` decides, for every webhook, whether it is kept as it
runs, replaced (moved to another position, or with other settings: its
deliveries go on), removed (its pending deliveries become dead letters) or
added; and it lists the other settings that change and those that only a
restart can change. :func:`summary` and :func:`restart_warnings` put that in
words for the log. Nothing here touches the reactor: the daemon applies a
plan in :mod:`butler_tw.pipeline`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import attrs

from butler_tw.config import Config, TlsSettings, Webhook
from butler_tw.core.delivery import Rebinding, match_webhooks
from butler_tw.core.words import count


@attrs.frozen
class Replacement:
    """A running webhook whose deliveries go on with ``new``: the same receiver
    (method and URL), at another position (:attr:`moved`) or with other settings."""

    old: Webhook
    new: Webhook

    @property
    def moved(self) -> bool:
        return self.old.key != self.new.key

    @property
    def changes(self) -> list[str]:
        """The settings that differ, in words (empty when only the position moved)."""
        return webhook_changes(self.old, self.new)


@attrs.frozen
class RestartNeeded:
    """A setting that changed in the file but keeps its running value until a restart."""

    key: str
    running: object
    new: object


@attrs.frozen
class ReloadPlan:
    """Everything a reload changes.

    :ivar kept: webhooks with the same key and settings: their dispatcher
        and client carry on untouched.
    :ivar replaced: webhooks rebuilt (new client and dispatcher) that take
        over the deliveries of a running one.
    :ivar removed: running webhooks gone from the config, or now sending
        elsewhere: their pending deliveries become dead letters.
    :ivar added: new webhooks.
    :ivar settings: the other changes that take effect now, in words.
    :ivar restart: changes that take effect after a restart.
    """

    kept: tuple[Webhook, ...] = ()
    replaced: tuple[Replacement, ...] = ()
    removed: tuple[Webhook, ...] = ()
    added: tuple[Webhook, ...] = ()
    settings: tuple[str, ...] = ()
    restart: tuple[RestartNeeded, ...] = ()

    @property
    def successors(self) -> dict[str, str | None]:
        """Running key -> the key that takes over its deliveries (``None``: removed),
        for every running webhook that is not kept."""
        found: dict[str, str | None] = {r.old.key: r.new.key for r in self.replaced}
        found.update({w.key: None for w in self.removed})
        return found

    @property
    def changesWebhooks(self) -> bool:
        return bool(self.replaced or self.removed or self.added)


def plan_reload(running: Config, new: Config, started: Config | None = None) -> ReloadPlan:
    """Compare the running configuration with a newly read one.

    Webhooks are paired by :func:`~butler_tw.core.delivery.match_webhooks`, the
    pairing the outbox makes on disk, so the deliveries in memory go where
    their rows go.

    :param started: the configuration the process started with, for the
        settings only a restart applies (default: ``running``): one changed
        at an earlier reload still needs that restart.
    """
    before = {w.key: w for w in running.webhooks}
    after = {w.key: w for w in new.webhooks}
    pairs = match_webhooks(
        {k: w.fingerprint for k, w in before.items()}, {k: w.fingerprint for k, w in after.items()}
    )
    kept: list[Webhook] = []
    replaced: list[Replacement] = []
    removed: list[Webhook] = []
    for w in running.webhooks:  # in config order, for the log
        if w.key not in pairs:
            same = after[w.key]
            if same == w:
                kept.append(w)
            else:
                replaced.append(Replacement(w, same))
        elif (target := pairs[w.key]) is not None:
            replaced.append(Replacement(w, after[target]))
        else:
            removed.append(w)
    taken = {w.key for w in kept} | {r.new.key for r in replaced}
    added = [w for w in new.webhooks if w.key not in taken]
    return ReloadPlan(
        kept=tuple(kept),
        replaced=tuple(replaced),
        removed=tuple(removed),
        added=tuple(added),
        settings=tuple(setting_changes(running, new)),
        restart=tuple(restart_needed(started or running, new)),
    )


# --------------------------------------------------------------------------
# Settings


def _s(seconds: float) -> str:
    return f"{seconds:g} s" if seconds > 0 else "off"


def _tls(tls: TlsSettings) -> str:
    return tls.mode.value + (f" ({tls.caFile})" if tls.caFile else "")


def webhook_changes(old: Webhook, new: Webhook) -> list[str]:
    """What differs between two versions of a webhook, other than its position (no URLs)."""
    found = []
    if old.description != new.description:
        found.append(f"description {old.description!r} -> {new.description!r}")
    if old.label != new.label:
        found.append(f"name {old.label!r} -> {new.label!r}")
    if old.timeout != new.timeout:
        found.append(f"timeout {_s(old.timeout)} -> {_s(new.timeout)}")
    if old.concurrency != new.concurrency:
        found.append(f"concurrency {old.concurrency} -> {new.concurrency}")
    if old.retry.schedule != new.retry.schedule:
        found.append(
            "retrySchedule "
            + " -> ".join(", ".join(f"{s:g}" for s in r.schedule) + " s" for r in (old.retry, new.retry))
        )
    if old.retry.maxAge != new.retry.maxAge:
        found.append(f"maxAge {_s(old.retry.maxAge)} -> {_s(new.retry.maxAge)}")
    if old.logFullPath != new.logFullPath:
        found.append(f"logFullPath {str(old.logFullPath).lower()} -> {str(new.logFullPath).lower()}")
    if old.routing != new.routing:
        found.append(f"routing {old.routing.describe()} -> {new.routing.describe()}")
    if old.headers != new.headers:
        names = sorted(
            {n for n, _ in old.headers} ^ {n for n, _ in new.headers}
            | {n for n, v in old.headers if (n, v) not in new.headers}
        )
        found.append(f"headers changed ({', '.join(names)})")
    if old.auth != new.auth:
        found.append(
            "auth changed"
            if old.auth is not None and new.auth is not None and old.auth.type == new.auth.type
            else f"auth {old.auth.type if old.auth else 'none'} -> {new.auth.type if new.auth else 'none'}"
        )
    if old.signingKey != new.signingKey:
        found.append(
            "signing secret changed"
            if old.signingKey and new.signingKey
            else f"signing {'on' if old.signingKey else 'off'} -> {'on' if new.signingKey else 'off'}"
        )
    if (old.format, old.body, old.contentType) != (new.format, new.body, new.contentType):
        found.append(
            f"format {old.format} -> {new.format}" if old.format != new.format else "message body changed"
        )
    if (old.routingKey, old.severity, old.priority) != (new.routingKey, new.severity, new.priority):
        found.append("routingKey, severity or priority changed")  # never the key itself: a secret
    if old.tls != new.tls:
        if (old.tls.mode, old.tls.caFile) != (new.tls.mode, new.tls.caFile):
            found.append(f"TLS {_tls(old.tls)} -> {_tls(new.tls)}")
        elif old.tls.caCertificates != new.tls.caCertificates:
            found.append(f"TLS {_tls(new.tls)}: the CA file's certificates changed")
        if old.tls.clientCertificate != new.tls.clientCertificate:
            found.append("cert.clientCert/clientKey changed")
        if (old.tls.minVersion, old.tls.serverName) != (new.tls.minVersion, new.tls.serverName):
            found.append(
                f"cert.minVersion/serverName {old.tls.minVersion}/{old.tls.serverName or '-'} -> "
                f"{new.tls.minVersion}/{new.tls.serverName or '-'}"
            )
    if old.proxy != new.proxy:
        shown = [p.loggable if p is not None else "none" for p in (old.proxy, new.proxy)]
        found.append(
            f"proxy {shown[0]} -> {shown[1]}" if shown[0] != shown[1] else "proxy credentials changed"
        )
    return found


def _sources(config: Config) -> str:
    if not config.sourceValidation:
        return "off"
    return ", ".join(str(entry) for entry in config.allowedSources)


#: Settings that take effect at a reload: (what the log calls it, how to show it).
_LIVE: tuple[tuple[str, Callable[[Config], Any]], ...] = (
    ("webhookNotification.enable", lambda c: str(c.notificationsEnabled).lower()),
    ("de-duplication", lambda c: _s(c.dedupTtl)),
    ("maxMessageSize", lambda c: f"{c.maxMessageSize} bytes"),
    ("allowedSources", _sources),
    ("per-source rate limit", lambda c: f"{c.sourceRateLimit}/min" if c.sourceRateLimit else "off"),
    ("butlerWebhook.maxBufferedAlerts", lambda c: str(c.maxBufferedAlerts)),
    ("butlerWebhook.maxPendingInMemory", lambda c: str(c.maxPendingInMemory)),
    ("messageQueue.backpressureThreshold", lambda c: f"{100 * c.backpressureThreshold:g} %"),
    ("shutdownGracePeriod", lambda c: _s(c.shutdownGrace)),
    ("deadLetterRetention", lambda c: _s(c.deadLetterRetention)),
)


def setting_changes(running: Config, new: Config) -> list[str]:
    """The changes, other than to webhooks, that a reload applies at once, in words."""
    found = []
    for kind, route in running.routes.items():
        after = new.routes[kind].rateLimit
        if route.rateLimit != after:
            found.append(f"rate limit {kind.value} {_s(route.rateLimit)} -> {_s(after)}")
    for name, show in _LIVE:
        if show(running) != show(new):
            found.append(f"{name} {show(running)} -> {show(new)}")
    return found


#: Settings read once at start-up: (key path, attribute of Config).
RESTART_KEYS: tuple[tuple[str, str], ...] = (
    ("Butler.udpServerConfig.serverHost", "udpHost"),
    ("Butler.udpServerConfig.portTaskFailure", "udpPort"),
    ("Butler.udpServerConfig.receiveBufferBytes", "receiveBuffer"),
    ("butlerWebhook.stateDir", "stateDir"),
    ("butlerWebhook.store", "store"),
    ("butlerWebhook.instanceName", "instanceName"),
    ("butlerWebhook.leaseSeconds", "leaseSeconds"),
    ("butlerWebhook.intakeProcess", "intakeProcess"),
    ("butlerWebhook.storeProcess", "storeProcess"),
    ("butlerWebhook.http.listen", "httpListen"),
    ("butlerWebhook.log.format", "logFormat"),
    ("butlerWebhook.log.level", "logLevel"),
)


UDP_ADDRESS_KEYS = ("Butler.udpServerConfig.serverHost", "Butler.udpServerConfig.portTaskFailure")


def restart_needed(running: Config, new: Config) -> list[RestartNeeded]:
    """The settings that differ and that only a restart applies.

    ``running`` should be the configuration the process started with: a
    change a reload could not apply is reported again at the next reload.
    """
    return [
        RestartNeeded(key, getattr(running, attr), getattr(new, attr))
        for key, attr in RESTART_KEYS
        if getattr(running, attr) != getattr(new, attr)
    ]


# --------------------------------------------------------------------------
# In words


def _label(w: Webhook) -> str:
    return f"{w.key} {w.description!r}" if w.description else w.key


def summary(source: str, plan: ReloadPlan, rebinding: Rebinding | None) -> str:
    """The one line a reload logs: every change, with URLs redacted.

    :param rebinding: what the outbox did (for the number of dead letters);
        ``None`` when its write failed and is being retried.
    """
    parts: list[str] = []

    def webhooks(n: int, what: str, details: Sequence[str]) -> None:
        noun = "" if parts else (" webhook" if n == 1 else " webhooks")
        parts.append(f"{n}{noun} {what} ({'; '.join(details)})")

    if plan.added:
        webhooks(
            len(plan.added),
            "added",
            [f"{_label(w)}: {w.method} {w.loggableUrl}" for w in plan.added],
        )
    if plan.removed:
        details = []
        for w in plan.removed:
            n = rebinding.removed.get(w.key, 0) if rebinding is not None else None
            if n is None:
                kept = "its pending deliveries kept as dead letters"
            elif n == 0:
                kept = "no pending deliveries"
            else:
                kept = count(n, "pending delivery", "pending deliveries") + (
                    " kept as a dead letter" if n == 1 else " kept as dead letters"
                )
            details.append(f"{_label(w)}: {kept}")
        webhooks(len(plan.removed), "removed", details)
    moved = [r for r in plan.replaced if r.moved]
    if moved:
        webhooks(
            len(moved),
            "moved",
            [
                f"{_label(r.old)} -> {r.new.key}"
                + "".join(f", {c}" for c in r.changes)
                + ", deliveries follow"
                for r in moved
            ],
        )
    changed = [r for r in plan.replaced if not r.moved]
    if changed:
        webhooks(
            len(changed),
            "changed",
            [f"{_label(r.old)}: {', '.join(r.changes)}, pending deliveries kept" for r in changed],
        )
    if plan.kept and parts:
        parts.append(f"{len(plan.kept)} unchanged")
    parts += plan.settings
    if not parts:
        parts.append("no change that takes effect now" if plan.restart else "no change")
    return f"Reloaded {source}: " + ", ".join(parts)


def restart_warnings(plan: ReloadPlan, listening: str) -> list[str]:
    """One warning per setting that needs a restart.

    :param listening: where the UDP port is now (``host:port``), said when
        the address changed.
    """
    found = []
    for item in plan.restart:
        text = (
            f"{item.key} changed, takes effect after a restart "
            f"(running with {_shown(item.running)}, the file says {_shown(item.new)})"
        )
        if item.key in UDP_ADDRESS_KEYS:
            text += f": still listening on UDP {listening}"
        found.append(text)
    return found


def _shown(value: object) -> str:
    return "(none)" if value is None else str(value)


def new_warnings(running: Config, new: Config) -> list[str]:
    """Warnings of the new configuration (``Config.warnings``) that the running one did not have."""
    before = set(running.warnings())
    return [w for w in new.warnings() if w not in before]
