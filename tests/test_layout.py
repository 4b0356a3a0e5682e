"""The layout the README shows is the package's: every module is in its tree."""

from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase

from tests.support import REPO


class ArchitectureTests(SynchronousTestCase):
    def test_readmeTreeNamesEveryModule(self) -> None:
        readme = (REPO / "README.md").read_text(encoding="utf-8")
        section = readme[readme.index("## Architecture") : readme.index("## For developers")]
        tree = section[section.index("```") : section.index("```", section.index("```") + 3)]
        for path in sorted((REPO / "butler_tw").rglob("*.py")):
            if path.name.startswith("__"):
                continue
            package = path.parent.name + "/"
            self.assertIn(package, tree, f"{package} is not in the README's tree")
            self.assertTrue(
                re.search(rf"\b{re.escape(path.stem)}\b", tree),
                f"{path.relative_to(REPO)} is not in the README's architecture tree",
            )
