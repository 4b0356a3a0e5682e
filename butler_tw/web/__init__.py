"""``butlerWebhook.http.listen``: ``/health``, ``/metrics`` and ``/deliveries``.

:mod:`.health` holds the report rules, :mod:`.metrics` the Prometheus
collector, :mod:`.site` the resources and their listening service. Reads the
live daemon: imports core, config and delivery (the dispatchers' health, the
outbox); :mod:`.site` also takes the start-up wording for a port it cannot
bind from :mod:`butler_tw.daemon.startup`.
"""
