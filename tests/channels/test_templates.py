"""``body:`` templates: compiled and tried at config load, errors with their key path; data is never code."""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from butler_tw.channels.formats import render
from butler_tw.channels.request import build_request
from butler_tw.channels.templates import NAMES, RenderError, TemplateProblem, compile_body, context
from butler_tw.config import ConfigError, Webhook, parse_config
from butler_tw.core.alert import EventKind
from tests.config.test_config import hook, with_hooks
from tests.support.receivers import listen_http, make_alert, make_webhook, start_client

ENTRY = "Butler.webhookNotification.reloadTaskFailure.webhooks"

TEAMS_LIKE: dict[str, Any] = {
    "type": "message",
    "attachments": [
        {
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "body": [{"text": "{{ event }}"}, {"text": "{{ hostName }}"}, {"text": "{{ taskname }}"}]
            },
        }
    ],
}


def templated(tree: Any, url: str = "http://receiver.example/hook", **settings: Any) -> Webhook:
    return attrs.evolve(make_webhook(url), body=compile_body(tree), **settings)


class LoadTimeTests(SynchronousTestCase):
    def problems(self, *hooks: dict[str, Any]) -> tuple[str, ...]:
        return self.assertRaises(ConfigError, parse_config, with_hooks(*hooks)).problems

    def test_undefinedNameWithKeyPath(self) -> None:
        (problem,) = self.problems(hook(), hook(body=TEAMS_LIKE))
        self.assertTrue(
            problem.startswith(
                f"{ENTRY}[1].body.attachments[0].content.body[2].text: undefined name 'taskname'"
            ),
            problem,
        )
        self.assertIn("did you mean 'taskName'?", problem)

    def test_undefinedInTheAbortedBranchIsCaughtToo(self) -> None:
        body = {"summary": "{% if kind == 'aborted' %}{{ nope }}{% endif %}"}
        (problem,) = self.problems(hook(body=body))
        self.assertIn(f"{ENTRY}[0].body.summary: undefined name 'nope'", problem)

    def test_syntaxError(self) -> None:
        (problem,) = self.problems(hook(body={"a": ["ok", "{{ taskName "]}))
        self.assertIn(f"{ENTRY}[0].body.a[1]: template syntax error", problem)

    def test_sandboxRefusesInternals(self) -> None:
        (problem,) = self.problems(hook(body={"a": "{{ taskName.__class__.__mro__ }}"}))
        self.assertIn(f"{ENTRY}[0].body.a:", problem)
        (problem,) = self.problems(hook(body={"a": "{% set x = [] %}{{ x.append(1) }}"}))
        self.assertIn("SecurityError", problem)  # the immutable sandbox: no mutating methods

    def test_bodyMustBeATree(self) -> None:
        (problem,) = self.problems(hook(body="{{ taskName }}"))
        self.assertEqual(
            problem, f"{ENTRY}[0].body: expected a mapping or a list (the JSON body), got a string"
        )

    def test_bodyOnGetRefused(self) -> None:
        (problem,) = self.problems(hook(httpMethod="GET", body={"a": "b"}))
        self.assertIn(f"{ENTRY}[0].body: a GET request has no body", problem)

    def test_goodTemplateLoads(self) -> None:
        config = parse_config(with_hooks(hook(body={"summary": "{{ taskName }} on {{ hostName }}", "n": 3})))
        (webhook,) = config.routes[EventKind.FAILED].webhooks
        assert webhook.body is not None
        self.assertEqual(
            webhook.body.render(context(make_alert(taskName="T", hostName="H"))),
            {"summary": "T on H", "n": 3},
        )

    def test_equalTreesAreEqualWebhooks(self) -> None:
        """A reload that leaves the body alone keeps the webhook as it is."""
        one = parse_config(with_hooks(hook(body={"a": "{{ taskName }}"})))
        two = parse_config(with_hooks(hook(body={"a": "{{ taskName }}"})))
        self.assertEqual(one.webhooks, two.webhooks)
        self.assertNotEqual(
            one.webhooks, parse_config(with_hooks(hook(body={"a": "{{ appName }}"}))).webhooks
        )

    def test_namesAreTheSeedsPlusKindAndAlertId(self) -> None:
        self.assertEqual(set(context(make_alert())), set(NAMES))
        self.assertEqual(context(make_alert(EventKind.ABORTED))["kind"], "aborted")
        self.assertEqual(context(make_alert())["alertId"], make_alert().alertId)


class InjectionTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_datagramValuesAreDataNotCode(self) -> Any:
        """Template syntax and JSON syntax in the log message arrive literally, at a real receiver."""
        receiver = listen_http(self)
        webhook = templated(
            {"text": "Failed: {{ logMessage }}", "task": "{{ taskName }}"}, receiver.url("/hook")
        )
        evil = '{{ 7*7 }} {% for x in range(3) %}X{% endfor %} "}, "injected": true, {"a": "\\'
        alert = make_alert(logMessage=evil, taskName="{{ config }}")
        outcome = yield start_client(self, webhook).send(build_request(alert, webhook, 1))
        self.assertEqual(outcome.status, 200)
        (seen,) = receiver.requests
        self.assertEqual(json.loads(seen.body), {"text": f"Failed: {evil}", "task": "{{ config }}"})

    def test_escapingIsBySerialising(self) -> None:
        webhook = templated({"m": "{{ logMessage }}"})
        body = render(make_alert(logMessage='a"b\\c\n\u2028'), webhook, 1).body
        self.assertEqual(body, b'{"m":"a\\"b\\\\c\\n\xe2\x80\xa8"}')

    def test_bodyOverridesPreset(self) -> None:
        webhook = templated({"only": "{{ kind }}"}, format="teams")
        self.assertEqual(json.loads(render(make_alert(), webhook, 1).body or b""), {"only": "failed"})

    def test_nonStringLeavesKept(self) -> None:
        webhook = templated([1, True, None, 2.5, {"k": []}])
        self.assertEqual(
            json.loads(render(make_alert(), webhook, 1).body or b""), [1, True, None, 2.5, {"k": []}]
        )


class SendTimeTests(SynchronousTestCase):
    def test_renderErrorNamesThePath(self) -> None:
        webhook = templated({"a": {"b": "{% if logMessage == 'boom' %}{{ missing }}{% endif %}"}})
        self.assertEqual(json.loads(render(make_alert(), webhook, 1).body or b""), {"a": {"b": ""}})
        e = self.assertRaises(RenderError, render, make_alert(logMessage="boom"), webhook, 1)
        self.assertIn("body.a.b: undefined name 'missing'", str(e))

    def test_compileBodyRaisesTemplateProblem(self) -> None:
        e = self.assertRaises(TemplateProblem, compile_body, {"x": "{{ nope }}"}, "here.body")
        self.assertEqual(e.path, "here.body.x")
