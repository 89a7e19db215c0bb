// Console sign-in with the admin key, in the browser: read the key file, ask this
// server for a challenge, sign a session statement with WebCrypto Ed25519 and post it.
// The private key stays in this page (it is imported non-extractable, then dropped).
"use strict";
(() => {
  const b64url = (bytes) => {
    let text = "";
    for (const b of bytes) text += String.fromCharCode(b);
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };
  const b64 = (text, what) => {
    if (typeof text !== "string" || !/^[A-Za-z0-9+/]{43}=$/.test(text)) {
      throw new Error(`${what}: expected base64 of 32 bytes`);
    }
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  };
  const button = document.getElementById("sign-with-key");
  const file = document.getElementById("keyfile");
  const status = document.getElementById("key-status");
  const form = document.getElementById("key-form");
  const out = document.getElementById("signed-token");

  async function readKey() {
    if (!file.files || file.files.length !== 1) throw new Error("choose your admin key file first");
    const chosen = file.files[0];
    if (chosen.size > 4096) throw new Error(`expected a key file of at most 4096 bytes, found ${chosen.size}`);
    let key;
    try {
      key = JSON.parse(await chosen.text());
    } catch (e) {
      throw new Error("expected a proctor key file (JSON), found something else");
    }
    if (!key || key.kind !== "proctor-principal-key" || key.v !== 1 || typeof key.name !== "string" ||
        !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(key.name)) {
      throw new Error("expected a proctor key file (kind proctor-principal-key, v 1, a principal name)");
    }
    return { name: key.name, seed: b64(key.private_key, "private_key"), pub: b64(key.public_key, "public_key") };
  }

  async function signIn() {
    status.textContent = "Signing in…";
    const key = await readKey();
    if (!crypto.subtle) throw new Error("this page needs WebCrypto (a secure context: https or localhost)");
    const jwk = { kty: "OKP", crv: "Ed25519", d: b64url(key.seed), x: b64url(key.pub) };
    key.seed.fill(0);
    const secret = await crypto.subtle.importKey("jwk", jwk, { name: "Ed25519" }, false, ["sign"]);
    jwk.d = "";
    const answer = await fetch("/console/signin/challenge", { cache: "no-store", credentials: "same-origin" });
    if (!answer.ok) throw new Error(`the server gave no challenge (HTTP ${answer.status})`);
    const c = await answer.json();
    const id = b64url(crypto.getRandomValues(new Uint8Array(16)));
    const statement = [
      "proctor console session v1", `principal ${key.name}`, `expires ${c.session_expires}`,
      `id ${id}`, `origin ${c.origin}`, `challenge ${c.challenge}`, "",
    ].join("\n");
    const bytes = new TextEncoder().encode(statement);
    const signature = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, secret, bytes));
    out.value = `pcs1.${b64url(bytes)}.${b64url(signature)}`;
    form.submit();
  }

  button.addEventListener("click", () => {
    signIn().catch((e) => { status.textContent = `Not signed in: ${e.message}`; });
  });
})();
