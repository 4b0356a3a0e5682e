"""Renders per second: the butler format against three templated bodies (and the presets).

Pure CPU, no network: ``build_request`` (what the dispatcher calls per
attempt) on a plausible alert, in a loop, for each webhook. Run from the
working tree:

    PYTHONPATH=. .venv/bin/python bench/render.py [--seconds 2]

It prints one row per webhook and the machine (``nproc``, CPU model, Python).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from butler_tw.channels.request import build_request  # noqa: E402
from butler_tw.channels.templates import SAMPLES, compile_body  # noqa: E402
from butler_tw.config import Webhook  # noqa: E402
from butler_tw.core.alert import FIELD_ORDER  # noqa: E402

#: The failure every template is tried with at config load, with a longer log message.
ALERT = attrs.evolve(
    SAMPLES[0],
    logMessage="Connector reply error: SQL##f - SqlState: 08001, ErrorCode: 17, ErrorMsg: server not found "
    * 3,
)

SMALL = {"text": "{{ event }}: {{ taskName }} on {{ hostName }}"}
FLAT = {name: "{{ " + name + " }}" for name in FIELD_ORDER}
JIRA = {
    "fields": {
        "project": {"key": "OPS"},
        "issuetype": {"name": "Bug"},
        "summary": "{{ (event ~ ': ' ~ taskName) | truncate(255, true, '...', 0) }}",
        "labels": ["qlik-sense", "reload-{{ kind }}"],
        "description": {
            "type": "doc",
            "version": 1,
            "content": [
                {
                    "type": "paragraph",
                    "content": [{"type": "text", "text": "Task {{ taskName }} on {{ hostName }}"}],
                },
                {"type": "paragraph", "content": [{"type": "text", "text": "App {{ appName or '(none)' }}"}]},
                {
                    "type": "codeBlock",
                    "content": [{"type": "text", "text": "{{ logMessage | truncate(30000) }}"}],
                },
            ],
        },
    }
}


def webhooks() -> list[tuple[str, Webhook]]:
    base = Webhook(
        key="reloadTaskFailure.webhooks[0]", description="", url="https://r.example/hook", method="POST"
    )
    return [
        ("butler (POST JSON)", base),
        ("butler (GET query)", attrs.evolve(base, method="GET")),
        ("body: 1 string, 3 names", attrs.evolve(base, body=compile_body(SMALL))),
        ("body: 11 strings, 1 name each", attrs.evolve(base, body=compile_body(FLAT))),
        ("body: Jira ADF, 6 templates + filters", attrs.evolve(base, body=compile_body(JIRA))),
        ("preset teams", attrs.evolve(base, format="teams")),
        ("preset slack", attrs.evolve(base, format="slack")),
        ("preset pagerduty", attrs.evolve(base, format="pagerduty", routingKey="k")),
    ]


def rate(webhook: Webhook, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(200):
            build_request(ALERT, webhook, 1700000000)
        n += 200
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per row (default 2)")
    args = parser.parse_args()
    print(f"machine: nproc {os.cpu_count()}, {cpu_model()}, Python {platform.python_version()}")
    print("| webhook | renders/s | µs each |\n|---|---|---|")
    for name, webhook in webhooks():
        r = rate(webhook, args.seconds)
        print(f"| {name} | {r:,.0f} | {1e6 / r:.1f} |")


if __name__ == "__main__":
    main()
