"""The shipped systemd unit and sysctl file: hardened, installable as the README says, and enough for the buffer.

The security score and ``verify`` need ``systemd-analyze`` (Debian's
``systemd`` package; ``security --offline=yes`` needs systemd 250 or later):
without it those tests skip and say so. They need no running systemd.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from butler_tw.config import DEFAULT_RECEIVE_BUFFER
from tests.support import REPO

UNIT = REPO / "contrib" / "systemd" / "butler-webhook.service"
SYSCTL = REPO / "contrib" / "sysctl.d" / "60-butler-tw.conf"
README = REPO / "README.md"

#: The exposure score (0 safest, 10 worst) the unit must not exceed.
MAX_EXPOSURE = 2.0


def unit_values(key: str) -> list[str]:
    """Every value of ``key=`` in the unit, in order (comments skipped)."""
    values = []
    for line in UNIT.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith(("#", ";")) and name.strip() == key:
            values.append(value.strip())
    return values


def systemd_step_commands() -> list[str]:
    """The commands of the README's "Installing it as a systemd service, step by step" block."""
    text = README.read_text()
    section = text[text.index("### Installing it as a systemd service, step by step") :]
    block = section[section.index("```sh\n") + len("```sh\n") :]
    block = block[: block.index("```")]
    commands = []
    for line in block.splitlines():
        command = line.split("#", 1)[0].strip()
        if command:
            commands.append(command)
    return commands


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``systemd-analyze ARGS``, or skip loudly if it is not installed."""
    if shutil.which("systemd-analyze") is None:
        raise SkipTest(
            "systemd-analyze is not installed, so the systemd unit's security score is NOT checked: "
            "apt-get install systemd (no running systemd needed)"
        )
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False)


class UnitSecurityTests(SynchronousTestCase):
    def test_exposureScore(self) -> None:
        """``systemd-analyze security --offline=yes`` rates the unit 2.0 or lower."""
        result = systemd_analyze("security", "--offline=yes", "--no-pager", str(UNIT))
        if "--offline" in result.stderr and ("unrecognized" in result.stderr or "unknown" in result.stderr):
            raise SkipTest(
                "this systemd-analyze has no --offline (systemd < 250), so the unit's security "
                f"score is NOT checked: {result.stderr.strip()}"
            )
        match = re.search(
            r"Overall exposure level for butler-webhook\.service: (\d+(?:\.\d+)?)", result.stdout
        )
        self.assertIsNotNone(match, f"no score in:\n{result.stdout}\n{result.stderr}")
        assert match is not None
        score = float(match.group(1))
        failing = "\n".join(line for line in result.stdout.splitlines() if line.startswith("✗"))
        self.assertLessEqual(score, MAX_EXPOSURE, f"{match.group(0)}; the settings that cost:\n{failing}")

    def test_verify(self) -> None:
        """``systemd-analyze verify`` finds nothing wrong but the venv not installed here."""
        result = systemd_analyze("verify", "--man=no", str(UNIT))
        problems = [
            line
            for line in (result.stdout + result.stderr).splitlines()
            if line.strip()
            # The install path exists only after the README's steps.
            and "Command /opt/butler-tw/venv/bin/twistd is not executable" not in line
        ]
        self.assertEqual(problems, [])


class UnitContentTests(SynchronousTestCase):
    def test_configErrorIsNotRestarted(self) -> None:
        """78 (EX_CONFIG: a bad config, the UDP port in use) stops systemd restarting the daemon."""
        self.assertEqual(unit_values("Restart"), ["on-failure"])
        statuses = " ".join(unit_values("RestartPreventExitStatus")).split()
        self.assertIn("78", statuses)

    def test_documentationIsInstalled(self) -> None:
        """``Documentation=`` names a file the README's install steps create."""
        [documentation] = unit_values("Documentation")
        self.assertTrue(documentation.startswith("file://"), documentation)
        path = documentation[len("file://") :]
        installs = [c for c in systemd_step_commands() if c.startswith("install ") and c.endswith(" " + path)]
        self.assertEqual(len(installs), 1, f"no README step installs {path}: {systemd_step_commands()}")
        source = installs[0].split()[-2]
        self.assertTrue((REPO / source).is_file(), source)

    def test_readmeInstallsWhatTheUnitRuns(self) -> None:
        """The unit's ExecStart, config and unit file are the ones the README's steps install."""
        [execStart] = unit_values("ExecStart")
        program = execStart.split()[0]
        configPath = execStart.split()[execStart.split().index("-c") + 1]
        commands = systemd_step_commands()
        venv = program.rsplit("/bin/", 1)[0]
        self.assertIn(f"/usr/bin/python3 -m venv {venv}", commands)
        self.assertIn(f"{venv}/bin/pip install .", commands)
        self.assertIn(f"install -m 0640 -g butler-tw config/butler.example.yaml {configPath}", commands)
        self.assertIn(f"cp {UNIT.relative_to(REPO)} /etc/systemd/system/", commands)
        self.assertEqual(unit_values("SupplementaryGroups"), ["butler-tw"])
        self.assertIn("groupadd --system butler-tw", commands)


class ReceiveBufferTests(SynchronousTestCase):
    def test_sysctlAllowsTheDefaultBuffer(self) -> None:
        """Without capabilities, the buffer is capped at rmem_max: the sysctl file allows the default."""
        self.assertEqual(unit_values("CapabilityBoundingSet"), [""])
        values = {}
        for line in SYSCTL.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.lstrip().startswith(("#", ";")):
                values[key.strip()] = int(value.strip())
        self.assertGreaterEqual(values["net.core.rmem_max"], DEFAULT_RECEIVE_BUFFER)

    def test_readmeInstallsTheSysctlFile(self) -> None:
        name = SYSCTL.name
        self.assertIn(
            f"cp {SYSCTL.relative_to(REPO)} /etc/sysctl.d/ && sysctl --system", systemd_step_commands()
        )
        self.assertTrue(name.endswith(".conf"), "sysctl --system reads only *.conf files")
