"""The registry of message formats, and :func:`render`: one alert to one request body. Pure.

``format: butler`` (the default) is the seed's payload
(:mod:`butler_tw.channels.butler`); the presets write the message a service
documents (:mod:`~butler_tw.channels.teams`, :mod:`~butler_tw.channels.slack`,
:mod:`~butler_tw.channels.discord`, :mod:`~butler_tw.channels.pagerduty`,
:mod:`~butler_tw.channels.opsgenie`) and are sent with POST as JSON. A
``body:`` template (:mod:`~butler_tw.channels.templates`) replaces the
format's tree, whatever the format. ``contentType:`` sets the Content-Type
of any request with a body.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Mapping

from butler_tw.channels import butler, discord, opsgenie, pagerduty, slack, teams
from butler_tw.channels.butler import Request, base_headers, without_fragment
from butler_tw.channels.templates import RenderError, context
from butler_tw.channels.text import dumps
from butler_tw.config import Webhook
from butler_tw.core.alert import Alert

#: Renders (alert, webhook, timestamp) to the request to send.
Format = Callable[[Alert, Webhook, int], Request]
#: A preset's message as a JSON tree.
Payload = Callable[[Alert, Webhook, int], Any]

DEFAULT_CONTENT_TYPE = "application/json"


def json_request(tree: Any, alert: Alert, webhook: Webhook, timestamp: int) -> Request:
    """``tree`` serialised as JSON (the only escaping there is), with the usual headers."""
    headers = (*base_headers(alert, timestamp), ("Content-Type", webhook.contentType or DEFAULT_CONTENT_TYPE))
    return Request(webhook.method, without_fragment(webhook.url), headers, dumps(tree))


def preset(payload: Payload) -> Format:
    """A format that sends ``payload``'s tree as JSON."""

    def render(alert: Alert, webhook: Webhook, timestamp: int) -> Request:
        return json_request(payload(alert, webhook, timestamp), alert, webhook, timestamp)

    return render


FORMATS: Mapping[str, Format] = MappingProxyType(
    {
        "butler": butler.build_request,
        "teams": preset(teams.payload),
        "slack": preset(slack.payload),
        "discord": preset(discord.payload),
        "pagerduty": preset(pagerduty.payload),
        "opsgenie": preset(opsgenie.payload),
    }
)


def render(alert: Alert, webhook: Webhook, timestamp: int) -> Request:
    """The request for one attempt of one delivery, before custom headers, auth and signing.

    :raises RenderError: the webhook's ``body:`` template failed for this alert.
    """
    if webhook.body is not None:
        return json_request(webhook.body.render(context(alert)), alert, webhook, timestamp)
    request = FORMATS[webhook.format](alert, webhook, timestamp)
    if webhook.contentType and request.body is not None:
        headers = tuple(h for h in request.headers if h[0].lower() != "content-type")
        request = Request(
            request.method, request.url, (*headers, ("Content-Type", webhook.contentType)), request.body
        )
    return request


__all__ = ["FORMATS", "Format", "RenderError", "render"]
