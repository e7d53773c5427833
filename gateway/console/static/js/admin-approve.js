// The approvals page: read the key file the admin picked, sign the draft approval's bytes in the page and
// post only the signature. The key file is read with FileReader and never leaves the browser.

import { KeyFileError, keyFingerprint, signApproval, signingDigest } from "./approval-sign.js";
import { bytesFromBase64 } from "./merkle-verify.js";

const signer = document.getElementById("signer");

function csrf() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.getAttribute("content") : "";
}

function say(key, state) {
  const status = document.getElementById("sign-status");
  status.textContent = signer.dataset[key] || key;
  status.dataset.state = state;
}

function readText(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new KeyFileError("unreadable"));
    reader.readAsText(file);
  });
}

async function signAndApprove() {
  const file = document.getElementById("key-file").files[0];
  if (!file) return say("msgPick", "error");
  say("msgSigning", "busy");
  const bytes = bytesFromBase64(signer.dataset.bytes);
  // The bytes the page holds must be the ones whose digest it shows (and the command prints).
  if ((await signingDigest(bytes)) !== signer.dataset.digest) return say("msgDigestMismatch", "error");
  let pem, fingerprint, signature;
  try {
    pem = await readText(file);
    fingerprint = await keyFingerprint(pem);
    if (signer.dataset.fingerprint && fingerprint !== signer.dataset.fingerprint) {
      return say("msgWrongKey", "error");
    }
    signature = await signApproval(pem, bytes);
  } catch (exc) {
    return say("msgBadFile", "error");
  } finally {
    pem = undefined;
  }
  const response = await fetch(signer.dataset.approveUrl, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", accept: "application/json", "x-csrf-token": csrf() },
    body: JSON.stringify({ digest: signer.dataset.digest, signature, key_fingerprint: fingerprint }),
  });
  if (!response.ok) {
    let message = "";
    try {
      message = (await response.json()).error.message || "";
    } catch {
      message = "";
    }
    say("msgRefused", "error");
    document.getElementById("sign-status").textContent += message ? " " + message : "";
    return;
  }
  say("msgDone", "done");
  window.setTimeout(() => window.location.reload(), 600);
}

if (signer) {
  document.getElementById("sign-approve").addEventListener("click", signAndApprove);
  // A new file starts afresh: the last attempt's message is about another file.
  document.getElementById("key-file").addEventListener("change", () => {
    const status = document.getElementById("sign-status");
    status.textContent = "";
    delete status.dataset.state;
  });
}
