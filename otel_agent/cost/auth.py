"""Bearer tokens, one rule for every port (OTLP/gRPC, OTLP/HTTP, the report API).

The scheme name is case-insensitive (RFC 7235 section 2.1: `bearer`, `Bearer` and `BEARER`
are the same), the token is compared in constant time, and a missing token never matches.
Two tokens, two powers: the ingest (write) token opens the OTLP ports only, the read token the
report API only; `cost serve` refuses to run with one of them and not the other.
"""

from __future__ import annotations

import hmac


def bearer_ok(expected: str | bytes | None, header: str | None) -> bool:
    """True if no token is expected, or `header` is `Bearer <expected>` (any case of Bearer)."""
    if expected is None:
        return True
    if not header:
        return False
    scheme, _, cred = header.strip().partition(" ")
    want = expected.encode() if isinstance(expected, str) else expected
    try:
        got = cred.strip().encode()
    except UnicodeEncodeError:
        return False
    return scheme.lower() == "bearer" and hmac.compare_digest(got, want)
