"""structlog set-up shared by the connector and gateway processes.

Logs are a mirror for operators; the audit and local logs are the record. JSON when the output is not a
terminal (or FEDGATE_LOG_FORMAT=json), readable key=value lines in a terminal. Never log raw IDs, tokens,
keys or data-dependent counts.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


class _Stderr:
    """Whatever `sys.stderr` is when a line is written (test runners swap and close it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str | None = None) -> None:
    fmt = os.environ.get("FEDGATE_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName((level or os.environ.get("FEDGATE_LOG_LEVEL", "INFO")).upper())
        ),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
