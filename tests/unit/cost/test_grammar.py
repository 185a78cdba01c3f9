"""OpenCost's aggregate and filter grammar (otel_agent/cost/grammar.py), as tables.

The expected names and matches are OpenCost's own (AllocationProperties.GenerateKey, the v2
filter parser and allocationmatcher.go, read in its source); the error cases say what the
message must name.
"""

from __future__ import annotations

import re

import pytest

from otel_agent.cost import grammar as g
from otel_agent.cost.errors import QueryError

WEB = g.Subject(
    props={"cluster": "c1", "node": "n1", "namespace": "shop", "controllerKind": "deployment",
           "controller": "web", "pod": "web-7d9", "container": "nginx"},
    labels={"app": "web", "team": "alpha", "app.kubernetes.io/name": "web-ui"},
    annotations={"owner": "ops"})
LONE = g.Subject(props={"cluster": "c1", "node": "n2", "namespace": "batch", "pod": "one-off",
                        "container": "main"}, labels={}, annotations={})


@pytest.mark.parametrize("text,keys", [
    ("namespace", ("namespace",)),
    ("Namespace, controllerkind", ("namespace", "controllerKind")),  # case and spaces as OpenCost
    ("namespace,controller,label:team", ("namespace", "controller", "label:team")),
    ("cluster,node,namespace,pod,container", ("cluster", "node", "namespace", "pod", "container")),
    ("deployment,statefulset,daemonset,job", ("deployment", "statefulset", "daemonset", "job")),
    ("label:app,annotation:owner", ("label:app", "annotation:owner")),
    ("team,product,environment", ("label:team", "label:app", "label:env")),  # OpenCost aliases
    ("namespace,namespace", ("namespace",)),  # repeats dropped, as ParseProperties does
    ("all", ()),
    ("workload", ("workload",)),
])
def test_aggregate_keys(text, keys):
    assert g.aggregate_keys(text) == keys


@pytest.mark.parametrize("text,needle", [
    ("", "aggregate is empty"),
    ("colour", "unknown aggregate key 'colour'"),
    ("namespace,,pod", "empty key between commas"),
    ("label:", "needs a Kubernetes label key"),
    ("annotation:-x", "needs a Kubernetes annotation key"),
    ("service", "does not know Kubernetes services"),
    ("providerID", "cloud provider ids"),
    ("all,namespace", "'all' stands alone"),
    (",".join(["namespace"] * 17), "at most 16 keys"),
])
def test_bad_aggregates_say_what_is_wrong(text, needle):
    with pytest.raises(QueryError, match=needle):
        g.aggregate_keys(text)


@pytest.mark.parametrize("agg,web,lone", [
    ("namespace", "shop", "batch"),
    ("namespace,controller,label:team", "shop/deployment:web/alpha",
     "batch/__unallocated__/__unallocated__"),
    ("controllerKind", "deployment", "__unallocated__"),
    ("deployment", "web", "__unallocated__"),
    ("statefulset", "__unallocated__", "__unallocated__"),  # not of that kind
    ("cluster,node,namespace,pod,container", "c1/n1/shop/web-7d9/nginx", "c1/n2/batch/one-off/main"),
    ("label:app_kubernetes_io_name", "web-ui", "__unallocated__"),  # Prometheus-sanitised key
    ("label:app.kubernetes.io/name", "web-ui", "__unallocated__"),
    ("annotation:owner", "ops", "__unallocated__"),
    ("workload", "shop/web", "batch/one-off"),
    ("all", "", ""),
])
def test_names_are_opencosts(agg, web, lone):
    keys = g.aggregate_keys(agg)
    assert g.key_name(keys, WEB) == web
    assert g.key_name(keys, LONE) == lone


@pytest.mark.parametrize("text,web,lone", [
    ('namespace:"shop"', True, False),
    ('namespace:"shop","batch"', True, True),
    ('namespace!:"shop"', False, True),
    ('namespace!:"shop","batch"', False, False),  # several values under !: : none of them
    ('cluster:"c1"+node:"n2"', False, True),
    ('node:"n1"|namespace:"batch"', True, True),
    ('controllerKind:"deployment"', True, False),
    ('controllerName:"web"', True, False),
    ('controller:"web"', True, False),  # our earlier spelling
    ('controllerName:"__unallocated__"', False, True),  # OpenCost: "__unallocated__" is missing
    ('label[team]:"alpha"', True, False),
    ('label[team]:"__unallocated__"', False, True),
    ('label[team]!:"alpha"', False, True),
    ('label:"team"', True, False),  # key-less: the label exists
    ('label[app_kubernetes_io_name]:"web-ui"', True, False),
    ('team:"alpha"', True, False),  # alias of label[team]
    ('annotation[owner]:"ops"', True, False),
    ('pod~:"7d"', True, False),
    ('pod<~:"one"', False, True),
    ('container~>:"inx"', True, False),
    ('pod!~:"web"', False, True),
    ('services:"frontend"', False, False),  # the ledger knows no services
    ('(namespace:"shop"|namespace:"batch")+node:"n1"', True, False),
    ('namespace:"shop" + ( label[team]:"beta" | container:"nginx" )', True, False),
    ('', True, True),
])
def test_filters_match_as_opencost_does(text, web, lone):
    tree = g.parse_filter(text)
    assert (g.matches(tree, WEB), g.matches(tree, LONE)) == (web, lone)


@pytest.mark.parametrize("text,needle", [
    ('colour:"red"', "unknown field 'colour' at position 0"),
    ("namespace:shop", "expected a quoted value"),
    ('namespace="shop"', "unexpected character '='"),
    ('namespace:"shop', "unterminated string"),
    ('label[team:"x"', "unterminated [key]"),
    ('label[]:"x"', "empty []"),
    ('namespace:"a"+node:"b"|pod:"c"', "'+' and '|' mixed"),
    ('(namespace:"a"', "')' to close"),
    ('namespace:"a")', "unexpected ')'"),
    ('namespace!"a"', "unexpected '!'"),
    ('namespace:"a",', "quoted value after"),
    ('namespace', "expected an op"),
    ('namespace:"é"+nodé:"x"', "unexpected character 'é'"),
    ("+".join(['pod:"a"'] * 300), "more than 256 comparisons"),
    ('pod:"a"+' * 700 + 'pod:"a"', "longer than 4096 characters"),
])
def test_bad_filters_say_where_and_what(text, needle):
    with pytest.raises(QueryError, match=re.escape(needle)):
        g.parse_filter(text)


@pytest.mark.parametrize("value,expected", [
    ("true", True), ("1", True), ("t", True), ("TRUE", True), ("True", True),
    ("false", False), ("0", False), ("F", False), (None, None), ("", None)])
def test_booleans_are_gos(value, expected):
    assert g.parse_bool("x", value, None) is expected


def test_a_boolean_typo_is_refused_not_ignored():
    with pytest.raises(QueryError, match="shareIdle='ture': allowed: true or false"):
        g.parse_bool("shareIdle", "ture", False)
