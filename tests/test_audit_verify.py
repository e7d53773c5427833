"""Offline verification: a clean export verifies; every kind of tampering is caught at the right seq.

The log has 60 entries with a checkpoint every 10. Where a change leaves traces in the entries themselves
(a changed field, a deleted, inserted or swapped entry) the report names that entry. Where the attacker
recomputed every later hash so that only a signed checkpoint disagrees, it names the first entry after
the last checkpoint that still holds (21 for a change at 25, 41 for a tail rewritten from 46).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import audit.scan as scan_module
from audit.checkpoint import Checkpoint, Checkpointer, CheckpointPolicy, NoteSigner, rotate_key
from audit.cli import audit_app
from audit.entries import entry_bytes
from audit.errors import VerificationFailed
from audit.export import entry_line, export_log, parse_entry_line
from audit.store import AuditLog
from audit.verify import ProblemKind, VerifyReport, verify_export

ORIGIN = "audit.fedgate.example/test"
N = 60
EVERY = 10
TIME = "2030-01-01T00:00:00.000000Z"


def _event(i: int) -> dict[str, Any]:
    return {"action": "http.request", "actor": "analyst:alice", "outcome": "ok", "status": 200, "i": i}


def _build(db: Path, signer: NoteSigner, events: list[dict[str, Any]]) -> AuditLog:
    log = AuditLog.open(f"sqlite:///{db}")
    cp = Checkpointer(log, signer, origin=ORIGIN, policy=CheckpointPolicy(every_entries=EVERY))
    for e in events:
        log.append(e)
        cp.maybe_checkpoint()
    return log


@pytest.fixture(scope="module")
def signer() -> NoteSigner:
    return NoteSigner.generate(ORIGIN)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, signer: NoteSigner) -> Path:
    tmp = tmp_path_factory.mktemp("audit")
    log = _build(tmp / "audit.db", signer, [_event(i) for i in range(N)])
    export_log(log, tmp / "export.jsonl")
    return tmp / "export.jsonl"


@pytest.fixture(scope="module")
def forked_checkpoints(tmp_path_factory: pytest.TempPathFactory, signer: NoteSigner) -> dict[int, str]:
    """Checkpoints signed with the gateway's own key over a history that differs from entry 21 on."""
    tmp = tmp_path_factory.mktemp("fork")
    log = _build(tmp / "audit.db", signer, [_event(i if i < 20 else i + 1000) for i in range(N)])
    return {c.size: c.note for c in log.checkpoints()}


# --- editing an export as an attacker would


class Export:
    def __init__(self, path: Path) -> None:
        self.lines = path.read_bytes().splitlines(keepends=True)

    def index(self, seq: int) -> int:
        return next(
            i for i, line in enumerate(self.lines) if line.startswith(b'{"kind":"entry","seq":%d,' % seq)
        )

    def fields(self, i: int) -> tuple[int, str, str, bytes]:
        parsed = parse_entry_line(self.lines[i].rstrip(b"\n"))
        assert parsed is not None
        seq_b, prev_b, hash_b, entry, _ = parsed
        return int(seq_b), prev_b.decode(), hash_b.decode(), entry

    def set(
        self, i: int, *, seq: int | None = None, entry: bytes | None = None, rehash: bool = False
    ) -> None:
        old_seq, prev, hash_, old_entry = self.fields(i)
        entry = old_entry if entry is None else entry
        if rehash:
            import hashlib

            hash_ = hashlib.sha256(bytes.fromhex(prev) + entry).hexdigest()
        self.lines[i] = entry_line(old_seq if seq is None else seq, prev, hash_, entry)

    def rechain(self, start: int) -> None:
        """Recompute prev_hash and hash of every entry line from index `start` on, as an attacker would."""
        import hashlib

        for i in range(start, len(self.lines)):
            seq, _, _, entry = self.fields(i)
            prev = self.fields(i - 1)[2] if self.lines[i - 1].startswith(b'{"kind":"entry"') else "0" * 64
            self.lines[i] = entry_line(
                seq, prev, hashlib.sha256(bytes.fromhex(prev) + entry).hexdigest(), entry
            )

    def checkpoint_index(self, size: int) -> int:
        return next(
            i
            for i, line in enumerate(self.lines)
            if line.startswith(b'{"kind":"checkpoint"') and json.loads(line)["size"] == size
        )

    def set_note(self, size: int, note: str) -> None:
        i = self.checkpoint_index(size)
        obj = json.loads(self.lines[i])
        obj["note"] = note
        self.lines[i] = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

    def write(self, path: Path) -> Path:
        path.write_bytes(b"".join(self.lines))
        return path


