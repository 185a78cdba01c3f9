"""A cloud invoice in FOCUS form → validated lines, matched to nodes, in exact micro-units (pure).

Why: the ledger prices a node at capacity × a list rate, but finance pays the invoice, after
spot, savings plans and committed-use discounts. AWS (Data Exports, "FOCUS 1.0/1.2 with AWS
columns"), Azure (Cost Management's FOCUS cost and usage export) and Google Cloud (the FOCUS
BigQuery view) all write the FinOps Open Cost and Usage Specification's columns, so one reader
takes all three, as CSV or Parquet. What is read (FOCUS 1.0-1.3 names):

  BillingAccountId, BillingPeriodStart/End   the invoice a line belongs to; a corrected export
                                             replaces what it covers by (account, period)
  ChargePeriodStart/End                      the hours a line's cost is spread over
  ChargeCategory (Usage, Purchase, Tax, Credit, Adjustment), ChargeClass (Correction)
  EffectiveCost                              the amortized cost: what is reconciled (FOCUS
                                             defines it for allocation: savings plans and
                                             reservations spread onto the usage they cover)
  BilledCost                                 kept, and its total printed beside
  BillingCurrency, ServiceName, ResourceId, SkuId (optional), ServiceCategory (optional)

Matching: a Usage line whose ResourceId names a virtual machine is matched to the node whose
spec.providerID names the same machine (the agent exports it as the node resource's
`otel_agent.k8s.node.provider_id`). The forms, provider by provider:

  AWS    ResourceId  i-0abc... or arn:aws:ec2:<region>:<account>:instance/i-0abc...
         providerID  aws:///<zone>/i-0abc...                         key: i-0abc...
  Azure  ResourceId  /subscriptions/<s>/resourceGroups/<g>/providers/Microsoft.Compute/
                     virtualMachines/<vm>  or  .../virtualMachineScaleSets/<ss>/virtualMachines/<n>
         providerID  azure:///subscriptions/... (the same path)       key: the path, lower case
                     (Azure resource ids are case-insensitive)
  GCP    ResourceId  //compute.googleapis.com/projects/<p>/zones/<z>/instances/<name>
         providerID  gce://<p>/<z>/<name>                             key: <p>/<z>/<name>

Everything else is not a node's: load balancers, NAT gateways, the managed control plane,
support, taxes, credits are `shared` (the cluster's costs, on their own rows); lines naming an
instance no node has, disks (PersistentVolume matching is not in this ledger yet), and lines
naming nothing are `unmatched`, each with its reason.

Money: each line's EffectiveCost is exact (Decimal). Per (account, billing period), lines are
taken in content-key order and each gets round_half_even(running sum × 10^6) minus the same
of the running sum before it, in integer micro-units: the lines' micro-units add up to the
period's exact total rounded once, never drifting by a rounding per line. A matched line's
micro-units are spread over the hours of its charge period in proportion to the seconds in
each hour (largest remainder), so a daily Azure line and an hourly AWS line both land exactly.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from otel_agent.cost.pricing import split_micros
from otel_agent.errors import ConfigError

REQUIRED = ("BillingAccountId", "BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart",
            "ChargePeriodEnd", "ChargeCategory", "EffectiveCost", "BilledCost", "BillingCurrency",
            "ServiceName", "ResourceId")
OPTIONAL = ("SkuId", "ChargeClass", "ServiceCategory", "ResourceType")
CHARGE_CATEGORIES = ("Usage", "Purchase", "Tax", "Credit", "Adjustment")
MAX_LINES = 1_000_000  # a large account's month of hourly lines; bounded work and memory per import
MAX_COST = Decimal(10) ** 12  # per line, in the billing currency
MAX_TEXT = 2048
MAX_SPREAD_S = 32 * 86400  # a node line longer than a billing period is not spread over hours
_EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
_LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)
MICRO = Decimal(1_000_000)

MATCH_NODE, MATCH_SHARED, MATCH_UNMATCHED = "node", "shared", "unmatched"


class InvoiceError(ConfigError):
    """A file the importer refuses, with the file, row and column (CLI: one line, exit 2)."""


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    row: int  # 1-based data row in its file (CSV: the header is line 1, this is line row + 1)
    source: str
    billing_account: str
    billing_period_start: int  # UTC seconds
    billing_period_end: int
    charge_period_start: int
    charge_period_end: int
    charge_category: str
    charge_class: str
    service_name: str
    service_category: str
    resource_id: str
    sku_id: str
    currency: str
    effective_cost: Decimal
    billed_cost: Decimal

    def content(self) -> str:
        """What identifies the line's content (not where it was read from)."""
        return "\x1f".join((self.billing_account, str(self.billing_period_start),
                            str(self.billing_period_end), str(self.charge_period_start),
                            str(self.charge_period_end), self.charge_category, self.charge_class,
                            self.service_name, self.service_category, self.resource_id,
                            self.sku_id, self.currency, str(self.effective_cost.normalize()),
                            str(self.billed_cost.normalize())))


