"""What went wrong with a department's database, said to the department without values or secrets.

A driver error names its cause in its own words (psycopg, pymysql, sqlite3). `diagnose` maps it to one
of a few causes, each with the fix a department admin can act on, and keeps the driver's first line
scrubbed: quoted text (which may be a value) and long digit runs (IDs, amounts) are elided, credentials
never appear. The gateway and the analyst still see only the fixed error code; this is for the
connector's own log, `GET /v1/quality` and `fedgate connector check`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from connectors.errors import SourceError

# (cause, patterns in the driver's message, what to do)
_CAUSES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "unknown_host",
        (
            "could not translate host name",
            "name or service not known",
            "unknown mysql server host",
            "nodename nor servname",
            "getaddrinfo",
            "temporary failure in name resolution",
        ),
        "the host in source.url is unknown: correct the host name",
    ),
    (
        "connection_refused",
        ("connection refused", "can't connect to", "timeout expired", "timed out", "no route to host"),
        "nothing answers at the host and port in source.url: start the database or correct the port",
    ),
    (
        "authentication_failed",
        (
            "password authentication failed",
            "access denied for user",
            "no password supplied",
            "authentication failed",
            "peer authentication",
        ),
        "the database refused the user or password in source.url: correct them",
    ),
    (
        "unknown_database",
        ("unknown database", "unable to open database file"),
        "the database named in source.url does not exist: correct its name",
    ),
    (
        "permission_denied",
        ("permission denied", "command denied", "not authorized", "attempt to write a readonly"),
        "the database user may not read this table: grant it SELECT on the dataset's table",
    ),
    (
        "unknown_column",
        ("no such column", "unknown column", "undefinedcolumn"),
        "a configured column no longer exists in the table: correct the dataset's columns or the table",
    ),
    (
        "unknown_table",
        ("no such table", "doesn't exist", "undefinedtable", "relation"),
        "the table does not exist for this user: correct the dataset's table (or the schema search path)",
    ),
)
_FIXES = {name: fix for name, _patterns, fix in _CAUSES}
_DATABASE_MISSING = re.compile(r'database "[^"]*" does not exist')


@dataclass(frozen=True)
class Diagnosis:
    """A database failure as the department sees it (no values, no secrets)."""

    cause: str
    error_class: str
    detail: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        return {"cause": self.cause, "error_class": self.error_class, "detail": self.detail, "fix": self.fix}


class SourceFailure(SourceError):
    """A `SourceError` that carries its diagnosis; the message is the department's, never the analyst's."""

    def __init__(self, what: str, diagnosis: Diagnosis) -> None:
        self.diagnosis = diagnosis
        super().__init__(
            f"{what}: {diagnosis.cause} ({diagnosis.error_class}: {diagnosis.detail}); {diagnosis.fix}"
        )


def scrub(text: str, keep: Iterable[str] = ()) -> str:
    """The first line of a driver message with credentials, quoted text and long numbers elided."""
    kept = {k for k in keep if k}
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = re.sub(r"(//[^:/@\s]*):[^@\s]*@", r"\1:***@", line)
    line = re.sub(r"(?i)(password\s*=\s*)\S+", r"\1***", line)

    def quoted(match: re.Match[str]) -> str:
        inner = match.group(2)
        return match.group(0) if inner in kept else f"{match.group(1)}…{match.group(1)}"

    line = re.sub(r"(?<!\w)(['\"`])(.*?)\1(?!\w)", quoted, line)
    line = re.sub(r"(?<!port )(?<!port=)\b[0-9A-Za-z]*\d{4,}[0-9A-Za-z]*\b", "…", line)
    return line[:300]


def diagnose(exc: BaseException, keep: Iterable[str] = ()) -> Diagnosis:
    """Map a SQLAlchemy/driver error to its cause; `keep` lists names safe to show (tables, columns)."""
    orig = getattr(exc, "orig", None) or exc
    error_class = f"{type(orig).__module__.split('.')[0]}.{type(orig).__name__}"
    message, prefix = str(orig), ""
    args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        # MySQL drivers: (error number, text); the number is the server's error code, not data.
        message, prefix = args[1], f"[{args[0]}] "
    lowered = message.lower() + " " + type(orig).__name__.lower()
    cause, fix = "database_error", "see the database's own log for this error"
    if _DATABASE_MISSING.search(message):
        cause, fix = "unknown_database", _FIXES["unknown_database"]
    else:
        for name, patterns, advice in _CAUSES:
            if any(p in lowered for p in patterns):
                cause, fix = name, advice
                break
    return Diagnosis(cause=cause, error_class=error_class, detail=prefix + scrub(message, keep), fix=fix)


def url_names(url: str) -> list[str]:
    """The parts of a database URL safe to show beside an error: host, port, database, user (no password)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return []
    parts = [parsed.host, parsed.database, parsed.username, "localhost"]
    return [str(p) for p in parts if p]
