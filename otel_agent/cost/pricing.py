"""Prices: what a core-hour, a GiB-hour and a GiB sent cost on a given node.

A wrong price bills every tenant wrongly and nobody notices for a month, so the file is
validated completely before the processor starts: every error names the file, the line and
the field (`pricing.yaml:7: rates.cpu_core_hour: must be a number >= 0, got 'cheap'`).
Unknown keys are errors too: a typo such as `cpu_core_hours` must not silently fall back to the
default rate.

Rates are `Decimal`, never float, so that money computed from them is exact in the ledger's
integer micro-units.

Format (beside the documented keys, `spot`, `description`, `sources` and `memory` are allowed):

    currency: USD
    memory: working_set        # or usage: which memory quantity is billed (DESIGN pitfall)
    rates:                     # every node, unless an override matches
      cpu_core_hour: 0.031611
      memory_gib_hour: 0.004237
      gpu_hour: 0.95
      storage_gib_hour: 0.0000548
      network_gib: {pod-network: 0, cluster-private: 0.01, internet: 0.12}
    storage_classes:           # per GiB-hour of a claim's volume; other classes: storage_gib_hour
      gp3: 0.000109589
      io2: 0.000171233
    nodes:                     # overrides; the first match wins
      - match: {node.kubernetes.io/instance-type: m5.xlarge}
        cpu_core_hour: 0.048
      - match: {karpenter.sh/capacity-type: spot}
        spot: true
        cpu_core_hour: 0.006655

Clusters priced apart (another region's rates, another currency) get a section of their own,
chosen by the node's `k8s.cluster.name`; what a section does not set is taken from the top:

    clusters:
      eu-prod:
        currency: EUR          # its rows are in EUR; a report never adds EUR to USD
        rates: {cpu_core_hour: 0.029}
        nodes: [...]           # its own overrides (the top-level ones do not apply to it)

An override's `match` compares node labels (`k8s.node.label.<key>` on the node resource) and
also the plain resource attributes `k8s.node.name`, `k8s.cluster.name` and
`cloud.availability_zone`. Keys an override does not set are taken from `rates`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from otel_agent import safe_yaml
from otel_agent.cost.errors import PricingError

RATE_KEYS = ("cpu_core_hour", "memory_gib_hour", "gpu_hour", "storage_gib_hour")
MEMORY_QUANTITIES = ("working_set", "usage")
_TOP_KEYS = {"currency", "rates", "nodes", "memory", "description", "sources", "clusters",
             "storage_classes"}
_CLUSTER_KEYS = {"currency", "rates", "nodes", "memory", "description", "storage_classes"}
_OVERRIDE_EXTRA = {"match", "spot", "name"}

DEFAULT_PRICING_FILE = "default-pricing.yaml"


@dataclass(frozen=True, slots=True)
class Rates:
    cpu_core_hour: Decimal = Decimal(0)
    memory_gib_hour: Decimal = Decimal(0)
    gpu_hour: Decimal = Decimal(0)
    storage_gib_hour: Decimal = Decimal(0)
    network_gib: Mapping[str, Decimal] = field(default_factory=dict)
    spot: bool = False

    def network_rate(self, traffic_class: str) -> Decimal:
        """The price of one GiB sent in `traffic_class`; classes not priced cost nothing."""
        return self.network_gib.get(traffic_class, Decimal(0))


@dataclass(frozen=True, slots=True)
class NodeOverride:
    match: Mapping[str, str]
    rates: Rates  # already merged over the default rates
    line: int

    def matches(self, node_attrs: Mapping[str, str]) -> bool:
        return all(node_attrs.get(k) == v for k, v in self.match.items())


@dataclass(frozen=True, slots=True)
class Pricing:
    currency: str
    rates: Rates
    nodes: tuple[NodeOverride, ...] = ()
    memory_quantity: str = "working_set"
    source: str = "<built-in>"
    clusters: Mapping[str, "Pricing"] = field(default_factory=dict)  # by k8s.cluster.name

    def for_cluster(self, cluster: str) -> "Pricing":
        """The pricing of one cluster's nodes: its own section, else this one."""
        return self.clusters.get(cluster, self)

    # per GiB-hour of a claim's volume by storage class; classes not listed: rates.storage_gib_hour
    storage_classes: Mapping[str, Decimal] = field(default_factory=dict)

    def storage_rate(self, storage_class: str) -> Decimal:
        """The price of a GiB-hour of a volume of `storage_class` (claims are cluster objects:
        no node override applies)."""
        return self.storage_classes.get(storage_class, self.rates.storage_gib_hour)

    def rates_for(self, node_attrs: Mapping[str, str]) -> Rates:
        """Rates of a node given its labels (keys without the k8s.node.label. prefix) and the
        plain attributes named in the module docstring. The first matching override wins."""
        for o in self.nodes:
            if o.matches(node_attrs):
                return o.rates
        return self.rates

    def fingerprint(self) -> str:
        """Changes whenever any price changes; the ledger re-prices when it does."""
        import hashlib

        parts = [self.currency, self.memory_quantity, _rates_text(self.rates)]
        parts += [f"{sorted(o.match.items())}={_rates_text(o.rates)}" for o in self.nodes]
        parts += [f"cluster {name}={p.fingerprint()}" for name, p in sorted(self.clusters.items())]
        if self.storage_classes:
            parts.append(f"storage_classes={sorted(self.storage_classes.items())}")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _rates_text(r: Rates) -> str:
    return (f"{r.cpu_core_hour},{r.memory_gib_hour},{r.gpu_hour},{r.storage_gib_hour},"
            f"{sorted(r.network_gib.items())},{r.spot}")