@dataclass(frozen=True, slots=True)
class Match:
    kind: str  # node | shared | unmatched
    cluster: str = ""
    node: str = ""
    label: str = ""  # shared: what it is (load balancer, NAT gateway...); unmatched: the reason


@dataclass(slots=True)
class KeyedLine:
    key: str  # content key: sha256 of the content and its occurrence among identical lines
    line: InvoiceLine
    micros: int = 0  # EffectiveCost in micro-units (running-sum rounding, module docstring)
    match: Match = Match(MATCH_UNMATCHED)


# --- reading --------------------------------------------------------------------------------

def read_invoice(path: str | Path) -> list[InvoiceLine]:
    """Read and validate a FOCUS file (.csv, .csv.gz or .parquet); InvoiceError names the file,
    row and column of the first problem."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(".parquet"):
        return parse_rows(_parquet_rows(p), str(p))
    if name.endswith(".csv") or name.endswith(".csv.gz"):
        return parse_rows(_csv_rows(p), str(p))
    raise InvoiceError(f"{p}: unknown file type; expected .csv, .csv.gz or .parquet")


def _csv_rows(p: Path) -> Iterator[Mapping[str, Any]]:
    import gzip

    try:
        raw = gzip.open(p, "rb") if p.name.lower().endswith(".gz") else open(p, "rb")
    except OSError as e:
        raise InvoiceError(f"{p}: cannot read: {e.strerror or e}") from e
    # utf-8-sig: Azure's exports begin with a byte-order mark
    with raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
        try:
            short = object()
            reader = csv.DictReader(text, strict=True, restval=short)
            cols = reader.fieldnames or []
            yield {"__columns__": cols}
            for i, rec in enumerate(reader, start=1):
                if None in rec:
                    raise InvoiceError(f"{p}: row {i}: more fields than the header has columns")
                if any(v is short for v in rec.values()):
                    n = sum(1 for v in rec.values() if v is not short)
                    raise InvoiceError(f"{p}: row {i}: {n} fields, the header has {len(cols)} "
                                       "(a cut or malformed file)")
                yield rec
        except UnicodeDecodeError as e:
            raise InvoiceError(f"{p}: not UTF-8 text (byte {e.start}): {e.reason}") from e
        except csv.Error as e:
            raise InvoiceError(f"{p}: line {reader.line_num}: not valid CSV: {e}") from e
        except (OSError, EOFError) as e:  # a truncated or corrupt .gz
            raise InvoiceError(f"{p}: cannot read: {e}") from e


def _parquet_rows(p: Path) -> Iterator[Mapping[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - a dependency
        raise InvoiceError(f"{p}: reading Parquet needs pyarrow (pip install "
                           "'otel-agent[invoice]'); CSV needs nothing") from e
    try:
        f = pq.ParquetFile(p)
    except OSError as e:
        raise InvoiceError(f"{p}: cannot read: {e.strerror or e}") from e
    except Exception as e:  # noqa: BLE001 - pyarrow's ArrowInvalid and friends: not Parquet
        raise InvoiceError(f"{p}: not a Parquet file: {str(e).splitlines()[0][:200]}") from e
    if f.metadata.num_rows > MAX_LINES:
        raise InvoiceError(f"{p}: {f.metadata.num_rows} rows; at most {MAX_LINES} per file")
    cols = f.schema_arrow.names
    yield {"__columns__": cols}
    wanted = [c for c in cols if c in REQUIRED or c in OPTIONAL]
    try:
        for batch in f.iter_batches(batch_size=65536, columns=wanted):
            yield from batch.to_pylist()
    except Exception as e:  # noqa: BLE001
        raise InvoiceError(f"{p}: cannot read Parquet data: {str(e).splitlines()[0][:200]}") from e


def parse_rows(rows: Iterable[Mapping[str, Any]], source: str) -> list[InvoiceLine]:
    """Validate rows (the first item: {"__columns__": [...]}) into lines."""
    it = iter(rows)
    header = next(it, None)
    cols = list(header["__columns__"]) if header else []
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise InvoiceError(f"{source}: not a FOCUS file: missing column(s) {', '.join(missing)}")
    out: list[InvoiceLine] = []
    currencies: set[str] = set()
    for i, rec in enumerate(it, start=1):
        if i > MAX_LINES:
            raise InvoiceError(f"{source}: more than {MAX_LINES} rows; split the file")
        line = _line(rec, i, source)
        currencies.add(line.currency)
        if len(currencies) > 1:
            raise InvoiceError(f"{source}: row {i}, column BillingCurrency: {line.currency} in a "
                               f"file billed in {sorted(currencies - {line.currency})[0]}; one "
                               f"currency per import")
        out.append(line)
    return out


def _line(rec: Mapping[str, Any], row: int, source: str) -> InvoiceLine:
    def fail(col: str, what: str) -> InvoiceError:
        return InvoiceError(f"{source}: row {row}, column {col}: {what}")

    def text(col: str, required: bool = True) -> str:
        v = rec.get(col)
        if v is None or (isinstance(v, str) and v.strip() == ""):
            if required:
                raise fail(col, "empty")
            return ""
        if not isinstance(v, str):
            raise fail(col, f"expected text, got {type(v).__name__}")
        v = v.strip()
        if len(v) > MAX_TEXT:
            raise fail(col, f"{len(v)} characters long (at most {MAX_TEXT})")
        if any(ord(ch) < 32 or 0x7f <= ord(ch) <= 0x9f for ch in v):
            raise fail(col, "holds a control character")
        return v

    def when(col: str) -> int:
        v = rec.get(col)
        if v is None or (isinstance(v, str) and not v.strip()):
            raise fail(col, "empty")
        t = _timestamp(v)
        if t is None:
            raise fail(col, f"{str(v)[:60]!r} is not a UTC date-time "
                            "(e.g. 2026-11-01T00:00:00Z)")
        if not _EARLIEST <= t < _LATEST:
            raise fail(col, f"{t.isoformat()} is outside 2000-2099")
        return int(t.timestamp())

    def money(col: str) -> Decimal:
        v = rec.get(col)
        if v is None or (isinstance(v, str) and not v.strip()):
            raise fail(col, "empty (FOCUS: not nullable)")
        if isinstance(v, str) and len(v.strip()) > 64:
            raise fail(col, f"{len(v.strip())} characters is not a cost")
        d = _decimal(v)
        if d is None:
            raise fail(col, f"{str(v)[:60]!r} is not a number")
        if abs(d) > MAX_COST:
            raise fail(col, f"{v} is not a plausible cost for one line (over {MAX_COST:,})")
        return d

    account = text("BillingAccountId")
    bp0, bp1 = when("BillingPeriodStart"), when("BillingPeriodEnd")
    if bp1 <= bp0:
        raise fail("BillingPeriodEnd", "not after BillingPeriodStart")
    if bp1 - bp0 > 366 * 86400:
        raise fail("BillingPeriodEnd", "a billing period longer than a year")
    cp0, cp1 = when("ChargePeriodStart"), when("ChargePeriodEnd")
    if cp1 < cp0:
        raise fail("ChargePeriodEnd", "before ChargePeriodStart")
    category = text("ChargeCategory")
    if category not in CHARGE_CATEGORIES:
        raise fail("ChargeCategory", f"{category[:40]!r} is not one of "
                                     f"{', '.join(CHARGE_CATEGORIES)}")
    currency = text("BillingCurrency")
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise fail("BillingCurrency", f"{currency[:20]!r} is not an ISO 4217 code like USD")
    return InvoiceLine(
        row=row, source=source, billing_account=account, billing_period_start=bp0,
        billing_period_end=bp1, charge_period_start=cp0, charge_period_end=cp1,
        charge_category=category, charge_class=text("ChargeClass", False),
        service_name=text("ServiceName", False), service_category=text("ServiceCategory", False),
        resource_id=text("ResourceId", False), sku_id=text("SkuId", False), currency=currency,
        effective_cost=money("EffectiveCost"), billed_cost=money("BilledCost"))


def _decimal(v: Any) -> Decimal | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, Decimal):
        d = v
    elif isinstance(v, int):
        d = Decimal(v)
    elif isinstance(v, float):
        d = Decimal(repr(v))  # the shortest decimal that reads back as this double
    elif isinstance(v, str):
        try:
            d = Decimal(v.strip())
        except InvalidOperation:
            return None
    else:
        return None
    return d if d.is_finite() else None


_TS_FORMS = (re.compile(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d(?::\d\d(?:\.\d{1,9})?)?)"
                        r"\s*(Z|UTC|[+-]\d\d:?\d\d)?\Z"),)


def _timestamp(v: Any) -> datetime | None:
    """A FOCUS date-time: ISO 8601 in UTC (AWS, Azure 1.0 and 1.0r2 forms), BigQuery's
    `2026-11-01 00:00:00 UTC`, a bare date (midnight UTC), or a Parquet timestamp."""
    if isinstance(v, datetime):
        return v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)
    if isinstance(v, date):
        return datetime(v.year, v.month, v.day, tzinfo=timezone.utc)
    if not isinstance(v, str):
        return None
    s = v.strip()
    if re.fullmatch(r"\d{4}-\d\d-\d\d", s):
        try:
            return datetime.fromisoformat(s).replace(tzinfo=timezone.utc)
        except ValueError:
            return None
    m = _TS_FORMS[0].match(s)
    if not m:
        return None
    d, t, zone = m.groups()
    if zone in (None, "Z", "UTC"):
        zone = "+00:00"
    elif ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    frac = ""
    if "." in t:
        t, frac = t.split(".")
        frac = "." + frac[:6]
    if t.count(":") == 1:
        t += ":00"
    try:
        return datetime.fromisoformat(f"{d}T{t}{frac}{zone}").astimezone(timezone.utc)
    except ValueError:
        return None


# --- keys and money -------------------------------------------------------------------------

def keyed(lines: Sequence[InvoiceLine]) -> list[KeyedLine]:
    """Each line with its content key (identical lines in one import are told apart by their
    occurrence, so re-reading the same file gives the same keys) and its micro-units, by
    running-sum rounding per (account, billing period) (module docstring)."""
    seen: Counter[str] = Counter()
    out: list[KeyedLine] = []
    for ln in lines:
        c = ln.content()
        seen[c] += 1
        key = hashlib.sha256(f"{c}\x1e{seen[c]}".encode()).hexdigest()
        out.append(KeyedLine(key, ln))
    by_scope: dict[tuple[str, int], list[KeyedLine]] = defaultdict(list)
    for k in out:
        by_scope[scope_of(k.line)].append(k)
    for group in by_scope.values():
        group.sort(key=lambda k: k.key)
        running = Decimal(0)
        before = 0
        for k in group:
            running += k.line.effective_cost
            now = to_micros(running)
            k.micros = now - before
            before = now
    return out


def to_micros(amount: Decimal) -> int:
    """An amount in integer micro-units of the currency, rounded half-even."""
    return int((amount * MICRO).to_integral_value(rounding=ROUND_HALF_EVEN))


def scope_of(line: InvoiceLine) -> tuple[str, int]:
    """What a corrected file replaces: every stored line of the same billing account and
    billing period."""
    return line.billing_account, line.billing_period_start


def spread_hours(micros: int, start_s: int, end_s: int) -> dict[int, int]:
    """micro-units over the UTC hours of [start, end), in proportion to the seconds in each
    (largest remainder: they add up exactly). An empty period lands in its hour."""
    if end_s <= start_s:
        return {start_s - start_s % 3600: micros}
    hours = list(range(start_s - start_s % 3600, end_s, 3600))
    weights = [min(h + 3600, end_s) - max(h, start_s) for h in hours]
    return {h: m for h, m in zip(hours, split_micros(micros, weights)) if m}


# --- matching -------------------------------------------------------------------------------

_AWS_INSTANCE = re.compile(r"(?:arn:aws[a-z-]*:ec2:[a-z0-9-]*:\d*:instance/)?(i-[0-9a-f]{8,17})\Z")
_AWS_VOLUME = re.compile(r"(?:arn:aws[a-z-]*:ec2:[a-z0-9-]*:\d*:volume/)?vol-[0-9a-f]{8,17}\Z")
_AZURE_VM = re.compile(r"/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.compute/"
                       r"(?:virtualmachines/[^/]+|virtualmachinescalesets/[^/]+/virtualmachines/[^/]+)\Z")
_GCP_INSTANCE = re.compile(r"//compute\.googleapis\.com/projects/([^/]+)/zones/([^/]+)/instances/([^/]+)\Z")


def instance_key(resource_id: str) -> str | None:
    """The machine a ResourceId names, in the form provider_key() gives, or None."""
    r = resource_id.strip()
    m = _AWS_INSTANCE.match(r)
    if m:
        return f"aws:{m.group(1)}"
    low = r.lower()
    if _AZURE_VM.match(low):
        return f"azure:{low}"
    m = _GCP_INSTANCE.match(r)
    if m:
        return f"gcp:{m.group(1)}/{m.group(2)}/{m.group(3)}"
    return None


def provider_key(provider_id: str) -> str | None:
    """The machine a node's spec.providerID names (aws:///zone/i-..., azure:///subscriptions/...,
    gce://project/zone/name), in instance_key()'s form, or None."""
    scheme, sep, rest = provider_id.strip().partition("://")
    if not sep:
        return None
    if scheme == "aws":
        m = re.search(r"(i-[0-9a-f]{8,17})\Z", rest)
        return f"aws:{m.group(1)}" if m else None
    if scheme == "azure":
        low = rest.lower()
        return f"azure:{low}" if _AZURE_VM.match(low) else None
    if scheme == "gce":
        parts = rest.strip("/").split("/")
        return f"gcp:{'/'.join(parts)}" if len(parts) == 3 and all(parts) else None
    return None


