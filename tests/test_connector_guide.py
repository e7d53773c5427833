"""docs/connector-guide.md as a script: a department onboarded with the `fedgate` commands alone, from key
generation to a released result, each command a subprocess of the real entry point on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from connectors.process import free_port
from gateway.client import GatewayClient

pytestmark = [pytest.mark.slow]

ENTRY = Path(sys.executable).parent / "fedgate"
ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "200", "NO_COLOR": "1", **extra}


def fedgate(
    *args: str, cwd: Path, ok: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [str(ENTRY)] if ENTRY.exists() else [sys.executable, "-m", "gateway"]
    done = subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if ok and done.returncode != 0:
        raise AssertionError(
            f"fedgate {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


def fedgate_json(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    return json.loads(fedgate(*args, "--json", cwd=cwd, env=env).stdout)


def _serve(args: list[str], cwd: Path, url: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [str(ENTRY)] if ENTRY.exists() else [sys.executable, "-m", "gateway"]
    log = (cwd / f"{args[0]}.log").open("wb")
    process = subprocess.Popen([*command, *args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, (cwd / f"{args[0]}.log").read_text()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"{args} did not answer at {url}")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def test_the_guide_from_keys_to_a_released_result(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    op, dept = tmp_path / "operator", tmp_path / "tax"
    op.mkdir()
    dept.mkdir()
    # The department's existing database: the synthetic county's tax store stands in for it.
    fedgate("synth", "--persons", "300", "--out", str(tmp_path / "county"), cwd=tmp_path)
    database = f"sqlite:///{tmp_path / 'county' / 'tax.db'}"

    # 1. The operator makes the gateway's keys and the federation keyring (given to connectors only).
    gateway_key = fedgate_json("keys", "new", "--kind", "gateway", "--out", "gateway.key", cwd=op)
    audit_key = fedgate_json(
        "keys", "new", "--kind", "audit", "--name", "guide-county", "--out", "audit.key", cwd=op
    )
    fedgate("keyring", "new", "--federation-id", "guide-county", "--out", str(dept / "keyring.json"), cwd=op)
    assert (op / "gateway.key").stat().st_mode & 0o777 == 0o600
    assert (dept / "keyring.json").stat().st_mode & 0o777 == 0o600
    gw_env = _env(FEDGATE_STATE_DIR=str(op / "state"))
    keys = {
        name: fedgate(
            "users", "create", "--role", role, "--name", name, *extra, cwd=op, env=gw_env
        ).stdout.strip()
        for role, name, extra in [
            ("operator", "operator", []),
            ("analyst", "analyst", []),
            ("analyst", "visitor", []),
            ("auditor", "auditor", []),
            ("department_admin", "tax-admin", ["--department", "tax"]),
            ("department_admin", "register-admin", ["--department", "register"]),
        ]
    }
    gw_port = free_port()
    gw_url = f"http://127.0.0.1:{gw_port}"
    serve_env = {
        **gw_env,
        "FEDGATE_PORT": str(gw_port),
        "FEDGATE_HOST": "127.0.0.1",
        "FEDGATE_SIGNING_KEY_FILE": str(op / "gateway.key"),
        "FEDGATE_AUDIT_KEY_FILE": str(op / "audit.key"),
    }
    processes.append(_serve(["gateway", "serve"], op, gw_url + "/healthz", serve_env))

    # 2. The department makes its connector key, its approval key and its admin key.
    connector_key = fedgate_json("keys", "new", "--kind", "connector", "--out", "connector.key", cwd=dept)
    approval_key = fedgate_json("keys", "new", "--kind", "approval", "--out", "approval.key", cwd=dept)
    admin = fedgate_json("admin-key", "new", cwd=dept)
    (dept / "admin.key").write_text(admin["admin_key"])
    assert connector_key["public_key"].startswith("ed25519:") and len(connector_key["fingerprint"]) == 64

    # 3. `connector init` reflects the table, proposes a configuration and checks it.
    port = free_port()
    init = fedgate(
        "connector", "init", "--url", database, "--table", "wages", "--name", "tax", "--department", "tax",
        "--signing-key", "connector.key", "--keyring", "keyring.json",
        "--approval-public-key", approval_key["public_key"],
        "--gateway-public-key", gateway_key["public_key"],
        "--audit-public-key", audit_key["verifier_key"],
        "--admin-key-sha256", admin["admin_key_sha256"],
        "--port", str(port), "--out", "tax.yaml", "--end", "2025-12", "--unsafe-development", cwd=dept,
    )  # fmt: skip
    assert "configuration proposed in tax.yaml" in init.stderr
    assert connector_key["fingerprint"] in init.stdout  # the dry run shows the key to confirm
    # The admin edits the proposal: the published bound is the department's policy, not the sample's.
    config = yaml.safe_load((dept / "tax.yaml").read_text())
    (wages,) = config["datasets"]
    assert wages["entity"] == {"column": "taxpayer_id", "kind": "person"}
    assert wages["period"] == {"column": "month"}
    (amount,) = wages["measures"]
    amount.update(name="wage_income", bounds=[0, 600_000])
    (dept / "tax.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    fedgate("connector", "check", "--config", "tax.yaml", "--end", "2025-12", cwd=dept)
    conn_url = f"http://127.0.0.1:{port}"
    processes.append(
        _serve(["connector", "serve", "--config", "tax.yaml"], dept, conn_url + "/v1/health", _env())
    )

    as_operator = ["--url", gw_url, "--api-key", keys["operator"]]
    as_admin = ["--url", gw_url, "--api-key", keys["tax-admin"]]
    as_analyst = ["--url", gw_url, "--api-key", keys["analyst"]]
    as_register = ["--url", gw_url, "--api-key", keys["register-admin"]]

    # The household register is already in the federation (person queries need it): the synthetic
    # county's, set to trust this federation's gateway, audit key and keyring, and registered the same way.
    register_cfg = tmp_path / "county" / "connectors" / "register.yaml"
    doc = yaml.safe_load(register_cfg.read_text())
    doc["policy"]["gateway_public_keys"] = [gateway_key["public_key"]]
    doc["policy"]["audit_public_keys"] = [audit_key["verifier_key"]]
    doc["federation_keyring_file"] = str(dept / "keyring.json")
    register_cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    register_port = free_port()
    register_url = f"http://127.0.0.1:{register_port}"
    processes.append(
        _serve(
            ["connector", "serve", "--config", str(register_cfg), "--port", str(register_port)],
            tmp_path,
            register_url + "/v1/health",
            _env(),
        )
    )
    register_key = fedgate_json(
        "keys", "show", str(tmp_path / "county" / "keys" / "register-connector.key"), cwd=op
    )
    fedgate("endpoints", "allow", register_url, *as_operator, cwd=op)
    fedgate(
        "connectors", "register", "register", "--endpoint", register_url,
        "--fingerprint", register_key["fingerprint"], *as_register, cwd=op,
    )  # fmt: skip
    # The analyst makes a key of their own; the operator pins it; departments name its fingerprint.
    analyst_key = fedgate_json("analysts", "keygen", "--out", "analyst.key", cwd=op)
    pinned = fedgate_json(
        "analysts", "register", "analyst", "--public-key", analyst_key["public_key"], *as_operator, cwd=op
    )
    assert pinned["fingerprint"] == analyst_key["fingerprint"]
    register_approval = str(tmp_path / "county" / "keys" / "register-approval.key")
    fedgate(
        "rules",
        "sign",
        "register-all",
        "--key",
        register_approval,
        "--analyst",
        analyst_key["fingerprint"],
        "--max-queries",
        "100",
        "--analyst-max-queries",
        "50",
        "--yes",
        *as_register,
        cwd=op,
    )

    # 4. The operator allows the endpoint; the admin registers under the fingerprint confirmed out of band.
    fedgate("endpoints", "allow", conn_url, *as_operator, cwd=op)
    assert conn_url in fedgate_json("endpoints", "list", *as_operator, cwd=op)
    wrong = fedgate(
        "connectors", "register", "tax", "--endpoint", conn_url, "--fingerprint", "0" * 64, *as_admin,
        cwd=dept, ok=False,
    )  # fmt: skip
    assert wrong.returncode == 1 and connector_key["fingerprint"] in wrong.stderr
    registered = fedgate_json(
        "connectors", "register", "tax", "--endpoint", conn_url,
        "--fingerprint", connector_key["fingerprint"],
        *as_admin, cwd=dept,
    )  # fmt: skip
    assert (registered["department"], registered["enabled"]) == ("tax", True)
    catalog = fedgate_json("catalog", *as_analyst, cwd=op)
    (schema,) = [c for c in catalog["connectors"] if c["connector"] == "tax"]
    assert [m["upper"] for m in schema["datasets"][0]["measures"]] == [600_000]

    # 5. A pre-approval rule for one analyst; the analyst's query is approved by it and released.
    fedgate(
        "rules",
        "sign",
        "tax-wages",
        "--key",
        "approval.key",
        "--analyst",
        analyst_key["fingerprint"],
        "--max-queries",
        "100",
        "--analyst-max-queries",
        "50",
        "--yes",
        *as_admin,
        cwd=dept,
    )
    assert [r["rule_id"] for r in fedgate_json("rules", "list", *as_admin, cwd=dept)] == ["tax-wages"]
    query = {
        "purpose": "Wages paid in the county, the department guide's first query",
        "unit": "person",
        "member_cap": 4,
        "period_start": "2025-01",
        "period_end": "2025-12",
        "measure": {
            "terms": [{"dataset": "tax.wages", "measure": "wage_income"}],
            "lower": 0,
            "upper": 600000,
        },
        "statistics": [{"kind": "sum"}, {"kind": "count"}],
        "epsilon": "0.5",
    }
    (op / "query.json").write_text(json.dumps(query))
    submitted = fedgate_json(
        "query", "submit", "query.json", "--analyst-key", "analyst.key", *as_analyst, cwd=op
    )
    assert submitted["state"] == "approved"
    assert submitted["covered_by"] == {"tax": "rule:tax-wages", "register": "rule:register-all"}
    result = fedgate_json("query", "run", submitted["id"], *as_analyst, cwd=op)
    assert result["query_id"] == submitted["id"] and result["epsilon"] == "0.5"
    assert {c["statistic"] for c in result["release"]["cells"]} == {"sum", "count"}

    # 6. A query the rule does not cover waits; `approve --pending` shows it and signs it.
    as_visitor = ["--url", gw_url, "--api-key", keys["visitor"]]
    (op / "visitor.json").write_text(json.dumps({**query, "purpose": "Wages, asked by a visiting analyst"}))
    waiting = fedgate_json("query", "submit", "visitor.json", *as_visitor, cwd=op)
    assert waiting["state"] == "submitted"
    # Each department plans the waiting queries against its own connector's schema before it signs.
    own = ["--connector", conn_url, "--connector-admin-key-file", "admin.key"]
    batch = fedgate("approve", "--pending", "--key", "approval.key", *own, "--yes", *as_admin, cwd=dept)
    assert waiting["id"] in batch.stdout and "1 approvals signed; 0 queries now approved" in batch.stdout
    register_own = [
        "--connector",
        register_url,
        "--connector-admin-key-file",
        register_approval.replace("register-approval.key", "register-admin.key"),
    ]
    batch = fedgate(
        "approve", "--pending", "--key", register_approval, *register_own, "--yes", *as_register, cwd=op
    )
    assert "1 approvals signed; 1 queries now approved" in batch.stdout
    assert fedgate_json("query", "run", waiting["id"], *as_visitor, cwd=op)["query_id"] == waiting["id"]

    # 7. The operator can disable the connector, enable it again, and take the endpoint off the list.
    fedgate("connectors", "disable", "tax", *as_operator, cwd=op)
    listed = {c["name"]: c["enabled"] for c in fedgate_json("connectors", "list", *as_operator, cwd=op)}
    assert listed == {"register": True, "tax": False}
    fedgate("connectors", "enable", "tax", *as_operator, cwd=op)
    fedgate("endpoints", "remove", conn_url, *as_operator, cwd=op)
    assert fedgate_json("endpoints", "list", *as_operator, cwd=op) == [register_url]
    gone = fedgate("endpoints", "remove", conn_url, *as_operator, cwd=op, ok=False)
    assert gone.returncode == 1 and "not_found" in gone.stderr
    with GatewayClient(gw_url, keys["auditor"]) as auditor:
        actions = [e["event"]["action"] for e in auditor.audit_entries(actor="operator")["entries"]]
    assert actions.count("endpoint.removed") == 1 and "connector.disabled" in actions
