"""The Butler ``production.yaml``, read into frozen, validated value objects.

Only ``Butler.udpServerConfig``, ``Butler.webhookNotification`` and our own
top-level ``butlerWebhook`` section are read; everything else is reported as
ignored.

- :mod:`~butler_tw.config.model`: the values (:class:`Config`, :class:`Webhook`, ...);
- :mod:`~butler_tw.config.loader`: the file to a YAML document, with its limits;
- :mod:`~butler_tw.config.schema`: the keys, types, defaults and rules, as a table;
- :mod:`~butler_tw.config.spec`: the table's building blocks and the walk that checks a document;
- :mod:`~butler_tw.config.rules`: the checks a shape cannot express (URLs, CA files, ...);
- :mod:`~butler_tw.config.build`: a checked document to a :class:`Config`;
- :mod:`~butler_tw.config.reloadplan`: what a reload from one :class:`Config` to another changes.

Imports core only, and loads no reactor, Deferred or logger when imported
(``tests/core/test_purity.py`` checks it). Validating is not quite pure: a
``certCA`` file is read with OpenSSL, and ``http.listen`` is parsed with a
stand-in reactor, both imported where they are needed.
"""

from butler_tw.config.build import load_config, parse_config
from butler_tw.config.loader import MAX_FILE_SIZE, read_file
from butler_tw.config.model import (
    DEFAULT_BACKPRESSURE_THRESHOLD,
    DEFAULT_CONCURRENCY,
    DEFAULT_DEAD_LETTER_RETENTION,
    DEFAULT_DEDUP_TTL,
    DEFAULT_MAX_BUFFERED_ALERTS,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_RATE_LIMIT,
    DEFAULT_RECEIVE_BUFFER,
    DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_SOURCE_RATE_LIMIT,
    DEFAULT_STATE_DIR,
    DEFAULT_TIMEOUT,
    LOG_FORMATS,
    LOG_LEVELS,
    METHODS,
    TLS_VERSIONS,
    Auth,
    ClientCertificate,
    Config,
    ConfigError,
    Proxy,
    Route,
    TlsSettings,
    TrustMode,
    Webhook,
)

__all__ = [
    "DEFAULT_BACKPRESSURE_THRESHOLD",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DEAD_LETTER_RETENTION",
    "DEFAULT_DEDUP_TTL",
    "DEFAULT_MAX_BUFFERED_ALERTS",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_RATE_LIMIT",
    "DEFAULT_RECEIVE_BUFFER",
    "DEFAULT_SHUTDOWN_GRACE",
    "DEFAULT_SOURCE_RATE_LIMIT",
    "DEFAULT_STATE_DIR",
    "DEFAULT_TIMEOUT",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MAX_FILE_SIZE",
    "METHODS",
    "Auth",
    "TLS_VERSIONS",
    "ClientCertificate",
    "Config",
    "ConfigError",
    "Proxy",
    "Route",
    "TlsSettings",
    "TrustMode",
    "Webhook",
    "load_config",
    "parse_config",
    "read_file",
]
