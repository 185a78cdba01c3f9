"""FOCUS invoice files shaped like each provider's export, built from the documented columns:

  * AWS Data Exports, "FOCUS 1.2 with AWS columns" (docs.aws.amazon.com/cur/latest/userguide/
    table-dictionary-focus-1-2-aws-columns): FOCUS columns plus x_Discounts, x_Operation,
    x_ServiceCode, x_UsageType; hourly lines; ResourceId the bare instance id (i-...) or an ARN;
    timestamps `2026-01-01T00:00:00.000Z` in CSV, timestamp[ms] in Parquet.
  * Azure Cost Management, FOCUS cost and usage details (learn.microsoft.com/azure/
    cost-management-billing/dataset-schema/cost-usage-details-focus), 1.0r2: a byte-order mark,
    `2026-01-01T00:00:00Z`, daily lines, x_ columns (x_SkuMeterName, x_ResourceGroupName...),
    ResourceId the ARM path, virtual machine scale set instances as
    .../virtualMachineScaleSets/<ss>/virtualMachines/<n>.
  * Google Cloud's FOCUS BigQuery view: `2026-01-01 00:00:00 UTC`, hourly lines, ResourceId the
    full resource name //compute.googleapis.com/projects/<p>/zones/<z>/instances/<name>.

A test states what each line costs; the expected totals come from those numbers, not from the
code under test.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

FOCUS_CORE = ["AvailabilityZone", "BilledCost", "BillingAccountId", "BillingAccountName",
              "BillingCurrency", "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory",
              "ChargeClass", "ChargeDescription", "ChargeFrequency", "ChargePeriodEnd",
              "ChargePeriodStart", "CommitmentDiscountId", "ConsumedQuantity", "ConsumedUnit",
              "EffectiveCost", "InvoiceIssuerName", "ListCost", "PricingCategory",
              "ProviderName", "PublisherName", "RegionId", "ResourceId", "ResourceName",
              "ResourceType", "ServiceCategory", "ServiceName", "SkuId", "SkuPriceId",
              "SubAccountId", "Tags"]
EXTRA = {
    "aws": ["x_Discounts", "x_Operation", "x_ServiceCode", "x_UsageType"],
    "azure": ["x_AccountName", "x_ResourceGroupName", "x_SkuMeterName", "x_SkuDescription"],
    "gcp": ["x_ServiceId", "x_ProjectName"],
}
PROVIDER = {"aws": "AWS", "azure": "Microsoft", "gcp": "Google Cloud"}


@dataclass
class Line:
    start: datetime
    end: datetime
    cost: str  # EffectiveCost as the file writes it
    resource_id: str = ""
    service: str = "Compute"
    category: str = "Usage"
    billed: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def ts(provider: str, t: datetime, parquet: bool = False):
    if parquet:
        return t.replace(tzinfo=None) if provider != "azure" else t
    if provider == "aws":
        return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    if provider == "azure":
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def rows(provider: str, lines: list[Line], *, account: str = "123456789012",
         period: tuple[datetime, datetime] | None = None, currency: str = "USD",
         parquet: bool = False) -> tuple[list[str], list[dict]]:
    cols = FOCUS_CORE + EXTRA[provider]
    p0, p1 = period or (datetime(2026, 1, 1, tzinfo=timezone.utc),
                        datetime(2026, 2, 1, tzinfo=timezone.utc))
    out = []
    for ln in lines:
        r = {c: "" for c in cols}
        r.update({
            "BilledCost": ln.billed if ln.billed is not None else ln.cost,
            "BillingAccountId": account, "BillingAccountName": "acme",
            "BillingCurrency": currency, "BillingPeriodStart": ts(provider, p0, parquet),
            "BillingPeriodEnd": ts(provider, p1, parquet), "ChargeCategory": ln.category,
            "ChargeFrequency": "Usage-Based", "ChargePeriodStart": ts(provider, ln.start, parquet),
            "ChargePeriodEnd": ts(provider, ln.end, parquet), "EffectiveCost": ln.cost,
            "ListCost": ln.cost, "ProviderName": PROVIDER[provider],
            "PublisherName": PROVIDER[provider], "InvoiceIssuerName": PROVIDER[provider],
            "ResourceId": ln.resource_id, "ServiceName": ln.service,
            "ServiceCategory": "Compute" if ln.service == "Compute" else "Other",
            "SkuId": "SKU-1", "ChargeDescription": f"{ln.service} usage",
        })
        if provider == "aws":
            r["x_ServiceCode"] = "AmazonEC2"
            r["x_UsageType"] = "BoxUsage:m5.xlarge"
        r.update(ln.extra)
        if parquet:
            for c in ("BilledCost", "EffectiveCost", "ListCost"):
                r[c] = float(Decimal(r[c])) if r[c] != "" else None
            for c, v in list(r.items()):
                if v == "":
                    r[c] = None
        out.append(r)
    return cols, out


def write(path: Path, provider: str, lines: list[Line], **kw) -> Path:
    parquet = path.suffix == ".parquet"
    cols, data = rows(provider, lines, parquet=parquet, **kw)
    if parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(data), path)
        return path
    enc = "utf-8-sig" if provider == "azure" else "utf-8"
    with open(path, "w", encoding=enc, newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(data)
    return path


def hourly(start: datetime, hours: int, cost: str, resource_id: str, **kw) -> list[Line]:
    from datetime import timedelta

    return [Line(start + timedelta(hours=i), start + timedelta(hours=i + 1), cost, resource_id, **kw)
            for i in range(hours)]


AWS_ID = "i-0abc1234def567890"
AWS_PROVIDER_ID = f"aws:///us-east-1a/{AWS_ID}"
AZURE_PATH = ("/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/resourceGroups/MC_rg_aks_westeurope/"
              "providers/Microsoft.Compute/virtualMachineScaleSets/aks-nodepool1-12345678-vmss/"
              "virtualMachines/3")
AZURE_PROVIDER_ID = "azure://" + AZURE_PATH.replace("resourceGroups/MC_rg", "resourceGroups/mc_rg")
GCP_RESOURCE = "//compute.googleapis.com/projects/shop-prod/zones/europe-west1-b/instances/gke-shop-pool-1-abcd"
GCP_PROVIDER_ID = "gce://shop-prod/europe-west1-b/gke-shop-pool-1-abcd"
