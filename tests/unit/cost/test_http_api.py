"""The HTTP API on a real loopback socket: OpenCost's parameters map onto our query, the body
is OpenCost's shape, errors are JSON 400s naming the parameter, and the token is enforced.

The ledger here is the hand-built fixture behind the same query signature as
otel_agent.cost.allocation.allocations; tests/e2e/cost/test_http_ledger.py runs the real one.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime, timezone

import pytest

from otel_agent.cost.http_api import parse_listen, parse_params, serve
from otel_agent.cost.report import accumulate_sets
from otel_agent.cost.types import IDLE, Model, SharePolicy
from otel_agent.errors import ConfigError

from tests.unit.cost import test_report_data as D

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=timezone.utc)


class FixtureLedger:
    """Answers like the ledger: steps of the fixture inside the window, one set per step."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, store, window, *, aggregate, step, model, share_idle, idle_by_node, filter,
                 should_stop=None):
        self.calls.append(dict(window=window, aggregate=aggregate, step=step, model=model,
                               share_idle=share_idle, idle_by_node=idle_by_node, filter=filter))
        if filter == 'namespace:"boom"':
            raise ConfigError("filter: unknown field boom")
        sets = [s for s in D.sets() if s and window.start <= s[0].window.start < window.end]
        return sets if step else accumulate_sets(sets)


class Pricing:
    currency = "USD"


@pytest.fixture
def api():
    ledger = FixtureLedger()
    h = serve(None, Pricing(), "127.0.0.1:0", query_fn=ledger, clock=lambda: NOW)
    yield h, ledger
    h.stop()


@pytest.fixture
def secured():
    h = serve(None, Pricing(), "127.0.0.1:0", auth_token="s3cret", query_fn=FixtureLedger(),
              clock=lambda: NOW)
    yield h
    h.stop()


def get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


W = "2026-11-24T00:00:00Z,2026-11-24T03:00:00Z"


def test_allocation_with_steps_is_opencost_shaped(api):
    h, ledger = api
    status, headers, body = get(f"{h.url}/allocation?window={W}&aggregate=namespace&step=1h")
    assert status == 200 and headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert doc["code"] == 200 and len(doc["data"]) == 3
    for i, step in enumerate(doc["data"]):
        for name, a in step.items():
            assert a["totalCost"] == pytest.approx(D.expected_cost(name, i))
    c = ledger.calls[-1]
    assert c["step"].total_seconds() == 3600 and c["aggregate"] == "namespace"
    assert c["window"] == D.WINDOW


def test_accumulate_sums_the_steps(api):
    h, _ = api
    _, _, body = get(f"{h.url}/allocation/compute?window={W}&step=1h&accumulate=true"
                     "&includeIdle=true")
    [only] = json.loads(body)["data"]
    for name in D.RAW:
        assert only[name]["totalCost"] == pytest.approx(D.expected_cost(name))


def test_opencost_and_our_share_idle_values(api):
    h, ledger = api
    for value, policy in [("true", SharePolicy.PROPORTIONAL), ("false", SharePolicy.NONE),
                          ("even", SharePolicy.EVEN), ("proportional", SharePolicy.PROPORTIONAL)]:
        status, _, _ = get(f"{h.url}/allocation?window={W}&shareIdle={value}&idleByNode=true"
                           f"&model=usage&filter=namespace:%22shop%22&resolution=1m")
        assert status == 200
        c = ledger.calls[-1]
        assert c["share_idle"] is policy
        assert c["idle_by_node"] is True and c["model"] is Model.USAGE
        assert c["filter"] == 'namespace:"shop"'


def test_the_html_page_keeps_idle_whatever_include_idle_says(api):
    h, _ = api
    status, _, body = get(f"{h.url}/report.html?window={W}")
    assert status == 200 and IDLE in body.decode()


def test_include_idle_false_drops_idle(api):
    h, _ = api
    _, _, body = get(f"{h.url}/allocation?window={W}&includeIdle=false")
    assert IDLE not in json.loads(body)["data"][0]


