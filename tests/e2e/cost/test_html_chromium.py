"""The HTML report in a real browser (headless Chromium, offline): the DOM it builds has one
chart series per tenant and one bar per step with cost, and the screenshot is a chart, not a
blank page: the tenants' palette colours cover a real area of it."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from otel_agent.cost.html_report import PALETTE, render_html
from otel_agent.cost.report import ReportQuery
from otel_agent.cost.types import IDLE, OVERHEAD, Allocation, Window

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
TENANTS = ["shop", "search", "payments", "batch", "ml-training"]
DAYS = 7


def _sets() -> list[list[Allocation]]:
    out = []
    for d in range(DAYS):
        w = Window(T0 + timedelta(days=d), T0 + timedelta(days=d + 1))
        s = []
        for i, name in enumerate(TENANTS):
            if name == "batch" and d % 2:  # a tenant absent on some days: no bar those days
                continue
            cost = (len(TENANTS) - i) * 10.0 + d
            s.append(Allocation(name=name, window=w, currency="EUR",
                                properties={"namespace": name}, cpu_core_hours=cost * 20,
                                cpu_cost=cost * 0.7, ram_byte_hours=cost * 2**33,
                                ram_cost=cost * 0.3))
        s.append(Allocation(name=OVERHEAD, window=w, currency="EUR", cpu_cost=4.0))
        s.append(Allocation(name=IDLE, window=w, currency="EUR", cpu_cost=12.0 - d))
        out.append(s)
    return out


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.iterdir()))}"
    profile.mkdir()
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--window-size=1200,900", *args],
        capture_output=True, text=True, timeout=120)


def _decode_png(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Minimal PNG reader (8-bit RGB/RGBA, non-interlaced): enough for Chromium's screenshots."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    pixels = []
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        pixels.extend(tuple(line[i:i + 3]) for i in range(0, stride, bpp))
        prev = line
    return width, height, pixels


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian package 'chromium')")
    tmp = tmp_path_factory.mktemp("html")
    q = ReportQuery(window=Window(T0, T0 + timedelta(days=DAYS)), step=timedelta(days=1))
    path = tmp / "report.html"
    path.write_text(render_html(_sets(), q, title="Cost report: November week 1"))
    return path


def test_dom_has_one_series_per_tenant_and_a_bar_per_step(report, tmp_path):
    p = _chromium(tmp_path, "--dump-dom", report.as_uri())
    assert p.returncode == 0, p.stderr[-2000:]
    dom = p.stdout
    assert 'id="cost-chart"' in dom
    series = re.findall(r'<g class="series" data-series="([^"]+)"', dom)
    assert series == TENANTS + [OVERHEAD, IDLE]
    # bars per series: every day, except batch on odd days
    for name in series:
        block = dom.split(f'data-series="{name}"', 1)[1].split("</g>", 1)[0]
        bars = re.findall(r'<rect class="bar"[^>]*data-step="(\d+)"', block)
        expected = [str(d) for d in range(DAYS) if not (name == "batch" and d % 2)]
        assert bars == expected, name
    assert len(re.findall(r'class="legend-item"', dom)) == len(series)
    assert dom.count('<tr class="tenant"') == len(TENANTS)
    assert "EUR" in dom and "<script" not in dom


def test_screenshot_shows_the_chart(report, tmp_path):
    png = tmp_path / "shot.png"
    p = _chromium(tmp_path, f"--screenshot={png}", report.as_uri())
    assert png.exists(), p.stderr[-2000:]
    width, height, pixels = _decode_png(png.read_bytes())
    assert (width, height) == (1200, 900)
    counts = Counter(pixels)
    assert len(counts) > 50  # text, axes, bars: not a blank page
    white = counts[(255, 255, 255)]
    assert white < 0.9 * len(pixels)
    # each tenant's colour is painted over a visible area (anti-aliasing aside)
    for colour in PALETTE[:len(TENANTS)]:
        rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
        assert counts[rgb] > 500, (colour, counts[rgb])
