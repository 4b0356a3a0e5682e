"""Read the config file into a plain YAML document, refusing what would hurt.

The file is read up to :data:`MAX_FILE_SIZE` and no further; duplicate keys,
Python tags and documents that aliases blow up past :data:`MAX_NODES` nodes
are refused before anything walks them. Error positions are the file's own
lines and columns, never a quote of the line (it may hold a token).
"""

from __future__ import annotations

from typing import IO, Any, Callable, Hashable

import yaml

from butler_tw.config.model import ConfigError

#: A Butler production.yaml is about 80 KiB; anything past this is not a config file.
MAX_FILE_SIZE = 1024 * 1024
#: Nodes a document may expand to, aliases counted at every place they stand.
MAX_NODES = 200_000


class _StrictLoader(yaml.SafeLoader):
    """``safe_load`` that refuses duplicate keys instead of keeping the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    # Only the keys written in this mapping count: a key that overrides one
    # brought in by a ``<<:`` merge is deliberate, not a duplicate.
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(None, None, "found unhashable key", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)  # type: ignore[no-untyped-call]


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _TooLarge(Exception):
    pass


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes the document has once every alias is expanded.

    Linear in the distinct nodes (each node's size is computed once), so a
    "billion laughs" file is measured in microseconds, not expanded.
    """
    sizes: dict[int, int] = {}
    # Iterative post-order walk: a deep document must not hit the recursion limit.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if not done:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        total = 1 + sum(sizes.get(id(c), 1) for c in children)
        if total > MAX_NODES:
            raise _TooLarge()
        sizes[id(node)] = total
    return sizes.get(id(root), 1)


def _where(mark: Any, text: str) -> str:
    """``line L, column C`` of the file; the end of the file is its last line."""
    line, column = mark.line, mark.column
    lines = text.splitlines()
    if lines and line >= len(lines):  # PyYAML puts "end of stream" past the last line
        line, column = len(lines) - 1, len(lines[-1])
    return f"line {line + 1}, column {column + 1}"


def yaml_problem(e: yaml.YAMLError, text: str) -> str:
    """Where and what, without PyYAML's quote of the line."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or type(e).__name__
    if mark is None:
        return str(problem)
    found = f"{_where(mark, text)}: {problem}"
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and cmark is not None and (cmark.line, cmark.column) != (mark.line, mark.column):
        found += f" ({context} that starts at {_where(cmark, text)})"
    return found


def read_file(path: str) -> bytes:
    """At most :data:`MAX_FILE_SIZE` + 1 bytes of ``path``: enough to know it is too large."""
    with open(path, "rb") as f:
        return _read_limited(f)


def _read_limited(f: IO[bytes]) -> bytes:
    return f.read(MAX_FILE_SIZE + 1)


def parse_yaml(source: str, data: bytes) -> Any:
    """The YAML document in ``data``; :class:`ConfigError` when it is not one we read."""
    if len(data) > MAX_FILE_SIZE:
        raise ConfigError(
            source, [f"the file is larger than {MAX_FILE_SIZE // 1024} KiB: this is not a Butler config file"]
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(source, [f"not valid YAML: not UTF-8 text (byte {e.start + 1})"]) from None
    if not text.strip():
        raise ConfigError(source, ["the file is empty"])
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()  # type: ignore[no-untyped-call]
        if node is None or (isinstance(node, yaml.ScalarNode) and not node.value.strip()):
            raise ConfigError(source, ["the file is empty (it holds only comments)"])
        try:
            _expanded_size(node)
        except _TooLarge:
            raise ConfigError(
                source,
                [
                    f"the document expands to more than {MAX_NODES:,} values through YAML aliases "
                    "(*name): refused, as a config file never needs that"
                ],
            ) from None
        return loader.construct_document(node)  # type: ignore[no-untyped-call]
    except yaml.YAMLError as e:
        raise ConfigError(source, [f"not valid YAML: {yaml_problem(e, text)}"]) from None
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


def read_document(path: str, reader: Callable[[str], bytes] = read_file) -> Any:
    """Read and parse the file at ``path``: the raw document, not yet checked."""
    try:
        data = reader(path)
    except OSError as e:
        raise ConfigError(path, [f"cannot read the file: {e.strerror}"]) from None
    return parse_yaml(path, data)
