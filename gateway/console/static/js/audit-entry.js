// The audit entry page: verify the entry the page carries (entry-verify.js) against the audit key pinned
// in this browser, show the entry as parsed from the very bytes that were hashed, and pin or unpin a key.
// The key the gateway shows is displayed beside the pinned one, never trusted.

import { bytesFromBase64 } from "./merkle-verify.js";
import { parseVerifierKey } from "./signed-note.js";
import { PIN, allOk, pinnedKey, verifyEvidence } from "./entry-verify.js";

const box = document.getElementById("evidence");

function evidence() {
  return {
    seq: Number(box.dataset.seq),
    entry: box.dataset.entry,
    prev_hash: box.dataset.prevHash,
    hash: box.dataset.hash,
    tree_size: Number(box.dataset.treeSize),
    proof: JSON.parse(box.dataset.proof),
    note: box.dataset.note,
  };
}

function mark(id, check) {
  const item = document.getElementById(id);
  const span = item.querySelector("span");
  if (check.ok === null) {
    item.dataset.state = "pending";
    span.textContent = box.dataset.msgNoPin;
    return;
  }
  item.dataset.state = check.ok ? "ok" : "failed";
  span.textContent = (check.ok ? box.dataset.msgOk : box.dataset.msgFailed) + (check.why ? ` (${check.why})` : "");
}

async function verify() {
  const verdict = document.getElementById("verdict");
  const pinned = pinnedKey();
  const shown = document.getElementById("pinned-key");
  shown.textContent = pinned || "—";
  if (pinned && pinned.trim() !== box.dataset.serverKey.trim()) {
    shown.dataset.state = "differs";
    shown.title = box.dataset.msgPinDiffers;
  } else {
    delete shown.dataset.state;
    shown.title = "";
  }
  const ev = evidence();
  document.getElementById("entry-json").textContent = JSON.stringify(
    JSON.parse(new TextDecoder().decode(bytesFromBase64(ev.entry))),
    null,
    2,
  );
  const result = await verifyEvidence(ev, pinned);
  mark("check-hash", result.hash);
  mark("check-inclusion", result.inclusion);
  mark("check-signature", result.signature);
  if (!pinned) {
    verdict.dataset.state = result.hash.ok ? "pending" : "failed";
    verdict.textContent = result.hash.ok ? box.dataset.msgNoPin : box.dataset.msgVerdictFailed;
    return;
  }
  const ok = allOk(result);
  verdict.dataset.state = ok ? "ok" : "failed";
  verdict.textContent = ok ? box.dataset.msgVerdictOk : box.dataset.msgVerdictFailed;
}

async function pin() {
  const value = document.getElementById("pin-input").value.trim();
  try {
    await parseVerifierKey(value);
  } catch {
    const verdict = document.getElementById("verdict");
    verdict.textContent = box.dataset.msgPinBad;
    verdict.dataset.state = "failed";
    return;
  }
  localStorage.setItem(PIN, value);
  await verify();
}

function unpin() {
  localStorage.removeItem(PIN);
  verify();
}

if (box) {
  document.getElementById("pin").addEventListener("click", pin);
  document.getElementById("unpin").addEventListener("click", unpin);
  verify();
}
