"""The request of one attempt of one delivery: the whole pipeline in one call. Pure.

The body and URL (:func:`butler_tw.channels.butler.build_request`), then the
webhook's headers and auth (:func:`~butler_tw.channels.signing.apply_headers`),
then its Standard Webhooks signature (:func:`~butler_tw.channels.signing.sign`),
which covers the body and headers as they are sent.
"""

from __future__ import annotations

from butler_tw.channels import butler
from butler_tw.channels.butler import Request
from butler_tw.channels.signing import apply_headers, sign
from butler_tw.config import Webhook
from butler_tw.core.alert import Alert


def build_request(alert: Alert, webhook: Webhook, timestamp: int) -> Request:
    """What to send for ``alert`` to ``webhook`` at ``timestamp`` (one attempt's)."""
    return sign(apply_headers(butler.build_request(alert, webhook, timestamp), webhook), webhook)
