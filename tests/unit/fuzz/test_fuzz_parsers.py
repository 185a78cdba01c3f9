"""Fuzz the cgroup stat-file parsers: the only acceptable outcomes are a ParseError naming the
file (with a message of bounded size) or exactly the numbers a strict reading of the text gives.

The strict reading (`_expect_*` below) is written from the kernel's formats, not from the
parsers: plain ASCII digits, u64 range, a final newline. The parsers have a fast regex path
and a slow line-by-line path; the fuzzing checks both against it.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_agent.cgroups import parsers
from otel_agent.errors import ParseError

FILES = Path(__file__).parents[2] / "fixtures" / "cgroups" / "files"
U64 = 2**64
MAX_MESSAGE = 400  # an error about a 10 MB file is still one readable line
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Bad(Exception):
    """The strict reading refuses the text."""


def _num(tok: str) -> int:
    if not (tok.isascii() and tok.isdigit()) or len(tok) > 20 or int(tok) >= U64:
        raise Bad(tok)
    return int(tok)


def _split_lines(text: str) -> list[str]:
    if text and not text.endswith("\n"):
        raise Bad("truncated")
    return text.splitlines()


def _expect_flat(text: str, required: tuple[str, ...] = ()) -> dict[str, int]:
    out = {}
    for line in _split_lines(text):
        f = line.split()
        if len(f) != 2:
            raise Bad(line)
        out[f[0]] = _num(f[1])
    if any(k not in out for k in required):
        raise Bad("missing")
    return out


def _expect_single(text: str) -> int | None:
    lines = _split_lines(text)
    if len(lines) != 1:
        raise Bad("lines")
    tok = lines[0].strip()
    return None if tok == "max" else _num(tok)


def _expect_io(text: str) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for line in _split_lines(text):
        f = line.split()
        if not f:
            raise Bad("empty")
        maj, sep, mnr = f[0].partition(":")
        if not (sep and maj.isdigit() and mnr.isdigit()) or f[0] in out:  # as the kernel: MAJ:MIN
            raise Bad(f[0])
        vals = {}
        for tok in f[1:]:
            k, eq, v = tok.partition("=")
            if not eq:
                raise Bad(tok)
            if k in ("rbytes", "wbytes", "rios", "wios", "dbytes", "dios"):
                vals[k] = _num(v)
        if any(k not in vals for k in ("rbytes", "wbytes", "rios", "wios")):
            raise Bad("missing")
        out[f[0]] = (vals["rbytes"], vals["wbytes"], vals["rios"], vals["wios"],
                     vals.get("dbytes"), vals.get("dios"))
    return out


def _expect_psi(text: str) -> tuple[int, int | None]:
    totals = {}
    for line in _split_lines(text):
        f = line.split()
        if not f or f[0] not in ("some", "full"):
            raise Bad(line)
        total = None
        for tok in f[1:]:
            if tok.startswith("total="):
                total = _num(tok[6:])
        if total is None:
            raise Bad(line)
        totals[f[0]] = total
    if "some" not in totals:
        raise Bad("no some")
    return totals["some"], totals.get("full")


# parser name → (call, strict reading, fixture directory)
PARSERS = {
    "cpu.stat": (lambda t: tuple(parsers.parse_cpu_stat(t, "cpu.stat"))[:3],
                 lambda t: tuple(_expect_flat(t, ("usage_usec", "user_usec", "system_usec"))[k]
                                 for k in ("usage_usec", "user_usec", "system_usec")), "cpu.stat"),
    "memory.stat": (lambda t: parsers.parse_memory_stat(t, "memory.stat"),
                    lambda t: _expect_flat(t, parsers.MEMORY_STAT_KEYS), "memory.stat"),
    "memory.events": (lambda t: parsers.parse_memory_events(t, "memory.events"),
                      lambda t: _expect_flat(t, ("oom_kill",)), "memory.events"),
    "memory.current": (lambda t: parsers.parse_single_value(t, "memory.current", allow_max=True),
                       _expect_single, "memory.current"),
    "io.stat": (lambda t: {d: tuple(v) for d, v in parsers.parse_io_stat(t, "io.stat").items()},
                _expect_io, "io.stat"),
    "cpu.pressure": (lambda t: tuple(parsers.parse_pressure(t, "cpu.pressure")), _expect_psi,
                     "pressure"),
}


def check(name: str, text: str) -> None:
    call, expect, _ = PARSERS[name]
    try:
        want = expect(text)
    except Bad:
        want = Bad
    t0 = time.perf_counter()
    try:
        got = call(text)
    except ParseError as e:
        msg = str(e)
        assert msg.startswith(name), msg[:200]
        assert len(msg) <= MAX_MESSAGE and "\n" not in msg, msg[:200]
        assert want is Bad, f"{name}: refused a well-formed file ({msg}): {text[:200]!r}"
        return
    finally:
        assert time.perf_counter() - t0 < 5, f"{name}: {len(text)} characters took too long"
    # Anything else (ValueError, IndexError, ...) propagates and fails the test.
    assert want is not Bad, f"{name}: accepted a malformed file as {got!r}: {text[:200]!r}"
    assert got == want, f"{name}: {got!r} != {want!r} for {text[:200]!r}"


def fixtures(name: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((FILES / PARSERS[name][2]).iterdir())]


# Text near the formats: their punctuation, digits, tricky whitespace and non-ASCII digits.
ALPHABET = list("abkmnorstuvwxyz_=:. \t\n0123456789-+") + ["\x00", "\x1c", "\x85", "\xa0", "\u0663",
                                                            "\u2028", "\r", "\x0b"]
near = st.text(alphabet=st.sampled_from(ALPHABET), max_size=300)
number = st.one_of(st.integers(0, U64 - 1), st.integers(U64, 10**30))
key = st.text(alphabet=st.sampled_from(list("abcdefghijklmnopqrstuvwxyz_.")), min_size=1, max_size=12)


@pytest.mark.parametrize("name", sorted(PARSERS))
@FUZZ
@given(text=near)
def test_text_near_the_format(name, text):
    check(name, text)


@pytest.mark.parametrize("name", ["cpu.stat", "memory.stat", "memory.events"])
@FUZZ
@given(pairs=st.lists(st.tuples(key, number), max_size=30),
       required=st.lists(number, min_size=4, max_size=4), sep=st.sampled_from([" ", "\t", "  "]))
def test_well_formed_flat_files_parse_exactly(name, pairs, required, sep):
    names = ("usage_usec", "user_usec", "system_usec", "anon", "file", "inactive_file", "oom_kill")
    req = [(n, required[i % 4]) for i, n in enumerate(names)]
    text = "".join(f"{k}{sep}{v}\n" for k, v in req + pairs)
    check(name, text)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_byte_mutations_of_real_files(name):
    rng = random.Random(20240601)
    seeds = fixtures(name)
    for _ in range(1500):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(5)
            pos = rng.randint(0, len(data))
            if op == 0:  # truncate
                del data[pos:]
            elif op == 1 and data:  # flip a byte
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op == 2:  # insert garbage
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            elif op == 3:  # a very long number
                data[pos:pos] = b"9" * rng.choice((19, 20, 21, 5000))
            else:  # duplicate a slice
                data[pos:pos] = data[rng.randint(0, len(data)):][:40]
        check(name, bytes(data).decode("utf-8", errors="replace"))


@pytest.mark.parametrize("name", sorted(PARSERS))
@pytest.mark.parametrize("huge", [
    "x" * 10_000_000,  # one 10 MB line without a newline
    "usage_usec 1\n" * 800_000,  # 10 MB of a repeated, well-formed line
    "9" * 10_000_000 + "\n",  # one 10 MB number
    "\x00\xff" * 5_000_000,  # binary
], ids=["line", "lines", "number", "binary"])
def test_huge_inputs(name, huge):
    check(name, huge)
