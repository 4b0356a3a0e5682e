"""The start-up checks: everything that stops the daemon, checked once, by one function.

``twistd butler-webhook`` runs :func:`check` before anything starts, and
``butler-tw check-config`` runs the same :func:`check`: whatever stops the
daemon is reported by check-config, with the same text, and check-config
never calls a file valid that the daemon refuses.

:func:`check` reads the config file (every :class:`~butler_tw.config.ConfigError`
problem, with its key path) and then runs :func:`preflight`, which checks
what the file alone cannot say:

- ``Butler.udpServerConfig.serverHost`` resolves, and the allow-list has a
  usable entry (validation fails closed);
- the UDP port can be bound on that address: the address is on this host,
  the port is free (a Butler still running is the common case), and the
  port is allowed;
- likewise ``butlerWebhook.http.listen``, for a TCP (or TLS) endpoint;
- ``butlerWebhook.stateDir`` is a writable directory, or can be created,
  and an outbox database already in it is not damaged.

Nothing is changed: a port is bound and closed at once, the state directory
is not created, the database is only read. (The daemon then opens the
outbox for real; what fails there exits the same way.)

Each problem is one line (a :class:`ConfigError`'s text may take several):
the daemon and check-config print them on stderr and exit with
:data:`EX_CONFIG`.
"""

from __future__ import annotations

import errno
import os
import socket
import sqlite3
from typing import Sequence
from urllib.parse import quote

import attrs
from twisted.internet.abstract import isIPAddress, isIPv6Address

from butler_tw.config import Config, ConfigError, load_config
from butler_tw.core.sources import SourceFilter, unusable
from butler_tw.core.words import DEFAULT_CONFIG
from butler_tw.delivery.stores.sqlite import db_path, unusable_database
from butler_tw.intake import resolve

#: Exit status for a configuration the daemon cannot start with (sysexits.h ``EX_CONFIG``).
EX_CONFIG = 78


_SQLITE_HEADER = b"SQLite format 3\x00"


@attrs.frozen
class Checked:
    """A configuration that passed every start-up check, with what the checks found.

    :ivar udpAddress: the address to bind for ``serverHost`` (a name resolved).
    :ivar sources: the allow-list with its names resolved, or ``None`` when
        source validation is off.
    :ivar unresolved: allow-list names that do not resolve now -> why (the
        daemon refuses their datagrams until they do).
    :ivar storeUnreachable: why the shared store cannot be reached now (the
        daemon starts anyway and keeps what arrives until it can).
    """

    config: Config
    udpAddress: str
    sources: SourceFilter | None
    unresolved: dict[str, str] = attrs.field(factory=dict)
    #: Why a shared store (PostgreSQL) cannot be reached now, if so.
    storeUnreachable: str | None = None


