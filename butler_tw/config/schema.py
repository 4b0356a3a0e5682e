"""Which keys the config file may hold, their types, defaults and rules: the schema as a table.

It follows Butler 16's own JSON schema (``config-file-schema.js``) key by key:

- ``Butler.webhookNotification`` and each of its blocks allow no unknown key,
  as Butler's ``additionalProperties: false`` says; a key that belongs one
  level in or out is named with where it was probably meant to go.
- A webhook entry and ``Butler.udpServerConfig`` take unknown keys (Butler
  ignores them in an entry; in ``udpServerConfig`` they are warned about, so
  that a typo shows): each is warned about once, with a "did you mean".
- ``httpMethod`` is trimmed and upper-cased before it is checked, as Butler does.
- Butler's other sections are listed as ignored; Butler's other webhook
  blocks (``serviceMonitor``, ...) are checked for shape only.
- ``butlerWebhook`` is ours: every key is known, an unknown one is refused.

Butler requires some keys that this daemon does without (``cert`` in every
webhook entry, every block of ``webhookNotification``): a file without them
is accepted here.
"""

from __future__ import annotations

from butler_tw.config import headers, rules
from butler_tw.config.model import (
    DEFAULT_DEAD_LETTER_RETENTION,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_BUFFERED_ALERTS,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_PENDING_IN_MEMORY,
    DEFAULT_RATE_LIMIT,
    DEFAULT_RECEIVE_BUFFER,
    DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_SOURCE_RATE_LIMIT,
    DEFAULT_STATE_DIR,
    DEFAULT_TIMEOUT,
    FORMAT_NAMES,
    LOG_FORMATS,
    LOG_LEVELS,
    METHODS,
    PRIORITIES,
    SEVERITIES,
    TLS_VERSIONS,
    TlsSettings,
)
from butler_tw.config.proxy import proxy_setting
from butler_tw.config.secrets import secret
from butler_tw.config.spec import (
    EMPTY,
    Anything,
    Bool,
    ListOf,
    Number,
    Rule,
    Section,
    Spec,
    Text,
    Unknown,
)
from butler_tw.config.store import store as store_rule

DAY = 86400.0

#: The webhook blocks of ``Butler.webhookNotification`` that this daemon sends for.
ALERT_BLOCKS = ("reloadTaskFailure", "reloadTaskAborted")
#: Butler's other webhook blocks: accepted, checked for shape, ignored.
OTHER_BLOCKS = ("serviceMonitor", "qlikSenseServerLicenseMonitor", "qlikSenseServerLicenseExpiryAlert")

#: The sections directly under ``Butler`` in Butler 16's template: none of them is a typo.
BUTLER_SECTIONS = frozenset(
    """logLevel fileLogging logDirectory anonTelemetry systemInfo configVisualisation heartbeat
    dockerHealthCheck uptimeMonitor thirdPartyToolsCredentials influxDb scriptLog qlikSenseUrls
    genericUrls qlikSenseVersion qlikSenseLicense teamsNotification slackNotification
    emailNotification incidentTool webhookNotification scheduler keyValueStore mqttConfig
    udpServerConfig restServerConfig fileCopyApprovedDirectories fileMoveApprovedDirectories
    fileDeleteApprovedDirectories restServerApiDocGenerate restServerEndpointsEnable
    restServerEndpointsConfig startTaskFilter serviceMonitor qlikSenseCloud cert configEngine
    configQRS configDirectories""".split()
)

WN = "Butler.webhookNotification"
UDP = "Butler.udpServerConfig"


