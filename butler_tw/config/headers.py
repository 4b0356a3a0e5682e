"""The rules of a webhook's ``headers``, ``auth`` and ``signing`` keys.

Header names are RFC 9110 tokens; values hold no control character but tab
(a CR or LF would let a value start a header of its own) and only Latin-1
characters (what a header can carry). ``Host``, ``Content-Length`` and
``Transfer-Encoding`` belong to the HTTP client, ``webhook-id``,
``webhook-timestamp`` and ``webhook-signature`` to Standard Webhooks: none
can be set. No message echoes a value: header values and ``auth`` fields are
secrets, and they may come from ``${env:...}`` or ``${file:...}``
(:mod:`butler_tw.config.secrets`).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from butler_tw.config.model import Auth
from butler_tw.config.secrets import resolve
from butler_tw.config.spec import INVALID, Report, kind_of

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Set by the HTTP client from the request itself.
TRANSPORT_HEADERS = ("host", "content-length", "transfer-encoding")
#: Set by butler-tw for every request (Standard Webhooks).
OWN_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
AUTH_TYPES = ("bearer", "basic", "header")
#: The fields each ``auth`` type takes.
AUTH_FIELDS = {"bearer": ("token",), "basic": ("username", "password"), "header": ("name", "value")}
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret, not one


def shown_name(name: str) -> str:
    """A header name as a key path shows it: as written, or escaped when it holds odd characters."""
    return name if name.isprintable() and name.isascii() else ascii(name)[1:-1]


def name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a header name to set, or None."""
    if not _TOKEN.fullmatch(name):
        return (
            "is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only: "
            "no spaces, colons or other characters)"
        )
    if name.lower() in TRANSPORT_HEADERS:
        return f"cannot be set: the HTTP client sends {name} itself"
    if name.lower() in OWN_HEADERS:
        return f"cannot be set: butler-tw sends {name} itself (Standard Webhooks)"
    return None


def value_problem(value: str) -> str | None:
    """What is wrong with ``value`` as a header value, or None. Never quotes the value."""
    for c in value:
        if c in "\r\n":
            return "must not contain a line break (CR or LF)"
        if (ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F:
            return f"must not contain control characters (found U+{ord(c):04X})"
        if ord(c) > 0xFF:
            return "holds a character a header cannot carry (only ASCII and Latin-1)"
    return None


def headers(raw: Any, path: str, report: Report) -> Any:
    """``headers:``, a mapping of name to value: ``((name, value), ...)`` in file order."""
    if not isinstance(raw, dict):
        report.problem(path, f"expected a mapping of header names to values, got {kind_of(raw)}")
        return INVALID
    found: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    ok = True
    for name, value in raw.items():
        where = f"{path}.{shown_name(str(name))}"
        if not isinstance(name, str):
            report.problem(where, "is not a valid header name")
            ok = False
            continue
        wrong = name_problem(name)
        if wrong is None and name.lower() in seen:
            wrong = f"is the same header as {seen[name.lower()]} (names are not case-sensitive)"
        if wrong is not None:
            report.problem(where, wrong)
            ok = False
            continue
        seen[name.lower()] = name
        if not isinstance(value, str):
            report.problem(where, f"expected a string, got {kind_of(value)} (quote it)")
            ok = False
            continue
        value = resolve(value, where, report)
        if value is INVALID:
            ok = False
            continue
        wrong = value_problem(value)
        if wrong is not None:
            report.problem(where, wrong)
            ok = False
            continue
        found.append((name, value))
    return tuple(found) if ok else INVALID


def auth(node: dict[str, Any], path: str, report: Report) -> Any:
    """``auth:``: its ``type`` and the fields that type takes, and no others."""
    if any(v is INVALID for v in node.values()):
        return INVALID
    kind = node["type"]
    wanted = AUTH_FIELDS[kind]
    ok = True
    for field in (f for fields in AUTH_FIELDS.values() for f in fields):
        given = node[field] is not None
        if field in wanted and not given:
            report.problem(f"{path}.{field}", f"missing (type {kind} takes {' and '.join(wanted)})")
            ok = False
        elif given and field not in wanted:
            report.problem(
                f"{path}.{field}", f"is not used by type {kind}, which takes {' and '.join(wanted)}"
            )
            ok = False
        elif given and node[field] == "":
            report.problem(f"{path}.{field}", "is empty")
            ok = False
    if not ok:
        return INVALID
    if kind == "bearer":
        wrong = value_problem(node["token"])
        if wrong is not None:
            report.problem(f"{path}.token", wrong)
            return INVALID
        return Auth(type=kind, secret=node["token"])
    if kind == "basic":
        if ":" in node["username"]:
            report.problem(f"{path}.username", "must not contain ':' (Basic credentials are user:password)")
            return INVALID
        return Auth(type=kind, secret=node["password"], username=node["username"])
    for field, check in (("name", name_problem), ("value", value_problem)):
        wrong = check(node[field])
        if wrong is not None:
            report.problem(f"{path}.{field}", wrong)
            return INVALID
    return Auth(type=kind, secret=node["value"], name=node["name"])


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret ``whsec_<base64>``.

    :raises ValueError: saying what is wrong, without the secret.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("must start with 'whsec_' followed by the key in base64")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after 'whsec_' is not valid base64") from None
    if not key:
        raise ValueError("the key after 'whsec_' is empty")
    return key


def signing_secret(secret: str, path: str, report: Report) -> Any:
    try:
        return signing_key(secret)
    except ValueError as e:
        report.problem(path, str(e))
        return INVALID


def signing(node: dict[str, Any], path: str, report: Report) -> Any:
    """``signing:``: the decoded key of its ``secret``."""
    return node["secret"]