class StartupError(Exception):
    """The daemon cannot start: :attr:`problems` says why, one entry per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


def check(path: str, *, listen: bool = True, stateDir: bool = True) -> Checked:
    """Read the config file at ``path`` and run :func:`preflight` on it.

    :raises StartupError: with the :class:`ConfigError` as one problem, or
        every problem :func:`preflight` found.
    """
    try:
        config = load_config(path)
    except ConfigError as e:
        raise StartupError([str(e)]) from None
    return preflight(config, listen=listen, stateDir=stateDir)


def preflight(config: Config, *, listen: bool = True, stateDir: bool = True) -> Checked:
    """Check what stops the daemon beyond the file itself; see the module docstring.

    :param listen: whether to try the UDP port and ``http.listen`` (not for a
        reload: the running daemon holds them).
    :param stateDir: whether to check ``butlerWebhook.stateDir`` (not when
        the outbox is in memory, or for a reload).
    :raises StartupError: naming every problem found.
    """
    problems: list[str] = []
    address: str | None = None
    try:
        address = resolve_listen_host(config.udpHost)
    except StartupError as e:
        problems += e.problems
    sources: SourceFilter | None = None
    loaded = resolve_sources(config)
    try:
        sources = allowed_sources(loaded)
    except StartupError as e:
        problems += e.problems
    if listen and address is not None:
        problems += udp_problems(config.udpHost, address, config.udpPort)
    if listen and config.httpListen:
        problems += http_problems(config.httpListen)
    unreachable: str | None = None
    if stateDir and config.store.shared:
        found, unreachable = store_problems(config)
        problems += found
    elif stateDir:
        problems += state_problems(config.stateDir)
    if problems or address is None:
        raise StartupError(problems)
    return Checked(
        config=config,
        udpAddress=address,
        sources=sources,
        unresolved=dict(loaded.unresolved),
        storeUnreachable=unreachable,
    )


def store_problems(config: Config) -> tuple[list[str], str | None]:
    """A shared store (PostgreSQL): its schema is one this version knows, the instanceName is free.

    :return: the problems, and why the database cannot be reached now, if so:
        that is no reason not to start (the daemon keeps what arrives and
        connects when it can), but it is said.
    """
    import psycopg  # only where a shared store is used

    from butler_tw.delivery.stores import postgres

    try:
        postgres.check(config.store.dsn, config.store.loggable, config.instanceName)
    except postgres.StoreError as e:
        return [f"butlerWebhook.store: {e}"], None
    except psycopg.ProgrammingError as e:  # libpq refuses the connection string itself
        return [f"butlerWebhook.store: {postgres.describe_error(e, config.store.dsn)}"], None
    except psycopg.Error as e:
        return (
            [],
            f"cannot connect to {config.store.loggable} now: {postgres.describe_error(e, config.store.dsn)}",
        )
    return [], None


def resolve_listen_host(host: str) -> str:
    """The address to bind for ``serverHost``: IP literals as they are, names resolved.

    :raises StartupError: if a name does not resolve.
    """
    if isIPAddress(host) or isIPv6Address(host):
        return host
    try:
        info = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise StartupError(
            [f"Butler.udpServerConfig.serverHost: cannot resolve {host!r}: {e.strerror}"]
        ) from None
    return str(info[0][4][0])


@attrs.frozen
class Loaded:
    """A config with its allowed source names resolved (none when source validation is off).

    :ivar resolved: name -> the addresses it resolved to.
    :ivar unresolved: name -> why it did not resolve.
    """

    config: Config
    resolved: dict[str, list[str]] = attrs.field(factory=dict)
    unresolved: dict[str, str] = attrs.field(factory=dict)


def resolve_sources(config: Config) -> Loaded:
    """``config`` with the host names of its allow-list resolved. Blocks: at start-up, or in a thread."""
    if not config.sourceValidation:
        return Loaded(config)
    resolved, unresolved = resolve.resolve_all(e for e in config.allowedSources if isinstance(e, str))
    return Loaded(config, resolved, unresolved)


def read_config(path: str) -> Loaded:
    """Read and validate ``path`` and resolve the names it allows. Blocks: run it in a thread.

    :raises ConfigError: naming every problem.
    """
    return resolve_sources(load_config(path))


def allowed_sources(loaded: Loaded, previous: SourceFilter | None = None) -> SourceFilter | None:
    """The allow-list of ``loaded`` with its names resolved, or ``None`` when source validation is off.

    The one function for a start and a reload: a name that did not resolve
    now keeps the addresses ``previous`` (the running allow-list, at a
    reload) had for it. Fails closed: validation on with no address usable
    (every name failed to resolve) is an error, where Butler would quietly
    accept everyone.

    :raises StartupError: if no entry is usable.
    """
    if not loaded.config.sourceValidation:
        return None
    sources = SourceFilter.from_entries(loaded.config.allowedSources, previous)
    resolve.update(sources, loaded.resolved)
    if not sources.usable():
        raise StartupError([unusable(loaded.unresolved)])
    return sources


# --------------------------------------------------------------------------
# Ports


def hostport(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_problem(what: str, address: str | None, port: int | str, error: OSError, detail: str = "") -> str:
    """The line for a port that cannot be had: ``cannot listen on UDP 127.0.0.1:9998: the port is in use …``.

    Also used where the daemon's own listen fails (a port taken since the
    check). ``port`` is a path for a unix socket (``address`` is then None).
    """
    code = error.errno
    if code == errno.EADDRNOTAVAIL:
        why = "that address is not on this host"
    elif code == errno.EADDRINUSE:
        why = "the port is in use" + (" (is Butler still running?)" if what == "UDP" else "")
    elif code == errno.EACCES and isinstance(port, int) and port < 1024:
        why = "permission denied (a port below 1024 needs root or CAP_NET_BIND_SERVICE)"
    else:
        why = error.strerror or str(error)
    where = hostport(address, port) if isinstance(port, int) and address is not None else str(port)
    return f"cannot listen on {what} {where}{detail}: {why}"


def udp_problems(host: str, address: str, port: int) -> list[str]:
    """Bind ``address:port`` as the daemon will (no ``SO_REUSEADDR``, so a held port shows), then close."""
    detail = f" (serverHost {host!r})" if host != address else ""
    return _bind_problems("UDP", socket.SOCK_DGRAM, address, port, address, detail)


def _bind_problems(
    kind: str, socktype: int, address: str, port: int, shown: str, detail: str, reuse: bool = False
) -> list[str]:
    """Bind (and for TCP, listen on) ``address:port``, then close: the problem, if any, in words."""
    family = socket.AF_INET6 if isIPv6Address(address) else socket.AF_INET
    try:
        s = socket.socket(family, socktype)
    except OSError as e:
        return [listen_problem(kind, shown, port, e, detail)]
    try:
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        if socktype == socket.SOCK_STREAM:
            s.listen(1)
    except OSError as e:
        return [listen_problem(kind, shown, port, e, detail)]
    finally:
        s.close()
    return []


def http_problems(listen: str) -> list[str]:
    """Bind and listen on a TCP (or TLS) ``http.listen`` endpoint as Twisted will, then close.

    Other endpoint kinds (``unix:``, ...) are not tried: the daemon's own
    listen reports them (one line, :data:`EX_CONFIG`).
    """
    from twisted.internet.endpoints import serverFromString

    try:
        # As in the config check: parsed with a stand-in, never the global reactor.
        endpoint = serverFromString(object(), listen)
    except Exception:  # the config check has said why  # noqa: S110
        return []
    port = getattr(endpoint, "_port", None)
    interface = getattr(endpoint, "_interface", None)
    if not isinstance(port, int) or not isinstance(interface, str):
        return []
    shown = interface or "0.0.0.0"  # noqa: S104 - describing, not binding
    detail = f" (butlerWebhook.http.listen {listen!r})"
    # Twisted's TCP ports set SO_REUSEADDR: so does this check, or a connection
    # of the last run in TIME_WAIT would look like a port in use.
    return _bind_problems("HTTP", socket.SOCK_STREAM, interface, port, shown, detail, reuse=True)


# --------------------------------------------------------------------------
# State directory


def state_problems(stateDir: str) -> list[str]:
    """Whether the daemon can create or write ``stateDir`` and use the outbox in it; changes nothing.

    Permissions are those of the user running the check.
    """
    key = "butlerWebhook.stateDir"
    if not os.path.isdir(stateDir):
        if os.path.lexists(stateDir):
            return [f"{key}: {stateDir} exists and is not a directory"]
        parent = os.path.dirname(os.path.abspath(stateDir))
        while not os.path.lexists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            return [f"{key}: cannot create the state directory {stateDir}: {parent} is not a directory"]
        if not os.access(parent, os.W_OK | os.X_OK):
            return [
                f"{key}: cannot create the state directory {stateDir}: {parent} is not writable for this user"
            ]
        return []
    if not os.access(stateDir, os.W_OK | os.X_OK):
        return [f"{key}: the state directory {stateDir} is not writable for this user"]
    path = db_path(stateDir)
    if not os.path.lexists(path):
        return []
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.lexists(name) and not os.access(name, os.R_OK | os.W_OK):
            return [f"{key}: {unusable_database(path, f'{name} is not writable for this user')}"]
    problem = _damaged(path)
    return [f"{key}: {unusable_database(path, problem)}"] if problem else []


def _damaged(path: str) -> str | None:
    """Why the database at ``path`` cannot be used, read without changing it; None if it looks sound."""
    try:
        with open(path, "rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except OSError as e:
        return e.strerror or str(e)
    if header == b"":
        return None  # an empty file: SQLite makes it a database
    if header != _SQLITE_HEADER:
        return "file is not a database"
    if os.path.lexists(path + "-wal"):
        # A daemon has it open (or was killed): its pages are not all in the
        # main file, and this check must not touch the -wal or -shm. The
        # daemon's own open checks it.
        return None
    # immutable: no lock, no -wal or -shm created (they would belong to this user).
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            (ok,) = conn.execute("PRAGMA quick_check").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        return str(e)
    return None if ok == "ok" else str(ok)


__all__ = [
    "DEFAULT_CONFIG",
    "EX_CONFIG",
    "Checked",
    "Loaded",
    "StartupError",
    "allowed_sources",
    "check",
    "hostport",
    "listen_problem",
    "preflight",
    "read_config",
    "resolve_listen_host",
    "resolve_sources",
]
