"""The drop-in that makes ``twistd butler-webhook`` exist.

Cheap to import on purpose: twistd imports every plugin to list them, so the
real work lives in ``butler_tw.daemon.tap``, loaded only when this one is used.
"""

from twisted.application.service import ServiceMaker

butlerWebhook = ServiceMaker(
    "butler-tw",
    "butler_tw.daemon.tap",
    "Deliver Qlik Sense reload failure and abort alerts to webhooks (Butler-compatible config).",
    "butler-webhook",
)
