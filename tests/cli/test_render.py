"""``butler-tw render``: the request as it would go out, printed and not sent."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from tests.support.cli import run_main, write_config
from tests.support.daemon import make_config, webhook

DATAGRAM = (
    "/scheduler-task-aborted/;pro2-win1;Reload Finance KPIs;Finance KPIs;LAB\\anna;"
    "dec2a02a-1680-44ef-8dc2-e2bfb180af87;a4c6e8f0-1b3d-4f5a-8c7e-9d0b2f4a6c81;"
    "2025-11-03 10:42:31,870;INFO;14a81bf5-f81c-4047-b1a1-193b0920de28;Execution State Change to Aborting"
)


class RenderTests(SynchronousTestCase):
    def setUp(self) -> None:
        doc = make_config(
            failure=[
                webhook(
                    "https://hooks.example.com/hook?token=QUERYSECRET",
                    "POST",
                    "Chat",
                    format="slack",
                    auth={"type": "bearer", "token": "TOKENSECRET"},
                ),
                webhook("http://h.example/t", "POST", "Tmpl", body={"t": "{{ taskName }} ({{ kind }})"}),
            ],
            aborted=[webhook("http://h.example/aborts", "GET", "Aborts")],
        )
        self.config = write_config(self, doc)

    def test_presetWithAuth(self) -> None:
        status, out, err = run_main("render", "-c", self.config, "--webhook", "Chat")
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(
            lines[0], "# reloadTaskFailure.webhooks[0] (Chat), format slack, a reloadTaskFailure alert"
        )
        self.assertTrue(lines[1].startswith("POST https://hooks.example.com:443/"), lines[1])
        self.assertIn("Authorization: <redacted>", lines)
        body = json.loads(lines[lines.index("") + 1])
        self.assertIn("blocks", body)
        for secret in ("QUERYSECRET", "TOKENSECRET"):
            self.assertNotIn(secret, out)

    def test_templateWithDatagram(self) -> None:
        datagram = DATAGRAM.replace("aborted", "failed").replace("Aborting", "Max retries reached")
        status, out, err = run_main("render", "-c", self.config, "--webhook", "Tmpl", "--datagram", datagram)
        self.assertEqual((status, err), (0, ""))
        self.assertIn('{"t":"Reload Finance KPIs (failed)"}', out)

    def test_getShowsTheQuery(self) -> None:
        status, out, _ = run_main("render", "-c", self.config, "--webhook", "Aborts", "--datagram", DATAGRAM)
        self.assertEqual(status, 0)
        self.assertIn("GET http://h.example:80/", out)
        self.assertIn("(no body)", out)

    def test_unknownWebhook(self) -> None:
        status, out, err = run_main("render", "-c", self.config, "--webhook", "Nope")
        self.assertEqual((status, out), (2, ""))
        self.assertIn("no webhook in", err)

    def test_badDatagram(self) -> None:
        status, _, err = run_main("render", "-c", self.config, "--webhook", "Chat", "--datagram", "garbage")
        self.assertEqual(status, 2)
        self.assertTrue(err.startswith("butler-tw render: --datagram: "), err)
