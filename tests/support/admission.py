"""What the admission and gate unit tests share: a config with one webhook, and a dispatcher that records."""

from __future__ import annotations

from typing import Any

from butler_tw.config import Config, parse_config
from butler_tw.core.delivery import Delivery


class FakeDispatcher:
    def __init__(self) -> None:
        self.submitted: list[Delivery] = []

    def submit(self, delivery: Delivery) -> None:
        self.submitted.append(delivery)


def config(rateLimit: float = 300, **udp: Any) -> Config:
    """Failures on, one POST webhook at ``rateLimit``; ``udp``: more ``udpServerConfig`` keys."""
    return parse_config(
        {
            "Butler": {
                "udpServerConfig": {
                    "enable": True,
                    "serverHost": "127.0.0.1",
                    "portTaskFailure": 9998,
                    **udp,
                },
                "webhookNotification": {
                    "enable": True,
                    "reloadTaskFailure": {
                        "rateLimit": rateLimit,
                        "webhooks": [{"webhookURL": "http://h/a", "httpMethod": "POST"}],
                    },
                },
            }
        }
    )
