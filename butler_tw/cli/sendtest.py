"""``butler-tw send-test``: a test alert, sent now to the configured webhooks.

A clearly marked synthetic alert goes to the selected webhooks with the
daemon's own :class:`~butler_tw.transport.client.WebhookClient`, bypassing
the rate limits and the outbox; one result line per webhook. Nothing here
prints a configured webhook URL whole: only its ``loggableUrl``
(:func:`~butler_tw.core.redact.redact_url`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, TextIO

from twisted.internet.defer import Deferred, gatherResults, succeed

from butler_tw.channels.request import RenderError, build_request
from butler_tw.cli.text import format_table, host_name, tls_mode, tls_words
from butler_tw.config import Config, TrustMode, Webhook
from butler_tw.core import words
from butler_tw.core.alert import Alert, EventKind
from butler_tw.core.retry import Outcome, hint_for_status
from butler_tw.core.wireformat import qlik_timestamp
from butler_tw.transport.client import WebhookClient

#: The taskId of every ``send-test`` alert: recognisably not a real task.
TEST_TASK_ID = "7e57a1e7-0000-4000-8000-b7e57a1e7000"
TEST_APP_ID = "7e57a1e7-0000-4000-8000-b7e57a1e7001"
TEST_TASK_NAME = "butler-tw test alert"


def make_test_alert(kind: EventKind, now: float | None = None) -> Alert:
    """A synthetic alert that says it is one, with a fresh executionId."""
    now = time.time() if now is None else now
    what = "failed" if kind is EventKind.FAILED else "was aborted"
    return Alert(
        kind=kind,
        hostName=host_name(),
        user="BUTLER-TW\\send-test",
        taskName=TEST_TASK_NAME,
        taskId=TEST_TASK_ID,
        appName="butler-tw test app",
        appId=TEST_APP_ID,
        logTimeStamp=qlik_timestamp(now),
        logLevel="INFO",
        executionId=str(uuid.uuid4()),
        logMessage=f"TEST ALERT sent by butler-tw send-test: no reload {what}, nothing to do",
    )


def _called(w: Webhook, name: str) -> bool:
    """Whether ``--webhook NAME`` means ``w``: its name, description or key."""
    return name in (w.label, w.description, w.key)


def select_webhooks(
    config: Config, kind: EventKind | None, name: str | None
) -> tuple[list[tuple[EventKind, Webhook]], str | None]:
    """The webhooks ``send-test`` calls, each with its kind; or why there are none.

    ``kind`` None: with a ``name``, every block is searched (each webhook gets
    an alert of its own block's kind); without one, ``reloadTaskFailure``.
    """
    if kind is not None:
        routes = [config.routes[kind]]
    elif name is not None:
        routes = list(config.routes.values())
    else:
        routes = [config.routes[EventKind.FAILED]]
    chosen = [(r.kind, w) for r in routes for w in r.webhooks if name is None or _called(w, name)]
    if chosen:
        return chosen, None
    blocks = " or ".join(r.kind.value for r in routes)
    if name is None:
        return [], f"no webhooks are configured in {blocks}: nothing to test"
    known = [f"{w.description!r} ({w.key})" if w.description else w.key for r in routes for w in r.webhooks]
    problem = f"no webhook in {blocks} has the name, description or key {name!r}"
    elsewhere = [r.kind for r in config.routes.values() for w in r.webhooks if _called(w, name)]
    if elsewhere:
        flag = "failed" if elsewhere[0] is EventKind.FAILED else "aborted"
        problem += f" (it is in {elsewhere[0].value}: use --event {flag})"
    elif known:
        problem += "; there are: " + ", ".join(known)
    return [], problem


def tls_column(webhook: Webhook, outcome: Outcome | None = None) -> str:
    """The webhook's TLS mode and, after a call, whether the certificate was verified."""
    name = tls_words(webhook)
    if outcome is None or tls_mode(webhook) not in (TrustMode.PLATFORM, TrustMode.CUSTOM_CA):
        return name
    if outcome.tlsFailure:
        return f"{name}: FAILED"
    if outcome.status is not None:
        return f"{name}: verified"
    return name


def result_column(outcome: Outcome) -> str:
    """The outcome in plain words, with the daemon's hint for a failing status."""
    if outcome.status is None:
        return outcome.error or "failed"
    text = f"HTTP {outcome.status}"
    hint = "" if 200 <= outcome.status < 300 else hint_for_status(outcome.status)
    return f"{text}: {hint}" if hint else text


def send_test(
    reactor: Any, config: Config, kind: EventKind | None, name: str | None, out: TextIO, err: TextIO
) -> Deferred[int]:
    """Send a test alert to the selected webhooks now; fires with the exit status.

    0 when every webhook answered 2xx, 1 otherwise, 2 when no webhook matched.
    """
    chosen, problem = select_webhooks(config, kind, name)
    if problem is not None:
        err.write(f"butler-tw send-test: {problem}\n")
        return succeed(2)
    alerts = {k: make_test_alert(k) for k in dict.fromkeys(k for k, _ in chosen)}
    if not config.notificationsEnabled:
        out.write(
            "note: Butler.webhookNotification.enable is false: the daemon itself sends nothing;"
            " testing the webhooks anyway\n"
        )
    for k, alert in alerts.items():
        n = sum(1 for kk, _ in chosen if kk is k)
        out.write(
            f"Test alert: {alert.event}, task {alert.taskName!r} ({alert.taskId}),\n"
            f"  executionId {alert.executionId}, webhook-id {alert.alertId}\n"
            f"  sent now to {words.count(n, f'{k.value} webhook', f'{k.value} webhooks')}, "
            "bypassing the rate limit and the outbox\n"
        )
    out.flush()
    clients = [WebhookClient(w, reactor) for _, w in chosen]

    def one(client: WebhookClient, webhook: Webhook, alert: Alert) -> Deferred[tuple[Outcome, float]]:
        started = time.monotonic()
        try:
            request = build_request(alert, webhook, int(time.time()))
        except RenderError as e:  # the body: template fails for this alert: nothing to send
            return succeed((Outcome(error=str(e)), 0.0))
        d = client.send(request)
        return d.addCallback(lambda outcome: (outcome, time.monotonic() - started))

    sends = [one(c, w, alerts[k]) for c, (k, w) in zip(clients, chosen, strict=True)]
    done: Deferred[list[tuple[Outcome, float]]] = gatherResults(sends, consumeErrors=True)

    def report(results: list[tuple[Outcome, float]]) -> int:
        rows = [("WEBHOOK", "METHOD", "URL", "TLS", "RESULT", "LATENCY")]
        failed = 0
        for (_, w), (outcome, seconds) in zip(chosen, results, strict=True):
            ok = outcome.status is not None and 200 <= outcome.status < 300
            failed += not ok
            rows.append(
                (
                    w.name,
                    w.method,
                    w.loggableUrl,
                    tls_column(w, outcome),
                    result_column(outcome),
                    f"{seconds * 1000:.0f} ms",
                )
            )
        out.write("\n" + format_table(rows) + "\n")
        if failed:
            out.write(f"{failed} of {words.count(len(chosen), 'webhook', 'webhooks')} did not answer 2xx\n")
        elif len(chosen) == 1:
            out.write("the webhook answered 2xx\n")
        else:
            out.write(f"all {len(chosen)} webhooks answered 2xx\n")
        out.flush()
        return 1 if failed else 0

    def close(result: object) -> Deferred[object]:
        closing: Deferred[list[None]] = gatherResults([c.close() for c in clients], consumeErrors=True)
        return closing.addBoth(lambda _: result)

    finished: Deferred[int] = done.addCallback(report)
    finished.addBoth(close)  # the pools are closed before the result passes on
    return finished
