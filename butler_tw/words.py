"""Counts in words, for log lines and command output. Pure.

``count(1, "delivery", "deliveries")`` is ``1 delivery``, and ``2
deliveries`` for 2; a zero count is said plainly, ``no deliveries``, or left
out by the caller, never ``0 deliveries are ...``.
"""

from __future__ import annotations


def count(n: int, one: str, many: str) -> str:
    """``n`` and the noun that agrees with it: ``1 webhook``, ``2 webhooks``, ``no webhooks``."""
    if n == 0:
        return f"no {many}"
    return f"{n} {one if n == 1 else many}"
