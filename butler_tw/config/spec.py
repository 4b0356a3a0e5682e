"""The building blocks of the schema, and the walk that checks a document.

A schema is a tree of specs (:class:`Section`, :class:`ListOf`, :class:`Bool`,
:class:`Number`, :class:`Text`, :class:`Anything`); :func:`check` walks a YAML
document against it and returns the same tree with defaults filled in, every
problem and warning collected with its key path in a :class:`Report`.

A spec's ``rule`` turns a value of the right shape into what the daemon uses
(a URL checked as the HTTP client would, a CA file read). Below a
:class:`Section` whose ``switch`` is off (``webhookNotification.enable:
false``), only the shape is checked: rules still run, so their values exist,
but what they find is not reported.
"""

from __future__ import annotations

import difflib
import enum
import math
from typing import Any, Callable, Mapping

import attrs

#: What a rule or a check returns for a value that cannot be used.
INVALID: Any = type("Invalid", (), {"__repr__": lambda self: "INVALID"})()
#: A section's default: an absent section reads as an empty one, its own defaults filled in.
EMPTY: Any = type("Empty", (), {"__repr__": lambda self: "EMPTY"})()
#: A key that is not in the document at all.
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()


class Unknown(enum.Enum):
    """What an unknown key in a section is."""

    REFUSE = "refuse"  # a problem: Butler's schema says additionalProperties: false
    WARN = "warn"  # a warning: Butler ignores it, and so do we, but a typo must show
    IGNORE = "ignore"  # listed as ignored: a Butler setting this daemon does not use


@attrs.define
class Report:
    """What a walk found, in the order it was found."""

    reader: Callable[[str], bytes]
    #: The environment, for ``proxy: env`` (HTTPS_PROXY, ...), read at config load.
    environ: Mapping[str, str] = attrs.Factory(dict)
    problems: list[str] = attrs.Factory(list)
    warnings: list[str] = attrs.Factory(list)
    ignored: list[str] = attrs.Factory(list)
    #: Below a switched-off section: problems are not reported.
    quiet: bool = False

    def problem(self, path: str, message: str) -> None:
        if not self.quiet:
            self.problems.append(f"{path}: {message}")

    def shape_problem(self, path: str, message: str) -> None:
        """A problem of shape: reported even below a switched-off section."""
        self.problems.append(f"{path}: {message}")

    def warn(self, path: str, message: str) -> None:
        line = f"{path}: {message}"
        if line not in self.warnings:
            self.warnings.append(line)


Rule = Callable[[Any, str, Report], Any]


