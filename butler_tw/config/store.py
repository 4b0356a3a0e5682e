"""``butlerWebhook.store``: where the outbox lives. Pure.

Absent (or ``sqlite``): the embedded SQLite database in ``stateDir``, for one
daemon. A PostgreSQL connection string shares the outbox between two or more
daemons (docs/high-availability.md); either libpq form is taken:

- a URL: ``postgresql://butler@db.example.com/butler_tw?sslmode=verify-full``
- key-value: ``host=db.example.com dbname=butler_tw user=butler``

The password may be in it as a ``${env:...}`` / ``${file:...}`` reference,
or come from ``PGPASSFILE`` / ``~/.pgpass`` as libpq reads them. The
connection string is a secret: what is logged is :func:`loggable_dsn`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs

from butler_tw.config.spec import INVALID, Report

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

_URL_SCHEMES = ("postgresql", "postgres")
#: One ``key=value`` pair of a libpq key-value string; the value bare or single-quoted.
_PAIR = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']*)\s*")
#: Keys whose value is never shown.
_SECRET_KEYS = {"password", "sslpassword"}


@attrs.frozen
class StoreSettings:
    """The outbox store: ``kind`` is :data:`SQLITE` or :data:`POSTGRESQL`."""

    kind: str = SQLITE
    dsn: str = attrs.field(default="", repr=False)

    @property
    def shared(self) -> bool:
        """Whether several daemons may share it."""
        return self.kind == POSTGRESQL

    @property
    def loggable(self) -> str:
        return loggable_dsn(self.dsn) if self.shared else SQLITE

    def __str__(self) -> str:
        return self.loggable


def store(value: Any, path: str, report: Report) -> Any:
    """The rule of ``butlerWebhook.store`` (its references already resolved)."""
    if not isinstance(value, str) or not value.strip():
        report.problem(
            path, "expected 'sqlite' or a PostgreSQL connection string (postgresql://user@host/db)"
        )
        return INVALID
    text = value.strip()
    if text.lower() == SQLITE:
        return StoreSettings()
    problem = dsn_problem(text)
    if problem:
        report.problem(path, problem)
        return INVALID
    return StoreSettings(POSTGRESQL, text)


def dsn_problem(dsn: str) -> str | None:
    """What is wrong with a PostgreSQL connection string, if anything (never quoting a secret)."""
    if "://" in dsn:
        scheme = dsn.split("://", 1)[0].lower()
        if scheme not in _URL_SCHEMES:
            return (
                f"a connection URL starts with postgresql:// (not {scheme}://); "
                "or give 'sqlite' for the embedded store"
            )
        try:
            parts = urlsplit(dsn)
            hosts = parts.netloc.rpartition("@")[2]
            for host in hosts.split(","):  # libpq takes several: host1:5432,host2:5432
                port = (
                    host.rpartition("]")[2].partition(":")[2]
                    if host.startswith("[")
                    else host.partition(":")[2]
                )
                if port and not port.isdigit():
                    raise ValueError(port)
        except ValueError:
            return "the connection URL has a port that is not a number (the value is not shown)"
        if parts.query and any("=" not in item for item in parts.query.split("&")):
            return "the connection URL's parameters must be key=value pairs after '?'"
        return None
    if "=" not in dsn:
        return (
            "expected 'sqlite' or a PostgreSQL connection string: a URL "
            "(postgresql://user@host/dbname) or key=value pairs (host=... dbname=...)"
        )
    end = 0
    for match in _PAIR.finditer(dsn):
        if match.start() != end:
            break
        end = match.end()
    if end != len(dsn):
        return "the key=value connection string cannot be read past its first pairs (quote spaces in values)"
    return None


def loggable_dsn(dsn: str) -> str:
    """``dsn`` without its password: safe for a log line or ``check-config``."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        netloc = parts.netloc.rpartition("@")[2]  # the hosts and ports, as given
        if parts.username:
            netloc = f"{parts.username}@{netloc}"
        query = "&".join(
            item if item.split("=", 1)[0].lower() not in _SECRET_KEYS else item.split("=", 1)[0] + "=***"
            for item in parts.query.split("&")
            if item
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    return " ".join(
        f"{key}=***" if key.lower() in _SECRET_KEYS else f"{key}={value}" for key, value in _PAIR.findall(dsn)
    )