def _forged(seq: int, event: dict[str, Any]) -> bytes:
    return entry_bytes(rfc8785.dumps(event), seq, TIME)


def _changed(e: Export, seq: int) -> bytes:
    entry = e.fields(e.index(seq))[3]
    changed = entry.replace(b'"actor":"analyst:alice"', b'"actor":"analyst:mallory"')
    assert changed != entry
    return changed


def changed_field(e: Export, _: dict[int, str]) -> None:
    e.set(e.index(25), entry=_changed(e, 25))


def changed_field_rehashed(e: Export, _: dict[int, str]) -> None:
    e.set(e.index(25), entry=_changed(e, 25), rehash=True)


def changed_field_chain_rewritten(e: Export, _: dict[int, str]) -> None:
    e.set(e.index(25), entry=_changed(e, 25))
    e.rechain(e.index(25))


def deleted_entry(e: Export, _: dict[int, str]) -> None:
    del e.lines[e.index(25)]


def deleted_entry_renumbered(e: Export, _: dict[int, str]) -> None:
    first = e.index(25)
    del e.lines[first]
    for i in range(first, len(e.lines)):
        e.set(i, seq=e.fields(i)[0] - 1)
    e.rechain(first)


def inserted_entry(e: Export, _: dict[int, str]) -> None:
    i = e.index(25)
    prev = e.fields(i - 1)[2]
    e.lines.insert(i, entry_line(25, prev, "0" * 64, _forged(25, _event(-1))))
    e.set(i, rehash=True)


def inserted_entry_renumbered(e: Export, _: dict[int, str]) -> None:
    i = e.index(25)
    e.lines.insert(i, entry_line(25, "0" * 64, "0" * 64, _forged(25, _event(-1))))
    for j in range(i + 1, len(e.lines)):
        e.set(j, seq=e.fields(j)[0] + 1)
    e.rechain(i)


def swapped_entries(e: Export, _: dict[int, str]) -> None:
    i = e.index(25)
    e.lines[i], e.lines[i + 1] = e.lines[i + 1], e.lines[i]


def swapped_entries_renumbered(e: Export, _: dict[int, str]) -> None:
    i = e.index(25)
    e.lines[i], e.lines[i + 1] = e.lines[i + 1], e.lines[i]
    e.set(i, seq=25)
    e.set(i + 1, seq=26)
    e.rechain(i)


def tail_truncated(e: Export, _: dict[int, str]) -> None:
    del e.lines[e.index(46) :]


def tail_truncated_and_reappended(e: Export, _: dict[int, str]) -> None:
    del e.lines[e.index(46) :]
    for seq in range(46, N + 1):
        prev = e.fields(len(e.lines) - 1)[2]
        e.lines.append(entry_line(seq, prev, "0" * 64, _forged(seq, _event(seq + 500))))
        e.set(len(e.lines) - 1, rehash=True)


def forged_checkpoint(e: Export, _: dict[int, str]) -> None:
    cp = Checkpoint.parse_unverified(json.loads(e.lines[e.checkpoint_index(30)])["note"])
    e.set_note(30, Checkpoint.sign(ORIGIN, 30, cp.root, NoteSigner.generate(ORIGIN)).note)


def altered_checkpoint(e: Export, _: dict[int, str]) -> None:
    note = json.loads(e.lines[e.checkpoint_index(30)])["note"]
    cp = Checkpoint.parse_unverified(note)
    e.set_note(30, note.replace(cp.body, Checkpoint(ORIGIN, 30, bytes(32), "").body))


def inconsistent_checkpoint(e: Export, forked: dict[int, str]) -> None:
    e.set_note(30, forked[30])


