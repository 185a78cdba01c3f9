"""OpenCost's query grammar, written once: the `aggregate` keys and the v2 `filter` language.

Every report face (the `/allocation` API, `cost report` in every format, the HTML page, the
OTLP cost push) parses its aggregate and filter here and nowhere else, so a query that works
against OpenCost's `/allocation` means the same thing in every one of our outputs.

Taken from OpenCost's source (not guessed), and where we differ, on purpose:

- **aggregate** (`pkg/costmodel.ParseAggregationProperties`, `opencost.ParseProperty`,
  `AllocationProperties.GenerateKey`): keys joined by commas; an allocation's name is its
  value for each key joined by `/`. Known words are case-insensitive. `label:<k>` and
  `annotation:<k>` name a pod label or annotation; a pod without it is `__unallocated__`, as
  is a pod without a controller under `controller`/`controllerKind`, and one whose controller
  is not of that kind under `deployment`/`statefulset`/`daemonset`/`job`. `controller` names
  are `kind:name`. `department`, `environment`, `owner`, `product`, `team` are OpenCost's
  label aliases with its default label names (`department`, `env`, `owner`, `app`, `team`).
  `all` puts every tenant in one allocation named "" (OpenCost's empty key). OpenCost drops an
  unknown key silently; we refuse it with a message (a typo would otherwise change the answer
  without a word). `service` and `providerID` are refused: the ledger does not know them.
  `workload` is ours (namespace/controller, or the pod when it has none). Usage of a pod that
  no live container had (containers that died between exports) is container `__unallocated__`.
- **label keys**: OpenCost reads labels as Prometheus sanitises them (`app.kubernetes.io/name`
  becomes `app_kubernetes_io_name`); we keep them as Kubernetes wrote them and accept either
  spelling: a key matches a label whose name, sanitised, is the key sanitised.
- **filter** (`core/pkg/filter/ast` lexer and parser, `allocationmatcher.go`): comparisons
  `field op "v"[,"v"...]`, fields `cluster node namespace controllerName controllerKind pod
  container provider services label[k] annotation[k]` and the aliases above; ops `:` (equals;
  several values: any), `!:` (not equal; several values: none of them), `~:` contains,
  `<~:` starts with, `~>:` ends with, and their `!` forms; `label:"k"` (no key) tests that the
  label exists. `+` is AND, `|` is OR, one of them per parenthesised group, `( )` nest. The
  value `"__unallocated__"` stands for "missing" (OpenCost's UnallocatedReplacementPass).
  A bad filter is an error that says where and what (OpenCost logs and ignores some).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

from otel_agent.cost.errors import QueryError

UNALLOCATED_VALUE = "__unallocated__"  # OpenCost's UnallocatedSuffix

# key -> what the allocation's name part is made of (see `name_part`)
PLAIN_KEYS = ("cluster", "node", "namespace", "controllerKind", "controller", "deployment",
              "statefulset", "daemonset", "job", "pod", "container", "workload")
CONTROLLER_KINDS = ("deployment", "statefulset", "daemonset", "job")
# OpenCost's default LabelConfig: alias -> label name
LABEL_ALIASES = {"department": "department", "environment": "env", "owner": "owner",
                 "product": "app", "team": "team"}
ALL = "all"
UNSUPPORTED_KEYS = {"service": "the ledger does not know Kubernetes services",
                    "providerid": "the ledger does not know cloud provider ids"}
AGGREGATE_HELP = ("comma-separated keys from cluster, node, namespace, controllerKind, "
                  "controller, deployment, statefulset, daemonset, job, pod, container, "
                  "workload, label:<key>, annotation:<key>, department, environment, owner, "
                  "product, team; or all")
_LOWER = {k.lower(): k for k in PLAIN_KEYS}
_KEY_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9_])?$")
MAX_KEYS = 16


def sanitize(name: str) -> str:
    """Prometheus label-name sanitising, as OpenCost applies it to label keys."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _mapped_key(prefix: str, raw: str, whole: str) -> str:
    k = raw.strip()
    if not k or not _KEY_NAME.match(k):
        raise QueryError(f"aggregate {whole!r}: {prefix}: needs a Kubernetes {prefix} key "
                         f"(letters, digits, '.', '_', '-', '/'), like {prefix}:app")
    return f"{prefix}:{k}"