def load_pricing(path: str | Path) -> Pricing:
    """Read and validate a pricing file; raises PricingError naming file, line and field."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise PricingError(f"{p}: cannot read pricing file: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise PricingError(f"{p}: not UTF-8 text (byte {e.start}): {e.reason}") from e
    return parse_pricing(text, str(p))


def default_pricing() -> Pricing:
    """The pricing file shipped with the package (OpenCost's default rates; sources inside)."""
    ref = resources.files("otel_agent.cost").joinpath(DEFAULT_PRICING_FILE)
    return parse_pricing(ref.read_text(encoding="utf-8"), f"<package>/{DEFAULT_PRICING_FILE}")


def default_pricing_path() -> str:
    return str(resources.files("otel_agent.cost").joinpath(DEFAULT_PRICING_FILE))


def parse_pricing(text: str, source: str) -> Pricing:
    try:
        root = safe_yaml.compose(text)
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else 0
        raise PricingError(f"{source}:{line}: not valid YAML: {e.problem}") from e
    except yaml.YAMLError as e:
        raise PricingError(f"{source}: not valid YAML: {str(e).splitlines()[0]}") from e
    v = _Validator(source)
    if root is None:
        raise PricingError(f"{source}:1: empty pricing file; needs currency and rates")
    top = v.mapping(root, "")
    v.unknown(top, _TOP_KEYS, "")
    if "currency" not in top:
        v.fail(root, "currency", "missing (e.g. currency: USD)")
    if "rates" not in top:
        v.fail(root, "rates", "missing (rates: {cpu_core_hour: ..., memory_gib_hour: ...})")
    pricing = _section(v, top, "", source, currency=None, memory="working_set", base=Rates())
    clusters: dict[str, Pricing] = {}
    if "clusters" in top:
        for name, (key_node, body) in v.mapping(top["clusters"][1], "clusters").items():
            where = f"clusters.{name}"
            if not name:
                v.fail(key_node, where, "a cluster name (k8s.cluster.name) must not be empty")
            section = v.mapping(body, where)
            v.unknown(section, _CLUSTER_KEYS, where)
            clusters[name] = _section(v, section, where + ".", source, currency=pricing.currency,
                                      memory=pricing.memory_quantity, base=pricing.rates,
                                      storage_classes=pricing.storage_classes)
    return replace(pricing, clusters=clusters)


def _section(v: "_Validator", top: dict, prefix: str, source: str, *, currency: str | None,
             memory: str, base: Rates, storage_classes: Mapping[str, Decimal] = {}) -> Pricing:
    """The top of the file, or one cluster's section with the top's values as defaults."""
    if "currency" in top:
        currency = v.string(top["currency"][1], prefix + "currency")
        if not (len(currency) == 3 and currency.isalpha() and currency.isupper()):
            v.fail(top["currency"][1], prefix + "currency",
                   f"must be an ISO 4217 code like USD, got {currency!r}")
    if "memory" in top:
        memory = v.string(top["memory"][1], prefix + "memory")
        if memory not in MEMORY_QUANTITIES:
            v.fail(top["memory"][1], prefix + "memory", f"must be one of "
                   f"{', '.join(MEMORY_QUANTITIES)}, got {memory!r}")
    if "rates" in top:
        required = ("cpu_core_hour", "memory_gib_hour") if not prefix else ()
        base = v.rates(top["rates"][1], prefix + "rates", base, required=required)
    overrides: list[NodeOverride] = []
    if "nodes" in top:
        seq = top["nodes"][1]
        if not isinstance(seq, yaml.SequenceNode):
            v.fail(seq, prefix + "nodes", "must be a list of {match: {...}, <rate>: ...}")
        for i, item in enumerate(seq.value):
            where = f"{prefix}nodes[{i}]"
            m = v.mapping(item, where)
            if "match" not in m:
                v.fail(item, f"{where}.match", "missing (e.g. match: {node.kubernetes.io/instance-type: m5.xlarge})")
            match_node = m["match"][1]
            match = {k: v.string(val, f"{where}.match.{k}")
                     for k, (_, val) in v.mapping(match_node, f"{where}.match").items()}
            if not match:
                v.fail(match_node, f"{where}.match", "must name at least one label")
            rate_part = {k: kv for k, kv in m.items() if k not in _OVERRIDE_EXTRA}
            rates = v.rates_from(item, rate_part, where, base)
            if "spot" in m:
                rates = replace(rates, spot=v.boolean(m["spot"][1], f"{where}.spot"))
            overrides.append(NodeOverride(match, rates, item.start_mark.line + 1))
    classes: dict[str, Decimal] = dict(storage_classes)  # a cluster's: the top's, then its own
    if "storage_classes" in top:
        for cls, (_, val) in v.mapping(top["storage_classes"][1], prefix + "storage_classes").items():
            classes[cls] = v.number(val, f"{prefix}storage_classes.{cls}")
    assert currency is not None  # the top's is required above
    return Pricing(currency=currency, rates=base, nodes=tuple(overrides),
                   memory_quantity=memory, source=source, storage_classes=classes)


class _Validator:
    def __init__(self, source: str):
        self.source = source

    def fail(self, node: yaml.Node, fieldname: str, what: str) -> None:
        line = node.start_mark.line + 1
        raise PricingError(f"{self.source}:{line}: {safe_yaml.one_line(fieldname)}: "
                           f"{safe_yaml.one_line(what, 300)}")

    def mapping(self, node: yaml.Node, where: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, where or "(top level)", "must be a mapping of key: value")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for k, val in node.value:
            key = self.string(k, f"{where}.<key>" if where else "<key>")
            if key in out:
                self.fail(k, _join(where, key), "given twice")
            out[key] = (k, val)
        return out

    def unknown(self, m: dict[str, tuple[yaml.Node, yaml.Node]], allowed: set[str], where: str) -> None:
        for key, (knode, _) in m.items():
            if key not in allowed:
                self.fail(knode, _join(where, key), f"unknown key; allowed: {', '.join(sorted(allowed))}")

    def string(self, node: yaml.Node, fieldname: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag not in (
                "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                "tag:yaml.org,2002:bool"):
            self.fail(node, fieldname, "must be a plain string")
        return str(node.value)

    def boolean(self, node: yaml.Node, fieldname: str) -> bool:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:bool":
            got = repr(node.value)[:40] if isinstance(node, yaml.ScalarNode) else f"a {node.id}"
            self.fail(node, fieldname, f"must be true or false, got {got}")
        return node.value.lower() in ("true", "yes", "on")

    def number(self, node: yaml.Node, fieldname: str) -> Decimal:
        if not isinstance(node, yaml.ScalarNode) or node.tag not in (
                "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:str"):
            self.fail(node, fieldname, "must be a number >= 0")
        raw = str(node.value).strip()
        try:
            d = Decimal(raw)
        except InvalidOperation:
            d = None
        if d is None or not d.is_finite() or d < 0:
            self.fail(node, fieldname, f"must be a number >= 0, got {raw!r}")
        if d > Decimal(1_000_000):
            self.fail(node, fieldname, f"{raw} per unit is not a plausible price (over 1,000,000)")
        return d

    def rates(self, node: yaml.Node, where: str, base: Rates, required: tuple[str, ...] = ()) -> Rates:
        m = self.mapping(node, where)
        self.unknown(m, set(RATE_KEYS) | {"network_gib", "spot"}, where)
        for r in required:
            if r not in m:
                self.fail(node, _join(where, r), "missing")
        return self.rates_from(node, m, where, base)

    def rates_from(self, node: yaml.Node, m: dict[str, tuple[yaml.Node, yaml.Node]], where: str,
                   base: Rates) -> Rates:
        self.unknown(m, set(RATE_KEYS) | {"network_gib", "spot"}, where)
        kw: dict[str, Any] = {}
        for key in RATE_KEYS:
            if key in m:
                kw[key] = self.number(m[key][1], _join(where, key))
        if "network_gib" in m:
            net = dict(base.network_gib)
            for cls, (_, val) in self.mapping(m["network_gib"][1], _join(where, "network_gib")).items():
                net[cls] = self.number(val, _join(where, f"network_gib.{cls}"))
            kw["network_gib"] = net
        if "spot" in m:
            kw["spot"] = self.boolean(m["spot"][1], _join(where, "spot"))
        return replace(base, **kw)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def money_micros(quantity: float, rate: Decimal) -> int:
    """quantity × rate in integer micro-units of the currency, rounded half-even.

    Integer money is what makes the ledger reconcile to the cent: parts are summed exactly.
    """
    if not math.isfinite(quantity):
        raise ValueError(f"quantity {quantity} is not finite")
    return int((Decimal(repr(quantity)) * rate * 1_000_000).to_integral_value())


def split_micros(total: int, weights: list[int]) -> list[int]:
    """Split integer micro-units in proportion to weights, exactly (largest remainder): the
    parts always add up to `total`, so sharing money never creates or loses a micro-unit."""
    wsum = sum(weights)
    if wsum <= 0:
        return [0] * len(weights)
    base = [total * w // wsum for w in weights]
    rem = total - sum(base)
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % wsum), i))
    for i in order[:rem]:
        base[i] += 1
    return base


def node_list_micros(rates: Rates, *, cpu_core_hours: float = 0.0, memory_gib_hours: float = 0.0,
                     gpu_hours: float = 0.0) -> dict[str, int]:
    """What a node's capacity costs at list rates, per resource (`cpu`, `memory`, `gpu`, the
    ledger's resource names), in micro-units: the weights to split a price that is not a list
    price (an invoice's EffectiveCost) over the node's resources, as OpenCost does for custom
    pricing. GPUs in whole GPUs (otel_agent.gpu.total_gpus)."""
    return {"cpu": money_micros(cpu_core_hours, rates.cpu_core_hour),
            "memory": money_micros(memory_gib_hours, rates.memory_gib_hour),
            "gpu": money_micros(gpu_hours, rates.gpu_hour)}


def split_node_cost(total_micros: int, list_micros: Mapping[str, int]) -> dict[str, int]:
    """`total_micros` split over resources in the ratio of their list costs, exactly: the parts
    add up to the total (largest remainder; ties to the resource named first). A node whose
    list costs are all zero gets it all on `cpu`."""
    keys = list(list_micros)
    weights = [max(0, int(list_micros[k])) for k in keys]
    if sum(weights) == 0:
        return {k: (total_micros if k == "cpu" else 0) for k in keys} if "cpu" in keys else \
            {**{k: 0 for k in keys}, "cpu": total_micros}
    return dict(zip(keys, split_micros(total_micros, weights)))
