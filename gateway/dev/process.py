"""Start the gateway as its own uvicorn process on loopback and wait until it answers (demo, tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from connectors.process import RunningConnector, free_port


def start_gateway(
    state_dir: Path,
    *,
    signing_key_file: Path,
    database_url: str | None = None,
    audit_key_file: Path | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
    wait_seconds: float = 60.0,
) -> RunningConnector:
    """Launch `python -m gateway serve`; returns once `/healthz` answers (or raises RuntimeError)."""
    port = free_port() if port is None else port
    state_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "FEDGATE_STATE_DIR": str(state_dir),
        "FEDGATE_PORT": str(port),
        "FEDGATE_HOST": "127.0.0.1",
        "FEDGATE_SIGNING_KEY_FILE": str(signing_key_file),
    }
    if database_url:
        settings["FEDGATE_DATABASE_URL"] = database_url
    if audit_key_file is not None:
        settings["FEDGATE_AUDIT_KEY_FILE"] = str(audit_key_file)
    log_path = state_dir / "gateway.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **settings, **(env or {})},
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the gateway exited at start:\n{log_path.read_text(errors='replace')[-3000:]}"
            )
        try:
            if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                return RunningConnector(name="gateway", url=url, process=process, log_path=log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the gateway did not answer within {wait_seconds} s; see {log_path}")