def aggregate_keys(text: str | None) -> tuple[str, ...]:
    """`namespace,label:app` -> ("namespace", "label:app"); () for `all`. Raises QueryError."""
    whole = text if text is not None else ""
    parts = [p.strip() for p in whole.split(",")]
    if parts == [""]:
        raise QueryError(f"aggregate is empty; allowed: {AGGREGATE_HELP}")
    if len(parts) == 1 and parts[0].lower() == ALL:
        return ()
    if len(parts) > MAX_KEYS:
        raise QueryError(f"aggregate {whole!r}: at most {MAX_KEYS} keys")
    out: list[str] = []
    for p in parts:
        low = p.lower()
        if not p:
            raise QueryError(f"aggregate {whole!r}: an empty key between commas; allowed: "
                             f"{AGGREGATE_HELP}")
        if low in _LOWER:
            key = _LOWER[low]
        elif low in LABEL_ALIASES:
            key = f"label:{LABEL_ALIASES[low]}"
        elif low.startswith("label:"):
            key = _mapped_key("label", p[6:], whole)
        elif low.startswith("annotation:"):
            key = _mapped_key("annotation", p[11:], whole)
        elif low in UNSUPPORTED_KEYS:
            raise QueryError(f"aggregate key {p!r} is not supported: {UNSUPPORTED_KEYS[low]}")
        elif low == ALL:
            raise QueryError(f"aggregate {whole!r}: 'all' stands alone")
        else:
            raise QueryError(f"unknown aggregate key {p!r} in {whole!r}; allowed: {AGGREGATE_HELP}")
        if key not in out:  # OpenCost's ParseProperties drops repeats
            out.append(key)
    return tuple(out)


def parse_aggregate(text: str | None) -> str:
    """The canonical spelling of an aggregate (what reports print and queries carry)."""
    keys = aggregate_keys(text)
    return ",".join(keys) if keys else ALL


def lookup(mapping: Mapping[str, str], key: str) -> str | None:
    """A label's (or annotation's) value by its Kubernetes name or its sanitised name."""
    v = mapping.get(key)
    if v is not None:
        return v
    want = sanitize(key)
    for k, val in mapping.items():
        if sanitize(k) == want:
            return val
    return None


@dataclass(frozen=True, slots=True)
class Subject:
    """What an aggregate key or a filter reads of one tenant row (OpenCost's properties)."""

    props: Mapping[str, str]  # cluster node namespace controllerKind controller pod container
    labels: Mapping[str, str]
    annotations: Mapping[str, str]


def name_part(key: str, s: Subject) -> str:
    """One key's part of an allocation's name (OpenCost's GenerateKey)."""
    p = s.props
    if key == "container":
        # pod-level usage no live container had (containers that died between exports)
        return p.get("container") or UNALLOCATED_VALUE
    if key in ("cluster", "node", "namespace", "pod"):
        return p.get(key, "")
    if key == "controllerKind":
        return p.get("controllerKind") or UNALLOCATED_VALUE
    if key == "controller":
        c, k = p.get("controller", ""), p.get("controllerKind", "")
        if not c:
            return UNALLOCATED_VALUE
        return f"{k}:{c}" if k else c
    if key in CONTROLLER_KINDS:
        c = p.get("controller", "")
        return c if c and p.get("controllerKind") == key else UNALLOCATED_VALUE
    if key == "workload":
        return f"{p.get('namespace', '')}/{p.get('controller') or p.get('pod', '')}"
    if key.startswith("label:"):
        v = lookup(s.labels, key[6:])
        return UNALLOCATED_VALUE if v is None else v
    if key.startswith("annotation:"):
        v = lookup(s.annotations, key[11:])
        return UNALLOCATED_VALUE if v is None else v
    raise QueryError(f"unknown aggregate key {key!r}")


def key_name(keys: Sequence[str], s: Subject) -> str:
    return "/".join(name_part(k, s) for k in keys)


# --- filter: OpenCost's v2 language -------------------------------------------------------------

FILTER_FIELDS = ("cluster", "node", "namespace", "controllerName", "controllerKind", "pod",
                 "container", "provider")
