"""The request pipeline of one attempt: ``render`` -> (custom headers, auth) -> (signature). Pure.

The dispatcher calls :func:`build_request`; each step is a function of
(request, webhook) wrapped around the one before it.
"""

from __future__ import annotations

from butler_tw.channels.butler import Request
from butler_tw.channels.formats import render
from butler_tw.channels.templates import RenderError
from butler_tw.config import Webhook
from butler_tw.core.alert import Alert


def build_request(alert: Alert, webhook: Webhook, timestamp: int) -> Request:
    """The request for one attempt of one delivery to ``webhook``.

    :raises RenderError: the webhook's ``body:`` template failed for this
        alert (it will fail on every attempt: do not retry).
    """
    return render(alert, webhook, timestamp)


__all__ = ["RenderError", "Request", "build_request"]