def two_roots_for_one_size(e: Export, forked: dict[int, str]) -> None:
    i = e.checkpoint_index(30)
    obj = json.loads(e.lines[i])
    obj["note"] = forked[30]
    e.lines.insert(i + 1, json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")


CASES: list[tuple[Callable[[Export, dict[int, str]], None], int, ProblemKind]] = [
    (changed_field, 25, ProblemKind.HASH),
    (changed_field_rehashed, 25, ProblemKind.CHAIN),
    (changed_field_chain_rewritten, 21, ProblemKind.ROOT),
    (deleted_entry, 25, ProblemKind.MISSING),
    (deleted_entry_renumbered, 25, ProblemKind.MISPLACED),
    (inserted_entry, 25, ProblemKind.ORDER),
    (inserted_entry_renumbered, 25, ProblemKind.MISPLACED),
    (swapped_entries, 25, ProblemKind.MISSING),
    (swapped_entries_renumbered, 25, ProblemKind.MISPLACED),
    (tail_truncated, 46, ProblemKind.TRUNCATED),
    (tail_truncated_and_reappended, 41, ProblemKind.ROOT),
    (forged_checkpoint, 30, ProblemKind.SIGNATURE),
    (altered_checkpoint, 30, ProblemKind.SIGNATURE),
    (inconsistent_checkpoint, 21, ProblemKind.ROOT),
    (two_roots_for_one_size, 21, ProblemKind.ROOT),
]


def test_a_clean_export_verifies(clean: Path, signer: NoteSigner) -> None:
    report = verify_export(clean, [signer.vkey], origin=ORIGIN)
    assert report.ok, report.problems
    assert (report.entries, report.checkpoints_verified, report.covered_to) == (N, N // EVERY, N)
    assert report.first_bad_seq is None and report.warnings == [] and report.origin == ORIGIN
    report.raise_for_problems()


@pytest.mark.parametrize(("tamper", "seq", "kind"), CASES, ids=[c[0].__name__ for c in CASES])
def test_tampering_is_caught_at_the_first_bad_seq(
    tmp_path: Path,
    clean: Path,
    signer: NoteSigner,
    forked_checkpoints: dict[int, str],
    tamper: Callable[[Export, dict[int, str]], None],
    seq: int,
    kind: ProblemKind,
) -> None:
    export = Export(clean)
    tamper(export, forked_checkpoints)
    report = verify_export(export.write(tmp_path / "tampered.jsonl"), [signer.vkey])
    assert not report.ok
    assert report.first_bad_seq == seq, report.problems
    assert report.first_problem is not None and report.first_problem.kind == kind, report.problems
    with pytest.raises(VerificationFailed, match=f"first bad sequence number {seq}"):
        report.raise_for_problems()


def test_inconsistent_and_forked_checkpoints_are_named(
    tmp_path: Path, clean: Path, signer: NoteSigner, forked_checkpoints: dict[int, str]
) -> None:
    export = Export(clean)
    two_roots_for_one_size(export, forked_checkpoints)
    kinds = {p.kind for p in verify_export(export.write(tmp_path / "t.jsonl"), [signer.vkey]).problems}
    assert {ProblemKind.FORK, ProblemKind.ROOT, ProblemKind.INCONSISTENT} <= kinds


def test_the_wrong_key_proves_nothing(clean: Path) -> None:
    report = verify_export(clean, [NoteSigner.generate(ORIGIN).vkey])
    assert not report.ok and report.first_problem is not None
    assert (report.first_bad_seq, report.first_problem.kind) == (1, ProblemKind.UNSIGNED)
    assert ProblemKind.SIGNATURE in {p.kind for p in report.problems}
    with pytest.raises(ValueError):
        verify_export(clean, [])


def test_chunked_and_parallel_scans_find_exactly_what_one_pass_finds(
    tmp_path: Path,
    clean: Path,
    signer: NoteSigner,
    forked_checkpoints: dict[int, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reports: dict[str, list[VerifyReport]] = {}
    for label, chunk, workers in (("one pass", 1 << 30, 1), ("chunked", 2000, 1), ("parallel", 3000, 2)):
        monkeypatch.setattr(scan_module, "CHUNK_BYTES", chunk)
        for tamper, _, _ in CASES:
            export = Export(clean)
            tamper(export, forked_checkpoints)
            path = export.write(tmp_path / f"{tamper.__name__}.jsonl")
            reports.setdefault(label, []).append(verify_export(path, [signer.vkey], workers=workers))
    summary = {
        k: [(sorted(r.problems, key=lambda p: (p.seq, p.kind)), r.entries) for r in v]
        for k, v in reports.items()
    }
    assert summary["chunked"] == summary["one pass"]
    assert summary["parallel"] == summary["one pass"]


def test_sub_range_exports_carry_their_prefix(tmp_path: Path, signer: NoteSigner) -> None:
    log = _build(tmp_path / "audit.db", signer, [_event(i) for i in range(N)])
    path = tmp_path / "range.jsonl"
    summary = export_log(log, path, start=23, end=47)
    assert (summary.start, summary.end, summary.entries) == (23, 47, 25)
    report = verify_export(path, [signer.vkey])
    assert report.ok, report.problems
    assert report.covered_to == 47  # the checkpoint at 50 covers the tail through its consistency proof
    export = Export(path)
    header = json.loads(export.lines[0])
    header["prefix"][0] = "00" * 32
    export.lines[0] = json.dumps(header, separators=(",", ":")).encode() + b"\n"
    bad = verify_export(export.write(tmp_path / "bad.jsonl"), [signer.vkey])
    assert bad.first_bad_seq == 23 and bad.first_problem is not None
    assert bad.first_problem.kind == ProblemKind.ROOT


def test_unsigned_tails_warn_and_unsigned_exports_fail(tmp_path: Path, signer: NoteSigner) -> None:
    log = _build(tmp_path / "audit.db", signer, [_event(i) for i in range(25)])
    export_log(log, tmp_path / "tail.jsonl")
    report = verify_export(tmp_path / "tail.jsonl", [signer.vkey])
    assert report.ok and report.uncovered_from == 21 and report.warnings
    export_log(log, tmp_path / "signed.jsonl", checkpointer=Checkpointer(log, signer, origin=ORIGIN))
    assert verify_export(tmp_path / "signed.jsonl", [signer.vkey]).uncovered_from is None

    bare = AuditLog.open(f"sqlite:///{tmp_path / 'bare.db'}")
    bare.append_many(_event(i) for i in range(3))
    export_log(bare, tmp_path / "bare.jsonl")
    report = verify_export(tmp_path / "bare.jsonl", [signer.vkey])
    assert not report.ok and report.first_problem is not None
    assert (report.first_bad_seq, report.first_problem.kind) == (1, ProblemKind.UNSIGNED)


def test_an_empty_log_exports_and_verifies(tmp_path: Path, signer: NoteSigner) -> None:
    log = AuditLog.open(f"sqlite:///{tmp_path / 'empty.db'}")
    export_log(log, tmp_path / "empty.jsonl", checkpointer=Checkpointer(log, signer))
    report = verify_export(tmp_path / "empty.jsonl", [signer.vkey])
    assert report.ok and report.entries == 0


def test_key_rotation_is_followed_by_the_verifier(tmp_path: Path) -> None:
    old, new = NoteSigner.generate(ORIGIN), NoteSigner.generate(ORIGIN)
    log = AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}")
    cp = Checkpointer(log, old, policy=CheckpointPolicy(every_entries=5))
    for i in range(12):
        log.append(_event(i))
        cp.maybe_checkpoint()
    rotated = rotate_key(cp, new, actor="operator:ops")
    for i in range(12, 24):
        log.append(_event(i))
        cp.maybe_checkpoint()
    path = tmp_path / "rotated.jsonl"
    export_log(log, path, checkpointer=cp)
    for keys in ([old.vkey], [new.vkey], [old.vkey, new.vkey]):
        report = verify_export(path, keys)
        assert report.ok, report.problems
        assert report.keys == [old.vkey, new.vkey]
    report = verify_export(path, [NoteSigner.generate(ORIGIN).vkey])
    assert not report.ok and report.first_problem is not None
    assert report.first_problem.kind == ProblemKind.SIGNATURE  # no given key is in the key history

    # A checkpoint signed with the retired key after the rotation is refused.
    size = rotated.seq + 5
    export = Export(path)
    stale = Checkpoint.sign(ORIGIN, size, log.root(size), old).note
    export.set_note(size, stale)
    report = verify_export(export.write(tmp_path / "stale.jsonl"), [old.vkey])
    assert report.first_bad_seq == size and report.first_problem is not None
    assert report.first_problem.kind == ProblemKind.SIGNATURE


# --- the CLI


@pytest.fixture
def cli_log(tmp_path: Path) -> tuple[str, Path, str]:
    runner = CliRunner()
    key = tmp_path / "audit.key"
    result = runner.invoke(audit_app, ["keygen", "--name", ORIGIN, "--out", str(key)])
    assert result.exit_code == 0, result.output
    vkey = result.output.strip()
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    log = AuditLog.open(db)
    log.append_many(_event(i) for i in range(40))
    return db, key, vkey


def _words(text: str) -> str:
    return " ".join(text.split())


def test_cli_export_verify_and_tail(tmp_path: Path, cli_log: tuple[str, Path, str]) -> None:
    db, key, vkey = cli_log
    runner = CliRunner()
    out = tmp_path / "export.jsonl"
    result = runner.invoke(audit_app, ["export", "--db", db, "--out", str(out), "--signing-key", str(key)])
    assert result.exit_code == 0, result.output
    assert "40 entries" in result.output

    result = runner.invoke(
        audit_app, ["verify", str(out), "--public-key", vkey, "--json", str(tmp_path / "r.json")]
    )
    assert result.exit_code == 0, result.output
    assert "OK" in result.output
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is True

    (tmp_path / "vkey").write_text(vkey)
    assert runner.invoke(audit_app, ["verify", str(out), "-k", str(tmp_path / "vkey")]).exit_code == 0

    export = Export(out)
    changed_field(export, {})
    result = runner.invoke(
        audit_app, ["verify", str(export.write(tmp_path / "bad.jsonl")), "--public-key", vkey]
    )
    assert result.exit_code == 1
    assert "first bad sequence number 25" in _words(result.output)

    wrong = NoteSigner.generate(ORIGIN).vkey
    assert runner.invoke(audit_app, ["verify", str(out), "--public-key", wrong]).exit_code == 1
    assert (
        runner.invoke(audit_app, ["verify", str(tmp_path / "missing.jsonl"), "--public-key", vkey]).exit_code
        == 2
    )
    assert runner.invoke(audit_app, ["verify", str(out)]).exit_code == 2  # the key is required
    assert runner.invoke(audit_app, ["verify", str(out), "--public-key", "garbage"]).exit_code == 2

    result = runner.invoke(audit_app, ["tail", "--db", db, "-n", "5"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "http.request" in result.output and "40" in result.output
    assert runner.invoke(audit_app, ["tail", "--db", f"sqlite:///{tmp_path / 'none.db'}"]).exit_code == 2


def test_cli_strict_fails_on_an_unsigned_tail(tmp_path: Path, cli_log: tuple[str, Path, str]) -> None:
    db, key, vkey = cli_log
    runner = CliRunner()
    assert runner.invoke(audit_app, ["checkpoint", "--db", db, "--signing-key", str(key)]).exit_code == 0
    AuditLog.open(db).append(_event(99))
    out = tmp_path / "export.jsonl"
    assert runner.invoke(audit_app, ["export", "--db", db, "--out", str(out)]).exit_code == 0
    result = runner.invoke(audit_app, ["verify", str(out), "--public-key", vkey])
    assert result.exit_code == 0 and "warning" in result.output
    result = runner.invoke(audit_app, ["verify", str(out), "--public-key", vkey, "--strict"])
    assert result.exit_code == 1 and "first bad sequence number 41" in _words(result.output)


def test_a_flood_of_problems_keeps_the_first(tmp_path: Path, clean: Path, signer: NoteSigner) -> None:
    export = Export(clean)
    first = export.index(1)
    export.lines[first:] = [b"not an entry\n"] * 5000
    report = verify_export(export.write(tmp_path / "flood.jsonl"), [signer.vkey])
    assert report.problem_count > 5000 and len(report.problems) == 1000
    assert report.first_bad_seq == 1 and report.first_problem is not None
    assert report.first_problem.kind == ProblemKind.FORMAT


def test_garbage_is_a_format_problem_not_a_crash(tmp_path: Path, signer: NoteSigner) -> None:
    for content in (b"", b"{}\n", b"not json\n", b'{"kind":"header","format":"fedgate-audit-export/1"}\n'):
        path = tmp_path / "garbage.jsonl"
        path.write_bytes(content)
        report = verify_export(path, [signer.vkey])
        assert not report.ok and report.first_problem is not None
        assert (report.first_bad_seq, report.first_problem.kind) == (1, ProblemKind.FORMAT)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_damage_is_found_alike_in_one_pass_and_in_chunks(
    tmp_path: Path, clean: Path, signer: NoteSigner, monkeypatch: pytest.MonkeyPatch, data: st.DataObject
) -> None:
    export = Export(clean)
    first = export.index(1)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        i = data.draw(st.integers(first, len(export.lines) - 1), label="line")
        action = data.draw(
            st.sampled_from(["delete", "duplicate", "swap", "flip", "garbage"]), label="action"
        )
        if action == "delete" and len(export.lines) > first + 1:
            del export.lines[i]
        elif action == "duplicate":
            export.lines.insert(i, export.lines[i])
        elif action == "swap" and i + 1 < len(export.lines):
            export.lines[i], export.lines[i + 1] = export.lines[i + 1], export.lines[i]
        elif action == "flip":
            line = bytearray(export.lines[i])
            at = data.draw(st.integers(0, len(line) - 2), label="byte")
            line[at] ^= data.draw(st.integers(1, 127), label="mask")
            export.lines[i] = bytes(line)
        elif action == "garbage":
            export.lines.insert(i, b"garbage\n")
    path = export.write(tmp_path / "damaged.jsonl")
    monkeypatch.setattr(scan_module, "CHUNK_BYTES", 1 << 30)
    whole = verify_export(path, [signer.vkey])
    monkeypatch.setattr(scan_module, "CHUNK_BYTES", data.draw(st.integers(300, 4000), label="chunk"))
    chunked = verify_export(path, [signer.vkey], workers=1)
    assert chunked.problems == whole.problems
    assert (chunked.entries, chunked.problem_count) == (whole.entries, whole.problem_count)