MAP_FIELDS = ("label", "annotation")
SLICE_FIELDS = ("services",)
_OPS = (":", "!:", "~:", "!~:", "<~:", "!<~:", "~>:", "!~>:")
MAX_FILTER_NODES = 256
FILTER_HELP = ('field:"value" with fields cluster, node, namespace, controllerName, '
               'controllerKind, pod, container, provider, services, label[key], '
               'annotation[key], department, environment, owner, product, team; ops : !: ~: '
               '!~: <~: !<~: ~>: !~>:; several values "a","b"; + for and, | for or, ( )')


@dataclass(frozen=True, slots=True)
class Cmp:
    field: str  # a FILTER_FIELDS name, "label", "annotation" or "services"
    key: str  # the label/annotation key; "" for plain fields (and key-less map tests)
    op: str  # "eq", "contains", "prefix", "suffix"
    value: str
    negate: bool


@dataclass(frozen=True, slots=True)
class Group:
    op: str  # "and" | "or"
    items: tuple["Node", ...]


Node = Union[Cmp, Group]


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text, self.i, self.toks = text, 0, []  # (kind, text, position)

    def run(self) -> list[tuple[str, str, int]]:
        t = self.text
        while self.i < len(t):
            c, start = t[self.i], self.i
            if c in " \t\r\n":
                self.i += 1
            elif c in ",+|()":
                self.toks.append((c, c, start))
                self.i += 1
            elif c == '"':
                end = t.find('"', start + 1)
                if end < 0:
                    raise QueryError(f"filter: unterminated string starting at position {start}")
                self.toks.append(("str", t[start + 1:end], start))
                self.i = end + 1
            elif c == "[":
                end = t.find("]", start + 1)
                if end < 0:
                    raise QueryError(f"filter: unterminated [key] starting at position {start}")
                self.toks.append(("key", t[start + 1:end].strip(), start))
                self.i = end + 1
            elif c in ":!~<":
                for op in sorted(_OPS, key=len, reverse=True):
                    if t.startswith(op, start):
                        self.toks.append(("op", op, start))
                        self.i += len(op)
                        break
                else:
                    raise QueryError(f"filter: unexpected {c!r} at position {start}; ops are "
                                     f"{' '.join(_OPS)}")
            elif c.isascii() and (c.isalnum() or c in "-_"):
                j = start
                while j < len(t) and t[j].isascii() and (t[j].isalnum() or t[j] in "-_"):
                    j += 1
                self.toks.append(("ident", t[start:j], start))
                self.i = j
            else:
                raise QueryError(f"filter: unexpected character {c!r} at position {start}")
        self.toks.append(("eof", "", len(t)))
        return self.toks


class _Parser:
    def __init__(self, toks: list[tuple[str, str, int]]) -> None:
        self.toks, self.i, self.nodes = toks, 0, 0

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i]

    def take(self, kind: str, what: str) -> tuple[str, str, int]:
        tok = self.peek()
        if tok[0] != kind:
            where = "at end" if tok[0] == "eof" else f"at {tok[1]!r} (position {tok[2]})"
            raise QueryError(f"filter: {where}: expected {what}")
        self.i += 1
        return tok

    def filter(self, depth: int) -> Node:
        items = [self.element(depth)]
        group_op = None
        while self.peek()[0] in "+|":
            op = self.peek()[0]
            if group_op is None:
                group_op = op
            elif op != group_op:
                raise QueryError(f"filter: '+' and '|' mixed in one group at position "
                                 f"{self.peek()[2]}: put parentheses around one of them")
            self.i += 1
            items.append(self.element(depth))
        if depth > 0:
            self.take(")", "')' to close a '('")
        elif self.peek()[0] != "eof":
            tok = self.peek()
            raise QueryError(f"filter: unexpected {tok[1]!r} at position {tok[2]}")
        if len(items) == 1:
            return items[0]
        return Group("and" if group_op == "+" else "or", tuple(items))

    def element(self, depth: int) -> Node:
        if self.peek()[0] == "(":
            self.i += 1
            return self.filter(depth + 1)
        return self.comparison()

    def comparison(self) -> Node:
        kind, name, pos = self.take("ident", f"a filter field ({FILTER_HELP})")
        key = ""
        if name in MAP_FIELDS:
            if self.peek()[0] == "key":
                key = self.take("key", "[key]")[1]
                if not key:
                    raise QueryError(f"filter: empty [] after {name!r} at position {pos}")
        elif name in LABEL_ALIASES:
            name, key = "label", LABEL_ALIASES[name]
        elif name == "controller":  # our earlier spelling of controllerName, still accepted
            name = "controllerName"
        elif name not in FILTER_FIELDS and name not in SLICE_FIELDS:
            raise QueryError(f"filter: unknown field {name!r} at position {pos}; allowed: "
                             f"{FILTER_HELP}")
        op = self.take("op", "an op like ':' or '!:'")[1]
        values = [self.take("str", 'a quoted value like "kube-system"')[1]]
        while self.peek()[0] == ",":
            self.i += 1
            values.append(self.take("str", 'a quoted value after ","')[1])
        negate = op.startswith("!")
        base = op.lstrip("!")
        keyless = name in SLICE_FIELDS or (name in MAP_FIELDS and not key)
        kind_ = {":": "contains" if keyless else "eq", "~:": "contains", "<~:": "prefix",
                 "~>:": "suffix"}[base]
        cmps = []
        for v in values:
            if v == UNALLOCATED_VALUE and not keyless:
                v = ""  # OpenCost's UnallocatedReplacementPass: "__unallocated__" is "missing"
            self.nodes += 1
            cmps.append(Cmp(name, key, kind_, v, negate))
        if self.nodes > MAX_FILTER_NODES:
            raise QueryError(f"filter: more than {MAX_FILTER_NODES} comparisons")
        if len(cmps) == 1:
            return cmps[0]
        # several values: any of them (':' and friends), none of them ('!' forms)
        return Group("and" if negate else "or", tuple(cmps))


