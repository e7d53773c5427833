// The audit entry page: re-hash the entry from its canonical bytes, check its RFC 9162 inclusion proof up
// to the checkpoint's root, and the checkpoint's Ed25519 signature against the audit key the auditor
// pinned in this browser (localStorage). The key the gateway shows is displayed beside it, never trusted.

import {
  bytesFromBase64,
  bytesFromHex,
  entryHash,
  equalBytes,
  hexFromBytes,
  leafHash,
  verifyInclusion,
} from "./merkle-verify.js";
import { openCheckpoint, parseVerifierKey } from "./signed-note.js";

const PIN = "fedgate.audit.pinned_key";
const box = document.getElementById("evidence");

function mark(id, ok, detail) {
  const item = document.getElementById(id);
  item.dataset.state = ok ? "ok" : "failed";
  item.querySelector("span").textContent = (ok ? box.dataset.msgOk : box.dataset.msgFailed) + (detail ? ` (${detail})` : "");
}

async function verify() {
  const verdict = document.getElementById("verdict");
  const pinned = localStorage.getItem(PIN);
  document.getElementById("pinned-key").textContent = pinned || "—";
  const canonical = bytesFromBase64(box.dataset.entry);
  document.getElementById("entry-json").textContent = JSON.stringify(
    JSON.parse(new TextDecoder().decode(canonical)),
    null,
    2,
  );
  let all = true;

  const hash = await entryHash(bytesFromHex(box.dataset.prevHash), canonical);
  const hashOk = equalBytes(hash, bytesFromHex(box.dataset.hash));
  mark("check-hash", hashOk, hashOk ? "" : hexFromBytes(hash).slice(0, 16));
  all &&= hashOk;

  let root = null;
  if (!pinned) {
    for (const id of ["check-inclusion", "check-signature"]) {
      const item = document.getElementById(id);
      item.dataset.state = "pending";
      item.querySelector("span").textContent = box.dataset.msgNoPin;
    }
    verdict.dataset.state = "pending";
    verdict.textContent = box.dataset.msgNoPin;
    return;
  }
  try {
    const checkpoint = await openCheckpoint(box.dataset.note, await parseVerifierKey(pinned));
    if (checkpoint.size !== Number(box.dataset.treeSize)) throw new Error("size");
    root = checkpoint.root;
    mark("check-signature", true, "");
  } catch (exc) {
    mark("check-signature", false, exc.message);
    all = false;
  }
  try {
    if (root === null) throw new Error(box.dataset.msgFailed);
    const proof = JSON.parse(box.dataset.proof).map(bytesFromBase64);
    await verifyInclusion(Number(box.dataset.seq) - 1, Number(box.dataset.treeSize), await leafHash(hash), proof, root);
    mark("check-inclusion", true, "");
  } catch (exc) {
    mark("check-inclusion", false, exc.message);
    all = false;
  }
  if (pinned.trim() !== box.dataset.serverKey.trim()) {
    document.getElementById("pinned-key").dataset.state = "differs";
    document.getElementById("pinned-key").title = box.dataset.msgPinDiffers;
  }
  verdict.dataset.state = all ? "ok" : "failed";
  verdict.textContent = all ? box.dataset.msgVerdictOk : box.dataset.msgVerdictFailed;
}

async function pin() {
  const value = document.getElementById("pin-input").value.trim();
  try {
    await parseVerifierKey(value);
  } catch {
    document.getElementById("verdict").textContent = box.dataset.msgPinBad;
    document.getElementById("verdict").dataset.state = "failed";
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
