"""The CLI as a user meets it: doctor, once, and the health endpoint of run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from otel_agent.cgroups.mount import find_cgroup2_mount
from tests.support.sink import OtlpSink
from demo.synthetic import SyntheticNode, unique_prefix

pytestmark = [pytest.mark.kernel, pytest.mark.e2e]
AGENT = [sys.executable, "-m", "otel_agent"]


def test_doctor_reports_what_this_node_offers(tmp_path):
    with OtlpSink() as sink:
        p = subprocess.run([*AGENT, "doctor", "--metadata", "cgroup", "--endpoint", sink.endpoint],
                           capture_output=True, text=True, timeout=120)
    lines = {m.group(2).strip(): (m.group(1), m.group(3)) for m in
             re.finditer(r"^(OK|WARN|FAIL)\s+(.+?)\s{2,}(.*)$", p.stdout, re.M)}
    root = find_cgroup2_mount()
    assert lines["cgroup v2 mount"] == ("OK", f"{root} ({'hybrid' if root.name == 'unified' else 'unified'})")
    have = set((root / "cgroup.controllers").read_text().split())
    for ctrl in ("cpu", "memory", "io", "pids"):
        assert lines[f"controller {ctrl}"][0] == ("OK" if ctrl in have else "WARN")
    assert lines["OTLP endpoint"][0] == "OK"
    assert lines["eBPF family cpu"][0] == "OK"
    assert p.returncode == (1 if any(s == "FAIL" for s, _ in lines.values()) else 0)


def test_doctor_names_an_unreachable_endpoint_and_exits_1():
    p = subprocess.run([*AGENT, "doctor", "--metadata", "cgroup", "--bpf-profile", "off",
                        "--endpoint", "http://127.0.0.1:9"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 1
    assert re.search(r"^FAIL\s+OTLP endpoint\s+http://127.0.0.1:9 \(grpc\): Connection refused",
                     p.stdout, re.M)


def test_once_json_has_every_pod_and_container_with_units():
    with SyntheticNode(find_cgroup2_mount(), unique_prefix("otel-agent-test")) as synth:
        pod = synth.add_pod("shop", "web-1", containers=("a", "b"))
        p = subprocess.run([*AGENT, "once", "--format", "json", "--metadata", "cgroup",
                            "--bpf-profile", "off", "--kubepods", synth.kubepods],
                           capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    points = json.loads(p.stdout)
    cpu = {(q["resource"].get("container.id")): q for q in points
           if q["name"] in ("container.cpu.time", "k8s.pod.cpu.time")
           and q["resource"].get("k8s.pod.uid") == pod.uid}
    assert set(cpu) == {None, *(c.id for c in pod.containers)}
    assert all(q["unit"] == "s" and q["kind"] == "sum" for q in cpu.values())


def test_run_serves_health_and_stops_on_sigterm(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with OtlpSink() as sink:
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint,
                   OTEL_EXPORTER_OTLP_INSECURE="true", OTEL_METRIC_EXPORT_INTERVAL="500")
        agent = subprocess.Popen([*AGENT, "run", "--metadata", "cgroup", "--bpf-profile", "off",
                                  "--health-listen", f"127.0.0.1:{port}"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            status = None
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                        status = r.status
                        body = json.loads(r.read())
                        break
                except (urllib.error.URLError, ConnectionError):
                    time.sleep(0.2)
            assert status == 200 and body["ok"] and body["cycles"] >= 1
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                assert r.status == 200
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=2)
            assert e.value.code == 404
        finally:
            agent.send_signal(signal.SIGTERM)
            out, _ = agent.communicate(timeout=30)
    assert agent.returncode == 0, out
    assert "one last export" in out
