// Sign a department approval in the page, with the department's Ed25519 key read from a file the admin
// picks: the key is parsed and used here and never sent anywhere. The signature is over the exact bytes the
// gateway handed the page (`Approval.signing_bytes()`), the same bytes `fedgate approve` signs, so it equals
// what connectors/protocol.py `sign_approval` makes (Ed25519 is deterministic).

import { base64FromBytes, bytesFromBase64, hexFromBytes, sha256 } from "./merkle-verify.js";

export class KeyFileError extends Error {}

// The PKCS#8 DER inside a PEM "PRIVATE KEY" block, as `fedgate keys new --kind approval` writes it.
export function pkcs8FromPem(pem) {
  const match = /-----BEGIN PRIVATE KEY-----([A-Za-z0-9+/=\s]+)-----END PRIVATE KEY-----/.exec(pem);
  if (match === null) throw new KeyFileError("not a PEM private key");
  try {
    return bytesFromBase64(match[1].replace(/\s+/g, ""));
  } catch {
    throw new KeyFileError("not a PEM private key");
  }
}

export async function importSigningKey(pem) {
  try {
    return await crypto.subtle.importKey("pkcs8", pkcs8FromPem(pem), { name: "Ed25519" }, false, ["sign"]);
  } catch (exc) {
    if (exc instanceof KeyFileError) throw exc;
    throw new KeyFileError("not an Ed25519 private key");
  }
}

// SHA-256 hex of the bytes to sign: what the page shows and `fedgate approve` prints before signing.
export async function signingDigest(signingBytes) {
  return hexFromBytes(await sha256(signingBytes));
}

// The base64 Ed25519 signature over `signingBytes` (a Uint8Array) with the key in `pem`.
export async function signApproval(pem, signingBytes) {
  const key = await importSigningKey(pem);
  const signature = await crypto.subtle.sign({ name: "Ed25519" }, key, signingBytes);
  return base64FromBytes(new Uint8Array(signature));
}

// The fingerprint of the key file's public half (SHA-256 of the raw 32 bytes, hex, as
// connectors/protocol.py `fingerprint`), so the page can say "not your department's key" before posting.
export async function keyFingerprint(pem) {
  let jwk;
  try {
    const key = await crypto.subtle.importKey("pkcs8", pkcs8FromPem(pem), { name: "Ed25519" }, true, ["sign"]);
    jwk = await crypto.subtle.exportKey("jwk", key);
  } catch (exc) {
    if (exc instanceof KeyFileError) throw exc;
    throw new KeyFileError("not an Ed25519 private key");
  }
  const raw = bytesFromBase64(jwk.x.replace(/-/g, "+").replace(/_/g, "/").padEnd(44, "="));
  return hexFromBytes(await sha256(raw));
}
