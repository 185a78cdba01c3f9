"""Parsers for cgroup v2 stat files: text in, plain numbers out, no I/O.

Kept apart from the reader so every file format is tested on fixture text, malformed and
truncated input included. Two rules from the kernel's side:

- Kernels add keys (cpu.stat grew nr_bursts, memory.stat grows every release), so unknown
  keys are ignored; keys we bill on are required.
- Every cgroup file ends with a newline. A read cut short ends mid-line, and a number cut
  short still parses, so a missing final newline is reported as truncation rather than
  trusted.

Errors raise ParseError naming the file, the line and what was wrong. Values keep the
kernel's units (usec, bytes); the reader converts to the metric table's units. Results are
NamedTuples: immutable like the shared dataclasses, and three times cheaper to build.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from otel_agent.errors import ParseError

# Fast paths: one regex proves the whole text well-formed, then plain splitting does the rest.
# Anything the regex refuses goes through the line-by-line parser, which names the problem.
# (The reader parses ~1,600 files a cycle at 100 pods; this halves its parsing time.)
# Numbers of up to 19 digits are always below 2**64; longer ones take the slow path, which
# checks the u64 range.
# Keys are printable ASCII: str.split() also splits at \x1c-\x1f, \x85 and \xa0, which a
# regex \s does not match, and would shift every key against its value.
_FLAT_OK = re.compile(r"(?:[!-<>-~]+ \d{1,19}\n)*", re.ASCII)
_PSI_LINE = r"avg10=\d+\.\d+ avg60=\d+\.\d+ avg300=\d+\.\d+ total=(\d{1,19})\n"
_U64_MAX = 2**64 - 1
_SHOW = 80  # characters of a bad line quoted in an error: a 10 MB line must not become the message
_PSI_OK = re.compile(rf"some {_PSI_LINE}(?:full {_PSI_LINE})?", re.ASCII)


class CpuStat(NamedTuple):
    usage_usec: int
    user_usec: int
    system_usec: int
    # Only with the cpu controller enabled for the cgroup (absent on this machine's v2).
    nr_periods: int | None = None
    nr_throttled: int | None = None
    throttled_usec: int | None = None


class IoStat(NamedTuple):
    """One block device's line of io.stat."""

    rbytes: int
    wbytes: int
    rios: int
    wios: int
    dbytes: int | None = None  # discard stats: 5.x and later
    dios: int | None = None


class Pressure(NamedTuple):
    """Cumulative stall time of a PSI file (cpu/memory/io.pressure)."""

    some_total_usec: int
    full_total_usec: int | None = None  # cpu.pressure has no 'full' line before 5.13


def _show(s: str) -> str:
    """repr of a bad token or line, clipped: a garbage file must not make a huge message."""
    return repr(s) if len(s) <= _SHOW else f"{s[:_SHOW]!r}... ({len(s)} characters)"


def _clip(s: str) -> str:
    return s if len(s) <= _SHOW else f"{s[:_SHOW]}..."


def _lines(text: str, source: str) -> list[str]:
    if text and not text.endswith("\n"):
        raise ParseError(f"{source}: truncated: last line {_show(text[-_SHOW - 1:].rsplit(chr(10), 1)[-1])} "
                         "has no newline")
    return text.splitlines()


def _int(token: str, source: str, lineno: int, what: str) -> int:
    what = _clip(what)
    # The kernel writes plain ASCII digits. int() would also take '+5', '1_000' and non-ASCII
    # digits, and raise ValueError (not ParseError) past 4300 digits: check the text first.
    if token.startswith("-") and token[1:].isascii() and token[1:].isdigit():
        raise ParseError(f"{source}:{lineno}: {what}: negative: {_show(token)}")
    if not (token.isascii() and token.isdigit()):
        raise ParseError(f"{source}:{lineno}: {what}: not an integer: {_show(token)}")
    if len(token) > 20 or int(token) > _U64_MAX:
        raise ParseError(f"{source}:{lineno}: {what}: beyond 64 bits: {_show(token)}")
    return int(token)


def parse_flat_keyed(text: str, source: str) -> dict[str, int]:
    """'key value' per line (cpu.stat, memory.stat, memory.events, pids.events)."""
    if _FLAT_OK.fullmatch(text):
        tokens = text.split()
        return dict(zip(tokens[::2], map(int, tokens[1::2])))
    out: dict[str, int] = {}
    for lineno, line in enumerate(_lines(text, source), 1):
        fields = line.split()
        if len(fields) != 2:
            raise ParseError(f"{source}:{lineno}: expected 'key value', got {_show(line)}")
        out[fields[0]] = _int(fields[1], source, lineno, fields[0])
    return out


