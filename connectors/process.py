"""Start a connector as its own uvicorn process on a free loopback port and wait until it answers.

Used by the demo and by integration tests, which talk to real processes over HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class RunningConnector:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def kill(self) -> None:
        """Die at once, as a crash would."""
        self.process.kill()
        self.process.wait()


def start_connector(
    config: Path,
    *,
    name: str | None = None,
    port: int | None = None,
    log_dir: Path | None = None,
    env: dict[str, str] | None = None,
    wait_seconds: float = 30.0,
) -> RunningConnector:
    """Launch `fedgate connector serve` and return once `/v1/health` answers (or raise RuntimeError)."""
    port = free_port() if port is None else port
    name = name or config.stem
    log_dir = log_dir or config.parent
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    cmd = [sys.executable, "-m", "connectors", "serve", "--config", str(config), "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"connector {name} exited at start:\n{log_path.read_text(errors='replace')[-2000:]}"
            )
        try:
            if httpx.get(url + "/v1/health", timeout=1.0).status_code == 200:
                return RunningConnector(name=name, url=url, process=process, log_path=log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"connector {name} did not answer within {wait_seconds} s; see {log_path}")