def _webhook(rules_on: bool) -> Section:
    """One entry of a block's ``webhooks`` list."""

    def rule(r: Rule) -> Rule | None:
        return r if rules_on else None

    return Section(
        required=True,
        unknown=Unknown.WARN,
        ignoredBecause=" (Butler ignores it too)",
        rule=rule(rules.webhook_entry),
        keys={
            "description": Text(default=""),
            "webhookURL": Text(required=True, rule=rule(secret(rules.webhook_url))),
            "httpMethod": Text(
                required=True,
                normalise=lambda s: s.strip().upper(),
                choices=METHODS,
                choicesText="GET, POST or PUT (any case)",
            ),
            "cert": Section(
                keys={
                    "enable": Bool(default=False),
                    "rejectUnauthorized": Bool(default=True),
                    "certCA": Text(),
                    # butler-tw's own (Butler ignores them): read whether or not enable is true
                    "clientCert": Text(),
                    "clientKey": Text(),
                    "minVersion": Text(
                        default=TLS_VERSIONS[0],
                        normalise=rules.tls_version,
                        choices=TLS_VERSIONS,
                        choicesText=" or ".join(TLS_VERSIONS),
                    ),
                    "serverName": Text(),
                },
                default=TlsSettings(),
                rule=rule(rules.tls_settings),
            ),
            # butler-tw's own keys (Butler ignores them)
            "name": Text(default=""),
            "timeout": Number(default=DEFAULT_TIMEOUT, low=0.1, high=600),
            "concurrency": Number(low=1, high=256, whole=True),
            "retrySchedule": Anything(rule=rule(rules.retry_schedule)),
            "maxAge": Number(low=1, high=30 * DAY),
            "logFullPath": Bool(default=False),
            "match": Anything(default=(), rule=rule(rules.routing_rules)),
            "exclude": Anything(default=(), rule=rule(rules.routing_rules)),
            "headers": Anything(rule=rule(headers.headers)),
            "auth": Section(
                keys={
                    "type": Text(
                        required=True,
                        missing=" (bearer, basic or header)",
                        normalise=lambda s: s.strip().lower(),
                        choices=headers.AUTH_TYPES,
                        choicesText="bearer, basic or header",
                    ),
                    **{
                        field: Text(rule=rule(secret()))
                        for fields in headers.AUTH_FIELDS.values()
                        for field in fields
                    },
                },
                rule=rule(headers.auth),
            ),
            "signing": Section(
                keys={"secret": Text(required=True, rule=rule(secret(headers.signing_secret)))},
                rule=rule(headers.signing),
            ),
            # what is sent: see butler_tw.channels.formats
            "format": Text(
                default="butler",
                normalise=lambda s: s.strip().lower(),
                choices=FORMAT_NAMES,
                choicesText="butler, teams, slack, discord, pagerduty or opsgenie",
            ),
            "body": Anything(rule=rule(rules.body_template)),
            "contentType": Anything(rule=rule(rules.content_type)),
            "routingKey": Anything(rule=rule(secret(rules.secret_text))),
            "severity": Text(
                normalise=lambda s: s.strip().lower(),
                choices=SEVERITIES,
                choicesText="critical, error, warning or info",
            ),
            "priority": Text(
                normalise=lambda s: s.strip().upper(), choices=PRIORITIES, choicesText="one of P1 to P5"
            ),
            "proxy": Anything(rule=rule(secret(proxy_setting))),  # its credentials may be references
        },
    )


WEBHOOK = _webhook(rules_on=True)
WEBHOOK_KEYS = tuple(WEBHOOK.keys)


def _block(name: str, rules_on: bool) -> Section:
    """A block of ``webhookNotification``: a rate limit and a list of webhooks."""
    entry = f"{WN}.{name}.webhooks"
    return Section(
        keys={
            "rateLimit": Number(default=DEFAULT_RATE_LIMIT, low=0, high=366 * DAY),
            "webhooks": ListOf(item=_webhook(rules_on), expected="a list of webhooks"),
        },
        misplaced={
            key: f"is a webhook setting: it belongs inside an entry of {entry} "
            f"(indented under a '- description: ...' line)"
            for key in WEBHOOK_KEYS
        },
    )


def _misplaced_block(name: str) -> str:
    return f"is a block of {WN}: indent it under webhookNotification ({WN}.{name})"


WEBHOOK_NOTIFICATION = Section(
    switch="enable",  # off: the blocks are checked for shape only (placeholder URLs are fine)
    keys={
        "enable": Bool(default=False),
        **{name: _block(name, rules_on=True) for name in ALERT_BLOCKS},
        **{name: _block(name, rules_on=False) for name in OTHER_BLOCKS},
    },
    misplaced={
        "webhooks": f"belongs inside a block: indent it one more level, under {WN}.reloadTaskFailure "
        f"or {WN}.reloadTaskAborted",
        "rateLimit": f"belongs inside a block: indent it one more level, under {WN}.reloadTaskFailure "
        f"or {WN}.reloadTaskAborted",
    },
)

