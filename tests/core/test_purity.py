"""The pure core stays pure: whole subpackages, checked in a fresh interpreter.

Every module of :mod:`butler_tw.core`, :mod:`butler_tw.config` and
:mod:`butler_tw.channels` is imported (found with ``pkgutil.walk_packages``,
so a new module is covered without touching this test), and then none of
:data:`FORBIDDEN` may be loaded: no reactor, no Deferred, no logger, no HTTP
client, no database, no TLS. :mod:`butler_tw.core` alone must also load no
Twisted at all and no ``socket`` (:data:`CORE_FORBIDDEN`): its clocked
decisions name ``IReactorTime`` in annotations only, since importing any
Twisted module loads ``socket`` and ``ssl`` through ``twisted.python.compat``.

What this cannot cover, and why:

- ``butler_tw.config`` and so ``butler_tw.channels`` load ``socket``:
  ``hyperlink`` (URL checks in :mod:`butler_tw.config.rules`) imports it for
  ``inet_pton``; it opens nothing.
- The check is at import time. *Validating* a config is not pure:
  :mod:`butler_tw.config.rules` imports ``OpenSSL`` to read a ``certCA``
  file and ``twisted.internet.endpoints`` to check ``butlerWebhook.http.listen``
  (with a stand-in reactor: ``tests.config.test_config`` checks that the
  global reactor stays out), both inside the function that needs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.support import REPO

#: The subpackages checked; each with every module below it.
PURE = ("butler_tw.core", "butler_tw.config", "butler_tw.channels")

#: Modules none of :data:`PURE` may load (a name covers its submodules).
FORBIDDEN = (
    "twisted.internet.reactor",
    "twisted.internet.defer",
    "twisted.internet.task",
    "twisted.internet.threads",
    "twisted.internet.protocol",
    "twisted.internet.endpoints",
    "twisted.internet.ssl",
    "twisted.logger",
    "twisted.application",
    "twisted.web",
    "treq",
    "sqlite3",
    "psycopg",
    "psycopg2",
    "OpenSSL",
    "ssl",
    "zope.interface",
)

#: Modules :mod:`butler_tw.core` may not load either.
CORE_FORBIDDEN = (*FORBIDDEN, "twisted", "socket")

#: Run in a fresh interpreter: imports every module of the packages in
#: argv[1] (JSON) and prints, as JSON, the modules found and, for each name
#: of argv[2] (JSON) that is loaded (or a module below it), the first module
#: whose import loaded it.
_PROBE = """
import importlib, json, pkgutil, sys

packages, forbidden = json.loads(sys.argv[1]), json.loads(sys.argv[2])

def loaded():
    return {f for f in forbidden if any(m == f or m.startswith(f + ".") for m in sys.modules)}

def fail(name):
    raise SystemExit(f"cannot import {name}")

found, culprit, before = [], {}, loaded()
for package in packages:
    for name in [package] + [
        m.name for m in pkgutil.walk_packages(importlib.import_module(package).__path__, package + ".", fail)
    ]:
        importlib.import_module(name)
        found.append(name)
        for module in sorted(loaded() - before - set(culprit)):
            culprit[module] = name
print(json.dumps({"file": sys.modules["butler_tw"].__file__, "found": found,
                  "preloaded": sorted(before), "loaded": culprit}))
"""


class PurityTests(SynchronousTestCase):
    def probe(self, packages: tuple[str, ...], forbidden: tuple[str, ...]) -> dict[str, object]:
        """Import every module of ``packages`` in a fresh interpreter, with this tree first on the path."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        result = subprocess.run(
            [sys.executable, "-c", _PROBE, json.dumps(packages), json.dumps(forbidden)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        report: dict[str, object] = json.loads(result.stdout)
        self.assertTrue(os.path.realpath(str(report["file"])).startswith(str(REPO)), report["file"])
        self.assertEqual(report["preloaded"], [])  # the interpreter itself loads none of them
        return report

    def assertPure(self, report: dict[str, object]) -> None:
        loaded = report["loaded"]
        assert isinstance(loaded, dict)
        if loaded:
            self.fail("; ".join(f"{module} is loaded by importing {by}" for module, by in loaded.items()))

    def test_pureSubpackages(self) -> None:
        """No module of core, config or channels loads the reactor, Deferreds, logging, HTTP, a database or TLS."""
        report = self.probe(PURE, FORBIDDEN)
        found = report["found"]
        assert isinstance(found, list)
        # The walk found every subpackage's modules, not just the packages.
        for module in ("butler_tw.core.delivery", "butler_tw.core.sources", "butler_tw.config.reloadplan"):
            self.assertIn(module, found)
        self.assertTrue(any(m.startswith("butler_tw.channels.") for m in found), found)
        self.assertPure(report)

    def test_coreLoadsNoTwisted(self) -> None:
        """:mod:`butler_tw.core` on its own loads no Twisted module at all, and no ``socket``."""
        report = self.probe(("butler_tw.core",), CORE_FORBIDDEN)
        self.assertPure(report)