@pytest.mark.parametrize("query,needle", [
    ("", "window is required"),
    ("window=fortnight", "allowed: today"),
    (f"window={W}&aggregate=colour", "unknown aggregate key 'colour'"),
    (f"window={W}&aggregate=service", "not supported"),
    (f"window={W}&filter=namespace%3Akube-system", "expected a quoted value"),
    (f"window={W}&filter=namespace:%22a%22%2Bnode:%22b%22%7Cpod:%22c%22", "mixed"),
    (f"window={W}&accumulateBy=fortnight", "allowed: all, hour, day, week, month, quarter"),
    (f"window={W}&accumulate=ture", "or a period: hour, day"),
    (f"window={W}&accumulate=true&accumulateBy=all", "not both"),
    (f"window={W}&includeIdle=ture", "allowed: true or false"),
    (f"window={W}&step=1y", "step"),
    (f"window={W}&shareIdle=maybe", "allowed: true, false, none, proportional or even"),
    (f"window={W}&idleByNode=perhaps", "allowed: true or false"),
    (f"window={W}&model=cheap", "allowed: usage, request-or-usage"),
    (f"window={W}&windw=7d", "unknown parameter 'windw'"),
    (f"window={W}&window=7d", "more than once"),
    (f"window={W}&filter=namespace:%22boom%22", "unknown field boom"),
])
def test_bad_parameters_are_json_400s(api, query, needle):
    h, _ = api
    status, headers, body = get(f"{h.url}/allocation?{query}")
    assert status == 400
    doc = json.loads(body)
    assert doc["code"] == 400 and doc["status"] == "error"
    assert needle in doc["message"]


def test_unknown_path_and_method(api):
    h, _ = api
    status, _, body = get(f"{h.url}/nope")
    assert status == 404 and "/allocation" in json.loads(body)["message"]
    req = urllib.request.Request(f"{h.url}/allocation?window=today", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req, timeout=10)
    assert ei.value.code == 405


def test_token_is_required_when_set(secured):
    status, headers, body = get(f"{secured.url}/allocation?window={W}")
    assert status == 401 and "Bearer" in headers["WWW-Authenticate"]
    assert json.loads(body)["code"] == 401
    assert get(f"{secured.url}/allocation?window={W}", {"Authorization": "Bearer wrong"})[0] == 401
    assert get(f"{secured.url}/allocation?window={W}", {"Authorization": "Basic s3cret"})[0] == 401
    assert get(f"{secured.url}/report.html?window={W}")[0] == 401
    ok = get(f"{secured.url}/allocation?window={W}", {"Authorization": "Bearer s3cret"})
    assert ok[0] == 200
    assert get(f"{secured.url}/healthz")[0] == 200  # liveness probes carry no token


def test_report_html_is_served(api):
    h, _ = api
    status, headers, body = get(f"{h.url}/report.html?window={W}&step=1h")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    text = body.decode()
    assert text.startswith("<!DOCTYPE html>") and 'data-steps="3"' in text
    assert "<script" not in text and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_stop_is_idempotent_and_frees_the_port():
    h = serve(None, Pricing(), "127.0.0.1:0", query_fn=FixtureLedger(), clock=lambda: NOW)
    port = h.port
    h.stop()
    h.stop()
    h2 = serve(None, Pricing(), f"127.0.0.1:{port}", query_fn=FixtureLedger(), clock=lambda: NOW)
    h2.stop()


def test_listen_parsing():
    assert parse_listen("127.0.0.1:9003") == ("127.0.0.1", 9003)
    assert parse_listen("[::1]:80") == ("::1", 80)
    assert parse_listen("0.0.0.0") == ("0.0.0.0", 9003)
    for bad in ("127.0.0.1:http", ":9003", "1.2.3.4:70000"):
        with pytest.raises(ConfigError, match="HOST:PORT"):
            parse_listen(bad)


def test_parse_params_defaults():
    aq = parse_params("window=today", NOW)
    q = aq.query
    # OpenCost's defaults: every container by cluster/node/namespace/pod, idle left out
    assert (q.aggregate, q.model, q.share_idle, q.idle_by_node, q.step, q.filter) == (
        "cluster,node,namespace,pod,container", Model.CHARGEBACK, SharePolicy.NONE, False,
        None, None)
    assert aq.accumulate is None and aq.include_idle is False
    assert parse_params("window=today&idle=true", NOW).include_idle is True
    assert parse_params("window=today&accumulateBy=all", NOW).accumulate == "all"
    assert parse_params("window=today&accumulate=true", NOW).accumulate == "all"
    assert parse_params("window=today&accumulate=false", NOW).accumulate is None
    day = parse_params("window=7d&accumulate=day", NOW)  # the OpenCost UI's query
    assert day.accumulate == "day" and day.query.step.total_seconds() == 86400
    assert parse_params("window=7d&accumulate=hour&metrics=totalCost", NOW).query.step.total_seconds() == 3600


def test_unencoded_plus_in_an_offset_is_understood():
    aq = parse_params("window=2026-11-24T02:00:00+02:00,2026-11-24T05:00:00+02:00", NOW)
    assert aq.query.window == D.WINDOW
