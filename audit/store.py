"""The append-only audit store: SQLAlchemy Core tables, a gapless sequence, group commit, queries and proofs.

Appends are serialised by the database, so several gateway processes can share one log: on SQLite each
batch runs in `BEGIN IMMEDIATE` (WAL journal, `synchronous=FULL`), on PostgreSQL it locks the single head
row with `SELECT ... FOR UPDATE`. The head row holds the size, the last entry hash and the Merkle frontier;
the appender reads it under that lock, numbers the new entries size + 1, size + 2, ... and writes them and
the new head in the same transaction. No sequence or auto-increment is involved, so a rolled-back batch
leaves no gap, and a batch is either wholly committed or not at all.

Within one process concurrent appenders are grouped: the first thread to find no batch in flight becomes
the leader, writes every queued entry in one transaction, commits, and wakes the others; each caller
returns only after the commit that holds its entry (so an entry is durable before the response it records
is sent). Any failure to write raises `AuditUnavailable` in every caller of the batch: the gateway turns it
into 503 and releases nothing.

A change to other tables of the same database can carry its entries in its own transaction
(`AuditLog.transaction()`): the entries are numbered under the same head-row lock, just before that
transaction commits, so the change and its entries are kept or lost together and the sequence stays
gapless alongside the group-commit path.

Entry bytes, hashes and leaves are defined in `audit.entries`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from audit.entries import (
    FILTER_FIELDS,
    GENESIS_HASH,
    canonical_event,
    check_event,
    entry_bytes,
    format_time,
)
from audit.errors import AuditUnavailable, ProofError
from audit.merkle import CompactRange, MerkleTree, leaf_hash

__all__ = [
    "AppendedEntry",
    "AuditLog",
    "AuditTransaction",
    "StoredCheckpoint",
    "StoredEntry",
    "TreeHead",
    "audit_checkpoints",
    "audit_entries",
    "audit_head",
    "audit_metadata",
    "create_tables",
]


def _logger() -> Any:
    # Fetched per use: logs here are rare, and a logger cached on first use would keep writing to the
    # stream of whichever command first used it.
    return structlog.get_logger(__name__)


audit_metadata = sa.MetaData()

# "INTEGER PRIMARY KEY" makes seq SQLite's rowid (no second index); values are always given explicitly.
_Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

audit_entries = sa.Table(
    "audit_entries",
    audit_metadata,
    sa.Column("seq", _Seq, primary_key=True, autoincrement=False),
    sa.Column("ts_us", sa.BigInteger, nullable=False),
    *(sa.Column(name, sa.Text, nullable=True) for name in FILTER_FIELDS),
    sa.Column("entry", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index("audit_entries_ts", "ts_us", "seq"),
    *(sa.Index(f"audit_entries_{name}", name, "seq") for name in FILTER_FIELDS),
)

audit_head = sa.Table(
    "audit_head",
    audit_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("last_hash", sa.String(64), nullable=False),
    sa.Column("frontier", sa.Text, nullable=False),
)

audit_checkpoints = sa.Table(
    "audit_checkpoints",
    audit_metadata,
    sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("key_id", sa.String(8), primary_key=True),
    sa.Column("root", sa.String(64), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
)

_HEAD_ID = 1
_READ_CHUNK = 20_000
MAX_BATCH = 10_000

# Built once: constructing a Core statement costs several times more than executing its cached compilation,
# and these run once per batch.
_SELECT_HEAD = sa.select(audit_head.c.size, audit_head.c.last_hash, audit_head.c.frontier).where(
    audit_head.c.id == _HEAD_ID
)
_LOCK_HEAD = _SELECT_HEAD.with_for_update()
_INSERT_ENTRIES = audit_entries.insert()
_UPDATE_HEAD = (
    audit_head.update()
    .where(audit_head.c.id == _HEAD_ID)
    .values(
        size=sa.bindparam("new_size"),
        last_hash=sa.bindparam("new_hash"),
        frontier=sa.bindparam("new_frontier"),
    )
)


def create_tables(engine: sa.Engine) -> None:
    """Create the audit tables and the head row if missing; on SQLite also switch the file to WAL."""
    try:
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                conn.commit()
        audit_metadata.create_all(engine)
        with engine.begin() as conn:
            exists = conn.execute(sa.select(audit_head.c.id).where(audit_head.c.id == _HEAD_ID)).first()
            if exists is None:
                conn.execute(
                    audit_head.insert().values(id=_HEAD_ID, size=0, last_hash=GENESIS_HASH.hex(), frontier="")
                )
    except IntegrityError:
        pass  # another process created the head row first
    except SQLAlchemyError as exc:
        raise AuditUnavailable(f"cannot create the audit tables ({type(exc).__name__})") from exc


class TreeHead(NamedTuple):
    """The log's size and Merkle root; unpacks as `(size, root)`."""

    size: int
    root: bytes


