"""A connector's durable local state, in one SQLite file under its state directory.

It holds what must survive a restart: seen nonces (so a replay after a restart is still refused), the
extracts already served (each (query, dataset) once; an identical retry gets the same answer), the
epsilon the department has approved per budget window (defence in depth beside the gateway's ledger), the
queries and epsilon each standing rule opened per window (overall and per analyst key, the rule's own
limits), the department's own signed rule revocations, data-quality counters and the recent failures
(with the database's own, scrubbed error) for the
department's own admin, and the connector's local log: a hash chain of every request it saw and every
audit checkpoint the gateway showed it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from connectors.protocol import canonical_json

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces (expires_at);
CREATE TABLE IF NOT EXISTS served (
    query_id TEXT NOT NULL, dataset TEXT NOT NULL, fingerprint TEXT NOT NULL,
    status TEXT NOT NULL, body BLOB, created_at INTEGER NOT NULL,
    PRIMARY KEY (query_id, dataset));
CREATE TABLE IF NOT EXISTS spent (
    window TEXT NOT NULL, query_id TEXT NOT NULL, epsilon TEXT NOT NULL, PRIMARY KEY (window, query_id));
CREATE TABLE IF NOT EXISTS rule_spent (
    window TEXT NOT NULL, rule_id TEXT NOT NULL, query_id TEXT NOT NULL, analyst TEXT,
    epsilon TEXT NOT NULL, PRIMARY KEY (window, rule_id, query_id));
CREATE TABLE IF NOT EXISTS quality (
    dataset TEXT PRIMARY KEY, counters TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS failures (
    seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, dataset TEXT NOT NULL, query_id TEXT NOT NULL,
    code TEXT NOT NULL, details TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS witness (
    id INTEGER PRIMARY KEY CHECK (id = 1), size INTEGER NOT NULL, note TEXT NOT NULL,
    forked INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS revocations (
    digest TEXT PRIMARY KEY, rule_id TEXT NOT NULL, signed TEXT NOT NULL, added_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY, at REAL NOT NULL, entry TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
"""

GENESIS = "0" * 64
RECENT_FAILURES = 50
"""Failures kept for the department's quality report; older ones live on in the structured log."""


class AlreadyServed(Exception):
    """This (query, dataset) was served for a different request."""


class BudgetExhausted(Exception):
    """The department's epsilon cap for the window would be exceeded."""

    def __init__(self, requested: Decimal, remaining: Decimal) -> None:
        self.requested = requested
        self.remaining = remaining
        super().__init__(f"requested epsilon {requested}, remaining {remaining}")


class QuotaExhausted(Exception):
    """A standing rule's limit for the window would be exceeded; `limit` names which one."""

    def __init__(self, limit: str, message: str) -> None:
        self.limit = limit
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class RuleQuota:
    """A standing rule's window limits, as the connector counts them for one request.

    `max_queries`/`max_epsilon` bound every query the rule opens in a window; the analyst limits, when the
    rule has them, bound the queries of the request's analyst under that rule.
    """

    rule_id: str
    analyst: str | None
    max_queries: int
    max_epsilon: Decimal
    analyst_max_queries: int | None = None
    analyst_max_epsilon: Decimal | None = None


@dataclass(frozen=True)
class Reservation:
    """The outcome of reserving an extract: either a fresh reservation or a stored answer to replay."""

    replay: bytes | None


