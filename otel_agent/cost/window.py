"""Report windows in OpenCost's syntax, so a query that works against OpenCost's `/allocation`
works against ours unchanged (same CLI scripts, same dashboards).

Everything is UTC and half-open `[start, end)`. `now` is a parameter, never read from the
clock here: the same text gives the same window in a test and in a report rendered later.

Accepted (the same list is in every error message):

- `today`, `yesterday`: a calendar day.
- `week`, `lastweek`: a calendar week starting Sunday 00:00, as OpenCost's weeks do.
- `month`, `lastmonth`: a calendar month.
- `30m`, `24h`, `7d`, `2w`: the last N units, ending at `now` rounded *up* to the unit (the next
  minute, hour or midnight). Rounding keeps hourly and daily steps on ledger row boundaries, so
  `7d` is today so far plus the six whole days before it.
- `2026-11`: a calendar month; `2026-11-24`: a calendar day.
- `START,END`: two RFC 3339 times (`2026-11-01T00:00:00Z,2026-11-02T00:00:00Z`; offsets are
  converted to UTC), two Unix timestamps in seconds (`1764547200,1764633600`, or with `-`
  between them as OpenCost also accepts), or two days (`2026-11-01,2026-11-08`: midnight to
  midnight, the end day excluded; third-party OpenCost clients send this form).
- `24h offset 1h`: OpenCost's duration with an offset: the span ending that long before `now`
  (not rounded, as OpenCost does it).

Where OpenCost differs: its `week` and `month` end at `now`; ours end at the end of the
calendar week or month (the ledger has nothing past `now`, so the figures are the same, and a
month on month boundaries reads the monthly roll-up).

Steps (`split`) are consecutive from the window's start, the last one cut at its end, as
OpenCost's QueryAllocation walks them; `MONTH` steps are calendar months.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from otel_agent.cost.types import Window
from otel_agent.errors import ConfigError

ALLOWED = ("today, yesterday, week, lastweek, month, lastmonth, a duration like 30m, 24h, 7d "
           "or 2w (optionally with an offset: 24h offset 1h), a month like 2026-11, a day like "
           "2026-11-24, or two RFC 3339 times, two days or two Unix timestamps separated by a "
           "comma")

_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1),
          "w": timedelta(weeks=1)}
# Digits are bounded before int() sees them (int() refuses over 4,300 digits: a ValueError).
_DURATION = re.compile(r"^(\d{1,18})([mhdw])$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_UNIX_PAIR = re.compile(r"^(\d{1,18})[,-](\d{1,18})$")
_DAY_PAIR = re.compile(r"^(\d{4}-\d{2}-\d{2}),(\d{4}-\d{2}-\d{2})$")
_OFFSET = re.compile(r"^(\d{1,18})([mhdw]) offset (\d{1,18})([mhdw])$")
MONTH = "month"  # a calendar-month step, beside any timedelta
_STEP = re.compile(r"^(\d{1,18})([mhdw])$")
# Long enough for any report; short enough that a typo like 9999999d is caught.
_MAX_SPAN = timedelta(days=366 * 10)


class WindowError(ConfigError):
    """A window or step that cannot be parsed; the message says what is allowed."""


def parse_window(text: str, now: datetime) -> Window:
    """Turn OpenCost window syntax into a UTC `Window`; `now` must be timezone-aware."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(timezone.utc)
    raw = text
    text = (text or "").strip()
    if not text:
        raise WindowError(f"empty window; allowed: {ALLOWED}")
    try:
        window = _parse(text.lower() if "," not in text else text, now)
    except (WindowError, ValueError, OverflowError) as e:
        raise WindowError(f"bad window {raw!r}: {e}; allowed: {ALLOWED}") from e
    if window is None:
        raise WindowError(f"bad window {raw!r}; allowed: {ALLOWED}")
    if window.end - window.start > _MAX_SPAN:
        raise WindowError(f"window {raw!r} spans more than 10 years; allowed: at most 10 years")
    return window


def parse_step(text: str) -> timedelta:
    """An OpenCost step (`1h`, `1d`, `30m`, `1w`); the ledger's finest grain is the hour row,
    but shorter steps are allowed for windows built from raw intervals."""
    m = _STEP.match((text or "").strip().lower())
    if not m or int(m.group(1)) == 0:
        raise WindowError(f"bad step {text!r}; allowed: a positive duration like 30m, 1h, 1d or 1w")
    # Bound the number before multiplying: 10**30 weeks overflows timedelta (a 500, once).
    n, unit = int(m.group(1)), _UNITS[m.group(2)]
    if n > _MAX_SPAN // unit:
        raise WindowError(f"step {text!r} is longer than 10 years; allowed: at most 10 years")
    return n * unit


