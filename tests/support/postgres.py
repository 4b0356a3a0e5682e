"""A throwaway PostgreSQL server for the tests, started from the system's binaries.

One server per test process (trial ``--jobs 2`` has two worker processes: each
gets its own), started on first use and stopped, with its directories removed,
when the process exits. It listens only on a unix socket in a directory of its
own (no TCP port is opened); the port number only names the socket file.

In a trial TestCase::

    from tests.support.postgres import fresh_database, require_postgres

    class StoreTests(TestCase):
        def setUp(self) -> None:
            self.server = require_postgres()  # raises SkipTest with the reason when it cannot start
            self.dsn = fresh_database(self)  # a new database, dropped when the test ends

        def test_survivesRestart(self) -> None:
            ...
            self.server.restart()  # same data directory, socket and port: the same DSN works again

Or, without starting anything at import time, ``skip = missing_reason()`` on the
class (only the binaries and psycopg are looked for).

When the tests run as root (as here and in CI), ``initdb`` and ``postgres``
refuse to run; they are then run as the ``postgres`` user (or ``nobody``), and
the data and socket directories are theirs.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import glob
import itertools
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from twisted.trial.unittest import SkipTest, SynchronousTestCase

try:
    import psycopg
    from psycopg import sql
except ImportError:  # pragma: no cover - psycopg is a dependency; this keeps the reason readable
    psycopg = None  # type: ignore[assignment]
    sql = None  # type: ignore[assignment]

#: Asked first for the server binaries' directory.
PG_CONFIG = "pg_config"
#: Then the newest of these (Debian's layout: one directory per major version).
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
#: The database superuser (initdb -U), and the user of every DSN made here.
SUPERUSER = "postgres"
#: How long the server has to accept connections, after a start or a restart.
READY_TIMEOUT = 30.0
#: How long a stop waits for the postmaster to exit before it insists.
STOP_TIMEOUT = 30.0

#: Settings for speed: nothing is flushed to disk (the server is thrown away),
#: little memory, no background work the tests do not ask for.
TEST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "16MB",
    "max_connections": "100",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "autovacuum": "off",
    "huge_pages": "off",
}

NOT_FOUND = (
    "PostgreSQL server binaries not found (looked in pg_config --bindir and {glob}): "
    "install the Debian package postgresql (make test does it when run as root)"
)

Mode = Literal["smart", "fast", "immediate"]
#: pg_ctl's shutdown modes, as the postmaster takes them.
STOP_SIGNALS: Mapping[str, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}


class PostgresUnavailable(Exception):
    """The server cannot be had here; ``str()`` is the reason, fit for a skip."""


def _hasServer(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in ("initdb", "postgres"))


def _version(bindir: str) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` -> (15,); ``.../9.6/bin`` -> (9, 6)."""
    return tuple(int(part) for part in re.findall(r"\d+", Path(bindir).parent.name))


def find_bindir(pg_config: str | None = None, debian_bindirs: str | None = None) -> Path | None:
    """The directory holding ``initdb`` and ``postgres``, or None.

    ``pg_config --bindir`` first (when it has both), else the newest
    ``/usr/lib/postgresql/*/bin`` that has both. The defaults are the module's
    :data:`PG_CONFIG` and :data:`DEBIAN_BINDIRS`, read at each call.
    """
    pg_config = PG_CONFIG if pg_config is None else pg_config
    debian_bindirs = DEBIAN_BINDIRS if debian_bindirs is None else debian_bindirs
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        if found and _hasServer(Path(found)):
            return Path(found)
    for candidate in sorted(glob.glob(debian_bindirs), key=_version, reverse=True):
        if _hasServer(Path(candidate)):
            return Path(candidate)
    return None


def _psycopgMissing() -> str | None:
    if psycopg is None:
        return "psycopg is not installed in this virtualenv (it is in pyproject.toml's dependencies: run make install)"
    return None


def missing_reason() -> str | None:
    """Why the PostgreSQL tests cannot run, without starting anything; None if they can try.

    Cheap enough for ``skip = missing_reason()`` on a TestCase class. A server
    that then fails to start is reported by :func:`require_postgres`.
    """
    reason = _psycopgMissing()
    if reason is None and find_bindir() is None:
        reason = NOT_FOUND.format(glob=DEBIAN_BINDIRS)
    return reason