# What is the cluster's as a whole, by ResourceId and ServiceName (lower case): the label of
# its own row in the reconciliation.
_SHARED_RULES: tuple[tuple[str, re.Pattern], ...] = (
    ("load balancer", re.compile(r"elasticloadbalancing|/loadbalancers/|/forwardingrules/|"
                                 r"/targetpools/|/backendservices/|load balanc")),
    ("NAT gateway", re.compile(r"natgateway|/natgateways/|/routers/.*nat|cloud nat|nat gateway")),
    ("control plane", re.compile(r"arn:aws[a-z-]*:eks:|/microsoft\.containerservice/managedclusters/"
                                 r"|//container\.googleapis\.com/|kubernetes engine|"
                                 r"elastic kubernetes service|kubernetes service")),
    ("support", re.compile(r"support")),
)
_DISK = re.compile(r"/microsoft\.compute/disks/|//compute\.googleapis\.com/projects/[^/]+/zones/"
                   r"[^/]+/disks/")


def classify(line: InvoiceLine, nodes: Mapping[str, tuple[str, str]]) -> Match:
    """Where a line's cost goes. `nodes` maps provider_key() → (cluster, node)."""
    rid = line.resource_id
    key = instance_key(rid) if rid else None
    usage = line.charge_category == "Usage" and line.charge_class != "Correction"
    if key is not None and usage:
        hit = nodes.get(key)
        if hit is not None:
            if line.charge_period_end - line.charge_period_start > MAX_SPREAD_S:
                return Match(MATCH_UNMATCHED, label="node line longer than a billing period")
            return Match(MATCH_NODE, hit[0], hit[1])
    if line.charge_category == "Tax":
        return Match(MATCH_SHARED, label="tax")
    if line.charge_category in ("Credit", "Adjustment") or line.charge_class == "Correction":
        return Match(MATCH_SHARED, label=f"{line.charge_category.lower()}"
                     + (" (correction)" if line.charge_class == "Correction" else ""))
    text = f"{rid} {line.service_name}".lower()
    for label, pattern in _SHARED_RULES:
        if pattern.search(text):
            return Match(MATCH_SHARED, label=label)
    if key is not None:
        if not usage:
            return Match(MATCH_UNMATCHED, label=f"{line.charge_category.lower()} line of an "
                         "instance (not usage)")
        return Match(MATCH_UNMATCHED, label="instance with no node in the ledger")
    if _AWS_VOLUME.match(rid) or _DISK.search(rid.lower()):
        return Match(MATCH_UNMATCHED, label="disk (volumes are not matched to PVs yet)")
    if not rid:
        return Match(MATCH_UNMATCHED, label=f"no ResourceId: {line.service_name or '?'}")
    return Match(MATCH_UNMATCHED, label=f"other resource: {line.service_name or '?'}")


def match_all(lines: list[KeyedLine], nodes: Mapping[str, tuple[str, str]]) -> None:
    for k in lines:
        k.match = classify(k.line, nodes)


def node_hours(lines: Iterable[KeyedLine]) -> dict[tuple[str, str, str, int, int], int]:
    """(cluster, node, account, billing period start, hour) → micro-units of the node lines."""
    out: dict[tuple[str, str, str, int, int], int] = defaultdict(int)
    for k in lines:
        if k.match.kind != MATCH_NODE:
            continue
        ln = k.line
        for h, m in spread_hours(k.micros, ln.charge_period_start, ln.charge_period_end).items():
            out[(k.match.cluster, k.match.node, ln.billing_account, ln.billing_period_start, h)] += m
    return dict(out)


__all__ = ["InvoiceError", "InvoiceLine", "KeyedLine", "Match", "read_invoice", "parse_rows",
           "keyed", "to_micros", "scope_of", "spread_hours", "instance_key", "provider_key",
           "classify", "match_all", "node_hours", "MATCH_NODE", "MATCH_SHARED", "MATCH_UNMATCHED"]
