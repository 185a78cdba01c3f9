"""YAML written by users, read with bounds: the config, pricing and static metadata files.

PyYAML's SafeLoader refuses arbitrary objects but not two other hostile shapes, and both
turned into tracebacks or hangs of our loaders (tests/unit/fuzz/test_fuzz_loaders.py):
  * deep nesting (`[[[[...` a few thousand levels) makes the recursive composer raise
    RecursionError;
  * alias bombs ("billion laughs": nine lists of nine aliases of the previous one) are cheap
    to load, as shared references, but any str() or repr() of a value, as in an error message
    naming it, walks the 9**9 expansion and never finishes.
So nesting is capped, and aliases may expand to a bounded number of nodes in all. Both are
reported as ordinary YAML errors (with a line), which every loader already turns into its
own error naming the file.
"""

from __future__ import annotations

import yaml
from yaml.composer import ComposerError

MAX_DEPTH = 64  # no file of ours is nested more than ~6 levels
MAX_ALIAS_NODES = 10_000  # nodes reachable through aliases, counted with repetition


class BoundedSafeLoader(yaml.SafeLoader):
    def __init__(self, stream) -> None:  # noqa: ANN001
        super().__init__(stream)
        self._depth = 0
        self._alias_nodes = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                self._alias_nodes += self._size(target)
                if self._alias_nodes > MAX_ALIAS_NODES:
                    raise ComposerError(None, None, f"aliases expand to more than {MAX_ALIAS_NODES} "
                                        "nodes (a YAML bomb?)", event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _size(self, node: yaml.Node) -> int:
        """Nodes in the expansion of `node` (memoized: a bomb is a small DAG)."""
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(self._size(c) for c in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(self._size(k) + self._size(v) for k, v in node.value)
        self._sizes[id(node)] = n
        return n


def load(text: str):  # noqa: ANN201
    """yaml.safe_load with the bounds above."""
    return yaml.load(text, Loader=BoundedSafeLoader)  # noqa: S506 - a SafeLoader subclass


def compose(text: str) -> yaml.Node | None:
    return yaml.compose(text, Loader=BoundedSafeLoader)


def one_line(text: str, limit: int = 160) -> str:
    """A user-supplied key or value as it may appear in an error message: control characters
    escaped (a key may hold a newline), clipped (a value may be a whole document)."""
    s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit + 1])
    return s if len(s) <= limit else s[:limit] + "..."
