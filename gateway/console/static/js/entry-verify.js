// One audit entry's evidence, checked in the browser: the entry hash recomputed from its canonical bytes,
// the RFC 9162 inclusion proof up to the checkpoint's root, and the checkpoint's signature under the
// audit key pinned in this browser. Used by the entry page and by the log's list.

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

export const PIN = "fedgate.audit.pinned_key";

export function pinnedKey() {
  return localStorage.getItem(PIN);
}

// evidence: {seq, entry (base64 canonical bytes), prev_hash, hash, tree_size, proof (base64 list), note}.
// Returns {hash, inclusion, signature}, each {ok: true} or {ok: false, why}; without a pinned key the
// last two are {ok: null} (nothing claimed either way).
export async function verifyEvidence(evidence, pinned) {
  const out = {};
  const canonical = bytesFromBase64(evidence.entry);
  const hash = await entryHash(bytesFromHex(evidence.prev_hash), canonical);
  out.hash = equalBytes(hash, bytesFromHex(evidence.hash))
    ? { ok: true }
    : { ok: false, why: hexFromBytes(hash).slice(0, 16) };
  if (!pinned) {
    out.signature = out.inclusion = { ok: null };
    return out;
  }
  let root = null;
  try {
    const checkpoint = await openCheckpoint(evidence.note, await parseVerifierKey(pinned));
    if (checkpoint.size !== evidence.tree_size) throw new Error("the checkpoint is of another size");
    root = checkpoint.root;
    out.signature = { ok: true };
  } catch (exc) {
    out.signature = { ok: false, why: exc.message };
  }
  try {
    if (root === null) throw new Error("no trusted root");
    const proof = evidence.proof.map(bytesFromBase64);
    await verifyInclusion(evidence.seq - 1, evidence.tree_size, await leafHash(hash), proof, root);
    out.inclusion = { ok: true };
  } catch (exc) {
    out.inclusion = { ok: false, why: exc.message };
  }
  return out;
}

export function allOk(result) {
  return result.hash.ok === true && result.inclusion.ok === true && result.signature.ok === true;
}