def kind_of(value: Any) -> str:
    """A value's type in an admin's words."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


@attrs.frozen(kw_only=True)
class Spec:
    """What every spec has: whether it must be there, a default, a rule."""

    required: bool = False
    #: Said after "missing" when a required key is absent.
    missing: str = ""
    default: Any = None
    rule: Rule | None = None

    def shape(self, value: Any, path: str, report: Report) -> Any:
        """``value`` (present, not null) if it has the right shape, else INVALID."""
        return value


def check(spec: Spec, value: Any, path: str, report: Report) -> Any:
    """Walk ``value`` against ``spec``: the value to use, its default, or INVALID."""
    if value is MISSING or value is None:
        if spec.required:
            report.shape_problem(path or "(top level)", f"missing{spec.missing}")
            return INVALID
        if spec.default is not EMPTY:
            return spec.default
        value = {}
    shaped = spec.shape(value, path, report)
    if shaped is INVALID or spec.rule is None:
        return shaped
    return spec.rule(shaped, path, report)


@attrs.frozen(kw_only=True)
class Anything(Spec):
    """Any value: its rule (if any) decides."""


@attrs.frozen(kw_only=True)
class Bool(Spec):
    def shape(self, value: Any, path: str, report: Report) -> Any:
        if not isinstance(value, bool):
            report.shape_problem(path, f"expected true or false, got {kind_of(value)}")
            return INVALID
        return value


@attrs.frozen(kw_only=True)
class Number(Spec):
    low: float = -math.inf
    high: float = math.inf
    whole: bool = False

    def shape(self, value: Any, path: str, report: Report) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            report.shape_problem(path, f"expected a number, got {kind_of(value)}")
            return INVALID
        if not self.low <= value <= self.high:
            report.shape_problem(
                path, f"must be between {num(self.low)} and {num(self.high)}, got {num(value)}"
            )
            return INVALID
        if self.whole and value != int(value):
            report.shape_problem(path, "must be a whole number")
            return INVALID
        return float(value)


@attrs.frozen(kw_only=True)
class Text(Spec):
    #: Applied before ``choices`` are checked (Butler's schema trims and upper-cases some).
    normalise: Callable[[str], str] | None = None
    choices: tuple[str, ...] = ()
    #: The choices in words, for the message: "GET, POST or PUT (any case)".
    choicesText: str = ""

    def shape(self, value: Any, path: str, report: Report) -> Any:
        if not isinstance(value, str):
            report.shape_problem(path, f"expected a string, got {kind_of(value)}")
            return INVALID
        if self.normalise is not None:
            value = self.normalise(value)
        if self.choices and value not in self.choices:
            report.shape_problem(path, f"must be {self.choicesText}, got {value[:20]!r}")
            return INVALID
        return value


@attrs.frozen(kw_only=True)
class ListOf(Spec):
    item: Spec
    #: What the message says was expected: "a list of webhooks".
    expected: str = "a list"

    def shape(self, value: Any, path: str, report: Report) -> Any:
        if not isinstance(value, list):
            report.shape_problem(path, f"expected {self.expected}, got {kind_of(value)}")
            return INVALID
        return [self._item(v, f"{path}[{i}]", report) for i, v in enumerate(value)]

    def _item(self, value: Any, path: str, report: Report) -> Any:
        if value is not None:
            return check(self.item, value, path, report)
        if self.item.required:  # a "-" with nothing after it
            report.shape_problem(path, f"missing{self.item.missing}")
            return INVALID
        return self.item.rule(None, path, report) if self.item.rule else None


@attrs.frozen(kw_only=True)
class Section(Spec):
    """A mapping with known keys. Unknown ones are refused, warned about or ignored."""

    keys: Mapping[str, Spec]
    unknown: Unknown = Unknown.REFUSE
    #: Why the rest of this section is ignored, said with a warned-about key.
    ignoredBecause: str = ""
    #: Keys that belong elsewhere, with what was probably meant: always a problem.
    misplaced: Mapping[str, str] = attrs.Factory(dict)
    #: Names that are not ours but are known not to be typos (Butler's own sections).
    knownElsewhere: frozenset[str] = frozenset()
    #: A boolean key that, when not true, leaves the rest checked for shape only.
    switch: str | None = None

    def shape(self, value: Any, path: str, report: Report) -> Any:
        if not isinstance(value, dict):
            report.shape_problem(path or "(top level)", f"expected a mapping, got {kind_of(value)}")
            return INVALID
        absent = [k for k, spec in self.keys.items() if spec.required and value.get(k) is None]
        for key in value:
            if key not in self.keys:
                self._unknown(str(key), path, report, absent)
        quiet = report.quiet
        if self.switch is not None and value.get(self.switch) is not True:
            report.quiet = True
        try:
            return {
                k: check(spec, value.get(k, MISSING), join(path, k), report) for k, spec in self.keys.items()
            }
        finally:
            report.quiet = quiet

    def _unknown(self, key: str, path: str, report: Report, absent: list[str]) -> None:
        where = join(path, key)
        if key in self.misplaced:
            report.shape_problem(where, self.misplaced[key])
            return
        near = did_you_mean(key, list(self.keys))
        if near and did_you_mean(key, absent):  # the misspelling of a key that must be there
            report.shape_problem(where, f"unknown key ({near})")
            return
        if self.unknown is Unknown.REFUSE:
            known = ", ".join(self.keys)
            report.shape_problem(where, f"unknown key ({near or f'known keys: {known}'})")
        elif self.unknown is Unknown.WARN:
            hint = f" ({near})" if near else ""
            report.warn(where, f"unknown key, ignored{self.ignoredBecause}{hint}")
        elif near and key not in self.knownElsewhere:
            report.warn(where, f"not a Butler setting this daemon reads, ignored ({near})")
        else:
            report.ignored.append(where)


def did_you_mean(key: str, known: list[str]) -> str:
    """``did you mean 'webhookURL'?`` for a near miss of a known key, else ''."""
    same = [k for k in known if k.lower() == key.lower()]
    near = same or difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    return f"did you mean {near[0]!r}?" if near else ""
