"""The auditor's pages: the log with filters, each entry verified in the page, checkpoints and what each
department witnessed, exports, and the reconcile report.

    GET  /console/audit/log                  filters: action, principal, query, time range (UTC), status
    GET  /console/audit/entries/{seq}        the entry, re-hashed and proven in the browser against the
                                             audit key the auditor pinned there (static/js/audit-entry.js)
    GET  /console/audit/entries/{seq}/evidence   the same evidence as JSON, for the list's checks
    GET  /console/audit/checkpoints          signed checkpoints, the head, the sizes each connector cosigned
    GET  /console/audit/export.jsonl         a range as `fedgate-audit-export/1` (what `fedgate audit
                                             verify` checks offline)
    GET  /console/audit/export.csv           the filtered entries' fields as CSV
    GET  /console/audit/reconcile            upload a connector's log export (`fedgate connector export-log`)
    POST /console/audit/reconcile            ... and see where it and the gateway's log disagree

Every read goes through the same audit store the JSON API reads (`/v1/audit/...`); the pages add no
trust: the browser checks what the gateway serves.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from audit.entries import format_time
from audit.export import export_log
from audit.store import StoredEntry
from gateway import audit_review
from gateway.api.schemas import MAX_SEQUENCE
from gateway.auth import Role
from gateway.console.deps import AuditorSession, CsrfChecked, PageLang
from gateway.console.render import nav, render
from gateway.context import get_context
from gateway.errors import Invalid

router = APIRouter(prefix="/audit")

nav(Role.AUDITOR, "/console/audit/log", "console_audit.nav_log")
nav(Role.AUDITOR, "/console/audit/checkpoints", "console_audit.nav_checkpoints")
nav(Role.AUDITOR, "/console/audit/reconcile", "console_audit.nav_reconcile")

PAGE_SIZE = 100
CSV_LIMIT = 100_000
Text = Annotated[str, Query(max_length=100)]


def _moment(value: str, field: str) -> dt.datetime | None:
    """A time from the filter form: ISO 8601; without a zone it is read as UTC (the form says so)."""
    if not value.strip():
        return None
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise Invalid("a time is written like 2026-01-31T08:00 (UTC)", field) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _filters(action: str, principal: str, query: str, since: str, until: str, status: str) -> dict[str, Any]:
    return {
        "action": action.strip() or None,
        "actor": principal.strip() or None,
        "query_id": query.strip() or None,
        "since": _moment(since, "since"),
        "until": _moment(until, "until"),
        "outcome": status.strip() or None,
    }


@router.get("/log")
def log_page(
    request: Request,
    session: AuditorSession,
    lang: PageLang,
    action: Text = "",
    principal: Text = "",
    query: Text = "",
    since: Text = "",
    until: Text = "",
    status: Text = "",
    after_seq: Annotated[int, Query(ge=0, le=MAX_SEQUENCE)] = 0,
) -> Response:
    ctx = get_context(request)
    filters = _filters(action, principal, query, since, until, status)
    entries = ctx.audit.log.filter(**filters, after_seq=after_seq, limit=PAGE_SIZE)
    form = {
        "action": action,
        "principal": principal,
        "query": query,
        "since": since,
        "until": until,
        "status": status,
    }
    return render(
        request,
        "audit_log.html",
        lang,
        session,
        entries=entries,
        form=form,
        next_after=entries[-1].seq if len(entries) == PAGE_SIZE else None,
        head=ctx.audit.log.head().size,
    )


@router.get("/entries/{seq}")
def entry_page(
    seq: Annotated[int, PathParam(ge=1, le=MAX_SEQUENCE)],
    request: Request,
    session: AuditorSession,
    lang: PageLang,
) -> Response:
    evidence = audit_review.entry_evidence(get_context(request), seq)
    return render(request, "audit_entry.html", lang, session, ev=evidence, entry=evidence.entry)


@router.get("/entries/{seq}/evidence")
def entry_evidence(
    seq: Annotated[int, PathParam(ge=1, le=MAX_SEQUENCE)], request: Request, session: AuditorSession
) -> dict[str, Any]:
    """What the log's list verifies in the browser for one entry (the entry page carries the same)."""
    ev = audit_review.entry_evidence(get_context(request), seq)
    return {
        "seq": ev.entry.seq,
        "entry": ev.canonical_b64,
        "prev_hash": ev.entry.prev_hash,
        "hash": ev.entry.hash,
        "tree_size": ev.checkpoint.size,
        "proof": ev.proof_b64,
        "note": ev.checkpoint.note,
    }


@router.get("/checkpoints")
def checkpoints_page(request: Request, session: AuditorSession, lang: PageLang) -> Response:
    log = get_context(request).audit.log
    stored = log.checkpoints()
    return render(
        request,
        "audit_checkpoints.html",
        lang,
        session,
        checkpoints=[(c, format_time(c.created_us)) for c in reversed(stored[-PAGE_SIZE:])],
        total=len(stored),
        head=log.head().size,
        witnessed=audit_review.witnessed_sizes(log),
    )


@router.get("/export.jsonl", response_class=FileResponse)
def export_jsonl(
    request: Request,
    session: AuditorSession,
    background: BackgroundTasks,
    start: Annotated[int, Query(ge=1, le=MAX_SEQUENCE)] = 1,
    end: Annotated[int | None, Query(ge=1, le=MAX_SEQUENCE)] = None,
) -> FileResponse:
    ctx = get_context(request)
    work = Path(tempfile.mkdtemp(prefix="fedgate-audit-"))
    out = work / "audit-export.jsonl"
    try:
        export_log(ctx.audit.log, out, start=start, end=end, checkpointer=ctx.checkpointer)
    except ValueError as exc:
        shutil.rmtree(work, True)
        raise Invalid(str(exc), "start") from None
    background.add_task(shutil.rmtree, work, True)
    return FileResponse(out, media_type="application/x-ndjson", filename="audit-export.jsonl")


@router.get("/export.csv")
def export_csv(
    request: Request,
    session: AuditorSession,
    action: Text = "",
    principal: Text = "",
    query: Text = "",
    since: Text = "",
    until: Text = "",
    status: Text = "",
) -> Response:
    log = get_context(request).audit.log
    filters = _filters(action, principal, query, since, until, status)
    found: list[StoredEntry] = []
    after = 0
    while len(found) < CSV_LIMIT:
        batch = log.filter(**filters, after_seq=after, limit=1000)
        found += batch
        if len(batch) < 1000:
            break
        after = batch[-1].seq
    return Response(
        audit_review.entries_csv(found[:CSV_LIMIT]),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="audit-entries.csv"'},
    )


@router.get("/reconcile")
def reconcile_form(request: Request, session: AuditorSession, lang: PageLang) -> Response:
    return render(request, "audit_reconcile.html", lang, session, differences=None, connector="")


@router.post("/reconcile")
async def reconcile_page(
    request: Request,
    session: AuditorSession,
    _csrf: CsrfChecked,
    lang: PageLang,
    connector_log: Annotated[UploadFile, File()],
    connector: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    ctx = get_context(request)
    data = await connector_log.read(audit_review.MAX_CONNECTOR_LOG_BYTES + 1)
    differences = await run_in_threadpool(audit_review.reconcile_upload, ctx, data, connector.strip() or None)
    return render(
        request, "audit_reconcile.html", lang, session, differences=differences, connector=connector
    )
