"""The ``twistd butler-webhook`` drop-in: found from a normal install, cheap to import.

Each check runs in a fresh interpreter, so what this test process has
already imported (the reactor, the working tree on ``sys.path``) cannot hide
a problem.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support.daemon import REPO, twistd

#: Seconds any one subprocess may take.
DEADLINE = 30

PLUGIN_FILE = REPO / "twisted" / "plugins" / "butler_tw_plugin.py"


class PluginTests(SynchronousTestCase):
    def isolated(self, code: str) -> dict[str, object]:
        """Run ``code`` with ``python -I`` in an empty directory; it prints one JSON object."""
        cwd = self.mktemp()
        os.makedirs(cwd)
        result = subprocess.run(
            [sys.executable, "-I", "-c", code],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def test_foundFromInstalledCopy(self) -> None:
        """``getPlugins(IServiceMaker)`` finds ``butler-webhook`` in the installed package, not the tree."""
        found = self.isolated(
            "import json, sys\n"
            "import butler_tw\n"
            "from twisted.plugin import getPlugins\n"
            "from twisted.application.service import IServiceMaker\n"
            "taps = [p.tapname for p in getPlugins(IServiceMaker)]\n"
            "plugin = sys.modules.get('twisted.plugins.butler_tw_plugin')\n"
            "print(json.dumps({'package': butler_tw.__file__, 'taps': taps,\n"
            "                  'plugin': getattr(plugin, '__file__', None), 'path': sys.path}))\n"
        )
        self.assertIn("butler-webhook", found["taps"])
        for key in ("package", "plugin"):
            where = str(found[key])
            self.assertIn("site-packages", Path(where).parts, f"{key}: {where}")
            self.assertFalse(Path(where).resolve().is_relative_to(REPO / "butler_tw"), where)
            self.assertFalse(Path(where).resolve().is_relative_to(REPO / "twisted"), where)
        self.assertNotIn(str(REPO), found["path"])

    def test_pluginImportIsCheap(self) -> None:
        """Importing the drop-in imports neither the reactor nor the daemon's modules."""
        found = self.isolated(
            "import importlib.util, json, sys\n"
            f"spec = importlib.util.spec_from_file_location('butler_tw_plugin', {str(PLUGIN_FILE)!r})\n"
            "module = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
            "watched = ('twisted.internet.reactor', 'butler_tw')\n"
            "before = sorted(m for m in sys.modules if m.startswith(watched))\n"
            "import twisted.internet.reactor\n"  # the control: the check does see a reactor
            "after = 'twisted.internet.reactor' in sys.modules\n"
            "print(json.dumps({'tapname': module.butlerWebhook.tapname, 'before': before, 'after': after}))\n"
        )
        self.assertEqual(found["tapname"], "butler-webhook")
        self.assertEqual(found["before"], [])
        self.assertTrue(found["after"])

    def test_noInitFiles(self) -> None:
        """``twisted/`` and ``twisted/plugins/`` are Twisted's namespace: no ``__init__.py``."""
        self.assertTrue(PLUGIN_FILE.is_file())
        for directory in (REPO / "twisted", REPO / "twisted" / "plugins"):
            self.assertFalse((directory / "__init__.py").exists(), directory)

    def test_twistdHelp(self) -> None:
        """``twistd butler-webhook --help`` exits 0 and documents ``--config``."""
        cwd = self.mktemp()
        os.makedirs(cwd)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        result = subprocess.run(
            [twistd(), "butler-webhook", "--help"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("--config", result.stdout)
        self.assertEqual(os.listdir(cwd), [], "twistd --help left files behind")
