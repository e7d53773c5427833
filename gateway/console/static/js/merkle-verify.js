// RFC 9162 Merkle inclusion proofs and audit-entry hashes, checked in the browser with WebCrypto SHA-256.
// The same algorithms as audit/merkle.py and audit/entries.py, so an auditor's page needs no trust in the
// gateway that served it the proof: it recomputes everything from the entry's canonical bytes.

const HASH_SIZE = 32;

export class ProofError extends Error {}

export function bytesFromBase64(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

export function base64FromBytes(bytes) {
  let raw = "";
  for (const b of bytes) raw += String.fromCharCode(b);
  return btoa(raw);
}

export function bytesFromHex(text) {
  if (!/^([0-9a-f]{2})*$/.test(text)) throw new ProofError("not lowercase hexadecimal");
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function hexFromBytes(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

export function leafHash(data) {
  return sha256(concat(Uint8Array.of(0), data));
}

export function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(1), left, right));
}

// An entry's chain hash: SHA-256(previous hash || the entry's RFC 8785 canonical bytes).
export function entryHash(prevHash, canonicalEntry) {
  return sha256(concat(prevHash, canonicalEntry));
}

function checkHash(value, what) {
  if (value.length !== HASH_SIZE) throw new ProofError(`the ${what} is ${value.length} bytes, not ${HASH_SIZE}`);
}

// RFC 9162 section 2.1.3.2 steps 1-6. Indices are 0-based leaf indices (an entry's seq - 1). Sizes stay
// below 2^53, so plain numbers with Math.floor halving are exact where 32-bit bit operators would not be.
export async function rootFromInclusionProof(index, size, leaf, proof) {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size) || index < 0 || index >= size) {
    throw new ProofError(`leaf index ${index} is outside a tree of ${size} leaves`);
  }
  checkHash(leaf, "leaf hash");
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  const half = (n) => Math.floor(n / 2);
  for (const p of proof) {
    checkHash(p, "proof element");
    if (sn === 0) throw new ProofError("the inclusion proof is longer than the path to the root");
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = half(fn);
          sn = half(sn);
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = half(fn);
    sn = half(sn);
  }
  if (sn !== 0) throw new ProofError("the inclusion proof is shorter than the path to the root");
  return r;
}

export async function verifyInclusion(index, size, leaf, proof, root) {
  checkHash(root, "root");
  const found = await rootFromInclusionProof(index, size, leaf, proof);
  if (!equalBytes(found, root)) {
    throw new ProofError(`leaf ${index} is not included in the tree of size ${size} with this root`);
  }
}