def _parse(text: str, now: datetime) -> Window | None:
    today = datetime(now.year, now.month, now.day, tzinfo=timezone.utc)
    if text == "today":
        return Window(today, today + timedelta(days=1))
    if text == "yesterday":
        return Window(today - timedelta(days=1), today)
    if text in ("week", "lastweek"):
        # Python: Monday=0 .. Sunday=6; OpenCost (Go) weeks begin on Sunday.
        start = today - timedelta(days=(today.weekday() + 1) % 7)
        if text == "lastweek":
            start -= timedelta(weeks=1)
        return Window(start, start + timedelta(weeks=1))
    if text in ("month", "lastmonth"):
        first = date(now.year, now.month, 1)
        if text == "lastmonth":
            first = _add_months(first, -1)
        return _month(first)
    m = _OFFSET.match(re.sub(r"\s+", " ", text))
    if m:
        n, off = int(m.group(1)), int(m.group(3))
        if n == 0 or n > 10**6 or off > 10**6:
            raise WindowError("a duration and its offset must be 1 to 1000000 units")
        end = now - off * _UNITS[m.group(4)]
        return Window(end - n * _UNITS[m.group(2)], end)
    m = _DURATION.match(text)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        if n == 0:
            raise WindowError("a duration must be positive")
        if n > 10**6:
            raise WindowError("duration too long")
        end = _ceil(now, unit)
        return Window(end - n * _UNITS[unit], end)
    m = _MONTH.match(text)
    if m:
        year, month = int(m.group(1)), int(m.group(2))
        if not 1 <= month <= 12:
            raise WindowError(f"month {month} is not 01..12")
        return _month(date(year, month, 1))
    m = _DAY.match(text)
    if m:
        try:
            d = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError as e:
            raise WindowError(str(e)) from e
        start = datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
        return Window(start, start + timedelta(days=1))
    if "," in text or _UNIX_PAIR.match(text):
        return _pair(text)
    return None


def _pair(text: str) -> Window:
    m = _UNIX_PAIR.match(text.strip())
    d = _DAY_PAIR.match(text.strip())
    if d:
        start, end = (_day(x) for x in d.groups())
    elif m:
        try:
            start = datetime.fromtimestamp(int(m.group(1)), tz=timezone.utc)
            end = datetime.fromtimestamp(int(m.group(2)), tz=timezone.utc)
        except (OverflowError, OSError, ValueError) as e:
            raise WindowError("timestamp out of range") from e
    else:
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 2:
            raise WindowError("expected exactly two times separated by one comma")
        start, end = (_rfc3339(p) for p in parts)
    if end <= start:
        raise WindowError(f"end {end.isoformat()} is not after start {start.isoformat()}")
    return Window(start, end)


def _day(text: str) -> datetime:
    try:
        d = date.fromisoformat(text)
    except ValueError as e:
        raise WindowError(f"{text!r}: {e}") from e
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)


def _rfc3339(text: str) -> datetime:
    # RFC 3339 demands an offset; a bare local time would silently depend on the server's zone.
    if not re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})$",
                    text):
        raise WindowError(f"{text!r} is not an RFC 3339 time with an offset "
                          f"(like 2026-11-01T00:00:00Z)")
    try:
        t = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError as e:
        raise WindowError(f"{text!r}: {e}") from e
    return t.astimezone(timezone.utc)


def _ceil(now: datetime, unit: str) -> datetime:
    if unit == "m":
        floor = now.replace(second=0, microsecond=0)
        size = timedelta(minutes=1)
    elif unit == "h":
        floor = now.replace(minute=0, second=0, microsecond=0)
        size = timedelta(hours=1)
    else:  # d and w both end at the next midnight
        floor = now.replace(hour=0, minute=0, second=0, microsecond=0)
        size = timedelta(days=1)
    return floor if floor == now else floor + size


def _month(first: date) -> Window:
    nxt = _add_months(first, 1)
    return Window(datetime(first.year, first.month, 1, tzinfo=timezone.utc),
                  datetime(nxt.year, nxt.month, 1, tzinfo=timezone.utc))


def _add_months(d: date, n: int) -> date:
    idx = d.year * 12 + (d.month - 1) + n
    return date(idx // 12, idx % 12 + 1, 1)


def split(window: Window, step: timedelta | str | None) -> list[Window]:
    """The step windows of a query: consecutive from the window's start, the last one cut at
    the window's end (OpenCost's QueryAllocation walk). `MONTH` steps are calendar months.
    The one step splitter: the ledger query and every renderer that needs the grid use it."""
    if step is None:
        return [window]
    if step != MONTH and (not isinstance(step, timedelta) or step <= timedelta(0)):
        raise WindowError(f"step {step!r}: must be a positive duration or {MONTH!r}")
    out, t = [], window.start
    while t < window.end:
        if step == MONTH:
            nxt = datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=timezone.utc)
        else:
            nxt = t + step
        out.append(Window(t, min(nxt, window.end)))
        t = nxt
    return out