MAX_FILTER_BYTES = 4096


def parse_filter(text: str | None) -> Node | None:
    """OpenCost v2 filter text -> a tree; None for no filter. Raises QueryError saying where."""
    if text is None or not text.strip():
        return None
    if len(text) > MAX_FILTER_BYTES:
        raise QueryError(f"filter longer than {MAX_FILTER_BYTES} characters")
    return _Parser(_Lexer(text).run()).filter(0)


def _field_value(c: Cmp, s: Subject) -> str:
    if c.field == "label":
        return lookup(s.labels, c.key) or ""
    if c.field == "annotation":
        return lookup(s.annotations, c.key) or ""
    if c.field == "controllerName":
        return s.props.get("controller", "")
    if c.field == "provider":
        return ""
    return s.props.get(c.field, "")


def _match_cmp(c: Cmp, s: Subject) -> bool:
    if c.field in MAP_FIELDS and not c.key:  # key-less map: is there such a key?
        m = s.labels if c.field == "label" else s.annotations
        keys = list(m) + [sanitize(k) for k in m]
        if c.op == "contains":
            hit = c.value in keys or sanitize(c.value) in keys
        elif c.op == "prefix":
            hit = any(k.startswith(c.value) for k in keys)
        else:
            hit = any(k.endswith(c.value) for k in keys)
    elif c.field in SLICE_FIELDS:
        hit = False  # the ledger knows no services: every list is empty
    else:
        v = _field_value(c, s)
        hit = {"eq": v == c.value, "contains": c.value in v, "prefix": v.startswith(c.value),
               "suffix": v.endswith(c.value)}[c.op]
    return hit != c.negate


def matches(node: Node | None, s: Subject) -> bool:
    if node is None:
        return True
    if isinstance(node, Cmp):
        return _match_cmp(node, s)
    if node.op == "and":
        return all(matches(n, s) for n in node.items)
    return any(matches(n, s) for n in node.items)


def uses_labels(node: Node | None) -> bool:
    if node is None:
        return False
    if isinstance(node, Cmp):
        return node.field in MAP_FIELDS
    return any(uses_labels(n) for n in node.items)


def parse_bool(name: str, value: str | None, default: bool) -> bool:
    """OpenCost's booleans (Go's strconv.ParseBool); where OpenCost falls back to the default
    on a typo, we answer 400: a silently ignored `shareIdle=ture` changes the bill."""
    if value is None or value.strip() == "":
        return default
    v = value.strip()
    if v in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if v in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise QueryError(f"{name}={value!r}: allowed: true or false")


__all__ = ["aggregate_keys", "parse_aggregate", "key_name", "name_part", "Subject", "lookup",
           "parse_filter", "matches", "uses_labels", "parse_bool", "UNALLOCATED_VALUE",
           "AGGREGATE_HELP", "FILTER_HELP", "ALL"]
