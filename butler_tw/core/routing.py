"""Which alerts a webhook takes: its ``match:`` and ``exclude:`` rules. Pure.

Each is a map from an alert field to a regular expression, searched
anywhere in the field's value (anchor it with ``^`` and ``$`` for the whole
value)::

    match: {taskName: '^Prod '}      # every listed field must match
    exclude: {hostName: '^dev-'}     # any listed field matching excludes

A webhook with neither takes every alert of its block, as before.
"""

from __future__ import annotations

import re

import attrs

from butler_tw.core.alert import FIELD_ORDER, Alert

#: The fields a rule may test: the alert's payload fields, by their seed names.
FIELDS = FIELD_ORDER

Rules = tuple[tuple[str, "re.Pattern[str]"], ...]


@attrs.frozen
class Routing:
    """A webhook's rules: it takes an alert when every ``match`` rule and no ``exclude`` rule holds."""

    match: Rules = ()
    exclude: Rules = ()

    def accepts(self, alert: Alert) -> bool:
        """Whether the webhook takes ``alert``."""
        return all(p.search(getattr(alert, f)) for f, p in self.match) and not any(
            p.search(getattr(alert, f)) for f, p in self.exclude
        )

    def describe(self) -> str:
        """The rules in words, for check-config and the reload log: ``every alert`` when none."""
        parts = []
        if self.match:
            parts.append("match " + ", ".join(f"{f} ~ {p.pattern!r}" for f, p in self.match))
        if self.exclude:
            parts.append("exclude " + ", ".join(f"{f} ~ {p.pattern!r}" for f, p in self.exclude))
        return "; ".join(parts) or "every alert"
