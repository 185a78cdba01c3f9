"""Write the semantic-conventions table that tests/unit/agent/test_semconv.py checks our metric
and attribute names against.

The table is checked in (tests/fixtures/semconv/) because the semantic-conventions repository
is not a dependency: this script is how it was made and how to remake it for a new release.

    git clone --branch v1.44.0 https://github.com/open-telemetry/semantic-conventions
    python scripts/semconv_table.py semantic-conventions/model v1.44.0 \
        > tests/fixtures/semconv/semconv-1.44.0.yaml

It keeps, from the model's YAML, what a name check needs: every metric (instrument, unit, the
attributes it references, deprecation) and every attribute of the registry (type, enum
members, deprecation), nothing else.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def _deprecation(item: dict) -> str | None:
    d = item.get("deprecated")
    if not d:
        return None
    if isinstance(d, dict):
        if d.get("renamed_to"):
            return f"renamed to {d['renamed_to']}"
        return str(d.get("reason") or "deprecated")
    return str(d)


def _type(attr: dict) -> tuple[str, list[str] | None]:
    t = attr.get("type")
    if isinstance(t, dict):  # an enum: its members' values
        return "enum", sorted(str(m["value"]) for m in t.get("members", []))
    return str(t), None


def collect(model: Path) -> tuple[dict, dict]:
    metrics: dict[str, dict] = {}
    attributes: dict[str, dict] = {}
    for path in sorted(model.rglob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for group in doc.get("groups") or []:
            if group.get("type") == "metric":
                row = {
                    "instrument": group["instrument"],
                    "unit": str(group["unit"]),
                    "attributes": sorted(a.get("ref") or a["id"] for a in group.get("attributes") or []),
                }
                dep = _deprecation(group)
                if dep:
                    row["deprecated"] = dep
                metrics[group["metric_name"]] = row
            for attr in group.get("attributes") or []:
                if "id" not in attr or attr["id"] in attributes:
                    continue
                kind, members = _type(attr)
                row = {"type": kind}
                if members is not None:
                    row["members"] = members
                dep = _deprecation(attr)
                if dep:
                    row["deprecated"] = dep
                attributes[attr["id"]] = row
    return metrics, attributes


def _flow(row: dict) -> str:
    return yaml.safe_dump(row, default_flow_style=True, width=10_000, sort_keys=False).strip()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: semconv_table.py MODEL_DIR VERSION", file=sys.stderr)
        return 2
    metrics, attributes = collect(Path(argv[1]))
    out = [
        f"# OpenTelemetry semantic conventions {argv[2]}: metrics and attributes, as",
        "# scripts/semconv_table.py reads them from the release's model/ directory.",
        f"version: {argv[2].lstrip('v')!r}",
        "metrics:",
    ]
    out += [f"  {name}: {_flow(row)}" for name, row in sorted(metrics.items())]
    out.append("attributes:")
    out += [f"  {name}: {_flow(row)}" for name, row in sorted(attributes.items())]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
