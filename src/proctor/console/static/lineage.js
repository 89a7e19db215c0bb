// The lineage explorer's "Verify" buttons: check one event's inclusion in the log, in
// the browser, trusting only the log's public key.
//
// Steps (each failure names itself; any exception is a failure, never a pass):
//   1. the log key (/v1/log/key): name+keyid+base64(0x01 || Ed25519 key), its key ID
//      = SHA-256(name || "\n" || 0x01 || key)[:4] (C2SP signed-note);
//   2. the checkpoint (/v1/log/checkpoint): a signature line by that key verifies
//      (Ed25519 over the note text) and the body is origin (= key name), size, root;
//   3. the entry (/v1/log/entries/I): its leaf hash SHA-256(0x00 || leaf) is the one
//      this page was rendered from (data-leaf-hash);
//   4. the inclusion proof (/v1/log/proof/inclusion?index=I&size=N) for the
//      checkpoint's size leads from that leaf hash to its root (RFC 9162 §2.1.3.2).
// No library: SHA-256 and Ed25519 are WebCrypto's (a secure context: https or localhost).
"use strict";

(function () {
  const enc = new TextEncoder();

  function fromB64(text) {
    if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
      throw new Error("expected base64, found " + String(text).slice(0, 40));
    }
    const bin = atob(text);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  }

  function equal(a, b) {
    if (a.length !== b.length) return false;
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
    return diff === 0;
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  const nodeHash = (left, right) => sha256(concat(Uint8Array.of(1), left, right));

  async function fetchText(url) {
    const answer = await fetch(url, { cache: "no-store", credentials: "same-origin" });
    if (!answer.ok) throw new Error(url + " answered " + answer.status);
    return answer.text();
  }

  // Step 1.
  async function logKey(text) {
    const parts = text.trim().split("+");
    if (parts.length < 3) throw new Error("log key: expected name+keyid+key");
    const name = parts[0], idHex = parts[1], data = fromB64(parts.slice(2).join("+"));
    if (!/^[0-9a-f]{8}$/.test(idHex) || data.length !== 33 || data[0] !== 1) {
      throw new Error("log key: expected an Ed25519 key with an 8-hex-digit key ID");
    }
    const pub = data.slice(1);
    const id = (await sha256(concat(enc.encode(name + "\n"), Uint8Array.of(1), pub))).slice(0, 4);
    const hex = Array.from(id, (b) => b.toString(16).padStart(2, "0")).join("");
    if (hex !== idHex) throw new Error("log key: key ID does not match the key");
    const key = await crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
    return { name, id, key };
  }

  // Step 2.
  async function checkpoint(note, trusted) {
    const split = note.indexOf("\n\n");
    if (split < 0) throw new Error("checkpoint: no signature block");
    const body = note.slice(0, split + 1);
    let good = false;
    for (const line of note.slice(split + 2).split("\n")) {
      if (!line.startsWith("\u2014 ")) continue;
      const [name, sig] = line.slice(2).split(" ");
      if (name !== trusted.name || !sig) continue;
      const raw = fromB64(sig);
      if (raw.length !== 68 || !equal(raw.slice(0, 4), trusted.id)) continue;
      if (await crypto.subtle.verify({ name: "Ed25519" }, trusted.key, raw.slice(4), enc.encode(body))) {
        good = true;
        break;
      }
    }
    if (!good) throw new Error("checkpoint: no valid signature by the log key");
    const lines = body.slice(0, -1).split("\n");
    if (lines.length < 3 || lines[0] !== trusted.name || !/^(0|[1-9][0-9]*)$/.test(lines[1])) {
      throw new Error("checkpoint: malformed body or another log's");
    }
    const root = fromB64(lines[2]);
    if (root.length !== 32) throw new Error("checkpoint: the root is not 32 bytes");
    return { size: Number(lines[1]), root };
  }

  // Step 4: RFC 9162 §2.1.3.2.
  async function inclusionRoot(index, size, leafHash, path) {
    if (index >= size) throw new Error("proof: the index is not inside the tree");
    let fn = index, sn = size - 1, r = leafHash;
    for (const p of path) {
      if (p.length !== 32) throw new Error("proof: a hash is not 32 bytes");
      if (sn === 0) throw new Error("proof: longer than the tree is deep");
      if (fn % 2 === 1 || fn === sn) {
        r = await nodeHash(p, r);
        if (fn % 2 === 0) {
          while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn = Math.floor(fn / 2);
      sn = Math.floor(sn / 2);
    }
    if (sn !== 0) throw new Error("proof: shorter than the tree is deep");
    return r;
  }

  let trustedKey = null;

  async function verify(index, expectedLeafHash) {
    if (!window.crypto || !crypto.subtle) throw new Error("WebCrypto is unavailable (needs https or localhost)");
    trustedKey = trustedKey || (await logKey(await fetchText("/v1/log/key")));
    const cp = await checkpoint(await fetchText("/v1/log/checkpoint"), trustedKey);
    if (index >= cp.size) throw new Error("the signed checkpoint does not cover leaf " + index + " yet");
    const entry = JSON.parse(await fetchText("/v1/log/entries/" + index));
    if (entry.index !== index) throw new Error("entry: another index");
    const leafHash = await sha256(concat(Uint8Array.of(0), fromB64(entry.leaf)));
    if (!equal(leafHash, fromB64(expectedLeafHash))) throw new Error("entry: not the event shown here");
    const proof = JSON.parse(await fetchText("/v1/log/proof/inclusion?index=" + index + "&size=" + cp.size));
    if (proof.leaf_index !== index || proof.tree_size !== cp.size || !Array.isArray(proof.hashes)) {
      throw new Error("proof: for another leaf or tree");
    }
    const root = await inclusionRoot(index, cp.size, leafHash, proof.hashes.map(fromB64));
    if (!equal(root, cp.root)) throw new Error("proof: does not lead to the checkpoint's root");
    return cp.size;
  }

  function show(status, ok, text) {
    status.textContent = text;
    status.classList.remove("ok", "bad");
    status.classList.add(ok ? "ok" : "bad");
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button.verify");
    if (!button) return;
    const index = Number(button.dataset.index);
    const status = document.getElementById("verify-" + button.dataset.index);
    button.disabled = true;
    status.textContent = "checking…";
    status.classList.remove("ok", "bad");
    try {
      const size = await verify(index, button.dataset.leafHash);
      show(status, true, "✓ included (tree of " + size + ")");
      button.dataset.result = "ok";
    } catch (e) {
      show(status, false, "✗ " + (e && e.message ? e.message : String(e)));
      button.dataset.result = "bad";
    } finally {
      button.disabled = false;
    }
  });
})();
