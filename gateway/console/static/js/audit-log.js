// The audit log's list: every entry on the page verified in the browser (entry-verify.js) against the
// audit key pinned here, one evidence request at a time; a row shows ✔ or ✘ with the failing check.

import { allOk, pinnedKey, verifyEvidence } from "./entry-verify.js";

const table = document.getElementById("entries");

async function verifyRows() {
  const pinned = pinnedKey();
  const summary = document.getElementById("list-verdict");
  if (!pinned) {
    summary.dataset.state = "pending";
    summary.textContent = table.dataset.msgNoPin;
    return;
  }
  let failed = 0;
  for (const row of table.querySelectorAll("tbody tr[data-seq]")) {
    const cell = row.querySelector("td.proof");
    let ok = false;
    let why = "";
    try {
      const response = await fetch(`/console/audit/entries/${row.dataset.seq}/evidence`, {
        credentials: "same-origin",
        headers: { accept: "application/json" },
      });
      const result = await verifyEvidence(await response.json(), pinned);
      ok = allOk(result);
      why = ok ? "" : Object.entries(result).filter(([, c]) => c.ok !== true).map(([k]) => k).join(", ");
    } catch (exc) {
      why = String(exc.message || exc);
    }
    cell.dataset.state = ok ? "ok" : "failed";
    cell.textContent = ok ? "✔" : "✘";
    cell.title = ok ? table.dataset.msgOk : `${table.dataset.msgFailed}: ${why}`;
    if (!ok) failed += 1;
  }
  summary.dataset.state = failed ? "failed" : "ok";
  summary.textContent = failed ? table.dataset.msgSomeFailed.replace("{n}", failed) : table.dataset.msgAllOk;
}

if (table) verifyRows();
