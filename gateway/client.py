"""A small Python client for the gateway's HTTP API.

    with GatewayClient("http://127.0.0.1:8700", api_key, analyst_key=pem) as gw:
        q = gw.submit(spec)                     # QuerySpec or dict; signed with the analyst's own key
        gw.approve(q["id"], key_pem, department, schemas=own)  # a department admin: signs its own plan
        result = gw.run(q["id"])
        frame = gw.result_frame(q["id"])         # pandas: a code and a name column per dimension, estimate,
                                                 # lower, upper, prob (quantiles), epsilon
        pack = gw.run_pack("monthly", period="2026-10")
        pack.to_frame()                          # one row per figure, villages named beside their codes

        job = gw.submit_job("pack", "monthly", period="2025-12")   # 202: the job, at once
        done = gw.wait_job(job["id"], on_progress=lambda j: print(j["steps_done"], j["steps_total"]))
        figures = gw.job_result(done["id"])["run"]

Errors come back as `GatewayError` with the status, the fixed code, the message and the offending field.
The transport can be injected (httpx.MockTransport or an ASGI transport in tests).
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from aggregation.query import QuerySpec
from connectors.protocol import (
    ApprovalRule,
    ApprovedDataset,
    ConnectorSchema,
    WindowLimits,
    fingerprint,
    load_private_key,
    sign_approval,
    sign_query,
    sign_rule,
)
from gateway.api.schemas import KeyGroupIn
from gateway.approval_plan import PlannedApproval, planned_approval, reported_scopes
from gateway.codenames import CodeNames
from gateway.i18n import Lang

if TYPE_CHECKING:
    import pandas as pd


class GatewayError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        super().__init__(f"{status} {code}: {message}" + (f" (field {field})" if field else ""))


class RunDocument(dict[str, Any]):
    """An indicator or pack run as the gateway returned it (a dict), with `to_frame()` for a table."""

    def __init__(self, doc: Mapping[str, Any], names: Callable[[], CodeNames]) -> None:
        super().__init__(doc)
        self._names = names

    def to_frame(self, *, lang: Lang | str = Lang.ZH) -> pd.DataFrame:
        """One row per figure (`gateway.frames.run_frame`), village names beside their codes."""
        from gateway.frames import run_frame

        return run_frame(self, self._names(), lang=lang)


class GatewayClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 300.0,
        transport: httpx.BaseTransport | None = None,
        analyst_key: bytes | None = None,
    ) -> None:
        # An analyst's own private key (PEM): every query submitted through this client names its
        # fingerprint and carries its signature, which the departments' connectors verify.
        self._analyst_key = None if analyst_key is None else load_private_key(analyst_key)
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )
        self._code_names: CodeNames | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _do(self, method: str, path: str, json: Any = None, headers: dict[str, str] | None = None) -> Any:
        response = self._http.request(method, path, json=json, headers=headers)
        if response.status_code >= 400:
            try:
                err = response.json()["error"]
                raise GatewayError(response.status_code, err["code"], err["message"], err.get("field"))
            except (ValueError, KeyError, TypeError):
                raise GatewayError(response.status_code, "error", response.text[:200], None) from None
        return response.json() if response.content else None

    # --- operator and department admin

    def allow_endpoint(self, url: str) -> Any:
        return self._do("POST", "/v1/endpoints", {"url": url})

    def endpoints(self) -> Any:
        return self._do("GET", "/v1/endpoints")["endpoints"]

    def remove_endpoint(self, url: str) -> Any:
        return self._do("DELETE", f"/v1/endpoints?url={quote(url, safe='')}")["endpoints"]

    def connectors(self) -> Any:
        return self._do("GET", "/v1/connectors")["connectors"]

    def set_connector_enabled(self, name: str, enabled: bool) -> Any:
        action = "enable" if enabled else "disable"
        return self._do("POST", f"/v1/connectors/{quote(name, safe='')}/{action}")

    def rules(self) -> Any:
        return self._do("GET", "/v1/rules")["rules"]

    def revoke_rule(self, rule_id: str) -> None:
        self._do("DELETE", f"/v1/rules/{quote(rule_id, safe='')}")

    def register_connector(self, name: str, endpoint: str, key_fingerprint: str) -> Any:
        return self._do(
            "POST", "/v1/connectors", {"name": name, "endpoint": endpoint, "key_fingerprint": key_fingerprint}
        )

    def me(self) -> Any:
        return self._do("GET", "/v1/me")

    def catalog(self) -> Any:
        return self._do("GET", "/v1/catalog")

    def code_names(self) -> CodeNames:
        """The names of the catalog's codes (villages, urban-rural classes ...), fetched once per client."""
        if self._code_names is None:
            self._code_names = CodeNames.from_catalog(self.catalog())
        return self._code_names

    # --- key groups

    def list_groups(self, *, include_retired: bool = False) -> Any:
        """The latest version of every registered key group (retired ones too if asked)."""
        suffix = "?include_retired=true" if include_retired else ""
        return self._do("GET", "/v1/groups" + suffix)["groups"]

    def group(self, name: str, version: int | None = None) -> Any:
        """One key group: its latest version, or an older one."""
        suffix = "" if version is None else f"?version={int(version)}"
        return self._do("GET", f"/v1/groups/{quote(name, safe='')}{suffix}")

    def register_group(self, group: KeyGroupIn | Mapping[str, Any]) -> Any:
        """Register a key group (operator or department admin); identical again changes nothing."""
        body = group.model_dump(mode="json") if isinstance(group, KeyGroupIn) else dict(group)
        return self._do("POST", "/v1/groups", body)

    def retire_group(self, name: str) -> Any:
        """Retire a key group (operator): it stays readable, but no new query can use it."""
        return self._do("POST", f"/v1/groups/{quote(name, safe='')}/retire")

    # --- queries

    def submit(self, spec: QuerySpec | dict[str, Any]) -> Any:
        """Submit a query; with an analyst key it names the key and is signed by it."""
        if self._analyst_key is None:
            body = spec.model_dump(mode="json") if isinstance(spec, QuerySpec) else spec
            return self._do("POST", "/v1/queries", body)
        parsed = spec if isinstance(spec, QuerySpec) else QuerySpec.model_validate(spec)
        signed = parsed.model_copy(update={"analyst_key": fingerprint(self._analyst_key.public_key())})
        signature = sign_query(self._analyst_key, signed.query_id, signed.digest)
        return self._do(
            "POST",
            "/v1/queries",
            signed.model_dump(mode="json", exclude_none=False),
            headers={"x-fedgate-query-signature": signature},
        )

    @property
    def analyst_fingerprint(self) -> str | None:
        return None if self._analyst_key is None else fingerprint(self._analyst_key.public_key())

    # --- analysts' keys (operator)

    def register_analyst_key(self, analyst: str, public_key: str) -> Any:
        return self._do("POST", f"/v1/analysts/{quote(analyst, safe='')}/keys", {"public_key": public_key})

    def analyst_keys(self) -> Any:
        return self._do("GET", "/v1/analysts/keys")["keys"]

    def revoke_analyst_key(self, key_fingerprint: str) -> None:
        self._do("DELETE", f"/v1/analysts/keys/{quote(key_fingerprint, safe='')}")

    def preview(self, spec: QuerySpec | dict[str, Any]) -> Any:
        """The expected 95% half-width of every statistic of a query, before spending anything on it."""
        body = spec.model_dump(mode="json") if isinstance(spec, QuerySpec) else spec
        return self._do("POST", "/v1/queries/preview", body)

    def query(self, query_id: str) -> Any:
        return self._do("GET", f"/v1/queries/{query_id}")

    def queries(self) -> Any:
        return self._do("GET", "/v1/queries")["queries"]

    def plan_approval(
        self,
        query_id: str,
        department: str,
        *,
        schemas: Sequence[ConnectorSchema],
        expires_at: int | None = None,
    ) -> PlannedApproval:
        """The approval the department would sign: its own plan of the query against its own connectors'
        schemas (`gateway.approval_plan`); `ScopeRefused` when the gateway reports a wider scope."""
        view = self.query(query_id)
        if not view["required_approvals"].get(department):
            raise GatewayError(
                403, "forbidden", "this query does not touch that department's data", "query_id"
            )
        return planned_approval(
            QuerySpec.model_validate(view["spec"]),
            department,
            schemas,
            reported_scopes(view, department),
            digest=view.get("digest"),
            expires_at=expires_at,
        )

    def sign_planned(self, planned: PlannedApproval, key_pem: bytes) -> Any:
        """Sign exactly the planned approval with the department's key and hand it to the gateway."""
        signed = sign_approval(load_private_key(key_pem), planned.approval)
        query_id = planned.approval.query_id
        return self._do("POST", f"/v1/queries/{query_id}/approvals", signed.model_dump(mode="json"))

    def approve(
        self, query_id: str, key_pem: bytes, department: str, *, schemas: Sequence[ConnectorSchema]
    ) -> Any:
        """Plan the query against the department's own schemas and sign exactly that scope."""
        return self.sign_planned(self.plan_approval(query_id, department, schemas=schemas), key_pem)

    def reject(self, query_id: str, reason: str) -> Any:
        return self._do("POST", f"/v1/queries/{query_id}/rejections", {"reason": reason})

    def register_rule(
        self,
        key_pem: bytes,
        *,
        department: str,
        rule_id: str,
        datasets: list[ApprovedDataset],
        units: tuple[str, ...],
        max_epsilon_per_query: Decimal,
        window: WindowLimits,
        per_analyst: WindowLimits | None = None,
        analysts: tuple[str, ...] = ("*",),
        expires_at: int | None = None,
    ) -> Any:
        """Sign and register a rule; a new version of the department's rule of that id names the digest
        of the version it replaces (read from the gateway, and shown in the audit entry)."""
        current = next(
            (r for r in self.rules() if r["department"] == department and r["rule_id"] == rule_id), None
        )
        rule = ApprovalRule.model_validate(
            {
                "department": department,
                "rule_id": rule_id,
                "datasets": datasets,
                "units": units,
                "max_epsilon_per_query": max_epsilon_per_query,
                "analysts": analysts,
                "window": window,
                "per_analyst": per_analyst,
                "expires_at": expires_at,
                "replaces": None if current is None else current["digest"],
            }
        )
        signed = sign_rule(load_private_key(key_pem), rule)
        return self._do("POST", "/v1/rules", signed.model_dump(mode="json"))

    def run(self, query_id: str) -> Any:
        return self._do("POST", f"/v1/queries/{query_id}/run")

    def result(self, query_id: str) -> Any:
        return self._do("GET", f"/v1/queries/{query_id}/result")

    def result_frame(self, query_id: str) -> pd.DataFrame:
        """A released result as a DataFrame (`gateway.frames.query_frame`): per dimension a code and a
        name column, then statistic, bin, prob, estimate, lower, upper, epsilon and query_id."""
        from gateway.frames import query_frame

        return query_frame(self.result(query_id)["result"], self.code_names())

    def budget(self, years: list[str] | None = None) -> Any:
        """Spent and remaining epsilon per data year (default: every year charged so far)."""
        query = "&".join(f"year={y}" for y in years or [])
        return self._do("GET", "/v1/budget" + (f"?{query}" if query else ""))

    # --- indicators

    def indicators(self) -> Any:
        """The indicator library and the packs, with their releases and epsilon splits."""
        return self._do("GET", "/v1/indicators")

    def monitoring(self) -> Any:
        """The monitoring configuration in force (404 before the first)."""
        return self._do("GET", "/v1/monitoring")

    def monitoring_versions(self) -> Any:
        return self._do("GET", "/v1/monitoring/versions")

    def set_monitoring(self, config: Mapping[str, Any]) -> Any:
        """Set the monitoring configuration (operator): checked against the catalog, versioned, audited."""
        return self._do("PUT", "/v1/monitoring", dict(config))

    def run_indicator(
        self,
        name: str,
        *,
        period: str,
        epsilon: Decimal | str | None = None,
        bands: Mapping[str, tuple[int, int]] | None = None,
        groups: Sequence[str] | None = None,
        baseline: str | None = None,
        drop_share: Decimal | str | None = None,
    ) -> RunDocument:
        """Run one indicator for `period` (YYYY-MM or YYYY-MM..YYYY-MM); its figures with 95% intervals."""
        body: dict[str, Any] = {"period": period}
        for key, value in (
            ("epsilon", epsilon),
            ("bands", dict(bands) if bands is not None else None),
            ("groups", list(groups) if groups is not None else None),
            ("baseline", baseline),
            ("drop_share", drop_share),
        ):
            if value is not None:
                body[key] = str(value) if isinstance(value, Decimal) else value
        return RunDocument(self._do("POST", f"/v1/indicators/{name}/run", body), self.code_names)

    def run_pack(
        self,
        name: str = "monthly",
        *,
        period: str,
        epsilon: Decimal | str | None = None,
        groups: Sequence[str] | None = None,
    ) -> RunDocument:
        """Run a pack of the monitoring calendar (`monthly` or `year_end`) for a reference month."""
        body: dict[str, Any] = {"period": period}
        if epsilon is not None:
            body["epsilon"] = str(epsilon)
        if groups is not None:
            body["groups"] = list(groups)
        return RunDocument(self._do("POST", f"/v1/packs/{name}/run", body), self.code_names)

    # --- jobs

    def submit_job(self, kind: str, target: str, **params: Any) -> Any:
        """Queue a run as a job (202, the job at once): `("query", query_id)`, `("indicator", name,
        period=...)` or `("pack", name, period=...)` with the synchronous route's parameters."""
        body: dict[str, Any] = {"kind": kind}
        if kind == "query":
            body["query_id"] = target
        else:
            body["name"] = target
        for key, value in params.items():
            if value is not None:
                body[key] = str(value) if isinstance(value, Decimal) else value
        return self._do("POST", "/v1/jobs", body)

    def job(self, job_id: str) -> Any:
        return self._do("GET", f"/v1/jobs/{quote(job_id, safe='')}")

    def jobs(self, state: str | None = None, limit: int = 100) -> Any:
        query = f"?limit={limit}" + (f"&state={quote(state)}" if state else "")
        return self._do("GET", f"/v1/jobs{query}")

    def cancel_job(self, job_id: str) -> Any:
        return self._do("POST", f"/v1/jobs/{quote(job_id, safe='')}/cancel")

    def job_result(self, job_id: str) -> Any:
        return self._do("GET", f"/v1/jobs/{quote(job_id, safe='')}/result")

    def job_events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job's server-sent events, each the job as `job()` returns it, until its final state."""
        path = f"/v1/jobs/{quote(job_id, safe='')}/events"
        with self._http.stream("GET", path, timeout=httpx.Timeout(30.0, read=None)) as response:
            if response.status_code >= 400:
                response.read()
                err = response.json()["error"]
                raise GatewayError(response.status_code, err["code"], err["message"], err.get("field"))
            for line in response.iter_lines():
                if line.startswith("data: "):
                    yield jsonlib.loads(line[6:])

    def wait_job(self, job_id: str, *, on_progress: Callable[[dict[str, Any]], None] | None = None) -> Any:
        """Follow the job until it is final, calling `on_progress` with the job on every change; returns
        the final job (its `state` says whether it succeeded; `error` why not)."""
        final: Any = None
        for job in self.job_events(job_id):
            final = job
            if on_progress is not None:
                on_progress(job)
        # The stream closes after the final state; a connection cut short is answered by one more look.
        return (
            final if final is not None and final["state"] not in ("queued", "running") else self.job(job_id)
        )

    # --- schedules and the archive (operators; the archive also for auditors and the runs' analysts)

    def create_schedule(
        self,
        *,
        name: str,
        pack: str,
        cron: Mapping[str, str],
        run_as: str,
        period_rule: str = "previous_month",
        epsilon: Decimal | str | None = None,
        groups: Sequence[str] | None = None,
    ) -> Any:
        body: dict[str, Any] = {
            "name": name,
            "pack": pack,
            "cron": dict(cron),
            "run_as": run_as,
            "period_rule": period_rule,
        }
        if epsilon is not None:
            body["epsilon"] = str(epsilon)
        if groups is not None:
            body["groups"] = list(groups)
        return self._do("POST", "/v1/schedules", body)

    def schedules(self, *, include_removed: bool = False) -> Any:
        return self._do("GET", "/v1/schedules" + ("?include_removed=true" if include_removed else ""))

    def schedule(self, schedule_id: str) -> Any:
        return self._do("GET", f"/v1/schedules/{quote(schedule_id, safe='')}")

    def pause_schedule(self, schedule_id: str) -> Any:
        return self._do("POST", f"/v1/schedules/{quote(schedule_id, safe='')}/pause")

    def resume_schedule(self, schedule_id: str) -> Any:
        return self._do("POST", f"/v1/schedules/{quote(schedule_id, safe='')}/resume")

    def remove_schedule(self, schedule_id: str) -> Any:
        return self._do("DELETE", f"/v1/schedules/{quote(schedule_id, safe='')}")

    def run_schedule(self, schedule_id: str) -> Any:
        """Fire a schedule now (a job): what a systemd timer or a Kubernetes CronJob calls."""
        return self._do("POST", f"/v1/schedules/{quote(schedule_id, safe='')}/run")

    def archive(self, pack: str | None = None) -> Any:
        return self._do("GET", "/v1/archive" + (f"?pack={quote(pack)}" if pack else ""))

    def archived(self, archive_id: str) -> Any:
        return self._do("GET", f"/v1/archive/{quote(archive_id, safe='')}")

    def archive_diff(self, archive_id: str) -> Any:
        return self._do("GET", f"/v1/archive/{quote(archive_id, safe='')}/diff")

    # --- auditors

    def audit_entries(self, **filters: Any) -> Any:
        params = {k: v for k, v in filters.items() if v is not None}
        response = self._http.get("/v1/audit/entries", params=params)
        if response.status_code >= 400:
            err = response.json()["error"]
            raise GatewayError(response.status_code, err["code"], err["message"], err.get("field"))
        return response.json()

    def audit_checkpoint(self) -> Any:
        return self._do("GET", "/v1/audit/checkpoint")

    def audit_export(self, out: Path) -> Path:
        """Download the whole log with the checkpoints that cover it, as JSON Lines."""
        with self._http.stream("GET", "/v1/audit/export") as response:
            if response.status_code >= 400:
                response.read()
                err = response.json()["error"]
                raise GatewayError(response.status_code, err["code"], err["message"], err.get("field"))
            with out.open("wb") as fh:
                for chunk in response.iter_bytes():
                    fh.write(chunk)
        return out