@dataclass(frozen=True)
class AppendedEntry:
    """A committed entry: its sequence number, hash (hex), previous hash (hex), time and canonical bytes."""

    seq: int
    hash: str
    prev_hash: str
    time: str
    canonical: bytes = field(repr=False)


@dataclass(frozen=True)
class StoredEntry:
    """An entry as stored: `canonical` is exactly the bytes that were hashed."""

    seq: int
    ts_us: int
    hash: str
    prev_hash: str
    canonical: bytes = field(repr=False)

    @cached_property
    def record(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.canonical)
        return value

    @property
    def event(self) -> dict[str, Any]:
        """The caller's event, as it was appended."""
        event: dict[str, Any] = self.record["event"]
        return event

    @property
    def time(self) -> dt.datetime:
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=self.ts_us)


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    key_id: str
    root: str
    note: str
    created_us: int


class AuditTransaction:
    """The caller's side of `AuditLog.transaction()`: its connection and the entries it will append."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.pending: list[tuple[bytes, dict[str, str | None]]] = []
        self.entries: list[AppendedEntry] = []
        """filled when the transaction has committed"""

    def append(self, event: Mapping[str, Any]) -> None:
        """Queue `event` for this transaction; raises `UnsafeEntry` at once if it may not be logged."""
        self.pending.append(AuditLog._prepare(event, allow_reserved=False))


@dataclass
class _Group:
    """One caller's entries waiting for a batch, and later its outcome."""

    events: list[tuple[bytes, dict[str, str | None]]]
    result: list[AppendedEntry] | None = None
    error: BaseException | None = None


