"""The request of one attempt of one delivery: the whole pipeline in one call. Pure.

The body and URL in the webhook's format (:func:`butler_tw.channels.formats.render`:
the seed's payload, a preset or a ``body:`` template), then the webhook's
headers and auth (:func:`~butler_tw.channels.signing.apply_headers`), then its
Standard Webhooks signature (:func:`~butler_tw.channels.signing.sign`), which
covers the body and headers as they are sent.
"""

from __future__ import annotations

from butler_tw.channels.butler import Request
from butler_tw.channels.formats import render
from butler_tw.channels.signing import apply_headers, sign
from butler_tw.channels.templates import RenderError
from butler_tw.config import Webhook
from butler_tw.core.alert import Alert


def build_request(alert: Alert, webhook: Webhook, timestamp: int) -> Request:
    """What to send for ``alert`` to ``webhook`` at ``timestamp`` (one attempt's).

    :raises RenderError: the webhook's ``body:`` template failed for this
        alert (it will fail on every attempt: do not retry).
    """
    return sign(apply_headers(render(alert, webhook, timestamp), webhook), webhook)


__all__ = ["RenderError", "Request", "build_request"]
