"""Tokens per second on one core, per suite, against OpenSSL's own HMAC-SHA256 speed.

Inputs are synthetic 18-character resident ID numbers; check digits are not computed, since the cost of a
MAC depends only on the input length. Python and `openssl speed` both run on one thread, timed by the wall
clock, with the key schedule done once (OpenSSL's loop reuses the keyed context, as our fast path does).
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import shlex
import shutil
import subprocess
from functools import partial

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from bench.common import BenchResult, summarize, timings
from connectors.tokens import TOKEN_BYTES, Suite, Tokenizer, derive_query_key

ID_LENGTH = 18
FULL = 1_000_000
QUICK = 100_000
_MR_RESULT = re.compile(r"^\+R:(\d+):hmac\(sha256\):([0-9.]+)\s*$", re.MULTILINE)


def synthetic_ids(n: int, seed: int = 20261128) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.randrange(10**17):017d}{rng.choice('0123456789X')}" for _ in range(n)]


def openssl_command(seconds: int) -> list[str]:
    # -mr gives a line "+R:<count>:hmac(sha256):<seconds>" that does not depend on the locale or layout;
    # -elapsed divides by wall-clock time, as our own timings do.
    return [
        "openssl",
        "speed",
        "-mr",
        "-elapsed",
        "-hmac",
        "sha256",
        "-bytes",
        str(ID_LENGTH),
        "-seconds",
        str(seconds),
    ]


def openssl_rate(seconds: int) -> tuple[float | None, str]:
    """Return OpenSSL's HMAC-SHA256 operations per second on `ID_LENGTH`-byte inputs, or None and why."""
    cmd = openssl_command(seconds)
    if shutil.which("openssl") is None:
        return None, "unavailable: no openssl on PATH"
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60 + 3 * seconds, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"unavailable: {shlex.join(cmd)} failed ({type(exc).__name__})"
    # OpenSSL 3 prints the -mr lines on stderr, 1.1 on stdout.
    match = _MR_RESULT.search(done.stdout + "\n" + done.stderr)
    if done.returncode != 0 or match is None:
        last = (done.stderr.strip().splitlines() or ["no result line"])[-1]
        return None, f"unavailable: {shlex.join(cmd)} exited {done.returncode}: {last}"
    count, elapsed = int(match.group(1)), float(match.group(2))
    return count / elapsed, shlex.join(cmd)


def _reference(suite: Suite, key: bytes, value: bytes) -> bytes:
    if suite is Suite.HMAC_SHA256:
        return hmac.digest(key, value, "sha256")
    if suite is Suite.BLAKE2B:
        return hashlib.blake2b(value, key=key, digest_size=32).digest()
    h = crypto_hmac.HMAC(key, hashes.SM3())
    h.update(value)
    return h.finalize()


def _check(tokenizer: Tokenizer, key: bytes, ids: list[str]) -> None:
    # A fast path that computes the wrong function would make every number below meaningless.
    sample = ids[:1000]
    expected = [_reference(tokenizer.suite, key, v.encode())[:TOKEN_BYTES] for v in sample]
    if tokenizer.tokens(sample) != expected:
        raise AssertionError(f"{tokenizer.suite} tokens differ from the reference MAC")


def run(quick: bool) -> list[BenchResult]:
    n = QUICK if quick else FULL
    times = 3 if quick else 5
    ids = synthetic_ids(n)
    note = f"{n:,} IDs, median of {times}"
    results: list[BenchResult] = []
    rates: dict[Suite, float] = {}
    for suite in Suite:
        key = derive_query_key(
            bytes(32),
            salt=bytes(32),
            federation_id="bench",
            epoch=1,
            suite=suite,
            entity_kind="person",
            query_id="bench-tokens",
        )
        tokenizer = Tokenizer(key, suite)
        _check(tokenizer, key, ids)
        rate, spread = summarize([n / s for s in timings(partial(tokenizer.tokens, ids), times)])
        rates[suite] = rate
        results.append(BenchResult("tokens", f"{suite.value}, 1 core", rate, "tokens/s", spread, note))

    # The per-value `hmac.new` that the fast path replaces, for scale.
    key = bytes(range(32))
    rate, spread = summarize(
        [n / s for s in timings(lambda: [hmac.new(key, v.encode(), "sha256").digest()[:16] for v in ids], 3)]
    )
    results.append(
        BenchResult("tokens", "hmac.new per ID, 1 core", rate, "tokens/s", spread, f"{n:,} IDs, median of 3")
    )

    ssl_rate, how = openssl_rate(1 if quick else 2)
    nan = float("nan")
    results.append(BenchResult("tokens", "openssl hmac(sha256), 1 core", ssl_rate or nan, "ops/s", None, how))
    ratio = rates[Suite.HMAC_SHA256] / ssl_rate if ssl_rate else nan
    results.append(BenchResult("tokens", "hmac-sha256 / openssl", ratio, "x", None, "" if ssl_rate else how))
    return results
