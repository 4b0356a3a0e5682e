"""The ``butler-tw`` command in a test: a config file for it, and a run in this process.

:func:`run_main` runs the commands that need no reactor; :func:`run_command`
runs ``send-test`` and ``receive`` on the running one (``react()`` cannot run
inside trial), through :func:`butler_tw.cli.main.main_on_reactor`.
"""

from __future__ import annotations

import io
from typing import Any

import yaml
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from butler_tw.cli.main import main, main_on_reactor
from tests.support.daemon import free_udp_port

#: Secrets planted in webhook URLs: none may appear in any output.
SECRETS = ("QUERYSECRET", "PASSWORDSECRET", "alice", "PATHSECRET")


def write_config(testCase: TestCase | SynchronousTestCase, doc: dict[str, Any]) -> str:
    """``doc`` (a :func:`~tests.support.daemon.make_config` document) with a UDP section, as a YAML file.

    The UDP port is one free now (check-config tries to bind it), unless ``doc`` has one.
    """
    udp = doc["Butler"].setdefault("udpServerConfig", {"enable": True, "serverHost": "127.0.0.1"})
    udp.setdefault("portTaskFailure", free_udp_port())
    path = testCase.mktemp() + ".yaml"
    with open(path, "w") as f:
        yaml.safe_dump(doc, f)
    return path


def run_main(*argv: str) -> tuple[int, str, str]:
    """``butler-tw ARGV`` for the commands that need no reactor: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def run_command(*argv: str) -> Deferred[tuple[int, str, str]]:
    """``butler-tw ARGV`` on the running reactor: fires with (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    d = main_on_reactor(list(argv), reactor, out, err)
    return d.addCallback(lambda status: (status, out.getvalue(), err.getvalue()))
