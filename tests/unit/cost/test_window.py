"""Window parsing, table-driven: every form OpenCost accepts, and every error says what is allowed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from otel_agent.cost.types import Window
from otel_agent.cost.window import WindowError, parse_step, parse_window, split
from otel_agent.errors import ConfigError

UTC = timezone.utc
# A Wednesday, mid-hour, so rounding and week starts are all exercised.
NOW = datetime(2026, 11, 25, 14, 37, 12, tzinfo=UTC)


def t(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


CASES = [
    ("today", t(2026, 11, 25), t(2026, 11, 26)),
    ("TODAY", t(2026, 11, 25), t(2026, 11, 26)),
    ("yesterday", t(2026, 11, 24), t(2026, 11, 25)),
    ("week", t(2026, 11, 22), t(2026, 11, 29)),  # Sunday 22nd .. Sunday 29th
    ("lastweek", t(2026, 11, 15), t(2026, 11, 22)),
    ("month", t(2026, 11, 1), t(2026, 12, 1)),
    ("lastmonth", t(2026, 10, 1), t(2026, 11, 1)),
    ("30m", t(2026, 11, 25, 14, 8), t(2026, 11, 25, 14, 38)),
    ("24h", t(2026, 11, 24, 15), t(2026, 11, 25, 15)),
    ("1h", t(2026, 11, 25, 14), t(2026, 11, 25, 15)),
    ("7d", t(2026, 11, 19), t(2026, 11, 26)),  # today so far + 6 whole days
    ("2w", t(2026, 11, 26) - timedelta(weeks=2), t(2026, 11, 26)),
    ("2026-11", t(2026, 11, 1), t(2026, 12, 1)),
    ("2026-12", t(2026, 12, 1), t(2027, 1, 1)),
    ("2024-02", t(2024, 2, 1), t(2024, 3, 1)),
    ("2026-11-24", t(2026, 11, 24), t(2026, 11, 25)),
    ("2024-02-29", t(2024, 2, 29), t(2024, 3, 1)),
    ("2026-11-01T00:00:00Z,2026-11-02T12:00:00Z", t(2026, 11, 1), t(2026, 11, 2, 12)),
    ("2026-11-01T02:00:00+02:00,2026-11-01T03:30:00+02:00", t(2026, 11, 1), t(2026, 11, 1, 1, 30)),
    (" 2026-11-01T00:00:00.5Z , 2026-11-01T01:00:00Z ",
     t(2026, 11, 1).replace(microsecond=500000), t(2026, 11, 1, 1)),
    ("1764547200,1764633600", t(2025, 12, 1), t(2025, 12, 2)),
]


@pytest.mark.parametrize("text,start,end", CASES, ids=[c[0] for c in CASES])
def test_parse_window(text, start, end):
    w = parse_window(text, NOW)
    assert (w.start, w.end) == (start, end)
    assert w.start.utcoffset() == timedelta(0) and w.end.utcoffset() == timedelta(0)


def test_week_on_a_sunday_starts_that_day():
    w = parse_window("week", t(2026, 11, 22, 9))
    assert w.start == t(2026, 11, 22)


def test_lastmonth_in_january_is_december():
    assert parse_window("lastmonth", t(2027, 1, 3)) == Window(t(2026, 12, 1), t(2027, 1, 1))


def test_duration_on_an_exact_boundary_is_not_pushed_forward():
    assert parse_window("24h", t(2026, 11, 25, 14)) == Window(t(2026, 11, 24, 14), t(2026, 11, 25, 14))


def test_now_in_another_zone_is_converted():
    tz = timezone(timedelta(hours=-5))
    # 21:00 on the 24th at -05:00 is 02:00 on the 25th in UTC
    assert parse_window("today", datetime(2026, 11, 24, 21, tzinfo=tz)).start == t(2026, 11, 25)


ERRORS = [
    ("", "empty window"),
    ("   ", "empty window"),
    ("fortnight", "allowed: today"),
    ("0h", "must be positive"),
    ("-1h", "allowed"),
    ("24x", "allowed"),
    ("2026-13", "month 13"),
    ("2026-00", "month 0"),
    ("0000-01", "bad window"),
    ("2026-02-30", "day is out of range"),
    ("2026-11-01T00:00:00Z", "allowed"),
    ("2026-11-01T00:00:00,2026-11-02T00:00:00", "RFC 3339 time with an offset"),
    ("2026-11-02T00:00:00Z,2026-11-01T00:00:00Z", "not after start"),
    ("2026-11-01T00:00:00Z,2026-11-01T00:00:00Z", "not after start"),
    ("a,b,c", "exactly two"),
    ("2026-11-01,2026-11-02T00:00:00", "RFC 3339"),
    ("2026-11-08,2026-11-01", "not after start"),
    ("2026-02-30,2026-03-02", "day is out of range"),
    ("24h offset 0x", "allowed"),
    ("100,50", "not after start"),
    ("99999999d", "too long"),
    ("2000-01-01T00:00:00Z,2026-01-01T00:00:00Z", "10 years"),
]


@pytest.mark.parametrize("text,needle", ERRORS, ids=[repr(e[0]) for e in ERRORS])
def test_bad_windows_name_the_input_and_what_is_allowed(text, needle):
    with pytest.raises(WindowError) as ei:
        parse_window(text, NOW)
    msg = str(ei.value)
    assert needle in msg
    assert "allowed" in msg  # every message lists the accepted forms
    assert isinstance(ei.value, ConfigError)  # so the CLI exits 2


def test_naive_now_is_a_programming_error():
    with pytest.raises(ValueError):
        parse_window("today", datetime(2026, 11, 25))


@pytest.mark.parametrize("text,expected", [("1h", timedelta(hours=1)), ("1d", timedelta(days=1)),
                                           ("30m", timedelta(minutes=30)), ("1w", timedelta(weeks=1)),
                                           (" 2H ", timedelta(hours=2))])
def test_parse_step(text, expected):
    assert parse_step(text) == expected


@pytest.mark.parametrize("text", ["", "0h", "h", "1y", "1.5h", "-1h"])
def test_bad_step(text):
    with pytest.raises(WindowError, match="allowed: a positive duration"):
        parse_step(text)


def test_split_covers_the_window_and_cuts_the_last_step():
    w = Window(t(2026, 11, 1), t(2026, 11, 1, 5, 30))
    steps = split(w, timedelta(hours=2))
    assert [(s.start.hour, s.end.hour, s.end.minute) for s in steps] == [(0, 2, 0), (2, 4, 0), (4, 5, 30)]
    assert steps[0].start == w.start and steps[-1].end == w.end
    assert all(a.end == b.start for a, b in zip(steps, steps[1:]))
    assert split(w, None) == [w]


@pytest.mark.parametrize("text,start,end", [
    # OpenCost's own forms (core/pkg/opencost/window.go) and the day pair third-party clients send
    ("2026-11-01,2026-11-08", "2026-11-01T00:00:00+00:00", "2026-11-08T00:00:00+00:00"),
    ("1586822400-1586908800", "2020-04-14T00:00:00+00:00", "2020-04-15T00:00:00+00:00"),
    ("24h offset 1h", "2026-11-23T02:30:00+00:00", "2026-11-24T02:30:00+00:00"),
    ("45m offset 15m", "2026-11-24T02:30:00+00:00", "2026-11-24T03:15:00+00:00"),
])
def test_opencost_window_forms(text, start, end):
    w = parse_window(text, datetime(2026, 11, 24, 3, 30, tzinfo=timezone.utc))
    assert (w.start.isoformat(), w.end.isoformat()) == (start, end)