def _runAs() -> tuple[str, int, int] | None:
    """Who runs initdb and postgres when we are root (they refuse root): None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return name, entry.pw_uid, entry.pw_gid
    raise PostgresUnavailable(
        "running as root, and there is neither a postgres nor a nobody user to run PostgreSQL as "
        "(initdb and postgres refuse to run as root)"
    )


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _quote(value: str) -> str:
    """One value of a libpq key-value DSN."""
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _parentDeathSignal() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGINT (a fast shutdown) if this process dies first.

    So a test process killed with SIGKILL leaves no postmaster behind (its
    temporary directories stay). Linux only; None elsewhere. It runs after the
    child's setreuid (a change of user clears the setting, so it must).
    The "parent" is the thread that spawns the server: start it on the main
    thread, never from a pool thread (trial stops the reactor's pool after
    each test, and the server then shuts down).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        prctl = ctypes.CDLL(name, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    PR_SET_PDEATHSIG = 1

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGINT), 0, 0, 0)

    return preexec


class PostgresServer:
    """A PostgreSQL server in temporary directories of its own, reached on a unix socket.

    Nothing happens until :meth:`start` (or :meth:`dsn`, :meth:`create_database`,
    :meth:`connect`, which start it the first time). :meth:`stop` and
    :meth:`restart` keep the data directory, the socket directory and the port,
    so every DSN handed out stays valid. :meth:`cleanup` (also run at exit)
    stops the server and removes the directories.
    """

    def __init__(
        self,
        bindir: Path | None = None,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """``bindir``: where initdb and postgres are (found by :func:`find_bindir` if None);
        ``port``: names the socket file (random if None); ``settings``: over :data:`TEST_SETTINGS`.
        """
        self._bindir = bindir
        self.port = port if port is not None else random.randint(20000, 59999)
        self.settings = {**TEST_SETTINGS, **(settings or {})}
        self.base: Path | None = None
        self.datadir: Path | None = None
        self.sockdir: Path | None = None
        self.logfile: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._runAs: tuple[str, int, int] | None = None
        self._failed: str | None = None
        self._names = itertools.count(1)
        self._owner = os.getpid()
        self._cleanupRegistered = False

    # -- availability --------------------------------------------------------

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            found = find_bindir()
            if found is None:
                raise PostgresUnavailable(NOT_FOUND.format(glob=DEBIAN_BINDIRS))
            self._bindir = found
        elif not _hasServer(self._bindir):
            raise PostgresUnavailable(
                f"PostgreSQL server binaries not found in {self._bindir} (no executable initdb and postgres)"
            )
        return self._bindir

    def skip_reason(self) -> str | None:
        """Start the server if it is not running: None if it runs, else why not (for a skip).

        A first start that failed is not tried again: the same reason comes back.
        """
        if self._failed is not None:
            return self._failed
        try:
            self.start()
        except PostgresUnavailable as e:
            self._failed = str(e)
        return self._failed

    # -- life ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (initdb the first time) and wait until it takes connections.

        Does nothing if it runs. Raises :class:`PostgresUnavailable` with the
        reason (initdb's or the server's own words) if it cannot.
        """
        if self.running:
            return
        reason = _psycopgMissing()
        if reason is not None:
            raise PostgresUnavailable(reason)
        if self.datadir is None:
            self._initdb()
        self._spawn()
        self._waitUntilReady()

    def _childOptions(self) -> dict[str, Any]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["LC_ALL"] = "C"
        options: dict[str, Any] = {"env": env}
        if self._runAs is not None:
            name, uid, gid = self._runAs
            options.update(user=uid, group=gid, extra_groups=os.getgrouplist(name, gid))
        return options

    def _initdb(self) -> None:
        bindir = self.bindir
        self._runAs = _runAs()
        base = Path(tempfile.mkdtemp(prefix="butler-tw-pg-"))
        try:
            self._initdbIn(bindir, base)
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            raise
        self.base, self.logfile = base, base / "postgres.log"
        self.datadir, self.sockdir = base / "data", base / "socket"
        if not self._cleanupRegistered:
            atexit.register(self.cleanup)
            self._cleanupRegistered = True

    def _initdbIn(self, bindir: Path, base: Path) -> None:
        # The server's user walks through base (root's mkdtemp makes it 0700);
        # the data and socket directories are its own.
        base.chmod(0o755)
        datadir, sockdir = base / "data", base / "socket"
        datadir.mkdir(mode=0o700)
        sockdir.mkdir(mode=0o755)
        if self._runAs is not None:
            _, uid, gid = self._runAs
            for path in (datadir, sockdir):
                os.chown(path, uid, gid)
        socket = sockdir / f".s.PGSQL.{self.port}"
        if len(str(socket).encode()) > 107:
            raise PostgresUnavailable(
                f"the socket path {socket} is too long for a unix socket: set a shorter TMPDIR"
            )
        command = [str(bindir / "initdb"), "-D", str(datadir), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8"]
        command += ["--locale=C", "--no-sync", "--no-instructions"]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=120, **self._childOptions()
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise PostgresUnavailable(f"initdb ({command[0]}) could not run: {e}") from e
        if result.returncode != 0:
            who = f"as the {self._runAs[0]} user" if self._runAs else "as this user"
            raise PostgresUnavailable(
                f"initdb failed (exit status {result.returncode}, run {who}): "
                + _tail(result.stderr or result.stdout)
            )

    def _spawn(self) -> None:
        assert self.datadir is not None and self.sockdir is not None and self.logfile is not None
        command = [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port)]
        command += ["-c", "listen_addresses=", "-k", str(self.sockdir)]
        for key, value in self.settings.items():
            command += ["-c", f"{key}={value}"]
        with open(self.logfile, "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_parentDeathSignal(),  # one prctl call: nothing to deadlock on
                **self._childOptions(),
            )

    def _logTail(self) -> str:
        if self.logfile is None or not self.logfile.exists():
            return "(no log)"
        return _tail(self.logfile.read_text(errors="replace"))

    def _waitUntilReady(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + READY_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            status = self._process.poll()
            if status is not None:
                raise PostgresUnavailable(f"postgres exited with status {status} at start: {self._logTail()}")
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError as e:
                last = e
            time.sleep(0.05)
        self.stop("immediate")
        raise PostgresUnavailable(
            f"postgres did not accept connections within {READY_TIMEOUT:g} s ({last}): {self._logTail()}"
        )

    def _signal(self, sig: signal.Signals) -> None:
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(sig)

    def stop(self, mode: Mode = "fast") -> None:
        """Stop the server and wait until it has exited; nothing if it is not running.

        ``mode`` is pg_ctl's: ``fast`` (SIGINT: clients are disconnected, a
        clean shutdown), ``smart`` (SIGTERM: waits for clients to leave),
        ``immediate`` (SIGQUIT: a crash, recovered at the next start). After
        ``immediate`` the last commits may be gone, since ``synchronous_commit``
        is off: a crash test that counts commits passes
        ``settings={"synchronous_commit": "on"}`` to a server of its own.
        A server that has not exited after :data:`STOP_TIMEOUT` seconds gets SIGQUIT, then SIGKILL.
        """
        process = self._process
        if process is None:
            return
        for sig in (STOP_SIGNALS[mode], signal.SIGQUIT, signal.SIGKILL):
            self._signal(sig)
            try:
                process.wait(STOP_TIMEOUT if sig != signal.SIGKILL else None)
                break
            except subprocess.TimeoutExpired:
                continue
        self._process = None

    def restart(self, mode: Mode = "fast") -> None:
        """:meth:`stop`, then :meth:`start` on the same data directory, socket directory and port."""
        self.stop(mode)
        self.start()

    def cleanup(self) -> None:
        """Stop the server and remove its directories (run at exit). Only in the process that made it."""
        if os.getpid() != self._owner:
            return
        self.stop()
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
        self.base = self.datadir = self.sockdir = self.logfile = None

    # -- use -----------------------------------------------------------------

    def _started(self) -> None:
        """Started once (a DSN needs the socket directory); a server stopped since is left stopped."""
        if self.sockdir is None:
            self.start()

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq key-value DSN: ``host=<socket dir> port=<port> dbname=<dbname> user=postgres``."""
        self._started()
        assert self.sockdir is not None
        parts = {"host": str(self.sockdir), "port": str(self.port), "dbname": dbname, "user": SUPERUSER}
        return " ".join(f"{key}={_quote(value)}" for key, value in parts.items())

    def connect(self, dbname: str = "postgres", autocommit: bool = True) -> psycopg.Connection[Any]:
        """A psycopg connection to ``dbname`` (autocommit by default); the caller closes it."""
        return psycopg.connect(self.dsn(dbname), autocommit=autocommit)

    def create_database(self, name: str | None = None) -> str:
        """Create a database (a fresh, unique name if None) and return its DSN."""
        self._started()
        if name is None:
            name = f"test_{next(self._names)}_{secrets.token_hex(3)}"
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting its clients; nothing if the server is not running."""
        if not self.running:
            return
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


_shared: PostgresServer | None = None


def postgres_server() -> PostgresServer:
    """This process's shared server, made on the first call; it starts on first use."""
    global _shared
    if _shared is None:
        _shared = PostgresServer()
    return _shared


def skip_reason() -> str | None:
    """Start the shared server if needed: None if it runs, else the reason to skip."""
    return postgres_server().skip_reason()


def require_postgres() -> PostgresServer:
    """The shared server, running (started again if a test stopped it); raises SkipTest if it cannot start.

    For a TestCase's setUp. A server that ran once in this process and now
    fails to start again is an error, not a skip.
    """
    server = postgres_server()
    if server.datadir is None or server._failed is not None:
        reason = server.skip_reason()
        if reason is not None:
            raise SkipTest(reason)
    server.start()
    return server


def fresh_database(testcase: SynchronousTestCase, server: PostgresServer | None = None) -> str:
    """A new database on ``server`` (the shared one, skipping if it cannot start), dropped after the test.

    Returns its DSN.
    """
    server = server if server is not None else require_postgres()
    name = f"test_{next(server._names)}_{secrets.token_hex(3)}"
    dsn = server.create_database(name)
    testcase.addCleanup(server.drop_database, name)
    return dsn