def _filter_fields(event: Mapping[str, Any]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in FILTER_FIELDS:
        value = event.get(name)
        out[name] = value if isinstance(value, str) else None
    return out


def _micros(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("audit filters take timezone-aware datetimes")
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class AuditLog:
    """The audit log on one SQLAlchemy engine. Thread-safe; share one instance per process and engine."""

    def __init__(self, engine: sa.Engine, *, max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Group] = []
        self._writing = False
        self._listeners: list[Callable[[int], None]] = []
        self._tree = MerkleTree()
        self._tree_lock = threading.Lock()

    @classmethod
    def open(cls, url: str, *, create: bool = True, **engine_kwargs: Any) -> AuditLog:
        """An `AuditLog` on a new engine for `url`, creating the tables unless `create` is false."""
        if url.startswith("sqlite") and "connect_args" not in engine_kwargs:
            # Appenders in other processes wait for the write lock rather than fail at once.
            engine_kwargs["connect_args"] = {"timeout": 15}
        engine = sa.create_engine(url, **engine_kwargs)
        if create:
            create_tables(engine)
        return cls(engine)

    def subscribe(self, listener: Callable[[int], None]) -> None:
        """Call `listener(new_size)` after each committed batch (in the writing thread; keep it short)."""
        self._listeners.append(listener)

    # --- appending

    def append(self, event: Mapping[str, Any]) -> AppendedEntry:
        """Append one event; returns once it is committed. Raises `UnsafeEntry` or `AuditUnavailable`."""
        return self._submit([self._prepare(event, allow_reserved=False)])[0]

    def append_many(self, events: Iterable[Mapping[str, Any]]) -> list[AppendedEntry]:
        """Append several events, in order; each run of up to `max_batch` is contiguous and atomic."""
        prepared = [self._prepare(e, allow_reserved=False) for e in events]
        out: list[AppendedEntry] = []
        for i in range(0, len(prepared), self._max_batch):
            out.extend(self._submit(prepared[i : i + self._max_batch]))
        return out

    def _append_reserved(self, event: Mapping[str, Any]) -> AppendedEntry:
        """For `audit.checkpoint.rotate_key` only: entries whose action callers may not write."""
        return self._submit([self._prepare(event, allow_reserved=True)])[0]

    @staticmethod
    def _prepare(event: Mapping[str, Any], *, allow_reserved: bool) -> tuple[bytes, dict[str, str | None]]:
        # Validation and canonicalisation happen in the caller's thread, outside the append lock.
        check_event(event, allow_reserved=allow_reserved)
        return canonical_event(event), _filter_fields(event)

    def _submit(self, events: list[tuple[bytes, dict[str, str | None]]]) -> list[AppendedEntry]:
        group = _Group(events)
        with self._cond:
            self._queue.append(group)
        while True:
            with self._cond:
                while group.result is None and group.error is None and self._writing:
                    self._cond.wait()
                if group.result is not None or group.error is not None:
                    break
                # No batch in flight and ours is still queued: lead the next one (it may not reach ours
                # if the queue is longer than a batch, hence the loop).
                self._writing = True
                batch = self._take_batch()
            self._lead(batch)
        if group.error is not None:
            raise group.error
        assert group.result is not None
        return group.result

    def _take_batch(self) -> list[_Group]:
        """Queued groups up to `max_batch` entries (at least one), oldest first; caller holds the lock."""
        taken, total = 0, 0
        for g in self._queue:
            if taken and total + len(g.events) > self._max_batch:
                break
            taken += 1
            total += len(g.events)
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    def _lead(self, batch: list[_Group]) -> None:
        size = None
        try:
            results, size = self._write([e for g in batch for e in g.events])
            offset = 0
            for g in batch:
                g.result = results[offset : offset + len(g.events)]
                offset += len(g.events)
        except AuditUnavailable as exc:
            for g in batch:
                g.error = exc
        except BaseException as exc:  # fail closed whatever went wrong
            _logger().error("audit.append_failed", error=type(exc).__name__)
            unavailable = AuditUnavailable(f"the audit log cannot be written ({type(exc).__name__})")
            unavailable.__cause__ = exc
            for g in batch:
                g.error = unavailable
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()
        if size is not None:
            self._notify(size)

    def _write(self, events: list[tuple[bytes, dict[str, str | None]]]) -> tuple[list[AppendedEntry], int]:
        try:
            with self.engine.connect() as conn:
                self._begin(conn)
                out, size = self._append_rows(conn, events)
                conn.commit()
        except SQLAlchemyError as exc:
            _logger().error("audit.unavailable", error=type(exc).__name__)
            raise AuditUnavailable(f"the audit log cannot be written ({type(exc).__name__})") from exc
        return out, size

    def _begin(self, conn: sa.Connection) -> None:
        """Start the write transaction; on SQLite take the database's write lock at once."""
        if self._sqlite:
            conn.exec_driver_sql("PRAGMA synchronous=FULL")
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def _append_rows(
        self, conn: sa.Connection, events: list[tuple[bytes, dict[str, str | None]]]
    ) -> tuple[list[AppendedEntry], int]:
        """Number, chain and insert `events` inside `conn`'s open transaction (the caller commits).

        The head row is locked first, so the sequence stays gapless and the chain linear whoever else
        appends: a rolled-back transaction takes its entries and its head update with it.
        """
        head = conn.execute(_LOCK_HEAD).one_or_none()
        if head is None:
            raise AuditUnavailable("the audit store has no head row: run audit.store.create_tables")
        size, last_hash, frontier_hex = head
        try:
            frontier = CompactRange.from_hex(size, frontier_hex)
        except ProofError as exc:
            raise AuditUnavailable(
                "the audit head row is corrupt (its Merkle frontier is malformed)"
            ) from exc
        prev = bytes.fromhex(last_hash)
        ts_us = _now_us()
        when = format_time(ts_us)
        rows = []
        out = []
        sha256 = hashlib.sha256
        for event_bytes, fields in events:
            size += 1
            data = entry_bytes(event_bytes, size, when)
            digest = sha256(prev + data).digest()
            frontier.append(leaf_hash(digest))
            text = data.decode()
            prev_hex, digest_hex = prev.hex(), digest.hex()
            rows.append(
                {
                    "seq": size,
                    "ts_us": ts_us,
                    **fields,
                    "entry": text,
                    "prev_hash": prev_hex,
                    "hash": digest_hex,
                }
            )
            out.append(AppendedEntry(size, digest_hex, prev_hex, when, data))
            prev = digest
        conn.execute(_INSERT_ENTRIES, rows)
        conn.execute(
            _UPDATE_HEAD,
            {"new_size": size, "new_hash": prev.hex(), "new_frontier": frontier.to_hex()},
        )
        return out, size

    def _notify(self, size: int) -> None:
        for listener in self._listeners:
            try:
                listener(size)
            except Exception as exc:  # a listener must never undo a committed append
                _logger().error("audit.listener_failed", error=type(exc).__name__)

    # --- appending inside a caller's transaction

    @contextlib.contextmanager
    def transaction(self) -> Iterator[AuditTransaction]:
        """A database transaction in which a state change and its audit entries commit together.

            with audit_log.transaction() as tx:
                tx.conn.execute(...)          # the change, on the same connection
                tx.append(event)              # checked now (UnsafeEntry), written just before commit

        The entries are numbered and chained under the head row's lock at the end of the block, then
        everything commits at once; if the entries cannot be written nothing of the block is kept and
        `AuditUnavailable` is raised. An exception inside the block rolls it back and propagates as it is.
        On SQLite the block holds the database's write lock from its start (`BEGIN IMMEDIATE`), so keep
        it short and do only database work on `tx.conn` inside it.
        """
        try:
            conn = self.engine.connect()
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"the audit log cannot be written ({type(exc).__name__})") from exc
        with conn:
            try:
                self._begin(conn)
            except SQLAlchemyError as exc:
                raise AuditUnavailable(f"the audit log cannot be written ({type(exc).__name__})") from exc
            tx = AuditTransaction(conn)
            try:
                yield tx
            except BaseException:
                with contextlib.suppress(SQLAlchemyError):
                    conn.rollback()
                raise
            size = None
            try:
                if tx.pending:
                    tx.entries, size = self._append_rows(conn, tx.pending)
                conn.commit()
            except BaseException as exc:
                with contextlib.suppress(SQLAlchemyError):
                    conn.rollback()
                _logger().error("audit.unavailable", error=type(exc).__name__)
                if isinstance(exc, AuditUnavailable):
                    raise
                raise AuditUnavailable(f"the audit log cannot be written ({type(exc).__name__})") from exc
        if size is not None:
            self._notify(size)

    # --- reading

    def _read(self) -> sa.Connection:
        try:
            return self.engine.connect()
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"the audit log cannot be read ({type(exc).__name__})") from exc

    def _head_row(self, conn: sa.Connection) -> tuple[int, str, str]:
        row = conn.execute(_SELECT_HEAD).one_or_none()
        if row is None:
            raise AuditUnavailable("the audit store has no head row: run audit.store.create_tables")
        return int(row[0]), str(row[1]), str(row[2])

    def head(self) -> TreeHead:
        """The committed size and Merkle root, from the head row (O(log n) hashes)."""
        try:
            with self._read() as conn:
                size, _, frontier = self._head_row(conn)
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"the audit log cannot be read ({type(exc).__name__})") from exc
        try:
            return TreeHead(size, CompactRange.from_hex(size, frontier).root())
        except ProofError as exc:
            raise AuditUnavailable(
                "the audit head row is corrupt (its Merkle frontier is malformed)"
            ) from exc

    @staticmethod
    def _entry(row: sa.Row[Any]) -> StoredEntry:
        return StoredEntry(
            seq=int(row.seq),
            ts_us=int(row.ts_us),
            hash=row.hash,
            prev_hash=row.prev_hash,
            canonical=row.entry.encode(),
        )

    _COLUMNS = (
        audit_entries.c.seq,
        audit_entries.c.ts_us,
        audit_entries.c.entry,
        audit_entries.c.prev_hash,
        audit_entries.c.hash,
    )

    def entry(self, seq: int) -> StoredEntry | None:
        try:
            with self._read() as conn:
                row = conn.execute(sa.select(*self._COLUMNS).where(audit_entries.c.seq == seq)).one_or_none()
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"the audit log cannot be read ({type(exc).__name__})") from exc
        return None if row is None else self._entry(row)

    def entries(self, start: int = 1, end: int | None = None) -> Iterator[StoredEntry]:
        """Entries start..end (inclusive; default to the head), in order, read in chunks."""
        if end is None:
            end = self.head().size
        seq = max(start, 1)
        while seq <= end:
            upper = min(seq + _READ_CHUNK - 1, end)
            try:
                with self._read() as conn:
                    rows = conn.execute(
                        sa.select(*self._COLUMNS)
                        .where(audit_entries.c.seq.between(seq, upper))
                        .order_by(audit_entries.c.seq)
                    ).all()
            except SQLAlchemyError as exc:
                raise AuditUnavailable(f"the audit log cannot be read ({type(exc).__name__})") from exc
            for row in rows:
                yield self._entry(row)
            seq = upper + 1

    def filter(
        self,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        actor: str | None = None,
        action: str | None = None,
        query_id: str | None = None,
        connector: str | None = None,
        outcome: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[StoredEntry]:
        """One page of entries matching every given criterion, by increasing seq.

        `since` is inclusive and `until` exclusive (timezone-aware); for the next page pass the last seq
        returned as `after_seq`. `limit` is capped at 1000.
        """
        limit = max(1, min(limit, 1000))
        query = sa.select(*self._COLUMNS).where(audit_entries.c.seq > after_seq)
        if since is not None:
            query = query.where(audit_entries.c.ts_us >= _micros(since))
        if until is not None:
            query = query.where(audit_entries.c.ts_us < _micros(until))
        wanted = {
            "actor": actor,
            "action": action,
            "query_id": query_id,
            "connector": connector,
            "outcome": outcome,
        }
        for name, value in wanted.items():
            if value is not None:
                query = query.where(audit_entries.c[name] == value)
        query = query.order_by(audit_entries.c.seq).limit(limit)
        try:
            with self._read() as conn:
                return [self._entry(r) for r in conn.execute(query)]
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"the audit log cannot be read ({type(exc).__name__})") from exc

    # --- Merkle proofs (from an in-memory tree kept in step with the table)

    def _synced_tree(self, size: int) -> MerkleTree:
        """The cached tree grown to at least `size` leaves; the caller holds `_tree_lock`."""
        tree = self._tree
        while tree.size < size:
            upper = min(tree.size + _READ_CHUNK, size)
            try:
                with self._read() as conn:
                    rows = conn.execute(
                        sa.select(audit_entries.c.seq, audit_entries.c.hash)
                        .where(audit_entries.c.seq.between(tree.size + 1, upper))
                        .order_by(audit_entries.c.seq)
                    ).all()
            except SQLAlchemyError as exc:
                raise AuditUnavailable(f"the audit log cannot be read ({type(exc).__name__})") from exc
            for seq, digest in rows:
                if seq != tree.size + 1:
                    raise AuditUnavailable(f"the audit log has a gap before sequence number {seq}")
                tree.append(leaf_hash(bytes.fromhex(digest)))
            if not rows:
                raise AuditUnavailable(f"the audit log has no entry {tree.size + 1} below its head")
        return tree

    def _checked_size(self, size: int | None) -> int:
        head = self.head().size
        if size is None:
            return head
        if not 0 <= size <= head:
            raise ProofError(f"the log has {head} entries; size {size} is out of range")
        return size

    def root(self, size: int | None = None) -> bytes:
        size = self._checked_size(size)
        with self._tree_lock:
            return self._synced_tree(size).root(size)

    def inclusion_proof(self, seq: int, size: int | None = None) -> list[bytes]:
        """The audit path of entry `seq` (leaf index seq - 1) in the tree of the first `size` entries."""
        size = self._checked_size(size)
        if not 1 <= seq <= size:
            raise ProofError(f"entry {seq} is not in a tree of {size} entries")
        with self._tree_lock:
            return self._synced_tree(size).inclusion_proof(seq - 1, size)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        size2 = self._checked_size(size2)
        with self._tree_lock:
            return self._synced_tree(size2).consistency_proof(size1, size2)

    def frontier(self, size: int) -> CompactRange:
        """The compact range of the first `size` entries (how an export of a later range starts)."""
        size = self._checked_size(size)
        with self._tree_lock:
            return self._synced_tree(size).frontier(size)

    # --- checkpoints

    def add_checkpoint(self, *, size: int, key_id: str, root: bytes, note: str) -> None:
        """Store a signed checkpoint; the same (size, key) again is a no-op (Ed25519 is deterministic)."""
        try:
            with self.engine.begin() as conn:
                exists = conn.execute(
                    sa.select(audit_checkpoints.c.size).where(
                        audit_checkpoints.c.size == size, audit_checkpoints.c.key_id == key_id
                    )
                ).first()
                if exists is None:
                    conn.execute(
                        audit_checkpoints.insert().values(
                            size=size, key_id=key_id, root=root.hex(), note=note, created_us=_now_us()
                        )
                    )
        except IntegrityError:
            pass  # stored concurrently by another checkpointer
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"the audit checkpoint cannot be stored ({type(exc).__name__})") from exc

    def checkpoints(self, min_size: int = 0, max_size: int | None = None) -> list[StoredCheckpoint]:
        """Stored checkpoints with min_size <= size <= max_size, by size."""
        query = sa.select(audit_checkpoints).where(audit_checkpoints.c.size >= min_size)
        if max_size is not None:
            query = query.where(audit_checkpoints.c.size <= max_size)
        query = query.order_by(audit_checkpoints.c.size, audit_checkpoints.c.created_us)
        try:
            with self._read() as conn:
                rows = conn.execute(query).all()
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"the audit checkpoints cannot be read ({type(exc).__name__})") from exc
        return [StoredCheckpoint(int(r.size), r.key_id, r.root, r.note, int(r.created_us)) for r in rows]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        query = (
            sa.select(audit_checkpoints)
            .order_by(audit_checkpoints.c.size.desc(), audit_checkpoints.c.created_us.desc())
            .limit(1)
        )
        try:
            with self._read() as conn:
                row = conn.execute(query).one_or_none()
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"the audit checkpoints cannot be read ({type(exc).__name__})") from exc
        if row is None:
            return None
        return StoredCheckpoint(int(row.size), row.key_id, row.root, row.note, int(row.created_us))


def _now_us() -> int:
    return time.time_ns() // 1000
