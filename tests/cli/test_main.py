"""``butler-tw``'s command line: ``-c/--config`` for every command, and the command lines messages suggest."""

from __future__ import annotations

import ast
import io
import re
import shlex
import socket
import sys
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from butler_tw.cli import main as cli
from butler_tw.core.wireformat import Parsed, parse
from butler_tw.core.words import admin_command
from butler_tw.daemon.startup import EX_CONFIG
from tests.support import REPO
from tests.support.cli import run_command, run_main, write_config
from tests.support.daemon import make_config


class ConfigOptionTests(TestCase):
    """Every command that reads the config takes ``-c F`` and ``--config F``, and defaults to the same file."""

    #: Each command that reads the config, with the arguments it needs besides.
    COMMANDS = (
        ("check-config",),
        ("deliveries",),
        ("replay", "--all-dead"),
        ("emit",),
        ("send-test",),
    )

    def setUp(self) -> None:
        doc = make_config()
        doc["Butler"]["udpServerConfig"] = {"enable": True, "serverHost": "127.0.0.1", "portTaskFailure": "x"}
        self.broken = write_config(self, doc)

    @inlineCallbacks
    def run_any(self, *argv: str) -> Any:
        if argv[0] == "send-test":
            result = yield run_command(*argv)
            return result
        return run_main(*argv)

    @inlineCallbacks
    def assertReads(self, path: str, *argv: str) -> Any:
        """``argv`` read ``path``: its config error, with the key path, and exit status 78."""
        status, out, err = yield self.run_any(*argv)
        self.assertEqual((status, out), (EX_CONFIG, ""), (argv, err))
        self.assertIn(f"butler-tw: {path}: 1 problem", err, argv)
        self.assertIn("Butler.udpServerConfig.portTaskFailure", err, argv)

    @inlineCallbacks
    def test_shortAndLong(self) -> Any:
        for command, *rest in self.COMMANDS:
            for flag in ("-c", "--config"):
                yield self.assertReads(self.broken, command, flag, self.broken, *rest)

    @inlineCallbacks
    def test_oneDefault(self) -> Any:
        self.assertEqual(cli.DEFAULT_CONFIG, "/etc/butler-tw/butler.yaml")
        self.patch(cli, "DEFAULT_CONFIG", self.broken)
        for argv in self.COMMANDS:
            yield self.assertReads(self.broken, *argv)

    def test_daemonTheSame(self) -> None:
        """``twistd butler-webhook`` takes -c/--config too, with the same default."""
        from butler_tw.daemon.startup import DEFAULT_CONFIG
        from butler_tw.daemon.tap import Options

        self.assertEqual(Options()["config"], DEFAULT_CONFIG)
        for flag in ("-c", "--config"):
            stderr = io.StringIO()
            self.patch(sys, "stderr", stderr)
            e = self.assertRaises(SystemExit, Options().parseOptions, [flag, self.broken])
            self.assertEqual(e.code, EX_CONFIG)
            self.assertIn(f"butler-webhook: {self.broken}: 1 problem", stderr.getvalue())

    def test_emitToTheConfiguredPort(self) -> None:
        """``emit -c F`` without HOST:PORT sends where F's daemon listens (loopback for 0.0.0.0)."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        doc = make_config()
        doc["Butler"]["udpServerConfig"] = {
            "enable": True,
            "serverHost": "0.0.0.0",  # noqa: S104
            "portTaskFailure": s.getsockname()[1],
        }
        status, out, err = run_main("emit", "-c", write_config(self, doc))
        self.assertEqual((status, err), (0, ""))
        self.assertIn(f"to 127.0.0.1:{s.getsockname()[1]}", out)
        self.assertIsInstance(parse(s.recv(65535)), Parsed)

    def test_adminCommandsParse(self) -> None:
        """The commands log lines build (``words.admin_command``) parse, with the config they name."""
        for path in (cli.DEFAULT_CONFIG, "/srv/qlik butler/production.yaml"):
            for line in (
                admin_command(path, "deliveries", "--state", "dead"),
                admin_command(path, "replay", "0123abcd"),  # an alert id: all its deliveries
            ):
                argv = shlex.split(line)
                self.assertEqual(argv[0], "butler-tw")
                args = cli.build_parser().parse_args(argv[1:])
                self.assertEqual(args.config, path, line)

    def test_suggestedCommandsParse(self) -> None:
        """Every command line a message of the package quotes (`` `butler-tw X ARGS` `` or in
        parentheses) parses as printed; a bare `` `butler-tw replay` `` names a command, not a line."""
        found: list[str] = []
        for path in sorted((REPO / "butler_tw").rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docstrings = {
                id(node.value)
                for node in ast.walk(tree)
                if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            }
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and id(node) not in docstrings
                ):
                    found += re.findall(r"(?<![`\w])[`(]butler-tw ([^`)]+)[`)]", node.value)
        self.assertIn("replay", found)
        for line in found:
            argv = re.sub(r"\{\w+\}", "0123abcd", line).split()
            if len(argv) == 1:
                continue
            args = cli.build_parser().parse_args(argv)
            self.assertEqual(getattr(args, "config", cli.DEFAULT_CONFIG), cli.DEFAULT_CONFIG, line)
