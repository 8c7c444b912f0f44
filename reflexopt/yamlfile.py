"""Bounded YAML: safe_load with a cap on the size of the document once aliases are expanded.

A few lines of anchors and aliases (a "billion laughs" document) expand to billions of nodes; everything that
walks the result (validation, JSON) then runs out of memory. Every YAML the package reads from users (prompt
front matter, rubric front matter, jobs files) goes through :func:`load_yaml`.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_NODES = 200_000


class YAMLTooLarge(yaml.YAMLError):
    pass


def _expanded_size(root: yaml.Node) -> int:
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, ready = stack.pop()
        if id(node) in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [x for pair in node.value for x in pair]
        if ready or not children:
            sizes[id(node)] = min(MAX_NODES + 1, 1 + sum(sizes.get(id(c), 1) for c in children))
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def load_yaml(text: str) -> Any:
    """yaml.safe_load, refusing documents that expand to more than MAX_NODES nodes (raises YAMLError)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_NODES:
            raise YAMLTooLarge(f"the document expands to more than {MAX_NODES:,} values (aliases)")
        return loader.construct_document(node)
    except RecursionError:
        raise YAMLTooLarge("the document is nested too deeply") from None
    finally:
        loader.dispose()
