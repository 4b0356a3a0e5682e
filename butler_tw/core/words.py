"""Counts in words, for log lines and command output. Pure.

``count(1, "delivery", "deliveries")`` is ``1 delivery``, and ``2
deliveries`` for 2; a zero count is said plainly, ``no deliveries``, or left
out by the caller, never ``0 deliveries are ...``.

:func:`admin_command` spells a ``butler-tw`` command for a log line, with
the ``-c`` the admin needs to paste it as it stands.
"""

from __future__ import annotations

import shlex

#: Where every command reads the config when not given ``-c/--config``.
DEFAULT_CONFIG = "/etc/butler-tw/butler.yaml"


def count(n: int, one: str, many: str) -> str:
    """``n`` and the noun that agrees with it: ``1 webhook``, ``2 webhooks``, ``no webhooks``."""
    if n == 0:
        return f"no {many}"
    return f"{n} {one if n == 1 else many}"


def admin_command(configPath: str, command: str, *args: str) -> str:
    """``butler-tw COMMAND [-c PATH] ARGS``: ``-c`` only when the config is not the default one."""
    words = ["butler-tw", command]
    if configPath != DEFAULT_CONFIG:
        words += ["-c", shlex.quote(configPath)]
    return " ".join(words + [shlex.quote(a) for a in args])