def _require(values: dict[str, int], keys: tuple[str, ...], source: str) -> None:
    missing = [k for k in keys if k not in values]
    if missing:
        raise ParseError(f"{source}: missing key(s) {', '.join(missing)}")


def parse_cpu_stat(text: str, source: str = "cpu.stat") -> CpuStat:
    values = parse_flat_keyed(text, source)
    _require(values, ("usage_usec", "user_usec", "system_usec"), source)
    return CpuStat(
        values["usage_usec"], values["user_usec"], values["system_usec"],
        values.get("nr_periods"), values.get("nr_throttled"), values.get("throttled_usec"),
    )


MEMORY_STAT_KEYS = ("anon", "file", "inactive_file")


def parse_memory_stat(text: str, source: str = "memory.stat") -> dict[str, int]:
    """memory.stat in bytes; anon, file and inactive_file are required, the rest kept as is."""
    values = parse_flat_keyed(text, source)
    _require(values, MEMORY_STAT_KEYS, source)
    return values


def parse_memory_events(text: str, source: str = "memory.events") -> dict[str, int]:
    values = parse_flat_keyed(text, source)
    _require(values, ("oom_kill",), source)
    return values


def parse_single_value(text: str, source: str, *, allow_max: bool = False) -> int | None:
    """A one-number file (memory.current, memory.peak, pids.current); 'max' → None if allowed."""
    lines = _lines(text, source)
    if len(lines) != 1:
        raise ParseError(f"{source}: expected one line with one value, got {len(lines)} lines")
    token = lines[0].strip()
    if token == "max" and allow_max:
        return None
    return _int(token, source, 1, "value")


_IO_REQUIRED = ("rbytes", "wbytes", "rios", "wios")


def parse_io_stat(text: str, source: str = "io.stat") -> dict[str, IoStat]:
    """io.stat per 'MAJ:MIN' device. An empty file is valid: no I/O yet."""
    out: dict[str, IoStat] = {}
    for lineno, line in enumerate(_lines(text, source), 1):
        fields = line.split()
        if not fields:
            raise ParseError(f"{source}:{lineno}: empty line")
        device = fields[0]
        major, sep, minor = device.partition(":")
        if not (sep and major.isdigit() and minor.isdigit()):
            raise ParseError(f"{source}:{lineno}: expected a MAJ:MIN device first, got {_show(device)}")
        values: dict[str, int] = {}
        for token in fields[1:]:
            key, eq, raw = token.partition("=")
            if not eq:
                raise ParseError(f"{source}:{lineno}: expected key=value, got {_show(token)}")
            if key in _IO_REQUIRED or key in ("dbytes", "dios"):
                values[key] = _int(raw, source, lineno, key)
            # other keys (iocost's cost.*, ...) are not ours to validate
        missing = [k for k in _IO_REQUIRED if k not in values]
        if missing:
            raise ParseError(f"{source}:{lineno}: device {_clip(device)}: missing {', '.join(missing)}")
        if device in out:
            raise ParseError(f"{source}:{lineno}: device {_clip(device)} listed twice")
        out[device] = IoStat(values["rbytes"], values["wbytes"], values["rios"], values["wios"],
                             values.get("dbytes"), values.get("dios"))
    return out


def parse_pressure(text: str, source: str) -> Pressure:
    """A PSI file: 'some avg10=.. avg60=.. avg300=.. total=<usec>' and optionally 'full ...'."""
    m = _PSI_OK.fullmatch(text)
    if m is not None:
        full = m.group(2)
        return Pressure(int(m.group(1)), None if full is None else int(full))
    totals: dict[str, int] = {}
    for lineno, line in enumerate(_lines(text, source), 1):
        fields = line.split()
        if not fields or fields[0] not in ("some", "full"):
            raise ParseError(f"{source}:{lineno}: expected a 'some' or 'full' line, got {_show(line)}")
        total = None
        for token in fields[1:]:
            if token.startswith("total="):
                total = _int(token[6:], source, lineno, f"{fields[0]} total")
        if total is None:
            raise ParseError(f"{source}:{lineno}: '{fields[0]}' line has no total=: {_show(line)}")
        totals[fields[0]] = total
    if "some" not in totals:
        raise ParseError(f"{source}: no 'some' line")
    return Pressure(totals["some"], totals.get("full"))
