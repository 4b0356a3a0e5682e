"""docs/LocalLogConfig-two-daemons.xml is docs/LocalLogConfig.xml with every appender sent to both hosts."""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 - our own files

from twisted.trial.unittest import SynchronousTestCase

from tests.support import REPO


def appenders(path: str) -> dict[str, ET.Element]:
    root = ET.parse(REPO / "docs" / path).getroot()  # noqa: S314
    return {a.get("name", ""): a for a in root.iter("appender")}


def loggers(path: str) -> dict[str, list[str]]:
    root = ET.parse(REPO / "docs" / path).getroot()  # noqa: S314
    return {
        logger.get("name", ""): [ref.get("ref", "") for ref in logger.iter("appender-ref")]
        for logger in root.iter("logger")
    }


def without_host(appender: ET.Element) -> str:
    copy = ET.fromstring(ET.tostring(appender))  # noqa: S314
    copy.set("name", "")
    for param in copy.iter("param"):
        if param.get("name") == "remoteAddress":
            param.set("value", "")
    return ET.tostring(copy, encoding="unicode")


class TwoDaemonsTests(SynchronousTestCase):
    def test_everyAppenderTwiceOncePerHost(self) -> None:
        one, two = appenders("LocalLogConfig.xml"), appenders("LocalLogConfig-two-daemons.xml")
        self.assertEqual(sorted(two), sorted(f"{name}{s}" for name in one for s in "AB"))
        for name, appender in one.items():
            for suffix in "AB":
                twin = two[f"{name}{suffix}"]
                self.assertEqual(without_host(twin), without_host(appender), f"{name}{suffix}")
                (address,) = [p.get("value") for p in twin.iter("param") if p.get("name") == "remoteAddress"]
                self.assertEqual(address, f"BUTLER_TW_HOST_{suffix}")

    def test_loggersReferBoth(self) -> None:
        one, two = loggers("LocalLogConfig.xml"), loggers("LocalLogConfig-two-daemons.xml")
        self.assertEqual(
            two, {name: [f"{ref}{s}" for ref in refs for s in "AB"] for name, refs in one.items()}
        )
