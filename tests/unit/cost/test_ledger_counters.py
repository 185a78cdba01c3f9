"""Counters in the pure core: a lower value is not a reset (OTLP resets come with a new start
time), and nothing a counter adds can exceed what its node can do in the time it covers.
Expected figures come from the points themselves (cores × seconds), not from the code."""

from __future__ import annotations

import pytest

from otel_agent.cost.ingest import CUMULATIVE, GAUGE
from otel_agent.cost.ledger import (LedgerBoundError, SeriesInfo, build_node_hour,
                                    series_quantities)
from otel_agent.cost.validate import MAX_NODE_CORES, counter_allowance
from tests.unit.cost.builders import H, S, T0
from tests.unit.cost.ledger_helpers import pricing

BOOT = T0 - 86400 * S
CAP = 4.0
SERIES = {
    1: SeriesInfo(1, "cpu", "container", CUMULATIVE, "p1", "c1", "", "", '{"pod":"p","namespace":"a"}', 0, "a"),
    2: SeriesInfo(2, "cpu.capacity", "node", GAUGE, "", "", "", "", '{"node_attrs":{}}', 0, ""),
    3: SeriesInfo(3, "cpu", "node", CUMULATIVE, "", "", "", "", '{"node_attrs":{}}', 0, ""),
}


def hour(points, h=1, node_first=T0, prev=None):
    h0 = T0 + h * H
    caps = [(2, 0, t, CAP) for t in range(h0 - 300 * S, h0 + H, 60 * S)]
    return series_quantities(SERIES, points + caps, h0, h0 + H, node_first, prev)


def test_a_forged_zero_between_real_points_bills_nothing_extra():
    h0 = T0 + H
    real = [(1, BOOT, h0 + k * 60 * S, 1000.0 + 60 * k) for k in range(-1, 10)]  # 1 core
    honest = hour(real)[1]
    forged = real[:6] + [(1, BOOT, h0 + 270 * S, 0.0)] + real[6:]
    assert hour(forged)[1] == pytest.approx(honest) == pytest.approx(10 * 60.0)
    # the Prometheus rule would have billed the whole counter again after the 0
    assert hour(forged)[1] < 1000


def test_a_lower_value_is_stale_and_the_next_bills_only_above_the_highest():
    h0 = T0 + H
    pts = [(1, BOOT, h0 - 60 * S, 100.0), (1, BOOT, h0 + 60 * S, 160.0), (1, BOOT, h0 + 120 * S, 150.0),
           (1, BOOT, h0 + 180 * S, 220.0)]
    assert hour(pts)[1] == pytest.approx(120.0)


def test_a_forged_high_point_bills_at_most_the_node_for_its_interval():
    h0 = T0 + H
    real = [(1, BOOT, h0 + k * 60 * S, 1000.0 + 60 * k) for k in range(-1, 10)]
    forged = real[:6] + [(1, BOOT, h0 + 250 * S, 10.0**9)] + real[6:]
    got = hour(forged)[1]
    # 300 s of real usage (from the point before the hour), then at most 4 cores for the 10 s to the forged point; the real
    # points after it are below it: nothing more
    assert got == pytest.approx(5 * 60 + counter_allowance(CAP, 10 * S))
    assert got < 10 * 60  # less than honest: a forged point never bills more than the node


def test_a_counter_since_1970_is_held_to_the_node():
    # (rejected at ingest; here straight into the core, as a ledger from before validation)
    h0 = T0 + H
    t = h0 + 600 * S
    got = hour([(1, 1, t, MAX_NODE_CORES * (t - 1) / S)], prev={t: t - 60 * S})[1]
    assert got == pytest.approx(counter_allowance(CAP, 60 * S))


def test_a_new_pods_first_point_is_bounded_by_the_nodes_previous_export():
    # a series pruned after a long silence comes back with its whole life in one point
    h0 = T0 + H
    t = h0 + 600 * S
    got = hour([(1, BOOT, t, 3 * 86400.0)], prev={t: t - 60 * S})[1]
    assert got == pytest.approx(counter_allowance(CAP, 60 * S))
    # an honest new pod (created after the previous export) is billed in full
    assert hour([(1, BOOT, t, 50.0)], prev={t: t - 60 * S})[1] == pytest.approx(50.0)


def test_the_node_usage_counter_is_held_to_capacity_too():
    h0 = T0 + H
    pts = [(3, BOOT, h0 - 60 * S, 100.0), (3, BOOT, h0 + 60 * S, 100.0 + 10**7)]
    assert hour(pts)[3] == pytest.approx(counter_allowance(CAP, 120 * S))


def test_a_node_hour_beyond_what_any_node_can_cost_is_refused():
    from otel_agent.cost.pricing import parse_pricing

    dear = parse_pricing("currency: USD\nrates: {cpu_core_hour: 999999, memory_gib_hour: 0, gpu_hour: 0, "
                         "storage_gib_hour: 0, network_gib: {}}\n", "dear.yaml")
    h0 = T0 + H
    pts = [(2, 0, t, 4000.0) for t in range(h0, h0 + H, 60 * S)]
    with pytest.raises(LedgerBoundError, match="beyond what a node-hour can cost"):
        build_node_hour(hour_s=h0 // S, cluster="", node="n1", series=SERIES, points=pts,
                        pricing=dear)
    assert build_node_hour(hour_s=h0 // S, cluster="", node="n1", series=SERIES, points=pts,
                           pricing=pricing())