class ConnectorState:
    """Thread-safe access to the state file; every write is committed with synchronous=FULL."""

    def __init__(self, directory: Path, *, read_only: bool = False) -> None:
        self.path = directory / "connector-state.sqlite3"
        self._lock = threading.Lock()
        if read_only:
            # For reports beside a running connector: no schema change and no clean-up of its pending
            # reservations (which would release an extract still in flight).
            if not self.path.is_file():
                raise FileNotFoundError(self.path)
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            return
        directory.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        # A reservation left by a process that died mid-extract served nothing: release it.
        self._db.execute("DELETE FROM served WHERE status = 'pending'")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- nonces

    def use_nonce(self, nonce: str, *, keep_seconds: int, now: int | None = None) -> bool:
        """Record a nonce; False if it was seen within its retention (a replay)."""
        now = int(time.time()) if now is None else now
        with self._tx() as db:
            db.execute("DELETE FROM nonces WHERE expires_at < ?", (now,))
            try:
                db.execute("INSERT INTO nonces VALUES (?, ?)", (nonce, now + keep_seconds))
            except sqlite3.IntegrityError:
                return False
        return True

    # --- extracts and budget

    def reserve(
        self,
        *,
        query_id: str,
        dataset: str,
        fingerprint: str,
        window: str,
        epsilon: Decimal,
        cap: Decimal,
        quota: RuleQuota | None = None,
    ) -> Reservation:
        """Reserve one (query, dataset) and count the query's epsilon once, atomically; under a standing
        rule count the query once against the rule's window limits too (`QuotaExhausted` past them)."""
        with self._tx() as db:
            row = db.execute(
                "SELECT fingerprint, status, body FROM served WHERE query_id = ? AND dataset = ?",
                (query_id, dataset),
            ).fetchone()
            if row is not None:
                if row[0] != fingerprint:
                    raise AlreadyServed(dataset)
                if row[1] == "served":
                    return Reservation(replay=bytes(row[2]))
                raise AlreadyServed(dataset)  # the identical request is still running
            counted = db.execute(
                "SELECT 1 FROM spent WHERE window = ? AND query_id = ?", (window, query_id)
            ).fetchone()
            if counted is None:
                spent = sum(
                    (
                        Decimal(r[0])
                        for r in db.execute("SELECT epsilon FROM spent WHERE window = ?", (window,))
                    ),
                    Decimal(0),
                )
                if spent + epsilon > cap:
                    raise BudgetExhausted(epsilon, max(cap - spent, Decimal(0)))
            if quota is not None and not _counted_under(db, window, quota.rule_id, query_id):
                _check_quota(db, window, quota, epsilon)
                db.execute(
                    "INSERT INTO rule_spent VALUES (?, ?, ?, ?, ?)",
                    (window, quota.rule_id, query_id, quota.analyst, str(epsilon)),
                )
            if counted is None:
                db.execute("INSERT INTO spent VALUES (?, ?, ?)", (window, query_id, str(epsilon)))
            db.execute(
                "INSERT INTO served VALUES (?, ?, ?, 'pending', NULL, ?)",
                (query_id, dataset, fingerprint, int(time.time())),
            )
        return Reservation(replay=None)

    def check_reservation(
        self,
        *,
        query_id: str,
        dataset: str,
        fingerprint: str,
        window: str,
        epsilon: Decimal,
        cap: Decimal,
        quota: RuleQuota | None = None,
    ) -> None:
        """What `reserve` would refuse, raised the same way, without reserving or counting anything."""
        if quota is not None:
            with self._lock:
                if not _counted_under(self._db, window, quota.rule_id, query_id):
                    _check_quota(self._db, window, quota, epsilon)
        with self._lock:
            row = self._db.execute(
                "SELECT fingerprint FROM served WHERE query_id = ? AND dataset = ?", (query_id, dataset)
            ).fetchone()
            counted = self._db.execute(
                "SELECT 1 FROM spent WHERE window = ? AND query_id = ?", (window, query_id)
            ).fetchone()
            rows = self._db.execute("SELECT epsilon FROM spent WHERE window = ?", (window,)).fetchall()
        if row is not None and row[0] != fingerprint:
            raise AlreadyServed(dataset)
        spent = sum((Decimal(r[0]) for r in rows), Decimal(0))
        if counted is None and spent + epsilon > cap:
            raise BudgetExhausted(epsilon, max(cap - spent, Decimal(0)))

    def complete(self, *, query_id: str, dataset: str, body: bytes) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE served SET status = 'served', body = ? WHERE query_id = ? AND dataset = ?",
                (body, query_id, dataset),
            )

    def release(self, *, query_id: str, dataset: str, window: str) -> None:
        """Undo a reservation whose extract failed before anything left the connector."""
        with self._tx() as db:
            db.execute("DELETE FROM served WHERE query_id = ? AND dataset = ?", (query_id, dataset))
            others = db.execute("SELECT 1 FROM served WHERE query_id = ?", (query_id,)).fetchone()
            if others is None:
                db.execute("DELETE FROM spent WHERE window = ? AND query_id = ?", (window, query_id))
                db.execute("DELETE FROM rule_spent WHERE window = ? AND query_id = ?", (window, query_id))

    def rule_use(self, window: str, rule_id: str, analyst: str | None = None) -> tuple[int, Decimal]:
        """(queries, epsilon) a standing rule opened in a window, for one analyst when one is named."""
        with self._lock:
            return _rule_use(self._db, window, rule_id, analyst)

    def spent(self, window: str) -> Decimal:
        with self._lock:
            rows = self._db.execute("SELECT epsilon FROM spent WHERE window = ?", (window,)).fetchall()
        return sum((Decimal(r[0]) for r in rows), Decimal(0))

    # --- data quality (the department's own report; never forwarded)

    def record_quality(self, dataset: str, counters: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO quality VALUES (?, ?, ?)",
                (dataset, json.dumps(counters, sort_keys=True), int(time.time())),
            )

    def quality(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT dataset, counters, updated_at FROM quality").fetchall()
        return {r[0]: {**json.loads(r[1]), "updated_at": r[2]} for r in rows}

    def record_failure(self, *, dataset: str, query_id: str, code: str, details: dict[str, str]) -> None:
        """Keep one failed extract (its fixed code and scrubbed cause) for the department's report."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO failures (at, dataset, query_id, code, details) VALUES (?, ?, ?, ?, ?)",
                (int(time.time()), dataset, query_id, code, json.dumps(details, sort_keys=True)),
            )
            db.execute(
                "DELETE FROM failures WHERE seq <= (SELECT MAX(seq) FROM failures) - ?", (RECENT_FAILURES,)
            )

    def failures(self) -> list[dict[str, Any]]:
        """The recent failed extracts, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT at, dataset, query_id, code, details FROM failures ORDER BY seq DESC"
            ).fetchall()
        return [
            {"at": r[0], "dataset": r[1], "query_id": r[2], "code": r[3], **json.loads(r[4])} for r in rows
        ]

    # --- witnessing the gateway's audit log

    def witnessed(self) -> tuple[int, str | None, bool]:
        """(size, signed note, fork seen) of the last gateway checkpoint this connector accepted."""
        with self._lock:
            row = self._db.execute("SELECT size, note, forked FROM witness WHERE id = 1").fetchone()
        return (0, None, False) if row is None else (int(row[0]), str(row[1]), bool(row[2]))

    def remember_checkpoint(self, size: int, note: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO witness VALUES (1, ?, ?, 0) ON CONFLICT(id) DO UPDATE SET size = ?, note = ?",
                (size, note, size, note),
            )

    def mark_fork(self) -> None:
        """Remember for good that the gateway showed a forked history: serve nothing until it is resolved."""
        with self._tx() as db:
            db.execute("UPDATE witness SET forked = 1 WHERE id = 1")

    # --- the department's revocations

    def add_revocation(self, *, digest: str, rule_id: str, signed: str, entry: dict[str, Any]) -> bool:
        """Hold a verified, department-signed revocation and its local log entry, in one transaction;
        False (and nothing written) if this very revocation is already held."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM revocations WHERE digest = ?", (digest,)).fetchone():
                return False
            db.execute(
                "INSERT INTO revocations VALUES (?, ?, ?, ?)", (digest, rule_id, signed, int(time.time()))
            )
            self._append(db, entry)
        return True

    def revocations(self, rule_id: str | None = None) -> list[str]:
        """The held signed revocations (JSON), of one rule id or all, oldest first."""
        with self._lock:
            if rule_id is None:
                rows = self._db.execute("SELECT signed FROM revocations ORDER BY added_at").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT signed FROM revocations WHERE rule_id = ? ORDER BY added_at", (rule_id,)
                ).fetchall()
        return [str(r[0]) for r in rows]

    # --- local log

    def append_log(self, entry: dict[str, Any]) -> str:
        """Append one entry to the hash chain; returns its hash."""
        with self._tx() as db:
            return self._append(db, entry)

    @staticmethod
    def _append(db: sqlite3.Connection, entry: dict[str, Any]) -> str:
        last = db.execute("SELECT hash FROM log ORDER BY seq DESC LIMIT 1").fetchone()
        prev = last[0] if last else GENESIS
        text = canonical_json(entry).decode()
        digest = hashlib.sha256(bytes.fromhex(prev) + text.encode()).hexdigest()
        db.execute(
            "INSERT INTO log (at, entry, prev_hash, hash) VALUES (?, ?, ?, ?)",
            (time.time(), text, prev, digest),
        )
        return digest

    def log_entries(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT seq, entry, prev_hash, hash FROM log ORDER BY seq").fetchall()
        return [{"seq": r[0], "entry": json.loads(r[1]), "prev_hash": r[2], "hash": r[3]} for r in rows]

    def verify_log(self) -> int:
        """Re-hash the whole local chain; returns its length or raises ValueError at the first break."""
        prev = GENESIS
        entries = self.log_entries()
        for e in entries:
            text = canonical_json(e["entry"])
            if e["prev_hash"] != prev or hashlib.sha256(bytes.fromhex(prev) + text).hexdigest() != e["hash"]:
                raise ValueError(f"the local log breaks at entry {e['seq']}")
            prev = e["hash"]
        return len(entries)


def _counted_under(db: sqlite3.Connection, window: str, rule_id: str, query_id: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM rule_spent WHERE window = ? AND rule_id = ? AND query_id = ?",
        (window, rule_id, query_id),
    ).fetchone()
    return row is not None


def _rule_use(db: sqlite3.Connection, window: str, rule_id: str, analyst: str | None) -> tuple[int, Decimal]:
    sql = "SELECT epsilon FROM rule_spent WHERE window = ? AND rule_id = ?"
    args: tuple[str, ...] = (window, rule_id)
    if analyst is not None:
        sql, args = sql + " AND analyst = ?", (*args, analyst)
    rows = db.execute(sql, args).fetchall()
    return len(rows), sum((Decimal(r[0]) for r in rows), Decimal(0))


def _check_quota(db: sqlite3.Connection, window: str, quota: RuleQuota, epsilon: Decimal) -> None:
    """Raise `QuotaExhausted` naming the first limit one more query of `epsilon` would pass."""
    limits: list[tuple[str, str | None, int, Decimal]] = [
        ("rule", None, quota.max_queries, quota.max_epsilon)
    ]
    if quota.analyst is not None and quota.analyst_max_queries is not None:
        assert quota.analyst_max_epsilon is not None
        limits.append(("analyst", quota.analyst, quota.analyst_max_queries, quota.analyst_max_epsilon))
    for scope, analyst, max_queries, max_epsilon in limits:
        who = f"rule {quota.rule_id}" + (f" for analyst {analyst}" if analyst else "")
        queries, spent = _rule_use(db, window, quota.rule_id, analyst)
        if queries + 1 > max_queries:
            raise QuotaExhausted(
                f"{scope}_queries",
                f"{who} allows {max_queries} queries in window {window}, and all are used: "
                "the department signs a new rule or approves the query itself",
            )
        if spent + epsilon > max_epsilon:
            raise QuotaExhausted(
                f"{scope}_epsilon",
                f"{who} allows epsilon {max_epsilon} in window {window}: requested {epsilon}, remaining "
                f"{max(max_epsilon - spent, Decimal(0))}",
            )
