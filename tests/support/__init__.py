"""What the tests share: the repository's paths (here), a daemon run as a
subprocess (:mod:`tests.support.daemon`), webhook receivers and alerts
(:mod:`tests.support.receivers`), a CONNECT/plain HTTP proxy (:mod:`tests.support.proxy`),
and log capture (:mod:`tests.support.logs`)."""

from pathlib import Path

#: The repository (the clone under test).
REPO = Path(__file__).resolve().parents[2]
#: Test data kept in the repository.
DATA = REPO / "tests" / "data"
