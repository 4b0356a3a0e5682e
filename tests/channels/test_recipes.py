"""The ``body:`` recipes in docs/recipes.md: each YAML block is loaded from the doc and rendered."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from twisted.trial.unittest import SynchronousTestCase

from butler_tw.channels.request import build_request
from butler_tw.config import Webhook, parse_config
from butler_tw.core.alert import EventKind
from tests.config.test_config import with_hooks
from tests.support.receivers import make_alert

DOC = Path(__file__).resolve().parents[2] / "docs" / "recipes.md"
_BLOCK = re.compile(r"<!-- recipe: (\w+) -->\n```yaml\n(.*?)```", re.DOTALL)


def recipes() -> dict[str, Any]:
    return {name: yaml.safe_load(text) for name, text in _BLOCK.findall(DOC.read_text("utf-8"))}


def loaded(name: str) -> Webhook:
    (webhook,) = parse_config(with_hooks(*recipes()[name])).routes[EventKind.FAILED].webhooks
    return webhook


def rendered(name: str, **fields: str) -> Any:
    request = build_request(make_alert(**fields), loaded(name), 1700000000)
    assert request.body is not None
    assert (request.method, dict(request.headers)["Content-Type"]) == ("POST", "application/json")
    return json.loads(request.body)


def _texts(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [t for v in node.values() for t in _texts(v)]
    if isinstance(node, list):
        return [t for v in node for t in _texts(v)]
    return [node] if isinstance(node, str) else []


class RecipeTests(SynchronousTestCase):
    def test_bothRecipesAreInTheDoc(self) -> None:
        self.assertEqual(sorted(recipes()), ["jira", "servicenow"])

    def test_jira(self) -> None:
        alert = make_alert()
        fields = rendered("jira")["fields"]
        self.assertEqual(fields["project"], {"key": "OPS"})
        self.assertEqual(fields["issuetype"], {"name": "Bug"})
        self.assertEqual(fields["summary"], f"Qlik Sense reload failed: {alert.taskName}")
        self.assertEqual(fields["labels"], ["qlik-sense", "reload-failed"])
        doc = fields["description"]
        self.assertEqual((doc["type"], doc["version"]), ("doc", 1))
        self.assertEqual([n["type"] for n in doc["content"]], ["paragraph", "paragraph", "codeBlock"])
        for node in doc["content"]:
            (text,) = node["content"]
            self.assertEqual(text["type"], "text")
            self.assertTrue(text["text"])  # ADF refuses an empty text node
        self.assertEqual(doc["content"][2]["content"][0]["text"], alert.logMessage)

    def test_jiraLimits(self) -> None:
        fields = rendered("jira", taskName="T" * 500, logMessage="x" * 60_000, appName="")["fields"]
        self.assertLessEqual(len(fields["summary"]), 255)
        self.assertLessEqual(sum(len(t) for t in _texts(fields["description"])), 32_767)
        self.assertEqual(
            rendered("jira", logMessage="")["fields"]["description"]["content"][2]["content"][0]["text"],
            "(no log message)",
        )

    def test_servicenow(self) -> None:
        alert = make_alert()
        body = rendered("servicenow")
        self.assertEqual(body["short_description"], f"Qlik Sense reload failed: {alert.taskName}")
        self.assertIn(f"Task: {alert.taskName} ({alert.taskId})", body["description"])
        self.assertTrue(body["description"].endswith(alert.logMessage))
        self.assertEqual((body["urgency"], body["impact"], body["category"]), ("2", "3", "software"))
        self.assertEqual(body["correlation_id"], alert.alertId)
        self.assertLessEqual(len(rendered("servicenow", taskName="T" * 500)["short_description"]), 160)
