"""A writer killed with SIGKILL mid-append loses no acknowledged entry and leaves no gap.

A separate process appends from four threads (with a background checkpointer) and prints each entry's
seq and hash once `append` has returned. The test kills it without warning, then, as a restarted gateway
would, signs a checkpoint, exports the log and verifies it offline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from audit.checkpoint import Checkpointer, NoteSigner
from audit.export import export_log
from audit.store import AuditLog
from audit.verify import verify_export

WRITER = """
import os, sys, threading
import structlog
from audit.checkpoint import CheckpointPolicy, Checkpointer, parse_signer
from audit.store import AuditLog

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is for acknowledgements
log = AuditLog.open(sys.argv[1])
Checkpointer(log, parse_signer(os.environ["AUDIT_SKEY"]), policy=CheckpointPolicy(every_entries=50)).start()
lock = threading.Lock()

def write(w):
    i = 0
    while True:
        e = log.append({"action": "http.request", "actor": "analyst:alice", "outcome": "ok", "w": w, "i": i})
        with lock:
            sys.stdout.write(f"{e.seq} {e.hash}\\n")
            sys.stdout.flush()
        i += 1

for w in range(4):
    threading.Thread(target=write, args=(w,), daemon=True).start()
threading.Event().wait()
"""


def _acknowledge(line: str, acknowledged: dict[int, str]) -> None:
    parts = line.split()
    if len(parts) == 2 and parts[0].isdigit() and len(parts[1]) == 64:  # a line cut by the kill is not one
        acknowledged[int(parts[0])] = parts[1]


def test_sigkill_mid_append_loses_nothing_acknowledged(tmp_path: Path) -> None:
    signer = NoteSigner.generate("audit.fedgate.example/test")
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    AuditLog.open(url)  # the tables exist before the writer starts
    env = {**os.environ, "AUDIT_SKEY": signer.skey()}
    child = subprocess.Popen([sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, env=env, text=True)
    assert child.stdout is not None
    acknowledged: dict[int, str] = {}
    deadline = time.monotonic() + 60

    def read_until(count: int) -> None:
        assert child.stdout is not None
        while len(acknowledged) < count and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                return
            _acknowledge(line, acknowledged)

    try:
        read_until(300)
        observer = AuditLog.open(url)
        while not observer.checkpoints() and time.monotonic() < deadline:
            time.sleep(0.01)  # let the writer's checkpointer sign at least once before the kill
        observer.engine.dispose()
        read_until(600)  # and kill it while it is busy appending again
    finally:
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    for line in rest.splitlines():
        _acknowledge(line, acknowledged)
    assert len(acknowledged) >= 600, "the writer did not get going"

    log = AuditLog.open(url)
    size = log.head().size
    assert size >= max(acknowledged)
    for seq, digest in acknowledged.items():
        stored = log.entry(seq)
        assert stored is not None and stored.hash == digest
    assert len(log.checkpoints()) >= 1  # the writer's own checkpoints survived too

    export_log(log, tmp_path / "after-crash.jsonl", checkpointer=Checkpointer(log, signer))
    report = verify_export(tmp_path / "after-crash.jsonl", [signer.vkey])
    assert report.ok, report.problems
    assert report.entries == size and report.covered_to == size
    # And the log goes on from where it stopped.
    assert log.append({"action": "gateway.started", "outcome": "ok"}).seq == size + 1
