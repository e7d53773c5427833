"""The audit store: exact entry bytes and hashes, queries, proofs, concurrency and failing closed."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import threading
from pathlib import Path
from typing import Any

import pytest
import rfc8785
import sqlalchemy as sa
from dbservers import postgres_url  # noqa: F401 (fixture)
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.checkpoint import Checkpointer, NoteSigner
from audit.entries import GENESIS_HASH, check_event, contains_identifier, entry_bytes, scrub
from audit.errors import AuditUnavailable, UnsafeEntry
from audit.export import export_log
from audit.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion
from audit.store import AuditLog, audit_entries, audit_head, create_tables
from audit.verify import verify_export

WRITERS = 8
PER_WRITER = 500


def _sqlite(tmp_path: Path) -> AuditLog:
    return AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}")


def _event(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "action": "http.request",
        "actor": f"analyst:{i % 3}",
        "outcome": "ok",
        "status": 200,
        "i": i,
        **extra,
    }


def _check_chain(log: AuditLog) -> int:
    """Re-hash every stored entry from seq 1 and compare with the head; returns the size."""
    prev = GENESIS_HASH
    tree = MerkleTree()
    expected_seq = 1
    for e in log.entries():
        assert e.seq == expected_seq, f"gap before {e.seq}"
        assert e.prev_hash == prev.hex()
        digest = hashlib.sha256(prev + e.canonical).digest()
        assert digest.hex() == e.hash
        assert e.record["seq"] == e.seq
        tree.append(leaf_hash(digest))
        prev = digest
        expected_seq += 1
    size, root = log.head()
    assert size == tree.size and root == tree.root()
    return size


def test_entries_are_canonical_chained_and_numbered_from_one(tmp_path: Path) -> None:
    log = _sqlite(tmp_path)
    first = log.append({"action": "a", "b": [1, 2.5, "ü"], "actor": "x"})
    second = log.append({"action": "b"})
    assert (first.seq, second.seq) == (1, 2)
    record = {"event": {"action": "a", "b": [1, 2.5, "ü"], "actor": "x"}, "seq": 1, "time": first.time}
    assert first.canonical == rfc8785.dumps(record)
    assert first.prev_hash == GENESIS_HASH.hex()
    assert first.hash == hashlib.sha256(GENESIS_HASH + first.canonical).hexdigest()
    assert second.prev_hash == first.hash
    assert second.hash == hashlib.sha256(bytes.fromhex(first.hash) + second.canonical).hexdigest()
    assert log.head() == (
        2,
        MerkleTree([leaf_hash(bytes.fromhex(h)) for h in (first.hash, second.hash)]).root(),
    )
    stored = log.entry(1)
    assert stored is not None and stored.canonical == first.canonical and stored.event == record["event"]
    assert dt.datetime.fromisoformat(first.time.replace("Z", "+00:00")) == stored.time


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6), st.integers(1, 2**40))
def test_spliced_entry_bytes_are_exactly_rfc8785(event: dict[str, Any], seq: int) -> None:
    time = "2025-03-04T05:06:07.000008Z"
    assert entry_bytes(rfc8785.dumps(event), seq, time) == rfc8785.dumps(
        {"event": event, "seq": seq, "time": time}
    )


def test_queries_filter_and_paginate(tmp_path: Path) -> None:
    log = _sqlite(tmp_path)
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    log.append_many(
        _event(i, query_id=f"q{i % 2}", connector="tax" if i % 5 == 0 else "civil") for i in range(30)
    )
    log.append({"action": "query.released", "actor": "analyst:9", "outcome": "ok", "query_id": "q1"})
    log.append({"action": "http.request", "actor": "anonymous", "outcome": "refused", "status": 401})
    after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)

    assert [e.seq for e in log.entries(5, 8)] == [5, 6, 7, 8]
    assert len(list(log.entries())) == 32
    assert [e.seq for e in log.filter(action="query.released")] == [31]
    assert [e.seq for e in log.filter(outcome="refused")] == [32]
    assert {e.event["actor"] for e in log.filter(actor="analyst:1", limit=1000)} == {"analyst:1"}
    tax = log.filter(connector="tax", limit=1000)
    assert [e.seq for e in tax] == [1, 6, 11, 16, 21, 26]
    assert [e.seq for e in log.filter(query_id="q1", connector="tax")] == [6, 16, 26]
    assert len(log.filter(since=before, until=after, limit=1000)) == 32
    assert log.filter(until=before) == []
    # Pagination: pages of 7 by after_seq cover everything once, in order.
    seen: list[int] = []
    after_seq = 0
    while page := log.filter(limit=7, after_seq=after_seq):
        seen.extend(e.seq for e in page)
        after_seq = page[-1].seq
    assert seen == list(range(1, 33))
    with pytest.raises(ValueError):
        log.filter(since=dt.datetime(2025, 1, 1))  # naive datetimes are ambiguous


def test_proofs_from_the_store_verify(tmp_path: Path) -> None:
    log = _sqlite(tmp_path)
    log.append_many(_event(i) for i in range(37))
    size, root = log.head()
    for seq in (1, 2, 17, 32, 37):
        leaf = leaf_hash(bytes.fromhex(log.entry(seq).hash))  # type: ignore[union-attr]
        verify_inclusion(seq - 1, size, leaf, log.inclusion_proof(seq), root)
        verify_inclusion(seq - 1, 37, leaf, log.inclusion_proof(seq, 37), log.root(37))
    for size1 in (1, 8, 20, 36):
        verify_consistency(size1, size, log.consistency_proof(size1, size), log.root(size1), root)
    log.append(_event(99))  # the cached tree catches up with new entries
    verify_consistency(37, 38, log.consistency_proof(37), root, log.head().root)


@pytest.mark.parametrize(
    "event",
    [
        {"action": "x", "api_key": "abc"},
        {"action": "x", "X-Api-Key": "abc"},
        {"action": "x", "token": "abc"},
        {"action": "x", "tokens": ["a"]},
        {"action": "x", "authToken": "abc"},
        {"action": "x", "secret": "abc"},
        {"action": "x", "client_secret": "abc"},
        {"action": "x", "password": "abc"},
        {"action": "x", "Authorization": "Bearer abc"},
        {"action": "x", "headers": {"authorization": "abc"}},
        {"action": "x", "detail": [{"private_key": "abc"}]},
        {"action": "x", "headers": {"x-forwarded-auth": "Bearer eyJhbGciOi"}},
        {"action": "x", "request_headers": [{"via": "Basic dXNlcjpwYXNz"}]},
        {"action": "x", "key": "-----BEGIN PRIVATE KEY-----\nMC4CAQAw\n-----END PRIVATE KEY-----"},
        {"action": "x", "subject": "11010519491231002X"},  # the GB 11643 example ID
        {"action": "x", "org": "91350100M000100Y43"},  # a valid unified social credit code
        {"action": "x", "rows": 1234},
        {"action": "x", "invalid_ids": 3},
        {"action": "x", 1: "non-string key"},
    ],
)
def test_unsafe_events_fail_loudly_and_write_nothing(tmp_path: Path, event: dict[Any, Any]) -> None:
    log = _sqlite(tmp_path)
    with pytest.raises(UnsafeEntry):
        log.append(event)
    assert log.head().size == 0


def test_safe_events_pass_the_check() -> None:
    assert scrub({"action": "x", "outcome": "ok"}) == {"action": "x", "outcome": "ok"}
    with pytest.raises(UnsafeEntry, match="api_key"):
        scrub({"action": "x", "api_key": "k"})
    check_event(
        {
            "action": "connector.call",
            "request_digest": "ab" * 32,
            "connector_signature": "c2lnbmF0dXJl",
            "old_key": "name+0011aabb+AQID",
            "status": 401,
            "count_per_source": {"127.0.0.1": 12},
            "query_id": "q_4b1d4e6f8a7b6c5d",
            "epsilon": "0.5",
            "released": [{"village": "350102001001", "value": 1234.5}],
        }
    )


def test_free_text_that_reads_like_a_credential_is_prose_not_a_secret() -> None:
    for text in ("Basic needs of fishing households", "Bearer bonds held by villages", "basic  x"):
        check_event({"action": "query.submitted", "spec": {"purpose": text}, "reason": text})
    with pytest.raises(UnsafeEntry) as refused:
        check_event({"action": "x", "spec": {"purpose": "11010519491231002X"}})
    assert refused.value.field == "spec.purpose"


def test_identifiers_are_found_inside_free_text_as_whole_words_only() -> None:
    assert contains_identifier("check household of 11010519491231002X please")
    assert contains_identifier("org 91350100M000100Y43.")
    assert not contains_identifier("digest ab11010519491231002Xcd and 11010519491231002")
    assert not contains_identifier("110105194912310021")  # check digit wrong


def test_a_transaction_commits_its_change_and_its_entries_together(tmp_path: Path) -> None:
    log = _sqlite(tmp_path)
    with log.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE things (name TEXT PRIMARY KEY)"))
    log.append(_event(0))
    with log.transaction() as tx:
        tx.conn.execute(sa.text("INSERT INTO things VALUES ('a')"))
        tx.append({"action": "thing.added", "actor": "op", "outcome": "ok", "thing": "a"})
        tx.append({"action": "thing.checked", "actor": "op", "outcome": "ok"})
    assert [e.seq for e in tx.entries] == [2, 3]
    log.append(_event(1))  # the group-commit path continues the same chain
    entries = list(log.entries())
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert log.head().root == MerkleTree([leaf_hash(bytes.fromhex(e.hash)) for e in entries]).root()


def test_a_transaction_whose_entries_cannot_be_written_keeps_nothing(tmp_path: Path) -> None:
    log = _sqlite(tmp_path)
    with log.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE things (name TEXT PRIMARY KEY)"))
        conn.execute(
            sa.text(
                "CREATE TRIGGER refuse BEFORE INSERT ON audit_entries BEGIN SELECT RAISE(ABORT, 'no'); END"
            )
        )
    with pytest.raises(AuditUnavailable), log.transaction() as tx:
        tx.conn.execute(sa.text("INSERT INTO things VALUES ('a')"))
        tx.append({"action": "thing.added", "actor": "op", "outcome": "ok"})
    with pytest.raises(UnsafeEntry), log.transaction() as tx:
        tx.conn.execute(sa.text("INSERT INTO things VALUES ('b')"))
        tx.append({"action": "thing.added", "api_key": "k"})
    with log.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM things")).scalar() == 0
    assert log.head().size == 0


def test_dropped_table_fails_closed(tmp_path: Path) -> None:
    log = _sqlite(tmp_path)
    log.append(_event(0))
    with log.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE audit_entries"))
    with pytest.raises(AuditUnavailable):
        log.append(_event(1))
    with pytest.raises(AuditUnavailable):
        log.filter()


def test_missing_head_row_fails_closed(tmp_path: Path) -> None:
    log = _sqlite(tmp_path)
    with log.engine.begin() as conn:
        conn.execute(audit_head.delete())
    with pytest.raises(AuditUnavailable, match="head row"):
        log.append(_event(0))


def test_read_only_store_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _sqlite(tmp_path).append(_event(0))
    read_only = AuditLog(sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true"))
    assert read_only.head().size == 1
    with pytest.raises(AuditUnavailable):
        read_only.append(_event(1))


def test_locked_store_fails_closed_for_every_waiting_caller(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _sqlite(tmp_path)
    log = AuditLog(sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.2}))
    blocker = sa.create_engine(f"sqlite:///{path}")
    outcomes: list[BaseException | None] = []
    with blocker.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # another writer holds the lock too long

        def append() -> None:
            try:
                log.append(_event(0))
                outcomes.append(None)
            except AuditUnavailable as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=append) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        conn.rollback()
    assert len(outcomes) == 4 and all(isinstance(o, AuditUnavailable) for o in outcomes)
    assert log.head().size == 0
    assert log.append(_event(1)).seq == 1  # and it recovers once the store is writable


def _hammer(log: AuditLog) -> list[list[int]]:
    results: list[list[int]] = [[] for _ in range(WRITERS)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(WRITERS)

    def writer(w: int) -> None:
        barrier.wait()
        try:
            for i in range(PER_WRITER):
                results[w].append(log.append(_event(i, writer=w)).seq)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    return results


def test_concurrent_writers_leave_a_gapless_valid_chain_on_sqlite(tmp_path: Path) -> None:
    log = _sqlite(tmp_path)
    commits = [0]
    sa.event.listen(log.engine, "commit", lambda conn: commits.__setitem__(0, commits[0] + 1))
    results = _hammer(log)
    total = WRITERS * PER_WRITER
    assert sorted(s for r in results for s in r) == list(range(1, total + 1))
    assert all(r == sorted(r) for r in results)  # each writer's entries keep its order
    assert _check_chain(log) == total
    # Group commit: concurrent appends share transactions.
    assert commits[0] < total
    # Every writer's entries are the ones it appended, in the rows with the seqs it was given.
    for w, seqs in enumerate(results):
        events = [log.entry(s).event for s in seqs[:5]]  # type: ignore[union-attr]
        assert [e["writer"] for e in events] == [w] * 5 and [e["i"] for e in events] == list(range(5))
    signer = NoteSigner.generate("audit.test")
    Checkpointer(log, signer).checkpoint()
    export_log(log, tmp_path / "export.jsonl")
    assert verify_export(tmp_path / "export.jsonl", [signer.vkey]).ok


@pytest.mark.postgres
def test_concurrent_writers_leave_a_gapless_valid_chain_on_postgres(postgres_url: str) -> None:  # noqa: F811
    engine = sa.create_engine(postgres_url, pool_size=WRITERS, max_overflow=4)
    create_tables(engine)
    create_tables(engine)  # idempotent
    # Two logs on two engines behave like two gateway processes: only the row lock serialises them.
    logs = [AuditLog(engine), AuditLog(sa.create_engine(postgres_url, pool_size=WRITERS))]
    results: list[list[int]] = [[] for _ in range(WRITERS)]
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(PER_WRITER):
                results[w].append(logs[w % 2].append(_event(i, writer=w)).seq)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    total = WRITERS * PER_WRITER
    assert sorted(s for r in results for s in r) == list(range(1, total + 1))
    assert _check_chain(logs[0]) == total
    page = logs[1].filter(actor="analyst:1", limit=5)
    assert len(page) == 5 and all(e.event["actor"] == "analyst:1" for e in page)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE audit_entries"))
    with pytest.raises(AuditUnavailable):
        logs[0].append(_event(0))
    for log in logs:
        log.engine.dispose()


@pytest.mark.postgres
def test_transactions_and_group_commits_share_one_gapless_chain_on_postgres(postgres_url: str) -> None:  # noqa: F811
    engine = sa.create_engine(postgres_url, pool_size=WRITERS, max_overflow=4)
    create_tables(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE things (writer INTEGER, i INTEGER)"))
    log = AuditLog(engine)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(PER_WRITER // 4):
                if w % 2:
                    log.append(_event(i, writer=w))
                    continue
                with log.transaction() as tx:
                    tx.conn.execute(sa.text("INSERT INTO things VALUES (:w, :i)"), {"w": w, "i": i})
                    tx.append(_event(i, writer=w))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _check_chain(log) == WRITERS * (PER_WRITER // 4)
    with engine.connect() as conn:
        changes = conn.execute(sa.text("SELECT count(*) FROM things")).scalar()
    assert changes == sum(1 for e in log.entries() if e.event["writer"] % 2 == 0)
    engine.dispose()


def test_rows_hold_the_filter_columns(tmp_path: Path) -> None:
    log = _sqlite(tmp_path)
    log.append({"action": "a", "actor": "b", "query_id": "c", "connector": "d", "outcome": "e"})
    log.append({"action": "a", "actor": 5})  # not a string: not indexed, but kept in the entry
    with log.engine.connect() as conn:
        rows = conn.execute(
            sa.select(audit_entries.c.action, audit_entries.c.actor, audit_entries.c.query_id).order_by(
                audit_entries.c.seq
            )
        ).all()
    assert [tuple(r) for r in rows] == [("a", "b", "c"), ("a", None, None)]
