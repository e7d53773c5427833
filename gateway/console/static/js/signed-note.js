// Signed-note checkpoints (C2SP tlog-checkpoint, golang.org/x/mod/sumdb/note) verified in the browser with
// WebCrypto Ed25519 against an audit verifier key the auditor pinned: the page's counterpart of
// audit/checkpoint.py `open_checkpoint`, as strict about the format.

import { ProofError, bytesFromBase64, equalBytes, sha256, base64FromBytes } from "./merkle-verify.js";

const ALG_ED25519 = 0x01;
const EM_DASH = "\u2014";
const utf8 = new TextEncoder();

function canonicalBase64(text, what) {
  let raw;
  try {
    raw = bytesFromBase64(text);
  } catch {
    throw new ProofError(`the ${what} is not valid base64`);
  }
  if (base64FromBytes(raw) !== text) throw new ProofError(`the ${what} is not canonical base64`);
  return raw;
}

async function keyId(name, raw) {
  const data = new Uint8Array([...utf8.encode(name + "\n"), ALG_ED25519, ...raw]);
  return (await sha256(data)).slice(0, 4);
}

// `<name>+<key ID, 8 hex>+<base64(0x01 || 32-byte key)>`; the key ID must match.
export async function parseVerifierKey(vkey) {
  // The base64 key may itself hold "+": split at the first two only, as audit/checkpoint.py does.
  const text = vkey.trim();
  const first = text.indexOf("+");
  const second = first < 0 ? -1 : text.indexOf("+", first + 1);
  const parts = second < 0 ? [] : [text.slice(0, first), text.slice(first + 1, second), text.slice(second + 1)];
  if (parts.length !== 3 || !parts[0] || !/^[0-9a-f]{8}$/.test(parts[1])) {
    throw new ProofError("a verifier key has the form <name>+<key id>+<base64 key>");
  }
  const raw = canonicalBase64(parts[2], "verifier key");
  if (raw.length !== 33 || raw[0] !== ALG_ED25519) throw new ProofError("only Ed25519 note keys are supported");
  const publicRaw = raw.slice(1);
  const kid = await keyId(parts[0], publicRaw);
  if (Array.from(kid, (b) => b.toString(16).padStart(2, "0")).join("") !== parts[1]) {
    throw new ProofError("the verifier key's ID does not match its key");
  }
  const key = await crypto.subtle.importKey("raw", publicRaw, { name: "Ed25519" }, false, ["verify"]);
  return { name: parts[0], kid, key };
}

export function parseNote(note) {
  if (/[\u0000-\u0009\u000b-\u001f\u007f]/.test(note)) {
    throw new ProofError("a signed note must not contain control characters other than newline");
  }
  const split = note.lastIndexOf("\n\n");
  if (split < 0 || !note.endsWith("\n")) {
    throw new ProofError("a signed note is text, a blank line, and signature lines");
  }
  const text = note.slice(0, split + 1);
  const signatures = [];
  for (const line of note.slice(split + 2).split("\n").slice(0, -1)) {
    const match = /^\u2014 (\S+) (\S+)$/u.exec(line);
    if (match === null || !line.startsWith(EM_DASH)) throw new ProofError("a signature line is '— <key name> <base64>'");
    const raw = canonicalBase64(match[2], "signature");
    if (raw.length < 5) throw new ProofError("a signature is a 4-byte key ID followed by the signature");
    signatures.push({ name: match[1], kid: raw.slice(0, 4), signature: raw.slice(4) });
  }
  if (signatures.length === 0) throw new ProofError("a signed note has at least one signature line");
  return { text, signatures };
}

function parseCheckpointBody(text) {
  const lines = text.split("\n");
  if (lines.length !== 4 || lines[3] !== "") {
    throw new ProofError("a checkpoint body is exactly three lines: origin, size, base64 root");
  }
  if (!/^(0|[1-9][0-9]{0,15})$/.test(lines[1])) throw new ProofError("a checkpoint size is a decimal number");
  const root = canonicalBase64(lines[2], "checkpoint root");
  if (root.length !== 32) throw new ProofError("a checkpoint root is 32 bytes");
  return { origin: lines[0], size: Number(lines[1]), root };
}

// The checkpoint (origin, size, root) if the pinned key signed it; a signature by another key is ignored,
// a failing signature by the pinned key is refused, and so is a note the pinned key did not sign.
export async function openCheckpoint(note, verifier) {
  const parsed = parseNote(note);
  const text = utf8.encode(parsed.text);
  let signed = false;
  for (const sig of parsed.signatures) {
    if (sig.name !== verifier.name || !equalBytes(sig.kid, verifier.kid)) continue;
    const good = await crypto.subtle.verify({ name: "Ed25519" }, verifier.key, sig.signature, text);
    if (!good) throw new ProofError(`the signature by key '${sig.name}' does not verify`);
    signed = true;
  }
  if (!signed) throw new ProofError("the checkpoint carries no signature from the pinned audit key");
  return parseCheckpointBody(parsed.text);
}
