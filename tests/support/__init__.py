"""What the tests share, so that no test module imports another:

- the repository's paths (here);
- a daemon run as a subprocess, its counters, and the admin command run
  in-process (:mod:`tests.support.daemon`);
- webhook receivers, what they recorded, webhooks, alerts made to measure and
  clients (:mod:`tests.support.receivers`);
- one fixed alert, datagrams, fresh ids (:mod:`tests.support.alerts`);
- a config and a recording dispatcher for the admission and gate unit tests
  (:mod:`tests.support.admission`);
- a CONNECT and plain HTTP proxy (:mod:`tests.support.proxy`);
- log capture (:mod:`tests.support.logs`);
- a throwaway PostgreSQL server and fresh databases on it (:mod:`tests.support.postgres`);
- a paced player that sends every datagram to several daemons (:mod:`tests.support.player`).
"""

from pathlib import Path

#: The repository (the clone under test).
REPO = Path(__file__).resolve().parents[2]
#: Test data kept in the repository.
DATA = REPO / "tests" / "data"
