"""A request to an :class:`~butler_tw.core.retry.Outcome`, over treq: the HTTP client and its TLS policies.

:mod:`.client` sends one request to one webhook and never raises; :mod:`.tls`
says which server certificates a webhook trusts. Imports core, config and
channels (the request it sends).
"""
