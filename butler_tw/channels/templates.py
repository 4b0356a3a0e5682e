"""``body:`` templates: a YAML tree sent as JSON, every string leaf a Jinja2 template. Pure.

The templates run in Jinja2's immutable sandbox with :class:`StrictUndefined`
(a name that does not exist is an error, not an empty string) and no
autoescaping: the rendered tree is serialised as JSON, which does all the
escaping, so nothing is ever pasted into JSON text. The alert's values are
the templates' *data*: a log message holding ``{{ 7*7 }}`` is sent as
those characters, never evaluated.

A tree is compiled once, at config load (:func:`compile_body`), and rendered
there with sample alerts of both kinds, so that ``check-config``, start-up
and a reload catch a mistake with its key path; the dispatcher renders the
compiled tree on every attempt (:meth:`BodyTemplate.render`).
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any, Mapping

import attrs
from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from butler_tw.channels.text import kind_word
from butler_tw.core.alert import FIELD_ORDER, Alert, EventKind

#: The names a template may use.
NAMES: tuple[str, ...] = (*FIELD_ORDER, "kind", "alertId")

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_SYNTAX = ("{{", "{%", "{#")
_UNDEFINED = re.compile(r"^'([^']+)' is undefined$")


class TemplateProblem(Exception):
    """A template that cannot be used: ``path`` is where it is, relative to the entry."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


class RenderError(Exception):
    """A template failed for one alert at send time (the delivery cannot be made)."""


def context(alert: Alert) -> dict[str, str]:
    """What a template sees: the 11 payload fields, ``kind`` and ``alertId``."""
    values = dict(alert.fields())
    values["kind"] = kind_word(alert)
    values["alertId"] = alert.alertId
    return values


@attrs.frozen
class _Leaf:
    path: str
    template: Template


@attrs.frozen
class BodyTemplate:
    """A compiled ``body:`` tree. Equal when the source trees are equal."""

    #: The tree as canonical JSON text (what equality and a reload compare).
    source: str
    tree: Any = attrs.field(eq=False, hash=False, repr=False)

    def render(self, values: Mapping[str, str]) -> Any:
        """The tree with every template rendered over ``values``.

        :raises RenderError: naming the key path (``body.fields.summary``) and why.
        """
        try:
            return _render(self.tree, values)
        except TemplateProblem as e:
            raise RenderError(str(e)) from None


def compile_body(tree: Any, path: str = "body") -> BodyTemplate:
    """Compile every string leaf of ``tree`` and render it with sample alerts of both kinds.

    :raises TemplateProblem: at the first template that does not compile or render.
    """
    compiled = _compile(tree, path)
    template = BodyTemplate(json.dumps(tree, sort_keys=True, ensure_ascii=False), compiled)
    for sample in SAMPLES:
        _render(compiled, context(sample))
    return template


def _compile(node: Any, path: str) -> Any:
    if isinstance(node, dict):
        return {str(k): _compile(v, f"{path}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [_compile(v, f"{path}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str) and any(s in node for s in _SYNTAX):
        try:
            return _Leaf(path, _ENV.from_string(node))
        except TemplateSyntaxError as e:
            raise TemplateProblem(path, f"template syntax error: {e.message} (line {e.lineno})") from None
    return node


def _render(node: Any, values: Mapping[str, str]) -> Any:
    if isinstance(node, _Leaf):
        try:
            return node.template.render(values)
        except UndefinedError as e:
            raise TemplateProblem(node.path, _undefined(str(e.message))) from None
        except Exception as e:  # the sandbox's SecurityError, a filter's TypeError, ...
            raise TemplateProblem(node.path, f"template error: {type(e).__name__}: {e}") from None
    if isinstance(node, dict):
        return {k: _render(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_render(v, values) for v in node]
    return node


def _undefined(message: str) -> str:
    match = _UNDEFINED.match(message)
    if match is None:
        return f"template error: {message}"
    name = match.group(1)
    near = difflib.get_close_matches(name, NAMES, n=1, cutoff=0.6)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"undefined name {name!r} in template{hint}; the names are {', '.join(NAMES)}"


#: The alerts every template is tried with at config load: one of each kind.
SAMPLES: tuple[Alert, ...] = tuple(
    Alert(
        kind=kind,
        hostName="qlik-sched-01",
        user="INTERNAL\\sa_scheduler",
        taskName="Reload of Sales dashboard",
        taskId="dec2a02a-1680-44ef-8dc2-e2bfb180af87",
        appName="Sales dashboard",
        appId="e7af59a0-c243-480d-9571-08727551a66f",
        logTimeStamp="2021-02-16 09:24:59,099",
        logLevel="ERROR" if kind is EventKind.FAILED else "WARN",
        executionId="14a81bf5-f81c-4047-b1a1-193b0920de28",
        logMessage="Max retries reached",
    )
    for kind in EventKind
)
