"""Secret references: ``${env:NAME}`` and ``${file:/path}`` in place of a secret.

Any secret-bearing value of the config file (a webhook URL, a header value,
an ``auth`` field, a signing secret, ...) may hold references instead of the
secret itself, as the whole value or inside it::

    webhookURL: ${file:/etc/butler-tw/teams-url}
    webhookURL: https://hooks.slack.com/services/${env:SLACK_HOOK}
    value: GenieKey ${env:OPSGENIE_KEY}

- ``${env:NAME}`` is the environment variable ``NAME`` of the process that
  loads the config (the daemon, ``butler-tw``);
- ``${file:PATH}`` is the content of the file ``PATH`` (UTF-8, trailing
  newlines stripped), read through the config's ``reader`` at every load
  (start-up and every SIGHUP), so a rotated secret is picked up by a reload.
  A file that other users may read (``mode & 0o004``) is warned about.

A missing variable or file, or one that is empty, is a problem naming the key
path and the reference, never a value. Any other ``${word:...}`` is refused
as a probable typo; ``${`` not followed by ``word:`` is left as it is.

Use :func:`secret` to make the rule of a key: it resolves the references,
then hands the secret to the key's own rule (e.g. ``rules.webhook_url``).
"""

from __future__ import annotations

import re
from typing import Any

from butler_tw.config.spec import INVALID, Report, Rule

#: A reference: ``${kind:argument}``.
_REFERENCE = re.compile(r"\$\{([A-Za-z]+):([^}]*)\}")
#: The start of a reference that is never closed.
_UNCLOSED = re.compile(r"\$\{([A-Za-z]+):[^}]*$")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
KINDS = ("env", "file")


def has_reference(value: str) -> bool:
    """Whether ``value`` holds a ``${env:...}`` or ``${file:...}`` reference."""
    return any(m.group(1) in KINDS for m in _REFERENCE.finditer(value))


def resolve(value: str, path: str, report: Report) -> Any:
    """``value`` with every reference replaced by its secret, or INVALID (the problems reported)."""
    unclosed = _UNCLOSED.search(value)
    if unclosed and unclosed.group(1) in KINDS:
        report.problem(path, f"the reference ${{{unclosed.group(1)}:... has no closing '}}'")
        return INVALID
    parts: list[str] = []
    end = 0
    ok = True
    for match in _REFERENCE.finditer(value):
        kind, argument = match.groups()
        parts.append(value[end : match.start()])
        end = match.end()
        if kind == "env":
            found = _env(argument, path, report)
        elif kind == "file":
            found = _file(argument, path, report)
        else:
            report.problem(
                path,
                f"unknown reference ${{{kind}:...}}: "
                "a secret is referred to as ${env:NAME} or ${file:/path}",
            )
            found = INVALID
        if found is INVALID:
            ok = False
        else:
            parts.append(found)
    if not ok:
        return INVALID
    parts.append(value[end:])
    return "".join(parts)


def _env(name: str, path: str, report: Report) -> Any:
    if not _ENV_NAME.fullmatch(name):
        report.problem(
            path,
            "${env:...}: what follows 'env:' is not an environment variable name (letters, digits and '_')",
        )
        return INVALID
    found = report.environ.get(name)
    if found is None:
        report.problem(path, f"${{env:{name}}}: the environment variable {name} is not set")
        return INVALID
    if found == "":
        report.problem(path, f"${{env:{name}}}: the environment variable {name} is empty")
        return INVALID
    return found


def _file(name: str, path: str, report: Report) -> Any:
    where = f"${{file:{name}}}"
    if not name:
        report.problem(path, "${file:}: no file named")
        return INVALID
    try:
        data = report.reader(name)
    except FileNotFoundError:
        report.problem(path, f"{where}: file not found")
        return INVALID
    except OSError as e:
        report.problem(path, f"{where}: cannot read the file: {e.strerror}")
        return INVALID
    try:
        text = data.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        report.problem(path, f"{where}: the file is not UTF-8 text")
        return INVALID
    if not text:
        report.problem(path, f"{where}: the file is empty")
        return INVALID
    mode = report.mode(name)
    if mode is not None and mode & 0o004:
        report.warn(
            path,
            f"{where}: the file is readable by every user of this host (mode {mode:04o}); "
            f"make it readable by the daemon's user only (chmod o-rwx {name})",
        )
    return text


def secret(then: Rule | None = None) -> Rule:
    """The rule of a secret-bearing key: resolve a string's references, then apply ``then``.

    A value of another type goes to ``then`` as it is, to be refused there.
    """

    def rule(value: Any, path: str, report: Report) -> Any:
        if not isinstance(value, str):
            return value if then is None else then(value, path, report)
        resolved = resolve(value, path, report)
        if resolved is INVALID or then is None:
            return resolved
        return then(resolved, path, report)

    return rule
