"""Hostile windows and steps: every text either parses or is a WindowError naming what is
allowed (never OverflowError, ValueError or a 500), and the API's work caps (steps, window per
grain, response size) refuse before any ledger read."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_agent.cost.http_api import check_work, parse_params
from otel_agent.cost.store import Retention
from otel_agent.cost.window import WindowError, parse_step, parse_window
from otel_agent.errors import ConfigError

NOW = datetime(2026, 11, 25, 14, 37, 12, tzinfo=timezone.utc)

pieces = st.sampled_from(["9", "0", "99999999999999999999", "1" * 5000, "-", ",", "T", "Z",
                          "d", "w", "m", "h", "y", "2026", "-12", "-31", ":", "+23:59",
                          "9999", "0001", "1970-01-01T00:00:00Z", "month", " ", "e9", "."])


@settings(max_examples=400, deadline=None)
@given(st.lists(pieces, max_size=8).map("".join))
def test_any_window_text_parses_or_says_what_is_allowed(text):
    try:
        w = parse_window(text, NOW)
    except WindowError as e:
        assert "allowed" in str(e)
    else:
        assert w.end > w.start and w.end - w.start <= timedelta(days=3660)


@settings(max_examples=300, deadline=None)
@given(st.lists(pieces, max_size=4).map("".join))
def test_any_step_text_parses_or_says_what_is_allowed(text):
    try:
        s = parse_step(text)
    except WindowError as e:
        assert "allowed" in str(e)
    else:
        assert timedelta(0) < s <= timedelta(days=3660)


@pytest.mark.parametrize("query, needle", [
    ("window=365d&step=1m", "step: 525600 steps of 1m"),   # the 228 CPU-second query
    ("window=7d&step=99999999999999999w", "longer than 10 years"),
    ("window=7d&step=99999999999999999999w", "bad step"),
    ("window=7d&step=" + "9" * 4000, "bad step"),
    ("window=120d&step=2h", "window: 120 days is more than the ledger keeps at the hourly"),
    ("window=2000d&step=1d", "window: 2000 days is more than the ledger keeps at the daily"),
    ("window=1000000w", "window"),
    ("window=999999999999999999,1", "timestamp out of range"),
    ("window=99999999999999999999,1", "bad window"),
])
def test_work_caps_name_the_parameter(query, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        check_work(parse_params(query, NOW).query, retention=Retention())


def test_legal_queries_pass_the_caps():
    for q in ("window=90d&step=1h", "window=1d&step=1m", "window=800d&step=1d",
              "window=3650d", "window=month&step=1h", "window=7d&step=1w"):
        check_work(parse_params(q, NOW).query, retention=Retention())
    with pytest.raises(ConfigError, match="monthly"):
        check_work(parse_params("window=3650d", NOW).query,
                   retention=Retention(monthly_days=1000))