UDP_SERVER_CONFIG = Section(
    required=True,
    unknown=Unknown.WARN,
    keys={
        "enable": Bool(default=False),
        "serverHost": Text(required=True),
        "portTaskFailure": Anything(
            required=True, missing=" (Qlik's log appender usually sends to 9998)", rule=rules.port
        ),
        "receiveBufferBytes": Number(  # butler-tw's own
            default=DEFAULT_RECEIVE_BUFFER, low=65536, high=2**30, whole=True
        ),
        "maxMessageSize": Number(default=DEFAULT_MAX_MESSAGE_SIZE, low=256, high=65535, whole=True),
        "enableSourceValidation": Bool(default=False),
        "allowedSources": ListOf(item=Anything(rule=rules.source_entry), default=[]),
        "messageQueue": Section(
            unknown=Unknown.WARN,
            keys={
                "enable": Bool(default=True),  # accepted: the queue is always on, as in Butler
                "maxConcurrent": Number(low=1, high=256, whole=True),
                # Butler's in-memory queue bound (200 in its template): read, and not used. Every
                # accepted alert goes to the outbox on disk; butlerWebhook.maxBufferedAlerts bounds
                # what waits in memory for a write.
                "maxSize": Number(low=1, high=10**7, whole=True),
                "backpressureThreshold": Number(low=0.01, high=100),
            },
            default=EMPTY,
        ),
        "rateLimit": Section(
            unknown=Unknown.WARN,
            keys={
                "enable": Bool(default=False),
                "maxMessagesPerMinute": Number(
                    default=DEFAULT_SOURCE_RATE_LIMIT, low=1, high=10**7, whole=True
                ),
            },
            default=EMPTY,
        ),
        "deduplication": Section(
            unknown=Unknown.WARN,
            keys={"enable": Bool(default=True), "ttlMinutes": Number(low=0, high=7 * 24 * 60)},
            default=EMPTY,
        ),
        "queueMetrics": Anything(),  # Butler's InfluxDB queue metrics: ignored
    },
)

BUTLERWEBHOOK = Section(
    keys={
        "shutdownGracePeriod": Number(default=DEFAULT_SHUTDOWN_GRACE, low=0, high=600),
        "stateDir": Text(default=DEFAULT_STATE_DIR),
        # The outbox: SQLite in stateDir, or PostgreSQL shared by several daemons.
        "store": Anything(rule=secret(store_rule)),
        "instanceName": Anything(rule=rules.instance_name),
        "leaseSeconds": Number(default=DEFAULT_LEASE_SECONDS, low=5, high=3600),
        # A process of its own empties the UDP socket (bursts do not depend on rmem_max).
        "intakeProcess": Bool(default=True),
        # The SQLite outbox's writer in a process of its own (the second core).
        "storeProcess": Bool(default=True),
        "maxBufferedAlerts": Number(default=DEFAULT_MAX_BUFFERED_ALERTS, low=100, high=10**7, whole=True),
        # Per webhook; beyond, pending deliveries wait in the outbox only (memory stays flat).
        "maxPendingInMemory": Number(default=DEFAULT_MAX_PENDING_IN_MEMORY, low=10, high=10**7, whole=True),
        "delivery": Section(
            keys={
                "retrySchedule": Anything(rule=rules.retry_schedule),
                "maxAge": Number(low=1, high=30 * DAY),
                "deadLetterRetention": Number(default=DEFAULT_DEAD_LETTER_RETENTION, low=0, high=3660 * DAY),
            },
            default=EMPTY,
        ),
        "http": Section(keys={"listen": Anything(rule=rules.endpoint)}, default={}),
        "log": Section(
            keys={
                "format": Text(
                    default="text", normalise=str.lower, choices=LOG_FORMATS, choicesText="text or json"
                ),
                "level": Text(
                    default="info",
                    normalise=rules.log_level,
                    choices=LOG_LEVELS,
                    choicesText=f"one of {', '.join(LOG_LEVELS)}",
                ),
            },
            default=EMPTY,
        ),
    },
    default=EMPTY,
)

BUTLER = Section(
    required=True,
    unknown=Unknown.IGNORE,
    knownElsewhere=BUTLER_SECTIONS,
    keys={"udpServerConfig": UDP_SERVER_CONFIG, "webhookNotification": WEBHOOK_NOTIFICATION},
    misplaced={
        **{
            name: _misplaced_block(name)
            for name in (*ALERT_BLOCKS, *OTHER_BLOCKS)
            if name not in BUTLER_SECTIONS
        },
        "webhooks": f"belongs inside a block of {WN}: indent it under webhookNotification.reloadTaskFailure "
        "or .reloadTaskAborted",
        **{
            key: f"is a setting of {UDP}: indent it under udpServerConfig"
            for key in ("serverHost", "portTaskFailure", "enableSourceValidation", "allowedSources")
        },
    },
)

#: The whole file.
FILE: Spec = Section(
    required=True,
    keys={"Butler": BUTLER, "butlerWebhook": BUTLERWEBHOOK},
    misplaced={
        key: f"belongs under Butler: indent it under 'Butler:' (Butler.{key})"
        for key in ("udpServerConfig", "webhookNotification")
    },
)
