"""``butler-tw render``: the exact request a webhook would get, printed, not sent.

The alert is a sample of the webhook's kind, or the one a datagram line
(``--datagram``, as Qlik sends it) parses into. The request is built as the
daemon builds it (format or ``body:`` template, headers, auth, signature),
and printed with the URL redacted and every header value but the harmless
ones masked.
"""

from __future__ import annotations

import time
from typing import TextIO

from butler_tw.channels.preview import describe
from butler_tw.channels.request import RenderError, build_request
from butler_tw.channels.templates import SAMPLES
from butler_tw.cli.sendtest import select_webhooks
from butler_tw.config import Config
from butler_tw.core.alert import Alert, EventKind
from butler_tw.core.wireformat import Parsed, parse


def render(
    config: Config, name: str, kind: EventKind | None, datagram: str | None, out: TextIO, err: TextIO
) -> int:
    """Print each request webhook ``name`` would get; 0, or 1 when a template fails, 2 when none matched."""
    alert: Alert | None = None
    if datagram is not None:
        result = parse(datagram.encode("utf-8"))
        if not isinstance(result, Parsed):
            why = getattr(result, "reason", "not a scheduler failure or abort")
            err.write(f"butler-tw render: --datagram: {why}\n")
            return 2
        alert = result.alert
        kind = alert.kind
    chosen, problem = select_webhooks(config, kind, name)
    if problem is not None:
        err.write(f"butler-tw render: {problem}\n")
        return 2
    status = 0
    for k, webhook in chosen:
        sample = alert or next(s for s in SAMPLES if s.kind is k)
        out.write(f"# {webhook.key} ({webhook.name}), format {webhook.format}, a {k.value} alert\n")
        try:
            request = build_request(sample, webhook, int(time.time()))
        except RenderError as e:
            err.write(f"butler-tw render: {webhook.key}: {e}\n")
            status = 1
            continue
        out.write(describe(request, webhook))
    return status
